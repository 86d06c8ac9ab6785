"""Qwen2.5-VL and Qwen3-VL (``Qwen2_5_VLForConditionalGeneration``, ``Qwen3VLForConditionalGeneration``).

Both merge **two consecutive frames into one token block** (``temporal_patch_size = 2``):
the vision tower sees 2-frame tubelets, so no token belongs to a single frame. flowkit
says so instead of pretending: each frame span is one block, ``Spans.frames_per_span``
is 2, ``frame:i`` is block i (frames 2i and 2i+1) and ``cross_frame`` cuts block i <-
every earlier block (the two frames inside a block always see each other). With an odd
number of frames the processor repeats the last frame to fill the last block.

Layouts (transformers 5.24):

- Qwen2.5-VL: ``<|vision_start|>`` + all blocks' ``<|video_pad|>`` tokens back to back +
  ``<|vision_end|>``; no separators. Positions are 3-D (M-RoPE): the processor's
  ``mm_token_type_ids`` tell the model which tokens are video. Without them Qwen2.5-VL
  silently falls back to 1-D positions (Qwen3-VL raises), so :meth:`check_inputs` refuses
  inputs lacking them. ``second_per_grid_ts`` (2 / frame rate) spaces the blocks'
  temporal positions.
- Qwen3-VL: every block is written as ``<t seconds><|vision_start|>`` + pads +
  ``<|vision_end|>``, inside the template's own ``<|vision_start|>`` ... ``<|vision_end|>``
  (transformers >= 5.10 keeps that outer pair). Timestamps and markers are separators: in
  the video region, in no block. Qwen3-VL also adds visual features ("deepstack") to the
  hidden states of video positions after its first LM layers; that is a per-position
  residual add, not attention, so knockout neither cuts nor is bypassed by it within a
  position.
"""

from __future__ import annotations

from flowkit.errors import FlowkitError
from flowkit.families.layouts import PlaceholderVideoAdapter, token_runs
from flowkit.spans import Span


class _QwenVLAdapter(PlaceholderVideoAdapter):
    #: the replay reuses the clean run's multimodal rotary embeddings (3 position rows) sliced
    #: at the replayed positions, and re-adds Qwen3-VL's deepstack features after the same layers
    supports_engine_replay = True
    vision_modules = ("model.visual",)
    video_wrapper = ("<|vision_start|>", "<|vision_end|>")
    fallback_template = "<|im_start|>user\n{video}{body}<|im_end|>\n<|im_start|>assistant\n"

    def check_inputs(self, inputs: dict) -> None:
        if "mm_token_type_ids" not in inputs:
            raise FlowkitError(
                f"the processor returned no mm_token_type_ids; without them {self.family} cannot give video "
                "tokens their 3-D (M-RoPE) positions (Qwen2.5-VL silently uses 1-D ones). Use the checkpoint's "
                "own processor (transformers >= 5.0 returns them)."
            )

    def blocks(self, inputs: dict, processor) -> tuple[int, int]:
        """Number of temporal blocks and tokens per block, from ``video_grid_thw``."""
        grid_t, grid_h, grid_w = (int(x) for x in inputs["video_grid_thw"][0])
        merge = processor.video_processor.merge_size
        return grid_t, grid_h * grid_w // (merge * merge)

    def frames_per_block(self, processor) -> int:
        return int(processor.video_processor.temporal_patch_size)


class Qwen2_5_VLAdapter(_QwenVLAdapter):
    model_types = ("qwen2_5_vl",)
    family = "Qwen2.5-VL"
    model_class_name = "Qwen2_5_VLForConditionalGeneration"

    def frame_layout(self, processor, ids, region, inputs, num_frames) -> tuple[list[Span], int]:
        count, per_block = self.blocks(inputs, processor)
        runs = token_runs(ids, processor.video_token_id, region)
        self.expect_runs(runs, 1, [count * per_block], "<|video_pad|> tokens")
        start = runs[0][0]
        blocks = [(start + i * per_block, start + (i + 1) * per_block) for i in range(count)]
        return blocks, self.frames_per_block(processor)


class Qwen3VLAdapter(_QwenVLAdapter):
    model_types = ("qwen3_vl",)
    family = "Qwen3-VL"
    model_class_name = "Qwen3VLForConditionalGeneration"
    min_frames = 2  # its processor refuses a video shorter than one temporal patch

    def frame_layout(self, processor, ids, region, inputs, num_frames) -> tuple[list[Span], int]:
        count, per_block = self.blocks(inputs, processor)
        runs = token_runs(ids, processor.video_token_id, region)
        self.expect_runs(runs, count, [per_block] * count, "<|video_pad|> tokens")
        return runs, self.frames_per_block(processor)
