"""Tiny randomly initialised VideoLLMs of the real classes, for tests and benchmarks.

They are built and saved exactly like a real checkpoint (``save_pretrained``), so that
:func:`flowkit.load_videollm` loads them through the same path as a downloaded model.
Their answers are meaningless; their shapes, processors and prompts are real.

Every family uses SmolLM2's tokenizer with that family's special tokens added (its
processor accepts any tokenizer that has them) and a chat template that renders the
video the way the family's released checkpoints do. One builder per family:
``build_toy_<family>(out_dir, seed=0, num_layers=3, ...)``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from flowkit.model.checkpoints import CHATML_VIDEO_TEMPLATE, llava_next_video_processor, save_checkpoint
from flowkit.smol_video.smollm2 import load_tokenizer, video_tokenizer


def llava_next_video_config(
    vocab_size: int,
    video_token_id: int,
    image_token_id: int,
    *,
    num_layers: int = 4,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    frame_size: int = 32,
    patch_size: int = 8,
    vision_layers: int = 2,
    vision_hidden: int = 64,
):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig

    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=vision_hidden * 2,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=frame_size,
        patch_size=patch_size,
    )
    return LlavaNextVideoConfig(
        vision_config=vision,
        text_config=text,
        video_token_id=video_token_id,
        image_token_id=image_token_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        spatial_pool_stride=2,
        spatial_pool_mode="average",
        image_grid_pinpoints=[[frame_size, frame_size]],
        tie_word_embeddings=False,
    )


def build_toy_llava_next_video(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    frame_size: int = 32,
    patch_size: int = 8,
    chat_template: str | None = CHATML_VIDEO_TEMPLATE,
    letters_head: bool = False,
    **config_kwargs,
) -> Path:
    """Write a tiny random ``LlavaNextVideoForConditionalGeneration`` checkpoint to ``out_dir``.

    ``letters_head=True`` zeroes every row of ``lm_head`` but the option letters' (A-D after
    'Best option:('): every other token's logit is 0, so the top token is a letter unless every
    letter's logit is negative — a model that answers with a letter most of the time, not always.
    """
    from transformers import LlavaNextVideoForConditionalGeneration

    tokenizer = video_tokenizer()
    if chat_template is None:  # a checkpoint with no chat template anywhere (the paper's prompt is used)
        tokenizer.chat_template = None
    config = llava_next_video_config(
        len(tokenizer),
        tokenizer.convert_tokens_to_ids("<video>"),
        tokenizer.convert_tokens_to_ids("<image>"),
        frame_size=frame_size,
        patch_size=patch_size,
        **config_kwargs,
    )
    model = _random_model(LlavaNextVideoForConditionalGeneration, config, seed)
    if letters_head:
        from flowkit.families.base import FamilyAdapter

        letters = list(FamilyAdapter.letter_token_ids(tokenizer, 4))
        head = model.get_output_embeddings().weight
        with torch.no_grad():
            kept = head[letters].clone()
            head.zero_()
            head[letters] = kept
    processor = llava_next_video_processor(tokenizer, frame_size, patch_size, chat_template)
    return save_checkpoint(model, processor, out_dir)


def _random_model(model_cls, config, seed: int):
    """A randomly initialised model whose outputs are not near-uniform."""
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():  # random init of this size gives near-uniform outputs; widen them a little
        for name, param in model.named_parameters():
            if name.endswith("weight") and param.ndim == 2:
                param.normal_(0.0, 0.08)
    return model


# ----------------------------------------------------------------------------- other families
#: Tiny language model shared by the other families' builders (hidden size 64).
TEXT_SIZES = dict(
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)
#: Tiny vision tower sizes.
VISION_SIZES = dict(hidden_size=64, intermediate_size=128)

#: LLaVA-OneVision's chat template, as in the llava-hf OneVision checkpoints.
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\\n' + content['text'] }}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def chatml_template(video: str, image: str = "", default_system: str | None = None) -> str:
    """A ChatML chat template (as the Qwen-based VideoLLMs use) that writes ``video`` for a video part."""
    system = ""
    if default_system:
        system = (
            "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
            + default_system
            + "<|im_end|>\n{% endif %}"
        )
    return (
        "{% for message in messages %}" + system + "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}{% if part['type'] == 'video' %}"
        + video
        + "{% elif part['type'] == 'image' %}"
        + image
        + "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def family_tokenizer(tokens: tuple[str, ...] = (), named: dict[str, str] | None = None):
    """SmolLM2's tokenizer plus a family's special tokens.

    ``named`` tokens also become tokenizer attributes (``tokenizer.video_token``), which
    InternVL's processor requires; they are saved with the tokenizer.
    """
    from transformers import AutoTokenizer

    tokenizer = load_tokenizer()
    if named:
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_pretrained(tmp)
            tokenizer = AutoTokenizer.from_pretrained(tmp, extra_special_tokens=dict(named))
    if tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(tokens)}, replace_extra_special_tokens=False)
    return tokenizer


def _text_config(tokenizer, num_layers: int, model_type: str | None = None, **extra) -> dict:
    config = dict(TEXT_SIZES, vocab_size=len(tokenizer), num_hidden_layers=num_layers, **extra)
    if model_type:
        config["model_type"] = model_type
    return config


def build_toy_llava_onevision(
    out_dir: str | os.PathLike, *, seed: int = 0, num_layers: int = 3, frame_size: int = 32, patch_size: int = 8
) -> Path:
    """Write a tiny random ``LlavaOnevisionForConditionalGeneration`` (SigLIP + Qwen2) to ``out_dir``.

    ``(frame_size / patch_size)^2`` patches per frame, pooled to ``ceil(side / 2)^2`` tokens.
    """
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
    )
    from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

    tokenizer = family_tokenizer(("<image>", "<video>"))
    size = {"height": frame_size, "width": frame_size}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[frame_size, frame_size]]),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tokenizer,
        num_image_tokens=(frame_size // patch_size) ** 2,
        vision_feature_select_strategy="full",
        chat_template=ONEVISION_TEMPLATE,
    )
    config = LlavaOnevisionConfig(
        text_config=_text_config(tokenizer, num_layers, "qwen2"),
        vision_config=dict(
            VISION_SIZES,
            model_type="siglip_vision_model",
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=frame_size,
            patch_size=patch_size,
        ),
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[frame_size, frame_size]],
        tie_word_embeddings=False,
    )
    model = _random_model(LlavaOnevisionForConditionalGeneration, config, seed)
    return save_checkpoint(model, processor, out_dir)


QWEN_VL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
#: How Qwen2.5-VL / Qwen3-VL chat templates write a video.
QWEN_VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def _qwen_vl_parts(qwen3: bool, patch_size: int, max_side: int):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    if qwen3:
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor as VideoProcessor
    else:
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor as VideoProcessor
    tokenizer = family_tokenizer(QWEN_VL_TOKENS)
    # frames keep their aspect ratio, rounded to multiples of 2 x patch_size, at most max_side^2 pixels
    # (Qwen3-VL's budget is for the whole video: allow up to 16 frames of that size)
    size = {"shortest_edge": (2 * patch_size) ** 2, "longest_edge": (16 if qwen3 else 1) * max_side * max_side}
    kwargs = dict(patch_size=patch_size, merge_size=2, temporal_patch_size=2, size=size)
    return tokenizer, Qwen2VLImageProcessor(**kwargs), VideoProcessor(cap_pixels_per_frame=False, **kwargs)


def _qwen_ids(tokenizer) -> dict:
    return dict(
        zip(
            ("vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id"),
            tokenizer.convert_tokens_to_ids(list(QWEN_VL_TOKENS)),
        )
    )


def build_toy_qwen2_5_vl(
    out_dir: str | os.PathLike, *, seed: int = 0, num_layers: int = 3, patch_size: int = 8, max_side: int = 64
) -> Path:
    """Write a tiny random ``Qwen2_5_VLForConditionalGeneration`` to ``out_dir``.

    Frames are resized to multiples of ``2 * patch_size`` (at most ``max_side^2`` pixels);
    two frames make one block of ``(h / patch / 2) x (w / patch / 2)`` tokens.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tokenizer, image_processor, video_processor = _qwen_vl_parts(False, patch_size, max_side)
    template = chatml_template(QWEN_VIDEO, QWEN_IMAGE, default_system="You are a helpful assistant.")
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor, chat_template=template
    )
    head_dim = TEXT_SIZES["hidden_size"] // TEXT_SIZES["num_attention_heads"]
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, head_dim // 2 - 5]}
    config = Qwen2_5_VLConfig(
        text_config=_text_config(tokenizer, num_layers, rope_parameters=rope),
        vision_config=dict(
            VISION_SIZES,
            depth=2,
            num_heads=4,
            patch_size=patch_size,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=TEXT_SIZES["hidden_size"],
            window_size=4 * patch_size,
            fullatt_block_indexes=[1],
            tokens_per_second=2,
        ),
        **_qwen_ids(tokenizer),
    )
    model = _random_model(Qwen2_5_VLForConditionalGeneration, config, seed)
    return save_checkpoint(model, processor, out_dir)


def build_toy_qwen3_vl(
    out_dir: str | os.PathLike, *, seed: int = 0, num_layers: int = 3, patch_size: int = 8, max_side: int = 64
) -> Path:
    """Write a tiny random ``Qwen3VLForConditionalGeneration`` (deepstack into LM layer 0) to ``out_dir``."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    tokenizer, image_processor, video_processor = _qwen_vl_parts(True, patch_size, max_side)
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=chatml_template(QWEN_VIDEO, QWEN_IMAGE),
    )
    head_dim = TEXT_SIZES["hidden_size"] // TEXT_SIZES["num_attention_heads"]
    rope = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [2, 3, head_dim // 2 - 5],
        "mrope_interleaved": True,
    }
    config = Qwen3VLConfig(
        text_config=_text_config(tokenizer, num_layers, head_dim=head_dim, rope_parameters=rope),
        vision_config=dict(
            VISION_SIZES,
            depth=2,
            num_heads=4,
            patch_size=patch_size,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=TEXT_SIZES["hidden_size"],
            num_position_embeddings=(max_side // patch_size) ** 2,
            deepstack_visual_indexes=[0],
        ),
        **_qwen_ids(tokenizer),
    )
    model = _random_model(Qwen3VLForConditionalGeneration, config, seed)
    return save_checkpoint(model, processor, out_dir)


def build_toy_video_llama3(
    out_dir: str | os.PathLike, *, seed: int = 0, num_layers: int = 3, patch_size: int = 8, max_side: int = 64
) -> Path:
    """Write a tiny random ``VideoLlama3ForConditionalGeneration`` (Qwen2 LM) to ``out_dir``.

    Frames are merged 2x2 and pruned by the real processor's token compression.
    """
    from transformers import VideoLlama3Config, VideoLlama3ForConditionalGeneration, VideoLlama3Processor
    from transformers.models.video_llama_3.image_processing_video_llama_3 import VideoLlama3ImageProcessor
    from transformers.models.video_llama_3.video_processing_video_llama_3 import VideoLlama3VideoProcessor

    tokenizer = family_tokenizer(("<|image_pad|>", "<|video_pad|>"))
    # VideoLLaMA3 divides the pixel budget among frames: allow max_side^2 for up to 16 frames
    size = {"shortest_edge": (2 * patch_size) ** 2, "longest_edge": 16 * max_side * max_side}
    processor = VideoLlama3Processor(
        image_processor=VideoLlama3ImageProcessor(patch_size=patch_size, merge_size=1, size=size),
        video_processor=VideoLlama3VideoProcessor(patch_size=patch_size, merge_size=2, size=size),
        tokenizer=tokenizer,
        chat_template=chatml_template("<|video_pad|>\n", "<|image_pad|>\n"),
    )
    config = VideoLlama3Config(
        text_config=_text_config(tokenizer, num_layers, "qwen2"),
        vision_config=dict(VISION_SIZES, num_hidden_layers=2, num_attention_heads=4, patch_size=patch_size),
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
    )
    model = _random_model(VideoLlama3ForConditionalGeneration, config, seed)
    return save_checkpoint(model, processor, out_dir)


#: The named tokens InternVL's processor reads from its tokenizer.
INTERNVL_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}


def build_toy_internvl(
    out_dir: str | os.PathLike, *, seed: int = 0, num_layers: int = 3, frame_size: int = 32, patch_size: int = 8
) -> Path:
    """Write a tiny random ``InternVLForConditionalGeneration`` (Qwen2 LM) to ``out_dir``.

    One tile per frame: ``(frame_size / patch_size)^2 / 4`` tokens after pixel shuffle.
    """
    from transformers import GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    tokenizer = family_tokenizer(named=INTERNVL_TOKENS)
    size = {"height": frame_size, "width": frame_size}
    seq_length = (frame_size // patch_size) ** 2 // 4
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=False),
        video_processor=InternVLVideoProcessor(size=size),
        tokenizer=tokenizer,
        image_seq_length=seq_length,
        chat_template=chatml_template("<video>\n", "<image>\n"),
    )
    config = InternVLConfig(
        text_config=_text_config(tokenizer, num_layers, "qwen2"),
        vision_config=dict(
            VISION_SIZES,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=[frame_size, frame_size],
            patch_size=[patch_size, patch_size],
        ),
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=seq_length,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )
    model = _random_model(InternVLForConditionalGeneration, config, seed)
    return save_checkpoint(model, processor, out_dir)


#: family name -> builder, for tests and benchmarks that sweep every family
TOY_BUILDERS = {
    "llava_next_video": build_toy_llava_next_video,
    "llava_onevision": build_toy_llava_onevision,
    "qwen2_5_vl": build_toy_qwen2_5_vl,
    "qwen3_vl": build_toy_qwen3_vl,
    "video_llama_3": build_toy_video_llama3,
    "internvl": build_toy_internvl,
}
