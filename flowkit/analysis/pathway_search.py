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
:class:`~flowkit.intervention.session.Session`, resumed from that question's replay of the last
kept mask (only the layers from the first one the candidate changes are recomputed); the
questions likeliest to fail are checked first, and a check stops as soon as the rule fails
whatever the unchecked questions give (the bootstrap bounds only rise when an entry rises; an
unchecked question is taken as right, and with no loss in p(answer)). A step tries
the current cut set plus a run of the next candidates; a run that passes :class:`AccuracyRule`
is kept and the next run is twice as long (at most ``max_run``), a run that fails is retried at
half its length from the same candidate, and a single candidate that fails is rejected for good.
Every kept mask has passed an exact check on every question; ``patience`` stops the search
after that many rejections in a row. The rule (:class:`AccuracyRule`): on the search questions,
the lower end of the 95 % paired-bootstrap interval of (accuracy under the mask - full accuracy)
is at least ``-margin`` (3 points by default; with tens of questions that allows no net lost
question). Optionally (``loss_margin``, off by default) the lower end of the 95 % bootstrap interval
of the mean *loss* in p(answer) over the correctly answered questions (a question's % change,
a gain counted as 0, so no question's gain hides another's loss) must stay above ``-loss_margin``
%; an unchecked question is at best 0, so this bound also rejects early. Measured on the kit's
model (40 search questions, the first 10 of each learned task; 200 held out): with the accuracy
bound alone the found mask suppresses 53.1 % of edges and loses 10.5 points of held-out accuracy
(74.5 -> 64.0 %); with ``loss_margin=5`` it suppresses 45.8 % and loses 7.0 points (-> 67.5 %).
Both lose most of it in the first large step (about 12 % of edges suppressed: action antonym 98
-> 72 % held out), on questions whose answer is a word none of the search questions answers
("shrinks"): ten questions a task do not show a cut that shifts the model towards one option
text, whatever the rule.

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
from flowkit.prompts.readout import PAPER_PREDICTION, answer_distribution, percent_change

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
    samples = list(samples)
    return _scores_of(
        vllm,
        ((sid, lambda s=sample: vllm.session(vllm.prepare_prompt(s))) for sid, sample in _prompts(vllm, samples)),
        len(samples),
        groups,
        _cache(cache),
        progress,
        prediction,
    )


def _scores_of(vllm, sessions, total: int, groups, cache, progress: bool, prediction: str):
    """:func:`gate_scores` over ``(id, open_session)`` pairs (a session is opened only when a score is not cached)."""
    fingerprint = vllm.fingerprint if cache is not None else None
    key = f"pathway-search/scores/v{SEARCH_VERSION}/{prediction}/" + json.dumps(list(groups))
    gates = gate_grid(vllm.num_layers, groups)
    rows = []
    for sample_id, open_session in tqdm(sessions, total=total, desc="gate scores", disable=not progress):
        found = cache.get(fingerprint, sample_id, key) if cache is not None else None
        if found is None:
            session = open_session()
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
    """Keep a cut while paired bootstraps say neither accuracy nor p(answer) has dropped too far.

    Two bounds, both the lower end of a ``level`` two-sided percentile bootstrap interval over the
    search questions (``resamples`` resamples drawn with ``seed``, the same for every mask):

    - **accuracy**: the mean of (correct under the mask - correct in the full model) must be
      ``>= -margin`` (a share: 0.03 is 3 points). With ``count_gains=False`` a question the mask
      gets right where the full model got it wrong counts 0, not +1, so gains never pay for losses
      (the rule then bounds the answers lost, as the loss bound below does for p(answer)). Why: the
      kit model's stored search (net rule) found a mask that answers 2 more of its 40 search
      questions than the full model (72.5 vs 67.5 %) and 7 fewer of 200 fresh ones (18 lost, 11
      gained);
    - **loss in p(answer)**: over the questions the full model answers correctly, the mean of
      ``min(0, % change in p(answer))`` (a question's loss; a gain counts as no loss, so one
      question's gain never hides another's loss) must be ``>= -loss_margin`` (in percent; None: no
      such bound). Answers flip only after p(answer) has fallen, so with tens of questions the
      accuracy bound alone lets many small losses through that held-out questions then pay for; a
      refused mask counts as -100 %. A loss is at most 0, so a question not yet checked is at best
      0: a check can stop as soon as the bound fails with the rest at 0 (exact early rejection).
    """

    margin: float = 0.03
    level: float = 0.95
    resamples: int = 2000
    seed: int = 0
    loss_margin: float | None = None
    count_gains: bool = True

    def lower_bound(self, masked: Sequence[bool], full: Sequence[bool]) -> float:
        diff = np.asarray(masked, float) - np.asarray(full, float)
        if not self.count_gains:
            diff = np.minimum(diff, 0.0)
        return bootstrap_ci(diff, self.level, self.resamples, self.seed)[0]

    def loss_lower_bound(self, pct_changes: Sequence[float]) -> float:
        """Lower bound of the mean loss ``min(0, % change)`` in p(answer) (NaN without questions)."""
        values = np.minimum(np.asarray(pct_changes, float), 0.0)
        return bootstrap_ci(values, self.level, self.resamples, self.seed)[0] if values.size else float("nan")

    def verdict(self, masked: Sequence[bool], full: Sequence[bool], pct_changes: Sequence[float] | None = None):
        """``(passes, accuracy bound, loss bound or None)``."""
        accuracy = self.lower_bound(masked, full)
        ok = accuracy >= -self.margin - 1e-12
        loss_bound = None
        if self.loss_margin is not None and pct_changes is None:
            raise FlowkitError(
                "this rule bounds the loss in p(answer) (loss_margin is set): pass the % changes of p(answer) too"
            )
        if self.loss_margin is not None and len(pct_changes):
            loss_bound = self.loss_lower_bound(pct_changes)
            ok = ok and loss_bound >= -self.loss_margin - 1e-9
        return ok, accuracy, loss_bound

    def passes(self, masked: Sequence[bool], full: Sequence[bool], pct_changes: Sequence[float] | None = None) -> bool:
        return self.verdict(masked, full, pct_changes)[0]

    def to_dict(self) -> dict:
        return {"rule": "paired_bootstrap_lower_bounds", **self.__dict__}


# ----------------------------------------------------------------------------- search


class _Questions:
    """The search questions: one session each (scoring and checks share it), the full model's
    answers, and exact checks of candidate masks (:meth:`check`), visiting the questions most
    likely to fail first (most earlier failures, then smallest clean margin, then the given order).
    """

    def __init__(
        self, vllm, samples, cache, progress, prediction: str = PAPER_PREDICTION, groups=PARTITION_EDGE_GROUPS
    ):
        self.vllm, self.cache, self.prediction = vllm, _cache(cache), prediction
        self.fingerprint = vllm.fingerprint if self.cache is not None else None
        self.items = []
        for sample_id, sample in tqdm(_prompts(vllm, samples), desc="search questions", disable=not progress):
            prepared = vllm.prepare_prompt(sample)
            session = vllm.session(prepared)
            sizes = gate_masks(prepared.spans, groups).sum(dim=(1, 2)).tolist()
            total = count_edges(KnockoutSpec(), prepared.spans, vllm.num_layers)["total"]
            clean = session.clean_answer
            truth = prepared.spans.true_option
            others = [float(p) for i, p in enumerate(clean.probs) if i != truth]
            margin = float(clean.probs[truth]) - max(others) if truth is not None and others else 0.0
            p_clean = float(clean.probs[truth]) if truth is not None else float("nan")
            self.items.append(
                {
                    "id": sample_id,
                    "session": session,
                    "sizes": sizes,
                    "total": total,
                    "margin": margin,
                    "p_clean": p_clean,
                    "trace": None,
                }
            )
        self.full = [bool(item["session"].clean_answer.is_correct(prediction)) for item in self.items]
        #: the questions whose % change in p(answer) the rule bounds (the full model answers them correctly)
        self.scored = [i for i, ok in enumerate(self.full) if ok]
        self.failures = [0] * len(self.items)
        #: each question's summed loss in p(answer) (percent) over earlier checks: the order's tie-break
        self.losses = [0.0] * len(self.items)
        self.replays = 0

    def _key(self, spec: KnockoutSpec) -> str:
        return f"pathway-search/check/v{SEARCH_VERSION}/{self.prediction}/" + spec.to_json()

    def _order(self) -> list[int]:
        return sorted(
            range(len(self.items)),
            key=lambda i: (-self.failures[i], -round(self.losses[i], 3), round(self.items[i]["margin"], 6), i),
        )

    def _check_one(self, index: int, spec: KnockoutSpec) -> tuple[dict, object]:
        """One question under one mask: ``({"correct", "p_answer", "refused"}, new trace or None)``."""
        item, key = self.items[index], self._key(spec)
        if self.cache is not None:
            found = self.cache.get(self.fingerprint, item["id"], key)
            if found is not None:
                return found, None
        session = item["session"]
        try:  # a spec that leaves a query with no key is refused here, else replayed
            masks = block_masks(spec, session.spans, session.num_layers) if spec.cuts else {}
        except KnockoutError:
            return {"correct": False, "p_answer": float("nan"), "refused": True}, None
        traces = [item["trace"]] if item["trace"] is not None else []
        logits, trace = session.last_logits_resuming(masks, traces)
        self.replays += 1
        dist = answer_distribution(logits, session.prepared.letter_ids, session.spans.true_option)
        result = {
            "correct": bool(dist.is_correct(self.prediction)),
            "p_answer": float(dist.probs[session.spans.true_option]),
            "refused": False,
        }
        if self.cache is not None:
            self.cache.put_many(self.fingerprint, item["id"], {key: result})
        return result, trace

    def _pct(self, index: int, result: dict) -> float:
        """% change in p(answer) of a question the full model answers correctly (a refusal: -100)."""
        if result.get("refused"):
            return -100.0
        return percent_change(self.items[index]["p_clean"], result["p_answer"])

    def _bounds(self, rule: AccuracyRule, correct: list, pct: list, complete: bool):
        """The rule on the questions checked so far; unless ``complete``, every unchecked question is
        taken at its best: right, and with no loss in p(answer)."""
        if complete:
            return rule.verdict(correct, self.full, [pct[i] for i in self.scored])
        best_pct = [pct[i] if pct[i] is not None else 0.0 for i in self.scored]
        return rule.verdict([c if c is not None else True for c in correct], self.full, best_pct)

    def _record(self, index: int, result: dict, correct: list, pct: list) -> None:
        correct[index] = bool(result["correct"])
        if self.full[index]:
            pct[index] = self._pct(index, result)
            self.losses[index] -= min(0.0, pct[index])
            if not correct[index]:
                self.failures[index] += 1

    def _verdict_complete(self, rule, correct, pct):
        ok, accuracy, loss_bound = self._bounds(rule, correct, pct, complete=True)
        return ok, correct, len(self.items), accuracy, loss_bound

    @staticmethod
    def _outcome(kept, correct, checked, accuracy, loss_bound) -> dict:
        return {
            "kept": kept,
            "correct": correct,
            "checked": checked,
            "lower_bound": accuracy,
            "loss_lower_bound": loss_bound,
        }

    def check(self, spec: KnockoutSpec, rule: AccuracyRule) -> dict:
        """Whether ``spec`` passes ``rule``: ``kept``, ``correct`` (None where not checked),
        ``checked`` (questions visited), ``lower_bound`` and ``loss_lower_bound`` (for an early
        rejection: the bounds had every unchecked question come out at its best, already failing).
        A kept mask's replays become the ones later checks resume from."""
        n = len(self.items)
        correct: list[bool | None] = [None] * n
        pct: list[float | None] = [None] * n
        traces = {}
        for visited, index in enumerate(self._order(), start=1):
            result, trace = self._check_one(index, spec)
            self._record(index, result, correct, pct)
            traces[index] = trace
            if visited < n:
                ok, accuracy, loss_bound = self._bounds(rule, correct, pct, complete=False)
                if not ok:
                    return self._outcome(False, correct, visited, accuracy, loss_bound)
        outcome = self._outcome(*self._verdict_complete(rule, correct, pct))
        if outcome["kept"]:
            for index, trace in traces.items():
                if trace is not None:
                    self.items[index]["trace"] = trace
        return outcome

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
        path: one row per step: ``tried`` (the run of gates tried, JSON), ``kept``, ``gates_cut``,
            ``suppressed_share`` (mean over search questions), ``checked`` (questions visited: fewer
            for an early rejection), ``accuracy`` (NaN for an early rejection), the rule's
            ``lower_bound`` and ``loss_lower_bound`` (None without a bound on the loss in p(answer)) and ``cut_after``.
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
    questions = _Questions(vllm, samples, cache, progress, prediction, groups)
    per_question, scores = _scores_of(
        vllm,
        ((item["id"], lambda item=item: item["session"]) for item in questions.items),
        len(questions.items),
        groups,
        questions.cache,
        progress,
        prediction,
    )
    if per_question.empty:
        raise FlowkitError("no search question is answered correctly: there is nothing to keep")
    scored = time.perf_counter()
    gates = gate_grid(vllm.num_layers, groups)
    order = [gates[i] for i in scores.sort_values("rank")["order"]]
    gate_index = {g: i for i, g in enumerate(groups)}
    full = questions.full
    cut: list[Gate] = []
    path = []
    position, run, checks, rejected_in_a_row = 0, 1, 0, 0
    bar = tqdm(total=len(order), desc="pruning", disable=not progress)

    def record(tried, outcome):
        complete = outcome["checked"] == len(questions.items)
        path.append(
            {
                "step": len(path),
                "tried": json.dumps([[g.edges, g.layer] for g in tried]),
                "kept": outcome["kept"],
                "gates_cut": len(cut),
                "suppressed_share": questions.suppressed_share(gate_index, cut),
                "checked": outcome["checked"],
                "accuracy": float(np.mean(outcome["correct"])) if complete else float("nan"),
                "lower_bound": outcome["lower_bound"],
                "loss_lower_bound": outcome["loss_lower_bound"],
                "cut_after": json.dumps([[g.edges, g.layer] for g in cut]),
            }
        )

    while position < len(order) and (patience is None or rejected_in_a_row < patience):
        k = min(run, len(order) - position)
        tried = order[position : position + k]
        outcome = questions.check(spec_of(cut + tried), rule)
        checks += outcome["checked"]
        kept = outcome["kept"]
        if kept:
            cut += tried
            run, rejected_in_a_row = min(max_run, 2 * run), 0
        elif k > 1:
            run = k // 2  # retry a shorter run from the same candidate
        else:
            rejected_in_a_row += 1
        record(tried, outcome)
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
            "replays": questions.replays,
        },
    )


def gate_table(found: KnockoutSpec, num_layers: int, scores: pd.DataFrame | None = None, groups=PARTITION_EDGE_GROUPS):
    """One row per gate: ``edges``, ``layer``, ``kept`` (False where ``found`` cuts it) and, with
    ``scores`` (:func:`gate_scores`' per-gate table), its ``score`` and ``agree``: what
    :func:`flowkit.views.plots.gate_map` draws."""
    cut = set(gates_of(found, num_layers))
    table = pd.DataFrame(
        [{"edges": g.edges, "layer": g.layer, "kept": g not in cut} for g in gate_grid(num_layers, groups)]
    )
    if scores is not None:
        table = table.merge(
            pd.DataFrame(scores)[["edges", "layer", "score", "agree"]], on=["edges", "layer"], how="left"
        )
    return table


def kept_layers(
    found: KnockoutSpec, num_layers: int, groups: Sequence[str] = PARTITION_EDGE_GROUPS
) -> dict[str, list[int]]:
    """``{edge group: the layers whose gate `found` keeps}`` for each of ``groups``: which routes a
    searched mask leaves open, e.g. the video's route to the last position through the template
    (``video->other_text`` then ``other_text->last``) that no window mask cuts."""
    unknown = [g for g in groups if g not in PARTITION_EDGE_GROUPS]
    if unknown:
        raise FlowkitError(
            f"{', '.join(map(repr, unknown))} is not one of the search's edge groups ({', '.join(PARTITION_EDGE_GROUPS)})"
        )
    gates = gate_table(found, num_layers, groups=groups)
    kept = gates[gates["kept"]]
    return {g: [int(layer) for layer in kept.loc[kept["edges"] == g, "layer"]] for g in groups}


def gate_sweep(
    session, gate: Gate, values: Sequence[float] = (1.0, 0.3, 0.1, 0.01, 0.0), layer_bias=None
) -> pd.DataFrame:
    """p(answer) with one gate set to each of ``values`` (every other gate open), beside the exact knockout of that gate.

    ``layer_bias(gate_values, group_masks) -> (N, N)`` builds one layer's additive bias from the
    ``(G,)`` gate values and ``(G, N, N)`` group masks (default: flowkit's :func:`gate_bias`; a
    chapter passes the student's). At ``g = 1`` the row must equal the clean run and at ``g = 0``
    (clamped to :data:`EPSILON`) the knockout, up to ~1e-5."""
    prepared = session.prepared
    groups = PARTITION_EDGE_GROUPS
    if gate.edges not in groups:
        raise FlowkitError(f"{gate.edges!r} is not one of the search's edge groups ({', '.join(groups)})")
    if not 0 <= gate.layer < session.num_layers:
        raise FlowkitError(f"layer {gate.layer} is not a layer of this model (0..{session.num_layers - 1})")
    masks = gate_masks(prepared.spans, groups)
    layer_bias = layer_bias or (lambda v, m: gate_bias(v[:, None], m)[0])
    truth = prepared.spans.true_option
    knocked = float(session.answer(spec_of([gate])).probs[truth])
    rows = []
    for value in values:
        gates = torch.ones(len(groups))
        gates[groups.index(gate.edges)] = value
        bias = layer_bias(gates, masks).float()
        with torch.no_grad(), apply_attention_biases(session.lm, {gate.layer: bias}):
            logits = session.model(**prepared.inputs, logits_to_keep=1).logits[0, -1]
        dist = answer_distribution(logits.float(), prepared.letter_ids, truth)
        rows.append({"gate_value": float(value), "p_answer": float(dist.probs[truth])})
    table = pd.DataFrame(rows)
    table["clean"] = float(session.clean_answer.probs[truth])
    table["knockout"] = knocked
    return table


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True)
class MaskCondition:
    """One mask of a report, as data (JSON round trip with :meth:`to_dict` / :meth:`from_dict`).

    ``spec`` (a knockout; None with no random fraction: the full model), or the paper's random
    control with ``seed`` and either a fixed suppressed share ``random_fraction`` or, with
    ``random_like``, the share that spec suppresses on each question (the control "sized to" it).
    ``family`` groups conditions in the charts (``full``, ``found``, ``search``, ``window rule``,
    ``paper windows``, ``random``); ``label`` names one (unique within a report).
    """

    family: str
    label: str
    spec: KnockoutSpec | None = None
    random_fraction: float | None = None
    random_like: KnockoutSpec | None = None
    seed: int | None = None

    def masks(self, spans, num_layers: int) -> dict:
        if self.random_fraction is not None or self.random_like is not None:
            if self.random_like is not None:
                f = (
                    1 - count_edges(self.random_like, spans, num_layers)["kept_fraction"]
                    if self.random_like.cuts
                    else 0
                )
            else:
                f = self.random_fraction
            return random_control_masks("paper", spans, num_layers, self.seed, suppressed_fraction=f)
        return block_masks(self.spec, spans, num_layers) if self.spec is not None and self.spec.cuts else {}

    def to_dict(self) -> dict:
        out = {"family": self.family, "label": self.label, "seed": self.seed, "random_fraction": self.random_fraction}
        out["spec"] = self.spec.to_dict() if self.spec is not None else None
        out["random_like"] = self.random_like.to_dict() if self.random_like is not None else None
        return out

    @classmethod
    def from_dict(cls, d: dict) -> MaskCondition:
        spec = KnockoutSpec.from_dict(d["spec"]) if d.get("spec") is not None else None
        like = KnockoutSpec.from_dict(d["random_like"]) if d.get("random_like") is not None else None
        return cls(d["family"], d["label"], spec, d.get("random_fraction"), like, d.get("seed"))


FULL = MaskCondition("full", "full")


def conditions_table(
    vllm, samples, conditions: Sequence[MaskCondition], progress: bool = True, prediction: str = PAPER_PREDICTION
) -> pd.DataFrame:
    """One row per (question, condition): ``family``, ``condition`` (the label), ``seed``, ``correct``,
    ``p_answer``, ``pct_change`` (over questions the full model answers correctly) and the exact
    count and share of causal edges (all layers) the condition suppresses. The full model is always
    the first condition; every question's masks run in one batched replay. A mask that would leave
    some query of a prompt with no key is not run there: its row says ``refused``, counts as a wrong
    answer (-100 %) and has no edge count."""
    conditions = [FULL] + [c for c in conditions if c != FULL]
    labels = [(c.label, c.seed) for c in conditions]
    if len(set(labels)) != len(labels):
        raise FlowkitError("two conditions share a label and seed: give each mask its own label")
    num_layers, rows = vllm.num_layers, []
    for sample_id, sample in tqdm(_prompts(vllm, samples), desc="conditions", disable=not progress):
        prepared = vllm.prepare_prompt(sample)
        spans = prepared.spans
        masks = []
        for c in conditions:
            try:
                masks.append(c.masks(spans, num_layers))
            except KnockoutError:  # e.g. a found mask that leaves a query of this prompt no key
                masks.append(None)
        runnable = [m for m in masks if m is not None]
        answers = iter(vllm.session(prepared).answers(runnable))
        answers = [next(answers) if m is not None else None for m in masks]
        clean, truth = answers[0], spans.true_option
        n = spans.seq_len
        total = n * (n + 1) // 2 * num_layers
        for condition, m, dist in zip(conditions, masks, answers):
            row = {
                "sample": sample_id,
                "task": getattr(sample, "task", ""),
                "family": condition.family,
                "condition": condition.label,
                "seed": condition.seed,
                "edges_total": total,
            }
            if dist is None:  # refused on this prompt: a wrong answer, -100 %, no edge count
                row.update(correct=False, p_answer=float("nan"), edges_kept=np.nan, suppressed_share=np.nan)
                row.update(pct_change=-100.0 if clean.is_correct(prediction) else np.nan, refused=True)
            else:
                cut = sum(int(x.sum()) for x in m.values()) if m else 0
                change = (
                    percent_change(clean.probs[truth], dist.probs[truth]) if clean.is_correct(prediction) else np.nan
                )
                row.update(correct=bool(dist.is_correct(prediction)), p_answer=float(dist.probs[truth]))
                row.update(pct_change=change, edges_kept=total - cut, suppressed_share=cut / total, refused=False)
            rows.append(row)
    table = pd.DataFrame(rows)
    table["seed"] = table["seed"].astype("Int64")
    return table


def summarize_conditions(table: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per condition (in the table's order): edges kept (mean exact count and share), accuracy with
    its bootstrap interval over questions, mean % change in p(answer) over the questions the full
    model answers correctly. A condition with several seeds (a random control) averages each
    question's correctness over its seeds first, so the interval resamples questions, not rows;
    ``seed_min`` / ``seed_max`` are the accuracies of its worst and best seed."""
    rows = []
    for (family, name), group in table.groupby(["family", "condition"], sort=False):
        # questions in sorted order, as experiments.pathway_accuracy has them: the same resamples, the same interval
        per_question = group.groupby("sample", sort=True)["correct"].mean()
        lo, hi = bootstrap_ci(per_question.to_numpy(float), level)
        seeds = group["seed"].dropna().nunique()
        by_seed = group.groupby("seed")["correct"].mean() if seeds else pd.Series([group["correct"].mean()])
        rows.append(
            {
                "family": family,
                "condition": name,
                "edges_kept": float(group["edges_kept"].mean()),
                "kept_share": float(1 - group["suppressed_share"].mean()),
                "suppressed_share": float(group["suppressed_share"].mean()),
                "accuracy": float(per_question.mean()),
                "lo": lo,
                "hi": hi,
                "seed_min": float(by_seed.min()),
                "seed_max": float(by_seed.max()),
                "pct_change": float(group["pct_change"].mean()),
                "questions": int(per_question.size),
                "seeds": int(seeds),
            }
        )
    return pd.DataFrame(rows)


def held_out_conditions(
    found: KnockoutSpec,
    num_layers: int,
    windows: PathwayWindows | dict[str, PathwayWindows] | None = None,
    random_seeds: Sequence[int] = (0, 1, 2, 3, 4),
) -> list[MaskCondition]:
    """The held-out report's masks: ``found``, each window mask (``windows``: one, or label -> windows;
    default the paper's 7B windows scaled to this depth) and the paper's random control sized to
    the found mask on each question (one condition per seed)."""
    if len(random_seeds) < 5:
        raise FlowkitError("the random control needs at least 5 seeds")
    if windows is None:
        windows = {"window": paper_windows(num_layers)}
    elif isinstance(windows, PathwayWindows):
        windows = {"window": windows}
    out = [MaskCondition("found", "found", spec=found)]
    out += [MaskCondition("window", label, spec=pathway_spec(w, num_layers)) for label, w in windows.items()]
    out += [MaskCondition("random", "random", random_like=found, seed=seed) for seed in random_seeds]
    return out


def held_out_report(
    vllm,
    samples,
    found: KnockoutSpec,
    windows: PathwayWindows | dict[str, PathwayWindows] | None = None,
    random_seeds: Sequence[int] = (0, 1, 2, 3, 4),
    search_samples: Sequence[str] = (),
    progress: bool = True,
    prediction: str = PAPER_PREDICTION,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The found mask on held-out questions, beside window masks and the paper's random control.

    Conditions: :func:`held_out_conditions`. Refuses any question the search saw
    (``search_samples``: ids). Returns the per-question table (:func:`conditions_table`) and
    :func:`summarize_conditions`' summary.
    """
    samples = list(samples)
    seen = set(search_samples) & {sid for sid, _ in _prompts(vllm, samples)}
    if seen:
        raise FlowkitError(f"{len(seen)} held-out question(s) were search questions (e.g. {sorted(seen)[0]})")
    conditions = held_out_conditions(found, vllm.num_layers, windows, random_seeds)
    table = conditions_table(vllm, samples, conditions, progress, prediction)
    return table, summarize_conditions(table)


PAPER_PRESETS = (
    "llava-next-7b-video-ft",
    "llava-next-13b-video-ft",
    "mini-internvl-4b-video-ft",
    "videollama3-7b",
)


def curve_conditions(
    num_layers: int,
    result: PathwaySearchResult | None = None,
    window_rule: dict[str, PathwayWindows] | None = None,
    presets: Sequence[str] = PAPER_PRESETS,
    random_fractions: Sequence[float] = (0.2, 0.4, 0.6, 0.8),
    random_seeds: Sequence[int] = (0, 1, 2, 3, 4),
    max_path_points: int = 8,
) -> list[MaskCondition]:
    """The faithfulness curve's masks: the search's path (at most ``max_path_points`` evenly spaced
    along it, the found mask last), ``window_rule`` (label -> windows, e.g.
    :func:`flowkit.analysis.experiments.windows_from_sweeps` at several fractions), each paper
    preset's windows scaled to this depth, and the paper's random control at each fraction."""
    out = []
    if result is not None:
        path = result.path_specs()
        if len(path) > max_path_points:
            picks = np.unique(np.linspace(0, len(path) - 1, max_path_points).round().astype(int))
            path = [path[i] for i in picks]
        out += [MaskCondition("search", f"search step {i}", spec=spec) for i, (_, spec) in enumerate(path)]
    for label, windows in (window_rule or {}).items():
        out.append(MaskCondition("window rule", label, spec=pathway_spec(windows, num_layers)))
    for name in presets:
        out.append(MaskCondition("paper windows", name, spec=pathway_spec(paper_windows(num_layers, name), num_layers)))
    for f in random_fractions:
        out += [MaskCondition("random", f"random f={f:g}", random_fraction=f, seed=seed) for seed in random_seeds]
    return out


def faithfulness_curve(
    vllm,
    samples,
    result: PathwaySearchResult | None = None,
    window_rule: dict[str, PathwayWindows] | None = None,
    presets: Sequence[str] = PAPER_PRESETS,
    random_fractions: Sequence[float] = (0.2, 0.4, 0.6, 0.8),
    random_seeds: Sequence[int] = (0, 1, 2, 3, 4),
    max_path_points: int = 8,
    progress: bool = True,
    prediction: str = PAPER_PREDICTION,
) -> pd.DataFrame:
    """Accuracy (with a 95 % interval) against the share of edges suppressed, one row per mask
    (:func:`curve_conditions`; random seeds averaged per question). Evaluate on held-out questions."""
    conditions = curve_conditions(
        vllm.num_layers, result, window_rule, presets, random_fractions, random_seeds, max_path_points
    )
    table = conditions_table(vllm, samples, conditions, progress, prediction)
    return curve_summary(table)


def curve_summary(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`summarize_conditions` with the ``label`` column the faithfulness chart reads."""
    summary = summarize_conditions(table)
    return summary.rename(columns={"condition": "label"})


__all__ = [
    "EPSILON",
    "AccuracyRule",
    "Gate",
    "PathwaySearchResult",
    "FULL",
    "MaskCondition",
    "PAPER_PRESETS",
    "conditions_table",
    "curve_conditions",
    "curve_summary",
    "faithfulness_curve",
    "held_out_conditions",
    "gate_bias",
    "gate_grid",
    "gate_masks",
    "gate_scores",
    "gate_sweep",
    "gate_table",
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
