"""``python -m flowkit pathway-study``: find the kit model's pathways automatically, then test them on questions the search never saw.

The study behind chapter 04's "find the pathways" section, stored beside the fidelity report:

1. **Search** (:func:`flowkit.analysis.pathway_search.search_pathways`) on ``search_per_task``
   questions of each learned task of the shipped split (the fidelity report's learned tasks): a
   seeded random sample (the default, ``search_split="random"``, :func:`split_questions`) or the
   first ones; the stored study's rule is in its ``search["rule"]``; timed. With several candidate
   rules (``rules``, ``--choose-rule``) each one searches, and the held-out questions choose between
   their masks (:func:`choose_rule`, recorded in ``rule_choice``); the rest of the study uses the
   chosen mask, so the held-out questions are validation and only the test split chose nothing.
2. **Gradient vs exact**: every gate knocked out alone on the same questions
   (:func:`~flowkit.analysis.pathway_search.single_gate_effects`, the exhaustive alternative to the
   attribution scores), timed: the rank correlation between ``-score`` and the exact change in
   log p(answer), and the cost ratio of the search to that exhaustive sweep.
3. **Held out**: every other question of those tasks under the found mask, the window masks
   (the window rule read off the stored sweeps at several fractions; the F4 mask is the rule at
   0.5), the paper's four presets' windows scaled to this depth, the paper's random control
   sized to the found mask on each question and at fixed fractions (5 seeds each), and points
   along the search's path: one table, from which the held-out report and the faithfulness
   curve are both summaries.
4. **Test** (unless ``test_seed=None``): a fresh split rendered with ``test_seed`` (never used by
   any training, search or selection: :data:`TEST_SEED`), ``test_per_task`` questions of each
   learned task, under the masks of the held-out report. The held-out questions have chosen
   between search rules; these have chosen nothing.

Writes ``pathway_search.json`` (the found mask, the search's path and scores, the masks as
data, the correlation, the timings, the summaries), ``pathway_search.csv.gz`` (one row per
held-out question and mask) and ``pathway_search_test.csv.gz`` (one row per test question and
mask) into ``data/results``. ``flowkit.course.results.verify(vllm, "pathway_search")`` (and
``"pathway_search_test"``) recomputes a sample of each table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from flowkit.analysis import experiments
from flowkit.analysis.pathway_search import (
    FULL,
    AccuracyRule,
    PAPER_PRESETS,
    MaskCondition,
    conditions_table,
    curve_conditions,
    rank_correlation,
    search_pathways,
    single_gate_effects,
    summarize_conditions,
)
from flowkit.atomic_files import atomic_paths, write_csv_gz
from flowkit.data.sample import first_per_task
from flowkit.errors import FlowkitError
from flowkit.locations import data_path
from flowkit.model.named_models import KIT_MODEL
from flowkit.course.results import STUDY_JSON, check_model, load_report, load_table

STUDY_TABLE = "pathway_search"
TEST_TABLE = "pathway_search_test"
#: the fresh test split's seed: no training run, search, evaluation or selection used it before
#: the study did (the shipped split is 1234; training 1-5; evaluation during training 4321; the
#: tuned lens 4242; the model comparison's fresh split 60221)
TEST_SEED = 60227
TEST_PER_TASK = 50
#: what a stored study means (bump when a definition changes)
STUDY_VERSION = 1
SEARCH_PER_TASK = 10
WINDOW_FRACTIONS = (0.25, 0.5, 0.75)
RANDOM_FRACTIONS = (0.25, 0.5, 0.75)
#: the F4 mask: the window rule at fraction 0.5 (flowkit.analysis.experiments.windows_from_sweeps)
F4_LABEL = "window rule f=0.5"
#: the paper's 7B windows scaled to the model's depth
PAPER_7B_LABEL = "llava-next-7b-video-ft"
#: a gate whose exact knockout lowers log p(answer) by more than this is "large" when counting misses
LARGE_EFFECT = 0.5


#: how the search questions are picked from each task: its first ones, or a seeded random sample
SEARCH_SPLITS = ("first", "random")


def split_questions(
    samples,
    tasks,
    search_per_task: int = SEARCH_PER_TASK,
    held_out_per_task: int | None = None,
    how: str = "first",
    seed: int = 0,
):
    """``(search, held_out)``: ``search_per_task`` questions of each task -- its first ones
    (``how="first"``) or a random sample drawn with ``seed`` (``how="random"``, in question order) --
    and the rest of those tasks (the first ``held_out_per_task`` of each; None: all).

    Measured on the kit's model (10 search questions a task, 200 held out, ``AccuracyRule(loss_margin=5)``):
    the first ten action-antonym questions answer with no "shrinks", and a cut that tilts the model
    towards one option text passed them (found mask: 54.2 % of edges kept, held-out accuracy 74.5 ->
    67.5 %); a random sample of the same size caught it (56.4 % kept, 75.0 -> 68.0 %, action antonym
    98 -> 90 % instead of 98 -> 70 %)."""
    import random

    if how not in SEARCH_SPLITS:
        raise FlowkitError(f"how must be one of {', '.join(SEARCH_SPLITS)}, got {how!r}")
    if how == "first":
        search = first_per_task(samples, search_per_task, tasks=tasks)
    else:
        search = []
        for task in tasks:
            of_task = first_per_task(samples, None, tasks=[task])
            picked = {s.id for s in random.Random(seed).sample(of_task, min(search_per_task, len(of_task)))}
            search += [s for s in of_task if s.id in picked]
    chosen = {s.id for s in search}
    rest = [s for s in first_per_task(samples, None, tasks=tasks) if s.id not in chosen]
    held = first_per_task(rest, held_out_per_task, tasks=tasks)
    if not search or not held:
        raise FlowkitError(f"the tasks {list(tasks)} leave no search or no held-out questions")
    return search, held


def gradient_vs_exact(per_question_scores: pd.DataFrame, effects: pd.DataFrame) -> dict:
    """How well the attribution scores rank the exact single-gate knockouts.

    ``-score`` (the first-order prediction of what cutting does to log p) against the exact
    ``delta_log_p``: Spearman's rank correlation pooled over (question, gate) and its median over
    questions; ``misses``: gates whose exact knockout lowers log p by more than
    :data:`LARGE_EFFECT` while the gradient predicts no harm (score <= 0), as a count and a share
    of all large effects (attribution misses saturated effects; the search's exact checks catch them).
    """
    merged = per_question_scores.merge(effects, on=["sample", "edges", "layer"], how="inner")
    if merged.empty:
        raise FlowkitError("no question has both gradient scores and exact knockouts")
    per_question = [
        rank_correlation(-g["score"], g["delta_log_p"])
        for _, g in merged.groupby("sample", sort=True)
        if g["delta_log_p"].nunique() > 1
    ]
    large = merged["delta_log_p"] < -LARGE_EFFECT
    missed = large & (merged["score"] <= 0)
    return {
        "spearman_pooled": rank_correlation(-merged["score"], merged["delta_log_p"]),
        "spearman_median_per_question": float(np.median(per_question)) if per_question else float("nan"),
        "spearman_per_question_range": [float(min(per_question)), float(max(per_question))] if per_question else [],
        "questions": int(merged["sample"].nunique()),
        "gates": int(merged.groupby("sample").size().iloc[0]),
        "large_effects": int(large.sum()),
        "large_effects_missed": int(missed.sum()),
        "large_effect_threshold": LARGE_EFFECT,
    }


def study_conditions(num_layers: int, result, sweep_summary: pd.DataFrame, random_seeds) -> list[MaskCondition]:
    """Every mask the study evaluates on the held-out questions (see the module docstring)."""
    found = result.spec
    rule = {
        f"window rule f={f:g}": experiments.windows_from_sweeps(sweep_summary, num_layers, fraction=f)
        for f in WINDOW_FRACTIONS
    }
    conditions = [MaskCondition("found", "found", spec=found)]
    conditions += [MaskCondition("random", "random (found size)", random_like=found, seed=s) for s in random_seeds]
    conditions += [
        c
        for c in curve_conditions(num_layers, result, rule, PAPER_PRESETS, RANDOM_FRACTIONS, random_seeds)
        if not (c.family == "search" and c.spec == found)  # the path's last point is the found mask
    ]
    return conditions


#: the masks of the held-out report (and of the test)
REPORTED = ("full", "found", F4_LABEL, PAPER_7B_LABEL, "random (found size)")


def held_out_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The held-out report: the full model, the found mask, the F4 window mask, the paper's 7B windows
    and the paper's random control sized to the found mask (5 seeds, averaged per question)."""
    picked = list(REPORTED)
    summary = summarize_conditions(table[table["condition"].isin(picked)])
    return summary.set_index("condition").loc[[p for p in picked if p in set(summary["condition"])]].reset_index()


def held_out_by_task(table: pd.DataFrame) -> pd.DataFrame:
    """The held-out report per task (same conditions as :func:`held_out_summary`)."""
    parts = []
    for task, group in table.groupby("task", sort=True):
        part = held_out_summary(group)
        part.insert(0, "task", task)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


#: the share of the full model's held-out accuracy a candidate rule's mask must keep to be chosen by size
CHOICE_SHARE = 0.97


def choose_rule(candidates: pd.DataFrame, full_accuracy: float, share: float = CHOICE_SHARE) -> int:
    """Which candidate rule's mask the study keeps (an index into ``candidates``: one row per
    candidate with ``accuracy`` and ``kept_share`` on the held-out questions): among the masks
    whose accuracy is at least ``share`` of the full model's, the one that keeps fewest edges (ties: the
    more accurate);
    when none is, the most accurate (ties: fewer edges kept, then the earlier candidate)."""
    if candidates.empty:
        raise FlowkitError("no candidate rule to choose from")
    ok = candidates[candidates["accuracy"] >= share * full_accuracy - 1e-12]
    if not ok.empty:
        return int(ok.assign(neg=-ok["accuracy"]).sort_values(["kept_share", "neg"], kind="stable").index[0])
    ranked = candidates.assign(neg=-candidates["accuracy"]).sort_values(["neg", "kept_share"], kind="stable")
    return int(ranked.index[0])


def _search_with_choice(vllm, search, held, rules, progress: bool):
    """Search with each rule; with more than one, the held-out questions choose (:func:`choose_rule`).
    Returns ``(result, its search seconds, rule_choice or None, seconds of every search and the choice)``.
    The choice's per-question rows are not stored apart: the chosen mask's are in the held-out table."""
    started = time.perf_counter()
    runs = []
    for rule in rules:
        t0 = time.perf_counter()
        result = search_pathways(vllm, search, progress=progress, rule=rule)
        runs.append((rule, result, time.perf_counter() - t0))
    if len(runs) == 1:
        return runs[0][1], runs[0][2], None, runs[0][2]
    conditions = [MaskCondition("found", f"found, rule {i}", spec=r.spec) for i, (_, r, _) in enumerate(runs)]
    table = conditions_table(vllm, held, conditions, progress=progress)
    summary = summarize_conditions(table).set_index("condition")
    full_accuracy = float(summary.loc["full", "accuracy"])
    rows = pd.DataFrame(
        [
            {
                "rule": rule.to_dict(),
                "search_seconds": seconds,
                "kept_share": float(summary.loc[c.label, "kept_share"]),
                "accuracy": float(summary.loc[c.label, "accuracy"]),
                "lo": float(summary.loc[c.label, "lo"]),
                "hi": float(summary.loc[c.label, "hi"]),
                "search_accuracy": result.summary()["search_accuracy"],
            }
            for (rule, result, seconds), c in zip(runs, conditions)
        ]
    )
    chosen = choose_rule(rows, full_accuracy)
    choice = {
        "criterion": f"fewest edges kept among the masks with held-out accuracy >= {CHOICE_SHARE:g} x full's; "
        "else the most accurate",
        "full_accuracy": full_accuracy,
        "candidates": rows.to_dict("records"),
        "chosen": chosen,
    }
    return runs[chosen][1], runs[chosen][2], choice, time.perf_counter() - started


def run_pathway_study(
    model: str = KIT_MODEL,
    quant: str = "nf4",
    search_per_task: int = SEARCH_PER_TASK,
    random_seeds=(0, 1, 2, 3, 4),
    exhaustive: bool = True,
    out: str | os.PathLike | None = "default",
    progress: bool = True,
    held_out_per_task: int | None = None,
    results: str | os.PathLike | None = None,
    search_split: str = "random",
    rule=None,
    test_seed: int | None = TEST_SEED,
    rules=None,
    test_per_task: int = TEST_PER_TASK,
) -> dict:
    """Run the study (see the module docstring) and write it beside the fidelity report.

    ``results``: the folder of the fidelity report whose learned tasks and sweeps the study reads
    (default ``data/results``); ``out="default"`` writes ``pathway_search.json`` there. ``search_split``:
    how the search questions are picked (:func:`split_questions`); ``rule``: the search's
    :class:`~flowkit.analysis.pathway_search.AccuracyRule` (default: accuracy bound only); ``rules``:
    several candidate rules instead, the held-out questions choosing between them (:func:`choose_rule`);
    ``test_seed``: the fresh test split's seed (None: no test)."""
    from flowkit.data import shipped_questions
    from flowkit.model.videollm import load_videollm

    if len(random_seeds) < 5:
        raise FlowkitError("the random control needs at least 5 seeds")
    started = time.time()
    vllm = load_videollm(model, quant=quant)
    report = load_report(results)
    check_model(vllm, "sweeps", report)  # the window rule reads the stored sweeps of this model
    tasks = report["learned"]["headline_tasks"]
    search, held = split_questions(shipped_questions(), tasks, search_per_task, held_out_per_task, how=search_split)
    if rules is not None and rule is not None:
        raise FlowkitError("give one rule or several candidate rules, not both")
    rules = list(rules) if rules is not None else [rule if rule is not None else AccuracyRule()]
    if not rules:
        raise FlowkitError("give at least one candidate rule")
    result, search_s, rule_choice, search_all_s = _search_with_choice(vllm, search, held, rules, progress)
    correlation, exhaustive_s = None, None
    if exhaustive:
        t0 = time.perf_counter()
        effects = single_gate_effects(vllm, search, progress=progress)
        exhaustive_s = time.perf_counter() - t0
        correlation = gradient_vs_exact(result.per_question_scores, effects)
    sweeps = load_table("sweeps", results)
    sweep_summary = experiments.summarize(sweeps[sweeps["task"].isin(tasks)])
    conditions = study_conditions(vllm.num_layers, result, sweep_summary, random_seeds)
    t0 = time.perf_counter()
    table = conditions_table(vllm, held, conditions, progress=progress)
    held_out_s = time.perf_counter() - t0
    test_table, test_s = None, None
    if test_seed is not None:
        from flowkit.data import rendered_questions

        t0 = time.perf_counter()
        test = rendered_questions(test_seed, test_per_task, tasks)
        reported = [c for c in conditions if c.label in REPORTED]
        test_table = conditions_table(vllm, test, reported, progress=progress)
        test_s = time.perf_counter() - t0
    study = {
        "version": STUDY_VERSION,
        "model": model,
        "quant": vllm.quant,
        "numeric_path": vllm.numeric_path,
        "fingerprint": vllm.fingerprint,
        "tasks": tasks,
        "search_samples": [s.id for s in search],
        "search_split": search_split,
        "held_out_questions": len(held),
        "found": result.spec.to_dict(),
        "search": result.summary(),
        "rule_choice": rule_choice,
        "path": result.path.to_dict("records"),
        "scores": result.scores.to_dict("records"),
        "conditions": [FULL.to_dict()] + [c.to_dict() for c in conditions],
        "random_seeds": list(random_seeds),
        "gradient_vs_exact": correlation,
        "seconds": {
            "search": search_s,
            "search_all_rules": search_all_s,  # every candidate rule's search and the held-out choice
            "exhaustive_single_gates": exhaustive_s,
            "search_to_exhaustive": (search_s / exhaustive_s) if exhaustive_s else None,
            "held_out": held_out_s,
            "test": test_s,
            "total": time.time() - started,
        },
        "held_out": held_out_summary(table).to_dict("records"),
        "held_out_by_task": held_out_by_task(table).to_dict("records"),
        "curve": summarize_conditions(table).to_dict("records"),
    }
    if test_table is not None:
        study["test_split"] = {
            "seed": test_seed,
            "per_task": test_per_task,
            "tasks": tasks,
            "questions": int(test_table["sample"].nunique()),
            "render": f"python -m flowkit.data generate --out DIR --seed {test_seed} --per-task {test_per_task} "
            f"--tasks {' '.join(tasks)}",
        }
        study["test"] = held_out_summary(test_table).to_dict("records")
        study["test_by_task"] = held_out_by_task(test_table).to_dict("records")
    if out == "default":
        out = (Path(results) if results is not None else data_path("results")) / STUDY_JSON
    if out is not None:
        write_study(Path(out), study, table, test_table)
    return study


def write_study(path: Path, study: dict, table: pd.DataFrame, test_table: pd.DataFrame | None = None) -> None:
    """The JSON and, beside it, the tables (byte-reproducible gzip), all or nothing. Without a test
    table a stale test table beside it is removed, so the folder never mixes two studies."""
    tables = [(path.parent / f"{STUDY_TABLE}.csv.gz", table)]
    stale = path.parent / f"{TEST_TABLE}.csv.gz"
    if test_table is not None:
        tables.append((stale, test_table))
    with atomic_paths([p for p, _ in tables] + [path]) as tmp:
        for (_, frame), tmp_csv in zip(tables, tmp[:-1]):
            write_csv_gz(tmp_csv, frame)
        Path(tmp[-1]).write_text(json.dumps(study, indent=1, sort_keys=True, default=float))
    if test_table is None and stale.exists():
        stale.unlink()


def _mask_line(row: dict) -> str:
    return (
        f"  {row['condition']:<24} edges kept {100 * row['kept_share']:5.1f} %   accuracy {100 * row['accuracy']:5.1f} % "
        f"[{100 * row['lo']:.1f}, {100 * row['hi']:.1f}]"
    )


def rule_text(rule: dict) -> str:
    """A search rule (:meth:`AccuracyRule.to_dict`) in words."""
    level = 100 * rule.get("level", 0.95)
    words = (
        f"keep a cut while the lower end of the {level:g} % paired bootstrap interval of accuracy minus full's is "
        f">= -{100 * rule['margin']:g} points"
    )
    if rule.get("count_gains") is False:
        words += " (answers lost only: gains never pay for losses)"
    if rule.get("loss_margin") is not None:
        words += f" and that of the mean loss in p(answer) >= -{rule['loss_margin']:g} %"
    return words + " on the search questions"


def format_study(study: dict) -> str:
    """A few lines: the found mask's size and accuracy on held-out questions beside the window masks and random."""
    lines = [
        f"searched on {len(study['search_samples'])} questions in {study['seconds']['search']:.0f} s; "
        f"held out: {study['held_out_questions']} questions"
    ]
    rule = study.get("search", {}).get("rule")
    if rule:
        lines.append("  rule: " + rule_text(rule))
    choice = study.get("rule_choice")
    if choice:
        for i, row in enumerate(choice["candidates"]):
            rule = row["rule"]
            name = "losses only" if rule.get("count_gains") is False else "net"
            lines.append(
                f"  rule {i} ({name}, loss bound {rule.get('loss_margin') or 'none'}): edges kept {100 * row['kept_share']:5.1f} %   "
                f"held-out accuracy {100 * row['accuracy']:5.1f} %" + ("   <- chosen" if i == choice["chosen"] else "")
            )
    lines += [_mask_line(row) for row in study["held_out"]]
    if study.get("test"):
        split = study["test_split"]
        lines.append(
            f"test: {split['questions']} fresh questions (seed {split['seed']}), never used to choose anything"
        )
        lines += [_mask_line(row) for row in study["test"]]
    corr = study.get("gradient_vs_exact")
    if corr:
        lines.append(
            f"gradient vs exact single-gate knockouts: Spearman {corr['spearman_pooled']:.2f} pooled, "
            f"median {corr['spearman_median_per_question']:.2f} per question; search / exhaustive time "
            f"{study['seconds']['search_to_exhaustive']:.2f}"
        )
        lines.append(
            f"  of the {corr['large_effects']} single knockouts that lower log p(answer) by more than "
            f"{corr['large_effect_threshold']:g}, the gradient predicted no harm for {corr['large_effects_missed']}"
        )
    return "\n".join(lines)


def add_command(sub) -> None:
    """``python -m flowkit pathway-study``: registered through the ``flowkit.commands`` entry point."""
    p = sub.add_parser(
        "pathway-study",
        help="search the kit model's pathways and test them on held-out questions (writes data/results/pathway_search.*)",
    )
    p.add_argument("--model", default=KIT_MODEL)
    p.add_argument("--quant", default="nf4", choices=("nf4", "bf16", "fp32"))
    p.add_argument("--search-per-task", type=int, default=SEARCH_PER_TASK)
    p.add_argument(
        "--search-split",
        choices=SEARCH_SPLITS,
        default="random",
        help="search on a seeded random sample of each task's questions (default) or on its first ones",
    )
    p.add_argument(
        "--loss-margin",
        type=float,
        default=None,
        help="also bound the mean loss in p(answer) during the search, in percent (default: no such bound)",
    )
    p.add_argument(
        "--losses-only",
        action="store_true",
        help="the search's accuracy bound counts answers lost only (gains never pay for losses)",
    )
    p.add_argument(
        "--choose-rule",
        action="store_true",
        help="search with both accuracy bounds (net, and losses only; the same --loss-margin) and keep the mask "
        "the held-out questions prefer (fewest edges at >= 97 %% of full accuracy); the test split still chooses nothing",
    )
    p.add_argument("--random-seeds", type=int, default=5)
    p.add_argument(
        "--test-seed",
        type=int,
        default=TEST_SEED,
        help=f"seed of the fresh test split (default {TEST_SEED}, used by nothing else); "
        "pick one no training or selection used",
    )
    p.add_argument("--test-per-task", type=int, default=TEST_PER_TASK, help="test questions per learned task")
    p.add_argument("--no-test", action="store_true", help="no fresh test split")
    p.add_argument("--no-exhaustive", action="store_true", help="skip the exact single-gate sweep (no correlation)")
    p.add_argument("--out", default=None, help="JSON path (default data/results/pathway_search.json)")
    p.set_defaults(run=_run_command)


def _run_command(args: argparse.Namespace) -> int:
    if args.test_per_task < 1:
        raise FlowkitError(f"--test-per-task must be at least 1, got {args.test_per_task}")
    if args.search_per_task < 1:
        raise FlowkitError(f"--search-per-task must be at least 1, got {args.search_per_task}")
    if args.choose_rule and args.losses_only:
        raise FlowkitError("--choose-rule already tries the losses-only bound beside the net one: drop --losses-only")
    study = run_pathway_study(
        model=args.model,
        quant=args.quant,
        search_per_task=args.search_per_task,
        random_seeds=tuple(range(args.random_seeds)),
        exhaustive=not args.no_exhaustive,
        out=args.out or "default",
        search_split=args.search_split,
        rule=None if args.choose_rule else AccuracyRule(loss_margin=args.loss_margin, count_gains=not args.losses_only),
        rules=[AccuracyRule(loss_margin=args.loss_margin, count_gains=g) for g in (True, False)]
        if args.choose_rule
        else None,
        test_seed=None if args.no_test else args.test_seed,
        test_per_task=args.test_per_task,
    )
    print(format_study(study))
    return 0


__all__ = [
    "F4_LABEL",
    "REPORTED",
    "TEST_SEED",
    "PAPER_7B_LABEL",
    "SEARCH_SPLITS",
    "choose_rule",
    "format_study",
    "rule_text",
    "gradient_vs_exact",
    "held_out_by_task",
    "held_out_summary",
    "run_pathway_study",
    "split_questions",
    "study_conditions",
]
