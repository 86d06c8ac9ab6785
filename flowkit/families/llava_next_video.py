"""LLaVA-NeXT-Video (``LlavaNextVideoForConditionalGeneration``): the paper's main model class.

Each frame is encoded independently by the vision tower, pooled 2x2 and projected, and
the frames' tokens are laid out one frame after another where the ``<video>``
placeholder stood, with no separators. So frame ``i`` owns the ``i``-th block of
``tokens_per_frame`` video tokens: the even split of the one run of ``<video>`` tokens
(:meth:`~flowkit.families.placeholder_base.PlaceholderVideoAdapterBase.split_placeholder_run`).
"""

from __future__ import annotations

import numpy as np

from flowkit.families.placeholder_base import PlaceholderVideoAdapterBase
from flowkit.families.registry import register_family
from flowkit.prompts.spans import Span

#: The paper's prompt (Vicuna style), used when the processor has no chat template.
FALLBACK_TEMPLATE = "USER: {video}\n{body} ASSISTANT: "


@register_family
class LlavaNextVideoAdapter(PlaceholderVideoAdapterBase):
    """LLaVA-NeXT-Video: the paper's model class (and the kit's shipped model's).

    Its decoder (``model.language_model``, built from the text config) is a Llama decoder in
    the released checkpoints and the kit's; its own modeling module has no eager attention.
    """

    model_types = ("llava_next_video",)
    family = "LLaVA-NeXT-Video"
    model_class_name = "LlavaNextVideoForConditionalGeneration"
    decoder_path = "model.language_model"
    attention_base = "transformers.models.llama.modeling_llama"
    #: a Llama decoder: a plain loop of layers, 1-D rotary positions, full attention
    supports_replay = True
    #: the vision tower, resampler (the 2x2 pooling) and projector
    vision_modules = ("model.vision_tower", "model.vision_resampler", "model.multi_modal_projector")
    fallback_template = FALLBACK_TEMPLATE

    def frame_layout(self, processor, ids, region, inputs, num_frames) -> tuple[list[Span], int]:
        """Frame ``i`` is the ``i``-th of ``num_frames`` equal blocks of the one run of ``<video>``
        tokens (the even split); there are no separators."""
        return self.split_placeholder_run(ids, processor.video_token_id, region, num_frames, "<video> tokens"), 1

    @staticmethod
    def tokens_per_frame(config, frame_size: int) -> int:
        """Video tokens per frame for square frames of ``frame_size`` pixels after processing."""
        patch = config.vision_config.patch_size
        stride = getattr(config, "spatial_pool_stride", 2)
        side = frame_size // patch
        return int(np.ceil(side / stride)) ** 2
