"""InternVL (``InternVLForConditionalGeneration``), through the processor's video path.

The processor turns the video into one image tile per frame and writes
``Frame{i}: <img>`` + ``image_seq_length`` ``<IMG_CONTEXT>`` tokens + ``</img>``, frames
joined by a newline. The frame labels, ``<img>``/``</img>`` and newlines are separators
(video region, no frame); frame ``i`` owns its run of ``<IMG_CONTEXT>`` tokens
(``(image_size / patch_size)^2 x downsample_ratio^2``, e.g. 16x16 = 256 at 448 px).
"""

from __future__ import annotations

from flowkit.families.placeholder_base import PlaceholderVideoAdapterBase
from flowkit.families.registry import register_family
from flowkit.prompts.spans import Span


@register_family
class InternVLAdapter(PlaceholderVideoAdapterBase):
    """InternVL through its processor's video path: one image tile per frame.

    Its decoder is transformers' Qwen2 decoder (as released, and the toy models).
    """

    model_types = ("internvl",)
    family = "InternVL"
    model_class_name = "InternVLForConditionalGeneration"
    decoder_path = "model.language_model"
    #: Qwen2 decoder, built from the text config; its own modeling module defines no eager
    #: attention for the language model (``modeling_internvl``'s serves the vision
    #: tower), so knocked-out eager attention wraps Qwen2's
    attention_base = "transformers.models.qwen2.modeling_qwen2"
    #: the vision tower and projector
    vision_modules = ("model.vision_tower", "model.multi_modal_projector")
    #: Qwen2 decoder, 1-D rotary positions, full attention: replayable
    supports_replay = True

    def frame_layout(self, processor, ids, region, inputs, num_frames) -> tuple[list[Span], int]:
        """Frame ``i`` owns its run of ``image_seq_length`` ``<IMG_CONTEXT>`` tokens; frame labels,
        ``<img>``/``</img>`` and newlines are separators."""
        lengths = [processor.image_seq_length] * num_frames
        return self.placeholder_runs(ids, processor.image_token_id, region, lengths, "<IMG_CONTEXT> tokens"), 1
