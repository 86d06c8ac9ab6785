"""Family adapters: one per supported transformers VideoLLM class."""

from __future__ import annotations

from flowkit.errors import UnsupportedModelError
from flowkit.families.base import ANSWER_PREFIX, FamilyAdapter, Prepared
from flowkit.families.internvl import InternVLAdapter
from flowkit.families.llava_next_video import LlavaNextVideoAdapter
from flowkit.families.llava_onevision import LlavaOnevisionAdapter
from flowkit.families.pllava import PllavaVideoAdapter
from flowkit.families.qwen_vl import Qwen2_5_VLAdapter, Qwen3VLAdapter
from flowkit.families.video_llama3 import VideoLlama3Adapter

ADAPTERS: dict[str, type[FamilyAdapter]] = {}
#: model type -> adapters that take over only configs they claim (``claims(config)``),
#: each built by ``for_config(config)``; e.g. converted PLLaVA checkpoints of LLaVA-NeXT-Video.
VARIANTS: dict[str, list[type[FamilyAdapter]]] = {}


def register_adapter(adapter_cls: type[FamilyAdapter]) -> type[FamilyAdapter]:
    """Make a family adapter known to :func:`flowkit.load_videollm` (usable as a decorator)."""
    for model_type in adapter_cls.model_types:
        ADAPTERS[model_type] = adapter_cls
    return adapter_cls


def register_variant(adapter_cls: type[FamilyAdapter], model_type: str) -> type[FamilyAdapter]:
    """Make ``adapter_cls`` handle the ``model_type`` configs for which ``adapter_cls.claims(config)`` is true."""
    VARIANTS.setdefault(model_type, []).append(adapter_cls)
    return adapter_cls


for _adapter in (LlavaNextVideoAdapter, LlavaOnevisionAdapter, Qwen2_5_VLAdapter, Qwen3VLAdapter,
                 VideoLlama3Adapter, InternVLAdapter):
    register_adapter(_adapter)
register_variant(PllavaVideoAdapter, "llava_next_video")

#: model types that are VLMs without video input (a helpful error names the right class)
_IMAGE_ONLY = {"llava": "LLaVA (images only)", "llava_next": "LLaVA-NeXT (images only)"}


def adapter_for_config(config) -> FamilyAdapter:
    """The adapter for a model config, or a clear error listing what is supported."""
    model_type = getattr(config, "model_type", None)
    for variant in VARIANTS.get(model_type, ()):
        if variant.claims(config):
            return variant.for_config(config)
    if model_type in ADAPTERS:
        return ADAPTERS[model_type]()
    supported = ", ".join(f"{t} ({ADAPTERS[t].family})" for t in sorted(ADAPTERS))
    if model_type == "llava" and getattr(config, "pooling_shape", None) is not None:
        raise UnsupportedModelError(
            "this is a PLLaVA-format checkpoint (like the paper's LLaVA-NeXT-7B/13B-Video-FT). Convert it once "
            "with `python -m flowkit.convert.pllava SRC DST` and load DST."
        )
    if model_type in _IMAGE_ONLY:
        reason = f"{_IMAGE_ONLY[model_type]} has no video input"
    else:
        archs = getattr(config, "architectures", None) or [model_type]
        reason = f"{', '.join(map(str, archs))} is not a VideoLLM class flowkit supports"
    raise UnsupportedModelError(
        f"{reason}. Supported model types: {supported}. "
        "Pick a video checkpoint of one of these classes, or add a FamilyAdapter (see flowkit.families)."
    )


__all__ = ["ADAPTERS", "ANSWER_PREFIX", "VARIANTS", "FamilyAdapter", "InternVLAdapter", "LlavaNextVideoAdapter",
           "LlavaOnevisionAdapter", "PllavaVideoAdapter", "Prepared", "Qwen2_5_VLAdapter", "Qwen3VLAdapter",
           "VideoLlama3Adapter", "adapter_for_config", "register_adapter", "register_variant"]
