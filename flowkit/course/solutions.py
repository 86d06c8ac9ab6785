"""Reference solutions to the chapters' exercises — the one copy.

A chapter shows a solution with :func:`flowkit.course.exercises.show_solution`, which prints
the function's source from this module and runs the exercise's check on it. Each
function is written the way a student would write it (plain torch / Python), not by
calling the kit's own implementation that the check compares against.
"""

from __future__ import annotations

import torch


# ---------------------------------------------------------------- chapter 00
def frame_positions(spans, frame: int) -> list[int]:
    """Token positions of frame ``frame`` (0-indexed) in the prompt."""
    start, end = spans.frame_spans[frame]
    return list(range(start, end))


def option_probabilities(letter_logits: torch.Tensor) -> torch.Tensor:
    """Renormalise the option letters' logits into probabilities that sum to 1."""
    return torch.softmax(letter_logits.float(), dim=-1)


# ---------------------------------------------------------------- chapter 01
def cross_frame_mask(spans) -> torch.Tensor:
    """(N, N) bool, True where a query in frame i would read a key in an earlier frame j < i."""
    mask = torch.zeros(spans.seq_len, spans.seq_len, dtype=torch.bool)
    for i, (q_start, q_end) in enumerate(spans.frame_spans):
        for k_start, k_end in spans.frame_spans[:i]:
            mask[q_start:q_end, k_start:k_end] = True
    return mask


def sweep_curve(rows, seed: int = 0):
    """One sweep curve with 95 % bootstrap bands: per window centre, the mean % change over the correctly
    answered questions, and the interval from resampling those questions."""
    import numpy as np
    import pandas as pd

    kept = rows[rows["correct_base"]]
    out = []
    for center, group in kept.groupby("center"):
        values = group["pct_change"].to_numpy(dtype=float)
        rng = np.random.default_rng(seed)
        means = values[rng.integers(0, len(values), size=(2000, len(values)))].mean(axis=1)
        out.append(
            {
                "center": center,
                "pct_change": values.mean(),
                "lo": np.quantile(means, 0.025),
                "hi": np.quantile(means, 0.975),
                "n": len(values),
            }
        )
    return pd.DataFrame(out)


def window_layers(center: int, num_layers: int, size: int = 9) -> list[int]:
    """The layers a ``size``-layer window centred on ``center`` covers, clipped at the model's ends."""
    start = center - size // 2
    return [layer for layer in range(start, start + size) if 0 <= layer < num_layers]


def percent_change(p_base: float, p_new: float) -> float:
    """The paper's metric: the relative change of p(answer), in percent."""
    return 100.0 * (p_new - p_base) / p_base


# ---------------------------------------------------------------- chapter 02
def embedding_lens_scores(hidden: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """Score hidden states (n, d) against every input embedding (V, d): (n, V) dot products."""
    return hidden.float() @ embedding.float().T


def temporal_share(top_words: list[list[str]], temporal_words) -> float:
    """Share of temporal words among all the top words of all tokens."""
    words = [word for token_words in top_words for word in token_words]
    if not words:
        return 0.0
    temporal = set(temporal_words)
    return sum(word in temporal for word in words) / len(words)


# ---------------------------------------------------------------- chapter 03
def first_layer_above(p_by_layer, threshold: float = 0.5):
    """The first layer whose probability exceeds ``threshold``, or None if none does."""
    for layer, p in enumerate(p_by_layer):
        if p > threshold:
            return layer
    return None


def deepest_window(curve: dict) -> tuple:
    """The (window centre, % change) where a sweep curve reaches its minimum."""
    center = min(curve, key=curve.get)
    return center, curve[center]


# ---------------------------------------------------------------- chapter 04
def window_from_curve(curve, fraction: float = 0.5) -> tuple[int, int]:
    """The window rule: grow from the trough while the change stays >= ``fraction`` of it, then widen by 4."""
    low = min(range(len(curve)), key=lambda i: curve[i])
    if curve[low] >= 0:
        return (low, low)
    first = last = low
    while first > 0 and curve[first - 1] <= fraction * curve[low]:
        first -= 1
    while last < len(curve) - 1 and curve[last + 1] <= fraction * curve[low]:
        last += 1
    return (max(0, first - 4), min(len(curve) - 1, last + 4))


def kept_fraction(masks: dict, seq_len: int, num_layers: int) -> float:
    """Fraction of causal attention edges (over all layers) that the block masks keep."""
    per_layer = seq_len * (seq_len + 1) // 2
    cut = sum(int(mask.sum()) for mask in masks.values())
    return 1 - cut / (per_layer * num_layers)


def pathway_cuts(windows, num_layers: int):
    """The knockout that keeps only the pathways: each edge group is cut in every layer outside its window."""
    from flowkit import Cut, KnockoutSpec, LayerSet

    def outside(first: int, last: int) -> tuple:
        return tuple(layer for layer in range(num_layers) if not first <= layer <= last)

    cut_layers = {
        "cross_frame": outside(*windows.cross_frame),
        "video->question": outside(*windows.video_to_question),
        "question->last": outside(*windows.question_to_last),
        "video->last": tuple(range(num_layers)),  # no window: the video reaches the answer through the question
        "last->last": tuple(range(num_layers)),
        "video->video": outside(0, windows.video_to_video_until),
        "question->question": outside(0, windows.question_to_question_until),
    }
    return KnockoutSpec(tuple(Cut(edges, LayerSet(layers)) for edges, layers in cut_layers.items() if layers))


def random_cut_like(block: torch.Tensor, seed: int) -> torch.Tensor:
    """Cut as many random causal edges as ``block`` cuts, never a token's edge to itself."""
    n = block.shape[0]
    allowed = torch.ones(n, n, dtype=torch.bool).tril(-1)  # causal, diagonal excluded
    candidates = allowed.nonzero()
    generator = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[: int(block.sum())]]
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[chosen[:, 0], chosen[:, 1]] = True
    return mask


# ---------------------------------------------------------------- chapter 05
def hypothesis_spec():
    """Cut question -> last in layers 12-20 and video -> question in layers 5-13 (one spec)."""
    from flowkit import Cut, KnockoutSpec, parse_layers

    return KnockoutSpec((Cut("question->last", parse_layers("12-20")), Cut("video->question", parse_layers("5-13"))))


def window_sweep(session, edge_group: str, centers, size: int = 9) -> dict:
    """% change in p(true option) when ``edge_group`` is cut in a window of ``size`` layers around each centre."""
    from flowkit import KnockoutSpec, LayerWindow

    centers = list(centers)
    specs = [KnockoutSpec.single(edge_group, LayerWindow(center, size)) for center in centers]
    clean = session.clean_answer  # the run without any knockout
    true = clean.true_option
    p_base = clean.probs[true]  # p over the whole vocabulary, as the paper's metric uses
    return {
        center: 100.0 * (after.probs[true] - p_base) / p_base for center, after in zip(centers, session.answers(specs))
    }


def trough_shift(curve_a: dict, curve_b: dict) -> int:
    """How many layers later curve B's deepest window sits than curve A's (negative: earlier)."""
    return min(curve_b, key=curve_b.get) - min(curve_a, key=curve_a.get)


# ------------------------------------------------- mechanism exercises (chapters 00, 03, 04)
def knockout_attention(scores: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
    """Attention weights from raw scores (..., N, N): causal mask and cut edges at -inf, then softmax."""
    n = scores.shape[-1]
    future = ~torch.ones(n, n, dtype=torch.bool).tril()  # a query never reads later keys
    return torch.softmax(scores.float().masked_fill(future | cut, float("-inf")), dim=-1)


def logit_lens_probs(hidden: torch.Tensor, final_norm, lm_head, letter_ids) -> torch.Tensor:
    """p(each option letter) over the whole vocabulary for hidden states (layers, d): norm, head, softmax."""
    logits = lm_head(final_norm(hidden)).float()
    return torch.softmax(logits, dim=-1)[:, list(letter_ids)]


def bootstrap_interval(values, seed: int = 0, resamples: int = 2000, level: float = 0.95) -> tuple:
    """Percentile bootstrap interval of the mean: resample the values with replacement, many times."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


# ---------------------------------------------------------------- chapter 04 (pathway search)
def gate_bias(gate_values: torch.Tensor, group_masks: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """One layer's additive attention bias: each edge group's edges get log(gate value), at least log(eps)."""
    bias = torch.zeros(group_masks.shape[1:], dtype=gate_values.dtype)
    for value, mask in zip(gate_values, group_masks):
        bias = bias + torch.log(torch.clamp(value, min=eps)) * mask.to(gate_values.dtype)
    return bias


EXERCISES = (
    "frame_positions",
    "option_probabilities",
    "cross_frame_mask",
    "percent_change",
    "window_layers",
    "sweep_curve",
    "embedding_lens_scores",
    "temporal_share",
    "first_layer_above",
    "deepest_window",
    "window_from_curve",
    "pathway_cuts",
    "kept_fraction",
    "random_cut_like",
    "hypothesis_spec",
    "window_sweep",
    "trough_shift",
    "knockout_attention",
    "logit_lens_probs",
    "bootstrap_interval",
    "gate_bias",
)
