"""Testing support: tiny randomly initialised VideoLLMs of the real classes (:mod:`flowkit.testing.tiny_models`).

Used by the tests, the benchmarks and the chapters' family tour; the library never imports it.
"""
