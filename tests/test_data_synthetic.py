"""The in-memory generators: determinism, balance, vocabulary, visibility, speed."""

from __future__ import annotations

import itertools
import time
from collections import Counter

import numpy as np
import pytest

from flowkit.data import EVAL_SEED, NUM_OPTIONS, TASKS, QuestionSetError, generate, make_sample
from flowkit.data.render import COLOUR_RGB, COLOURS, SCENES, SHAPES, Sprite, sprite_masks
from flowkit.data.vocab import OTHER_WORDS, SPATIAL_WORDS, TEMPORAL_WORDS, tokenize, word_kind

# 12 is a multiple of every option count (2, 3 and 4), so answers balance exactly.
BALANCED_N = 12


def assert_same_samples(first, second):
    assert [s.id for s in first] == [s.id for s in second]
    for a, b in zip(first, second):
        assert (a.question, a.candidates, a.answer, a.answer_text) == (
            b.question,
            b.candidates,
            b.answer,
            b.answer_text,
        )
        assert np.array_equal(a.frames, b.frames)


def test_task_names_follow_tvbench():
    assert TASKS == (
        "moving_direction",
        "object_count",
        "action_sequence",
        "scene_transition",
        "action_antonym",
        "object_shuffle",
    )
    assert dict(NUM_OPTIONS) == {
        "moving_direction": 4,
        "object_count": 4,
        "action_sequence": 2,
        "scene_transition": 2,
        "action_antonym": 2,
        "object_shuffle": 3,
    }
    assert EVAL_SEED == 1234


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_gives_same_samples(task):
    assert_same_samples(generate(task, 4, seed=5), generate(task, 4, seed=5))


@pytest.mark.parametrize("task", TASKS)
def test_different_seeds_give_different_samples(task):
    first, second = generate(task, 4, seed=5), generate(task, 4, seed=6)
    assert any(not np.array_equal(a.frames, b.frames) for a, b in zip(first, second))


def test_a_shorter_run_is_a_prefix_of_a_longer_one():
    assert_same_samples(generate("object_shuffle", 4, seed=3), generate("object_shuffle", 7, seed=3)[:4])


def test_make_sample_is_deterministic_given_the_generator():
    first = make_sample("action_antonym", np.random.default_rng(9), sample_id="x/1")
    second = make_sample("action_antonym", np.random.default_rng(9), sample_id="x/1")
    assert_same_samples([first], [second])
    assert first.video_path == ""


@pytest.mark.parametrize("task", TASKS)
def test_sample_format(task):
    sample = generate(task, 1, seed=0)[0]
    assert sample.id == f"{task}/0000" and sample.task == task
    assert sample.frames.dtype == np.uint8 and sample.frames.shape == (16, 64, 64, 3)
    assert len(sample.candidates) == NUM_OPTIONS[task] == len(set(sample.candidates))
    assert sample.letters == tuple("ABCD"[: NUM_OPTIONS[task]])
    assert sample.candidates[sample.answer_index] == sample.answer_text
    assert sample.letters[sample.answer_index] == sample.answer


def test_clip_length_and_size_are_parameters():
    sample = generate("object_count", 1, seed=0, num_frames=8, size=32)[0]
    assert sample.frames.shape == (8, 32, 32, 3)
    with pytest.raises(QuestionSetError, match="num_frames >= 8"):
        generate("object_count", 1, seed=0, num_frames=4)


def test_unknown_task_lists_the_tasks():
    with pytest.raises(QuestionSetError, match="unknown synthetic task 'dance'.*moving_direction"):
        generate("dance", 1, seed=0)


@pytest.mark.parametrize("task", TASKS)
def test_answers_are_balanced_over_letters(task):
    samples = generate(task, BALANCED_N, seed=21)
    per_letter = BALANCED_N // NUM_OPTIONS[task]
    assert Counter(s.answer for s in samples) == {letter: per_letter for letter in samples[0].letters}


@pytest.mark.parametrize("task", ["moving_direction", "object_count", "object_shuffle"])
def test_answers_are_balanced_over_fixed_options(task):
    samples = generate(task, BALANCED_N, seed=21)
    per_option = BALANCED_N // NUM_OPTIONS[task]
    assert Counter(s.answer_text for s in samples) == {option: per_option for option in samples[0].candidates}


def test_option_order_is_shuffled():
    orders = {s.candidates for s in generate("moving_direction", 24, seed=2)}
    assert len(orders) > 4


def test_vocabulary_is_closed_disjoint_and_fully_used():
    kinds = (SPATIAL_WORDS, TEMPORAL_WORDS, OTHER_WORDS)
    assert sum(len(words) for words in kinds) == len(set().union(*kinds))
    used = set()
    for task in TASKS:
        for sample in generate(task, 40, seed=4):
            used.update(tokenize(sample.question))
            for option in sample.candidates:
                used.update(tokenize(option))
    assert used == set().union(*kinds)
    assert {word_kind(word) for word in ("red", "squares", "leftmost", "forest")} == {"spatial"}
    assert {word_kind(word) for word in ("left", "first", "grows", "appears", "after")} == {"temporal"}
    assert set(COLOURS) | set(SHAPES) | set(SCENES) <= set(SPATIAL_WORDS)


@pytest.mark.parametrize("shape", SHAPES)
def test_objects_are_at_least_10_pixels_at_64(shape):
    frames = 1
    sprite = Sprite(
        shape, (255, 0, 0), np.full(frames, 32.0), np.full(frames, 32.0), np.full(frames, 6.4), np.ones(frames, bool)
    )
    mask = sprite_masks(sprite, 64)[0]
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    assert np.ptp(rows) + 1 >= 10 and np.ptp(columns) + 1 >= 10


def test_in_memory_generation_is_fast():
    """At least 200 samples per second (best of three runs, all tasks mixed)."""
    best = np.inf
    for _ in range(3):
        started = time.perf_counter()
        for task in TASKS:
            generate(task, 20, seed=8)
        best = min(best, time.perf_counter() - started)
    assert 20 * len(TASKS) / best >= 200


def blob_centres(frame: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """Centres of the 4-connected blobs of colour ``rgb`` in ``frame``, shape ``(blobs, 2)`` as (x, y)."""
    mask = np.abs(frame.astype(int) - np.array(rgb)).sum(axis=-1) < 60
    labels = np.where(mask, np.arange(1, mask.size + 1).reshape(mask.shape), 0)
    while True:  # propagate the smallest label through each blob
        padded = np.pad(labels, 1)
        around = np.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:], labels])
        spread = np.where(mask, np.where(around == 0, labels.max() + 1, around).min(axis=0), 0)
        if np.array_equal(spread, labels):
            break
        labels = spread
    return np.array(
        [
            [np.nonzero(labels == value)[1].mean(), np.nonzero(labels == value)[0].mean()]
            for value in np.unique(labels[labels > 0])
        ]
    )


def test_object_shuffle_answer_follows_the_ball():
    """Track the cups frame to frame (least total displacement) from the cup that covered the ball."""
    for sample in generate("object_shuffle", 12, seed=5):
        ball = blob_centres(sample.frames[0], COLOUR_RGB["red"])[0]
        cups = blob_centres(sample.frames[0], (210, 140, 60))
        assert len(cups) == 3
        ball_cup = int(np.argmin(np.abs(cups[:, 0] - ball[0])))
        for frame in sample.frames[1:]:
            moved = blob_centres(frame, (210, 140, 60))
            assert len(moved) == 3, f"{sample.id}: cups overlap"
            order = min(itertools.permutations(range(3)), key=lambda p: ((moved[list(p)] - cups) ** 2).sum())
            cups = moved[list(order)]  # row i keeps following cup i
        final_rank = int(np.argsort(np.argsort(cups[:, 0]))[ball_cup])
        assert ("leftmost", "middle", "rightmost")[final_rank] == sample.answer_text, sample.id
