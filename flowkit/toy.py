"""Tiny randomly initialised VideoLLMs of the real classes, for tests and benchmarks.

They are built and saved exactly like a real checkpoint (``save_pretrained``), so that
:func:`flowkit.load_videollm` loads them through the same path as a downloaded model.
Their answers are meaningless; their shapes, processors and prompts are real.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

#: The chat template of the kit's LLaVA-NeXT-Video models (ChatML, as SmolLM2 uses).
CHATML_VIDEO_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'video' %}<video>\n"
    "{% elif part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def video_tokenizer():
    """SmolLM2's tokenizer with the ``<video>`` and ``<image>`` placeholders added."""
    from flowkit.smollm2 import load_tokenizer

    tokenizer = load_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<video>", "<image>"]})
    return tokenizer


def llava_next_video_processor(tokenizer, frame_size: int, patch_size: int, chat_template: str | None = CHATML_VIDEO_TEMPLATE):
    """A real ``LlavaNextVideoProcessor`` for square frames of ``frame_size`` pixels."""
    from transformers import LlavaNextImageProcessor, LlavaNextVideoProcessor
    from transformers.models.llava_next_video.video_processing_llava_next_video import LlavaNextVideoVideoProcessor

    size = {"shortest_edge": frame_size}
    crop = {"height": frame_size, "width": frame_size}
    video_processor = LlavaNextVideoVideoProcessor(size=size, crop_size=crop)
    image_processor = LlavaNextImageProcessor(size=size, crop_size=crop,
                                              image_grid_pinpoints=[[frame_size, frame_size]])
    return LlavaNextVideoProcessor(video_processor=video_processor, image_processor=image_processor,
                                   tokenizer=tokenizer, patch_size=patch_size,
                                   vision_feature_select_strategy="default", chat_template=chat_template)


def llava_next_video_config(vocab_size: int, video_token_id: int, image_token_id: int, *, num_layers: int = 4,
                            hidden_size: int = 64, intermediate_size: int = 128, num_heads: int = 4,
                            num_kv_heads: int = 2, frame_size: int = 32, patch_size: int = 8,
                            vision_layers: int = 2, vision_hidden: int = 64):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig

    text = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                       num_hidden_layers=num_layers, num_attention_heads=num_heads,
                       num_key_value_heads=num_kv_heads, max_position_embeddings=2048,
                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    vision = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=vision_hidden * 2,
                              num_hidden_layers=vision_layers, num_attention_heads=4,
                              image_size=frame_size, patch_size=patch_size)
    return LlavaNextVideoConfig(vision_config=vision, text_config=text, video_token_id=video_token_id,
                                image_token_id=image_token_id, vision_feature_layer=-1,
                                vision_feature_select_strategy="default", spatial_pool_stride=2,
                                spatial_pool_mode="average", image_grid_pinpoints=[[frame_size, frame_size]],
                                tie_word_embeddings=False)


def build_toy_llava_next_video(out_dir: str | os.PathLike, *, seed: int = 0, frame_size: int = 32,
                               patch_size: int = 8, chat_template: str | None = CHATML_VIDEO_TEMPLATE,
                               **config_kwargs) -> Path:
    """Write a tiny random ``LlavaNextVideoForConditionalGeneration`` checkpoint to ``out_dir``."""
    from transformers import LlavaNextVideoForConditionalGeneration

    out_dir = Path(out_dir)
    tokenizer = video_tokenizer()
    if chat_template is None:  # a checkpoint with no chat template anywhere (the paper's prompt is used)
        tokenizer.chat_template = None
    config = llava_next_video_config(len(tokenizer), tokenizer.convert_tokens_to_ids("<video>"),
                                     tokenizer.convert_tokens_to_ids("<image>"), frame_size=frame_size,
                                     patch_size=patch_size, **config_kwargs)
    torch.manual_seed(seed)
    model = LlavaNextVideoForConditionalGeneration(config).eval()
    with torch.no_grad():  # random init of this size gives near-uniform outputs; widen them a little
        for name, param in model.named_parameters():
            if name.endswith("weight") and param.ndim == 2:
                param.normal_(0.0, 0.08)
    processor = llava_next_video_processor(tokenizer, frame_size, patch_size, chat_template)
    tmp = Path(tempfile.mkdtemp(prefix=".toy-", dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
