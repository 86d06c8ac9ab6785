"""Which family adapter handles which model config.

Every family registers itself in its own module, with a decorator on its adapter class:

>>> @register_family                                  # doctest: +SKIP
... class MyVideoLLMAdapter(PlaceholderVideoAdapterBase):
...     model_types = ("my_video_llm",)
...     ...

A variant that takes over only some configs of a model type (a converted PLLaVA
checkpoint is a ``llava_next_video`` config with a ``pllava`` entry) registers with
``@register_variant("llava_next_video")`` and implements ``claims(config)`` and
``for_config(config)``. :func:`adapter_for_config` picks the adapter for a config, and
:func:`language_model_of` finds a model's decoder where its adapter declares it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flowkit.errors import FlowkitError, KnockoutError, UnsupportedModelError
from flowkit.families.base import EAGER_BASE_ATTR, FamilyAdapter, attention_modules

#: model type -> the adapter class registered for it with :func:`register_family`
ADAPTERS: dict[str, type[FamilyAdapter]] = {}
#: model type -> adapters that take over only configs they claim (``claims(config)``),
#: each built by ``for_config(config)``; e.g. converted PLLaVA checkpoints of LLaVA-NeXT-Video.
VARIANTS: dict[str, list[type[FamilyAdapter]]] = {}

#: model types that are VLMs without video input (a helpful error names the right class)
_IMAGE_ONLY = {"llava": "LLaVA (images only)", "llava_next": "LLaVA-NeXT (images only)"}


def _check_declared(adapter_cls: type[FamilyAdapter]) -> None:
    missing = adapter_cls.undeclared()
    if missing:
        raise FlowkitError(
            f"{adapter_cls.__name__} does not declare {', '.join(missing)}; a family adapter "
            "declares them all as class attributes (see flowkit.families.base.FamilyAdapter)."
        )


def register_family(adapter_cls: type[FamilyAdapter]) -> type[FamilyAdapter]:
    """Class decorator: make a family adapter known to :func:`flowkit.load_videollm`.

    The adapter handles every ``config.model_type`` in its ``model_types``; it must declare
    everything :class:`~flowkit.families.base.FamilyAdapter` lists, and a model type can
    belong to one family only.
    """
    _check_declared(adapter_cls)
    for model_type in adapter_cls.model_types:
        if ADAPTERS.get(model_type, adapter_cls) is not adapter_cls:
            raise FlowkitError(
                f"model type {model_type!r} is registered twice: by {ADAPTERS[model_type].__name__} "
                f"and by {adapter_cls.__name__}."
            )
    ADAPTERS.update(dict.fromkeys(adapter_cls.model_types, adapter_cls))
    return adapter_cls


def register_variant(model_type: str) -> Callable:
    """Class decorator: ``@register_variant("llava_next_video")`` makes the decorated adapter handle
    the ``model_type`` configs for which its ``claims(config)`` is true (built by ``for_config(config)``).
    """

    def register(cls: type[FamilyAdapter]) -> type[FamilyAdapter]:
        _check_declared(cls)
        if not (hasattr(cls, "claims") and hasattr(cls, "for_config")):
            raise FlowkitError(
                f"{cls.__name__} is registered as a variant of {model_type!r} but lacks "
                "claims(config) or for_config(config)."
            )
        if cls not in VARIANTS.setdefault(model_type, []):
            VARIANTS[model_type].append(cls)
        return cls

    return register


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


def language_model_of(model, adapter: FamilyAdapter | None = None) -> torch.nn.Module:
    """The decoder stack (``.layers``, ``.config``) of a VideoLLM's language model.

    ``model`` is a :class:`~flowkit.model.videollm.VideoLLM` (its adapter declares where the decoder
    is) or a transformers VideoLLM (the adapter its config maps to declares it, see
    :func:`adapter_for_config`). Each attention module of the returned decoder
    is given the family's stock eager attention (``FamilyAdapter.attention_base``), which
    knocked-out eager attention wraps. ``adapter`` says which family a transformers model is
    when the caller knows it already (a :class:`~flowkit.intervention.session.Session` is given it).
    """
    adapter = adapter if adapter is not None else getattr(model, "adapter", None)
    hf_model = model.model if hasattr(model, "adapter") else model  # a VideoLLM's transformers model
    if not isinstance(adapter, FamilyAdapter):
        config = getattr(hf_model, "config", None)
        try:
            adapter = adapter_for_config(config)
        except UnsupportedModelError as exc:
            why = exc if config is not None else "it is not a transformers model (it has no config)"
            raise KnockoutError(
                f"cannot tell where the decoder layers of {type(hf_model).__name__} are: {why}"
            ) from None
    decoder = adapter.decoder(hf_model)
    eager = adapter.eager_attention()
    for module in attention_modules(decoder):
        if getattr(module, EAGER_BASE_ATTR, None) is not eager:
            setattr(module, EAGER_BASE_ATTR, eager)
    return decoder


__all__ = ["ADAPTERS", "VARIANTS", "adapter_for_config", "language_model_of", "register_family", "register_variant"]
