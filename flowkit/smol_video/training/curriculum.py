"""Easier training-only variants of the question set's tasks: the first rungs of a curriculum.

The question set's questions need *binding*: find the named object among distractors, then read
where it is or how it moves. A 135M language model with LoRA does not learn that from the
full tasks in a few hundred CPU steps. These variants drop the distractors, so the model
can first learn to read an object's place (and its drift over frames) from the video
tokens, then learn to pick the named object. They are never evaluated as tasks.

- ``lone_moving_direction``: the question set's moving-direction clip with the named object alone;
- ``lone_position`` (single frame): where is the only object in the picture?
- ``lone_side`` (single frame): is the only object on the left or on the right?
- ``lone_height`` (single frame): is the only object at the top or at the bottom?
- ``named_side`` (single frame): ``lone_side`` with one or two other objects in the picture —
  the first rung that needs binding (find the named object, then read its place).
"""

from __future__ import annotations

import numpy as np

from flowkit.data.render import COLOUR_RGB, COLOURS, SHAPES, Sprite, always, plain_background, render, still
from flowkit.data.sample import Sample
from flowkit.data.synthetic import _DIRECTIONS, OBJECT_RADIUS, _straight_track
from flowkit.prompts.spans import OPTION_LETTERS

CURRICULUM_VIDEO_TASKS = ("lone_moving_direction",)
CURRICULUM_FRAME_TASKS = ("lone_position", "lone_side", "lone_height", "named_side")


def _multiple_choice(task, rng, frames, question, options, label) -> Sample:
    order = rng.permutation(len(options))
    candidates = tuple(options[i] for i in order)
    answer = options[label]
    return Sample(
        id=f"{task}/sample",
        task=task,
        frames=frames,
        question=question,
        candidates=candidates,
        answer=OPTION_LETTERS[candidates.index(answer)],
        answer_text=answer,
    )


def make_curriculum_sample(task: str, rng: np.random.Generator, num_frames: int = 16, size: int = 64) -> Sample:
    """One sample of a curriculum task (see the module docstring)."""
    colour = str(COLOURS[int(rng.integers(len(COLOURS)))])
    shape = str(SHAPES[int(rng.integers(len(SHAPES)))])
    if task == "lone_moving_direction":
        label = int(rng.integers(4))
        x, y = _straight_track(rng, _DIRECTIONS[label], num_frames, size)
        sprite = Sprite(shape, COLOUR_RGB[colour], x, y, still(OBJECT_RADIUS * size, num_frames), always(num_frames))
        frames = render(plain_background(size), [sprite], size)
        return _multiple_choice(
            task, rng, frames, f"Which direction does the {colour} {shape} move?", _DIRECTIONS, label
        )
    if task in ("lone_position", "lone_side", "lone_height", "named_side"):
        from flowkit.smol_video.training.frames import _QUADRANTS, _layout, _sprite

        radius = OBJECT_RADIUS * size
        count = int(rng.integers(2, 4)) if task == "named_side" else 1
        colours = [colour] + [
            str(c) for c in rng.choice([c for c in COLOURS if c != colour], size=count - 1, replace=False)
        ]
        shapes = [shape] + [str(s) for s in rng.choice(SHAPES, size=count - 1)]
        centres, quadrants = _layout(rng, count, size, radius)
        sprites = [_sprite(s, c, x, y, radius) for s, c, (x, y) in zip(shapes, colours, centres)]
        frames = render(plain_background(size), sprites, size)
        quadrant = quadrants[0]
        if task in ("lone_side", "named_side"):
            return _multiple_choice(
                task,
                rng,
                frames,
                f"Is the {colour} {shape} on the left or on the right?",
                ("left", "right"),
                quadrant % 2,
            )
        if task == "lone_height":
            return _multiple_choice(
                task,
                rng,
                frames,
                f"Is the {colour} {shape} at the top or at the bottom?",
                ("top", "bottom"),
                quadrant // 2,
            )
        return _multiple_choice(task, rng, frames, f"Where is the {colour} {shape}?", _QUADRANTS, quadrant)
    raise ValueError(f"unknown curriculum task {task!r}; known: {CURRICULUM_VIDEO_TASKS + CURRICULUM_FRAME_TASKS}")
