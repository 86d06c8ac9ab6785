"""The paper's four findings as functions, each returning a tidy pandas DataFrame.

============================  ==========================================================
``cross_frame_sweep``         finding 1: cut frame i <- earlier frames, window by window
``flow_sweep``                findings 2-3: video->question, question->last, ... windows
``video_token_lens``          finding 2: which words video tokens align with, per layer
``answer_emergence``          finding 3: p(true option) and p(false options) per layer
``effective_pathways``        finding 4: accuracy with only the pathways kept vs random
``accuracy``                  plain accuracy per task
============================  ==========================================================
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from flowkit.knockout import PAPER_EDGE_FAMILIES, apply_block_masks, block_masks, count_edges
from flowkit.lens import embedding_lens, logit_lens, residual_stream
from flowkit.pathways import PathwayWindows, pathway_spec, random_block_masks
from flowkit.readout import answer_distribution
from flowkit.sweep import summarize, sweep


def cross_frame_sweep(vllm, samples, centers: Iterable[int] | None = None, size: int = 9, cache=None,
                      progress: bool = True) -> pd.DataFrame:
    """Finding 1: % change in p(answer) when frame i cannot read frames j < i, per window."""
    return sweep(vllm, samples, families=["cross_frame"], centers=centers, size=size, cache=cache, progress=progress)


def flow_sweep(vllm, samples, families: Sequence[str] = PAPER_EDGE_FAMILIES, centers=None, size: int = 9,
               cache=None, progress: bool = True) -> pd.DataFrame:
    """Findings 2-3: the paper's edge families (or yours), window by window."""
    return sweep(vllm, samples, families=families, centers=centers, size=size, cache=cache, progress=progress)


def accuracy(vllm, samples, progress: bool = True) -> pd.DataFrame:
    """One row per sample: predicted and true option (aggregate with ``.groupby('task')``)."""
    rows = []
    for sample in tqdm(list(samples), desc="accuracy", disable=not progress):
        dist = vllm.answer(vllm.prepare_sample(sample))
        rows.append({"sample": sample.id, "task": sample.task, "answer": sample.answer,
                     "predicted": dist.predicted_letter, "correct": bool(dist.correct),
                     "p_answer": dist.p(sample.answer)})
    return pd.DataFrame(rows)


def answer_emergence(vllm, samples, progress: bool = True) -> pd.DataFrame:
    """Finding 3: p(true option) and p(false options) at the last position after every layer.

    The last position's hidden state after layer l goes through the final norm and
    ``lm_head`` (the logit lens); probabilities are over the whole vocabulary.
    """
    rows = []
    for sample in tqdm(list(samples), desc="answer emergence", disable=not progress):
        prepared = vllm.prepare_sample(sample)
        stream = residual_stream(vllm, prepared)
        logits = logit_lens(vllm, stream[1:, -1])  # (layers, vocab)
        probs = torch.softmax(logits, -1)[:, list(prepared.letter_ids)]
        true = prepared.spans.true_option
        for layer, p in enumerate(probs.tolist()):
            false = [x for i, x in enumerate(p) if i != true]
            rows.append({"sample": sample.id, "task": sample.task, "layer": layer, "p_true": p[true],
                         "p_false_max": max(false), "p_false_mean": float(np.mean(false)),
                         "true_is_top": int(np.argmax(p)) == true})
    return pd.DataFrame(rows)


def _word_token_ids(tokenizer, words: Sequence[str]) -> dict[int, str]:
    """Token ids that spell a whole word (with or without a leading space)."""
    ids = {}
    for word in words:
        for text in (word, " " + word):
            tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(tokens) == 1:
                ids[tokens[0]] = word
    return ids


def video_token_lens(vllm, samples, kind: str = "embedding", k: int = 10, progress: bool = True) -> pd.DataFrame:
    """Finding 2 (lens): which bench words the video tokens align with, after every layer.

    Each video token's hidden state is scored against the bench's spatial and temporal
    words (``flowkit.data.vocab``); the top ``k`` words per token are counted.
    ``kind="embedding"`` is the paper's lens (hidden @ input embeddingsᵀ, no norm);
    ``"logit"`` the usual logit lens. One row per (sample, layer) with the share of
    temporal words among the top words (``temporal_share``).
    """
    from flowkit.data.vocab import SPATIAL_WORDS, TEMPORAL_WORDS

    spatial = _word_token_ids(vllm.tokenizer, SPATIAL_WORDS)
    temporal = _word_token_ids(vllm.tokenizer, TEMPORAL_WORDS)
    vocab_ids = torch.tensor(sorted(set(spatial) | set(temporal)))
    is_temporal = torch.tensor([i in temporal for i in vocab_ids.tolist()])
    rows = []
    for sample in tqdm(list(samples), desc=f"{kind} lens", disable=not progress):
        prepared = vllm.prepare_sample(sample)
        stream = residual_stream(vllm, prepared)
        video = slice(*prepared.spans.video)
        for layer in range(stream.shape[0]):
            hidden = stream[layer, video]
            scores = embedding_lens(vllm, hidden) if kind == "embedding" else logit_lens(vllm, hidden)
            top = scores[:, vocab_ids].topk(min(k, len(vocab_ids)), dim=-1).indices
            share = float(is_temporal[top].float().mean())
            rows.append({"sample": sample.id, "task": sample.task, "layer": layer - 1, "kind": kind,
                         "temporal_share": share, "spatial_share": 1 - share})
    return pd.DataFrame(rows)  # layer -1 is the input (embeddings), layer l the output of layer l


def troughs(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (task, family): the window centre of the deepest mean % change and its value."""
    idx = summary.groupby(["task", "family"])["pct_change"].idxmin()
    return summary.loc[idx, ["task", "family", "center", "pct_change"]].reset_index(drop=True)


def windows_from_sweeps(summary: pd.DataFrame, num_layers: int, fraction: float = 0.5) -> PathwayWindows:
    """Pathway windows read off sweep curves: where the mean % change (over tasks) is at least
    ``fraction`` of its trough, as one contiguous range around the trough."""
    curves = summary.groupby(["family", "center"])["pct_change"].mean()

    def window(family: str) -> tuple[int, int]:
        curve = curves.loc[family].reindex(range(num_layers)).fillna(0.0).to_numpy()
        low = int(np.argmin(curve))
        if curve[low] >= 0:
            return (low, low)
        lo = hi = low
        while lo > 0 and curve[lo - 1] <= fraction * curve[low]:
            lo -= 1
        while hi < num_layers - 1 and curve[hi + 1] <= fraction * curve[low]:
            hi += 1
        return (max(0, lo - 4), min(num_layers - 1, hi + 4))  # the windows were 9 layers wide

    cross, vq, ql = window("cross_frame"), window("video->question"), window("question->last")
    return PathwayWindows(cross_frame=cross, video_to_question=vq, question_to_last=ql,
                          video_to_video_until=max(vq[1], cross[1]), question_to_question_until=ql[1])


@torch.inference_mode()
def effective_pathways(vllm, samples, windows: PathwayWindows, random_seeds: Sequence[int] = (0, 1, 2, 3, 4),
                       progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Finding 4: accuracy with all edges, with only the pathways, and with random masks cutting
    as many edges per layer (one row per sample and condition), plus the exact edge counts."""
    spec = pathway_spec(windows, vllm.num_layers)
    rows, counts = [], None
    for sample in tqdm(list(samples), desc="effective pathways", disable=not progress):
        prepared = vllm.prepare_sample(sample)
        n = prepared.seq_len
        masks = block_masks(spec, prepared.spans, vllm.num_layers)
        if counts is None:
            counts = count_edges(spec, prepared.spans, vllm.num_layers)
        conditions = [("full", None), ("pathways", masks)]
        conditions += [(f"random:{seed}", random_block_masks(masks, n, vllm.num_layers, seed)) for seed in random_seeds]
        for name, layer_masks in conditions:
            if layer_masks is None:
                logits = vllm.last_logits(prepared)
            else:
                with apply_block_masks(vllm.language_model, layer_masks):
                    logits = vllm.model(**prepared.inputs, logits_to_keep=1).logits[0, -1].float()
            dist = answer_distribution(logits, prepared.letter_ids, prepared.spans.true_option)
            rows.append({"sample": sample.id, "task": sample.task, "condition": name.split(":")[0],
                         "seed": int(name.split(":")[1]) if ":" in name else None, "correct": bool(dist.correct),
                         "p_answer": dist.p(sample.answer)})
    return pd.DataFrame(rows), counts


def pathway_summary(vllm, samples, windows: PathwayWindows, random_seeds: Sequence[int] = (0,),
                    progress: bool = False) -> dict:
    """Finding 4 in one dict: exact fraction of edges kept and accuracy full / pathways / random."""
    table, counts = effective_pathways(vllm, samples, windows, random_seeds=random_seeds, progress=progress)
    accuracy = table.groupby("condition")["correct"].mean()
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in windows.to_dict().items()}
    return {"windows": plain, "edges": counts, "kept_fraction": counts["kept_fraction"],
            "accuracy": {c: float(accuracy[c]) for c in ("full", "pathways", "random") if c in accuracy},
            "questions": len(set(table["sample"])), "random_seeds": list(random_seeds)}


__all__ = ["accuracy", "answer_emergence", "cross_frame_sweep", "effective_pathways", "flow_sweep", "pathway_summary",
           "summarize", "troughs", "video_token_lens", "windows_from_sweeps"]
