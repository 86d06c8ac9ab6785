"""Sweeps: many edge families x layer windows x samples, as one tidy DataFrame."""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import pandas as pd
from tqdm.auto import tqdm

from flowkit.cache import ResultCache
from flowkit.knockout import PAPER_EDGE_FAMILIES, KnockoutSpec, LayerWindow
from flowkit.readout import percent_change

COLUMNS = ["sample", "task", "family", "center", "layers", "spec", "answer", "predicted_base", "p_base",
           "p_new", "pct_change", "predicted_after", "correct_base", "correct_after"]


def window_specs(families: Sequence[str], centers: Iterable[int], size: int = 9) -> list[tuple[str, int, KnockoutSpec]]:
    """``(family, centre, spec)`` for every family and window centre."""
    return [(family, center, KnockoutSpec.single(family, LayerWindow(center, size)))
            for family in families for center in centers]


def sweep(vllm, samples, families: Sequence[str] = PAPER_EDGE_FAMILIES, centers: Iterable[int] | None = None,
          size: int = 9, cache: ResultCache | str | os.PathLike | None = None, progress: bool = True,
          use_engine: bool = True) -> pd.DataFrame:
    """Knock out each edge family in each layer window on each sample.

    Returns one row per (sample, family, window centre) with the probability of the
    baseline's predicted option before (``p_base``) and after (``p_new``), the paper's
    ``pct_change``, and whether the answer is correct before and after. Average
    ``pct_change`` over rows with ``correct_base`` to follow the paper.

    Args:
        vllm: a :class:`flowkit.VideoLLM`.
        samples: :class:`flowkit.data.Sample` objects (they must know their answer).
        families: edge groups to cut (default: the paper's five).
        centers: window centres (default: every layer).
        size: window size (the paper uses 9).
        cache: a folder or :class:`ResultCache`; results found there are not recomputed.
        use_engine: evaluate with :class:`flowkit.engine.Engine` (exact, faster) instead
            of one full forward per spec.
    """
    from flowkit.engine import Engine

    samples = list(samples)
    centers = list(range(vllm.num_layers) if centers is None else centers)
    specs = window_specs(families, centers, size)
    for _, _, spec in specs:
        spec.layers_touched(vllm.num_layers)  # fail fast on a bad window
    if cache is not None and not isinstance(cache, ResultCache):
        cache = ResultCache(cache)
    rows = []
    bar = tqdm(total=len(samples) * len(specs), desc="knockout sweep", unit="spec", disable=not progress)
    for sample in samples:
        prepared = vllm.prepare_sample(sample)
        jsons = [spec.to_json() for _, _, spec in specs]
        found = {j: cache.get(vllm.fingerprint, sample.id, j) for j in jsons + [KnockoutSpec().to_json()]} if cache else {}
        missing = [i for i, j in enumerate(jsons) if found.get(j) is None]
        clean_json = KnockoutSpec().to_json()
        fresh: dict[str, dict] = {}
        if missing or found.get(clean_json) is None:
            if use_engine:
                engine = Engine(vllm, prepared)
                clean = engine.clean_answer
                computed = engine.answers([specs[i][2] for i in missing])
            else:
                clean = vllm.answer(prepared)
                computed = [vllm.answer(prepared, specs[i][2]) for i in missing]
            fresh[clean_json] = clean.to_dict()
            for i, dist in zip(missing, computed):
                fresh[jsons[i]] = dist.to_dict()
            if cache:
                cache.put_many(vllm.fingerprint, sample.id, fresh)
        results = {**{k: v for k, v in found.items() if v is not None}, **fresh}
        clean = results[clean_json]
        base_pred = clean["predicted"]
        true = prepared.spans.true_option
        for (family, center, spec), j in zip(specs, jsons):
            new = results[j]
            p_base, p_new = clean["probs"][base_pred], new["probs"][base_pred]
            rows.append({
                "sample": sample.id, "task": sample.task, "family": family, "center": center,
                "layers": f"{min(spec.layers_touched(vllm.num_layers))}-{max(spec.layers_touched(vllm.num_layers))}",
                "spec": j, "answer": sample.answer, "predicted_base": "ABCDEFGH"[base_pred],
                "p_base": p_base, "p_new": p_new, "pct_change": percent_change(p_base, p_new),
                "predicted_after": "ABCDEFGH"[new["predicted"]],
                "correct_base": base_pred == true, "correct_after": new["predicted"] == true,
            })
        bar.update(len(specs))
    bar.close()
    return pd.DataFrame(rows, columns=COLUMNS)


def summarize(df: pd.DataFrame, only_correct: bool = True) -> pd.DataFrame:
    """Mean % change per (task, family, centre), over correctly answered samples by default.

    Columns: ``pct_change`` (mean over the rows averaged), ``n`` (those rows), and, over
    *every* question of the group: ``questions``, ``accuracy_before`` and ``accuracy_after``
    (the paper's accuracy after knockout: questions answered correctly after the knockout
    / all questions, as ``acc`` in its ``analysis/information_flow_analysis.py``), and
    ``still_correct_share`` (flowkit's former ``accuracy_after``: the share of the correctly
    answered questions that stay correct; NaN where none was correct).
    """
    keys = ["task", "family", "center"]
    averaged = df[df["correct_base"]] if only_correct else df
    out = averaged.groupby(keys, as_index=False).agg(pct_change=("pct_change", "mean"), n=("pct_change", "size"))
    accuracy = df.groupby(keys, as_index=False).agg(questions=("correct_after", "size"),
                                                    accuracy_before=("correct_base", "mean"),
                                                    accuracy_after=("correct_after", "mean"))
    still = (df[df["correct_base"]].groupby(keys, as_index=False)
             .agg(still_correct_share=("correct_after", "mean")))
    out = out.merge(accuracy, on=keys, how="left").merge(still, on=keys, how="left")
    for column in ("accuracy_before", "accuracy_after"):
        out[column] = out[column].astype(float)
    return out


__all__ = ["COLUMNS", "summarize", "sweep", "window_specs"]
