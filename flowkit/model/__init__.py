"""Layer 5 of the library — loading a VideoLLM: ``videollm`` (``load_videollm``, ``VideoLLM``),
``nf4_cpu`` (the portable NF4 arithmetic), ``fingerprint`` (content fingerprints), ``named_models``
(models known by name, the kit's own through an entry point) and ``checkpoints`` (real processors
and checkpoint folders)."""
