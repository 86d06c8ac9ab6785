"""Convert a PLLaVA checkpoint (the paper's LLaVA-NeXT-7B/13B-Video-FT) into a LLaVA-NeXT-Video folder.

Usage::

    python -m flowkit.convert.pllava SRC DST [--lora-alpha ALPHA] [--overwrite]

``SRC`` is a PLLaVA-format folder, e.g. ``byminji/LLaVA-NeXT-7B-Video-FT`` downloaded with
``hf download byminji/LLaVA-NeXT-7B-Video-FT --local-dir SRC``: a ``config.json`` with
``model_type: "llava"`` and PLLaVA's ``pooling_shape``/``frame_shape``, the weights
(safetensors, or PyTorch ``.bin``) and the tokenizer files. ``DST`` becomes a folder that
``flowkit.load_videollm(DST)`` loads as the transformers class
``LlavaNextVideoForConditionalGeneration`` with PLLaVA's project-then-pool video path
(see :mod:`flowkit.families.pllava`).

Weight names (PLLaVA, transformers 4.40 -> LLaVA-NeXT-Video, transformers 5):

=====================================  ==========================================
``vision_tower.vision_model.*``        ``model.vision_tower.*``
``multi_modal_projector.linear_{1,2}``  ``model.multi_modal_projector.linear_{1,2}``
``language_model.model.*``             ``model.language_model.*``
``language_model.lm_head.weight``      ``lm_head.weight``
(absent: image path only)              ``model.image_newline`` (zeros)
=====================================  ==========================================

A language model still wrapped by PEFT (``language_model.base_model.model.*`` with
``lora_A``/``lora_B`` weights) is merged: ``W + (alpha / r) * B @ A``; the LoRA ``alpha``
is not stored in the weights, so pass it with ``--lora-alpha`` (the paper trained with
r = 128, alpha = 32). Tensors keep their dtype; the source is read and written one
weight file at a time, so a 7B conversion needs about one shard of memory.

The written chat template reproduces the paper's multiple-choice prompt (its
``eval_mvbench`` conversation: system text, the video in its own ``USER:`` turn,
``Question: ...``, ``ASSISTANT:``); flowkit appends ``Best option:(``. The only remaining
difference from the paper's string is one space the paper puts before
``\\nOnly give the best option.``. Pass the model exactly ``pooling_shape[0]`` frames
(8 in the paper), 336x336 after resizing, as PLLaVA does.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import torch

from flowkit.model.checkpoints import merge_lora_weight

from flowkit.convert import ConversionError
from flowkit.families.pllava import PAPER_CHAT_TEMPLATE, PLLAVA_CONFIG_KEY

#: PLLaVA prefix -> LLaVA-NeXT-Video (transformers 5) prefix
RENAMES = (
    ("vision_tower.vision_model.", "model.vision_tower."),  # transformers 5's CLIPVisionModel has no vision_model level
    ("vision_tower.", "model.vision_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
)
#: non-persistent buffers some versions saved; transformers 5 rebuilds them
IGNORED_SUFFIXES = (".position_ids", ".rotary_emb.inv_freq")
PEFT_PREFIX = "language_model.base_model.model."
LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])\.(?P<adapter>[^.]+)\.weight$")

VIDEO_TOKEN = "<video>"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


# ------------------------------------------------------------------------------ reading
def read_pllava_config(src: Path) -> dict:
    """The source config.json, checked to be a PLLaVA config flowkit can convert exactly."""
    path = src / "config.json"
    if not path.is_file():
        raise ConversionError(f"{src} has no config.json: point SRC at the downloaded PLLaVA checkpoint folder.")
    config = json.loads(path.read_text())
    missing = [k for k in ("vision_config", "text_config", "pooling_shape") if not config.get(k)]
    if missing:
        raise ConversionError(
            f"{path} is not a PLLaVA config (missing {', '.join(missing)}). Expected the config of a PLLaVA "
            "checkpoint such as byminji/LLaVA-NeXT-7B-Video-FT."
        )
    if config.get("pooling_method", "avg") != "avg":
        raise ConversionError(
            f"pooling_method {config['pooling_method']!r}: only PLLaVA's 'avg' pooling converts exactly."
        )
    vision = config["vision_config"]
    side = vision.get("image_size", 336) // vision.get("patch_size", 14)
    frame_shape = list(config.get("frame_shape") or (side, side))
    pooled = list(config["pooling_shape"])[1:]
    if frame_shape != [side, side] or pooled != [side // 2, side // 2] or side % 2:
        raise ConversionError(
            f"PLLaVA pools {frame_shape} patches to {pooled}; LLaVA-NeXT-Video pools with stride 2, so it "
            f"needs an even {side}x{side} patch grid pooled to {side // 2}x{side // 2}."
        )
    return config


def weight_files(src: Path) -> list[Path]:
    """The checkpoint's weight files, in order (safetensors preferred)."""
    index = src / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [src / n for n in names]
    files = sorted(src.glob("*.safetensors")) or sorted(src.glob("pytorch_model*.bin"))
    if not files:
        raise ConversionError(f"{src} holds no weights (*.safetensors or pytorch_model*.bin).")
    return files


def load_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as load_safetensors

        return load_safetensors(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return state.get("model", state) if isinstance(state, dict) else state


def file_keys(path: Path) -> list[str]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    return list(load_file(path))


# ------------------------------------------------------------------------------ renaming
def target_name(key: str) -> str | None:
    """The LLaVA-NeXT-Video name of a PLLaVA weight (``None`` for ignorable buffers)."""
    if key.endswith(IGNORED_SUFFIXES):
        return None
    if key.startswith(PEFT_PREFIX):
        key = "language_model." + key[len(PEFT_PREFIX) :]
    key = key.replace(".base_layer.", ".")
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    raise ConversionError(
        f"unexpected weight {key!r}: a PLLaVA checkpoint holds vision_tower.*, multi_modal_projector.* and "
        "language_model.* weights only."
    )


def collect_lora(files: list[Path]) -> dict[str, dict[str, torch.Tensor]]:
    """LoRA factors by target weight name: ``{name: {"A": (r, in), "B": (out, r)}}``."""
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for path in files:
        lora_keys = [k for k in file_keys(path) if LORA_KEY.match(k)]
        if not lora_keys:
            continue
        state = load_file(path)
        for key in lora_keys:
            match = LORA_KEY.match(key)
            name = target_name(match["module"] + ".weight")
            factors.setdefault(name, {})[match["which"]] = state[key]
    incomplete = [n for n, f in factors.items() if set(f) != {"A", "B"}]
    if incomplete:
        raise ConversionError(f"LoRA weights without their partner factor: {incomplete[:3]}")
    return factors


def merge_lora(weight: torch.Tensor, factors: dict[str, torch.Tensor], alpha: float) -> torch.Tensor:
    """``W + (alpha / r) * B @ A`` in ``W``'s dtype (see :func:`flowkit.model.checkpoints.merge_lora_weight`)."""
    return merge_lora_weight(weight, factors["A"], factors["B"], alpha / factors["A"].shape[0])


# ------------------------------------------------------------------------------ writing
def _sub_config(config: dict) -> dict:
    """A sub-config dict without private or training-only fields of older transformers."""
    return {k: v for k, v in config.items() if not k.startswith("_") and k != "gradient_checkpointing"}


def build_config(src_config: dict, video_token_id: int, dtype: torch.dtype):
    from transformers import LlavaNextVideoConfig

    vision = _sub_config(src_config["vision_config"])
    vision.setdefault("model_type", "clip_vision_model")
    text = _sub_config(src_config["text_config"])
    text.setdefault("model_type", "llama")
    size = vision.get("image_size", 336)
    return LlavaNextVideoConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=src_config.get("image_token_index", 32000),
        video_token_id=video_token_id,
        projector_hidden_act=src_config.get("projector_hidden_act", "gelu"),
        vision_feature_select_strategy=src_config.get("vision_feature_select_strategy", "default"),
        vision_feature_layer=src_config.get("vision_feature_layer", -2),
        spatial_pool_mode="average",
        spatial_pool_stride=2,
        image_grid_pinpoints=[[size, size]],
        tie_word_embeddings=False,
        dtype=dtype,
        **{
            PLLAVA_CONFIG_KEY: {
                "pooling_shape": list(src_config["pooling_shape"]),
                "frame_shape": list(src_config.get("frame_shape") or []),
                "converted_by": "flowkit.convert.pllava",
            }
        },
    )


def build_processor(src: Path, src_config: dict):
    """A ``LlavaNextVideoProcessor``: the source tokenizer plus ``<video>``, CLIP preprocessing, paper prompt."""
    from transformers import AutoTokenizer, LlavaNextImageProcessor, LlavaNextVideoProcessor
    from transformers.models.llava_next_video.video_processing_llava_next_video import LlavaNextVideoVideoProcessor

    try:
        tokenizer = AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as exc:
        raise ConversionError(
            f"{src} has no usable tokenizer ({exc}). Copy the tokenizer files of the base model "
            "(llava-hf/llava-v1.6-vicuna-7b-hf or -13b-hf) into SRC and run again."
        ) from None
    if VIDEO_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [VIDEO_TOKEN]}, replace_extra_special_tokens=False)
    vision = src_config["vision_config"]
    size = vision.get("image_size", 336)
    preprocess = {"image_mean": CLIP_MEAN, "image_std": CLIP_STD}
    preprocessor_file = src / "preprocessor_config.json"
    if preprocessor_file.is_file():
        saved = json.loads(preprocessor_file.read_text())
        preprocess = {k: saved.get(k, v) for k, v in preprocess.items()}
    common = dict(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, **preprocess)
    return LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(**common),
        image_processor=LlavaNextImageProcessor(image_grid_pinpoints=[[size, size]], **common),
        tokenizer=tokenizer,
        patch_size=vision.get("patch_size", 14),
        vision_feature_select_strategy=src_config.get("vision_feature_select_strategy", "default"),
        chat_template=PAPER_CHAT_TEMPLATE,
    )


def convert_pllava(
    src: str | Path, dst: str | Path, *, lora_alpha: float | None = None, overwrite: bool = False
) -> Path:
    """Convert the PLLaVA checkpoint in ``src`` into a LLaVA-NeXT-Video folder ``dst`` (see module docs)."""
    from safetensors.torch import save_file

    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    src_config = read_pllava_config(src)
    files = weight_files(src)
    _check_complete({target_name(k) for path in files for k in file_keys(path) if not LORA_KEY.match(k)})
    lora = collect_lora(files)
    if lora and lora_alpha is None:
        raise ConversionError(
            f"{src} holds unmerged LoRA weights ({len(lora)} layers); their scale alpha / r needs alpha, which is "
            "not stored in the weights. Pass --lora-alpha (the paper's training used alpha=32 with r=128)."
        )
    processor = build_processor(src, src_config)
    video_id = processor.tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
    vocab = src_config["text_config"].get("vocab_size", 32000)
    if video_id >= vocab:
        raise ConversionError(
            f"the {VIDEO_TOKEN} token got id {video_id}, beyond the language model's {vocab} embeddings. "
            "The LLaVA-NeXT base models pad their vocabulary (32064 rows), so this means SRC's tokenizer does not "
            "belong to these weights."
        )
    if dst.exists() and any(dst.iterdir()):
        if not overwrite:
            raise ConversionError(f"{dst} exists and is not empty; choose another folder or pass --overwrite.")
        shutil.rmtree(dst)
    dst.mkdir(parents=True, exist_ok=True)

    weight_map: dict[str, str] = {}
    names = (
        ["model.safetensors"]
        if len(files) == 1
        else [f"model-{i + 1:05d}-of-{len(files):05d}.safetensors" for i in range(len(files))]
    )
    dtype = None
    for path, name in zip(files, names):
        converted = {}
        for key, tensor in load_file(path).items():
            if LORA_KEY.match(key):
                continue
            target = target_name(key)
            if target is None:
                continue
            if target in lora:
                tensor = merge_lora(tensor, lora[target], lora_alpha)
            converted[target] = tensor.contiguous()
            dtype = dtype or (tensor.dtype if tensor.is_floating_point() else None)
        if name == names[-1]:  # LLaVA-NeXT's image-newline vector; PLLaVA has none (images are not converted)
            hidden = src_config["text_config"]["hidden_size"]
            converted["model.image_newline"] = torch.zeros(hidden, dtype=dtype or torch.float32)
        save_file(converted, str(dst / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(converted, name))
    if len(names) > 1:
        (dst / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}, indent=2)
        )

    config = build_config(src_config, video_id, dtype or torch.float32)
    config.save_pretrained(dst)
    processor.save_pretrained(dst)
    return dst


def _check_complete(names: set) -> None:
    """Refuse a source that lacks a part of the model (before anything is written)."""
    required = (
        "model.multi_modal_projector.linear_1.weight",
        "model.multi_modal_projector.linear_2.weight",
        "model.language_model.embed_tokens.weight",
        "lm_head.weight",
    )
    missing = [k for k in required if k not in names]
    if missing or not any(k and k.startswith("model.vision_tower.") for k in names):
        raise ConversionError(
            f"SRC's weights lack {missing or ['the vision tower']}; is SRC a full PLLaVA "
            "checkpoint (not only its LoRA/projector weights)?"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowkit.convert.pllava", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="PLLaVA checkpoint folder (config.json, weights, tokenizer)")
    parser.add_argument("dst", help="output folder (LLaVA-NeXT-Video format)")
    parser.add_argument(
        "--lora-alpha", type=float, default=None, help="LoRA alpha, needed only if SRC holds unmerged LoRA weights"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    args = parser.parse_args(argv)
    try:
        out = convert_pllava(args.src, args.dst, lora_alpha=args.lora_alpha, overwrite=args.overwrite)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}; load it with flowkit.load_videollm({str(out)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
