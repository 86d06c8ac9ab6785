"""VideoLLaMA3 (``VideoLlama3ForConditionalGeneration``).

Frames are encoded one by one (``temporal_patch_size = 1``) and merged 2x2. The
processor writes each frame as ``Time {t:.1f}s:`` + its ``<|video_pad|>`` tokens and joins
frames with ``,``; timestamps and commas are separators (video region, no frame).

VideoLLaMA3 prunes video tokens: a patch that barely changed since the previous frame is
dropped (the processor's ``video_compression_mask``; every frame keeps at least one
token). So **frames have different numbers of tokens**; each frame span covers exactly the
tokens that frame kept, read from the runs of ``<|video_pad|>`` and checked against the
mask. Timestamps come from ``frame_rate`` (default 1 frame per second).
"""

from __future__ import annotations

from flowkit.errors import FlowkitError
from flowkit.families.placeholder_base import PlaceholderVideoAdapterBase
from flowkit.families.registry import register_family
from flowkit.prompts.spans import Span


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
