"""flowkit's Jupyter widgets (anywidget): thin views over :mod:`flowkit.views.view_models`.

- :class:`KnockoutGrid` — layers x edge groups; click to cut, watch the answer move.
- :class:`LensView` — per frame, the words its video tokens decode to after a layer.
- :class:`FlowCurves` — the paper's % change vs window-centre curves, one task at a time.
- :class:`PathwaySliders` — move the effective-pathway windows, measure edges kept and accuracy
  (ipywidgets sliders; the computation is :func:`flowkit.analysis.experiments.pathway_summary`).
- :class:`PredictReveal` — place a guess on empty axes, then reveal the curve and how far off it was
  (the computation is :class:`flowkit.course.predictions.CurveQuestion`).
- :func:`interactive` / :class:`OfflineChart` — an altair chart you can hover and click, offline,
  with a PNG for saved notebooks.

Each widget syncs only the state that changes (a knockout grid's is its spec JSON), so it
can be saved and restored; what never changes travels once, in one ``setup`` dict. The
views are plain ES modules next to this file (``_esm`` / ``_css`` are file paths, so
anywidget reloads them on save with ``ANYWIDGET_HMR=1``): no bundler, no network.
"""

from widgets.flow_curves import FlowCurves
from widgets.knockout_grid import KnockoutGrid
from widgets.lens_view import LensView
from widgets.offline_chart import OfflineChart, interactive, show
from widgets.pathway_sliders import PathwaySliders
from widgets.predict_reveal import PredictReveal

__all__ = [
    "FlowCurves",
    "KnockoutGrid",
    "LensView",
    "OfflineChart",
    "PathwaySliders",
    "PredictReveal",
    "interactive",
    "show",
]
