"""Sweeps: many edge groups x layer windows x samples, as one tidy DataFrame.

A sweep runs here (the default) or on a Ray cluster (``executor=``, see
:func:`make_executor` and :mod:`flowkit.analysis.distributed`); either way the work unit is one whole
question (:mod:`flowkit.analysis.sweep_work`) and the numbers are the same.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from collections.abc import Iterable, Sequence

import pandas as pd
from tqdm.auto import tqdm

from flowkit.analysis.distributed import ADDRESS_FORMS, RayExecutor
from flowkit.analysis.result_cache import ResultCache
from flowkit.analysis.sweep_work import ExecutorAddressError, LocalExecutor, QuestionJob
from flowkit.intervention.edge_groups import PAPER_EDGE_GROUPS
from flowkit.intervention.spec import KnockoutSpec, LayerWindow
from flowkit.prompts.readout import PAPER_PREDICTION, AnswerDistribution, check_prediction_rule, percent_change
from flowkit.prompts.spans import OPTION_LETTERS

COLUMNS = [
    "sample",
    "task",
    "edge_group",
    "center",
    "layers",
    "spec",
    "answer",
    "predicted_base",
    "p_base",
    "p_new",
    "pct_change",
    "predicted_after",
    "correct_base",
    "correct_after",
    "letter_base",
    "letter_after",
    "correct_base_options",
    "correct_after_options",
]


#: The true/false columns (typed even when no question was swept, so they always work as masks).
BOOL_COLUMNS = (
    "correct_base",
    "correct_after",
    "letter_base",
    "letter_after",
    "correct_base_options",
    "correct_after_options",
)


def correct_columns(prediction: str = PAPER_PREDICTION) -> tuple[str, str]:
    """The sweep table's ``(correct before, correct after)`` columns under a prediction rule
    (:data:`flowkit.prompts.readout.PREDICTION_RULES`): ``"vocabulary"`` (the paper's, default)
    ``correct_base`` / ``correct_after``; ``"options"`` ``correct_base_options`` / ``correct_after_options``."""
    if check_prediction_rule(prediction) == "vocabulary":
        return "correct_base", "correct_after"
    return "correct_base_options", "correct_after_options"


def window_specs(
    edge_groups: Sequence[str], centers: Iterable[int], size: int = 9
) -> list[tuple[str, int, KnockoutSpec]]:
    """``(edge_group, centre, spec)`` for every edge group and window centre."""
    return [
        (edge_group, center, KnockoutSpec.single(edge_group, LayerWindow(center, size)))
        for edge_group in edge_groups
        for center in centers
    ]


def make_executor(executor="local", num_workers: int | None = None, **options):
    """An executor from its address (see :mod:`flowkit.analysis.distributed`), or ``executor`` itself if it is one.

    ``num_workers`` and ``options`` go to :class:`RayExecutor` (``torch_threads``,
    ``max_attempts``, ``question_timeout_s``, ``start_timeout_s``, ``log_to_driver``); the
    local executor has no options and ignores them. A malformed address raises
    :class:`ExecutorAddressError` at once; nothing is contacted until a sweep starts (or
    :meth:`RayExecutor.connect` is called).
    """
    if isinstance(executor, (LocalExecutor, RayExecutor)):
        if num_workers is not None and isinstance(executor, RayExecutor):
            executor.num_workers = num_workers
        return executor
    if executor is None or executor == "local":
        return LocalExecutor()
    if not isinstance(executor, str):
        raise ExecutorAddressError(f"executor must be an address string ({ADDRESS_FORMS}), got {executor!r}")
    return RayExecutor(executor, num_workers=num_workers, **options)


def sweep(
    vllm,
    samples,
    edge_groups: Sequence[str] = PAPER_EDGE_GROUPS,
    centers: Iterable[int] | None = None,
    size: int = 9,
    cache: ResultCache | str | os.PathLike | None = None,
    progress: bool = True,
    replay: bool = True,
    executor="local",
    num_workers: int | None = None,
) -> pd.DataFrame:
    """Knock out each edge group in each layer window on each sample.

    Returns one row per (sample, edge group, window centre) with the probability of the
    baseline's predicted option before (``p_base``) and after (``p_new``), the paper's
    ``pct_change``, and whether the answer is correct before and after: ``correct_base`` /
    ``correct_after`` under the paper's rule (the whole vocabulary's top token is the true
    letter), ``letter_base`` / ``letter_after`` whether that top token is a letter at all, and
    ``correct_base_options`` / ``correct_after_options`` under the option-letter rule. Average
    ``pct_change`` over rows with ``correct_base`` to follow the paper (:func:`summarize`).

    Args:
        vllm: a :class:`flowkit.VideoLLM`, or a :class:`flowkit.analysis.sweep_work.ModelSource`
            (what to load: a Ray sweep then never loads the model on the driver).
        samples: :class:`flowkit.data.Sample` objects (they must know their answer).
        edge_groups: edge groups to cut (default: the paper's five).
        centers: window centres (default: every layer).
        size: window size (the paper uses 9).
        cache: a folder or :class:`ResultCache`; results found there are not recomputed,
            and each question's results are written there (atomically) as soon as it is done,
            so a sweep stopped for any reason resumes where it stopped.
        replay: each question's :class:`flowkit.intervention.session.Session` replays only what a spec
            changes (exact to float rounding, faster); ``False``: one full forward per spec.
        executor: where questions are evaluated: ``"local"`` (default: this process, no Ray)
            or a Ray cluster — ``"auto"``, ``"ray://HOST:PORT"``, ``"HOST:PORT"`` or
            ``"local-ray:N"`` (see :func:`make_executor`). On Ray each
            worker loads the model once and evaluates whole questions with the same session code,
            batching and torch thread count as this process, so the table is the same.
        num_workers: Ray workers to start (default: one per GPU, or per CPU slot for a CPU
            model, that the cluster offers).

    The returned table's ``attrs["sweep"]`` says how many questions were computed and how
    many came from the cache (and, on Ray, the workers, retries and timings).
    """

    runner = make_executor(executor, num_workers=num_workers)
    samples = list(samples)
    centers = None if centers is None else list(centers)
    started = time.perf_counter()
    with runner.session(vllm) as session:  # a Ray address that is wrong fails here, before any work
        num_layers = session.num_layers
        specs = window_specs(edge_groups, range(num_layers) if centers is None else centers, size)
        for _, _, spec in specs:
            spec.layers_touched(num_layers)  # fail fast on a bad window
        if cache is not None and not isinstance(cache, ResultCache):
            cache = ResultCache(cache)
        fingerprint = session.fingerprint if cache is not None else None
        jsons = [spec.to_json() for _, _, spec in specs]
        clean_json = KnockoutSpec().to_json()
        results: dict[int, dict[str, dict]] = {}
        known: dict[int, dict[str, dict]] = {}
        jobs: list[QuestionJob] = []
        bar = tqdm(total=len(samples) * len(specs), desc="knockout sweep", unit="spec", disable=not progress)
        try:
            for index, sample in enumerate(samples):
                found = cache.get_many(fingerprint, sample.id, jsons + [clean_json]) if cache else {}
                missing = [i for i, j in enumerate(jsons) if found.get(j) is None]
                found = {j: payload for j, payload in found.items() if payload is not None}
                if missing or clean_json not in found:
                    known[index] = found
                    jobs.append(QuestionJob(index, sample, tuple(specs[i][2] for i in missing)))
                else:
                    results[index] = found
                    bar.update(len(specs))

            def finished(job: QuestionJob, fresh: dict[str, dict]) -> None:
                if cache:
                    cache.put_many(fingerprint, job.sample.id, fresh)  # as soon as the question is done
                results[job.index] = {**known.pop(job.index), **fresh}
                bar.update(len(specs))

            stats = session.run(jobs, finished, replay=replay)
        finally:
            bar.close()
    rows = [
        row
        for index, sample in enumerate(samples)
        for row in question_rows(sample, specs, jsons, results[index], num_layers)
    ]
    table = pd.DataFrame(rows, columns=COLUMNS).astype({column: bool for column in BOOL_COLUMNS})
    table.attrs["sweep"] = {
        "questions": len(samples),
        "computed": len(jobs),
        "from_cache": len(samples) - len(jobs),
        "seconds": time.perf_counter() - started,
        **stats,
    }
    return table


def question_rows(sample, specs, jsons: Sequence[str], results: dict[str, dict], num_layers: int) -> list[dict]:
    """The table rows of one question from its payloads (clean run included)."""
    true = OPTION_LETTERS.index(sample.answer)
    clean = replace(AnswerDistribution.from_dict(results[KnockoutSpec().to_json()]), true_option=true)
    base_pred = clean.predicted
    rows = []
    for (edge_group, center, spec), j in zip(specs, jsons):
        new = replace(AnswerDistribution.from_dict(results[j]), true_option=true)
        touched = spec.layers_touched(num_layers)
        p_base, p_new = clean.probs[base_pred], new.probs[base_pred]
        rows.append(
            {
                "sample": sample.id,
                "task": sample.task,
                "edge_group": edge_group,
                "center": center,
                "layers": f"{min(touched)}-{max(touched)}",
                "spec": j,
                "answer": sample.answer,
                "predicted_base": OPTION_LETTERS[base_pred],
                "p_base": p_base,
                "p_new": p_new,
                "pct_change": percent_change(p_base, p_new),
                "predicted_after": new.predicted_letter,
                "correct_base": clean.is_correct("vocabulary"),
                "correct_after": new.is_correct("vocabulary"),
                "letter_base": clean.top_is_letter,
                "letter_after": new.top_is_letter,
                "correct_base_options": clean.is_correct("options"),
                "correct_after_options": new.is_correct("options"),
            }
        )
    return rows


def summarize(df: pd.DataFrame, only_correct: bool = True, prediction: str = PAPER_PREDICTION) -> pd.DataFrame:
    """Mean % change per (task, edge group, centre), over correctly answered samples by default.

    "Correctly answered" and every accuracy follow ``prediction`` (:func:`correct_columns`):
    ``"vocabulary"`` (default, the paper's: the whole vocabulary's top token is the true letter; a
    question whose top token is not a letter is wrong and left out of the average) or
    ``"options"`` (the most likely option letter).

    Columns: ``pct_change`` (mean over the rows averaged), ``n`` (those rows), and, over
    *every* question of the group: ``questions``, ``accuracy_before`` and ``accuracy_after``
    (the paper's accuracy after knockout: questions answered correctly both before and after
    the knockout / all questions — ``acc`` in its ``analysis/information_flow_analysis.py``,
    which by default (``--sample_mode correct``) knocks out only correctly answered questions
    and divides by every question), and
    ``still_correct_share`` (flowkit's former ``accuracy_after``: the share of the correctly
    answered questions that stay correct; NaN where none was correct).
    """
    before, after = correct_columns(prediction)
    keys = ["task", "edge_group", "center"]
    df = df.astype({before: bool, after: bool})  # an empty table's columns are objects: masks, not labels
    averaged = df[df[before]] if only_correct else df
    out = averaged.groupby(keys, as_index=False).agg(pct_change=("pct_change", "mean"), n=("pct_change", "size"))
    kept_correct = df.assign(correct_before_and_after=df[before] & df[after])
    accuracy = kept_correct.groupby(keys, as_index=False).agg(
        questions=(after, "size"),
        accuracy_before=(before, "mean"),
        accuracy_after=("correct_before_and_after", "mean"),
    )
    still = df[df[before]].groupby(keys, as_index=False).agg(still_correct_share=(after, "mean"))
    out = out.merge(accuracy, on=keys, how="left").merge(still, on=keys, how="left")
    for column in ("accuracy_before", "accuracy_after"):
        out[column] = out[column].astype(float)
    return out


__all__ = ["COLUMNS", "correct_columns", "make_executor", "question_rows", "summarize", "sweep", "window_specs"]
