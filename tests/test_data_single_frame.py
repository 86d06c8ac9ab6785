"""One frame must not answer a synthetic question.

A plain numpy classifier (nearest centroid and ridge regression on 16 x 16
pooled pixels plus colour histograms) is trained on single frames of 200
generated clips and evaluated on single frames of 200 held-out clips (each
of the 8 frames a model samples from a clip is one example, so the accuracy is
that of a frame taken at a random time).  The target is the position of the answer among the
alphabetically sorted candidates, which ties the label to what a frame can
show (a direction, a count, a cup, which scene or object comes first in the
alphabet).  Its accuracy must stay within ``MARGIN`` of chance.

A positive control shows the same classifier is not blind: given the
difference between the LAST and the FIRST frame (information about time) it
beats chance by far on the tasks where that difference is informative.
"""

from __future__ import annotations

import numpy as np
import pytest

from flowkit.data import NUM_OPTIONS, TASKS, generate, uniform_frame_indices

TRAIN_SEED, TEST_SEED = 101, 202
CLIPS = 200
MARGIN = 0.05
RIDGE_PENALTY = 100.0


def frame_features(frames: np.ndarray) -> np.ndarray:
    """``(N, 64, 64, 3)`` uint8 frames -> 16 x 16 mean-pooled RGB and an 8-bin histogram per channel."""
    count, height, width, _ = frames.shape
    rows = frames.reshape(count, 16, height // 16, width * 3).sum(axis=2, dtype=np.uint32)
    pooled = rows.reshape(count, 16, 16, width // 16, 3).sum(axis=3) / (255.0 * (height // 16) * (width // 16))
    levels = (frames >> 5).reshape(count, -1, 3)  # 8 bins of 32 grey levels
    offsets = np.arange(count)[:, None] * 8
    histograms = [
        np.bincount((offsets + levels[..., channel]).ravel(), minlength=count * 8).reshape(count, 8)
        for channel in range(3)
    ]
    return np.concatenate([pooled.reshape(count, -1), *histograms], axis=1) / np.array(
        [1.0] * (16 * 16 * 3) + [height * width] * 24
    )


def sorted_answer_position(sample) -> int:
    return sorted(sample.candidates).index(sample.answer_text)


def single_frame_set(task: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features of the 8 frames a model samples from each clip, each frame one example."""
    samples = generate(task, CLIPS, seed)
    shown = uniform_frame_indices(len(samples[0].frames), 8)
    frames = np.concatenate([s.frames[shown] for s in samples])
    labels = np.repeat([sorted_answer_position(s) for s in samples], len(shown))
    return frame_features(frames), labels


def first_to_last_set(task: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    samples = generate(task, CLIPS, seed)
    last = frame_features(np.stack([s.frames[-1] for s in samples]))
    first = frame_features(np.stack([s.frames[0] for s in samples]))
    return last - first, np.array([sorted_answer_position(s) for s in samples])


def best_accuracy(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], classes: int) -> float:
    """The better held-out accuracy of nearest-centroid and one-vs-rest ridge regression."""
    (train_x, train_y), (test_x, test_y) = train, test
    mean, scale = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    train_x, test_x = (train_x - mean) / scale, (test_x - mean) / scale
    centroids = np.stack([train_x[train_y == c].mean(axis=0) for c in range(classes)])
    nearest = ((test_x[:, None, :] - centroids[None]) ** 2).sum(axis=-1).argmin(axis=1)
    targets = np.eye(classes)[train_y]
    weights = np.linalg.solve(
        train_x.T @ train_x + RIDGE_PENALTY * np.eye(train_x.shape[1]), train_x.T @ (targets - targets.mean(axis=0))
    )
    ridge = (test_x @ weights).argmax(axis=1)
    return max((nearest == test_y).mean(), (ridge == test_y).mean())


@pytest.mark.parametrize("task", TASKS)
def test_one_frame_does_not_beat_chance(task):
    classes = NUM_OPTIONS[task]
    accuracy = best_accuracy(single_frame_set(task, TRAIN_SEED), single_frame_set(task, TEST_SEED), classes)
    assert accuracy <= 1 / classes + MARGIN, f"{task}: single-frame accuracy {accuracy:.3f}, chance {1 / classes:.3f}"


@pytest.mark.parametrize("task", ["moving_direction", "scene_transition", "action_antonym"])
def test_the_classifier_sees_time_when_given_it(task):
    classes = NUM_OPTIONS[task]
    accuracy = best_accuracy(first_to_last_set(task, TRAIN_SEED), first_to_last_set(task, TEST_SEED), classes)
    assert accuracy >= 1 / classes + 0.2, f"{task}: first-to-last accuracy {accuracy:.3f}, chance {1 / classes:.3f}"
