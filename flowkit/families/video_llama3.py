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
from flowkit.families.layouts import PlaceholderVideoAdapter, token_runs
from flowkit.spans import Span


class VideoLlama3Adapter(PlaceholderVideoAdapter):
    #: Qwen2 decoder; the replay reuses the clean run's positions: replayable
    supports_engine_replay = True
    model_types = ("video_llama_3",)
    family = "VideoLLaMA3"
    model_class_name = "VideoLlama3ForConditionalGeneration"
    vision_modules = ("model.vision_model", "model.projector")

    def frame_layout(self, processor, ids, region, inputs, num_frames) -> tuple[list[Span], int]:
        if int(processor.video_processor.temporal_patch_size) != 1:
            raise FlowkitError("this VideoLLaMA3 processor merges frames in time (temporal_patch_size != 1); "
                               "flowkit expects one token block per frame.")
        runs = token_runs(ids, processor.video_token_id, region)
        self.expect_runs(runs, num_frames, self.kept_per_frame(inputs, num_frames), "<|video_pad|> tokens")
        return runs, 1

    @staticmethod
    def kept_per_frame(inputs: dict, num_frames: int) -> list[int]:
        """Tokens each frame kept after VideoLLaMA3's token pruning."""
        mask = inputs["video_compression_mask"]
        return [int(m.sum()) for m in mask.reshape(num_frames, -1)]
