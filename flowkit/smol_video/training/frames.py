"""Single-frame questions: the stage-1 (image-only) training data of the kit's small model.

Stage 1 of LLaVA-style training aligns the vision side with the language model on
questions one frame answers: what colour, what shape, where, which scene, how many,
how big. The model trained on these alone is the *image-only control* of finding 1:
it never saw a question that needs time. Frames are drawn with the same renderer as
the temporal question set, so the two stages share one visual world.
"""

from __future__ import annotations

import numpy as np

from flowkit.data.render import COLOUR_RGB, COLOURS, SCENES, SHAPES, Sprite, plain_background, render, scene_image
from flowkit.data.sample import Sample
from flowkit.data.synthetic import OBJECT_RADIUS
from flowkit.prompts.spans import OPTION_LETTERS

FRAME_TASKS = ("colour", "shape", "position", "scene", "count", "size")
_QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
_COUNTS = ("one", "two", "three", "four")


def _sprite(shape, colour, cx, cy, radius):
    one = lambda v: np.array([float(v)])  # noqa: E731
    return Sprite(
        shape=shape, rgb=COLOUR_RGB[colour], cx=one(cx), cy=one(cy), radius=one(radius), visible=np.array([True])
    )


def _layout(rng, count: int, size: int, radius: float) -> list[tuple[float, float]]:
    """Centres in distinct quadrants (so objects never overlap)."""
    quadrants = rng.choice(4, size=count, replace=False)
    centres = []
    for q in quadrants:
        row, col = divmod(int(q), 2)
        lo = radius * 1.2
        hi = size / 2 - radius * 1.2
        centres.append((col * size / 2 + rng.uniform(lo, hi), row * size / 2 + rng.uniform(lo, hi)))
    return centres, [int(q) for q in quadrants]


def make_frame_sample(task: str, rng: np.random.Generator, size: int = 64, sample_id: str = "frame/sample") -> Sample:
    """One single-frame multiple-choice question of ``task`` (one of :data:`FRAME_TASKS`)."""
    return make_frame(task, rng, size, sample_id)[0]


def make_frame(
    task: str, rng: np.random.Generator, size: int = 64, sample_id: str = "frame/sample"
) -> tuple[Sample, list[list[str]]]:
    """A single-frame question and, per quadrant (top-left, top-right, bottom-left,
    bottom-right), the words that describe what it shows (stage 0's targets)."""
    radius = OBJECT_RADIUS * size
    background = plain_background(size)
    count = int(rng.integers(1, 4))
    if task == "count":
        count = int(rng.integers(1, 5))
    shapes = [str(x) for x in rng.choice(SHAPES, size=count, replace=False)]
    colours = [str(x) for x in rng.choice(COLOURS, size=count, replace=False)]
    centres, quadrants = _layout(rng, count, size, radius)
    radii = [
        radius * (rng.uniform(1.3, 1.6) if task == "size" and i == 0 and rng.random() < 0.5 else 1.0)
        for i in range(count)
    ]
    if task == "scene":
        scene = str(SCENES[int(rng.integers(len(SCENES)))])
        background = scene_image(scene, size)
    sprites = [_sprite(s, c, x, y, r) for s, c, (x, y), r in zip(shapes, colours, centres, radii)]
    frames = render(background, sprites, size)
    target_shape, target_colour = shapes[0], colours[0]
    if task == "colour":
        question = f"What colour is the {target_shape}?"
        answer, pool = target_colour, [c for c in COLOURS if c not in colours]
    elif task == "shape":
        question = f"What shape is the {target_colour} object?"
        answer, pool = target_shape, [s for s in SHAPES if s not in shapes]
    elif task == "position":
        question = f"Where is the {target_colour} {target_shape}?"
        answer, pool = _QUADRANTS[quadrants[0]], [q for q in _QUADRANTS if q != _QUADRANTS[quadrants[0]]]
    elif task == "scene":
        question = "What is the scene?"
        answer, pool = scene, [s for s in SCENES if s != scene]
    elif task == "count":
        question = "How many objects are there?"
        answer, pool = _COUNTS[count - 1], [c for c in _COUNTS if c != _COUNTS[count - 1]]
    elif task == "size":
        question = f"Is the {target_colour} {target_shape} large or small?"
        answer, pool = ("large" if radii[0] > radius else "small"), []
        pool = ["small" if answer == "large" else "large"]
    else:
        raise ValueError(f"unknown frame task {task!r}; known: {FRAME_TASKS}")
    distractors = [str(x) for x in rng.choice(pool, size=min(3, len(pool)), replace=False)]
    candidates = distractors + [answer]
    order = rng.permutation(len(candidates))
    candidates = tuple(candidates[i] for i in order)
    letter = OPTION_LETTERS[candidates.index(answer)]
    empty = [scene] if task == "scene" else ["nothing"]
    quadrant_words = [list(empty) for _ in range(4)]
    for shape, colour, quadrant, r in zip(shapes, colours, quadrants, radii):
        quadrant_words[quadrant] = [colour, shape] + (["large"] if r > radius else [])
    sample = Sample(
        id=sample_id,
        task=f"frame_{task}",
        frames=frames,
        question=question,
        candidates=candidates,
        answer=letter,
        answer_text=answer,
    )
    return sample, quadrant_words
