"""A PNG of what a widget shows, inside its display bundle.

JupyterLab renders the live widget (its view mimetype ranks first); a viewer without the
widget's state — GitHub, nbviewer, a notebook opened untrusted — falls back to the PNG, so
a saved chapter shows what the widget showed instead of ``<... object at 0x...>``. The
picture is drawn by :mod:`flowkit.views.plots` and rendered locally by vl-convert; if that fails,
the widget is displayed without it. :func:`png_of` is the one snapshot helper: the widgets'
pictures and :class:`widgets.offline_chart.OfflineChart`'s.
"""

from __future__ import annotations

import base64
import io

from flowkit.views.plots import png_base64


def png_of(chart) -> str | None:
    """Base64 PNG of an altair chart, deflated hard (``None`` when it cannot be rendered here)."""
    try:
        return _recompressed(png_base64(chart))
    except Exception:  # noqa: BLE001 - a snapshot is a courtesy; the live widget must still show
        return None


def _recompressed(png: str) -> str:
    """The same pixels, deflated harder (vl-convert's PNGs shrink about 3x): notebooks stay small."""
    if not png:
        return png
    try:
        from PIL import Image

        out = io.BytesIO()
        Image.open(io.BytesIO(base64.b64decode(png))).save(out, "PNG", optimize=True)
    except Exception:  # noqa: BLE001 - keep vl-convert's PNG
        return png
    smaller = base64.b64encode(out.getvalue()).decode("ascii")
    return smaller if len(smaller) < len(png) else png


def with_snapshot(bundle, chart_factory):
    """``bundle`` (a widget's mimebundle: a dict, or ``(data, metadata)``) with ``image/png`` added."""
    if bundle is None:
        return None
    try:
        png = png_of(chart_factory())
    except Exception:  # noqa: BLE001
        png = None
    if png is None:
        return bundle
    data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
    data = {**data, "image/png": png}
    return (data, metadata) if isinstance(bundle, tuple) else data


class Snapshot:
    """Mixin: the display bundle carries :meth:`snapshot_chart` as a PNG beside the live view."""

    def snapshot_chart(self):  # pragma: no cover - every widget defines its own
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        bundle = with_snapshot(super()._repr_mimebundle_(**kwargs), self.snapshot_chart)
        if bundle is None:
            return None
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        # a stable text stand-in (no memory address), so re-running a chapter does not change it
        data = {**data, "text/plain": f"<{type(self).__name__} widget>"}
        return (data, metadata) if isinstance(bundle, tuple) else data
