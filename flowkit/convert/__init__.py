"""Converters from research checkpoint formats into transformers classes flowkit loads.

- :mod:`flowkit.convert.pllava` — PLLaVA checkpoints (the paper's LLaVA-NeXT-7B/13B-Video-FT)
  into ``LlavaNextVideoForConditionalGeneration`` folders:
  ``python -m flowkit.convert.pllava SRC DST``; :mod:`flowkit.families.model_classes.pllava` holds the
  model class those folders load as (PLLaVA's project-then-pool video path).
"""

from __future__ import annotations

from flowkit.errors import ModelLoadError


class ConversionError(ModelLoadError):
    """A source checkpoint that cannot be converted; the message says what is missing or unexpected."""


__all__ = ["ConversionError"]
