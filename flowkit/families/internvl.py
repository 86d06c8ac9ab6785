"""InternVL (``InternVLForConditionalGeneration``), through the processor's video path.

The processor turns the video into one image tile per frame and writes
``Frame{i}: <img>`` + ``image_seq_length`` ``<IMG_CONTEXT>`` tokens + ``</img>``, frames
joined by a newline. The frame labels, ``<img>``/``</img>`` and newlines are separators
(video region, no frame); frame ``i`` owns its run of ``<IMG_CONTEXT>`` tokens
(``(image_size / patch_size)^2 x downsample_ratio^2``, e.g. 16x16 = 256 at 448 px).
"""

from __future__ import annotations

from flowkit.families.layouts import PlaceholderVideoAdapter, token_runs
from flowkit.spans import Span


class InternVLAdapter(PlaceholderVideoAdapter):
    #: Qwen2 decoder, 1-D rotary positions, full attention: replayable
    supports_engine_replay = True
    model_types = ("internvl",)
    family = "InternVL"
    model_class_name = "InternVLForConditionalGeneration"
    vision_modules = ("model.vision_tower", "model.multi_modal_projector")

    def frame_layout(self, processor, ids, region, inputs, num_frames) -> tuple[list[Span], int]:
        runs = token_runs(ids, processor.image_token_id, region)
        self.expect_runs(runs, num_frames, [processor.image_seq_length] * num_frames, "<IMG_CONTEXT> tokens")
        return runs, 1
