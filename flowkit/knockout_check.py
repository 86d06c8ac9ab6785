"""One-cell hypothesis checks: ``flowkit.check(vllm, clip, cut="question->last", layers="12-20")``.

The Python twin of ``python -m flowkit check``: ask one question, cut one or more edge
groups in some layers, and see how the answer moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import pandas as pd

from flowkit.errors import FlowkitError
from flowkit.formatting import format_pct_change, format_table
from flowkit.intervention.spec import Cut, KnockoutSpec, LayerWindow, parse_layers
from flowkit.prompts.readout import AnswerDistribution, percent_change


@dataclass(frozen=True)
class CheckResult:
    """The answer before and after one knockout.

    ``identical_frames``: every frame of the prompt's clip is the same picture (e.g. a 1-frame
    clip sampled to 8 frames); then :attr:`note` says what that means for a ``cross_frame`` cut.
    """

    spec: KnockoutSpec
    before: AnswerDistribution
    after: AnswerDistribution
    options: tuple[str, ...]
    identical_frames: bool = False

    @property
    def table(self) -> pd.DataFrame:
        """One row per option: p before/after (whole vocabulary) and the paper's % change."""
        rows = []
        for i, (letter, option) in enumerate(zip(self.before.letters, self.options)):
            p0, p1 = self.before.probs[i], self.after.probs[i]
            rows.append(
                {
                    "option": f"({letter}) {option}",
                    "correct": i == self.before.true_option,
                    "p_before": p0,
                    "p_after": p1,
                    "pct_change": percent_change(p0, p1) if p0 > 0 else float("nan"),
                }
            )
        return pd.DataFrame(rows).set_index("option")

    @property
    def pct_change(self) -> float:
        """% change of p(the clean run's predicted option), as the paper reports it."""
        i = self.before.predicted
        return percent_change(self.before.probs[i], self.after.probs[i])

    @property
    def note(self) -> str:
        """A caveat to print with the result, or ``""``: a ``cross_frame`` cut on a clip whose frames
        are all identical runs, but only stops frames reading copies of themselves."""
        if self.identical_frames and any(c.edges == "cross_frame" for c in self.spec.cuts):
            return (
                "note: every frame of this clip is the same picture, so the cross_frame cut only stops "
                "frames reading copies of themselves; its effect says little about how the model uses time"
            )
        return ""

    def chart(self, scale: str = "options"):
        """Bars of p(option) before and after (see :func:`flowkit.views.plots.answer_bars`)."""
        from flowkit.views.plots import answer_bars

        return answer_bars(self.before, self.after, scale=scale, options=list(self.options))

    def __str__(self) -> str:
        return (
            f"knockout: {self.spec}\n{self.table_text()}\n"
            f"predicted {self.before.predicted_letter} before, {self.after.predicted_letter} after; "
            f"p({self.before.predicted_letter}) {format_pct_change(self.pct_change)}"
            + (f"\n{self.note}" if self.note else "")
        )

    def table_text(self) -> str:
        """:attr:`table` as printed: probabilities with 3 decimals, % changes with 1 (the same on every CPU)."""
        shown = format_table(self.table, probs=("p_before", "p_after"), pct_changes=("pct_change",))
        return shown.to_string()


def check_spec(
    cut: str | Sequence[str], layers: str | None = None, window: int | None = None, size: int = 9
) -> KnockoutSpec:
    """The spec :func:`check` runs: ``cut`` (one edge group or several) in ``layers`` or in the
    ``size``-layer window centred on ``window`` (exactly one of the two), or a clear error."""
    cuts = [cut] if isinstance(cut, str) else list(cut or ())
    if not cuts:
        raise FlowkitError("say what to cut, e.g. cut='video->question' or cut=['cross_frame', 'video->last'].")
    if (layers is None) == (window is None):
        raise FlowkitError("say where to cut with exactly one of layers='12-20' or window=CENTRE.")
    where = parse_layers(layers) if layers is not None else LayerWindow(window, size)
    return KnockoutSpec(tuple(Cut(edges, where) for edges in cuts))


def check(
    vllm,
    prompt,
    cut: str | Sequence[str] | None = None,
    layers: str | None = None,
    window: int | None = None,
    size: int = 9,
    options: Sequence[str] | None = None,
    spec: KnockoutSpec | None = None,
) -> CheckResult:
    """Cut ``cut`` (one edge group or several) in ``layers`` (e.g. ``"12-20"``) or in the paper's
    ``size``-layer window centred on ``window``, and return the answer before and after.

    ``prompt`` is a question set :class:`~flowkit.data.Sample` or a prepared prompt
    (``vllm.prepare(frames, question, options)``; then pass ``options`` to label them).
    Both answers come from the prompt's :class:`~flowkit.intervention.session.Session` (one clean run, one replay).
    ``spec``: a whole :class:`KnockoutSpec` instead of ``cut`` and ``layers``/``window`` (e.g. the mask
    :func:`flowkit.analysis.pathway_search.search_pathways` found, read with ``KnockoutSpec.from_json``).
    """
    if spec is not None:
        if cut is not None or layers is not None or window is not None:
            raise FlowkitError("give either spec= or cut= with layers=/window=, not both.")
    else:
        spec = check_spec(cut, layers, window, size)
    spec.layers_touched(vllm.num_layers)  # a clear error for layers past the model's depth
    if options is None:
        options = getattr(prompt, "candidates", None)  # a sample brings its option texts
    prompt = vllm.prepare_prompt(prompt)
    if options is None:
        options = tuple(f"option {letter}" for letter in prompt.spans.letters)
    before, after = vllm.session(prompt).answers([None, spec])
    return CheckResult(
        spec=spec, before=before, after=after, options=tuple(options), identical_frames=prompt.identical_frames
    )


__all__ = ["CheckResult", "check", "check_spec"]
