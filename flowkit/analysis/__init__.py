"""Layer 6 of the library — measurements built on sessions: ``sweep`` (here), ``sweep_work`` (the
work unit and the local executor), ``distributed`` (Ray), ``result_cache`` (on-disk results),
``lens``, ``experiments`` (the four findings), ``pathways``, ``stats`` and ``learned``."""
