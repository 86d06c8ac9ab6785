"""How far the kit's small model reproduces the paper: one command, one JSON, one table.

    python -m flowkit fidelity [--per-task N] [--out data/results/fidelity.json]

Measures, on held-out questions of the shipped split (NF4 on CPU): accuracy per task
for the trained model and the image-only control; F1 (cross-frame knockout), F2
(video->question vs question->last troughs, video->last and last->last, the lens on video
tokens), F3 (where p(true option) passes 0.5) and F4 (effective pathways vs the paper's
random control, and flowkit's layer-matched one). Token groups, the random control and
accuracy after knockout follow the paper's definitions (``definitions_version`` in the
report), and so do the readouts (``readouts`` in the report, :mod:`flowkit.prompts.readout`): a
question is correct when the whole vocabulary's top token is its true letter; ``non_letter_share``
per task says how often that top token is no option letter at all, and ``accuracy_options``
(also per condition in F4) gives the option-letter rule's accuracy beside it. Emergence (F3) reads
``hidden · lm_headᵀ`` without the final norm before the last layer; the lens (F2) numbers layers as
the paper's script (layer i = the input of layer i). Goals are reported beside the paper's
LLaVA-NeXT-7B numbers, never forced.

Plan of the whole run (2 CPU cores, shipped model: 30 layers, 83 tokens per prompt; one
full forward F ≈ 0.22 s; 6 tasks x 60 questions):

- **accuracy (+ control)**: one plain forward per question and model (2 x 360 F). Nothing
  shared or batched.
- **sweeps (F1-F3)**: 5 edge groups x 30 windows on up to 20 correctly answered questions per
  learned task and 6 per other task. Shared: one clean run per question
  (:class:`~flowkit.intervention.session.Session`) feeds every window; layers before a window and positions
  before its first cut query are never recomputed. Batched: specs sharing a first cut row, up
  to ``row_budget`` rows per replay, each spec joining the batch at its first cut layer.
- **control cross-frame**: 30 windows on the control's questions, as the sweeps.
- **lens, emergence**: one forward per question (lens: one question per learned task;
  emergence: the swept questions).
- **pathways (F4)**: 1 + 1 + seeds masks per question (360 questions). Shared: the question's
  clean run is ``full``; the masks replay from the first video token, reusing the prefix's
  keys/values. Batched: the pathway mask and every random seed in one replay
  (:meth:`Session.last_logits <flowkit.intervention.session.Session.last_logits>`).

The pathway masks cut ``video->last`` from layer 0, so per question the replay still covers
every layer from the first video token on; the saving is one clean run instead of
``2 + seeds`` full forwards, and one batched replay. The report's ``seconds_by_part`` says
what each part cost in the run that wrote it (``format_report`` prints it).
``run_fidelity(..., replay=False)`` keeps the former path (one full forward per knockout);
``python bench/run.py`` times both on a subset, part by part, and checks that they give the
same numbers.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from flowkit.analysis import experiments
from flowkit.atomic_files import atomic_paths, atomic_write_json, write_csv_gz
from flowkit.errors import FlowkitError
from flowkit.locations import data_path
from flowkit.model.named_models import KIT_CONTROL, KIT_MODEL
from flowkit.intervention.edge_groups import DEFINITIONS_VERSION, PAPER_EDGE_GROUPS
from flowkit.analysis.learned import RULE, learned_table
from flowkit.analysis.pathways import PAPER_RANDOM_CONTROL
from flowkit.data.sample import first_per_task
from flowkit.analysis.stats import (
    accuracy_by,
    intervals_by,
    mean_with_ci,
    mean_with_interval,
    tied_with_minimum,
)
from flowkit.prompts.readout import PAPER_EMERGENCE, PAPER_PREDICTION

PAPER_7B = {
    "F1 cross-frame trough (% change)": "-8 to -43 % (by task), layers ~4-13",
    "F1 image-only control": "within ~±7 %",
    "F2 video->question trough": "layers ~7-16, -20 to -40 %",
    "F2 video->last, last->last": "about 0 everywhere",
    "F3 p(true) > 0.5 from layer": "~19-21 of 32",
    "F4 edges kept": "42 % (58 % suppressed)",
    "F4 accuracy full / pathways / random": "51.5 / 51.2 / 40.1",
}


#: The tidy tables written beside the JSON (``<name>.csv.gz``); chapters read them with
#: :func:`flowkit.course.results.load_table` and recompute a few rows live.
#: The word bags the lens on video tokens is read with: the kit's balanced bags and the paper's lists.
LENS_BAGS = ("kit", "paper_action_sequence")

#: How the report names each emergence readout.
READOUT_NAMES = {
    "logit_lens": "logit lens",
    "options": "logit lens renormalised over the options",
    "tuned_lens": "tuned lens",
}

#: The emergence readouts F3 reports beside each other (plus the kit's tuned lens, see :func:`emergence_readouts`).
REPORTED_EMERGENCE_READOUTS = ("paper", "logit_lens", "options")

#: The readouts every number of the report is read with (the paper's, :mod:`flowkit.prompts.readout`).
READOUTS = {"prediction": PAPER_PREDICTION, "emergence": PAPER_EMERGENCE, "lens_layers": "paper"}
TABLES = ("accuracy", "control_accuracy", "sweeps", "control_cross_frame", "lens", "emergence", "pathways")


def _atomic_write_tables(folder: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Write every table as ``<name>.csv.gz`` (byte-reproducible: gzip mtime 0), all or nothing."""
    with atomic_paths([folder / f"{name}.csv.gz" for name in tables]) as temps:
        for tmp, table in zip(temps, tables.values()):
            write_csv_gz(tmp, table)


def _curves_with_ci(flows: pd.DataFrame, tasks) -> dict[str, dict]:
    """Per edge group: the mean % change per window centre over the correctly answered questions of
    ``tasks`` (pooled), with its 95 % bootstrap interval over those questions."""
    out = {}
    for edge_group, table in experiments.curves_with_ci(flows, tasks).groupby("edge_group"):
        out[edge_group] = {
            "curve": {int(r.center): float(r.pct_change) for r in table.itertuples()},
            "ci": {int(r.center): [float(r.lo), float(r.hi)] for r in table.itertuples()},
            "questions": int(table["n"].max()),
        }  # every question is swept at every centre
    return out


@dataclass
class _Run:
    """What the parts of one fidelity run share: the model, the questions, the tables and report
    being written, and the wall seconds per part (``seconds_by_part``)."""

    vllm: object
    bench: list
    tasks: list[str]
    progress: bool
    replay: bool
    report: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    headline: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def part(self, name: str):
        begun = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - begun


def _non_letter_share(table: pd.DataFrame) -> dict:
    """Per task: the share of questions whose whole-vocabulary top token is not an option letter
    (wrong under the paper's rule whatever the option probabilities say)."""
    return {task: 1.0 - share for task, share in accuracy_by(table, "task", "top_is_letter").items()}


def _learned_by_options_rule(acc: pd.DataFrame, cacc: pd.DataFrame | None) -> list[str]:
    """The learned tasks if accuracy followed the option-letter rule instead of the paper's."""

    def by_options(table):
        return None if table is None else table.assign(correct=table["correct_options"])

    by_rule = learned_table(by_options(acc), by_options(cacc))
    return sorted(by_rule.index[by_rule["learned"]])


def _accuracy_and_learned(run: _Run, control, quant: str):
    """Accuracy of the model and the control, and the learned tasks (the headline tasks)."""
    from flowkit.model.videollm import load_videollm

    with run.part("accuracy (+ control)"):
        acc = run.tables["accuracy"] = experiments.answer_table(run.vllm, run.bench, progress=run.progress)
    run.report["accuracy"] = accuracy_by(acc, "task")  # the paper's rule: top vocabulary token
    run.report["accuracy_ci"] = intervals_by(acc, "task")
    run.report["accuracy_options"] = accuracy_by(acc, "task", "correct_options")  # the option-letter rule
    run.report["non_letter_share"] = _non_letter_share(acc)
    cvllm = cacc = None
    if control:
        with run.part("loading models"):
            cvllm = load_videollm(control, quant=quant)
        with run.part("accuracy (+ control)"):
            cacc = run.tables["control_accuracy"] = experiments.answer_table(cvllm, run.bench, progress=run.progress)
        run.report["control"], run.report["control_fingerprint"] = control, cvllm.fingerprint
        run.report["control_accuracy"] = accuracy_by(cacc, "task")
        run.report["control_accuracy_options"] = accuracy_by(cacc, "task", "correct_options")
        run.report["control_non_letter_share"] = _non_letter_share(cacc)
    by_rule = learned_table(acc, cacc)
    learned = sorted(by_rule.index[by_rule["learned"]])
    run.headline = learned or run.tasks
    run.report["learned"] = {
        "rule": RULE,
        "tasks": learned,
        "headline_tasks": run.headline,
        "note": "" if learned else "no task passes the rule: headline numbers are over all tasks",
        # the same rule on accuracies by the option-letter rule (differs only where a non-letter wins)
        "tasks_options_rule": _learned_by_options_rule(acc, cacc),
        "table": {
            t: {k: (None if pd.isna(v) else (bool(v) if k == "learned" else float(v))) for k, v in row.items()}
            for t, row in by_rule.iterrows()
        },
    }
    on_headline_tasks = acc[acc["task"].isin(run.headline)]["correct"].astype(float)
    run.report["accuracy_headline"] = mean_with_interval(on_headline_tasks, tasks=run.headline)
    return acc, cvllm, cacc


def _finding_1(run: _Run, summary, curves, cvllm, csamples, centers) -> None:
    """F1: the cross-frame curve on the headline tasks, its trough, and the image-only control's curve."""
    L = run.vllm.num_layers
    overall_all = summary.groupby(["edge_group", "center"])["pct_change"].mean()
    cross, cross_ci = _curve(curves, "cross_frame"), _curve(curves, "cross_frame", "ci")
    f1 = {
        "curve": cross,
        "curve_ci": cross_ci,
        "tasks": run.headline,
        "questions": curves.get("cross_frame", {}).get("questions", 0),
        "curve_all_tasks": (
            {int(c): float(v) for c, v in overall_all.loc["cross_frame"].items()}
            if "cross_frame" in overall_all.index.get_level_values(0)
            else {}
        ),
    }
    if cross:
        centre = min(cross, key=cross.get)
        f1.update(
            trough=cross[centre],
            trough_center=centre,
            trough_ci=cross_ci[centre],
            trough_in_first_half=centre < L / 2,
            max_abs_last_third=max((abs(v) for c, v in cross.items() if c >= 2 * L / 3), default=None),
            per_task=experiments.troughs(summary[summary["edge_group"] == "cross_frame"]).to_dict("records"),
        )
    if cvllm is not None and csamples:
        with run.part("control cross-frame"):
            run.tables["control_cross_frame"] = experiments.cross_frame_sweep(
                cvllm, csamples, centers=centers, progress=run.progress, replay=run.replay
            )
        control = _curves_with_ci(run.tables["control_cross_frame"], run.headline).get("cross_frame")
        if control:
            f1["control_curve"], f1["control_curve_ci"] = control["curve"], control["ci"]
            f1["control_trough"] = float(min(control["curve"].values()))
    run.report["F1"] = f1


def _finding_2(run: _Run, summary, curves, sweep_samples) -> None:
    """F2: the video->question and question->last curves and troughs, and the lens on video tokens."""
    vq, ql = _curve(curves, "video->question"), _curve(curves, "question->last")
    run.report["F2"] = {
        "video_to_question": vq,
        "question_to_last": ql,
        "tasks": run.headline,
        "video_to_question_ci": _curve(curves, "video->question", "ci"),
        "question_to_last_ci": _curve(curves, "question->last", "ci"),
        "video_to_last": _curve(curves, "video->last"),
        "last_to_last": _curve(curves, "last->last"),
        "video_to_question_trough_center": min(vq, key=vq.get) if vq else None,
        "question_to_last_trough_center": min(ql, key=ql.get) if ql else None,
        "max_abs_video_to_last": max((abs(v) for v in _curve(curves, "video->last").values()), default=None),
        "max_abs_last_to_last": max((abs(v) for v in _curve(curves, "last->last").values()), default=None),
        # each task's own troughs, so the pooled order can be read task by task
        "per_task_video_to_question": experiments.troughs(summary[summary["edge_group"] == "video->question"]).to_dict(
            "records"
        ),
        "per_task_question_to_last": experiments.troughs(summary[summary["edge_group"] == "question->last"]).to_dict(
            "records"
        ),
    }
    lens_samples = first_per_task(sweep_samples, 1, tasks=run.headline)  # one per headline task
    # the kit's balanced word bags and the paper's Action Sequence lists (flowkit.data.vocab.WORD_BAGS)
    with run.part("lens, emergence"):
        lens = run.tables["lens"] = experiments.video_token_lens(
            run.vllm, lens_samples, kinds=("embedding", "logit"), bags=LENS_BAGS, progress=run.progress
        )
    for bag in LENS_BAGS:
        suffix = "" if bag == "kit" else f"_{bag}"
        for kind in ("embedding", "logit"):
            chosen = lens[(lens["bag"] == bag) & (lens["kind"] == kind)]
            run.report["F2"][f"lens_temporal_share_{kind}{suffix}"] = (
                chosen.groupby("layer")["temporal_share"].mean().to_dict()
            )
        # what a lens picking words at random would show: the temporal words' share of the list
        run.report["F2"][f"lens_bag_temporal_share{suffix}"] = experiments.lens_bag_temporal_share(run.vllm, bag)


def kit_tuned_lens(vllm):
    """The kit's shipped tuned lens (``data/models/flowkit-smol-video/tuned_lens.safetensors``) when it
    was fit on this very model (same fingerprint), else ``None``."""
    from flowkit.analysis.tuned_lens import load_tuned_lens
    from flowkit.smol_video import shipped_dir

    path = shipped_dir() / "tuned_lens.safetensors"
    if not path.is_file():
        return None
    lens = load_tuned_lens(path)
    return lens if lens.config.get("fingerprint") == vllm.fingerprint else None


def stale_tuned_lens_note(model: str | None, vllm) -> str | None:
    """One line when the kit's model runs while the shipped tuned lens was fit on another version of
    it (F3 then goes without that readout: said, not silently dropped); None otherwise."""
    from flowkit.smol_video import shipped_dir

    if model != KIT_MODEL or not (shipped_dir() / "tuned_lens.safetensors").is_file():
        return None
    if kit_tuned_lens(vllm) is not None:
        return None
    return (
        "note: F3 runs without the tuned lens: the shipped tuned_lens.safetensors was fit on another version "
        "of the kit's model; refit it (python -m flowkit.analysis.tuned_lens fit ..., see the README) and run "
        "the fidelity command again to measure F3 under it"
    )


def emergence_readouts(vllm) -> dict:
    """The readouts F3 is measured with: the paper's (the headline), the logit lens, the logit lens
    renormalised over the option letters and, for the kit's model, its tuned lens."""
    from flowkit.analysis.tuned_lens import tuned_lens_readout

    readouts = {name: name for name in REPORTED_EMERGENCE_READOUTS}
    lens = kit_tuned_lens(vllm)
    if lens is not None:
        readouts["tuned_lens"] = tuned_lens_readout(lens)
    return readouts


def _emergence_summary(table: pd.DataFrame) -> dict:
    """Mean p(true) and p(false max) per layer, p(true)'s 95 % interval, the first layer where the mean
    passes 0.5 and the first layers the intervals allow (the interval's top above 0.5; its bottom above 0.5)."""
    per_layer = table.groupby("layer")[["p_true", "p_false_max"]].mean()
    p_true_ci = mean_with_ci(table, "layer", "p_true").set_index("layer")
    above = per_layer.index[per_layer["p_true"] > 0.5]
    could = p_true_ci.index[p_true_ci["hi"] > 0.5]
    surely = p_true_ci.index[p_true_ci["lo"] > 0.5]
    return {
        "p_true": per_layer["p_true"].to_dict(),
        "p_false_max": per_layer["p_false_max"].to_dict(),
        "p_true_ci": {int(l): [float(r.lo), float(r.hi)] for l, r in p_true_ci.iterrows()},
        "first_layer_p_true_above_half": int(above[0]) if len(above) else None,
        "first_layer_interval": [int(could[0]) if len(could) else None, int(surely[0]) if len(surely) else None],
    }


def _finding_3(run: _Run, sweep_samples) -> None:
    """F3: p(true option) and the largest p(false option) at the last position, layer by layer, under
    each readout (:func:`emergence_readouts`); the headline is the paper's readout."""
    readouts = emergence_readouts(run.vllm)
    note = stale_tuned_lens_note(run.report.get("model"), run.vllm)
    if note:
        print(note)
    with run.part("lens, emergence"):
        emergence = run.tables["emergence"] = experiments.answer_emergence(
            run.vllm, sweep_samples, progress=run.progress, readouts=readouts
        )
    on_headline = emergence[emergence["task"].isin(run.headline)]
    by_readout = {name: _emergence_summary(table) for name, table in on_headline.groupby("readout", sort=False)}
    run.report["F3"] = {
        **by_readout[PAPER_EMERGENCE],
        "tasks": run.headline,
        "readout": PAPER_EMERGENCE,
        "by_readout": by_readout,
        **({"tuned_lens_note": note} if note else {}),
    }


def _paired(pathways: pd.DataFrame) -> dict:
    """Per mask: the mean question-by-question difference from the full model's correctness and its
    95 % interval, and how many questions it answers worse / better (:func:`experiments.pathway_accuracy`)."""
    present = set(pathways["condition"])
    rows = experiments.pathway_accuracy(
        pathways, conditions=[c for c in ("full", "pathways", "random") if c in present]
    )
    return {
        row["condition"]: {
            "minus_full": row["minus full"],
            "ci": [row["minus full lo"], row["minus full hi"]],
            "worse": row["worse"],
            "better": row["better"],
        }
        for row in rows
        if row["condition"] != "full"
    }


def _finding_4(run: _Run, summary, random_seeds) -> None:
    """F4: accuracy with only the pathways (windows from the sweeps) vs the paper's random control."""
    windows = experiments.windows_from_sweeps(summary[summary["task"].isin(run.headline)], run.vllm.num_layers)
    # "random" is the paper's control (f = this model's mean suppressed share, cut in every layer
    # from the first video token on); flowkit's layer-matched control is not part of the report
    # (experiments.effective_pathways(..., random_controls=("layer_matched",)) computes it)
    with run.part("pathways (F4)"):
        pathways, counts = experiments.effective_pathways(
            run.vllm,
            run.bench,
            windows,
            random_seeds=random_seeds,
            random_controls=(PAPER_RANDOM_CONTROL,),
            progress=run.progress,
            replay=run.replay,
        )
    run.tables["pathways"] = pathways
    on_learned = pathways[pathways["task"].isin(run.headline)]
    kept_per_question = on_learned[on_learned["condition"] == "pathways"]["kept_fraction"]
    run.report["F4"] = {
        "edges_kept_headline": mean_with_interval(
            kept_per_question,
            tasks=run.headline,
            min=float(kept_per_question.min()),
            max=float(kept_per_question.max()),
        ),
        "windows": windows.to_dict(),
        "edges": counts,
        "accuracy": accuracy_by(pathways, "condition"),
        # over questions: a question's correctness under the random mask is averaged over its seeds first
        "accuracy_ci": intervals_by(pathways, "condition", unit="sample"),
        "accuracy_options": accuracy_by(pathways, "condition", "correct_options"),
        "accuracy_headline_tasks": accuracy_by(on_learned, "condition"),
        "accuracy_headline_tasks_ci": intervals_by(on_learned, "condition", unit="sample"),
        "random_control": "paper",
        "random_suppressed_fraction": counts["random_fraction"],
        "random_accuracy_per_seed": accuracy_by(pathways[pathways["condition"] == "random"], "seed"),
        # question by question against the full model (seeds averaged per question): the verdict's intervals
        "paired_headline_tasks": _paired(on_learned if not on_learned.empty else pathways),
    }


def _curve(curves: dict, edge_group: str, key: str = "curve") -> dict:
    """One edge group's headline curve (``key="ci"``: its intervals), or ``{}`` when it was not swept."""
    return dict(curves[edge_group][key]) if edge_group in curves else {}


def run_fidelity(
    model: str = KIT_MODEL,
    control: str | None = KIT_CONTROL,
    quant: str = "nf4",
    per_task: int | None = None,
    sweep_per_task: int = 20,
    other_per_task: int = 6,
    centers_step: int = 1,
    random_seeds=(0, 1, 2, 3, 4),
    out: str | os.PathLike | None = "default",
    progress: bool = True,
    replay: bool = True,
) -> dict:
    """Measure the four findings on ``model`` (and ``control``) and write the JSON report.

    Headline numbers (F1-F3 curves and troughs, F4 accuracy) are means over the *learned*
    tasks (:mod:`flowkit.analysis.learned`: judged from this run's accuracy and the control's) with
    95 % bootstrap intervals over questions; sweeps use up to ``sweep_per_task`` correctly
    answered questions of each learned task and ``other_per_task`` of the others (charted
    apart). With no learned task the headline falls back to all tasks, and says so.

    The report goes to ``out`` (``"default"``: ``data/results/fidelity.json``, see
    :mod:`flowkit.locations`; ``None``: not written). Beside the JSON go the tidy per-sample tables (:data:`TABLES`, as
    ``<name>.csv.gz``) that the chapters chart; every row can be recomputed from its
    sample id and (for sweeps) its ``spec`` column, see :mod:`flowkit.course.results`.
    ``replay=False`` runs the former path (one full forward per knockout; same numbers to
    float rounding, several times slower), kept for comparison (``python bench/run.py``).
    """
    from flowkit.data import load_question_set, shipped_questions_root
    from flowkit.model.videollm import load_videollm

    started = time.time()
    seconds: dict[str, float] = {}
    begun = time.perf_counter()
    vllm = load_videollm(model, quant=quant)
    seconds["loading models"] = time.perf_counter() - begun
    bench = load_question_set(shipped_questions_root(), num_frames=8)
    tasks = sorted({s.task for s in bench})
    bench = first_per_task(bench, per_task or None, tasks=tasks)
    run = _Run(
        vllm=vllm,
        bench=bench,
        tasks=tasks,
        progress=progress,
        replay=replay,
        seconds=seconds,
        report={
            "model": model,
            "fingerprint": vllm.fingerprint,
            "quant": quant,
            "numeric_path": vllm.numeric_path,
            "num_layers": vllm.num_layers,
            "samples": [s.id for s in bench],
            "random_seeds": list(random_seeds),
            "paper_7b": PAPER_7B,
        },
    )
    acc, cvllm, cacc = _accuracy_and_learned(run, control, quant)

    # sweeps use up to `sweep_per_task` correctly answered samples per learned task (as the paper
    # averages over correct ones) and `other_per_task` of the other tasks, shown apart
    def take(task):
        return sweep_per_task if task in run.headline else other_per_task

    correct = set(acc[acc["correct"]]["sample"])
    sweep_samples = first_per_task(bench, take, tasks=tasks, keep=lambda s: s.id in correct)
    run.report["sweep_samples"] = [s.id for s in sweep_samples]
    centers = list(range(0, vllm.num_layers, centers_step))
    with run.part("sweeps (F1-F3)"):
        flows = run.tables["sweeps"] = experiments.flow_sweep(
            vllm, sweep_samples, edge_groups=PAPER_EDGE_GROUPS, centers=centers, progress=progress, replay=replay
        )
    summary = experiments.summarize(flows)
    curves = _curves_with_ci(flows, run.headline)
    csamples = []
    if cvllm is not None:
        ccorrect = set(cacc[cacc["correct"]]["sample"])
        csamples = first_per_task(bench, take, tasks=tasks, keep=lambda s: s.id in ccorrect)
    _finding_1(run, summary, curves, cvllm, csamples, centers)
    del cvllm
    _finding_2(run, summary, curves, sweep_samples)
    _finding_3(run, sweep_samples)
    _finding_4(run, summary, random_seeds)
    report = run.report
    report["definitions_version"] = DEFINITIONS_VERSION
    report["readouts"] = dict(READOUTS)
    report["seconds"] = time.time() - started
    report["seconds_by_part"] = run.seconds
    if out == "default":
        out = data_path("results", "fidelity.json")
    if out is not None:
        _atomic_write_tables(Path(out).parent, run.tables)
        atomic_write_json(Path(out), report, indent=2, sort_keys=True, default=float)
    return report


def _verdict(ok: bool | None, partly: bool | None = None) -> str:
    if ok is None:
        return "not measured"
    return "reproduced" if ok else ("partly" if partly else "not reproduced")


#: the rule behind each verdict of :func:`paper_comparison` (the targets of the kit's model card)
RULES = {
    "accuracy": "reproduced: every task >= 90 %; partly: mean over all tasks >= 50 %",
    "F1 cross-frame trough": (
        "reproduced: the trough's whole 95 % interval <= -20 %, in the first half of the layers; "
        "partly: the trough <= -5 % there"
    ),
    "F1 late windows (last third)": "reproduced: every change <= 5 % (absolute)",
    "F1 image-only control": "reproduced: control trough within a third of the trained model's",
    "F2 video->question before question->last": (
        "reproduced: every window tied with the v->q trough (its interval reaches the trough) lies before every "
        "window tied with the q->last trough; partly: the v->q trough itself lies earlier"
    ),
    "F2 video->last, last->last": "reproduced: both <= 5 % (absolute); partly: one of them",
    "F3 p(true option) > 0.5 from layer": (
        "reproduced: mean p(true) > 0.5 from a layer in the second half, before the last; partly: only at the last"
    ),
    "F4 edges kept": "reproduced: <= 45 % of edges kept (mean over the learned tasks' questions)",
    "F4 accuracy full / pathways / random": (
        "on the learned tasks, question by question against full: reproduced: the paired 95 % intervals put "
        "pathways within 3 % of full and random >= 10 points below it; partly: pathways >= 97 % of full"
    ),
}


def _ci_text(ci, scale: float = 1.0, signed: bool = False, digits: int = 1) -> str:
    """`` [95 % CI lo, hi]`` for an interval (``""`` when there is none)."""
    if not ci or ci[0] is None:
        return ""
    fmt = "{:" + ("+" if signed else "") + f".{digits}f" + "}"
    return f" [95 % CI {fmt.format(scale * ci[0])}, {fmt.format(scale * ci[1])}]"


def _tie(curve: dict, ci: dict | None) -> list[int]:
    """The window centres tied with a stored curve's trough (:func:`flowkit.analysis.stats.tied_with_minimum`)."""
    values = {int(k): v for k, v in curve.items()}
    intervals = {int(k): v for k, v in (ci or {}).items()}
    return tied_with_minimum(values, intervals)


def _tie_text(tied: list[int]) -> str:
    if len(tied) <= 1:
        return ""
    return f"; tied with centres {tied[0]}-{tied[-1]} (their intervals reach the trough)"


def _trough(curve: dict, ci: dict | None) -> str:
    """The deepest point of a sweep curve with its interval, e.g. ``-19.5 % [95 % CI -25.0, -14.1]``."""
    center = min(curve, key=curve.get)
    return f"{curve[center]:+.1f} %{_ci_text((ci or {}).get(center), signed=True)}"


def paper_comparison(
    report: dict, findings=("accuracy", "F1", "F2", "F3", "F4")
) -> list[tuple[str, str, str, str, str]]:
    """Rows ``(finding, paper's 7B, this model with its 95 % interval, verdict, rule)`` for the chapters'
    "compare with the paper" cells.

    The verdicts apply the targets of the kit's model card (:data:`RULES`, e.g. F1: the trough's
    whole 95 % interval <= -20 % in the first half of the layers; partly: a trough <= -5 % there)
    to the measured numbers.
    """
    L = report["num_layers"]
    rows = []

    def row(finding, paper, ours, verdict):
        rows.append((finding, paper, ours, verdict, RULES[finding.split(" — ")[0]]))

    if "accuracy" in findings:
        acc, control = report["accuracy"], report.get("control_accuracy", {})
        mean = float(np.mean(list(acc.values())))
        worst = min(acc, key=acc.get)
        ours = ""
        headline = report.get("accuracy_headline")
        if headline and report.get("learned", {}).get("tasks"):
            ours = (
                f"learned tasks {100 * headline['mean']:.1f} %{_ci_text(headline['ci'], 100)} "
                f"({headline['questions']} questions); "
            )
        ours += (
            f"mean {100 * mean:.1f} % over all {len(acc)} tasks (lowest: {worst} {100 * acc[worst]:.0f} %"
            f"{_ci_text(report.get('accuracy_ci', {}).get(worst), 100)})"
        )
        if control:
            ours += f"; image-only control {100 * float(np.mean(list(control.values()))):.1f} %"
        learned = report.get("learned", {}).get("tasks")
        if learned is not None:
            ours += f"; learned: {', '.join(learned) if learned else 'none'}"
        row(
            "accuracy", "TVBench 51.5 % (LLaVA-NeXT-7B-Video-FT)", ours, _verdict(min(acc.values()) >= 0.9, mean >= 0.5)
        )
    if "F1" in findings:
        f1 = report["F1"]
        trough, centre = f1.get("trough"), f1.get("trough_center")
        first_half = centre is not None and centre < L / 2
        upper = (f1.get("trough_ci") or [None, trough])[1]  # the interval's end nearest zero
        tied = _tie(f1["curve"], f1.get("curve_ci")) if f1.get("curve") else []
        per_task = ", ".join(
            f"{t['task']} {t['pct_change']:+.0f} % at {t['center']}"
            for t in f1.get("per_task", [])
            if t["task"] in set(f1.get("tasks", []))
        )
        row(
            "F1 cross-frame trough",
            PAPER_7B["F1 cross-frame trough (% change)"],
            "n/a"
            if trough is None
            else f"{trough:+.1f} %{_ci_text(f1.get('trough_ci'), signed=True)} at window centre {centre} of {L}"
            + _tie_text(tied)
            + (f"; per learned task: {per_task}" if per_task else ""),
            _verdict(
                None if trough is None else (upper is not None and upper <= -20 and first_half),
                trough is not None and trough <= -5 and first_half,
            ),
        )
        late = f1.get("max_abs_last_third")
        row(
            "F1 late windows (last third)",
            "about 0",
            "n/a" if late is None else f"largest change {late:.1f} % (absolute)",
            _verdict(None if late is None else late <= 5),
        )
        ctrough, ccurve = f1.get("control_trough"), f1.get("control_curve")
        row(
            "F1 image-only control",
            PAPER_7B["F1 image-only control"],
            "n/a"
            if ctrough is None
            else "trough " + (_trough(ccurve, f1.get("control_curve_ci")) if ccurve else f"{ctrough:+.1f} %"),
            _verdict(None if ctrough is None or trough is None else (trough < 0 and abs(ctrough) <= abs(trough) / 3)),
        )
    if "F2" in findings:
        f2 = report["F2"]
        vq, ql = f2.get("video_to_question_trough_center"), f2.get("question_to_last_trough_center")
        ours, order = "n/a", None
        if vq is not None and f2.get("video_to_question") and f2.get("question_to_last"):
            vq_tied = _tie(f2["video_to_question"], f2.get("video_to_question_ci"))
            ql_tied = _tie(f2["question_to_last"], f2.get("question_to_last_ci"))
            ours = (
                f"v->q trough at {vq} ({_trough(f2['video_to_question'], f2.get('video_to_question_ci'))}"
                f"{_tie_text(vq_tied)}), "
                f"q->last at {ql} ({_trough(f2['question_to_last'], f2.get('question_to_last_ci'))}{_tie_text(ql_tied)})"
            )
            order = max(vq_tied) < min(ql_tied)
            headline = set(f2.get("tasks", []))
            troughs = {
                t["task"]: t["center"] for t in f2.get("per_task_video_to_question", []) if t["task"] in headline
            }
            per_task = ", ".join(
                f"{t['task']} {troughs[t['task']]} / {t['center']}"
                for t in f2.get("per_task_question_to_last", [])
                if t["task"] in troughs
            )
            if per_task:
                ours += f"; per learned task, v->q / q->last troughs at: {per_task}"
        row(
            "F2 video->question before question->last",
            "v->q trough ~7-16, q->last ~16-25",
            ours,
            _verdict(order, vq is not None and ql is not None and vq < ql),
        )
        vl, ll = f2.get("max_abs_video_to_last"), f2.get("max_abs_last_to_last")
        row(
            "F2 video->last, last->last",
            PAPER_7B["F2 video->last, last->last"],
            "n/a" if vl is None else f"largest changes {vl:.1f} % and {ll:.1f} % (absolute)",
            _verdict(None if vl is None else max(vl, ll) <= 5, vl is not None and min(vl, ll) <= 5),
        )
    if "F3" in findings:
        f3 = report["F3"]
        first = f3.get("first_layer_p_true_above_half")
        p_true = {int(k): v for k, v in f3["p_true"].items()}
        ci = {int(k): v for k, v in f3.get("p_true_ci", {}).items()}
        last = max(p_true) if p_true else None
        final = p_true[last] if p_true else float("nan")
        surely = next((layer for layer in sorted(ci) if ci[layer][0] > 0.5), None)
        maybe = next((layer for layer in sorted(ci) if ci[layer][1] > 0.5), None)
        where = f"layer {first} of {L}" if first is not None else "never (mean over questions)"
        if ci and maybe != surely:
            where += (
                f" (by the 95 % intervals: from layer {maybe if maybe is not None else '-'} at the "
                f"earliest, {surely if surely is not None else 'never'} at the latest)"
            )
        elif ci:
            where += " (the 95 % intervals agree)"
        row(
            "F3 p(true option) > 0.5 from layer",
            PAPER_7B["F3 p(true) > 0.5 from layer"],
            where + f"; final p(true) {final:.2f}{_ci_text(ci.get(last), digits=2)}",
            # only at the very last layer is "late", not "middle-to-late": partly
            _verdict(first is not None and L / 2 <= first < L - 1, first is not None),
        )
        for name, other in f3.get("by_readout", {}).items():
            if name == f3.get("readout", "paper"):
                continue
            at = other.get("first_layer_p_true_above_half")
            could, surely = other.get("first_layer_interval", [None, None])
            text = f"layer {at} of {L}" if at is not None else "never (mean over questions)"
            if could != surely or at is None:
                text += f" (95 % intervals: from layer {could if could is not None else '-'} at the earliest, "
                text += f"{surely if surely is not None else 'never'} at the latest)"
            row(
                f"F3 p(true option) > 0.5 from layer — {READOUT_NAMES.get(name, name)}",
                PAPER_7B["F3 p(true) > 0.5 from layer"] + " (its own readout)",
                text,
                _verdict(at is not None and L / 2 <= at < L - 1, at is not None),
            )
    if "F4" in findings:
        f4 = report["F4"]
        acc = f4["accuracy"]
        kept_headline = f4.get("edges_kept_headline")
        if kept_headline:
            kept = kept_headline["mean"]
            scope = "the learned tasks" if report.get("learned", {}).get("tasks") else "all tasks (none is learned)"
            kept_text = (
                f"{100 * kept:.1f} %{_ci_text(kept_headline['ci'], 100)} (mean over the "
                f"{kept_headline['questions']} questions of {scope}; per question "
                f"{100 * kept_headline['min']:.1f}-{100 * kept_headline['max']:.1f} %)"
            )
        else:
            kept = f4["edges"].get("mean_kept_fraction", f4["edges"]["kept_fraction"])
            kept_text = f"{100 * kept:.1f} % (mean over questions of exact counts)"
        row("F4 edges kept", PAPER_7B["F4 edges kept"], kept_text, _verdict(kept <= 0.45))
        learned_acc = f4.get("accuracy_headline_tasks") if report.get("learned", {}).get("tasks") else None
        judged = learned_acc or acc  # the verdict is on the learned tasks (all tasks when none is learned)
        full, path, rand = (judged.get(k, float("nan")) for k in ("full", "pathways", "random"))

        def accuracies(values, cis):
            return " / ".join(
                f"{100 * values.get(k, float('nan')):.1f}{_ci_text((cis or {}).get(k), 100)}"
                for k in ("full", "pathways", "random")
            )

        ours = f"{accuracies(acc, f4.get('accuracy_ci'))} (all tasks)"
        if learned_acc:
            ours = f"learned tasks {accuracies(learned_acc, f4.get('accuracy_headline_tasks_ci'))}; " + ours
        paired = f4.get("paired_headline_tasks")
        if paired and "pathways" in paired and "random" in paired:
            ours += "; paired vs full: " + ", ".join(
                f"{k} {100 * paired[k]['minus_full']:+.1f}{_ci_text(paired[k]['ci'], 100, signed=True)} points"
                for k in ("pathways", "random")
            )
            sure = paired["pathways"]["ci"][0] >= -0.03 * full - 1e-12 and paired["random"]["ci"][1] <= -0.10 + 1e-12
        else:  # a report from before the paired intervals: point estimates, said so
            ours += " (point estimates; no paired intervals in this report)"
            sure = path >= 0.97 * full and rand <= full - 0.10
        row(
            "F4 accuracy full / pathways / random",
            PAPER_7B["F4 accuracy full / pathways / random"],
            ours,
            _verdict(sure, path >= 0.97 * full),
        )
    return rows


def format_report(report: dict) -> str:
    """The report as a table beside the paper's 7B numbers."""
    f1, f2, f3, f4 = report["F1"], report["F2"], report["F3"], report["F4"]
    acc = report["accuracy"]
    lines = [
        f"model {report['model']} ({report['quant']}, {report['num_layers']} layers), "
        f"{len(report['samples'])} questions, {report['seconds']:.0f} s"
        + (
            " (" + ", ".join(f"{name} {sec:.0f} s" for name, sec in report["seconds_by_part"].items()) + ")"
            if report.get("seconds_by_part")
            else ""
        ),
        "",
        f"{'task':<20}{'accuracy':>10}{'control':>10}{'non-letter':>12}{'options rule':>14}",
    ]
    for task, a in acc.items():
        c = report.get("control_accuracy", {}).get(task)
        other = report.get("accuracy_options", {}).get(task)
        non_letter = report.get("non_letter_share", {}).get(task)
        lines.append(
            f"{task:<20}{100 * a:>9.1f}%{'' if c is None else f'{100 * c:>9.1f}%':>10}"
            f"{'' if non_letter is None else f'{100 * non_letter:>11.1f}%':>12}"
            # the option-letter rule's accuracy, shown where it differs from the paper's
            f"{f'{100 * other:>13.1f}%' if other is not None and abs(other - a) > 1e-12 else '':>14}"
        )
    learned = bool(report.get("learned", {}).get("tasks"))
    headline_label = " (learned)" if learned else ""  # F1-F3 are on the learned tasks already
    kept = (f4.get("edges_kept_headline") or {}).get(
        "mean", f4["edges"].get("mean_kept_fraction", f4["edges"]["kept_fraction"])
    )
    f4_accuracy = (f4.get("accuracy_headline_tasks") if learned else None) or f4["accuracy"]

    def fmt(v, unit="%"):
        return "n/a" if v is None else f"{v:+.1f}{unit}" if unit == "%" else str(v)

    rows = [
        (
            "F1 cross-frame trough",
            f"{fmt(f1.get('trough'))} at layer {f1.get('trough_center')}",
            PAPER_7B["F1 cross-frame trough (% change)"],
        ),
        ("F1 last third, max |%|", fmt(f1.get("max_abs_last_third")), "~0"),
        ("F1 control trough", fmt(f1.get("control_trough")), PAPER_7B["F1 image-only control"]),
        (
            "F2 v->q / q->last troughs at",
            f"{f2['video_to_question_trough_center']} / {f2['question_to_last_trough_center']}",
            "v->q before q->last",
        ),
        (
            "F2 max |%| v->last, last->last",
            f"{fmt(f2['max_abs_video_to_last'])}, {fmt(f2['max_abs_last_to_last'])}",
            PAPER_7B["F2 video->last, last->last"],
        ),
        (
            "F3 p(true) > 0.5 from layer",
            fmt(f3["first_layer_p_true_above_half"], ""),
            PAPER_7B["F3 p(true) > 0.5 from layer"],
        ),
        ("F4 edges kept" + headline_label, f"{100 * kept:.1f} %", PAPER_7B["F4 edges kept"]),
        (
            "F4 acc full/pathways/random" + headline_label,
            " / ".join(f"{100 * f4_accuracy.get(k, float('nan')):.1f}" for k in ("full", "pathways", "random")),
            PAPER_7B["F4 accuracy full / pathways / random"],
        ),
    ]
    lines += ["", f"{'':<40}{'this model':<28}{'paper (LLaVA-NeXT-7B)'}"]
    lines += [f"{name:<40}{ours:<28}{paper}" for name, ours, paper in rows]
    return "\n".join(lines)


def add_command(sub) -> None:
    """``python -m flowkit fidelity``: registered with the CLI through the ``flowkit.commands`` entry point."""
    p = sub.add_parser("fidelity", help="measure the four findings on the kit's small model (writes a JSON report)")
    p.add_argument("--model", default=KIT_MODEL)
    p.add_argument("--control", default=KIT_CONTROL, help="image-only control ('' to skip)")
    p.add_argument("--quant", default="nf4", choices=("nf4", "bf16", "fp32"))
    p.add_argument("--per-task", type=int, default=None, help="questions per task (default: the whole split)")
    p.add_argument(
        "--sweep-per-task",
        type=int,
        default=20,
        help="correctly answered questions per learned task used in sweeps (flowkit.analysis.learned)",
    )
    p.add_argument(
        "--other-per-task",
        type=int,
        default=6,
        help="correctly answered questions per task that is not learned (swept, charted apart)",
    )
    p.add_argument("--centers-step", type=int, default=1, help="sweep every n-th window centre")
    p.add_argument("--random-seeds", type=int, default=5)
    p.add_argument("--out", default=None, help="JSON path (default data/results/fidelity.json)")
    p.add_argument(
        "--quantization-only",
        action="store_true",
        help="run only the NF4 vs bf16 comparison (writes quantization.csv.gz and the report's 'quantization')",
    )
    p.add_argument("--quantization-per-task", type=int, default=QUANTIZATION_PER_TASK, metavar="N")
    p.add_argument(
        "--card-only",
        action="store_true",
        help="run nothing: rewrite the shipped model card's findings table from the stored report",
    )
    p.set_defaults(run=_run_command)


#: the model card's block that :func:`write_card_findings` rewrites from the stored report
CARD_FINDINGS = ("<!-- findings: written by `python -m flowkit fidelity --card-only` -->", "<!-- end of findings -->")


def card_findings(report: dict) -> str:
    """The model card's findings (markdown): the same rows, numbers and verdicts as the chapters'
    comparison tables (:func:`paper_comparison`), and the run the report describes."""

    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| finding | paper (7B) | this model | verdict | rule |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(cell(v) for v in row)} |" for row in paper_comparison(report)]
    learned = ", ".join(report["learned"]["headline_tasks"])
    lines += [
        "",
        f"Computed by `python -m flowkit fidelity` (`data/results/`): fingerprint {report['fingerprint']} "
        f"({report['quant']} on the `{report['numeric_path']}` numeric path), {len(report['samples'])} questions; "
        f"headline numbers over the learned tasks ({learned}); random-mask seeds {report['random_seeds']}; "
        f"the run took {report['seconds'] / 60:.0f} min on 2 CPU cores.",
    ]
    return "\n".join(lines)


def write_card_findings(card: str | os.PathLike, report: dict) -> bool:
    """Rewrite the findings block of a model card (between the :data:`CARD_FINDINGS` markers) from
    ``report``; True when the file changed. Refuses a card without the markers, saying how to add them."""
    from flowkit.atomic_files import atomic_write_text

    path = Path(card)
    text = path.read_text()
    start, end = CARD_FINDINGS
    if start not in text or end not in text:
        raise FlowkitError(f"{path} has no findings block: add the lines {start!r} and {end!r} where it goes")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{card_findings(report)}\n{end}{tail}"
    if new != text:
        atomic_write_text(path, new)
    return new != text


#: questions per learned task in the NF4 vs bf16 comparison (the first swept ones)
QUANTIZATION_PER_TASK = 10


def run_quantization(
    model: str = KIT_MODEL, per_task: int = QUANTIZATION_PER_TASK, folder=None, progress: bool = True
) -> dict:
    """NF4 vs bf16 with power: the cross-frame sweep of the first ``per_task`` swept questions of each
    learned task (stored report) under both formats (:mod:`flowkit.analysis.quantization`). Writes
    ``quantization.csv.gz`` and the agreement into the report's ``"quantization"`` entry, all or nothing."""
    import json

    from flowkit.analysis.quantization import quantization_agreement, quantization_sweeps
    from flowkit.data import shipped_questions
    from flowkit.model.videollm import load_videollm

    if per_task < 1:
        raise FlowkitError(f"per_task must be at least 1, got {per_task}")
    folder = Path(folder) if folder is not None else data_path("results")
    report_path = folder / "fidelity.json"
    if not report_path.is_file():
        raise FlowkitError(f"no stored report in {folder.name}/: run `python -m flowkit fidelity` first")
    report = json.loads(report_path.read_text())
    started = time.time()
    nf4 = load_videollm(model, quant="nf4")
    if nf4.fingerprint != report["fingerprint"]:
        raise FlowkitError(
            f"the stored report is another model's ({report['fingerprint']}, this one {nf4.fingerprint}): "
            "rerun `python -m flowkit fidelity` first"
        )
    bf16 = load_videollm(model, quant="bf16")
    swept = set(report["sweep_samples"])
    samples = first_per_task(
        [s for s in shipped_questions() if s.id in swept], per_task, tasks=report["learned"]["headline_tasks"]
    )
    table = quantization_sweeps({"nf4": nf4, "bf16": bf16}, samples, progress=progress)
    summary = quantization_agreement(table)
    summary.update(seconds=time.time() - started, model=model, per_task=per_task)
    report["quantization"] = summary
    with atomic_paths([folder / "quantization.csv.gz", report_path]) as (tmp_table, tmp_report):
        write_csv_gz(tmp_table, table)
        Path(tmp_report).write_text(json.dumps(report, indent=2, sort_keys=True, default=float))
    return summary


def _run_command(args) -> int:
    if args.quantization_only:
        from flowkit.analysis.quantization import format_agreement

        print(format_agreement(run_quantization(model=args.model, per_task=args.quantization_per_task)))
        return 0
    if args.card_only:
        import json

        stored = data_path("results") / "fidelity.json"
        if not stored.is_file():
            raise FlowkitError(f"no stored report ({stored.name}): run `python -m flowkit fidelity` first")
        card = data_path("models") / KIT_MODEL / "README.md"
        changed = write_card_findings(card, json.loads(stored.read_text()))
        print(f"{card.name}: findings {'rewritten' if changed else 'already'} from the stored report")
        return 0
    report = run_fidelity(
        model=args.model,
        control=args.control or None,
        quant=args.quant,
        per_task=args.per_task,
        sweep_per_task=args.sweep_per_task,
        other_per_task=args.other_per_task,
        centers_step=args.centers_step,
        random_seeds=tuple(range(args.random_seeds)),
        out=args.out or "default",
    )
    print(format_report(report))
    return 0
