"""Family adapters: one per supported transformers VideoLLM class."""

from __future__ import annotations

from flowkit.errors import UnsupportedModelError
from flowkit.families.base import ANSWER_PREFIX, FamilyAdapter, Prepared
from flowkit.families.llava_next_video import LlavaNextVideoAdapter

ADAPTERS: dict[str, type[FamilyAdapter]] = {}


def register_adapter(adapter_cls: type[FamilyAdapter]) -> type[FamilyAdapter]:
    """Make a family adapter known to :func:`flowkit.load_videollm` (usable as a decorator)."""
    for model_type in adapter_cls.model_types:
        ADAPTERS[model_type] = adapter_cls
    return adapter_cls


register_adapter(LlavaNextVideoAdapter)

#: model types that are VLMs without video input (a helpful error names the right class)
_IMAGE_ONLY = {"llava": "LLaVA (images only)", "llava_next": "LLaVA-NeXT (images only)"}


def adapter_for_config(config) -> FamilyAdapter:
    """The adapter for a model config, or a clear error listing what is supported."""
    model_type = getattr(config, "model_type", None)
    if model_type in ADAPTERS:
        return ADAPTERS[model_type]()
    supported = ", ".join(f"{t} ({ADAPTERS[t].family})" for t in sorted(ADAPTERS))
    if model_type in _IMAGE_ONLY:
        reason = f"{_IMAGE_ONLY[model_type]} has no video input"
    else:
        archs = getattr(config, "architectures", None) or [model_type]
        reason = f"{', '.join(map(str, archs))} is not a VideoLLM class flowkit supports"
    raise UnsupportedModelError(
        f"{reason}. Supported model types: {supported}. "
        "Pick a video checkpoint of one of these classes, or add a FamilyAdapter (see flowkit.families)."
    )


__all__ = ["ADAPTERS", "ANSWER_PREFIX", "FamilyAdapter", "LlavaNextVideoAdapter", "Prepared",
           "adapter_for_config", "register_adapter"]
