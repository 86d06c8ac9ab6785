"""PredictReveal: the student places a guess on empty axes, then reveals the curve beside it."""

from __future__ import annotations

from pathlib import Path

import anywidget
import traitlets

from flowkit.course.predictions import CurveQuestion
from flowkit.errors import FlowkitError
from flowkit.views.plots import prediction
from widgets.snapshot import Snapshot

HERE = Path(__file__).parent


class PredictReveal(Snapshot, anywidget.AnyWidget):
    """Predict, then reveal: click on the empty axes to place a guess, press **Reveal**.

    >>> question = CurveQuestion.deepest(curve, x="center", y="pct_change")   # doctest: +SKIP
    >>> PredictReveal(question)                                              # doctest: +SKIP

    The page gets only the axes until **Reveal** is pressed; then this object computes
    :meth:`~flowkit.course.predictions.CurveQuestion.reveal` (the curve, the point asked about and
    how far the guess was from it, in words) and the page draws it beside the guess. **Try again**
    hides it. :meth:`chart` is the same picture as an altair chart; a saved notebook shows it.

    State: ``guess`` (``{"x", "y"}``, empty until the student clicks) and ``revealed`` (bool);
    ``result`` is what :meth:`reveal` computed (empty while hidden); ``setup`` the axes (sent once).
    """

    _esm = HERE / "predict_reveal.js"
    _css = HERE / "predict_reveal.css"

    guess = traitlets.Dict().tag(sync=True)
    revealed = traitlets.Bool(False).tag(sync=True)
    result = traitlets.Dict().tag(sync=True)
    setup = traitlets.Dict().tag(sync=True)

    def __init__(self, question: CurveQuestion, **kwargs):
        if not isinstance(question, CurveQuestion):
            raise FlowkitError("PredictReveal needs a flowkit.course.predictions.CurveQuestion")
        self.question = question
        super().__init__(setup=question.setup(), **kwargs)

    @traitlets.validate("guess")
    def _valid_guess(self, proposal):
        guess = proposal["value"]
        if not guess:
            return {}
        if set(guess) != {"x", "y"}:
            raise traitlets.TraitError(f"a guess is {{'x': ..., 'y': ...}}, got {guess!r}")
        x = self.question.snap(float(guess["x"]))
        return {"x": x, "y": float(guess["y"])}

    @traitlets.observe("revealed", "guess")
    def _update(self, change):
        if self.revealed and self.guess:
            self.result = self.question.reveal(self.guess["x"], self.guess["y"])
        else:
            self.result = {}
            if self.revealed:  # nothing to reveal without a guess
                self.revealed = False

    def reveal(self, x: float | None, y: float) -> dict:
        """Place the guess ``(x, y)`` and reveal (what the page does on a click and **Reveal**)."""
        self.guess = {"x": x if x is not None else self.question.at, "y": y}
        self.revealed = True
        return self.result

    def snapshot_chart(self):
        return self.chart()

    def chart(self):
        """The current picture: the axes, the guess, and the curve once revealed."""
        return prediction(self.setup, guess=self.guess or None, result=self.result or None)
