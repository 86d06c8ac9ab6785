"""Spans of prompts that were never tokenized: a video layout the model does not have (yet).

Every edge count of a knockout (:func:`flowkit.intervention.masks.count_edges`, the pathway
mask's kept share) depends only on where the token groups sit, not on the tokens. So the
kept share of a mask on a layout with another number of video tokens per frame can be
counted before any model of that layout exists: build its :class:`~flowkit.prompts.spans.Spans`
from token counts.

- :func:`hypothetical_spans` — a multiple-choice prompt from counts: ``prefix`` tokens, then
  ``num_frames`` frames of ``tokens_per_frame`` tokens, then the question span (question
  sentence, a header, the options), with ``other`` tokens of template around it, the last
  position included. The defaults are the prompt shape issue 26 counts with (12 prefix, 25
  question, 8 other: 77 tokens at 4 tokens per frame).
- :func:`relayout` — the spans of a real prompt had its frames held ``tokens_per_frame`` tokens.
- :func:`paper_prompt_spans` — the paper's real LLaVA-NeXT-7B-Video-FT prompt (MVBench system
  prompt and template around 8 x 144 video tokens, N = 1,260), as
  ``tests/test_paper_definitions.py`` writes it down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from flowkit.errors import KnockoutError
from flowkit.prompts.spans import Span, Spans

#: tokens of one option line in the kit's prompt ("(A) left"), and between two option lines ("\n")
OPTION_TOKENS = 4
OPTION_GAP = 1
#: tokens between the question sentence and the first option ("\nOptions:\n" in the kit's prompt)
OPTIONS_HEADER = 4


def hypothetical_spans(
    tokens_per_frame: int,
    num_frames: int = 8,
    prefix: int = 12,
    question: int = 25,
    options: int | Sequence[int] = 4,
    other: int = 8,
    *,
    question_text: int | None = None,
    between: int = 1,
    option_gap: int = OPTION_GAP,
    true_option: int | None = None,
) -> Spans:
    """The spans of a prompt laid out from token counts.

    Layout: ``prefix`` tokens (BOS, system prompt, chat header); the video, ``num_frames``
    blocks of ``tokens_per_frame`` tokens, no separators (LLaVA-NeXT-Video); ``between``
    template tokens; the question span of ``question`` tokens (the question sentence, a
    header, then the option lines ``option_gap`` tokens apart); the rest of the ``other``
    template tokens; the last position. ``other`` counts every token outside the prefix, the
    video and the question span, ``between`` and the last position included, so the prompt
    is ``prefix + num_frames * tokens_per_frame + question + other`` tokens long.

    ``options`` is the number of options (each :data:`OPTION_TOKENS` long) or their lengths;
    ``question_text`` the question sentence's length (default: what the span leaves after a
    header of :data:`OPTIONS_HEADER` tokens, or fewer when the span is short).
    """
    lengths = tuple([OPTION_TOKENS] * options) if isinstance(options, int) else tuple(int(n) for n in options)
    counts = {"tokens_per_frame": tokens_per_frame, "num_frames": num_frames, "question": question}
    for name, value in counts.items():
        if value < 1:
            raise KnockoutError(f"hypothetical_spans: {name} must be at least 1, got {value}")
    if prefix < 0 or between < 0 or option_gap < 0 or any(n < 1 for n in lengths):
        raise KnockoutError("hypothetical_spans: prefix, between and option_gap must be >= 0, option lengths >= 1")
    if other < between + 1:
        raise KnockoutError(
            f"hypothetical_spans: other={other} must hold the {between} token(s) between video and question "
            "and the last position"
        )
    options_len = sum(lengths) + option_gap * max(0, len(lengths) - 1)
    room = question - options_len
    if question_text is None:
        question_text = max(1, room - OPTIONS_HEADER)
    header = room - question_text
    if question_text < 1 or header < 0:
        raise KnockoutError(
            f"hypothetical_spans: a question span of {question} tokens cannot hold a question sentence of "
            f"{question_text} and options {lengths} ({options_len} tokens with the gaps)"
        )
    video_start = prefix
    frames = tuple(
        (video_start + i * tokens_per_frame, video_start + (i + 1) * tokens_per_frame) for i in range(num_frames)
    )
    q_start = frames[-1][1] + between
    text = (q_start, q_start + question_text)
    spans, at = [], text[1] + header
    for n in lengths:
        spans.append((at, at + n))
        at += n + option_gap
    seq_len = prefix + num_frames * tokens_per_frame + question + other
    return Spans(
        seq_len=seq_len,
        frame_spans=frames,
        question_text=text,
        option_spans=tuple(spans),
        last=seq_len - 1,
        true_option=true_option,
    )


def _shift(span: Span | None, at: int, by: int) -> Span | None:
    if span is None:
        return None
    return (span[0] + by if span[0] >= at else span[0], span[1] + by if span[1] > at else span[1])


def relayout(spans: Spans, tokens_per_frame: int) -> Spans:
    """The spans of the same prompt had each frame held ``tokens_per_frame`` tokens.

    For prompts whose frames are equal blocks with no separators (LLaVA-NeXT-Video,
    ``frames_per_span == 1``, no ``video_span``): every position after the video moves by the
    change in video length."""
    if spans.video_span is not None or spans.frames_per_span != 1:
        raise KnockoutError("relayout handles frames laid out back to back with no separators (LLaVA-NeXT-Video)")
    sizes = {e - s for s, e in spans.frame_spans}
    if len(sizes) != 1:
        raise KnockoutError(f"relayout needs frames of one size, got sizes {sorted(sizes)}")
    if tokens_per_frame < 1:
        raise KnockoutError(f"tokens_per_frame must be at least 1, got {tokens_per_frame}")
    start, end = spans.video
    frames = tuple((start + i * tokens_per_frame, start + (i + 1) * tokens_per_frame) for i in range(spans.num_frames))
    by = frames[-1][1] - end
    return replace(
        spans,
        seq_len=spans.seq_len + by,
        frame_spans=frames,
        question_text=_shift(spans.question_text, end, by),
        option_spans=tuple(_shift(s, end, by) for s in spans.option_spans),
        last=spans.last + by,
        question_span=_shift(spans.question_span, end, by),
    )


#: the paper's LLaVA-NeXT-7B-Video-FT prompt (conv mode ``eval_mvbench``), by token counts
PAPER_TOKENS_PER_FRAME = 144
PAPER_PREFIX = 48  # BOS, the MVBench system prompt, " USER: "
PAPER_SEQ_LEN = 1260


def paper_prompt_spans(tokens_per_frame: int = PAPER_TOKENS_PER_FRAME, true_option: int | None = 0) -> Spans:
    """The paper's real prompt: N = 1,260 with 8 x 144 video tokens (the layout of
    ``tests/test_paper_definitions.py``): 48 prefix tokens, the video, 4 template tokens
    (``"\\n USER:"``), the question span (``Question:`` header 2, question 10, ``\\nOptions:\\n``
    3, four option lines of 7, 7, 6, 6 tokens with newlines between), 11 template tokens and
    the last position. ``tokens_per_frame`` puts another video in the same template."""
    frames = tuple((PAPER_PREFIX + i * 144, PAPER_PREFIX + (i + 1) * 144) for i in range(8))
    spans = Spans(
        seq_len=PAPER_SEQ_LEN,
        frame_spans=frames,
        question_text=(1206, 1216),
        option_spans=((1219, 1226), (1227, 1234), (1235, 1241), (1242, 1248)),
        last=PAPER_SEQ_LEN - 1,
        true_option=true_option,
        question_span=(1204, 1248),
    )
    return spans if tokens_per_frame == PAPER_TOKENS_PER_FRAME else relayout(spans, tokens_per_frame)
