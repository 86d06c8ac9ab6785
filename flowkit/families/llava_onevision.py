"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``).

Each frame is encoded on its own by the SigLIP tower, projected and pooled 2x2
(bilinear, ``ceil(side / 2)`` per side), and the frames' tokens are laid out one frame
after another; then **one** learned ``image_newline`` token follows the last frame. All
of them carry the ``<video>`` id. So frame ``i`` owns the ``i``-th block of
``tokens_per_frame`` tokens, and the trailing newline token is in the video region but
in no frame.
"""

from __future__ import annotations

import math

from flowkit.families.placeholder_base import PlaceholderVideoAdapterBase
from flowkit.families.registry import register_family
from flowkit.prompts.spans import Span


@register_family
class LlavaOnevisionAdapter(PlaceholderVideoAdapterBase):
    """LLaVA-OneVision: SigLIP frames pooled 2x2 and a trailing newline token.

    Its decoder is transformers' Qwen2 decoder (the released checkpoints' language model).
    """

    model_types = ("llava_onevision",)
    family = "LLaVA-OneVision"
    model_class_name = "LlavaOnevisionForConditionalGeneration"
    decoder_path = "model.language_model"
    #: Qwen2 decoder, built from the text config; its own modeling module defines no eager
    #: attention for the language model, so knocked-out eager attention wraps Qwen2's
    attention_base = "transformers.models.qwen2.modeling_qwen2"
    #: the SigLIP tower and projector
    vision_modules = ("model.vision_tower", "model.multi_modal_projector")
    #: Qwen2 decoder, 1-D rotary positions, full attention: replayable
    supports_replay = True

    def frame_layout(self, processor, ids, region, inputs, num_frames) -> tuple[list[Span], int]:
        """Frame ``i`` is the ``i``-th block of :meth:`tokens_per_frame` ``<video>`` tokens (the even
        split); the newline token after the last frame is in the video region, in no frame."""
        spans = self.split_placeholder_run(
            ids,
            processor.video_token_id,
            region,
            num_frames,
            "<video> tokens",
            per_part=self.tokens_per_frame(processor),
            trailing=1,
        )
        return spans, 1

    @staticmethod
    def tokens_per_frame(processor) -> int:
        """Tokens per frame: the vision tower's patch grid pooled to ``ceil(side / 2)`` per side."""
        side = math.ceil(int(math.sqrt(processor.num_image_tokens)) / 2)
        return side * side
