"""FlowCurves: % change vs layer-window centre, one curve per edge group, one task at a time."""

from __future__ import annotations

from pathlib import Path

import anywidget
import pandas as pd
import traitlets

from flowkit.views.view_models import flow_curve_series
from flowkit.views.plots import flow_curves
from flowkit.analysis.sweep import summarize
from widgets.snapshot import Snapshot

HERE = Path(__file__).parent


class FlowCurves(Snapshot, anywidget.AnyWidget):
    """The paper's knockout curves for one task; pick the task, click legend entries to hide edge groups.

    >>> df = flowkit.analysis.sweep.sweep(vllm, samples)               # doctest: +SKIP
    >>> FlowCurves(flowkit.analysis.sweep.summarize(df))               # doctest: +SKIP

    The shaded band is the first half of the layers; the dashed line is "no change".
    :meth:`chart` gives the same view as an altair chart (:func:`flowkit.views.plots.flow_curves`)
    for saving or printing.

    State: ``task`` and ``hidden`` (edge groups not drawn).

    Args:
        summary: :func:`flowkit.analysis.sweep.summarize` output; a raw :func:`flowkit.analysis.sweep.sweep`
            DataFrame (one row per sample) is summarised first (correct samples only).
        num_layers: the model's depth (default: one more than the largest window centre).
        task: the task shown first (default: the first in ``summary``).
    """

    _esm = HERE / "flow_curves.js"
    _css = HERE / "flow_curves.css"

    series = traitlets.Dict().tag(sync=True)  # sent once (flow_curve_series)
    task = traitlets.Unicode("").tag(sync=True)
    hidden = traitlets.List(traitlets.Unicode()).tag(sync=True)

    def __init__(self, summary: pd.DataFrame, num_layers: int | None = None, task: str | None = None, **kwargs):
        if "sample" in summary.columns and "correct_base" in summary.columns:
            summary = summarize(summary)
        self._summary = summary
        series = flow_curve_series(summary, num_layers)
        super().__init__(series=series, task=task if task is not None else series["tasks"][0], **kwargs)

    @traitlets.validate("task")
    def _valid_task(self, proposal):
        if proposal["value"] not in self.series["tasks"]:
            raise traitlets.TraitError(f"unknown task {proposal['value']!r}; tasks: {', '.join(self.series['tasks'])}")
        return proposal["value"]

    @traitlets.validate("hidden")
    def _valid_hidden(self, proposal):
        known = self.series["edge_groups"]
        unknown = [g for g in proposal["value"] if g not in known]
        if unknown:
            raise traitlets.TraitError(f"unknown edge groups {unknown}; edge groups: {', '.join(known)}")
        return proposal["value"]

    def snapshot_chart(self):
        """The picture kept in saved outputs: :meth:`chart`."""
        return self.chart()

    def chart(self):
        """The current view (task, visible edge groups) as an altair chart."""
        shown = self._summary[(self._summary["task"] == self.task) & ~self._summary["edge_group"].isin(self.hidden)]
        return flow_curves(shown, num_layers=self.series["num_layers"], columns=1, width=520, height=320)
