"""The model class of converted PLLaVA checkpoints: LLaVA-NeXT-Video with PLLaVA's project-then-pool order.

:func:`flowkit.convert.pllava.convert_pllava` writes the folders it runs; the
:class:`~flowkit.families.pllava.PllavaVideoAdapter` loads them with it.
"""

from __future__ import annotations

import torch
from transformers import LlavaNextVideoForConditionalGeneration
from transformers.models.llava_next_video.modeling_llava_next_video import LlavaNextVideoModel
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import select_hidden_states


class PllavaVideoModel(LlavaNextVideoModel):
    """``LlavaNextVideoModel`` whose video path projects every patch, then pools (as PLLaVA does)."""

    @merge_with_config_defaults
    @can_return_tuple
    @select_hidden_states("vision_feature_layer")
    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        vision_feature_layer=None,
        vision_feature_select_strategy=None,
        **kwargs,
    ):
        batch_size, frames, channels, height, width = pixel_values_videos.shape
        pixel_values = pixel_values_videos.reshape(batch_size * frames, channels, height, width)
        video_outputs = self.vision_tower(pixel_values, return_dict=True, **kwargs)
        if isinstance(vision_feature_layer, int):
            selected = video_outputs.hidden_states[vision_feature_layer]
        else:
            selected = torch.cat([video_outputs.hidden_states[i] for i in vision_feature_layer], dim=-1)
        if vision_feature_select_strategy == "default":
            selected = selected[:, 1:]
        video_features = self.vision_resampler(self.multi_modal_projector(selected))  # the one change
        video_outputs.pooler_output = video_features.unflatten(0, (batch_size, frames)).flatten(1, 2)
        return video_outputs


class PllavaNextVideoForConditionalGeneration(LlavaNextVideoForConditionalGeneration):
    """The transformers LLaVA-NeXT-Video class running a converted PLLaVA checkpoint exactly."""

    def __init__(self, config):
        super().__init__(config)
        # Same parameters and names; only the video path's pool/project order differs.
        self.model.__class__ = PllavaVideoModel
