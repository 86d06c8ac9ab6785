"""Video question data for flowkit: a synthetic temporal question set and a TVBench/MVBench loader.

* :mod:`flowkit.data.synthetic` renders clips whose questions need time
  (:func:`generate`, :func:`make_sample`, :data:`TASKS`, :data:`EVAL_SEED`).
* :func:`write_split` writes such a split to disk in the MVBench/TVBench
  layout; ``python -m flowkit.data generate`` is its command line.
* :func:`load_question_set` reads that layout, for the shipped split in
  ``data/questions`` (:func:`shipped_questions_root`) and for a real download alike.
* :mod:`flowkit.data.vocab` lists the spatial and temporal words the
  questions use.
"""

from flowkit.data.question_sets import (
    QuestionSet,
    SkippedEntriesWarning,
    SplitSummary,
    available_tasks,
    shipped_questions_root,
    load_question_set,
    rendered_questions,
    shipped_questions,
    write_split,
)
from flowkit.data.sample import QuestionSetError, Sample, ShortClipWarning, first_per_task
from flowkit.data.synthetic import EVAL_SEED, NUM_OPTIONS, TASKS, generate, iter_samples, make_sample
from flowkit.errors import VideoError
from flowkit.data.video import read_video, uniform_frame_indices, write_video
from flowkit.data.vocab import SPATIAL_WORDS, TEMPORAL_WORDS, WORD_BAGS

__all__ = [
    "rendered_questions",
    "QuestionSet",
    "SkippedEntriesWarning",
    "EVAL_SEED",
    "NUM_OPTIONS",
    "SPATIAL_WORDS",
    "TASKS",
    "TEMPORAL_WORDS",
    "WORD_BAGS",
    "QuestionSetError",
    "Sample",
    "ShortClipWarning",
    "first_per_task",
    "VideoError",
    "SplitSummary",
    "available_tasks",
    "shipped_questions",
    "shipped_questions_root",
    "generate",
    "iter_samples",
    "load_question_set",
    "make_sample",
    "read_video",
    "uniform_frame_indices",
    "write_split",
    "write_video",
]
