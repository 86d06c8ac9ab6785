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
from flowkit.families.placeholder_base import PlaceholderVideoAdapterBase
from flowkit.families.registry import register_family
from flowkit.prompts.spans import Span


class QwenVLAdapterBase(PlaceholderVideoAdapterBase):
    """What Qwen2.5-VL and Qwen3-VL share: 2-frame blocks, M-RoPE inputs, the vision wrapper.

    Each declares its own attention base: their decoders are their own classes, whose modeling
    modules define the eager attention they run.
    """

    vision_modules = ("model.visual",)
    video_wrapper = ("<|vision_start|>", "<|vision_end|>")
    fallback_template = "<|im_start|>user\n{video}{body}<|im_end|>\n<|im_start|>assistant\n"

    def check_inputs(self, inputs: dict) -> None:
        """Refuse inputs without ``mm_token_type_ids`` (the video tokens' M-RoPE positions need them)."""
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
        """Frames merged into one token block (the video processor's ``temporal_patch_size``)."""
        return int(processor.video_processor.temporal_patch_size)


@register_family
class Qwen2_5_VLAdapter(QwenVLAdapterBase):
    """Qwen2.5-VL: all blocks' ``<|video_pad|>`` tokens back to back inside one vision wrapper.

    No separators between blocks; ``second_per_grid_ts`` spaces their temporal positions.
    """

    model_types = ("qwen2_5_vl",)
    family = "Qwen2.5-VL"
    model_class_name = "Qwen2_5_VLForConditionalGeneration"
    decoder_path = "model.language_model"
    #: its decoder, ``Qwen2_5_VLTextModel``, is defined in (and runs the eager attention of) this module
    attention_base = "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl"
    #: the replay reuses the clean run's multimodal rotary embeddings (3 position rows) sliced
    #: at the replayed positions
    supports_replay = True

    def frame_layout(self, processor, ids, region, inputs, num_frames) -> tuple[list[Span], int]:
        """Block ``i`` (frames ``2i`` and ``2i + 1``) is the ``i``-th equal block of the one run of
        ``<|video_pad|>`` tokens (the even split)."""
        count, per_block = self.blocks(inputs, processor)
        blocks = self.split_placeholder_run(
            ids, processor.video_token_id, region, count, "<|video_pad|> tokens", per_part=per_block, unit="blocks"
        )
        return blocks, self.frames_per_block(processor)


@register_family
class Qwen3VLAdapter(QwenVLAdapterBase):
    """Qwen3-VL: each block's ``<|video_pad|>`` tokens wrapped with its timestamp and markers.

    Its processor refuses a video shorter than one temporal patch (2 frames), and the model
    adds deepstack visual features to the video positions after its first decoder layers.
    """

    model_types = ("qwen3_vl",)
    family = "Qwen3-VL"
    model_class_name = "Qwen3VLForConditionalGeneration"
    decoder_path = "model.language_model"
    #: its decoder, ``Qwen3VLTextModel``, is defined in (and runs the eager attention of) this module
    attention_base = "transformers.models.qwen3_vl.modeling_qwen3_vl"
    #: the replay reuses the clean run's multimodal rotary embeddings sliced at the replayed
    #: positions, and re-adds the deepstack features after the same layers as the model
    supports_replay = True
    min_frames = 2  # its processor refuses a video shorter than one temporal patch

    def frame_layout(self, processor, ids, region, inputs, num_frames) -> tuple[list[Span], int]:
        """Block ``i`` owns its run of ``<|video_pad|>`` tokens; timestamps and the
        ``<|vision_start|>``/``<|vision_end|>`` markers around it are separators."""
        count, per_block = self.blocks(inputs, processor)
        runs = self.placeholder_runs(ids, processor.video_token_id, region, [per_block] * count, "<|video_pad|> tokens")
        return runs, self.frames_per_block(processor)
