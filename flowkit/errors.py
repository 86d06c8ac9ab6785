"""Errors that flowkit raises on purpose.

Every error says what was wrong and what to do about it. They all derive from
:class:`FlowkitError` so a notebook can catch the kit's own complaints in one place.
"""

from __future__ import annotations


class FlowkitError(Exception):
    """Base class of every error raised deliberately by flowkit."""


class KnockoutError(FlowkitError, ValueError):
    """A knockout spec that cannot be applied to this model or prompt."""


class ModelLoadError(FlowkitError, RuntimeError):
    """A model that cannot be found, loaded or quantized."""


class UnsupportedModelError(ModelLoadError):
    """A checkpoint whose class flowkit has no adapter for (or that has no video input)."""


class QuestionError(FlowkitError, ValueError):
    """A question, its options or its answer that cannot be asked as multiple choice."""


class VideoError(FlowkitError, ValueError):
    """A video file that cannot be read: missing, empty, damaged, or not a video at all."""
