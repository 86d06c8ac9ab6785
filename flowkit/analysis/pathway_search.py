"""Find the pathways automatically: the smallest set of attention edges that keeps the answers.

>>> result = search_pathways(vllm, search_samples, cache="results-cache")     # doctest: +SKIP
>>> result.spec                       # the found mask: a KnockoutSpec (a cut = edge group + layers)
>>> held_out_report(vllm, held_out_samples, result.spec)                    # doctest: +SKIP

**Gates.** One gate per (edge group, layer), over the edge groups of
:data:`~flowkit.intervention.edge_groups.PARTITION_EDGE_GROUPS`, which partition every causal
edge the paper's pathway mask can cut; so a set of cut gates is a set of exact edges and its
"edges kept" is counted as :func:`~flowkit.intervention.masks.count_edges` counts the window
mask's. At gate value ``g`` the gate's edges get ``log g`` added to their attention scores
(:func:`~flowkit.intervention.attention.apply_attention_biases`): ``g = 1`` is the clean model,
``g -> 0`` the knockout (:func:`gate_bias` clamps ``g >= EPSILON`` before taking the log). A
gate whose edges are all of some query's keys would be a no-op under gating (a softmax does not
move when every score moves together) and is refused like an empty row.

**1. Score.** For each correctly answered search question, one forward and one backward pass:
the score of gate ``(e, l)`` is ``d log p(answer) / d g`` at ``g = 1`` (equal to the gradient with
respect to ``log g``: the sum over the gate's edges of the gradient of ``log p`` with respect to
their attention score). **Sign**: a positive score says strengthening the gate raises p(answer),
so suppressing it is predicted (to first order) to lower p(answer); a negative score predicts
that cutting it *raises* p(answer). A gate's score is the mean over questions; ``agree`` is the
share of questions whose own score has the mean's sign (signed effects can cancel).

**2. Prune.** Gates are tried in ascending order of score (the most negative first: the cuts
predicted to hurt least), ties broken by the fixed order of :func:`gate_grid` after rounding
scores to :data:`SCORE_DECIMALS` decimals, so CPUs whose float sums differ by ~1e-6 give the same
order. Each candidate mask is verified with an *exact* knockout through each question's
:class:`~flowkit.intervention.session.Session` (all questions' replays of a step batched per question):
a step tries the current cut set plus a run of the next candidates; a run that passes
:class:`AccuracyRule` is kept and the next run is twice as long (at most ``max_run``), a run that
fails is retried at half its length from the same candidate, and a single candidate that fails
is rejected for good. Every kept mask has passed an exact check; ``patience`` stops the search
after that many rejections in a row. The rule (:class:`AccuracyRule`): the lower end of the
95 % paired-bootstrap interval of (accuracy under the mask - full accuracy) on the search
questions is at least ``-margin`` (3 points by default). With few questions that allows no net
lost question.

**3. Report.** :func:`held_out_report` evaluates the found mask on questions the search never
saw, beside the paper's window mask and the paper's random control sized to the found mask.
:func:`faithfulness_curve` gives accuracy (with intervals) against the share of edges
suppressed for the search's path of masks, window masks and random masks.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from flowkit.atomic_files import atomic_write_json
from flowkit.errors import FlowkitError, KnockoutError
from flowkit.intervention.attention import apply_attention_biases
from flowkit.intervention.edge_groups import PARTITION_EDGE_GROUPS
from flowkit.intervention.masks import block_masks, causal_mask, count_edges, edge_block_mask
from flowkit.intervention.spec import Cut, KnockoutSpec, LayerSet
from flowkit.analysis.pathways import PathwayWindows, paper_windows, pathway_spec, random_control_masks
from flowkit.analysis.result_cache import ResultCache
from flowkit.analysis.stats import bootstrap_ci
from flowkit.prompts.readout import PAPER_PREDICTION, percent_change

#: smallest gate value whose log is taken (log 1e-6 = -13.8: the softmax weight of such an edge is ~0)
EPSILON = 1e-6
#: scores are rounded to this many decimals before ordering (ties then follow the fixed gate order)
SCORE_DECIMALS = 6
#: version of the search's cached payloads (bump when what a stored score or check means changes)
SEARCH_VERSION = 1


# ----------------------------------------------------------------------------- gates


@dataclass(frozen=True, order=True)
class Gate:
    """One gate: every edge of one edge group in one layer."""

    edges: str
    layer: int

    def __str__(self) -> str:
        return f"{self.edges}@{self.layer}"


def gate_grid(num_layers: int, groups: Sequence[str] = PARTITION_EDGE_GROUPS) -> list[Gate]:
    """Every gate, in the fixed order ties are broken by: edge group (as ``groups`` lists them), then layer."""
    return [Gate(group, layer) for group in groups for layer in range(num_layers)]


def gate_masks(spans, groups: Sequence[str] = PARTITION_EDGE_GROUPS) -> torch.Tensor:
    """``(G, N, N)`` bool: each edge group's edges on one prompt.

    Raises :class:`KnockoutError` if two groups share an edge (not a partition) or if a group
    covers every key of some query (its gate would be a no-op; its knockout an empty row).
    """
    masks = torch.stack([edge_block_mask(group, spans) for group in groups])
    if (masks.sum(dim=0) > 1).any():
        raise KnockoutError(f"the edge groups {list(groups)} overlap: gates need a partition of the edges")
    causal = causal_mask(spans.seq_len)
    for group, mask in zip(groups, masks):
        covered = (mask == causal).all(dim=1) & mask.any(dim=1)
        if covered.any():
            raise KnockoutError(
                f"the gate {group!r} covers every key of query position {int(covered.nonzero()[0])}: gating it "
                "is a no-op (the softmax does not move) and cutting it leaves no key. Use a prompt with a prefix."
            )
    return masks


def gate_bias(values: torch.Tensor, masks: torch.Tensor, log_space: bool = False) -> dict[int, torch.Tensor]:
    """Per-layer additive biases ``{layer: (N, N) float}`` of gate values ``(G, L)``.

    ``values`` are gate values ``g`` (clamped to ``>= EPSILON`` before the log) or, with
    ``log_space=True``, ``log g`` itself. Differentiable in ``values``.
    """
    theta = values if log_space else torch.log(values.clamp(min=EPSILON))
    float_masks = masks.to(theta.dtype)
    return {layer: torch.einsum("g,gnm->nm", theta[:, layer], float_masks) for layer in range(theta.shape[1])}


def spec_of(gates) -> KnockoutSpec:
    """The knockout that cuts ``gates``: one cut per edge group (a :class:`LayerSet`), in partition order."""
    by_group: dict[str, list[int]] = {}
    for gate in gates:
        by_group.setdefault(gate.edges, []).append(gate.layer)
    order = {g: i for i, g in enumerate(PARTITION_EDGE_GROUPS)}
    groups = sorted(by_group, key=lambda g: (order.get(g, len(order)), g))
    return KnockoutSpec(tuple(Cut(g, LayerSet(tuple(by_group[g]))) for g in groups))


def gates_of(spec: KnockoutSpec, num_layers: int) -> list[Gate]:
    """The gates a spec made of whole gates cuts (the inverse of :func:`spec_of`)."""
    return sorted({Gate(c.edges, layer) for c in spec.cuts for layer in c.layers.resolve(num_layers)})


# --------------------------------------------------------------------------- helpers


def _cache(cache) -> ResultCache | None:
    if cache is None or isinstance(cache, ResultCache):
        return cache
    return ResultCache(cache)


def _prompts(vllm, samples) -> list[tuple[str, object]]:
    """``(id, sample or prompt)`` for each question; a prompt without an id is named by its index."""
    return [(getattr(s, "id", None) or f"prompt-{i}", s) for i, s in enumerate(samples)]


def _log_p_answer(logits: torch.Tensor, prepared) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1)[prepared.letter_ids[prepared.spans.true_option]]


# ---------------------------------------------------------------------------- scoring


def question_gate_scores(session, groups: Sequence[str] = PARTITION_EDGE_GROUPS) -> torch.Tensor:
    """``(G, L)``: d log p(answer) / d g at g = 1 for one prompt (its :class:`Session`), one forward and one backward.

    A fresh forward under autograd (the session's replays run under ``inference_mode``); the
    gradient is taken with :func:`torch.autograd.grad` on the gates only (the model's parameters
    are left alone). With NF4 weights bitsandbytes' own path runs under autograd: ``log p`` differs
    from the replay's by ~1e-6, so never compare the two bit for bit.
    """
    prepared = session.prepared
    if prepared.spans.true_option is None:
        raise FlowkitError("scoring gates needs the correct answer of each question")
    masks = gate_masks(prepared.spans, groups)
    theta = torch.zeros(len(groups), session.num_layers, requires_grad=True)
    with torch.enable_grad(), apply_attention_biases(session.lm, gate_bias(theta, masks, log_space=True)):
        logits = session.model(**prepared.inputs, logits_to_keep=1).logits[0, -1]
        (grad,) = torch.autograd.grad(_log_p_answer(logits, prepared), theta)
    return grad.detach()


def gate_scores(
    vllm,
    samples,
    groups: Sequence[str] = PARTITION_EDGE_GROUPS,
    cache=None,
    progress: bool = True,
    prediction: str = PAPER_PREDICTION,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Attribution scores of every gate (see the module docstring for the sign).

    Returns ``(per_question, scores)``: one row per (correctly answered question, gate) with its
    ``score``, and one row per gate with the mean ``score`` over those questions, ``agree`` (the
    share of questions whose score has the mean's sign), ``n`` and ``rank`` (0 = cut first).
    Results are cached per question (``cache``: a folder or :class:`ResultCache`).
    """
    cache = _cache(cache)
    fingerprint = vllm.fingerprint if cache is not None else None
    key = f"pathway-search/scores/v{SEARCH_VERSION}/{prediction}/" + json.dumps(list(groups))
    gates = gate_grid(vllm.num_layers, groups)
    rows = []
    for sample_id, sample in tqdm(_prompts(vllm, samples), desc="gate scores", disable=not progress):
        found = cache.get(fingerprint, sample_id, key) if cache is not None else None
        if found is None:
            session = vllm.session(vllm.prepare_prompt(sample))
            correct = bool(session.clean_answer.is_correct(prediction))
            scores = question_gate_scores(session, groups).flatten().tolist() if correct else None
            found = {"correct": correct, "scores": scores}
            if cache is not None:
                cache.put_many(fingerprint, sample_id, {key: found})
        if not found["correct"]:
            continue
        rows += [
            {"sample": sample_id, "edges": g.edges, "layer": g.layer, "score": s}
            for g, s in zip(gates, found["scores"])
        ]
    per_question = pd.DataFrame(rows, columns=["sample", "edges", "layer", "score"])
    return per_question, summarize_scores(per_question, gates)


def summarize_scores(per_question: pd.DataFrame, gates: Sequence[Gate]) -> pd.DataFrame:
    """One row per gate (in :func:`gate_grid` order): mean ``score``, ``agree``, ``n``, ``rank``."""
    out = []
    for index, gate in enumerate(gates):
        values = per_question.loc[
            (per_question["edges"] == gate.edges) & (per_question["layer"] == gate.layer), "score"
        ].to_numpy(float)
        mean = float(values.mean()) if values.size else 0.0
        sign = np.sign(round(mean, SCORE_DECIMALS))
        agree = float(np.mean(np.sign(np.round(values, SCORE_DECIMALS)) == sign)) if values.size else float("nan")
        out.append({"edges": gate.edges, "layer": gate.layer, "order": index, "score": mean, "agree": agree})
    table = pd.DataFrame(out)
    table["n"] = per_question["sample"].nunique() if len(per_question) else 0
    ranked = sorted(range(len(table)), key=lambda i: (round(table["score"][i], SCORE_DECIMALS), table["order"][i]))
    table["rank"] = 0
    table.loc[ranked, "rank"] = range(len(ranked))
    return table


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties), with numpy only."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size != y.size or x.size < 2:
        raise ValueError("rank correlation needs two sequences of the same length >= 2")

    def ranks(v):
        order = np.argsort(v, kind="mergesort")
        r = np.empty(v.size)
        r[order] = np.arange(v.size)
        for value in np.unique(v):  # average ranks over ties
            tied = v == value
            r[tied] = r[tied].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / denominator) if denominator else float("nan")


def single_gate_effects(
    vllm,
    samples,
    groups: Sequence[str] = PARTITION_EDGE_GROUPS,
    progress: bool = True,
    prediction: str = PAPER_PREDICTION,
):
    """Exact single-gate knockouts: one row per (question, gate) with ``delta_log_p`` (log p(answer)
    under the knockout minus the clean run's), for comparison with the gradient scores. Questions
    answered wrongly are skipped, as in :func:`gate_scores`."""
    gates = gate_grid(vllm.num_layers, groups)
    rows = []
    for sample_id, sample in tqdm(_prompts(vllm, samples), desc="single-gate knockouts", disable=not progress):
        prepared = vllm.prepare_prompt(sample)
        session = vllm.session(prepared)
        if not session.clean_answer.is_correct(prediction):
            continue
        clean = float(_log_p_answer(session.clean_logits, prepared))
        logits = session.last_logits([spec_of([g]) for g in gates])
        rows += [
            {
                "sample": sample_id,
                "edges": g.edges,
                "layer": g.layer,
                "delta_log_p": float(_log_p_answer(l, prepared)) - clean,
            }
            for g, l in zip(gates, logits)
        ]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- rule


@dataclass(frozen=True)
class AccuracyRule:
    """Keep a cut while the paired bootstrap says accuracy has not dropped by more than ``margin``.

    Passes when the lower end of the ``level`` two-sided percentile interval of the mean over
    questions of (correct under the mask - correct in the full model) is ``>= -margin``;
    ``resamples`` resamples of the questions drawn with ``seed`` (the same for every mask).
    """

    margin: float = 0.03
    level: float = 0.95
    resamples: int = 2000
    seed: int = 0

    def lower_bound(self, masked: Sequence[bool], full: Sequence[bool]) -> float:
        diff = np.asarray(masked, float) - np.asarray(full, float)
        return bootstrap_ci(diff, self.level, self.resamples, self.seed)[0]

    def passes(self, masked: Sequence[bool], full: Sequence[bool]) -> bool:
        return self.lower_bound(masked, full) >= -self.margin - 1e-12

    def to_dict(self) -> dict:
        return {"rule": "paired_bootstrap_lower_bound", **self.__dict__}


# ----------------------------------------------------------------------------- search


class _Questions:
    """The search questions: a session each, the full model's answers, cached exact checks."""

    def __init__(self, vllm, samples, cache, progress, prediction: str = PAPER_PREDICTION):
        self.vllm, self.cache, self.prediction = vllm, _cache(cache), prediction
        self.fingerprint = vllm.fingerprint if self.cache is not None else None
        self.items = []
        for sample_id, sample in tqdm(_prompts(vllm, samples), desc="search questions", disable=not progress):
            prepared = vllm.prepare_prompt(sample)
            session = vllm.session(prepared)
            sizes = gate_masks(prepared.spans).sum(dim=(1, 2)).tolist()
            total = count_edges(KnockoutSpec(), prepared.spans, vllm.num_layers)["total"]
            self.items.append({"id": sample_id, "session": session, "sizes": sizes, "total": total})
        self.full = [bool(self._check(item, [KnockoutSpec()])[0]["correct"]) for item in self.items]

    def _check(self, item, specs: list[KnockoutSpec]) -> list[dict]:
        keys = [f"pathway-search/check/v{SEARCH_VERSION}/{self.prediction}/" + s.to_json() for s in specs]
        found = self.cache.get_many(self.fingerprint, item["id"], keys) if self.cache is not None else {}
        todo = [i for i, k in enumerate(keys) if found.get(k) is None]
        results = {k: found[k] for k in keys if found.get(k) is not None}
        session = item["session"]
        runnable, masks, refused = [], [], {}
        for i in todo:
            try:  # built once: a spec that leaves a query with no key is refused here, else replayed
                masks.append(block_masks(specs[i], session.spans, session.num_layers) if specs[i].cuts else {})
                runnable.append(i)
            except KnockoutError:
                refused[keys[i]] = {"correct": False, "p_answer": float("nan"), "refused": True}
        fresh = dict(refused)
        if runnable:
            answers = session.answers(masks)
            for i, dist in zip(runnable, answers):
                p = float(dist.probs[session.spans.true_option])
                fresh[keys[i]] = {"correct": bool(dist.is_correct(self.prediction)), "p_answer": p, "refused": False}
        if fresh and self.cache is not None:
            self.cache.put_many(self.fingerprint, item["id"], {k: v for k, v in fresh.items() if k not in refused})
        results.update(fresh)
        return [results[k] for k in keys]

    def check(self, specs: list[KnockoutSpec]) -> list[list[dict]]:
        """Per spec, per question: ``{"correct", "p_answer", "refused"}``."""
        per_question = [self._check(item, specs) for item in self.items]
        return [[per_question[q][s] for q in range(len(self.items))] for s in range(len(specs))]

    def suppressed_share(self, gate_index: dict, gates) -> float:
        """Mean over questions of the share of causal edges (all layers) the gates cut."""
        shares = []
        for item in self.items:
            cut = sum(item["sizes"][gate_index[g.edges]] for g in gates)
            shares.append(cut / item["total"])
        return float(np.mean(shares))


@dataclass
class PathwaySearchResult:
    """What :func:`search_pathways` found.

    Attributes:
        spec: the found mask (the gates cut), a :class:`KnockoutSpec`: save it with :meth:`save_spec`.
        cut: the gates cut, in the order they were accepted; ``kept`` the others.
        scores: one row per gate (:func:`gate_scores`): ``score``, ``agree``, ``n``, ``rank``.
        per_question_scores: one row per (question, gate).
        path: one row per step: the run tried, whether it was kept, the number of gates cut, the
            share of edges suppressed (mean over search questions), accuracy and the rule's bound.
        rule: the :class:`AccuracyRule`; ``search_samples`` the ids the search saw (never report on them).
        timings: wall seconds of scoring and pruning, and the replays run.
    """

    spec: KnockoutSpec
    cut: tuple[Gate, ...]
    kept: tuple[Gate, ...]
    scores: pd.DataFrame
    per_question_scores: pd.DataFrame
    path: pd.DataFrame
    rule: AccuracyRule
    search_samples: tuple[str, ...]
    full_accuracy: float
    suppressed_share: float
    timings: dict = field(default_factory=dict)

    def path_specs(self) -> list[tuple[float, KnockoutSpec]]:
        """The search's path of masks: (share suppressed, spec) after each step that kept a cut."""
        out, cut = [], []
        for row in self.path.itertuples():
            if row.kept:
                cut = [Gate(e, l) for e, l in json.loads(row.cut_after)]
                out.append((row.suppressed_share, spec_of(cut)))
        return out

    def save_spec(self, path) -> Path:
        """Write the found mask as ``KnockoutSpec`` JSON (``check --spec FILE`` reads it)."""
        path = Path(path)
        atomic_write_json(path, self.spec.to_dict(), indent=1, sort_keys=True)
        return path

    def summary(self) -> dict:
        return {
            "gates": len(self.cut) + len(self.kept),
            "gates_cut": len(self.cut),
            "suppressed_share": self.suppressed_share,
            "full_accuracy": self.full_accuracy,
            "search_accuracy": float(self.path[self.path["kept"]]["accuracy"].iloc[-1])
            if self.path["kept"].any()
            else self.full_accuracy,
            "questions": len(self.search_samples),
            "rule": self.rule.to_dict(),
            "timings": self.timings,
            "spec": self.spec.to_dict(),
        }


def search_pathways(
    vllm,
    samples,
    groups: Sequence[str] = PARTITION_EDGE_GROUPS,
    rule: AccuracyRule = AccuracyRule(),
    max_run: int = 32,
    patience: int | None = None,
    cache=None,
    progress: bool = True,
    prediction: str = PAPER_PREDICTION,
) -> PathwaySearchResult:
    """Score every gate by attribution, then cut greedily in score order, each cut verified by exact knockouts.

    ``samples``: the search questions (:class:`flowkit.data.Sample` or prepared prompts with an
    answer). ``patience``: stop after this many candidates rejected in a row (the rest are kept;
    later candidates are the ones the scores predict to hurt most); None tries every gate.
    ``prediction``: which answers count as correct (:data:`flowkit.prompts.readout.PREDICTION_RULES`;
    the paper's whole-vocabulary rule by default). ``cache`` (a folder or :class:`ResultCache`) keeps every score and every exact check
    per question, so a stopped search resumes and a finished one is replayed from disk. The same
    questions give the same mask on any CPU up to scores within 1e-6 of a rounding boundary and
    answers within float rounding of a tie (see the module docstring).
    """
    groups = tuple(groups)
    if max_run < 1:
        raise FlowkitError(f"max_run must be at least 1, got {max_run}")
    samples = list(samples)
    if not samples:
        raise FlowkitError("the pathway search needs at least one question")
    started = time.perf_counter()
    per_question, scores = gate_scores(vllm, samples, groups, cache=cache, progress=progress, prediction=prediction)
    if per_question.empty:
        raise FlowkitError("no search question is answered correctly: there is nothing to keep")
    scored = time.perf_counter()
    gates = gate_grid(vllm.num_layers, groups)
    order = [gates[i] for i in scores.sort_values("rank")["order"]]
    questions = _Questions(vllm, samples, cache, progress, prediction)
    gate_index = {g: i for i, g in enumerate(groups)}
    full = questions.full
    cut: list[Gate] = []
    path = []
    position, run, checks, rejected_in_a_row = 0, 1, 0, 0
    bar = tqdm(total=len(order), desc="pruning", disable=not progress)
    while position < len(order) and (patience is None or rejected_in_a_row < patience):
        k = min(run, len(order) - position)
        tried = order[position : position + k]
        (result,) = questions.check([spec_of(cut + tried)])
        checks += len(questions.items)
        correct = [x["correct"] for x in result]
        kept = rule.passes(correct, full)
        if kept:
            cut += tried
            run, rejected_in_a_row = min(max_run, 2 * run), 0
        elif k > 1:
            run = k // 2  # retry a shorter run from the same candidate
        else:
            rejected_in_a_row += 1
        path.append(
            {
                "step": len(path),
                "tried": json.dumps([[g.edges, g.layer] for g in tried]),
                "kept": kept,
                "gates_cut": len(cut),
                "suppressed_share": questions.suppressed_share(gate_index, cut),
                "accuracy": float(np.mean(correct)),
                "lower_bound": rule.lower_bound(correct, full),
                "cut_after": json.dumps([[g.edges, g.layer] for g in cut]),
            }
        )
        if kept or k == 1:
            position += k
            bar.update(k)
    bar.close()
    cut_set = set(cut)
    return PathwaySearchResult(
        spec=spec_of(cut),
        cut=tuple(cut),
        kept=tuple(g for g in gates if g not in cut_set),
        scores=scores,
        per_question_scores=per_question,
        path=pd.DataFrame(path),
        rule=rule,
        search_samples=tuple(item["id"] for item in questions.items),
        full_accuracy=float(np.mean(full)),
        suppressed_share=questions.suppressed_share(gate_index, cut),
        timings={
            "scoring_s": scored - started,
            "pruning_s": time.perf_counter() - scored,
            "steps": len(path),
            "exact_checks": checks,
        },
    )


# ----------------------------------------------------------------------------- report


def _conditions_table(
    vllm, samples, conditions, progress: bool, desc: str, prediction: str = PAPER_PREDICTION
) -> pd.DataFrame:
    """One row per (question, condition): ``correct``, ``p_answer``, ``pct_change`` and the exact
    share of edges the condition suppresses. ``conditions``: ``(name, seed, masks_of(spans))``."""
    rows = []
    total_of = {}
    for sample_id, sample in tqdm(_prompts(vllm, samples), desc=desc, disable=not progress):
        prepared = vllm.prepare_prompt(sample)
        spans = prepared.spans
        session = vllm.session(prepared)
        masks = [make(spans) for _, _, make in conditions]
        answers = session.answers([None] + masks)
        clean = answers[0]
        truth = spans.true_option
        n = spans.seq_len
        total_of[sample_id] = n * (n + 1) // 2 * vllm.num_layers
        for (name, seed, _), m, dist in zip([("full", None, None)] + list(conditions), [None] + masks, answers):
            cut = sum(int(x.sum()) for x in m.values()) if m else 0
            rows.append(
                {
                    "sample": sample_id,
                    "task": getattr(sample, "task", ""),
                    "condition": name,
                    "seed": seed,
                    "correct": bool(dist.is_correct(prediction)),
                    "p_answer": float(dist.probs[truth]),
                    "pct_change": (
                        percent_change(clean.probs[truth], dist.probs[truth])
                        if clean.is_correct(prediction)
                        else np.nan
                    ),
                    "edges_total": total_of[sample_id],
                    "edges_kept": total_of[sample_id] - cut,
                    "suppressed_share": cut / total_of[sample_id],
                }
            )
    return pd.DataFrame(rows)


def summarize_conditions(table: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per condition: edges kept (mean exact count and share), accuracy with its bootstrap interval
    (over questions, and seeds where there are several), mean % change in p(answer) over the
    questions the full model answers correctly."""
    rows = []
    for name, group in table.groupby("condition", sort=False):
        lo, hi = bootstrap_ci(group["correct"].astype(float), level)
        rows.append(
            {
                "condition": name,
                "edges_kept": float(group["edges_kept"].mean()),
                "kept_share": float(1 - group["suppressed_share"].mean()),
                "suppressed_share": float(group["suppressed_share"].mean()),
                "accuracy": float(group["correct"].mean()),
                "lo": lo,
                "hi": hi,
                "pct_change": float(group["pct_change"].mean()),
                "questions": int(group["sample"].nunique()),
                "seeds": int(group["seed"].nunique()) if group["seed"].notna().any() else 0,
            }
        )
    return pd.DataFrame(rows)


def _spec_masks(spec: KnockoutSpec, num_layers: int):
    return lambda spans: block_masks(spec, spans, num_layers) if spec.cuts else {}


def held_out_report(
    vllm,
    samples,
    found: KnockoutSpec,
    windows: PathwayWindows | None = None,
    random_seeds: Sequence[int] = (0, 1, 2, 3, 4),
    search_samples: Sequence[str] = (),
    progress: bool = True,
    prediction: str = PAPER_PREDICTION,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The found mask on held-out questions, beside the window mask and the paper's random control.

    Conditions: ``full``, ``found``, ``window`` (:func:`~flowkit.analysis.pathways.pathway_spec` of
    ``windows``, default the paper's 7B windows scaled to this depth) and ``random`` (the paper's
    control with ``f`` = the found mask's suppressed share on each question, one row per seed).
    Refuses any question the search saw (``search_samples``: ids). Returns the per-question table
    and :func:`summarize_conditions`' summary.
    """
    samples = list(samples)
    seen = set(search_samples) & {sid for sid, _ in _prompts(vllm, samples)}
    if seen:
        raise FlowkitError(f"{len(seen)} held-out question(s) were search questions (e.g. {sorted(seen)[0]})")
    if len(random_seeds) < 5:
        raise FlowkitError("the random control needs at least 5 seeds")
    num_layers = vllm.num_layers
    windows = windows or paper_windows(num_layers)
    window_spec = pathway_spec(windows, num_layers)

    def random_masks(seed):
        def make(spans):
            f = 1 - count_edges(found, spans, num_layers)["kept_fraction"] if found.cuts else 0.0
            return random_control_masks("paper", spans, num_layers, seed, suppressed_fraction=f)

        return make

    conditions = [
        ("found", None, _spec_masks(found, num_layers)),
        ("window", None, _spec_masks(window_spec, num_layers)),
    ]
    conditions += [("random", seed, random_masks(seed)) for seed in random_seeds]
    table = _conditions_table(vllm, samples, conditions, progress, "held-out report", prediction)
    return table, summarize_conditions(table)


def faithfulness_curve(
    vllm,
    samples,
    result: PathwaySearchResult | None = None,
    window_rule: dict[str, PathwayWindows] | None = None,
    presets: Sequence[str] = (
        "llava-next-7b-video-ft",
        "llava-next-13b-video-ft",
        "mini-internvl-4b-video-ft",
        "videollama3-7b",
    ),
    random_fractions: Sequence[float] = (0.2, 0.4, 0.6, 0.8),
    random_seeds: Sequence[int] = (0, 1, 2, 3, 4),
    max_path_points: int = 8,
    progress: bool = True,
    prediction: str = PAPER_PREDICTION,
) -> pd.DataFrame:
    """Accuracy (with a 95 % interval) against the share of edges suppressed, one row per mask.

    ``family``: ``"search"`` (the search's path of masks, at most ``max_path_points`` evenly
    spaced along it, the found mask last), ``"window rule"`` (``window_rule``: label -> windows,
    e.g. :func:`flowkit.analysis.experiments.windows_from_sweeps` at several fractions),
    ``"paper windows"`` (each preset's windows scaled to this depth) and ``"random"`` (the
    paper's control at each fraction, seeds pooled). Evaluate on held-out questions.
    """
    num_layers = vllm.num_layers
    conditions = []
    if result is not None:
        path = result.path_specs()
        if len(path) > max_path_points:
            picks = np.unique(np.linspace(0, len(path) - 1, max_path_points).round().astype(int))
            path = [path[i] for i in picks]
        conditions += [
            ("search", f"search step {i}", _spec_masks(spec, num_layers)) for i, (_, spec) in enumerate(path)
        ]
    for label, windows in (window_rule or {}).items():
        conditions.append(("window rule", label, _spec_masks(pathway_spec(windows, num_layers), num_layers)))
    for name in presets:
        spec = pathway_spec(paper_windows(num_layers, name), num_layers)
        conditions.append(("paper windows", name, _spec_masks(spec, num_layers)))
    for f in random_fractions:
        for seed in random_seeds:
            make = lambda spans, f=f, seed=seed: random_control_masks(  # noqa: E731
                "paper", spans, num_layers, seed, suppressed_fraction=f
            )
            conditions.append(("random", f"random f={f:g}", make))
    named = [(f"{family}|{label}", None, make) for family, label, make in conditions]
    table = _conditions_table(vllm, samples, named, progress, "faithfulness curve", prediction)
    summary = summarize_conditions(table)
    summary[["family", "label"]] = summary["condition"].str.split("|", n=1, expand=True).fillna("full")
    summary.loc[summary["condition"] == "full", ["family", "label"]] = ["full", "full"]
    return summary.drop(columns=["condition"])


__all__ = [
    "EPSILON",
    "AccuracyRule",
    "Gate",
    "PathwaySearchResult",
    "faithfulness_curve",
    "gate_bias",
    "gate_grid",
    "gate_masks",
    "gate_scores",
    "gates_of",
    "held_out_report",
    "question_gate_scores",
    "rank_correlation",
    "search_pathways",
    "single_gate_effects",
    "spec_of",
    "summarize_conditions",
    "summarize_scores",
]
