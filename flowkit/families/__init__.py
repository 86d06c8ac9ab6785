"""Family adapters: one per supported transformers VideoLLM class, each in its own module.

A family's module is the one place that knows it: its adapter class declares the model
class, decoder path, attention base, vision modules, frame layout and whether the session may
replay its decoder layers (see :class:`~flowkit.families.base.FamilyAdapter`), all in one class
body, and registers itself with ``@register_family`` (a PLLaVA-style variant with ``@register_variant(model_type)``; see
:mod:`flowkit.families.registry`). Importing this package imports every family module, so
:func:`adapter_for_config` knows them all. Adding a family is adding one module here.
Shared behaviour lives in the bases: :class:`~flowkit.families.base.FamilyAdapter` and
:class:`~flowkit.families.placeholder_base.PlaceholderVideoAdapterBase`.
:func:`language_model_of` finds a model's decoder where its family declares it.
"""

from __future__ import annotations

from flowkit.families.base import ANSWER_PREFIX, EAGER_BASE_ATTR, FamilyAdapter, Prepared, attention_modules
from flowkit.families.registry import (
    ADAPTERS,
    VARIANTS,
    adapter_for_config,
    language_model_of,
    register_family,
    register_variant,
)

import importlib as _importlib
import pkgutil as _pkgutil

# every module of this package is imported, so each family registers itself (a new family needs no line here)
for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")

# the built-in adapters by name, for convenience
from flowkit.families.llava_next_video import LlavaNextVideoAdapter  # noqa: E402
from flowkit.families.pllava import PllavaVideoAdapter  # noqa: E402
from flowkit.families.llava_onevision import LlavaOnevisionAdapter  # noqa: E402
from flowkit.families.qwen_vl import Qwen2_5_VLAdapter, Qwen3VLAdapter  # noqa: E402
from flowkit.families.video_llama3 import VideoLlama3Adapter  # noqa: E402
from flowkit.families.internvl import InternVLAdapter  # noqa: E402

__all__ = [
    "ADAPTERS",
    "ANSWER_PREFIX",
    "EAGER_BASE_ATTR",
    "VARIANTS",
    "FamilyAdapter",
    "InternVLAdapter",
    "LlavaNextVideoAdapter",
    "LlavaOnevisionAdapter",
    "PllavaVideoAdapter",
    "Prepared",
    "Qwen2_5_VLAdapter",
    "Qwen3VLAdapter",
    "VideoLlama3Adapter",
    "adapter_for_config",
    "attention_modules",
    "language_model_of",
    "register_family",
    "register_variant",
]
