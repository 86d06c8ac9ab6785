"""Precomputed results: read them, and prove a sample of them is what the kit computes now.

``python -m flowkit fidelity`` writes ``data/results/fidelity.json`` and, beside it, one
tidy table per experiment (``sweeps.csv.gz``, ``emergence.csv.gz``, ... see
:data:`flowkit.course.fidelity.TABLES`). Full sweeps take minutes; a chapter reads these tables
instead, then calls :func:`verify` to recompute a few rows live with the same model and
check that they match — so a precomputed number is never taken on trust.

>>> report = load_report()                                   # doctest: +SKIP
>>> sweeps = load_table("sweeps")                            # doctest: +SKIP
>>> verify(vllm, "sweeps", n=2)                              # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from flowkit.locations import data_path
from flowkit.errors import FlowkitError

REGENERATE = "python -m flowkit fidelity"

#: Which numeric columns each table's recomputation must reproduce, keyed by its row identity.
_CHECKED = {
    "sweeps": (["sample", "edge_group", "center"], ["p_base", "p_new", "pct_change"]),
    "control_cross_frame": (["sample", "edge_group", "center"], ["p_base", "p_new", "pct_change"]),
    "accuracy": (["sample"], ["p_answer"]),
    "control_accuracy": (["sample"], ["p_answer"]),
    "emergence": (["readout", "sample", "layer"], ["p_true", "p_false_max"]),
    "lens": (["bag", "sample", "kind", "layer"], ["temporal_share"]),
    "pathways": (["sample", "condition", "seed"], ["p_answer"]),
    "pathway_search": (["sample", "condition", "seed"], ["p_answer"]),
    "pathway_search_test": (["sample", "condition", "seed"], ["p_answer"]),
    "quantization": (["sample", "quant", "center"], ["p_base", "p_new", "pct_change"]),
}
#: the command that writes each table, where it is not the fidelity run
_WRITTEN_BY = {
    "pathway_search": "python -m flowkit pathway-study",
    "pathway_search_test": "python -m flowkit pathway-study",
    "quantization": "python -m flowkit fidelity --quantization-only",
}
#: the pathway study's tables (held out, fresh test): both belong to the stored study's model
_STUDY_TABLES = ("pathway_search", "pathway_search_test")
#: the pathway study's report (flowkit.course.pathway_study), beside its table
STUDY_JSON = "pathway_search.json"


def regenerate_command(name: str) -> str:
    """The command that regenerates table ``name``."""
    return _WRITTEN_BY.get(name, REGENERATE)


def _folder(folder: str | os.PathLike | None) -> Path:
    return Path(folder) if folder is not None else data_path("results")


def load_report(folder: str | os.PathLike | None = None) -> dict:
    """The fidelity report (``fidelity.json``) as a dict."""
    path = _folder(folder) / "fidelity.json"
    if not path.is_file():
        raise FlowkitError(
            f"no precomputed results at {path.name} in {path.parent.name}/; "
            f"produce them with `{REGENERATE}` (about half an hour on 2 CPU cores)."
        )
    return json.loads(path.read_text())


def load_study(folder: str | os.PathLike | None = None) -> dict:
    """The stored pathway study (``pathway_search.json``, :mod:`flowkit.course.pathway_study`) as a dict."""
    path = _folder(folder) / STUDY_JSON
    if not path.is_file():
        raise FlowkitError(
            f"no stored pathway study ({path.name}); produce it with `{regenerate_command('pathway_search')}`."
        )
    return json.loads(path.read_text())


def load_table(name: str, folder: str | os.PathLike | None = None) -> pd.DataFrame:
    """One precomputed table (``"sweeps"``, ``"emergence"``, ...) as a DataFrame."""
    if name not in _CHECKED:
        raise FlowkitError(f"unknown results table {name!r}; the tables are {', '.join(sorted(_CHECKED))}.")
    path = _folder(folder) / f"{name}.csv.gz"
    if not path.is_file():
        raise FlowkitError(f"no precomputed table {path.name}; produce it with `{regenerate_command(name)}`.")
    table = pd.read_csv(path)
    if "seed" in table:
        table["seed"] = table["seed"].astype("Int64")
    return table


def _model_for(name: str) -> str:
    return "control" if name.startswith("control") else "model"


class StoredResultsMismatch(FlowkitError):
    """A precomputed table does not belong to, or does not match, the loaded model."""


def check_model(vllm, name: str = "sweeps", report: dict | None = None) -> None:
    """Refuse to compare a table with a model other than the one that produced it."""
    report = report if report is not None else load_report()
    control = _model_for(name) == "control"
    expected = report.get("control_fingerprint" if control else "fingerprint")
    model = report.get("control" if control else "model")
    if expected != vllm.fingerprint:
        stored_path = report.get("numeric_path")
        if report.get("quant") != vllm.quant:
            why = f"it is quantized as {vllm.quant}, the table's model as {report.get('quant')}"
        elif stored_path is not None and stored_path != vllm.numeric_path:
            why = f"it computes on another numeric path ({vllm.numeric_path}; the table's: {stored_path})"
        else:
            why = "it is a different checkpoint"
        raise StoredResultsMismatch(
            f"the table {name!r} was computed with a model whose fingerprint is {expected}, but this one is "
            f"{vllm.fingerprint}: {why}. Load the model the report names ({model}, {report.get('quant')}, "
            f"default numeric path) or regenerate the results with `{regenerate_command(name)}`."
        )


def recompute(vllm, name: str, rows: pd.DataFrame, report: dict | None = None, folder=None) -> pd.DataFrame:
    """Recompute ``rows`` of table ``name`` with the kit's experiment functions (same model)."""
    from flowkit.analysis import experiments
    from flowkit.data import shipped_questions
    from flowkit.analysis.pathways import PathwayWindows

    report = report if report is not None else load_report()
    ids = list(dict.fromkeys(rows["sample"]))
    if name == "pathway_search_test":  # the study's fresh split, rendered again from its seed
        from flowkit.data import rendered_questions

        split = load_study(folder)["test_split"]
        pool = rendered_questions(split["seed"], split["per_task"], split["tasks"])
    else:
        pool = shipped_questions()
    samples = {s.id: s for s in pool if s.id in set(ids)}
    missing = [i for i in ids if i not in samples]
    if missing:
        raise StoredResultsMismatch(
            f"samples {missing} are not in the question set; regenerate the results with `{regenerate_command(name)}`."
        )
    chosen = [samples[i] for i in ids]
    if name in ("sweeps", "control_cross_frame"):
        parts = [
            experiments.flow_sweep(
                vllm, [samples[r.sample]], edge_groups=[r.edge_group], centers=[int(r.center)], progress=False
            )
            for r in rows.itertuples()
        ]
        return pd.concat(parts, ignore_index=True)
    if name in ("accuracy", "control_accuracy"):
        return experiments.answer_table(vllm, chosen, progress=False)
    if name == "emergence":
        from flowkit.course.fidelity import emergence_readouts

        return experiments.answer_emergence(vllm, chosen, progress=False, readouts=emergence_readouts(vllm))
    if name == "lens":
        return experiments.video_token_lens(
            vllm, chosen, kinds=sorted(set(rows["kind"])), bags=sorted(set(rows["bag"])), progress=False
        )
    if name == "pathways":
        windows = PathwayWindows.from_dict(report["F4"]["windows"])
        conditions = set(rows["condition"])
        controls = [control for control, condition in experiments.RANDOM_CONDITIONS.items() if condition in conditions]
        table, _ = experiments.effective_pathways(
            vllm,
            chosen,
            windows,
            random_seeds=report["random_seeds"],
            random_controls=controls,
            random_fraction=report["F4"].get("random_suppressed_fraction"),
            progress=False,
        )
        table["seed"] = table["seed"].astype("Int64")
        return table
    if name == "quantization":  # the rows of this model's own format: another format is another model
        parts = [
            experiments.flow_sweep(
                vllm, [samples[sample]], edge_groups=["cross_frame"], centers=sorted(group["center"]), progress=False
            ).assign(quant=vllm.quant)
            for sample, group in rows.groupby("sample", sort=False)
        ]
        return pd.concat(parts, ignore_index=True)
    if name in _STUDY_TABLES:
        from flowkit.analysis.pathway_search import MaskCondition, conditions_table

        study = load_study(folder)
        wanted = set(rows["condition"])
        conditions = [MaskCondition.from_dict(c) for c in study["conditions"]]
        return conditions_table(vllm, chosen, [c for c in conditions if c.label in wanted], progress=False)
    raise FlowkitError(f"unknown results table {name!r}; the tables are {', '.join(sorted(_CHECKED))}.")


def verify(
    vllm, name: str, n: int = 2, seed: int = 0, atol: float = 1e-4, folder=None, on_mismatch: str = "raise"
) -> pd.DataFrame | None:
    """Recompute ``n`` randomly chosen entries of a precomputed table and check they match.

    For per-condition tables (sweeps) an entry is one row; for per-sample tables
    (accuracy, emergence, lens, pathways) it is every row of one sample. Returns a
    table of stored vs recomputed values.

    When the table belongs to another model (fingerprint) or a value differs by more than
    ``atol``: ``on_mismatch="raise"`` (default) raises :class:`StoredResultsMismatch`, saying
    how to regenerate; ``on_mismatch="note"`` (what the chapters use) prints that in one
    paragraph instead and returns ``None``, so the chapter goes on — with stored numbers
    that are labelled as another model's, and live cells computed with yours; when the entries
    match it prints one line saying what was recomputed and the largest difference.
    """
    if on_mismatch not in ("raise", "note"):
        raise FlowkitError(f"on_mismatch must be 'raise' or 'note', got {on_mismatch!r}")
    try:
        checked = _verify(vllm, name, n, seed, atol, folder)
        if on_mismatch == "note":
            questions = checked["sample"].nunique() if "sample" in checked.columns else len(checked)
            print(
                f"verify {name!r}: {len(checked)} stored row{'s' if len(checked) != 1 else ''} "
                f"({questions} question{'s' if questions != 1 else ''}) recomputed now; largest difference "
                f"{float(checked['max_abs_diff'].max()):.1e} (tolerance {atol:g}): the stored table is this model's"
            )
        return checked
    except StoredResultsMismatch as mismatch:
        if on_mismatch == "raise":
            raise
        print(
            f"Note: {mismatch} Until then, the stored tables this chapter charts are not your model's "
            "numbers; every cell that runs the model live uses yours."
        )
        return None


def _verify(vllm, name: str, n: int, seed: int, atol: float, folder) -> pd.DataFrame:
    report = load_report(folder)
    check_model(vllm, name, report)
    if name in _STUDY_TABLES:
        if load_study(folder).get("fingerprint") != vllm.fingerprint:
            raise StoredResultsMismatch(
                f"the stored pathway study was computed with another model than this one ({vllm.fingerprint}); "
                f"regenerate it with `{regenerate_command(name)}`."
            )
    table = load_table(name, folder)
    if name == "quantization":
        table = table[table["quant"] == vllm.quant]  # a bf16 row needs the bf16 model: check this format's
        if table.empty:
            raise StoredResultsMismatch(f"the stored {name!r} table has no {vllm.quant} rows to recompute")
    keys, values = _CHECKED[name]
    rng = np.random.default_rng(seed)
    if name in ("sweeps", "control_cross_frame", "quantization"):
        stored = table.iloc[np.sort(rng.choice(len(table), size=min(n, len(table)), replace=False))]
    else:
        ids = sorted(set(table["sample"]))
        picked = set(rng.choice(ids, size=min(n, len(ids)), replace=False).tolist())
        stored = table[table["sample"].isin(picked)]
    fresh = recompute(vllm, name, stored, report, folder)
    merged = stored[keys + values].merge(fresh[keys + values], on=keys, suffixes=("_stored", "_now"), how="left")
    if merged[[f"{v}_now" for v in values]].isna().any().any():
        raise StoredResultsMismatch(
            f"recomputing {name!r} did not produce every stored row; regenerate with `{regenerate_command(name)}`."
        )
    diffs = [(merged[f"{v}_stored"] - merged[f"{v}_now"]).abs() for v in values]
    # pct_change is in percent: compare it on the probability scale (divide by 100)
    scale = [100.0 if v == "pct_change" else 1.0 for v in values]
    merged["max_abs_diff"] = np.max([d / s for d, s in zip(diffs, scale)], axis=0)
    worst = float(merged["max_abs_diff"].max())
    if worst > atol:
        raise StoredResultsMismatch(
            f"the precomputed {name!r} table does not match what the kit computes now (largest difference "
            f"{worst:.2g} > {atol:g} on the rows checked); regenerate it with `{regenerate_command(name)}`."
        )
    return merged


__all__ = ["StoredResultsMismatch", "check_model", "load_report", "load_study", "load_table", "recompute", "verify"]
