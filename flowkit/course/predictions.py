"""Predict, then reveal: what the student guesses about a curve before seeing it, and how far off it was.

A chapter asks for a prediction about a curve it is about to show -- where a knockout sweep is
deepest and how deep, or what value a curve takes at one point -- and only then reveals the data
beside the guess. The widget (:class:`widgets.PredictReveal`) is a thin view; everything it
shows is computed here and tested in pytest:

>>> question = CurveQuestion.deepest(curve, x="center", y="pct_change", x_title="window centre (layer)")
>>> question.setup()                       # the axes, sent to the page before any data   # doctest: +SKIP
>>> question.reveal(guess_x=8, guess_y=-20)   # the curve, the truth and the verdict      # doctest: +SKIP

A curve is a DataFrame with one row per point: the ``x`` and ``y`` columns, and optionally ``lo``
and ``hi`` (a 95 % interval, drawn as a band and used in the verdict).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from flowkit.analysis.stats import tied_with_minimum
from flowkit.errors import FlowkitError

KINDS = ("deepest", "value_at")


def _finite(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FlowkitError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise FlowkitError(f"{name} must be a finite number, got {value!r}")
    return number


def _padded(lo: float, hi: float, share: float = 0.08) -> list[float]:
    pad = (hi - lo) * share or 1.0
    return [lo - pad, hi + pad]


@dataclass(frozen=True)
class CurveQuestion:
    """One prediction about one curve.

    ``kind``: ``"deepest"`` (guess where the curve is lowest: an x among the curve's points and a y)
    or ``"value_at"`` (guess the y of the point at ``at``). ``unit`` is appended to y values in the
    verdict (``" %"`` or ``" points"`` ...), ``x_unit`` to x distances (``" layers"``); ``y_scale`` multiplies the stored y for display (100
    for a share shown in percent).
    """

    curve: pd.DataFrame
    kind: str
    x: str
    y: str
    x_title: str
    y_title: str
    prompt: str
    at: float | None = None
    unit: str = " %"
    x_unit: str = ""
    y_scale: float = 1.0
    y_domain: tuple[float, float] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise FlowkitError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        missing = [c for c in (self.x, self.y) if c not in self.curve.columns]
        if missing:
            raise FlowkitError(
                f"the curve has no column {missing[0]!r}; its columns are {', '.join(map(str, self.curve.columns))}"
            )
        points = self.curve.dropna(subset=[self.x, self.y])
        if points.empty:
            raise FlowkitError("the curve has no points to predict: pass a table with at least one row")
        if self.kind == "value_at":
            if self.at is None:
                raise FlowkitError("a 'value_at' question needs at=: the x whose y the student predicts")
            if not (points[self.x] - self.at).abs().lt(1e-9).any():
                raise FlowkitError(
                    f"the curve has no point at {self.x} = {self.at}; its points are at "
                    f"{', '.join(f'{v:g}' for v in sorted(points[self.x]))}"
                )

    # ----------------------------------------------------------------- constructors
    @classmethod
    def deepest(cls, curve: pd.DataFrame, x: str = "center", y: str = "pct_change", **kwargs) -> CurveQuestion:
        """Where is the curve lowest, and how low? (a knockout sweep's trough)"""
        kwargs.setdefault("x_title", "window centre (layer)")
        kwargs.setdefault("x_unit", " layers")
        kwargs.setdefault("y_title", "% change in p(answer)")
        kwargs.setdefault("prompt", "Click where you expect the curve to be lowest, then reveal.")
        return cls(curve.reset_index(drop=True), "deepest", x, y, **kwargs)

    @classmethod
    def value_at(cls, curve: pd.DataFrame, at: float, x: str, y: str, **kwargs) -> CurveQuestion:
        """What is the curve's value at ``at``?"""
        kwargs.setdefault("prompt", "Click the height you expect at the marked line, then reveal.")
        return cls(curve.reset_index(drop=True), "value_at", x, y, at=float(at), **kwargs)

    # ----------------------------------------------------------------- what the page gets
    def _points(self) -> pd.DataFrame:
        points = self.curve.dropna(subset=[self.x, self.y]).sort_values(self.x)
        out = pd.DataFrame({"x": points[self.x].astype(float), "y": points[self.y].astype(float) * self.y_scale})
        for bound in ("lo", "hi"):
            if bound in points.columns:
                out[bound] = points[bound].astype(float) * self.y_scale
        return out.reset_index(drop=True)

    def setup(self) -> dict:
        """What the page needs before any data: axes, titles, the guessable x values. No y value, and for a
        "deepest" question a y range that does not hint at the depth (-105 to at least +15)."""
        points = self._points()
        ys = pd.concat([points[c] for c in ("y", "lo", "hi") if c in points.columns])
        if self.y_domain is not None:
            y_domain = list(self.y_domain)
        elif self.kind == "deepest":  # never hint at the depth asked for: % change reaches down to -100 at most
            y_domain = [-105.0, max(15.0, float(ys.max()) + 5.0)]
        else:
            y_domain = _padded(min(0.0, ys.min()), max(0.0, ys.max()))
        return {
            "kind": self.kind,
            "prompt": self.prompt,
            "x_title": self.x_title,
            "y_title": self.y_title,
            "x_domain": _padded(float(points["x"].min()), float(points["x"].max()), 0.03),
            "y_domain": [float(v) for v in y_domain],
            "x_values": [float(v) for v in points["x"]],
            "at": self.at,
            "unit": self.unit,
        }

    def truth(self) -> dict:
        """The point the question asks about: ``x``, ``y`` and its ``lo`` / ``hi`` (None without an interval)."""
        points = self._points()
        if self.kind == "deepest":
            row = points.loc[points["y"].idxmin()]  # the first of equal minima: the curve's order
        else:
            row = points.loc[(points["x"] - self.at).abs().idxmin()]
        return {
            "x": float(row["x"]),
            "y": float(row["y"]),
            "lo": float(row["lo"]) if "lo" in row and pd.notna(row["lo"]) else None,
            "hi": float(row["hi"]) if "hi" in row and pd.notna(row["hi"]) else None,
        }

    def snap(self, guess_x: float) -> float:
        """The guessable x nearest to ``guess_x`` (a ``value_at`` question: always ``at``)."""
        if self.kind == "value_at":
            return float(self.at)
        xs = self._points()["x"]
        return float(xs.loc[(xs - guess_x).abs().idxmin()])

    def reveal(self, guess_x: float | None, guess_y: float) -> dict:
        """The curve, the truth, the guess (x snapped to the curve's points) and a verdict in words."""
        guess_y = _finite(guess_y, "guess_y")
        guess_x = self.snap(_finite(guess_x, "guess_x") if self.kind == "deepest" else float(self.at))
        truth = self.truth()
        dy = guess_y - truth["y"]
        inside = truth["lo"] is not None and truth["lo"] <= guess_y <= truth["hi"]
        interval = f" (95 % interval {truth['lo']:.1f} to {truth['hi']:.1f})" if truth["lo"] is not None else ""
        height = (
            "inside the interval: as close as these questions can tell"
            if inside
            else f"{abs(dy):.1f}{self.unit} {'too high' if dy > 0 else 'too low'}"
            if abs(dy) >= 0.05
            else "spot on"
        )
        if self.kind == "deepest":
            dx = guess_x - truth["x"]
            unit = self.x_unit[:-1] if abs(dx) == 1 and self.x_unit.endswith("s") else self.x_unit
            where = "the same place" if dx == 0 else f"{abs(dx):g}{unit} {'later' if dx > 0 else 'earlier'}"
            ties = self._near_minimum()
            verdict = (
                f"Lowest at {truth['x']:g}: {truth['y']:.1f}{self.unit}{interval}. Your guess {guess_x:g}, "
                f"{guess_y:.1f}{self.unit}: {where}; height {height}."
            )
            if len(ties) > 1:
                verdict += (
                    f" Points whose interval reaches the lowest mean: {', '.join(f'{t:g}' for t in ties)} "
                    "(a tie: the exact place of the lowest point is not a finding)."
                )
        else:
            dx = 0.0
            verdict = (
                f"At {self.at:g}: {truth['y']:.1f}{self.unit}{interval}. Your guess {guess_y:.1f}{self.unit}: {height}."
            )
        return {
            "points": self._points().to_dict("records"),
            "truth": truth,
            "guess": {"x": guess_x, "y": guess_y},
            "dx": dx,
            "dy": dy,
            "inside_interval": bool(inside),
            "verdict": verdict,
        }

    def _near_minimum(self) -> list[float]:
        """The x values tied with the lowest point (:func:`flowkit.analysis.stats.tied_with_minimum`)."""
        points = self._points()
        values = dict(zip(points["x"], points["y"]))
        intervals = dict(zip(points["x"], zip(points["lo"], points["hi"]))) if "lo" in points.columns else None
        return [float(x) for x in tied_with_minimum(values, intervals)]


__all__ = ["KINDS", "CurveQuestion"]
