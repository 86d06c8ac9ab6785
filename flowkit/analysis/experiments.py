"""The paper's four findings as functions, each returning a tidy pandas DataFrame.

============================  ==========================================================
``cross_frame_sweep``         finding 1: cut frame i <- earlier frames, window by window
``flow_sweep``                findings 2-3: video->question, question->last, ... windows
``video_token_lens``          finding 2: which words video tokens align with, per layer
``answer_emergence``          finding 3: p(true option) and p(false options) per layer
``effective_pathways``        finding 4: accuracy with only the pathways vs random masks
``accuracy``                  plain accuracy per task
============================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from flowkit.errors import FlowkitError
from flowkit.intervention.edge_groups import PAPER_EDGE_GROUPS
from flowkit.intervention.masks import block_masks, count_edges
from flowkit.prompts.readout import PAPER_EMERGENCE
from flowkit.intervention.spec import KnockoutSpec
from flowkit.analysis.lens import activations, bag_temporal_share, emergence_probs, lens_hidden, lens_layers, word_bag
from flowkit.analysis.pathways import (
    LAYER_MATCHED_RANDOM_CONTROL,
    PAPER_RANDOM_CONTROL,
    RANDOM_CONTROLS,
    PathwayWindows,
    paper_pathway_preset,
    pathway_spec,
    random_control_masks,
)
from flowkit.analysis.stats import accuracy_by, bootstrap_ci, intervals_by, mean_with_ci
from flowkit.analysis.sweep import summarize, sweep


def cross_frame_sweep(
    vllm,
    samples,
    centers: Iterable[int] | None = None,
    size: int = 9,
    cache=None,
    progress: bool = True,
    replay: bool = True,
) -> pd.DataFrame:
    """Finding 1: % change in p(answer) when frame i cannot read frames j < i, per window."""
    return sweep(
        vllm,
        samples,
        edge_groups=["cross_frame"],
        centers=centers,
        size=size,
        cache=cache,
        progress=progress,
        replay=replay,
    )


def flow_sweep(
    vllm,
    samples,
    edge_groups: Sequence[str] = PAPER_EDGE_GROUPS,
    centers=None,
    size: int = 9,
    cache=None,
    progress: bool = True,
    replay: bool = True,
) -> pd.DataFrame:
    """Findings 2-3: the paper's edge groups (or yours), window by window."""
    return sweep(
        vllm,
        samples,
        edge_groups=edge_groups,
        centers=centers,
        size=size,
        cache=cache,
        progress=progress,
        replay=replay,
    )


def answer_table(vllm, samples, progress: bool = True) -> pd.DataFrame:
    """One row per sample: predicted and true option, ``correct`` (the paper's rule: the whole
    vocabulary's top token is the true letter), ``top_is_letter``, ``correct_options`` (the
    option-letter rule) and p(answer) (accuracies per task: :func:`flowkit.analysis.stats.accuracy_by`)."""
    rows = []
    for sample in tqdm(list(samples), desc="accuracy", disable=not progress):
        dist = vllm.answer(vllm.prepare_sample(sample))  # one plain forward: no knockout to replay
        rows.append(
            {
                "sample": sample.id,
                "task": sample.task,
                "answer": sample.answer,
                "options": len(sample.candidates),
                "predicted": dist.predicted_letter,
                "correct": bool(dist.is_correct("vocabulary")),
                "top_is_letter": dist.top_is_letter,
                "correct_options": bool(dist.is_correct("options")),
                "p_answer": dist.p(sample.answer),
            }
        )
    return pd.DataFrame(rows)


def answer_emergence(vllm, samples, progress: bool = True, readout=PAPER_EMERGENCE, readouts=None) -> pd.DataFrame:
    """Finding 3: p(true option) and p(false options) at the last position after every layer.

    ``readout`` names the rule (:data:`flowkit.prompts.readout.EMERGENCE_READOUTS`): ``"paper"``
    (default: ``hidden · lm_headᵀ`` with no final norm except at the last layer, probabilities
    over the whole vocabulary), ``"logit_lens"`` (final norm at every layer), ``"options"``
    (renormalised over the option letters), or a readout function (a tuned lens:
    :func:`flowkit.analysis.tuned_lens.tuned_lens_readout`). ``readouts`` (a mapping name -> rule
    name or function) reads every question's one forward through several readouts at once; the
    table then has a ``readout`` column. ``layer`` is the ``resid_post`` index (the paper's
    ``hidden_states`` index is ``layer + 1``).
    """
    named = dict(readouts) if readouts is not None else {None: readout}
    rows = []
    for sample in tqdm(list(samples), desc="answer emergence", disable=not progress):
        prepared = vllm.prepare_sample(sample)
        hidden = activations(vllm, prepared).resid_posts(prepared.spans.last)  # (layers, d_model)
        true = prepared.spans.true_option
        for name, rule in named.items():
            probs = emergence_probs(vllm, hidden, list(prepared.letter_ids), rule)
            for layer, p in enumerate(probs.tolist()):
                false = [x for i, x in enumerate(p) if i != true]
                rows.append(
                    {
                        **({} if name is None else {"readout": name}),
                        "sample": sample.id,
                        "task": sample.task,
                        "layer": layer,
                        "p_true": p[true],
                        "p_false_max": max(false),
                        "p_false_mean": float(np.mean(false)),
                        "true_is_top": int(np.argmax(p)) == true,
                    }
                )
    columns = ["sample", "task", "layer", "p_true", "p_false_max", "p_false_mean", "true_is_top"]
    return pd.DataFrame(rows, columns=columns if readouts is None else ["readout", *columns])


def lens_bag_temporal_share(vllm, bag: str = "kit") -> float:
    """The share of temporal words in the bag :func:`video_token_lens` ranks (token ids of the
    bag's spatial and temporal words): what ``temporal_share`` would be if the lens picked
    its top words at random. A share at video tokens means something only against this."""
    return float(word_bag(vllm, bag)[1].float().mean())


def video_token_lens(
    vllm,
    samples,
    kind: str = "embedding",
    k: int = 10,
    progress: bool = True,
    layers: str = "paper",
    bag: str = "kit",
    kinds: Sequence[str] | None = None,
    bags: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Finding 2 (lens): which words of a bag the video tokens align with, after every layer.

    Each video token's hidden state is scored against the bag's spatial and temporal words
    (``bag``: a name of :data:`flowkit.data.vocab.WORD_BAGS`, default the question set's); the top
    ``k`` words per token are counted. ``kind="embedding"`` is the paper's lens (hidden @ input
    embeddingsᵀ); ``"logit"`` the usual logit lens (final norm + ``lm_head`` at every layer).
    ``layers="paper"`` (default) numbers layers as the paper's lens script does: layer i reads the
    input of layer i (0: the embeddings) and the last layer the final norm's output
    (:func:`flowkit.analysis.lens.paper_lens_layer`); ``"resid_post"``: layer l is the output of
    layer l (-1: the input), no norm. One row per (sample, layer) with ``resid_post`` (the stream
    read), the share of temporal words among the top words (``temporal_share``) and ``spatial_share``.
    ``kinds`` and ``bags`` read every question's one forward through several lenses and word bags at
    once (with ``bags``, the table has a ``bag`` column).
    """
    kinds = (kind,) if kinds is None else tuple(kinds)
    word_ids = {name: word_bag(vllm, name) for name in ((bag,) if bags is None else bags)}
    plan = lens_layers(vllm.num_layers, layers)
    rows = []
    for sample in tqdm(list(samples), desc=f"{', '.join(kinds)} lens", disable=not progress):
        prepared = vllm.prepare_sample(sample)
        cache = activations(vllm, prepared)  # one forward for every lens and bag
        video = slice(*prepared.spans.video)
        for name, ids in word_ids.items():
            for lens_kind in kinds:
                for layer, resid_post, normed in plan:
                    # the logit lens applies the final norm itself
                    hidden = lens_hidden(vllm, cache, resid_post, normed and lens_kind == "embedding", video)
                    share = bag_temporal_share(vllm, hidden, ids, lens_kind, k)
                    rows.append(
                        {
                            **({} if bags is None else {"bag": name}),
                            "sample": sample.id,
                            "task": sample.task,
                            "layer": layer,
                            "resid_post": resid_post,
                            "kind": lens_kind,
                            "temporal_share": share,
                            "spatial_share": 1 - share,
                        }
                    )
    columns = ["sample", "task", "layer", "resid_post", "kind", "temporal_share", "spatial_share"]
    return pd.DataFrame(rows, columns=columns if bags is None else ["bag", *columns])


def curves_with_ci(flows: pd.DataFrame, tasks=None, level: float = 0.95) -> pd.DataFrame:
    """Mean % change per (edge group, centre) over the correctly answered questions of ``tasks``
    (default all), pooled, with a bootstrap interval over those questions (:mod:`flowkit.analysis.stats`).

    ``flows`` is per-question sweep output (:func:`flowkit.analysis.sweep.sweep`, the stored ``sweeps``
    table). Columns: ``edge_group``, ``center``, ``pct_change``, ``lo``, ``hi``, ``n`` (questions).
    """
    rows = flows[flows["correct_base"]]
    if tasks is not None:
        rows = rows[rows["task"].isin(list(tasks))]
    if rows.empty:
        return pd.DataFrame(columns=["edge_group", "center", "pct_change", "lo", "hi", "n"])
    return mean_with_ci(rows, ["edge_group", "center"], "pct_change", level)


def leave_one_task_out(
    flows: pd.DataFrame, tasks, edge_group: str = "cross_frame", level: float = 0.95
) -> pd.DataFrame:
    """Does one task carry the pooled headline? The pooled trough of ``edge_group`` over ``tasks``,
    then with each task left out in turn: one row each with ``left_out`` ("none" for all of them),
    the trough's ``center``, ``pct_change``, ``lo`` / ``hi`` (its 95 % interval over questions) and
    ``n`` (questions)."""
    tasks = list(tasks)
    rows = []
    for left_out in ["none", *tasks]:
        kept = [t for t in tasks if t != left_out]
        curve = curves_with_ci(flows[flows["edge_group"] == edge_group], kept, level)
        if curve.empty:
            continue
        trough = curve.loc[curve["pct_change"].idxmin()]
        rows.append(
            {
                "left_out": left_out,
                "center": int(trough["center"]),
                "pct_change": float(trough["pct_change"]),
                "lo": float(trough["lo"]),
                "hi": float(trough["hi"]),
                "n": int(trough["n"]),
            }
        )
    return pd.DataFrame(rows, columns=["left_out", "center", "pct_change", "lo", "hi", "n"])


def task_curves_with_ci(flows: pd.DataFrame, edge_groups=None, level: float = 0.95) -> pd.DataFrame:
    """Per task, edge group and window centre: the mean % change over the task's correctly answered
    questions with a bootstrap interval over those questions (``lo``, ``hi``, ``n``); what
    :func:`flowkit.views.plots.flow_curves` draws as a line with a band."""
    rows = flows[flows["correct_base"]]
    if edge_groups is not None:
        rows = rows[rows["edge_group"].isin(list(edge_groups))]
    if rows.empty:
        return pd.DataFrame(columns=["task", "edge_group", "center", "pct_change", "lo", "hi", "n"])
    return mean_with_ci(rows, ["task", "edge_group", "center"], "pct_change", level)


def question_troughs(flows: pd.DataFrame, edge_group: str, tasks=None) -> pd.DataFrame:
    """Per correctly answered question: its deepest % change over the windows when ``edge_group`` is cut,
    and where (``center``). Shows how typical one chosen question is within its task."""
    rows = flows[(flows["edge_group"] == edge_group) & flows["correct_base"]]
    if tasks is not None:
        rows = rows[rows["task"].isin(list(tasks))]
    idx = rows.groupby("sample")["pct_change"].idxmin()
    return rows.loc[idx, ["sample", "task", "center", "pct_change"]].reset_index(drop=True)


def troughs(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (task, edge group): the window centre of the deepest mean % change and its value."""
    idx = summary.groupby(["task", "edge_group"])["pct_change"].idxmin()
    return summary.loc[idx, ["task", "edge_group", "center", "pct_change"]].reset_index(drop=True)


def window_from_curve(curve, fraction: float = 0.5, half_window: int = 4) -> tuple[int, int]:
    """The window rule on one sweep curve (its % change at window centres 0, 1, 2, ...): from the
    trough, extend to every neighbouring centre whose change is still at least ``fraction`` of the
    trough's, then widen by the sweep's half-window (a 9-layer window reaches 4 layers either side of
    its centre), clipped at the model's ends. A curve that never falls below 0 gives ``(t, t)`` at its
    lowest point."""
    curve = [float(v) for v in curve]
    low = min(range(len(curve)), key=curve.__getitem__)
    if curve[low] >= 0:
        return (low, low)
    lo = hi = low
    while lo > 0 and curve[lo - 1] <= fraction * curve[low]:
        lo -= 1
    while hi < len(curve) - 1 and curve[hi + 1] <= fraction * curve[low]:
        hi += 1
    return (max(0, lo - half_window), min(len(curve) - 1, hi + half_window))


def windows_from_sweeps(
    summary: pd.DataFrame, num_layers: int, fraction: float = 0.5, window_rule=None
) -> PathwayWindows:
    """Pathway windows read off sweep curves: where the mean % change (over tasks) is at least
    ``fraction`` of its trough, as one contiguous range around the trough (:func:`window_from_curve`;
    ``window_rule(curve, fraction)`` replaces it, e.g. a student's own)."""
    curves = summary.groupby(["edge_group", "center"])["pct_change"].mean()
    rule = window_rule if window_rule is not None else window_from_curve

    def window(edge_group: str) -> tuple[int, int]:
        swept = edge_group in curves.index.get_level_values(0)  # no row: no question was answered correctly
        curve = (curves.loc[edge_group] if swept else pd.Series(dtype=float)).reindex(range(num_layers))
        first, last = rule(curve.fillna(0.0).tolist(), fraction)
        return (int(first), int(last))

    cross, vq, ql = window("cross_frame"), window("video->question"), window("question->last")
    return PathwayWindows(
        cross_frame=cross,
        video_to_question=vq,
        question_to_last=ql,
        video_to_video_until=max(vq[1], cross[1]),
        question_to_question_until=ql[1],
    )


#: condition name of each random control in :func:`effective_pathways`' table
RANDOM_CONDITIONS = {PAPER_RANDOM_CONTROL: "random", LAYER_MATCHED_RANDOM_CONTROL: "random_layer_matched"}


def _resolve_pathways(
    vllm, windows: PathwayWindows | KnockoutSpec | str, random_fraction: float | None
) -> tuple[PathwayWindows, float | None, str | None]:
    """Windows, the paper control's f, and where f comes from (a preset name gives the paper's f).

    A :class:`KnockoutSpec` (e.g. the mask :func:`flowkit.analysis.pathway_search.search_pathways`
    found) passes through as the mask itself."""
    if isinstance(windows, (PathwayWindows, KnockoutSpec)):
        return windows, random_fraction, None if random_fraction is None else "given"
    preset = paper_pathway_preset(windows)
    if preset.num_layers != vllm.num_layers:
        raise FlowkitError(
            f"the preset {preset.name!r} is for {preset.num_layers} layers, this model has {vllm.num_layers}. "
            f"Scale it with flowkit.analysis.pathways.paper_windows({vllm.num_layers}, {preset.name!r}) and pass those "
            "windows (f is then this model's own suppressed share)."
        )
    if random_fraction is None:
        return preset.windows, preset.suppressed_fraction, f"the paper's f for {preset.model}"
    return preset.windows, random_fraction, "given"


@torch.inference_mode()
def effective_pathways(
    vllm,
    samples,
    windows: PathwayWindows | KnockoutSpec | str,
    random_seeds: Sequence[int] = (0, 1, 2, 3, 4),
    random_controls: Sequence[str] = (PAPER_RANDOM_CONTROL,),
    random_fraction: float | None = None,
    progress: bool = True,
    replay: bool = True,
    random_overflow: str = "refuse",
) -> tuple[pd.DataFrame, dict]:
    """Finding 4: accuracy with all edges, with only the pathways, and with random masks.

    ``correct`` follows the paper's rule (the whole vocabulary's top token is the true letter),
    ``correct_options`` the option-letter rule. ``random_overflow="cut_pool"`` lets the paper's
    random control cut its whole pool on a prompt too short for its count, as the paper's code
    does (default ``"refuse"``: raise).

    One row per sample and condition: ``full``, ``pathways``, and per seed ``random`` (the
    paper's control, see :func:`flowkit.analysis.pathways.paper_random_block_masks`) and/or
    ``random_layer_matched`` (flowkit's, :func:`flowkit.analysis.pathways.layer_matched_random_block_masks`),
    as asked by ``random_controls``. Accuracy per condition is plain accuracy (the paper's).
    ``kept_fraction`` is the question's exact share of causal edges the pathway mask keeps
    (prompts differ in length, so it differs a little from question to question).

    Args:
        windows: :class:`PathwayWindows`, or the name of one of the paper's models
            (:data:`flowkit.analysis.pathways.PAPER_PATHWAY_PRESETS`; the model must have its depth),
            or a :class:`KnockoutSpec` used as the pathway mask itself (e.g. a mask the pathway
            search found and saved; f is then that mask's own suppressed share).
        random_fraction: f, the share of edges the paper's control cuts in every layer. By
            default the paper's value for a preset, else the mean over ``samples`` of the share
            this model's pathway mask suppresses (one extra pass that only prepares prompts).
        replay: per question, one :class:`~flowkit.intervention.session.Session` (one clean forward:
            ``full``) replays the pathway mask and every random mask as batches
            (:meth:`~flowkit.intervention.session.Session.last_logits`; equal to full forwards to
            float rounding, <= 1e-5 in p). ``False``: one full forward per condition (the
            former path, kept for comparison).

    Returns the table and a dict of edge counts: the first question's exact counts
    (``total``, ``cut``, ``kept``, ``kept_fraction``, as before), ``mean_kept_fraction``
    over all questions, ``random_fraction`` (f) and ``random_fraction_source``.
    """
    windows, random_fraction, source = _resolve_pathways(vllm, windows, random_fraction)
    unknown = [c for c in random_controls if c not in RANDOM_CONTROLS]
    if unknown:
        raise FlowkitError(f"unknown random control(s) {unknown}; the controls are {', '.join(RANDOM_CONTROLS)}.")
    samples = list(samples)
    num_layers = vllm.num_layers
    spec = windows if isinstance(windows, KnockoutSpec) else pathway_spec(windows, num_layers)
    edge_counts: dict[str, dict] = {}  # per question; prompts are prepared again below, not kept in memory
    if PAPER_RANDOM_CONTROL in random_controls and random_fraction is None:
        for sample in tqdm(samples, desc="pathway edge counts", disable=not progress):
            edge_counts[sample.id] = count_edges(spec, vllm.prepare_sample(sample).spans, num_layers)
        random_fraction = 1.0 - float(np.mean([c["kept_fraction"] for c in edge_counts.values()]))
        source = f"this model's pathway mask, mean over {len(edge_counts)} questions"
    rows, counts = [], None
    for sample in tqdm(samples, desc="effective pathways", disable=not progress):
        prepared = vllm.prepare_sample(sample)
        spans = prepared.spans
        masks = block_masks(spec, spans, num_layers)
        if sample.id not in edge_counts:
            edge_counts[sample.id] = count_edges(spec, spans, num_layers)
        sample_counts = edge_counts[sample.id]
        if counts is None:
            counts = dict(sample_counts)
        conditions = [("full", None, None), ("pathways", None, masks)]
        for control in random_controls:
            conditions += [
                (
                    RANDOM_CONDITIONS[control],
                    seed,
                    random_control_masks(
                        control,
                        spans,
                        num_layers,
                        seed,
                        suppressed_fraction=random_fraction,
                        reference=masks,
                        on_overflow=random_overflow,
                    ),
                )
                for seed in random_seeds
            ]
        # one clean run, every mask replayed in batches (exact to float rounding); or full forwards
        answers = vllm.session(prepared, replay=replay).answers([m for _, _, m in conditions])
        for (name, seed, _), dist in zip(conditions, answers):
            rows.append(
                {
                    "sample": sample.id,
                    "task": sample.task,
                    "condition": name,
                    "seed": seed,
                    "correct": bool(dist.is_correct("vocabulary")),
                    "correct_options": bool(dist.is_correct("options")),
                    "p_answer": dist.p(sample.answer),
                    "kept_fraction": sample_counts["kept_fraction"],
                }
            )
    if counts is None:
        raise FlowkitError("effective_pathways needs at least one question.")
    counts.update(
        mean_kept_fraction=float(np.mean([c["kept_fraction"] for c in edge_counts.values()])),
        random_fraction=random_fraction,
        random_fraction_source=source,
    )
    return pd.DataFrame(rows), counts


def pathway_summary(
    vllm,
    samples,
    windows: PathwayWindows | KnockoutSpec | str,
    random_seeds: Sequence[int] = (0,),
    random_controls: Sequence[str] = (PAPER_RANDOM_CONTROL,),
    random_fraction: float | None = None,
    progress: bool = False,
    replay: bool = True,
) -> dict:
    """Finding 4 in one dict: the fraction of edges kept and accuracy full / pathways / random
    (``accuracy_ci``: 95 % bootstrap intervals over the questions, and seeds for random masks).

    ``kept_fraction`` is the mean over ``samples`` of each question's exact kept share
    (``edges`` has the first question's exact counts too). ``random`` is the paper's control;
    ``random_layer_matched`` appears when asked for in ``random_controls``. See
    :func:`effective_pathways`.
    """
    table, counts = effective_pathways(
        vllm,
        samples,
        windows,
        random_seeds=random_seeds,
        random_controls=random_controls,
        random_fraction=random_fraction,
        progress=progress,
        replay=replay,
    )
    windows, _, _ = _resolve_pathways(vllm, windows, random_fraction)
    accuracy = accuracy_by(table, "condition")
    if isinstance(windows, KnockoutSpec):
        plain = windows.to_dict()
    else:
        plain = {k: list(v) if isinstance(v, tuple) else v for k, v in windows.to_dict().items()}
    conditions = [c for c in ("full", "pathways", *RANDOM_CONDITIONS.values()) if c in accuracy]
    accuracy_ci = intervals_by(table, "condition", unit="sample")  # seeds of a random mask averaged per question
    return {
        "windows": plain,
        "edges": counts,
        "kept_fraction": counts["mean_kept_fraction"],
        "accuracy": {c: float(accuracy[c]) for c in conditions},
        "accuracy_ci": {c: accuracy_ci[c] for c in conditions},
        "questions": len(set(table["sample"])),
        "random_seeds": list(random_seeds),
        "random_controls": list(random_controls),
        "random_fraction": counts["random_fraction"],
    }


def pathway_accuracy(
    table: pd.DataFrame, interval=None, conditions=("full", "pathways", "random"), **labels
) -> list[dict]:
    """Accuracy of each mask of a pathways table, with 95 % intervals over *questions*.

    ``table``: one row per (question, mask, seed) with ``sample``, ``condition``, ``correct`` and, for
    the random control, ``seed`` (:func:`effective_pathways`' table, the stored ``pathways``). Each
    question's correctness under a mask is first averaged over that mask's seeds, so seeds never
    count as more questions. Per mask: ``accuracy`` with ``lo`` / ``hi``; ``minus full`` (the mean
    question-by-question difference from ``full``, paired) with its interval; ``seed range`` (the
    lowest and highest single-seed accuracy, or "" without seeds); ``worse`` / ``better``: how many
    questions the mask answers less / more often correctly than ``full`` (a net accuracy near zero can
    hide many answers changed both ways). ``interval(values, seed=0)`` gives
    the ``(lo, hi)`` (default :func:`flowkit.analysis.stats.bootstrap_ci`: a chapter passes the
    student's); ``labels`` are copied into every row (``task=...``, ``scope=...``).
    """
    if interval is None:

        def interval(values, seed=0):
            return bootstrap_ci(values, seed=seed)

    missing = [c for c in conditions if c not in set(table["condition"])]
    if missing:
        raise FlowkitError(f"the table has no rows for {missing}; its masks are {sorted(set(table['condition']))}")
    per_question = table.groupby(["sample", "condition"])["correct"].mean().unstack()[list(conditions)]
    rows = []
    for condition in conditions:
        seeded = table[(table["condition"] == condition) & table["seed"].notna()] if "seed" in table else table.iloc[:0]
        seeds = seeded.groupby("seed")["correct"].mean()
        difference = per_question[condition] - per_question[conditions[0]]
        lo, hi = interval(per_question[condition], seed=0)
        d_lo, d_hi = interval(difference, seed=0)
        rows.append(
            {
                **labels,
                "condition": condition,
                "questions": len(per_question),
                "accuracy": float(per_question[condition].mean()),
                "lo": float(lo),
                "hi": float(hi),
                "minus full": float(difference.mean()),
                "minus full lo": float(d_lo),
                "minus full hi": float(d_hi),
                "seed range": f"{100 * seeds.min():.1f}-{100 * seeds.max():.1f} %" if len(seeds) > 1 else "",
                "worse": int((difference < 0).sum()),
                "better": int((difference > 0).sum()),
            }
        )
    return rows


__all__ = [
    "leave_one_task_out",
    "window_from_curve",
    "pathway_accuracy",
    "RANDOM_CONDITIONS",
    "answer_emergence",
    "answer_table",
    "cross_frame_sweep",
    "effective_pathways",
    "flow_sweep",
    "pathway_summary",
    "summarize",
    "troughs",
    "curves_with_ci",
    "task_curves_with_ci",
    "question_troughs",
    "lens_bag_temporal_share",
    "video_token_lens",
    "windows_from_sweeps",
]
