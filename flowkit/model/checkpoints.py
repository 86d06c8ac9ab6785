"""Real processors and checkpoint folders, shared by the kit's own model and the tiny test models.

:func:`save_checkpoint` writes a folder exactly as ``save_pretrained`` does (replacing it
atomically), so :func:`flowkit.load_videollm` loads it through the same path as a download.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from flowkit.atomic_files import atomic_folder

#: The chat template of the kit's LLaVA-NeXT-Video models (ChatML, as SmolLM2 uses).
CHATML_VIDEO_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'video' %}<video>\n"
    "{% elif part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def llava_next_video_processor(
    tokenizer, frame_size: int, patch_size: int, chat_template: str | None = CHATML_VIDEO_TEMPLATE
):
    """A real ``LlavaNextVideoProcessor`` for square frames of ``frame_size`` pixels."""
    from transformers import LlavaNextImageProcessor, LlavaNextVideoProcessor
    from transformers.models.llava_next_video.video_processing_llava_next_video import LlavaNextVideoVideoProcessor

    size = {"shortest_edge": frame_size}
    crop = {"height": frame_size, "width": frame_size}
    video_processor = LlavaNextVideoVideoProcessor(size=size, crop_size=crop)
    image_processor = LlavaNextImageProcessor(
        size=size, crop_size=crop, image_grid_pinpoints=[[frame_size, frame_size]]
    )
    return LlavaNextVideoProcessor(
        video_processor=video_processor,
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        chat_template=chat_template,
    )


def save_checkpoint(model, processor, out_dir: str | os.PathLike, extra_files: dict[str, str] | None = None) -> Path:
    """Save model and processor like a real checkpoint folder, replacing ``out_dir`` atomically."""
    with atomic_folder(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return Path(out_dir)


def merge_lora_weight(weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float) -> torch.Tensor:
    """A LoRA adapter folded into its weight: ``W + scale * B @ A``, returned in ``W``'s dtype.

    Computed in float64 and rounded once, so the merged weights are the same on every CPU (a
    float32 matmul may sum in another order on AVX2 than on AVX-512).
    """
    merged = weight.double() + float(scale) * (lora_b.double() @ lora_a.double())
    return merged.to(weight.dtype)
