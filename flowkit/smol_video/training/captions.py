"""Words for what a clip or a frame shows: captions and extra questions, from the generators' scene.

Recipe B of the kit's training (dense supervision, :mod:`flowkit.smol_video.training.dense`) needs
many target tokens per forward pass. The synthetic generators know each clip's full scene
(:func:`flowkit.data.synthetic.make_scene_sample` returns it as a
:class:`~flowkit.data.synthetic.Scene`); this module turns that ground truth into plain
English that SmolLM2 already reads:

- :func:`clip_caption`: what happens, in order — who is where at the start, who moves
  which way (from where to where), appears, disappears, grows, shrinks, approaches or
  leaves whom, when the scene changes, which object moves first and last, how many of
  each shape appear, how the cups swap and where the ball ends;
- :func:`frame_caption`: every object of one frame, its colour, shape, size and place, and
  the scene (stage-1 style; from the quadrant words :func:`flowkit.smol_video.training.frames.make_frame`
  returns, or from a clip's scene at one frame with :func:`scene_frame_caption`);
- :func:`clip_questions` / :func:`frame_questions`: further multiple-choice questions about
  the same clip or frame (direction, order, count, action, place at the start / end, scene,
  cups; colour and shape), in the question set's wording where the question set has one.

Captions are written from the scene *as the model sees it*: pass the scene sampled at the
model's frames (``scene.at_frames(indices)``), so an event between two sampled frames is
described by what those frames show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowkit.data.render import COLOURS, SCENES, SHAPE_PLURALS, SHAPES
from flowkit.data.synthetic import Scene, SceneObject

DIRECTIONS = ("left", "right", "up", "down")
COUNT_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
CUP_POSITIONS = ("leftmost", "middle", "rightmost")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
#: The nine places of a 3 x 3 grid, row-major, as a caption names them.
PLACES = ("top left", "top", "top right", "left", "middle", "right", "bottom left", "bottom", "bottom right")
#: The question set's wordings of the order question: (wording, asks for the object that moves earlier).
ORDER_WORDINGS = (("first", True), ("before the other", True), ("last", False), ("after the other", False))
SCENE_PHRASES = {
    "city": "in the city",
    "desert": "in the desert",
    "forest": "in the forest",
    "sea": "at sea",
    "space": "in space",
}
CLIP_CAPTION_REQUEST = "Describe what happens in the video."
FRAME_CAPTION_REQUEST = "Describe the picture."

# Thresholds, as fractions of the frame side (objects are 0.2 wide; tracks move 0.2-0.35).
_MOVING_STEP = 0.01  # a centre shift between two frames larger than this is motion
_MIN_TRAVEL = 0.08  # a net displacement smaller than this is not called a move
_MIN_APPROACH = 0.1  # the distance to a standing object must change by this much ...
_RADIAL_SHARE = 0.7  # ... and make up this share of the displacement
_SIZE_RATIO = 1.2  # radius ratio (last / first) that counts as growing


def place_name(x: float, y: float, size: int) -> str:
    """The 3 x 3 grid place of a point, e.g. ``"top left"``, ``"middle"``, ``"right"``."""
    column = min(2, max(0, int(3 * x / size)))
    row = min(2, max(0, int(3 * y / size)))
    return PLACES[3 * row + column]


def place_phrase(place: str) -> str:
    """``"top left"`` -> ``"at the top left"``, ``"left"`` -> ``"on the left"``, ``"middle"`` -> ``"in the middle"``."""
    if place == "middle":
        return "in the middle"
    if place in ("left", "right"):
        return f"on the {place}"
    return f"at the {place}"


def count_phrase(count: int, noun: str, plural: str) -> str:
    """``(3, "square", "squares")`` -> ``"three squares"``."""
    word = COUNT_WORDS[count - 1] if 1 <= count <= len(COUNT_WORDS) else str(count)
    return f"{word} {noun if count == 1 else plural}"


def _plural(shape: str) -> str:
    return SHAPE_PLURALS.get(shape, shape + "s")


def _join(items: list[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


# ----------------------------------------------------------------------------- one object's story
@dataclass(frozen=True)
class ObjectStory:
    """What one object does in a clip, read from its per-frame track."""

    obj: SceneObject
    first_seen: int
    last_seen: int
    start_place: str
    end_place: str
    moves: bool
    move_start: int
    move_end: int
    direction: str  # "right", "up and to the left", ... ("" when it does not move)
    axis_direction: str | None  # one of DIRECTIONS when the move is along one axis
    size_change: str | None  # "grows" / "shrinks"
    size_change_at: int
    relation: tuple[str, str] | None  # ("approaches" | "leaves", the other object's name)

    @property
    def name(self) -> str:
        return self.obj.name

    @property
    def appears(self) -> bool:
        return self.first_seen > 0

    def disappears(self, num_frames: int) -> bool:
        return self.last_seen < num_frames - 1

    def stays_still(self, num_frames: int) -> bool:
        return not self.moves and self.size_change is None and not self.appears and not self.disappears(num_frames)


def _direction_words(dx: float, dy: float) -> tuple[str, str | None]:
    horizontal = "right" if dx > 0 else "left"
    vertical = "down" if dy > 0 else "up"
    if abs(dx) >= 2 * abs(dy):
        return horizontal, horizontal
    if abs(dy) >= 2 * abs(dx):
        return vertical, vertical
    return f"{vertical} and to the {horizontal}", None


def object_story(scene: Scene, index: int) -> ObjectStory | None:
    """The story of ``scene.objects[index]``, or ``None`` when it is never visible."""
    obj, size = scene.objects[index], scene.size
    seen = np.flatnonzero(obj.visible)
    if len(seen) == 0:
        return None
    first, last = int(seen[0]), int(seen[-1])
    xy = np.stack([obj.cx, obj.cy], axis=1)
    steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    moving = [t for t in range(first, last) if steps[t] > _MOVING_STEP * size]
    move_start, move_end = (moving[0], moving[-1] + 1) if moving else (first, first)
    displacement = xy[move_end] - xy[move_start]
    moves = bool(moving) and float(np.linalg.norm(displacement)) > _MIN_TRAVEL * size
    direction, axis_direction = _direction_words(*displacement) if moves else ("", None)
    relation = None
    if moves:
        travel = float(np.linalg.norm(displacement))
        for other in scene.objects:
            if other is obj or not other.visible.all() or np.ptp(other.cx) + np.ptp(other.cy) > 1e-6:
                continue  # relations are measured against objects standing in view all along
            here = np.array([other.cx[0], other.cy[0]])
            change = float(np.linalg.norm(xy[move_end] - here) - np.linalg.norm(xy[move_start] - here))
            if abs(change) > _MIN_APPROACH * size and abs(change) >= _RADIAL_SHARE * travel:
                relation = ("approaches" if change < 0 else "leaves", other.name)
                break
    ratio = float(obj.radius[last] / obj.radius[first])
    size_change = "grows" if ratio > _SIZE_RATIO else "shrinks" if ratio < 1 / _SIZE_RATIO else None
    changing = np.flatnonzero(np.abs(np.diff(obj.radius)) > 1e-9)
    return ObjectStory(
        obj=obj,
        first_seen=first,
        last_seen=last,
        start_place=place_name(obj.cx[first], obj.cy[first], size),
        end_place=place_name(obj.cx[last], obj.cy[last], size),
        moves=moves,
        move_start=move_start,
        move_end=move_end,
        direction=direction,
        axis_direction=axis_direction,
        size_change=size_change,
        size_change_at=int(changing[0]) if len(changing) else first,
        relation=relation,
    )


def object_stories(scene: Scene) -> list[ObjectStory]:
    """The stories of the named objects (everything except Object Shuffle's cups and ball)."""
    stories = [object_story(scene, i) for i, o in enumerate(scene.objects) if o.role not in ("cup", "ball")]
    return [s for s in stories if s is not None]


def _unique_names(stories: list[ObjectStory]) -> set[str]:
    names = [s.name for s in stories]
    return {n for n in names if names.count(n) == 1}


# ----------------------------------------------------------------------------- captions
def _objects_phrase(items: list[tuple[str, str]]) -> str:
    """``[("a red square", "top left"), ...]`` -> ``"a red square at the top left and ..."``."""
    return _join([f"{noun} {place_phrase(place)}" for noun, place in items])


def _there_are(count: int) -> str:
    return (
        f"there is {count_phrase(count, 'object', 'objects')}"
        if count == 1
        else f"there are {count_phrase(count, 'object', 'objects')}"
    )


def clip_caption(scene: Scene) -> str:
    """What happens in the clip, in order (see the module docstring). Deterministic."""
    if scene.task == "object_shuffle" or scene.cup_swaps:
        return _shuffle_caption(scene)
    num_frames = scene.num_frames
    stories = object_stories(scene)
    sentences = []
    start_scene, end_scene = scene.backgrounds[0], scene.backgrounds[-1]
    if start_scene != "plain":
        sentences.append(_sentence(f"the video starts {SCENE_PHRASES.get(start_scene, 'in the ' + start_scene)}"))
    at_start = [s for s in stories if s.first_seen == 0]
    if at_start:
        opening = f"at the start {_there_are(len(at_start))}: " + _objects_phrase(
            [(f"a {s.name}", s.start_place) for s in at_start]
        )
    else:
        opening = "at the start there is nothing"
    sentences.append(_sentence(opening))

    events: list[tuple[int, int, str]] = []  # (frame, order within a frame, text)
    for t in range(1, num_frames):
        if scene.backgrounds[t] != scene.backgrounds[t - 1]:
            events.append((t, 1, f"the scene changes from {scene.backgrounds[t - 1]} to {scene.backgrounds[t]}"))
    for s in stories:
        if s.appears:
            events.append((s.first_seen, 2, f"a {s.name} appears {place_phrase(s.start_place)}"))
        if s.disappears(num_frames):
            events.append((s.last_seen + 1, 0, f"the {s.name} disappears"))
        if s.moves:
            text = f"the {s.name} moves {s.direction}"
            if s.start_place != s.end_place:
                text += f", from the {s.start_place} to the {s.end_place}"
            if s.relation:
                text += f": it {s.relation[0]} the {s.relation[1]}"
            events.append((s.move_start, 3, text))
        if s.size_change:
            events.append((s.size_change_at, 4, f"the {s.name} {s.size_change}"))
    events.sort(key=lambda e: (e[0], e[1]))
    previous = 0
    for frame in sorted({e[0] for e in events}):
        texts = [e[2] for e in events if e[0] == frame]
        then = "then " if frame > previous else ""
        if any("," in t or ":" in t for t in texts):  # long events: one sentence each
            sentences += [_sentence(then + texts[0])] + [_sentence(t) for t in texts[1:]]
        else:
            sentences.append(_sentence(then + _join(texts)))
        previous = frame
    still = [s for s in stories if s.stays_still(num_frames)]
    for s in still:
        sentences.append(_sentence(f"the {s.name} stays still {place_phrase(s.start_place)}"))
    movers = sorted((s for s in stories if s.moves), key=lambda s: s.move_start)
    if len(movers) >= 2:
        starts = [s.move_start for s in movers]
        if starts.count(starts[0]) == 1 and starts.count(starts[-1]) == 1:
            sentences.append(_sentence(f"the {movers[0].name} moves first and the {movers[-1].name} moves last"))
    if end_scene != start_scene:
        sentences.append(_sentence(f"the video ends {SCENE_PHRASES.get(end_scene, 'in the ' + end_scene)}"))
    shapes = {}
    for s in stories:
        shapes[s.obj.shape] = shapes.get(s.obj.shape, 0) + 1
    if shapes:
        counted = [count_phrase(n, shape, _plural(shape)) for shape, n in shapes.items()]
        verb = "appears" if len(counted) == 1 and list(shapes.values())[0] == 1 else "appear"
        sentences.append(_sentence(f"in all, {_join(counted)} {verb} during the video"))
    return " ".join(sentences)


def _swap_name(pair: tuple[int, int]) -> str:
    return f"the {CUP_POSITIONS[pair[0]]} and {CUP_POSITIONS[pair[1]]} cups swap places"


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count_phrase(count, 'time', 'times')}")


def _shuffle_caption(scene: Scene) -> str:
    if scene.ball_start is None or scene.ball_end is None:
        raise ValueError("an Object Shuffle scene needs ball_start and ball_end to be captioned")
    sentences = [
        _sentence(
            f"at the start three cups are lifted and a red ball lies under the {CUP_POSITIONS[scene.ball_start]} cup"
        ),
        _sentence("then the cups come down and hide the ball"),
    ]
    sentences += [_sentence("then " + _swap_name(pair)) for pair in scene.cup_swaps]
    sentences.append(_sentence(f"the cups swap {_times(len(scene.cup_swaps))}"))
    sentences.append(_sentence(f"at the end the ball is under the {CUP_POSITIONS[scene.ball_end]} cup"))
    return " ".join(sentences)


def frame_caption(quadrant_words: list[list[str]]) -> str:
    """A single frame in words, from :func:`flowkit.smol_video.training.frames.make_frame`'s quadrant words.

    ``quadrant_words`` holds, per quadrant (top left, top right, bottom left, bottom right),
    ``[colour, shape]`` (plus ``"large"``) for an object, or ``["nothing"]`` / ``[scene]``
    for an empty quadrant.
    """
    if len(quadrant_words) != len(QUADRANTS):
        raise ValueError(f"expected words for {len(QUADRANTS)} quadrants, got {len(quadrant_words)}")
    items, scene = [], "plain"
    for quadrant, words in zip(QUADRANTS, quadrant_words):
        if len(words) >= 2:
            size = "large " if "large" in words[2:] else ""
            items.append((f"a {size}{words[0]} {words[1]}", quadrant))
        elif words and words[0] in SCENES:
            scene = words[0]
    return _frame_sentence(items, scene)


def scene_frame_caption(scene: Scene, frame: int) -> str:
    """One frame of a clip's scene in words (3 x 3 grid places)."""
    items = []
    for obj in scene.objects:
        if obj.visible[frame]:
            noun = "cup" if obj.shape == "cup" else obj.name
            items.append((f"a {noun}", place_name(obj.cx[frame], obj.cy[frame], scene.size)))
    return _frame_sentence(items, scene.backgrounds[frame])


def _frame_sentence(items: list[tuple[str, str]], scene: str) -> str:
    where = "" if scene == "plain" else " " + SCENE_PHRASES.get(scene, f"in the {scene}")
    if not items:
        return _sentence(f"there is nothing{where}")
    return _sentence(f"{_there_are(len(items))}{where}: {_objects_phrase(items)}")


# ----------------------------------------------------------------------------- extra questions
@dataclass(frozen=True)
class Question:
    """A multiple-choice question about a clip or frame; ``options`` include ``answer``, unordered.

    ``fact`` names what it asks about (e.g. ``("direction", "red square")``), so that a
    conversation never asks the same fact twice. ``temporal`` says whether it needs time.
    """

    fact: tuple
    question: str
    options: tuple[str, ...]
    answer: str
    temporal: bool = True

    def __post_init__(self):
        if self.answer not in self.options or len(set(self.options)) != len(self.options):
            raise ValueError(f"bad question {self.question!r}: answer {self.answer!r}, options {self.options}")

    def shuffled(self, rng: np.random.Generator) -> tuple[tuple[str, ...], int]:
        """The options in a random order and the answer's index among them."""
        order = rng.permutation(len(self.options))
        candidates = tuple(self.options[i] for i in order)
        return candidates, candidates.index(self.answer)


def _with_distractors(answer: str, pool, rng: np.random.Generator, total: int = 4, preferred=()) -> tuple[str, ...]:
    """``answer`` plus up to ``total - 1`` others, those in ``preferred`` first (in random order)."""
    first = [p for p in dict.fromkeys(preferred) if p != answer]
    rest = [p for p in dict.fromkeys(pool) if p != answer and p not in first]
    first = [first[i] for i in rng.permutation(len(first))]
    rest = [rest[i] for i in rng.permutation(len(rest))]
    return (answer, *(first + rest)[: total - 1])


def primary_facts(scene: Scene) -> set[tuple]:
    """The facts the question of this clip asks (or gives away): extra questions skip them."""
    target = next((o for o in scene.objects if o.role == "target"), None)
    if scene.task == "moving_direction":
        return {("direction", target.name)}
    if scene.task == "object_count":
        return {("count", target.shape)}
    if scene.task == "action_sequence":
        return {("order",)}
    if scene.task == "scene_transition":  # its answer names both scenes
        return {("scene_change",), ("scene_start",), ("scene_end",)}
    if scene.task == "action_antonym":
        return {("action", target.name)}
    if scene.task == "object_shuffle":
        return {("ball_end",)}
    return set()


def clip_questions(scene: Scene, rng: np.random.Generator) -> list[Question]:
    """Every question this clip answers (bench-style wording), the question's facts excluded."""
    questions: list[Question] = []
    if scene.task == "object_shuffle" or scene.cup_swaps:
        questions.append(
            Question(
                ("ball_start",),
                "Which cup hides the ball at the start?",
                CUP_POSITIONS,
                CUP_POSITIONS[scene.ball_start],
            )
        )
        questions.append(
            Question(
                ("ball_end",), "Which cup hides the ball at the end?", CUP_POSITIONS, CUP_POSITIONS[scene.ball_end]
            )
        )
        times = ("once", "twice", "three times")
        if len(scene.cup_swaps) <= len(times):
            questions.append(
                Question(("swaps",), "How many times do the cups swap places?", times, times[len(scene.cup_swaps) - 1])
            )
    num_frames = scene.num_frames
    stories = object_stories(scene)
    unique = _unique_names(stories)
    named = [s for s in stories if s.name in unique]
    for s in named:
        if s.axis_direction:
            questions.append(
                Question(
                    ("direction", s.name), f"Which direction does the {s.name} move?", DIRECTIONS, s.axis_direction
                )
            )
        action = None
        if s.size_change:
            action = (s.size_change, ("grows", "shrinks"))
        elif s.appears != s.disappears(num_frames) and not s.moves:
            verb = "appears" if s.appears else "disappears"
            action = (verb, ("appears", "disappears"))
        elif s.relation:
            verb, other = s.relation
            action = (f"{verb} the {other}", (f"approaches the {other}", f"leaves the {other}"))
        if action:
            questions.append(Question(("action", s.name), f"What does the {s.name} do?", action[1], action[0]))
        # the place at the start / end needs time only for an object that moves
        if s.first_seen == 0:
            questions.append(
                Question(
                    ("place_start", s.name),
                    f"Where is the {s.name} at the start?",
                    _with_distractors(s.start_place, PLACES, rng),
                    s.start_place,
                    s.moves,
                )
            )
        if s.last_seen == num_frames - 1:
            questions.append(
                Question(
                    ("place_end", s.name),
                    f"Where is the {s.name} at the end?",
                    _with_distractors(s.end_place, PLACES, rng),
                    s.end_place,
                    s.moves,
                )
            )
    movers = sorted((s for s in named if s.moves), key=lambda s: s.move_start)
    if len(movers) == 2 and movers[0].move_start != movers[1].move_start:
        wording, earlier = ORDER_WORDINGS[int(rng.integers(len(ORDER_WORDINGS)))]
        answer = movers[0] if earlier else movers[1]
        questions.append(
            Question(
                ("order",),
                f"Which object moves {wording}?",
                tuple(f"the {m.name}" for m in movers),
                f"the {answer.name}",
            )
        )
    standing = [s for s in named if s.stays_still(num_frames)]
    present = [s for s in named if s.first_seen == 0]
    if len(standing) == 1 and 2 <= len(present) <= 4:
        questions.append(
            Question(
                ("still",),
                "Which object stays still?",
                tuple(f"the {s.name}" for s in present),
                f"the {standing[0].name}",
            )
        )
    shape_counts: dict[str, int] = {}
    for s in stories:
        shape_counts[s.obj.shape] = shape_counts.get(s.obj.shape, 0) + 1
    for shape, count in shape_counts.items():
        if count <= 4 and shape in SHAPES:
            # one frame shows the count unless some object of the shape comes or goes
            comes_or_goes = any(s.obj.shape == shape and (s.appears or s.disappears(num_frames)) for s in stories)
            questions.append(
                Question(
                    ("count", shape),
                    f"How many {_plural(shape)} appear during the video?",
                    COUNT_WORDS[:4],
                    COUNT_WORDS[count - 1],
                    comes_or_goes,
                )
            )
    changes = [t for t in range(1, num_frames) if scene.backgrounds[t] != scene.backgrounds[t - 1]]
    if len(changes) == 1:
        first, second = scene.backgrounds[0], scene.backgrounds[-1]
        change = f"from {first} to {second}"
        questions.append(
            Question(("scene_change",), "How does the scene change?", (change, f"from {second} to {first}"), change)
        )
        questions.append(
            Question(
                ("scene_start",),
                "What is the scene at the start?",
                _with_distractors(first, SCENES, rng, preferred=[second]),
                first,
            )
        )
        questions.append(
            Question(
                ("scene_end",),
                "What is the scene at the end?",
                _with_distractors(second, SCENES, rng, preferred=[first]),
                second,
            )
        )
    colours = [s.obj.colour for s in stories if s.obj.colour]
    shapes = [s.obj.shape for s in stories]
    for s in stories:
        if s.obj.colour and shapes.count(s.obj.shape) == 1:
            questions.append(
                Question(
                    ("colour", s.obj.shape),
                    f"What colour is the {s.obj.shape}?",
                    _with_distractors(s.obj.colour, COLOURS, rng, preferred=colours),
                    s.obj.colour,
                    temporal=False,
                )
            )
        if s.obj.colour and colours.count(s.obj.colour) == 1:
            questions.append(
                Question(
                    ("shape", s.obj.colour),
                    f"What shape is the {s.obj.colour} object?",
                    _with_distractors(s.obj.shape, SHAPES, rng, preferred=shapes),
                    s.obj.shape,
                    temporal=False,
                )
            )
    excluded = primary_facts(scene)
    return [q for q in questions if q.fact not in excluded]


def frame_questions(
    quadrant_words: list[list[str]], rng: np.random.Generator, primary_question: str = ""
) -> list[Question]:
    """Every question a frame answers (the wording of :mod:`flowkit.smol_video.training.frames`), except ``primary_question``."""
    objects = [
        (words[0], words[1], "large" in words[2:], quadrant)
        for quadrant, words in zip(QUADRANTS, quadrant_words)
        if len(words) >= 2
    ]
    scene = next((w[0] for w in quadrant_words if len(w) == 1 and w[0] in SCENES), None)
    colours = [o[0] for o in objects]
    shapes = [o[1] for o in objects]
    questions = []
    for colour, shape, large, quadrant in objects:
        if shapes.count(shape) == 1:
            questions.append(
                Question(
                    ("colour", shape),
                    f"What colour is the {shape}?",
                    _with_distractors(colour, COLOURS, rng, preferred=colours),
                    colour,
                    False,
                )
            )
        if colours.count(colour) == 1:
            questions.append(
                Question(
                    ("shape", colour),
                    f"What shape is the {colour} object?",
                    _with_distractors(shape, SHAPES, rng, preferred=shapes),
                    shape,
                    False,
                )
            )
            questions.append(
                Question(("place", colour, shape), f"Where is the {colour} {shape}?", QUADRANTS, quadrant, False)
            )
            size = "large" if large else "small"
            questions.append(
                Question(
                    ("size", colour, shape), f"Is the {colour} {shape} large or small?", ("large", "small"), size, False
                )
            )
    if 1 <= len(objects) <= 4:
        questions.append(
            Question(("count",), "How many objects are there?", COUNT_WORDS[:4], COUNT_WORDS[len(objects) - 1], False)
        )
    if scene:
        questions.append(
            Question(("scene",), "What is the scene?", _with_distractors(scene, SCENES, rng), scene, False)
        )
    return [q for q in questions if q.question != primary_question]


def pick_questions(questions: list[Question], count: int, rng: np.random.Generator) -> list[Question]:
    """Up to ``count`` questions about distinct facts: those that need time first, in random order."""
    temporal = [q for q in questions if q.temporal]
    static = [q for q in questions if not q.temporal]
    ordered = [temporal[i] for i in rng.permutation(len(temporal))] + [static[i] for i in rng.permutation(len(static))]
    picked, facts = [], set()
    for q in ordered:
        if len(picked) == count:
            break
        if q.fact not in facts:
            picked.append(q)
            facts.add(q.fact)
    return picked
