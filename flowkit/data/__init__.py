"""Video question data for flowkit: a synthetic temporal bench and a TVBench/MVBench loader.

* :mod:`flowkit.data.synthetic` renders clips whose questions need time
  (:func:`generate`, :func:`make_sample`, :data:`TASKS`, :data:`EVAL_SEED`).
* :func:`write_split` writes such a split to disk in the MVBench/TVBench
  layout; ``python -m flowkit.data generate`` is its command line.
* :func:`load_bench` reads that layout, for the shipped split in
  ``data/bench`` (:func:`default_bench_root`) and for a real download alike.
* :mod:`flowkit.data.vocab` lists the spatial and temporal words the
  questions use.
"""

from flowkit.data.bench import (LoadedBench, SkippedEntriesWarning, SplitSummary, available_tasks, default_bench_root, load_bench, shipped_bench,
                                write_split)
from flowkit.data.sample import BenchError, Sample, ShortClipWarning
from flowkit.data.synthetic import EVAL_SEED, NUM_OPTIONS, TASKS, generate, iter_samples, make_sample
from flowkit.data.video import read_video, uniform_frame_indices, write_video
from flowkit.data.vocab import SPATIAL_WORDS, TEMPORAL_WORDS

__all__ = [
    "LoadedBench",
    "SkippedEntriesWarning",
    "EVAL_SEED",
    "NUM_OPTIONS",
    "SPATIAL_WORDS",
    "TASKS",
    "TEMPORAL_WORDS",
    "BenchError",
    "Sample",
    "ShortClipWarning",
    "SplitSummary",
    "available_tasks",
    "default_bench_root",
    "generate",
    "iter_samples",
    "load_bench",
    "make_sample",
    "read_video",
    "uniform_frame_indices",
    "write_split",
    "write_video",
]
