"""Models known by name, besides paths and hub ids: the kit's own model and any plugin's.

A package makes names known to :func:`flowkit.load_videollm` with :func:`register`. Installed
packages declare a register function under the entry-point group :data:`ENTRY_POINT_GROUP`
(the kit's own model does, in ``pyproject.toml``); they are loaded on the first lookup, so
``import flowkit`` loads none of them.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

#: the entry-point group whose callables register named models (``register(name, builder)``)
ENTRY_POINT_GROUP = "flowkit.models"
#: the kit's own model (``flowkit.smol_video``) and its image-only control: the one place their names are written
KIT_MODEL = "flowkit-smol-video"
KIT_CONTROL = f"{KIT_MODEL}-control"

_BUILDERS: dict = {}
_plugins_loaded = False


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        entry.load()()


def available() -> list[str]:
    """Names accepted by :func:`flowkit.load_videollm` besides paths and hub ids."""
    _load_plugins()
    return sorted(_BUILDERS)


def register(name: str, builder) -> None:
    """Register ``builder() -> Path`` that assembles a named model and returns its checkpoint folder."""
    _BUILDERS[name] = builder


def resolve(name: str) -> Path | None:
    """The local folder of a named model (assembling it on first use), or None if the name is unknown.

    A ``flowkit-…`` name that nothing registered means the kit is not installed (its entry
    points are missing): that is a clear error, not a hub lookup.
    """
    _load_plugins()
    builder = _BUILDERS.get(name)
    if builder is None and name.startswith("flowkit-") and not Path(name).exists():
        from flowkit.errors import ModelLoadError

        known = ", ".join(sorted(_BUILDERS)) or "none: no installed package registers any"
        raise ModelLoadError(
            f"no model called {name!r} is registered (registered: {known}). The kit's own models register "
            f"through the entry point group {ENTRY_POINT_GROUP!r} of the installed kit: run ./setup.sh, or "
            "pip install -e . in the kit's checkout (or call flowkit.smol_video.register() first)."
        )
    return builder() if builder else None


__all__ = ["ENTRY_POINT_GROUP", "available", "register", "resolve"]
