"""Training clips: one clip of a task at the model's frame count, or one single frame.

Shared by the letters-only trainer (:mod:`flowkit.smol_video.training.trainer`) and the dense
captions (:mod:`flowkit.smol_video.training.dense`).
"""

from __future__ import annotations

import numpy as np

from flowkit.data import uniform_frame_indices
from flowkit.data.synthetic import make_sample
from flowkit.smol_video.training.frames import make_frame_sample

#: frames per clip the kit's model sees
NUM_FRAMES = 8


def video_sample(task: str, rng: np.random.Generator):
    """A training clip of the temporal question set (or a curriculum task), sampled to the model's frame count."""
    from flowkit.smol_video.training.curriculum import CURRICULUM_VIDEO_TASKS, make_curriculum_sample

    if task in CURRICULUM_VIDEO_TASKS:
        sample = make_curriculum_sample(task, rng, num_frames=16, size=64)
    else:
        sample = make_sample(task, rng, num_frames=16, size=64)
    return at_model_frames(sample)


def frame_sample(task: str, rng: np.random.Generator):
    from flowkit.smol_video.training.curriculum import CURRICULUM_FRAME_TASKS, make_curriculum_sample

    if task in CURRICULUM_FRAME_TASKS:
        return make_curriculum_sample(task, rng)
    return make_frame_sample(task, rng)


def at_model_frames(sample):
    idx = uniform_frame_indices(sample.frames.shape[0], NUM_FRAMES)
    return type(sample)(
        id=sample.id,
        task=sample.task,
        frames=sample.frames[idx],
        question=sample.question,
        candidates=sample.candidates,
        answer=sample.answer,
        answer_text=sample.answer_text,
    )
