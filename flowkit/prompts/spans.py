"""Where each part of a multiple-choice video prompt sits in the token sequence.

A :class:`Spans` object is computed by a family adapter from the real input ids the
processor produced (never by string search in a notebook). All spans are half-open
``(start, end)`` position ranges into the language model's input sequence.

Named token groups (the two sides of an edge group such as ``"video->question"``) are
listed, each with what it holds, in :data:`TOKEN_GROUPS` at the end of this module: the
one table that :meth:`Spans.positions`, :meth:`Spans.group_names` and the error messages read.

Adding a token group is one entry in :data:`TOKEN_GROUPS`: its name, what it holds and a
function from a :class:`Spans` to its positions. It can then be used on either side of an
edge group (``"my_group->last"``) and appears in every list of known groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from collections.abc import Callable, Sequence

from flowkit.data.sample import OPTION_LETTERS
from flowkit.errors import KnockoutError

Span = tuple[int, int]


def _positions(span: Span) -> list[int]:
    return list(range(span[0], span[1]))


@dataclass(frozen=True)
class Spans:
    """Token positions of the parts of one prompt.

    Attributes:
        seq_len: length of the language model's input sequence.
        frame_spans: one ``(start, end)`` per frame, in time order. When a family merges
            several frames into one token block (Qwen's temporal patches), each block is
            one entry and ``frames_per_span`` says how many frames it holds.
        question_text: the question sentence.
        option_spans: one span per option, in letter order.
        last: index of the last position (``seq_len - 1``).
        true_option: index of the correct option if known, else ``None``.
        frames_per_span: frames merged into one token block (1 for most families).
        video_span: the whole video region when it holds more than the frames' tokens
            (per-frame timestamps or markers, a trailing newline token). ``None`` means
            the region runs from the first frame's first token to the last frame's last.
            Separator tokens belong to ``video`` but to no frame.
        question_span: the paper's question span when it starts before the question
            sentence, i.e. when the template writes a header such as ``Question:`` in
            front of it (the paper's PLLaVA prompt). ``None`` means the span runs from
            the question sentence's first token to the last option's last token.
    """

    seq_len: int
    frame_spans: tuple[Span, ...]
    question_text: Span
    option_spans: tuple[Span, ...]
    last: int
    true_option: int | None = None
    frames_per_span: int = 1
    video_span: Span | None = None
    question_span: Span | None = None
    _groups: dict = field(default=None, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        if not self.frame_spans:
            raise KnockoutError("Spans need at least one frame span; the prompt holds no video tokens.")
        starts = [s for s, _ in self.frame_spans]
        if starts != sorted(starts) or any(e <= s for s, e in self.frame_spans):
            raise KnockoutError(f"frame spans must be non-empty and in order, got {self.frame_spans}")
        if self.video_span is not None:
            vs, ve = self.video_span
            if not (vs <= self.frame_spans[0][0] and self.frame_spans[-1][1] <= ve):
                raise KnockoutError(
                    f"the video region {self.video_span} must contain every frame span, got {self.frame_spans}"
                )
        if self.question_span is not None:
            qs, qe = self.question_span
            options_end = self.option_spans[-1][1] if self.option_spans else self.question_text[1]
            if not (qs <= self.question_text[0] and options_end <= qe):
                raise KnockoutError(
                    f"the question span {self.question_span} must contain the question sentence "
                    f"{self.question_text} and every option {self.option_spans}"
                )
            if qs < self.video[1] or qe > self.last:
                raise KnockoutError(
                    f"the question span {self.question_span} must lie after the video region {self.video} "
                    f"and before the last position {self.last}"
                )
        if not 0 <= self.last < self.seq_len:
            raise KnockoutError(f"last position {self.last} lies outside a sequence of {self.seq_len}")
        if self.true_option is not None and not 0 <= self.true_option < len(self.option_spans):
            raise KnockoutError(f"true_option={self.true_option} but the prompt has {len(self.option_spans)} options")

    # ----------------------------------------------------------------- geometry
    @property
    def num_frames(self) -> int:
        """Number of frame token blocks (see ``frames_per_span``)."""
        return len(self.frame_spans)

    @property
    def video(self) -> Span:
        """The span of the video region (every frame and the separators between them)."""
        if self.video_span is not None:
            return self.video_span
        return (self.frame_spans[0][0], self.frame_spans[-1][1])

    @property
    def question(self) -> Span:
        """The paper's question span: header (if any) or question sentence through the last option."""
        if self.question_span is not None:
            return self.question_span
        end = self.option_spans[-1][1] if self.option_spans else self.question_text[1]
        return (self.question_text[0], end)

    @property
    def prompt_after_video(self) -> Span:
        """Every position after the video region and before the last position."""
        return (self.video[1], self.last)

    @property
    def num_video_tokens(self) -> int:
        """Tokens in frame spans (separators not counted)."""
        return sum(e - s for s, e in self.frame_spans)

    @property
    def letters(self) -> tuple[str, ...]:
        """Option letters, ``("A", "B", ...)``."""
        return OPTION_LETTERS[: len(self.option_spans)]

    def with_true_option(self, index: int | None) -> Spans:
        """A copy that knows which option is correct (needed for ``true_option`` groups)."""
        return replace(self, true_option=index)

    # ------------------------------------------------------------------- groups
    def group_names(self) -> list[str]:
        """All group names this prompt understands (see :data:`TOKEN_GROUPS`)."""
        return [name for token_group in TOKEN_GROUPS for name in token_group.names(self)]

    def positions(self, group: str) -> list[int]:
        """Positions of a named token group (:data:`TOKEN_GROUPS` lists them)."""
        group = group.strip()
        stem, colon, _ = group.partition(":")
        token_group = next((g for g in TOKEN_GROUPS if g.stem == stem and g.indexed == bool(colon)), None)
        if token_group is None:
            raise KnockoutError(
                f"unknown token group {group!r}. Known groups: {', '.join(self.group_names())} "
                "(frame:i takes a 0-based frame index)."
            )
        if token_group.needs_answer and self.true_option is None:
            raise KnockoutError(
                f"the group {group!r} needs to know the correct answer; build the spans from a "
                "sample with an answer (or call spans.with_true_option(index))."
            )
        return token_group.positions(self, group) if token_group.indexed else token_group.positions(self)

    def to_dict(self) -> dict:
        """A JSON-friendly description (for widgets and caches)."""
        return {
            "seq_len": self.seq_len,
            "frame_spans": [list(s) for s in self.frame_spans],
            "question_text": list(self.question_text),
            "option_spans": [list(s) for s in self.option_spans],
            "last": self.last,
            "true_option": self.true_option,
            "frames_per_span": self.frames_per_span,
            "video_span": list(self.video_span) if self.video_span is not None else None,
            "question_span": list(self.question_span) if self.question_span is not None else None,
        }

    def describe(self) -> str:
        """A short human-readable table of the spans."""
        lines = [f"sequence length {self.seq_len}"]
        lines.append(f"prefix          0..{self.video[0] - 1}")
        for i, (s, e) in enumerate(self.frame_spans):
            label = (
                f"frame {i}"
                if self.frames_per_span == 1
                else f"frames {i * self.frames_per_span}-{(i + 1) * self.frames_per_span - 1}"
            )
            lines.append(f"{label:<15} {s}..{e - 1} ({e - s} tokens)")
        separators = (self.video[1] - self.video[0]) - self.num_video_tokens
        if separators:
            lines.append(
                f"video region    {self.video[0]}..{self.video[1] - 1} "
                f"(incl. {separators} separator tokens in no frame)"
            )
        s, e = self.question
        lines.append(f"question        {s}..{e - 1} (the paper's question span: through the last option)")
        s, e = self.question_text
        lines.append(f"question text   {s}..{e - 1}")
        for letter, (s, e) in zip(self.letters, self.option_spans):
            mark = " (true)" if self.true_option is not None and self.letters[self.true_option] == letter else ""
            lines.append(f"{'option ' + letter + mark:<15} {s}..{e - 1}")
        template = (self.last - self.video[1]) - (self.question[1] - self.question[0])
        if template:
            lines.append(
                f"template        {template} tokens after the video outside the question span "
                f"(in prompt_after_video only)"
            )
        lines.append(f"last            {self.last}")
        return "\n".join(lines)


def _parse_index(group: str, kind: str, count: int) -> int:
    raw = group.split(":", 1)[1].strip()
    try:
        index = int(raw)
    except ValueError:
        raise KnockoutError(f"{group!r}: {kind} index must be an integer, e.g. '{kind}:0'.") from None
    if index < 0:
        raise KnockoutError(
            f"{group!r}: {kind} index {index} is before the start: {kind}s count from 0 "
            f"({kind}:0 is the first; valid: 0..{count - 1})."
        )
    if index >= count:
        raise KnockoutError(
            f"{group!r}: {kind} index {index} is beyond the video, which has {count} {kind}s (valid: 0..{count - 1})."
        )
    return index


def _frame_positions(spans: Spans, group: str) -> list[int]:
    return _positions(spans.frame_spans[_parse_index(group, "frame", spans.num_frames)])


def _option_positions(spans: Spans, group: str) -> list[int]:
    letter = group.split(":", 1)[1].strip().upper()
    if letter not in spans.letters:
        raise KnockoutError(f"option {letter!r} does not exist: this prompt has options {', '.join(spans.letters)}.")
    return _positions(spans.option_spans[spans.letters.index(letter)])


def _false_option_positions(spans: Spans) -> list[int]:
    return [p for i, span in enumerate(spans.option_spans) if i != spans.true_option for p in _positions(span)]


@dataclass(frozen=True)
class TokenGroup:
    """One named token group: a set of positions of a prompt that edge groups connect.

    Attributes:
        name: how it is written, e.g. ``"video"``; an indexed group is written
            ``"stem:index"`` (``"frame:i"``, ``"option:X"``) and named per index
            (``"frame:0"``, ``"option:A"``).
        meaning: what the group holds, in a sentence.
        positions: its positions in a :class:`Spans`: ``positions(spans)``, or for an indexed
            group ``positions(spans, name_as_written)`` (e.g. ``"frame:2"``).
        indices: for an indexed group, the indices a prompt has (``spans -> [0, 1, ...]``).
        needs_answer: the group exists only when the spans know the correct option.
    """

    name: str
    meaning: str
    positions: Callable[..., list[int]]
    indices: Callable[[Spans], Sequence] | None = None
    needs_answer: bool = False

    @property
    def stem(self) -> str:
        """The name before ``":"`` (the whole name of a group that is not indexed)."""
        return self.name.split(":", 1)[0]

    @property
    def indexed(self) -> bool:
        """Whether the group is written with an index (``"frame:i"``)."""
        return self.indices is not None

    def names(self, spans: Spans) -> list[str]:
        """The names under which ``spans`` has this group (none, one, or one per index)."""
        if self.needs_answer and spans.true_option is None:
            return []
        if not self.indexed:
            return [self.name]
        return [f"{self.stem}:{index}" for index in self.indices(spans)]


#: Every named token group, in the order prompts list them. Add a token group here (and
#: nowhere else): :meth:`Spans.positions`, :meth:`Spans.group_names`, the unknown-group
#: errors and :func:`flowkit.intervention.edge_groups.normalize_edges`' help all read this table.
TOKEN_GROUPS: tuple[TokenGroup, ...] = (
    TokenGroup(
        "video",
        "the video region: every frame's tokens plus the separator tokens a family puts "
        "between (or around) frames, e.g. timestamps (see ``video_span``)",
        lambda spans: _positions(spans.video),
    ),
    TokenGroup(
        "question",
        "the paper's question span: from the question header (e.g. ``Question:`` where the "
        "template writes one, see ``question_span``) or else the question sentence, through the end of "
        'the last option. The instruction ("Only give the best option.") and the assistant prefix are '
        "not in it.",
        lambda spans: _positions(spans.question),
    ),
    TokenGroup(
        "prompt_after_video",
        "every token after the video region and before the last position: the "
        "question span plus the template around it (turn markers, instruction, assistant prefix). This "
        "was ``question`` before flowkit's definitions version 2.",
        lambda spans: _positions(spans.prompt_after_video),
    ),
    TokenGroup(
        "other_text",
        "the tokens after the video region and before the last position that are not in the question "
        "span: the template's turn markers, instruction and assistant prefix (``prompt_after_video`` "
        "minus ``question``)",
        lambda spans: [
            p for p in _positions(spans.prompt_after_video) if not spans.question[0] <= p < spans.question[1]
        ],
    ),
    TokenGroup(
        "question_text", "the tokens of the question sentence only", lambda spans: _positions(spans.question_text)
    ),
    TokenGroup(
        "options",
        "the tokens of every option line",
        lambda spans: [p for span in spans.option_spans for p in _positions(span)],
    ),
    TokenGroup(
        "prefix",
        "what comes before the video (system prompt, chat header)",
        lambda spans: list(range(0, spans.video[0])),
    ),
    TokenGroup("last", "the last position, whose next-token distribution is the answer", lambda spans: [spans.last]),
    TokenGroup(
        "frame:i",
        "the tokens of frame ``i`` (0-indexed)",
        _frame_positions,
        indices=lambda spans: range(spans.num_frames),
    ),
    TokenGroup(
        "option:X",
        "the tokens of option ``X`` (a letter, ``A``, ``B``, ...)",
        _option_positions,
        indices=lambda spans: spans.letters,
    ),
    TokenGroup(
        "true_option",
        "the option that is the correct answer (needs ``true_option``)",
        lambda spans: _positions(spans.option_spans[spans.true_option]),
        needs_answer=True,
    ),
    TokenGroup(
        "false_options",
        "every option but the correct one (needs ``true_option``)",
        _false_option_positions,
        needs_answer=True,
    ),
)
