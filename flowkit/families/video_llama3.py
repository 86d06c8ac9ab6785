"""VideoLLaMA3 (``VideoLlama3ForConditionalGeneration``).

Frames are encoded one by one (``temporal_patch_size = 1``) and merged 2x2. The
processor writes each frame as ``Time {t:.1f}s:`` + its ``<|video_pad|>`` tokens and joins
frames with ``,``; timestamps and commas are separators (video region, no frame).

VideoLLaMA3 prunes video tokens: a patch that barely changed since the previous frame is
dropped (the processor's ``video_compression_mask``; every frame keeps at least one
token). So **frames have different numbers of tokens**; each frame span covers exactly the
tokens that frame kept, read from the runs of ``<|video_pad|>`` and checked against the
mask. Timestamps come from ``frame_rate`` (default 1 frame per second).

Two span conventions (:data:`SPAN_CONVENTIONS`, the adapter's ``span_convention``):

- ``"kit"`` (default): timestamps and commas are separators in no frame; a span ends with its
  own last token (the kit's rule for every family).
- ``"paper"`` (the paper's VideoLLaMA3 code, :func:`paper_spans`): each frame's leading timestamp
  (``Time t.ts:``) and the comma before it belong to that frame, so the frames tile the video
  region; the newline token after the question sentence and after each option belongs to that
  span, and the question span runs through the newline after the last option. Set
  ``vllm.adapter.span_convention = "paper"`` before preparing prompts to count as the paper does.
  A real Qwen2 tokenizer merges punctuation with a following newline (``"?\n"`` is one token):
  then the newline is already inside the span and nothing is added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from flowkit.errors import FlowkitError
from flowkit.families.placeholder_base import PlaceholderVideoAdapterBase
from flowkit.families.registry import register_family
from flowkit.prompts.spans import Span, Spans

#: ``"kit"``: separators in no frame, newlines outside spans; ``"paper"``: as the paper's code counts.
SPAN_CONVENTIONS = ("kit", "paper")


def _through_newline(span: Span, token_texts: Sequence[str]) -> Span:
    """``span`` extended by the next token when that token is a newline (and the span's last token
    does not already end with one, as a merged ``"?\n"`` does)."""
    start, end = span
    if end < len(token_texts) and not token_texts[end - 1].endswith("\n"):
        following = token_texts[end]
        if "\n" in following and not following.strip():
            return (start, end + 1)
    return span


def paper_spans(spans: Spans, token_texts: Sequence[str]) -> Spans:
    """The kit's VideoLLaMA3 ``spans`` as the paper's code counts them.

    Frame 0 starts at the video region's first token (its timestamp); frame ``i > 0`` starts
    right after frame ``i - 1``'s last video token (the comma and its timestamp), so the frames
    tile the region. The question sentence and each option take the newline token that follows
    them (``token_texts``: each token's text, e.g. ``tokenizer.decode([id])``); the question span
    runs from the question's start through the last option's newline.
    """
    region = spans.video
    ends = [end for _, end in spans.frame_spans]
    frames = tuple(zip([region[0], *ends[:-1]], ends))
    question_text = _through_newline(spans.question_text, token_texts)
    options = tuple(_through_newline(o, token_texts) for o in spans.option_spans)
    question_start = spans.question[0]
    return replace(
        spans,
        frame_spans=frames,
        video_span=None if region == (frames[0][0], frames[-1][1]) else region,
        question_text=question_text,
        option_spans=options,
        question_span=(question_start, options[-1][1] if options else question_text[1]),
    )


@register_family
class VideoLlama3Adapter(PlaceholderVideoAdapterBase):
    """VideoLLaMA3: frames merged 2x2 and pruned, with timestamp separators.

    Its decoder is transformers' Qwen2 decoder.
    """

    model_types = ("video_llama_3",)
    family = "VideoLLaMA3"
    model_class_name = "VideoLlama3ForConditionalGeneration"
    decoder_path = "model.language_model"
    #: Qwen2 decoder, built from the text config; its own modeling module defines no eager
    #: attention for the language model (``modeling_video_llama_3``'s serves the vision
    #: tower), so knocked-out eager attention wraps Qwen2's
    attention_base = "transformers.models.qwen2.modeling_qwen2"
    #: Qwen2 decoder; the replay reuses the clean run's positions: replayable
    supports_replay = True
    vision_modules = ("model.vision_model", "model.projector")

    def __init__(self, frame_rate: float = 1.0, span_convention: str = "kit"):
        super().__init__(frame_rate)
        #: ``"kit"`` or ``"paper"`` (:data:`SPAN_CONVENTIONS`): how separators and newlines are counted
        self.span_convention = span_convention

    def find_spans(self, processor, prompt, ids, offsets, *args, **kwargs) -> Spans:
        """The kit's spans, or the paper's (:func:`paper_spans`) when ``span_convention == "paper"``."""
        if self.span_convention not in SPAN_CONVENTIONS:
            raise FlowkitError(
                f"span_convention must be one of {', '.join(SPAN_CONVENTIONS)}, got {self.span_convention!r}"
            )
        spans = super().find_spans(processor, prompt, ids, offsets, *args, **kwargs)
        if self.span_convention == "paper":
            spans = paper_spans(spans, [processor.tokenizer.decode([token]) for token in ids])
        return spans

    def frame_layout(self, processor, ids, region, inputs, num_frames) -> tuple[list[Span], int]:
        """Frame ``i`` owns its run of ``<|video_pad|>`` tokens, as many as it kept after pruning;
        timestamps and commas are separators."""
        if int(processor.video_processor.temporal_patch_size) != 1:
            raise FlowkitError(
                "this VideoLLaMA3 processor merges frames in time (temporal_patch_size != 1); "
                "flowkit expects one token block per frame."
            )
        lengths = self.kept_per_frame(inputs, num_frames)
        return self.placeholder_runs(ids, processor.video_token_id, region, lengths, "<|video_pad|> tokens"), 1

    @staticmethod
    def kept_per_frame(inputs: dict, num_frames: int) -> list[int]:
        """Tokens each frame kept after VideoLLaMA3's token pruning."""
        mask = inputs["video_compression_mask"]
        return [int(m.sum()) for m in mask.reshape(num_frames, -1)]
