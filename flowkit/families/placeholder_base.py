"""The base adapter of families whose processor expands one video placeholder.

Every supported family (LLaVA-NeXT-Video and its PLLaVA variant, LLaVA-OneVision,
Qwen2.5-VL, Qwen3-VL, VideoLLaMA3, InternVL) works the same way in transformers: the chat
template writes one video placeholder, and the processor replaces it with the video's
tokens, sometimes with separator tokens between frames
(timestamps, frame labels, start/end markers, a newline token). A
:class:`PlaceholderVideoAdapterBase` asks the processor itself where that replacement went
(``return_text_replacement_offsets``) and where every token came from
(``return_offsets_mapping``), so spans come from one real tokenization:

- the **video region** is the replacement plus the template's own wrapper around the
  placeholder (e.g. Qwen's ``<|vision_start|>`` ... ``<|vision_end|>``);
- **frames** are the runs of visual-feature tokens inside it, laid out by the family
  (:meth:`PlaceholderVideoAdapterBase.frame_layout`); separators belong to the video
  region but to no frame;
- question and options are located by character offsets in the expanded prompt.

Common frame layouts have helpers: :meth:`PlaceholderVideoAdapterBase.split_placeholder_run`
(one run of placeholder tokens split evenly into frames or blocks, e.g. LLaVA-NeXT-Video's)
and :meth:`PlaceholderVideoAdapterBase.placeholder_runs` (one run of visual tokens per frame or
block, between separators, e.g. InternVL's).
"""

from __future__ import annotations

from typing import ClassVar
from collections.abc import Sequence

import numpy as np

from flowkit.errors import FlowkitError
from flowkit.families.base import (
    ANSWER_PREFIX,
    FamilyAdapter,
    Prepared,
    char_span_to_tokens,
    question_body,
    question_start_char,
)
from flowkit.prompts.spans import Span, Spans

#: ChatML prompt used when a checkpoint ships no chat template ({video}: the placeholder).
CHATML_FALLBACK = "<|im_start|>user\n{video}\n{body}<|im_end|>\n<|im_start|>assistant\n"


def split_evenly(start: int, count: int, size: int) -> list[Span]:
    """``count`` back-to-back spans of ``size`` positions each, the first starting at ``start``."""
    return [(start + i * size, start + (i + 1) * size) for i in range(count)]


def token_runs(ids: Sequence[int], token_id: int, region: Span) -> list[Span]:
    """Maximal runs of ``token_id`` inside ``region`` (half-open position spans)."""
    runs: list[Span] = []
    start = None
    for pos in range(region[0], region[1]):
        if ids[pos] == token_id:
            if start is None:
                start = pos
        elif start is not None:
            runs.append((start, pos))
            start = None
    if start is not None:
        runs.append((start, region[1]))
    return runs


class PlaceholderVideoAdapterBase(FamilyAdapter):
    """Base class for families whose processor expands one video placeholder (see module docs).

    Subclasses make the declarations :class:`~flowkit.families.base.FamilyAdapter` lists
    and implement :meth:`frame_layout`. The defaults below are transformers' common VideoLLM
    layout; a family whose class differs overrides them.
    """

    #: transformers' VideoLLM classes keep the decoder (built from the text config, or the
    #: family's own text model) at ``<Class>ForConditionalGeneration.model.language_model``
    decoder_path = "model.language_model"
    #: full module prefixes of the vision side, kept out of 4-bit quantization (the default is
    #: the LLaVA-style ``vision_tower`` + ``multi_modal_projector`` pair)
    vision_modules: ClassVar[tuple[str, ...]] = ("model.vision_tower", "model.multi_modal_projector")
    #: text a chat template writes right before / after the video placeholder, counted as video
    video_wrapper: ClassVar[tuple[str, str]] = ("", "")
    #: prompt used when the processor has no chat template
    fallback_template: ClassVar[str] = CHATML_FALLBACK
    #: fewest frames the family's processor accepts
    min_frames: ClassVar[int] = 1

    def __init__(self, frame_rate: float = 1.0):
        #: Frames per second of the frames given to :meth:`prepare` (they are taken as
        #: consecutive samples at this rate). Families that write timestamps or space their
        #: temporal positions by time (Qwen2.5-VL, Qwen3-VL, VideoLLaMA3) read it; set it to
        #: ``len(frames) / clip_seconds`` for timestamps that match the clip.
        self.frame_rate = frame_rate

    def skip_modules(self, model_or_config) -> list[str]:
        """The vision side (:attr:`vision_modules`) and ``lm_head``, kept out of 4-bit quantization.

        The vision side stays in full precision: a small share of the weights that every video
        token passes through; the kit studies the language model. ``lm_head`` must be listed
        again once a list is given.
        """
        return [*self.vision_modules, "lm_head"]

    # ------------------------------------------------------------------ prompt
    def video_marker(self, processor) -> str:
        """What the chat template writes for one video: wrapper + placeholder."""
        head, tail = self.video_wrapper
        return head + processor.video_token + tail

    def prompt_text(self, processor, body: str) -> str:
        """The full prompt with one video placeholder, ending in 'Best option:('."""
        if getattr(processor, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": body}]}]
            text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        else:
            text = self.fallback_template.format(video=self.video_marker(processor), body=body)
        count = text.count(processor.video_token)
        if count != 1:
            raise FlowkitError(
                f"the chat template wrote {count} video placeholders ({processor.video_token!r}); expected exactly one."
            )
        return text + ANSWER_PREFIX

    def processor_kwargs(self, processor, frames: np.ndarray) -> dict:
        """Extra processor arguments: the frames are already sampled, at :attr:`frame_rate`."""
        from transformers.video_utils import VideoMetadata

        num_frames = frames.shape[0]
        metadata = VideoMetadata(
            total_num_frames=num_frames,
            fps=float(self.frame_rate),
            height=frames.shape[1],
            width=frames.shape[2],
            frames_indices=list(range(num_frames)),
        )
        return {"do_sample_frames": False, "video_metadata": [metadata]}

    def check_inputs(self, inputs: dict) -> None:
        """Refuse processor outputs the model would silently misread (override per family)."""

    # ------------------------------------------------------------------- spans
    def frame_layout(
        self, processor, ids: list[int], region: Span, inputs: dict, num_frames: int
    ) -> tuple[list[Span], int]:
        """The family's frame layout: frame spans inside the video ``region`` (token positions
        into ``ids``), and how many frames each span holds."""
        raise NotImplementedError

    def split_placeholder_run(
        self,
        ids: list[int],
        token_id: int,
        region: Span,
        parts: int,
        what: str,
        *,
        per_part: int | None = None,
        trailing: int = 0,
        unit: str = "frames",
    ) -> list[Span]:
        """The even-split layout: the video region holds one run of ``token_id`` whose tokens are
        ``parts`` back-to-back blocks of ``per_part`` tokens (a frame each, or a block of frames),
        followed by ``trailing`` tokens that belong to no block (LLaVA-OneVision's newline).

        ``per_part=None`` divides the run evenly among the ``parts`` blocks (and refuses a run
        that does not divide). ``what`` names the tokens in errors (e.g. ``"<video> tokens"``).
        """
        runs = token_runs(ids, token_id, region)
        self.expect_runs(runs, 1, None, what)
        ((start, end),) = runs
        count = end - start - trailing
        if per_part is None:
            if count % parts:
                raise FlowkitError(f"{count} {what} do not split evenly over {parts} {unit}.")
            per_part = count // parts
        if count != parts * per_part or count <= 0:
            extra = f" + {trailing} more" if trailing else ""
            raise FlowkitError(f"expected {parts} {unit} x {per_part}{extra} {what}, found {end - start}.")
        return split_evenly(start, parts, per_part)

    def placeholder_runs(
        self, ids: list[int], token_id: int, region: Span, lengths: Sequence[int], what: str
    ) -> list[Span]:
        """The run-per-frame layout: the video region holds one run of ``token_id`` per frame (or
        block), ``lengths[i]`` tokens long, with separators between the runs."""
        runs = token_runs(ids, token_id, region)
        self.expect_runs(runs, len(lengths), lengths, what)
        return runs

    def prepare(
        self, processor, frames, question: str, candidates: Sequence[str], answer_index: int | None = None
    ) -> Prepared:
        """Inputs, spans and option-letter ids for one multiple-choice question about ``frames``."""
        frames = self.check_frames(frames)
        if frames.shape[0] < self.min_frames:
            raise FlowkitError(f"{self.family} needs at least {self.min_frames} frames, got {frames.shape[0]}.")
        body, question_chars, option_chars = question_body(question, candidates, self.instruction_separator)
        prompt = self.prompt_text(processor, body)
        try:
            encoded = processor(
                text=prompt,
                videos=[frames],
                return_tensors="pt",
                return_offsets_mapping=True,
                return_text_replacement_offsets=True,
                **self.processor_kwargs(processor, frames),
            )
        except NotImplementedError as exc:  # only fast (tokenizers-backed) tokenizers report offsets
            raise FlowkitError(
                f"the tokenizer cannot report token offsets ({exc}); flowkit needs the checkpoint's fast tokenizer "
                "(tokenizer.json) to locate the question and options."
            ) from None
        offsets = [tuple(o) for o in encoded.pop("offset_mapping")[0].tolist()]
        replacements = [r for r in encoded.pop("text_replacement_offsets")[0] if r["type"] == "video"]
        inputs = dict(encoded)
        self.check_inputs(inputs)
        ids = inputs["input_ids"][0].tolist()
        if len(replacements) != 1:
            raise FlowkitError(f"the processor expanded {len(replacements)} video placeholders; expected exactly one.")
        spans = self.find_spans(
            processor,
            prompt,
            ids,
            offsets,
            replacements[0],
            inputs,
            body,
            question_chars,
            option_chars,
            num_frames=frames.shape[0],
        )
        if answer_index is not None:
            spans = spans.with_true_option(answer_index)
        letter_ids = self.letter_token_ids(processor.tokenizer, len(candidates))
        return Prepared(inputs=inputs, spans=spans, letter_ids=letter_ids, prompt_text=prompt)

    def find_spans(
        self,
        processor,
        prompt: str,
        ids: list[int],
        offsets: list[tuple[int, int]],
        replacement: dict,
        inputs: dict,
        body: str,
        question_chars: tuple[int, int],
        option_chars: list[tuple[int, int]],
        num_frames: int,
    ) -> Spans:
        """Spans from the processor's own token offsets and placeholder expansion."""
        (placeholder_start, placeholder_end), (start, end) = replacement["span"], replacement["new_span"]
        expanded = prompt[:placeholder_start] + replacement["replacement"] + prompt[placeholder_end:]
        head, tail = self.video_wrapper
        if head and prompt[:placeholder_start].endswith(head):
            start -= len(head)
        if tail and prompt[placeholder_end:].startswith(tail):
            end += len(tail)
        region = char_span_to_tokens(offsets, (start, end), shift=0)
        frame_spans, frames_per_span = self.frame_layout(processor, ids, region, inputs, num_frames)

        body_at = expanded.find(body, end)
        if body_at < 0:
            raise FlowkitError("the chat template changed the question text; cannot locate it in the prompt.")

        def token_span(chars):
            return char_span_to_tokens(offsets, (chars[0] + body_at, chars[1] + body_at), shift=0)

        question_text = token_span(question_chars)
        if question_text[0] < region[1]:
            raise FlowkitError("a token joins the end of the video and the question; cannot separate them.")
        option_spans = tuple(token_span(c) for c in option_chars)
        header_at = question_start_char(expanded, body_at, self.question_header) - body_at
        question_span = None
        if header_at < 0:  # the template writes a header (e.g. "Question: ") that belongs to the question
            question_span = (token_span((header_at, header_at + 1))[0], option_spans[-1][1])
            if question_span[0] < region[1]:
                raise FlowkitError("a token joins the end of the video and the question header; cannot separate them.")
        frames_only = (frame_spans[0][0], frame_spans[-1][1]) if frame_spans else None
        return Spans(
            seq_len=len(ids),
            frame_spans=tuple(frame_spans),
            question_text=question_text,
            option_spans=option_spans,
            last=len(ids) - 1,
            frames_per_span=frames_per_span,
            # recorded only when it holds more than the frames' tokens (see Spans.video_span)
            video_span=None if tuple(region) == frames_only else region,
            question_span=question_span,
        )

    @staticmethod
    def expect_runs(runs: list[Span], count: int, lengths: Sequence[int] | None, what: str) -> None:
        """Check the runs of visual tokens against what the processor says it produced."""
        if len(runs) != count:
            raise FlowkitError(
                f"found {len(runs)} runs of {what} in the video region, expected {count}; "
                "this prompt layout is not supported."
            )
        if lengths is not None and [e - s for s, e in runs] != list(lengths):
            raise FlowkitError(
                f"the runs of {what} have lengths {[e - s for s, e in runs]}, "
                f"but the processor produced {list(lengths)}."
            )
