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

from flowkit.errors import FlowkitError
from flowkit.families.layouts import PlaceholderVideoAdapter, token_runs
from flowkit.spans import Span


class LlavaOnevisionAdapter(PlaceholderVideoAdapter):
    #: Qwen2 decoder, 1-D rotary positions, full attention: replayable
    supports_engine_replay = True
    model_types = ("llava_onevision",)
    family = "LLaVA-OneVision"
    model_class_name = "LlavaOnevisionForConditionalGeneration"
    vision_modules = ("model.vision_tower", "model.multi_modal_projector")

    def frame_layout(self, processor, ids, region, inputs, num_frames) -> tuple[list[Span], int]:
        runs = token_runs(ids, processor.video_token_id, region)
        self.expect_runs(runs, 1, None, "<video> tokens")
        (start, end), = runs
        per_frame = self.tokens_per_frame(processor)
        if end - start != num_frames * per_frame + 1:
            raise FlowkitError(f"expected {num_frames} x {per_frame} frame tokens + 1 newline token, "
                               f"found {end - start} video tokens.")
        return [(start + i * per_frame, start + (i + 1) * per_frame) for i in range(num_frames)], 1

    @staticmethod
    def tokens_per_frame(processor) -> int:
        """Tokens per frame: the vision tower's patch grid pooled to ``ceil(side / 2)`` per side."""
        side = math.ceil(int(math.sqrt(processor.num_image_tokens)) / 2)
        return side * side
