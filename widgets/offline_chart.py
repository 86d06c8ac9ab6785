"""Altair charts you can hover and click in JupyterLab, with no network, that save as a PNG.

    from widgets import interactive
    interactive(plots.flow_curves(summary))      # hover for values, click a curve to highlight its task

:func:`interactive` wraps a chart in :class:`OfflineChart`, an :class:`altair.JupyterChart`
whose Vega, Vega-Lite and vega-embed come from vl-convert (``alt.JupyterChart.enable_offline()``),
not from a CDN. Its display bundle also carries a PNG of the chart (rendered here by
vl-convert, :func:`widgets.snapshot.png_of`, as the widgets' snapshots are): JupyterLab shows the live
chart, GitHub and nbviewer show the picture.

The offline bundle is about 1 MB, so it is kept out of everything a notebook saves: the widget's
own ES module (its ``_esm``, ``offline_chart.js`` beside this file, saved with the widget state) is a 2 kB loader that asks the kernel
for the bundle once per page, over the widget's comm, and imports it from a ``blob:`` URL. A
notebook's outputs hold the widget's id, a plain-text line and the PNG (tens of kB); saved widget
state (``nbclient`` saves it) holds the chart spec and the loader. A reopened notebook, whose
kernel no longer has the widget, shows the PNG.

Outside a Jupyter kernel, or without anywidget/ipywidgets, :func:`interactive` returns the chart
itself (drawn by the active altair renderer, e.g. :func:`flowkit.views.plots.enable_offline_charts`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import altair as alt
import traitlets

from widgets.snapshot import png_of

try:  # anywidget and ipywidgets are dependencies, but a bare Python may lack them
    from anywidget.experimental import command as _command
except ImportError:  # pragma: no cover - the fallback below then shows static charts
    _command = None

#: vega-embed's menu without the entries that need a network ("Open in Vega Editor") or show JSON.
EMBED_OPTIONS = {"renderer": "svg", "actions": {"export": True, "source": False, "compiled": False, "editor": False}}

HERE = Path(__file__).parent

_bundle: str | None = None


def offline_bundle() -> str:
    """The ES module altair's JupyterChart runs offline: vega, vega-lite and vega-embed, bundled by
    vl-convert (``alt.JupyterChart.enable_offline()``, called once)."""
    global _bundle
    if _bundle is None:
        alt.JupyterChart.enable_offline()
        source = str(alt.JupyterChart._esm)
        if "esm.sh" in source or not getattr(alt.JupyterChart, "_is_offline", False):
            raise RuntimeError("altair's JupyterChart did not switch to its offline bundle")
        _bundle = source
    return _bundle


def _text_of(chart) -> str:
    """A stable plain-text stand-in (no memory address, so re-running a chapter does not change it)."""
    title = getattr(chart, "title", alt.Undefined)
    title = getattr(title, "text", title)
    return f"<interactive chart{': ' + str(title) if isinstance(title, str) else ''}>"


class OfflineChart(alt.JupyterChart):
    """An :class:`altair.JupyterChart` that needs no network and shows a PNG where widgets do not run.

    Use :func:`interactive`. ``chart.selections`` / ``chart.params`` report what was clicked, as in
    altair (e.g. ``chart.selections.highlight_task.value`` for :func:`flowkit.views.plots.highlight_on_click`).
    """

    _esm = HERE / "offline_chart.js"
    _bundle_id = traitlets.Unicode("").tag(sync=True)

    def __init__(self, chart: alt.TopLevelMixin, embed_options: dict | None = None, **kwargs: Any):
        bundle = offline_bundle()
        super().__init__(
            chart,
            embed_options=EMBED_OPTIONS if embed_options is None else embed_options,
            _bundle_id=hashlib.sha256(bundle.encode()).hexdigest()[:16],
            **kwargs,
        )
        self._picture = (None, "")  # (chart, its PNG): for the display bundle only, never synced or saved

    def png(self) -> str:
        """Base64 PNG of the chart shown now ('' when vl-convert cannot draw it)."""
        if self._picture[0] is not self.chart:
            self._picture = (self.chart, png_of(self.chart) or "")
        return self._picture[1]

    if _command is not None:

        @_command
        def vega_bundle(self, msg, buffers):  # noqa: ARG002 - the page asks for the bundle it runs
            return {"id": self._bundle_id}, [offline_bundle().encode()]

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return bundle
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        data = {**data, "text/plain": _text_of(self.chart)}
        if self.png():
            data["image/png"] = self.png()
        return (data, metadata) if isinstance(bundle, tuple) else data


def _in_widget_kernel() -> bool:
    """True inside a Jupyter kernel that can show anywidget/ipywidgets views."""
    if _command is None:
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def interactive(chart: alt.TopLevelMixin, live: bool | None = None) -> OfflineChart | alt.TopLevelMixin:
    """``chart`` as a live, offline :class:`OfflineChart` (hover, click) with a PNG beside it for saved notebooks.

    Args:
        live: force the widget (True) or the plain chart (False); default: the widget inside a
            Jupyter kernel with ipywidgets and anywidget, else ``chart`` itself.

    >>> interactive(plots.flow_curves(summary))  # the last line of a cell  # doctest: +SKIP
    """
    if not isinstance(chart, alt.TopLevelMixin):
        raise TypeError(f"interactive takes an altair chart, got {type(chart).__name__}")
    if live is None:
        live = _in_widget_kernel()
    if not live:
        return chart
    return OfflineChart(chart)


def show(chart: alt.TopLevelMixin) -> None:
    """Display :func:`interactive` ``(chart)`` (for use inside a cell, not as its last line)."""
    view = interactive(chart)
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover - plain Python: nothing to display on
        return
    display(view)


__all__ = ["EMBED_OPTIONS", "OfflineChart", "interactive", "offline_bundle", "show"]
