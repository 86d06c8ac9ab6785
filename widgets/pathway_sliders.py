"""PathwaySliders: move the effective-pathway windows, then measure edges kept and accuracy.

A thin ipywidgets view over :func:`flowkit.analysis.experiments.pathway_summary`: sliders hold a
:class:`~flowkit.analysis.pathways.PathwayWindows`, "Measure" runs it on the given questions (a
few seconds per question on a CPU) and shows the exact fraction of edges kept and the
accuracy with all edges, with only the pathways, and with a random mask of the same size.
"""

from __future__ import annotations

import ipywidgets as w

from flowkit.errors import FlowkitError
from flowkit.analysis.pathways import PathwayWindows
from widgets.snapshot import Snapshot

_RANGES = (
    ("cross_frame", "cross-frame kept in"),
    ("video_to_question", "video → question kept in"),
    ("question_to_last", "question → last kept in"),
)
_UNTIL = (
    ("video_to_video_until", "video ↔ video kept up to"),
    ("question_to_question_until", "question ↔ question kept up to"),
)


class PathwaySliders(Snapshot, w.VBox):
    """Sliders for the pathway windows (0-indexed layers), a Measure button and the result.

    >>> sliders = PathwaySliders(vllm, samples, windows)    # doctest: +SKIP
    >>> sliders.windows                                      # the current PathwayWindows
    >>> sliders.measure()                                    # what the button does

    ``sliders.result`` holds the last :func:`~flowkit.analysis.experiments.pathway_summary`.
    """

    def __init__(self, vllm, samples, windows: PathwayWindows, random_seeds=(0, 1, 2)):
        self._vllm, self._samples, self._seeds = vllm, list(samples), tuple(random_seeds)
        if not self._samples:
            raise FlowkitError("PathwaySliders needs at least one question to measure accuracy on.")
        top = vllm.num_layers - 1
        style, layout = {"description_width": "230px"}, w.Layout(width="620px")
        self.sliders = {
            name: w.IntRangeSlider(
                value=getattr(windows, name), min=0, max=top, description=label, style=style, layout=layout
            )
            for name, label in _RANGES
        }
        self.sliders.update(
            {
                name: w.IntSlider(
                    value=getattr(windows, name), min=0, max=top, description=label, style=style, layout=layout
                )
                for name, label in _UNTIL
            }
        )
        self.button = w.Button(description="Measure", button_style="primary", icon="play")
        self.status = w.HTML()
        self.output = w.Output()
        self.result: dict | None = None
        self.button.on_click(lambda _button: self.measure())
        super().__init__([*self.sliders.values(), w.HBox([self.button, self.status]), self.output])

    def snapshot_chart(self):
        """The windows the sliders hold, as bars over the layers (saved outputs)."""
        from flowkit.views.plots import pathway_windows

        return pathway_windows(
            self.windows.to_dict(),
            self._vllm.num_layers,
            "PathwaySliders: windows kept (a static picture: run the notebook to move them)",
        )

    @property
    def windows(self) -> PathwayWindows:
        """The windows the sliders show now."""
        return PathwayWindows(
            **{name: tuple(s.value) if isinstance(s.value, tuple) else s.value for name, s in self.sliders.items()}
        )

    def measure(self) -> dict:
        """Run :func:`~flowkit.analysis.experiments.pathway_summary` for the current windows and show it."""
        import pandas as pd
        from IPython.display import display

        from flowkit.analysis.experiments import pathway_summary
        from flowkit.views.plots import accuracy_bars

        self.button.disabled = True
        self.status.value = f"measuring on {len(self._samples)} questions ..."
        try:
            self.result = pathway_summary(self._vllm, self._samples, self.windows, random_seeds=self._seeds)
        except FlowkitError as exc:
            self.status.value = f"<b style='color:#D55E00'>{exc}</b>"
            raise
        finally:
            self.button.disabled = False
        acc = self.result["accuracy"]
        self.status.value = (
            f"<b>{100 * self.result['kept_fraction']:.1f} %</b> of attention edges kept "
            f"(mean over {self.result['questions']} questions); random masks: "
            f"{len(self._seeds)} seeds"
        )
        self.output.clear_output(wait=True)
        with self.output:
            ci = self.result["accuracy_ci"]
            display(
                accuracy_bars(
                    pd.DataFrame(
                        {
                            "condition": list(acc),
                            "accuracy": list(acc.values()),
                            "lo": [ci[c][0] for c in acc],
                            "hi": [ci[c][1] for c in acc],
                        }
                    )
                )
            )
        return self.result
