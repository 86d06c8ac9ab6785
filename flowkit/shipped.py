"""Models the kit ships (assembled locally from files in ``data/``; nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

_BUILDERS: dict = {}


def available() -> list[str]:
    """Names accepted by :func:`flowkit.load_videollm` besides paths and hub ids."""
    return sorted(_BUILDERS)


def register(name: str, builder) -> None:
    """Register ``builder() -> Path`` that assembles a shipped model and returns its folder."""
    _BUILDERS[name] = builder


def resolve(name: str) -> Path | None:
    """The local folder of a shipped model (assembling it on first use), or None if not shipped."""
    builder = _BUILDERS.get(name)
    return builder() if builder else None
