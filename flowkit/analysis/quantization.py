"""Does 4-bit quantization move the flow? The same sweep under NF4 and bf16, question by question.

>>> table = quantization_sweeps({"nf4": vllm, "bf16": reference}, samples)   # doctest: +SKIP
>>> quantization_agreement(table)                                           # doctest: +SKIP

:func:`quantization_sweeps` runs the cross-frame sweep (windows every ``step`` layers) on the same
questions under each weight format; :func:`quantization_agreement` compares them *per question*
(paired), each measure with a 95 % bootstrap interval over questions:

- ``trough_agree``: the share of questions whose two deepest windows lie within one step, or whose
  two curves are both flat (no window below ``flat`` %: then no trough is read at all);
- ``mean_abs_gap``: the mean over windows of |% change NF4 - % change bf16|, in points;
- ``p_answer_gap``: p(answer) of the clean run, NF4 minus bf16 (the 4-bit model's confidence);
- ``bf16_correct``: the share of the (NF4-correct) questions bf16 also answers correctly.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from flowkit.analysis.stats import mean_with_interval
from flowkit.analysis.sweep import sweep
from flowkit.errors import FlowkitError

#: a curve whose every window changes p(answer) by less than this (in %) has no trough to compare
FLAT = 5.0


def quantization_sweeps(models: Mapping[str, object], samples, step: int = 3, progress: bool = True) -> pd.DataFrame:
    """The cross-frame sweep (9-layer windows centred every ``step`` layers) of ``samples`` under every
    model of ``models`` (weight format -> :class:`flowkit.VideoLLM`), one table with a ``quant`` column."""
    if len(models) < 2:
        raise FlowkitError("compare at least two weight formats, e.g. {'nf4': vllm, 'bf16': reference}")
    depths = {m.num_layers for m in models.values()}
    if len(depths) != 1:
        raise FlowkitError(f"the models differ in depth ({sorted(depths)}): compare one model in two formats")
    centers = range(0, depths.pop(), step)
    parts = [
        sweep(model, samples, edge_groups=["cross_frame"], centers=centers, progress=progress).assign(quant=quant)
        for quant, model in models.items()
    ]
    return pd.concat(parts, ignore_index=True)


def quantization_agreement(table: pd.DataFrame, a: str = "nf4", b: str = "bf16", flat: float = FLAT) -> dict:
    """How far format ``b``'s sweep is from format ``a``'s, per question (see the module docstring).

    Only questions that ``a`` answers correctly (the paper's rule) are compared."""
    missing = [q for q in (a, b) if q not in set(table["quant"])]
    if missing:
        raise FlowkitError(f"the table has no rows for {missing}; its formats are {sorted(set(table['quant']))}")
    base = table[(table["quant"] == a) & table["correct_base"]]
    if base.empty:
        raise FlowkitError(f"no question is answered correctly under {a}: nothing to compare")
    curves = table.pivot_table(index=["sample", "center"], columns="quant", values="pct_change")
    curves = curves.loc[sorted(set(base["sample"]))]
    step = int(np.diff(sorted(set(table["center"])))[0]) if table["center"].nunique() > 1 else 1
    agree, gaps = [], []
    for _sample, curve in curves.groupby(level="sample"):
        curve = curve.droplevel("sample")
        deepest = [int(curve[q].idxmin()) for q in (a, b)]
        both_flat = all(curve[q].min() > -flat for q in (a, b))
        agree.append(float(both_flat or abs(deepest[0] - deepest[1]) <= step))
        gaps.append(float((curve[a] - curve[b]).abs().mean()))
    clean = table.drop_duplicates(["sample", "quant"]).pivot(index="sample", columns="quant", values="p_base")
    clean = clean.loc[sorted(set(base["sample"]))]
    correct = table.drop_duplicates(["sample", "quant"]).pivot(index="sample", columns="quant", values="correct_base")
    correct = correct.loc[sorted(set(base["sample"]))]
    return {
        "formats": [a, b],
        "step": step,
        "flat": flat,
        "trough_agree": mean_with_interval(agree),
        "mean_abs_gap": mean_with_interval(gaps),
        "p_answer_gap": mean_with_interval(clean[a] - clean[b]),
        "p_answer": {q: mean_with_interval(clean[q]) for q in (a, b)},
        "bf16_correct": mean_with_interval(correct[b].astype(float)),
    }


def format_agreement(summary: dict) -> str:
    """The agreement in a few lines, each number with its 95 % interval."""
    a, b = summary["formats"]

    def show(entry, scale=1.0, unit="", signed=False, decimals=1):
        f = f"{'+' if signed else ''}.{decimals}f"
        return f"{scale * entry['mean']:{f}}{unit} [{scale * entry['ci'][0]:{f}}, {scale * entry['ci'][1]:{f}}]"

    n = summary["trough_agree"]["questions"]
    return "\n".join(
        [
            f"{n} questions answered correctly under {a}; cross-frame sweep, a window every {summary['step']} layers:",
            f"  deepest windows within one step (or both curves flat): {show(summary['trough_agree'], 100, ' %')}",
            f"  mean |{a} - {b}| over the windows: {show(summary['mean_abs_gap'], 1, ' points')}",
            f"  clean p(answer): {a} {show(summary['p_answer'][a], decimals=2)}, {b} "
            f"{show(summary['p_answer'][b], decimals=2)}; {a} - {b} {show(summary['p_answer_gap'], signed=True, decimals=3)}",
            f"  answered correctly under {b} too: {show(summary['bf16_correct'], 100, ' %')}",
        ]
    )


__all__ = ["FLAT", "format_agreement", "quantization_agreement", "quantization_sweeps"]
