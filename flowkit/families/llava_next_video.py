"""LLaVA-NeXT-Video (``LlavaNextVideoForConditionalGeneration``): the paper's main model class.

Each frame is encoded independently by the vision tower, pooled 2x2 and projected, and
the frames' tokens are laid out one frame after another where the ``<video>``
placeholder stood. So frame ``i`` owns the ``i``-th block of ``tokens_per_frame``
video tokens.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from flowkit.errors import FlowkitError
from flowkit.families.base import (ANSWER_PREFIX, FamilyAdapter, Prepared, char_span_to_tokens, question_body,
                                   question_start_char)
from flowkit.spans import Spans

#: The paper's prompt (Vicuna style), used when the processor has no chat template.
FALLBACK_TEMPLATE = "USER: {video}\n{body} ASSISTANT: "


class LlavaNextVideoAdapter(FamilyAdapter):
    model_types = ("llava_next_video",)
    family = "LLaVA-NeXT-Video"
    supports_engine_replay = True

    def model_class(self):
        from transformers import LlavaNextVideoForConditionalGeneration

        return LlavaNextVideoForConditionalGeneration

    def skip_modules(self, model_or_config) -> list[str]:
        # The vision tower, resampler and projector stay in full precision: they are a small
        # share of the weights, every video token passes through them, and the kit studies
        # the language model. ``lm_head`` must be listed again once the list is given.
        return ["model.vision_tower", "model.vision_resampler", "model.multi_modal_projector", "lm_head"]

    def prompt_text(self, processor, body: str) -> str:
        """The full prompt with one video placeholder, ending in 'Best option:('."""
        video_token = processor.video_token
        if getattr(processor, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": body}]}]
            text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        else:
            text = FALLBACK_TEMPLATE.format(video=video_token, body=body)
        if text.count(video_token) != 1:
            raise FlowkitError(
                f"the chat template wrote {text.count(video_token)} video placeholders; expected exactly one."
            )
        return text + ANSWER_PREFIX

    def prepare(self, processor, frames, question: str, candidates: Sequence[str],
                answer_index: int | None = None) -> Prepared:
        frames = self.check_frames(frames)
        body, question_chars, option_chars = question_body(question, candidates, self.instruction_separator)
        prompt = self.prompt_text(processor, body)
        inputs = processor(text=prompt, videos=[frames], return_tensors="pt")
        ids = inputs["input_ids"][0].tolist()
        spans = self.find_spans(processor, prompt, ids, body, question_chars, option_chars,
                                num_frames=frames.shape[0])
        if answer_index is not None:
            spans = spans.with_true_option(answer_index)
        letter_ids = self.letter_token_ids(processor.tokenizer, len(candidates))
        return Prepared(inputs=dict(inputs), spans=spans, letter_ids=letter_ids, prompt=prompt)

    def find_spans(self, processor, prompt: str, ids: list[int], body: str,
                   question_chars: tuple[int, int], option_chars: list[tuple[int, int]],
                   num_frames: int) -> Spans:
        """Spans from the real input ids: video tokens by id, text spans by token offsets."""
        video_id = processor.video_token_id
        video_positions = [i for i, t in enumerate(ids) if t == video_id]
        if not video_positions:
            raise FlowkitError("the processor produced no video tokens for this prompt.")
        start, end = video_positions[0], video_positions[-1] + 1
        if end - start != len(video_positions):
            raise FlowkitError("the video tokens are not contiguous; this prompt layout is not supported.")
        if len(video_positions) % num_frames:
            raise FlowkitError(
                f"{len(video_positions)} video tokens do not split evenly over {num_frames} frames."
            )
        per_frame = len(video_positions) // num_frames
        frame_spans = tuple((start + i * per_frame, start + (i + 1) * per_frame) for i in range(num_frames))

        # Text after the placeholder is tokenized on its own (the special token splits it),
        # so token offsets of that text map question/options characters to positions.
        after = prompt.split(processor.video_token, 1)[1]
        encoded = processor.tokenizer(after, add_special_tokens=False, return_offsets_mapping=True)
        if encoded["input_ids"] != ids[end:]:
            raise FlowkitError(
                "could not align the prompt text with the processor's input ids after the video; "
                "the tokenizer merges text across the video placeholder."
            )
        body_at = after.find(body)
        if body_at < 0:
            raise FlowkitError("the chat template changed the question text; cannot locate it in the prompt.")
        offsets = encoded["offset_mapping"]

        def token_span(chars):
            return char_span_to_tokens(offsets, (chars[0] + body_at, chars[1] + body_at), shift=end)

        question_text = token_span(question_chars)
        option_spans = tuple(token_span(c) for c in option_chars)
        header_at = question_start_char(after, body_at, self.question_header) - body_at
        question_span = None
        if header_at < 0:  # the template writes a header (e.g. "Question: ") that belongs to the question
            question_span = (token_span((header_at, header_at + 1))[0], option_spans[-1][1])
        return Spans(
            seq_len=len(ids),
            frame_spans=frame_spans,
            question_text=question_text,
            option_spans=option_spans,
            last=len(ids) - 1,
            question_span=question_span,
        )

    @staticmethod
    def tokens_per_frame(config, frame_size: int) -> int:
        """Video tokens per frame for square frames of ``frame_size`` pixels after processing."""
        patch = config.vision_config.patch_size
        stride = getattr(config, "spatial_pool_stride", 2)
        side = frame_size // patch
        return int(np.ceil(side / stride)) ** 2
