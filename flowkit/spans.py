"""Where each part of a multiple-choice video prompt sits in the token sequence.

A :class:`Spans` object is computed by a family adapter from the real input ids the
processor produced (never by string search in a notebook). All spans are half-open
``(start, end)`` position ranges into the language model's input sequence.

Named groups (used by edge groups such as ``"video->question"``):

=================  ==========================================================
``video``          the video region: every frame's tokens plus the separator tokens a
                   family puts between (or around) frames, e.g. timestamps
                   (see ``video_span``)
``frame:i``        the tokens of frame ``i`` (0-indexed)
``question``       the paper's question span: from the question header (e.g.
                   ``Question:`` where the template writes one, see
                   ``question_span``) or else the question sentence, through
                   the end of the last option. The instruction ("Only give the
                   best option.") and the assistant prefix are not in it.
``prompt_after_video``
                   every token after the video region and before the last
                   position: the question span plus the template around it
                   (turn markers, instruction, assistant prefix). This was
                   ``question`` before flowkit's definitions version 2.
``question_text``  the tokens of the question sentence only
``options``        the tokens of every option line
``option:X``       the tokens of option ``X`` (a letter, ``A``, ``B``, ...)
``true_option``    the option that is the correct answer (needs ``true_option``)
``false_options``  every other option
``prefix``         what comes before the video (system prompt, chat header)
``last``           the last position, whose next-token distribution is the answer
=================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
            raise KnockoutError(
                f"true_option={self.true_option} but the prompt has {len(self.option_spans)} options"
            )

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

    def with_true_option(self, index: int | None) -> "Spans":
        """A copy that knows which option is correct (needed for ``true_option`` groups)."""
        return Spans(
            seq_len=self.seq_len,
            frame_spans=self.frame_spans,
            question_text=self.question_text,
            option_spans=self.option_spans,
            last=self.last,
            true_option=index,
            frames_per_span=self.frames_per_span,
            video_span=self.video_span,
            question_span=self.question_span,
        )

    # ------------------------------------------------------------------- groups
    def group_names(self) -> list[str]:
        """All group names this prompt understands."""
        names = ["video", "question", "prompt_after_video", "question_text", "options", "prefix", "last"]
        names += [f"frame:{i}" for i in range(self.num_frames)]
        names += [f"option:{letter}" for letter in self.letters]
        if self.true_option is not None:
            names += ["true_option", "false_options"]
        return names

    def positions(self, group: str) -> list[int]:
        """Positions of a named group (see the module docstring for the names)."""
        group = group.strip()
        video_start, video_end = self.video
        if group == "video":
            return _positions(self.video)
        if group == "question":
            return _positions(self.question)
        if group == "prompt_after_video":
            return _positions(self.prompt_after_video)
        if group == "question_text":
            return _positions(self.question_text)
        if group == "options":
            return [p for span in self.option_spans for p in _positions(span)]
        if group == "prefix":
            return list(range(0, video_start))
        if group == "last":
            return [self.last]
        if group.startswith("frame:"):
            index = _parse_index(group, "frame", self.num_frames)
            return _positions(self.frame_spans[index])
        if group.startswith("option:"):
            letter = group.split(":", 1)[1].strip().upper()
            if letter not in self.letters:
                raise KnockoutError(
                    f"option {letter!r} does not exist: this prompt has options {', '.join(self.letters)}."
                )
            return _positions(self.option_spans[self.letters.index(letter)])
        if group in ("true_option", "false_options"):
            if self.true_option is None:
                raise KnockoutError(
                    f"the group {group!r} needs to know the correct answer; build the spans from a "
                    "sample with an answer (or call spans.with_true_option(index))."
                )
            if group == "true_option":
                return _positions(self.option_spans[self.true_option])
            return [
                p for i, span in enumerate(self.option_spans) if i != self.true_option for p in _positions(span)
            ]
        raise KnockoutError(
            f"unknown token group {group!r}. Known groups: {', '.join(self.group_names())} "
            "(frame:i takes a 0-based frame index)."
        )

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
            label = f"frame {i}" if self.frames_per_span == 1 else f"frames {i * self.frames_per_span}-{(i + 1) * self.frames_per_span - 1}"
            lines.append(f"{label:<15} {s}..{e - 1} ({e - s} tokens)")
        separators = (self.video[1] - self.video[0]) - self.num_video_tokens
        if separators:
            lines.append(f"video region    {self.video[0]}..{self.video[1] - 1} "
                         f"(incl. {separators} separator tokens in no frame)")
        s, e = self.question
        lines.append(f"question        {s}..{e - 1} (the paper's question span: through the last option)")
        s, e = self.question_text
        lines.append(f"question text   {s}..{e - 1}")
        for letter, (s, e) in zip(self.letters, self.option_spans):
            mark = " (true)" if self.true_option is not None and self.letters[self.true_option] == letter else ""
            lines.append(f"{'option ' + letter + mark:<15} {s}..{e - 1}")
        template = (self.last - self.video[1]) - (self.question[1] - self.question[0])
        if template:
            lines.append(f"template        {template} tokens after the video outside the question span "
                         f"(in prompt_after_video only)")
        lines.append(f"last            {self.last}")
        return "\n".join(lines)


def _parse_index(group: str, kind: str, count: int) -> int:
    raw = group.split(":", 1)[1].strip()
    try:
        index = int(raw)
    except ValueError:
        raise KnockoutError(f"{group!r}: {kind} index must be an integer, e.g. '{kind}:0'.") from None
    if not 0 <= index < count:
        raise KnockoutError(
            f"{group!r}: {kind} index {index} is beyond the video, which has {count} {kind}s "
            f"(valid: 0..{count - 1})."
        )
    return index
