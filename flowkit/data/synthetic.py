"""Procedurally rendered multiple-choice video questions that need time.

Six generators mirror the TVBench tasks the paper analyses (plus Object
Shuffle).  Each one draws a short clip (``num_frames`` frames of
``size x size`` RGB, 16 x 64 x 64 by default) together with a question and
its answer options:

============================  =======  =============================================
task                          options  what the clip shows
============================  =======  =============================================
``moving_direction``          4        three objects; the named one moves left,
                                       right, up or down, the others move or stand
``object_count``              4        one to four objects of the named shape appear
                                       one after another, never two at once
``action_sequence``           2        two objects slide at different times; a third
                                       stands still; which moved first / last?
``scene_transition``          2        the background cuts from one scene to another
``action_antonym``            2        grows vs shrinks, appears vs disappears,
                                       approaches vs leaves
``object_shuffle``            3        a ball is shown under one of three cups, the
                                       cups are swapped; where is the ball at the end?
============================  =======  =============================================

Single-frame solvability
------------------------
Every generator is built so that ONE frame, drawn at a random time, carries
no information about the answer: the distribution of such a frame is the
same whatever the answer is.  The two-option tasks and Moving Direction get
this from a symmetry: the clip for one answer is the time-reversed (and, for
up/down, x/y-transposed) clip of another answer, and both are equally
likely, so the *set* of frames is the same and only their order differs.
Object Count and Object Shuffle get it from exchangeability instead; their
docstrings give the argument.  ``tests/test_data_single_frame.py`` checks
it empirically with a plain numpy classifier.  (A frame whose *time* is
known can of course help: the first frame of a scene transition shows the
first scene.  Knowing when a frame was taken is temporal information.)

Determinism and seeds
---------------------
All randomness comes from seeded ``numpy.random.Generator`` objects.
:func:`generate` derives one generator per sample from ``(seed, task,
index)``, so a sample does not depend on which other tasks or how many
other samples are generated.  The shipped evaluation split uses
:data:`EVAL_SEED`; **training must use other seeds**, otherwise the model
is trained on the test questions.

Scene records
-------------
:func:`make_scene_sample` returns, with each sample, a :class:`Scene`: every
drawn object (colour, shape, per-frame centre, half-size and visibility), the
per-frame background, and for Object Shuffle the cup swaps — the ground truth
the training captions are written from (:mod:`flowkit.smol_video.training.captions`).
Recording it draws nothing from the generator, so samples are byte-identical
with or without it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from flowkit.data.render import (
    COLOUR_RGB,
    COLOURS,
    SCENES,
    SHAPE_PLURALS,
    SHAPES,
    Sprite,
    always,
    plain_background,
    render,
    scene_image,
    still,
)
from flowkit.data.sample import OPTION_LETTERS, QuestionSetError, Sample

TASKS: tuple[str, ...] = (
    "moving_direction",
    "object_count",
    "action_sequence",
    "scene_transition",
    "action_antonym",
    "object_shuffle",
)
EVAL_SEED = 1234
MIN_FRAMES = 8
MIN_SIZE = 32

# Object half-size as a fraction of the frame side: 12.8 px wide at 64 x 64,
# still 6 px wide after a model downsamples to 32 x 32.
OBJECT_RADIUS = 0.1
_DIRECTIONS = ("left", "right", "up", "down")
_COUNT_WORDS = ("one", "two", "three", "four")
_ORDER_WORDINGS = (("first", True), ("before the other", True), ("last", False), ("after the other", False))
_ANTONYM_PAIRS = (("grows", "shrinks"), ("appears", "disappears"), ("approaches", "leaves"))
_CUP_POSITIONS = ("leftmost", "middle", "rightmost")
_CUP_SWAPS = ((0, 1), (0, 2), (1, 2))
_CUP_RGB = (210, 140, 60)
_BALL_RGB = COLOUR_RGB["red"]
# Seed-sequence stream tags: one stream per sample, one per block of the answer schedule.
_SAMPLE_STREAM, _SCHEDULE_STREAM = 0, 1


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One drawn object of a clip: what it is and where it is in every frame.

    ``colour`` is a name from :data:`~flowkit.data.render.COLOURS` (``None`` for the
    identical brown cups of Object Shuffle); ``shape`` a shape name, ``"cup"`` or
    ``"ball"``. ``role`` says what the generator made it for: ``"target"`` (the object
    the question names), ``"distractor"``, ``"reference"`` (the object an approach is
    measured against), ``"still"``, ``"clutter"``, ``"cup"`` or ``"ball"``.
    ``cx``, ``cy``, ``radius`` (pixels) and ``visible`` are per-frame arrays, in the
    order of the final clip (after any time reversal).
    """

    colour: str | None
    shape: str
    role: str
    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    visible: np.ndarray
    rgb: tuple[int, int, int]

    @property
    def name(self) -> str:
        """How a question names it: ``"red square"``, ``"cup"``, ``"red ball"``."""
        return f"{self.colour} {self.shape}" if self.colour else self.shape

    @property
    def sprite(self) -> Sprite:
        """The sprite that draws it (the renderer's shape name: a ball is a circle)."""
        shape = "circle" if self.shape == "ball" else self.shape
        return Sprite(shape, self.rgb, self.cx, self.cy, self.radius, self.visible)

    def _frames(self, index) -> SceneObject:
        return SceneObject(
            self.colour,
            self.shape,
            self.role,
            self.cx[index],
            self.cy[index],
            self.radius[index],
            self.visible[index],
            self.rgb,
        )


@dataclass(frozen=True, eq=False)
class Scene:
    """What a generated clip shows: objects (in drawing order), backgrounds, cup swaps.

    ``backgrounds`` holds one name per frame: a scene from
    :data:`~flowkit.data.render.SCENES` or ``"plain"``. For Object Shuffle,
    ``cup_swaps`` lists the swapped slot pairs in order (slots 0, 1, 2 = leftmost,
    middle, rightmost) and ``ball_start`` / ``ball_end`` the slot of the cup over the
    ball before and after them; the three fields are empty / ``None`` elsewhere.
    """

    task: str
    size: int
    objects: tuple[SceneObject, ...]
    backgrounds: tuple[str, ...]
    cup_swaps: tuple[tuple[int, int], ...] = ()
    ball_start: int | None = None
    ball_end: int | None = None

    @property
    def num_frames(self) -> int:
        return len(self.backgrounds)

    def at_frames(self, indices) -> Scene:
        """The scene of the clip ``frames[indices]`` (e.g. the frames a model samples)."""
        index = np.asarray(indices, dtype=int)
        return Scene(
            self.task,
            self.size,
            tuple(o._frames(index) for o in self.objects),
            tuple(self.backgrounds[i] for i in index),
            self.cup_swaps,
            self.ball_start,
            self.ball_end,
        )

    def reversed_in_time(self) -> Scene:
        """The scene of the clip played backwards (cup swaps are never reversed by a generator)."""
        return self.at_frames(np.arange(self.num_frames)[::-1])

    def render(self) -> np.ndarray:
        """Draw the scene again: equal to the sample's frames (a check of the record)."""
        background = np.stack(
            [
                plain_background(self.size) if name == "plain" else scene_image(name, self.size)
                for name in self.backgrounds
            ]
        )
        return render(background, [o.sprite for o in self.objects], self.size)


def _scene_object(sprite: Sprite, colour: str | None, role: str, shape: str | None = None) -> SceneObject:
    return SceneObject(
        colour, shape or sprite.shape, role, sprite.cx, sprite.cy, sprite.radius, sprite.visible, sprite.rgb
    )


def _plain_scene(task: str, size: int, num_frames: int, named_sprites) -> Scene:
    """A scene on the plain background from ``(sprite, colour, role)`` triples in drawing order."""
    return Scene(task, size, tuple(_scene_object(*entry) for entry in named_sprites), ("plain",) * num_frames)


@dataclass(frozen=True)
class _Episode:
    """A rendered clip with its question; the answer is ``options[label]``; ``scene`` what it shows."""

    frames: np.ndarray
    question: str
    options: tuple[str, ...]
    scene: Scene | None = None


def _pick(rng: np.random.Generator, names: tuple[str, ...], count: int, *, distinct: bool = True) -> list[str]:
    """``count`` names drawn uniformly, without repetition when ``distinct``."""
    indices = rng.choice(len(names), size=count, replace=not distinct)
    return [names[i] for i in indices]


def _reversed_in_time(frames: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frames[::-1])


def _cell_centre(cell: int, size: int, rng: np.random.Generator) -> tuple[float, float]:
    """A jittered centre of one of the nine cells of a 3 x 3 grid (row-major)."""
    row, column = divmod(int(cell), 3)
    jitter_x, jitter_y = rng.uniform(-0.04, 0.04, 2) * size
    return (column + 0.5) / 3 * size + jitter_x, (row + 0.5) / 3 * size + jitter_y


def _time_slots(count: int, num_frames: int) -> list[tuple[int, int]]:
    """Split the clip into ``count`` consecutive ``[first, stop)`` frame ranges."""
    bounds = np.linspace(0, num_frames, count + 1).round().astype(int)
    return [(int(first), int(stop)) for first, stop in zip(bounds[:-1], bounds[1:])]


def _straight_track(
    rng: np.random.Generator, direction: str | None, num_frames: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame centre ``(x, y)`` of an object moving ``direction`` (``None``: standing).

    The object travels ``0.35 * size`` at constant speed.  Its position along
    the motion axis is ``u + offset(t)`` and across it ``v + offset(s)`` for a
    random fixed frame ``s``, with ``u, v`` i.i.d. and ``offset`` symmetric
    about zero; a standing object sits at ``(u + offset(s1), v + offset(s2))``.
    So at a uniformly random frame both coordinates have the same
    distribution whatever the direction, and time reversal or swapping x and
    y maps the set of tracks onto itself.
    """
    travel = 0.35 * size
    offsets = np.linspace(-0.5, 0.5, num_frames) * travel
    margin = OBJECT_RADIUS * size * 1.15 + travel / 2
    u, v = rng.uniform(margin, size - margin, 2)
    if direction is None:
        return still(u + rng.choice(offsets), num_frames), still(v + rng.choice(offsets), num_frames)
    sign = -1.0 if direction in ("left", "up") else 1.0
    along = u + sign * offsets
    across = still(v + rng.choice(offsets), num_frames)
    return (along, across) if direction in ("left", "right") else (across, along)


def _moving_direction(rng: np.random.Generator, label: int, num_frames: int, size: int) -> _Episode:
    """Which direction does the named object move?

    Two distractors (other colours) each move in a random direction or stand
    still; the named object is drawn on top.  Construction argument: every
    object follows :func:`_straight_track`, whose distribution is invariant
    under time reversal (left <-> right, up <-> down) and under swapping x and
    y (left <-> up, right <-> down).  These maps reach every answer from every
    other, so a frame at a random time has the same distribution for all four.
    """
    colours = _pick(rng, COLOURS, 3)
    shapes = _pick(rng, SHAPES, 3, distinct=False)
    radius = still(OBJECT_RADIUS * size, num_frames)
    sprites = []
    for colour, shape in zip(colours[1:], shapes[1:]):
        direction = (*_DIRECTIONS, None)[rng.integers(len(_DIRECTIONS) + 1)]
        x, y = _straight_track(rng, direction, num_frames, size)
        sprites.append(Sprite(shape, COLOUR_RGB[colour], x, y, radius, always(num_frames)))
    x, y = _straight_track(rng, _DIRECTIONS[label], num_frames, size)
    sprites.append(Sprite(shapes[0], COLOUR_RGB[colours[0]], x, y, radius, always(num_frames)))
    question = f"Which direction does the {colours[0]} {shapes[0]} move?"
    scene = _plain_scene(
        "moving_direction",
        size,
        num_frames,
        [
            (sprites[0], colours[1], "distractor"),
            (sprites[1], colours[2], "distractor"),
            (sprites[2], colours[0], "target"),
        ],
    )
    return _Episode(render(plain_background(size), sprites, size), question, _DIRECTIONS, scene)


def _object_count(rng: np.random.Generator, label: int, num_frames: int, size: int) -> _Episode:
    """How many objects of the named shape appear during the clip (one to four)?

    The named-shape objects take turns: the clip is cut into ``count`` equal
    time slots and exactly one of them is visible in each, in its own grid
    cell and colour.  One to three other-shape distractors take turns the
    same way, in cells not used by a target they overlap in time.
    Construction argument: target cells and colours are the first ``count``
    entries of uniform random permutations, and all placement rules are
    equivariant under relabelling the cells, so at any frame the visible
    (target, distractor) pair is uniform over distinct cell pairs with uniform
    colours, whatever the count.  A single frame always shows exactly one
    target and one distractor.
    """
    count = label + 1
    target_shape = _pick(rng, SHAPES, 1)[0]
    distractor_shapes = tuple(shape for shape in SHAPES if shape != target_shape)
    target_cells = rng.permutation(9)[:count]
    target_colours = _pick(rng, COLOURS, count)
    target_slots = _time_slots(count, num_frames)
    radius = still(OBJECT_RADIUS * size, num_frames)
    sprites = []
    named = []  # (sprite, colour, role) for the scene record
    for cell, colour, (first, stop) in zip(target_cells, target_colours, target_slots):
        x, y = _cell_centre(cell, size, rng)
        visible = np.zeros(num_frames, dtype=bool)
        visible[first:stop] = True
        sprites.append(
            Sprite(target_shape, COLOUR_RGB[colour], still(x, num_frames), still(y, num_frames), radius, visible)
        )
        named.append((sprites[-1], colour, "target"))
    previous_cell = -1
    for first, stop in _time_slots(int(rng.integers(1, 4)), num_frames):
        busy = {int(cell) for cell, (t0, t1) in zip(target_cells, target_slots) if t0 < stop and first < t1}
        free = [cell for cell in range(9) if cell not in busy and cell != previous_cell]
        previous_cell = free[rng.integers(len(free))]
        x, y = _cell_centre(previous_cell, size, rng)
        visible = np.zeros(num_frames, dtype=bool)
        visible[first:stop] = True
        shape = _pick(rng, distractor_shapes, 1)[0]
        colour = _pick(rng, COLOURS, 1)[0]
        sprites.append(Sprite(shape, COLOUR_RGB[colour], still(x, num_frames), still(y, num_frames), radius, visible))
        named.append((sprites[-1], colour, "distractor"))
    question = f"How many {SHAPE_PLURALS[target_shape]} appear during the video?"
    scene = _plain_scene("object_count", size, num_frames, named)
    return _Episode(render(plain_background(size), sprites, size), question, _COUNT_WORDS, scene)


def _action_sequence(rng: np.random.Generator, label: int, num_frames: int, size: int) -> _Episode:
    """Which of two objects moves first (or last, before / after the other)?

    Object A slides between two grid cells early in the clip, object B later
    (``num_frames // 4`` frames each, never overlapping); a third object
    stands still.  The clip is then played backwards when the asked-for
    object is not the one the canonical clip puts in the asked-for place.
    Construction argument: the start and end cells of a slide are exchangeable,
    so a reversed clip is as likely as a forward one; reversing swaps which
    object moves first, so one frame at a random time cannot tell.
    """
    colours = _pick(rng, COLOURS, 3)
    shapes = _pick(rng, SHAPES, 3, distinct=False)
    cells = rng.permutation(9)[:5]
    duration = max(2, num_frames // 4)
    first_start = int(rng.integers(0, num_frames // 2 - duration + 1))
    second_start = int(rng.integers(num_frames // 2, num_frames - duration))
    radius = still(OBJECT_RADIUS * size, num_frames)
    frame_numbers = np.arange(num_frames)

    def slide(cell_from: int, cell_to: int, start: int) -> tuple[np.ndarray, np.ndarray]:
        (x0, y0), (x1, y1) = _cell_centre(cell_from, size, rng), _cell_centre(cell_to, size, rng)
        progress = np.clip((frame_numbers - start) / duration, 0.0, 1.0)
        return x0 + (x1 - x0) * progress, y0 + (y1 - y0) * progress

    standing_x, standing_y = _cell_centre(cells[4], size, rng)
    sprites = [
        Sprite(
            shapes[2],
            COLOUR_RGB[colours[2]],
            still(standing_x, num_frames),
            still(standing_y, num_frames),
            radius,
            always(num_frames),
        ),
        Sprite(shapes[0], COLOUR_RGB[colours[0]], *slide(cells[0], cells[1], first_start), radius, always(num_frames)),
        Sprite(shapes[1], COLOUR_RGB[colours[1]], *slide(cells[2], cells[3], second_start), radius, always(num_frames)),
    ]
    wording, asks_for_earlier = _ORDER_WORDINGS[rng.integers(len(_ORDER_WORDINGS))]
    frames = render(plain_background(size), sprites, size)
    scene = _plain_scene(
        "action_sequence",
        size,
        num_frames,
        [(sprites[0], colours[2], "still"), (sprites[1], colours[0], "target"), (sprites[2], colours[1], "target")],
    )
    # Canonically A (option 0) moves first; reverse when that contradicts the answer.
    if (label == 0) != asks_for_earlier:
        frames = _reversed_in_time(frames)
        scene = scene.reversed_in_time()
    options = (f"the {colours[0]} {shapes[0]}", f"the {colours[1]} {shapes[1]}")
    return _Episode(frames, f"Which object moves {wording}?", options, scene)


def _scene_transition(rng: np.random.Generator, label: int, num_frames: int, size: int) -> _Episode:
    """From which scene to which does the background cut?

    The cut falls at a random frame in the middle half of the clip; one
    object moves across the scene as clutter.  Construction argument: the
    clip for "from B to A" is the reversed clip for "from A to B", and the
    scene pair is drawn in random order, so both are equally likely.
    """
    first, second = _pick(rng, SCENES, 2)
    cut = int(rng.integers(num_frames // 4, num_frames - num_frames // 4 + 1))
    background = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    background[:cut] = scene_image(first, size)
    background[cut:] = scene_image(second, size)
    direction = (*_DIRECTIONS, None)[rng.integers(len(_DIRECTIONS) + 1)]
    x, y = _straight_track(rng, direction, num_frames, size)
    colour = _pick(rng, COLOURS, 1)[0]
    shape = _pick(rng, SHAPES, 1)[0]
    sprite = Sprite(shape, COLOUR_RGB[colour], x, y, still(OBJECT_RADIUS * size, num_frames), always(num_frames))
    frames = render(background, [sprite], size)
    scene = Scene(
        "scene_transition",
        size,
        (_scene_object(sprite, colour, "clutter"),),
        (first,) * cut + (second,) * (num_frames - cut),
    )
    if label == 1:
        frames = _reversed_in_time(frames)
        scene = scene.reversed_in_time()
    options = (f"from {first} to {second}", f"from {second} to {first}")
    return _Episode(frames, "How does the scene change?", options, scene)


def _action_antonym(rng: np.random.Generator, label: int, num_frames: int, size: int) -> _Episode:
    """Does the named object grow or shrink / appear or disappear / approach or leave?

    A second object stands still (for approaches/leaves it is the reference
    named in the options).  The canonical clip shows the first verb of the
    pair; the antonym is that clip played backwards.  Construction argument:
    both answers are the same clips in opposite order, equally likely, so a
    frame at a random time has the same distribution for both.
    """
    pair = int(rng.integers(len(_ANTONYM_PAIRS)))
    colours = _pick(rng, COLOURS, 2)
    shapes = _pick(rng, SHAPES, 2, distinct=False)
    radius = OBJECT_RADIUS * size
    if pair == 0:  # grows: centre of the frame, other object in a corner
        x, y = rng.uniform(0.42, 0.58, 2) * size
        corner = int(rng.integers(4))
        other_x, other_y = (0.12 + 0.76 * (corner % 2)) * size, (0.12 + 0.76 * (corner // 2)) * size
        target_x, target_y = still(x, num_frames), still(y, num_frames)
        target_radius = np.linspace(0.09, 0.18, num_frames) * size
        target_visible = always(num_frames)
    elif pair == 1:  # appears: at a random frame in the middle half of the clip
        target_cell, other_cell = rng.permutation(9)[:2]
        x, y = _cell_centre(target_cell, size, rng)
        other_x, other_y = _cell_centre(other_cell, size, rng)
        target_x, target_y = still(x, num_frames), still(y, num_frames)
        target_radius = still(radius, num_frames)
        onset = int(rng.integers(num_frames // 4, num_frames - num_frames // 4 + 1))
        target_visible = np.arange(num_frames) >= onset
    else:  # approaches: from 0.42 to 0.22 frame widths away from the reference
        margin = 1.15 * radius
        while True:
            angle = rng.uniform(0.0, 2.0 * np.pi)
            other_x, other_y = rng.uniform(0.25, 0.75, 2) * size
            far_x, far_y = other_x + 0.42 * size * np.cos(angle), other_y + 0.42 * size * np.sin(angle)
            if margin <= far_x <= size - margin and margin <= far_y <= size - margin:
                break
        distance = np.linspace(0.42, 0.22, num_frames) * size
        target_x, target_y = other_x + distance * np.cos(angle), other_y + distance * np.sin(angle)
        target_radius = still(radius, num_frames)
        target_visible = always(num_frames)
    sprites = [
        Sprite(
            shapes[1],
            COLOUR_RGB[colours[1]],
            still(other_x, num_frames),
            still(other_y, num_frames),
            still(radius, num_frames),
            always(num_frames),
        ),
        Sprite(shapes[0], COLOUR_RGB[colours[0]], target_x, target_y, target_radius, target_visible),
    ]
    frames = render(plain_background(size), sprites, size)
    scene = _plain_scene(
        "action_antonym",
        size,
        num_frames,
        [(sprites[0], colours[1], "reference" if pair == 2 else "still"), (sprites[1], colours[0], "target")],
    )
    if label == 1:
        frames = _reversed_in_time(frames)
        scene = scene.reversed_in_time()
    options = _ANTONYM_PAIRS[pair]
    if pair == 2:
        options = tuple(f"{verb} the {colours[1]} {shapes[1]}" for verb in options)
    return _Episode(frames, f"What does the {colours[0]} {shapes[0]} do?", options, scene)


def _object_shuffle(rng: np.random.Generator, label: int, num_frames: int, size: int) -> _Episode:
    """Under which cup is the ball after the cups have been swapped?

    For the first quarter of the clip the three identical cups are lifted and
    the ball is visible under one of them; then the cups are lowered and
    1 to ``(num_frames - 1 - num_frames // 4) // 4`` random pairs swap places
    (the cup moving right passes above the row, the one moving left below).
    Construction argument: the swaps are i.i.d. uniform over the three pairs,
    so their product is uniform over its parity class and the ball's start
    cup is uniform and independent of its end cup.  A frame either shows the
    ball at the start (independent of the answer) or cups without the ball
    (a function of the swaps alone, also independent of the answer).
    """
    reveal_frames = num_frames // 4
    max_swaps = max(1, (num_frames - 1 - reveal_frames) // 4)
    swaps = [_CUP_SWAPS[i] for i in rng.integers(len(_CUP_SWAPS), size=int(rng.integers(1, max_swaps + 1)))]
    start_position = label
    for a, b in reversed(swaps):  # undo the swaps to find where the ball starts
        start_position = {a: b, b: a}.get(start_position, start_position)

    slot_x = np.array([0.18, 0.5, 0.82]) * size
    rest_y, lift, arc = 0.6 * size, 0.16 * size, 0.22 * size
    frame_numbers = np.arange(num_frames)
    cup_x = np.repeat(slot_x[:, None], num_frames, axis=1)
    cup_y = np.full((3, num_frames), rest_y)
    cup_y[:, :reveal_frames] -= lift
    cup_at_slot = [0, 1, 2]
    # Frame `reveal_frames` shows the lowered cups at rest; the swaps share the frames after it.
    swap_frames = (num_frames - 1 - reveal_frames) / len(swaps)
    for number, (left_slot, right_slot) in enumerate(swaps):
        # A swap: the two cups leave the row (first quarter), cross (middle half), return (last quarter).
        progress = np.clip((frame_numbers - reveal_frames - number * swap_frames) / swap_frames, 0.0, 1.0)
        crossing = np.clip(2.0 * progress - 0.5, 0.0, 1.0)
        out_of_row = arc * np.clip(4.0 * np.minimum(progress, 1.0 - progress), 0.0, 1.0)
        moving = frame_numbers >= reveal_frames + number * swap_frames
        rightward, leftward = cup_at_slot[left_slot], cup_at_slot[right_slot]
        span = slot_x[right_slot] - slot_x[left_slot]
        cup_x[rightward, moving] = slot_x[left_slot] + span * crossing[moving]
        cup_x[leftward, moving] = slot_x[right_slot] - span * crossing[moving]
        cup_y[rightward] -= out_of_row
        cup_y[leftward] += out_of_row
        cup_at_slot[left_slot], cup_at_slot[right_slot] = leftward, rightward

    ball_visible = frame_numbers < reveal_frames
    ball = Sprite(
        "circle",
        _BALL_RGB,
        still(slot_x[start_position], num_frames),
        still(rest_y + 0.02 * size, num_frames),
        still(0.08 * size, num_frames),
        ball_visible,
    )
    cups = [
        Sprite("cup", _CUP_RGB, cup_x[cup], cup_y[cup], still(OBJECT_RADIUS * size, num_frames), always(num_frames))
        for cup in range(3)
    ]
    frames = render(plain_background(size), [ball, *cups], size)
    scene = Scene(
        "object_shuffle",
        size,
        (_scene_object(ball, "red", "ball", shape="ball"), *(_scene_object(cup, None, "cup") for cup in cups)),
        ("plain",) * num_frames,
        cup_swaps=tuple(swaps),
        ball_start=start_position,
        ball_end=label,
    )
    return _Episode(frames, "Which cup hides the ball at the end?", _CUP_POSITIONS, scene)


_GENERATORS: dict[str, Callable[[np.random.Generator, int, int, int], _Episode]] = {
    "moving_direction": _moving_direction,
    "object_count": _object_count,
    "action_sequence": _action_sequence,
    "scene_transition": _scene_transition,
    "action_antonym": _action_antonym,
    "object_shuffle": _object_shuffle,
}
NUM_OPTIONS = MappingProxyType(
    {
        "moving_direction": 4,
        "object_count": 4,
        "action_sequence": 2,
        "scene_transition": 2,
        "action_antonym": 2,
        "object_shuffle": 3,
    }
)


def check_task(task: str) -> None:
    """Raise :class:`QuestionSetError` unless ``task`` is one of :data:`TASKS`."""
    if task not in _GENERATORS:
        raise QuestionSetError(f"unknown synthetic task {task!r}; available tasks: {', '.join(TASKS)}")


def _check_clip_shape(num_frames: int, size: int) -> None:
    if num_frames < MIN_FRAMES or size < MIN_SIZE:
        raise QuestionSetError(
            f"synthetic clips need num_frames >= {MIN_FRAMES} and size >= {MIN_SIZE}, "
            f"got num_frames={num_frames}, size={size}"
        )


def _build_sample(
    task: str, rng: np.random.Generator, label: int, answer_slot: int, num_frames: int, size: int, sample_id: str
) -> Sample:
    """Render one episode and place its answer at option ``answer_slot``."""
    return _build_sample_and_scene(task, rng, label, answer_slot, num_frames, size, sample_id)[0]


def _build_sample_and_scene(
    task: str, rng: np.random.Generator, label: int, answer_slot: int, num_frames: int, size: int, sample_id: str
) -> tuple[Sample, Scene]:
    """:func:`_build_sample` plus the episode's :class:`Scene` (which draws nothing from ``rng``)."""
    episode = _GENERATORS[task](rng, label, num_frames, size)
    answer_text = episode.options[label]
    wrong_options = [option for index, option in enumerate(episode.options) if index != label]
    candidates = [wrong_options[i] for i in rng.permutation(len(wrong_options))]
    candidates.insert(answer_slot, answer_text)
    sample = Sample(
        id=sample_id,
        task=task,
        frames=episode.frames,
        question=episode.question,
        candidates=tuple(candidates),
        answer=OPTION_LETTERS[answer_slot],
        answer_text=answer_text,
    )
    return sample, episode.scene


def make_sample(
    task: str, rng: np.random.Generator, *, num_frames: int = 16, size: int = 64, sample_id: str | None = None
) -> Sample:
    """One in-memory sample of ``task`` with answer and option order drawn from ``rng``.

    Meant for on-the-fly training data: pass a generator seeded with anything
    but :data:`EVAL_SEED`.  ``sample_id`` defaults to ``"<task>/sample"``.
    """
    return make_scene_sample(task, rng, num_frames=num_frames, size=size, sample_id=sample_id)[0]


def make_scene_sample(
    task: str, rng: np.random.Generator, *, num_frames: int = 16, size: int = 64, sample_id: str | None = None
) -> tuple[Sample, Scene]:
    """:func:`make_sample` plus the clip's :class:`Scene` (the same sample, the same draws from ``rng``)."""
    check_task(task)
    _check_clip_shape(num_frames, size)
    option_count = NUM_OPTIONS[task]
    label, answer_slot = int(rng.integers(option_count)), int(rng.integers(option_count))
    return _build_sample_and_scene(task, rng, label, answer_slot, num_frames, size, sample_id or f"{task}/sample")


def iter_samples(task: str, n: int, seed: int, *, num_frames: int = 16, size: int = 64) -> Iterator[Sample]:
    """Yield ``n`` samples of ``task``, deterministically from ``seed``.

    Answers are balanced: in every consecutive block of ``k`` samples (``k``
    options) each answer option and each answer letter occurs exactly once,
    in an order drawn per block.  Sample ``i`` is called ``"<task>/<i:04d>"``
    and depends only on ``(seed, task, i)``, so a shorter run is a prefix of a
    longer one.
    """
    check_task(task)
    _check_clip_shape(num_frames, size)
    if n < 0 or seed < 0:
        raise QuestionSetError(f"need n >= 0 and seed >= 0, got n={n}, seed={seed}")
    option_count = NUM_OPTIONS[task]
    task_code = zlib.crc32(task.encode())
    for index in range(n):
        block, position = divmod(index, option_count)
        if position == 0:
            schedule = np.random.default_rng((seed, task_code, _SCHEDULE_STREAM, block))
            labels, answer_slots = schedule.permutation(option_count), schedule.permutation(option_count)
        rng = np.random.default_rng((seed, task_code, _SAMPLE_STREAM, index))
        yield _build_sample(
            task, rng, int(labels[position]), int(answer_slots[position]), num_frames, size, f"{task}/{index:04d}"
        )


def generate(task: str, n: int, seed: int, *, num_frames: int = 16, size: int = 64) -> list[Sample]:
    """``n`` in-memory samples of ``task`` from ``seed``; see :func:`iter_samples`."""
    return list(iter_samples(task, n, seed, num_frames=num_frames, size=size))
