"""The closed word list of the synthetic question set, split by what a word needs.

Every word that the generators in :mod:`flowkit.data.synthetic` put into a
question or an answer option belongs to exactly one of three tuples:

``SPATIAL_WORDS``
    Words whose meaning can be read off ONE frame: colours, shapes (singular
    and plural), scene names, the props of the shuffle game and the resting
    positions of the cups.
``TEMPORAL_WORDS``
    Words whose meaning needs SEVERAL frames in order: motion directions
    (``left``/``right``/``up``/``down`` describe a displacement, not a place),
    changes (``grows``, ``appears``, ``approaches`` ...) and order words
    (``first``, ``before``, ``after`` ...).
``OTHER_WORDS``
    Everything else: question words, articles, generic nouns and the count
    numerals (a count needs time here, but a numeral names neither a place
    nor an event).

A later chapter asks which kind of word the video tokens of a model align
with; :func:`word_kind` and :func:`tokenize` serve that analysis.  The test
suite checks that the three tuples are disjoint and together are exactly the
words the generators use.
"""

from __future__ import annotations

import re

SPATIAL_WORDS: tuple[str, ...] = (
    # colours
    "red",
    "green",
    "blue",
    "yellow",
    "cyan",
    "pink",
    "white",
    # shapes, singular and plural
    "square",
    "circle",
    "triangle",
    "diamond",
    "cross",
    "squares",
    "circles",
    "triangles",
    "diamonds",
    "crosses",
    # scenes
    "city",
    "desert",
    "forest",
    "sea",
    "space",
    # the shuffle game
    "cup",
    "ball",
    "leftmost",
    "middle",
    "rightmost",
)

TEMPORAL_WORDS: tuple[str, ...] = (
    # motion directions
    "left",
    "right",
    "up",
    "down",
    "direction",
    "move",
    "moves",
    # changes and their antonyms
    "grows",
    "shrinks",
    "appear",
    "appears",
    "disappears",
    "approaches",
    "leaves",
    "change",
    # order in time
    "first",
    "last",
    "before",
    "after",
    "during",
    "end",
    "from",
    "to",
)

OTHER_WORDS: tuple[str, ...] = (
    "which",
    "what",
    "how",
    "many",
    "does",
    "do",
    "the",
    "at",
    "other",
    "object",
    "scene",
    "video",
    "hides",
    "one",
    "two",
    "three",
    "four",
)

_WORD_PATTERN = re.compile(r"[a-z]+")


def tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and return its words, dropping punctuation."""
    return _WORD_PATTERN.findall(text.lower())


def word_kind(word: str) -> str:
    """Return ``"spatial"``, ``"temporal"`` or ``"other"`` for a vocabulary word.

    Raises ``KeyError`` for a word outside the closed vocabulary.
    """
    normalized = word.lower()
    if normalized in SPATIAL_WORDS:
        return "spatial"
    if normalized in TEMPORAL_WORDS:
        return "temporal"
    if normalized in OTHER_WORDS:
        return "other"
    raise KeyError(f"{word!r} is not in the flowkit.data vocabulary")


# ------------------------------------------------------------------ named word bags

#: The paper's lens word lists for TVBench's Action Sequence (the only task its lens script has
#: lists for), entry for entry as its script writes them: 22 spatial entries ("glass" twice) and
#: 14 temporal ones. Its script matches each word by its *first token*.
PAPER_ACTION_SEQUENCE_SPATIAL: tuple[str, ...] = (
    "bag",
    "bed",
    "blanket",
    "book",
    "box",
    "cabinet",
    "camera",
    "clothes",
    "cup",
    "glass",
    "bottle",
    "dish",
    "door",
    "floor",
    "food",
    "glass",
    "laptop",
    "paper",
    "person",
    "phone",
    "sandwich",
    "table",
)
PAPER_ACTION_SEQUENCE_TEMPORAL: tuple[str, ...] = (
    "eat",
    "close",
    "do",
    "down",
    "drink",
    "hold",
    "on",
    "open",
    "put",
    "sit",
    "throw",
    "tidy",
    "take",
    "up",
)

#: Named word bags for the lens on video tokens: ``name -> (spatial, temporal)``. ``"kit"`` is the
#: synthetic question set's balanced lists (every spatial and temporal word its generators use);
#: ``"paper_action_sequence"`` the paper's per-task lists.
WORD_BAGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "kit": (SPATIAL_WORDS, TEMPORAL_WORDS),
    "paper_action_sequence": (PAPER_ACTION_SEQUENCE_SPATIAL, PAPER_ACTION_SEQUENCE_TEMPORAL),
}
#: How each bag's words are matched to token ids: ``"whole_word"`` (a word that is one token, with
#: or without a leading space) or ``"first_token"`` (the paper's: the word's first token).
WORD_BAG_MATCH: dict[str, str] = {"kit": "whole_word", "paper_action_sequence": "first_token"}


def word_bag_words(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(spatial, temporal)`` of the named bag (a ``KeyError`` lists the names)."""
    try:
        return WORD_BAGS[name]
    except KeyError:
        raise KeyError(f"unknown word bag {name!r}: choose one of {sorted(WORD_BAGS)}") from None
