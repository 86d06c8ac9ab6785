"""The widgets' front-end files: each view is ``common.js`` followed by its own module (and CSS likewise).

anywidget takes the joined source as ``_esm`` / ``_css``; plain ESM, no bundler, no CDN imports.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def joined(*names: str) -> str:
    """The files ``names`` (beside this module), joined in order."""
    return "\n".join((HERE / name).read_text() for name in names)


def view_source(stem: str) -> tuple[str, str]:
    """``(_esm, _css)`` of the widget whose files are ``<stem>.js`` / ``<stem>.css``."""
    return joined("common.js", f"{stem}.js"), joined("common.css", f"{stem}.css")
