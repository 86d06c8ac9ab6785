"""Look inside: the residual stream at every layer, read through a logit lens or an embedding lens.

- **logit lens**: final norm + ``lm_head`` applied to a layer's hidden state (nostalgebraist).
- **embedding lens** (what *Map the Flow*'s code does for video tokens): the hidden state
  multiplied by the transposed *input* embedding matrix, no final norm.

Activations come from the prompt's :class:`~flowkit.intervention.session.Session`: :func:`activations`
gives the named cache (``resid_pre(l)``, ``resid_post(l)``: no index offsets);
:func:`residual_stream` stacks it as one tensor (index 0 the language model's input, index
``l + 1`` the output of layer ``l``, before the final norm).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flowkit.intervention.spec import KnockoutSpec
from flowkit.prompts.readout import PAPER_EMERGENCE, emergence_readout


def activations(vllm, prepared, spec: KnockoutSpec | None = None):
    """The named activations (:class:`~flowkit.intervention.session.ActivationCache`) of one prompt, clean or under ``spec``."""
    return vllm.session(prepared).run_with_cache(spec)


def residual_stream(vllm, prepared, spec: KnockoutSpec | None = None) -> torch.Tensor:
    """Hidden states ``(num_layers + 1, seq_len, d_model)`` of one prompt (float32).

    Index 0 is the language model's input, index ``l + 1`` the output of layer ``l``; the
    same numbers by name: ``activations(vllm, prepared).resid_post(l)``.
    """
    return activations(vllm, prepared, spec).stream()


def _lm_head_weight(vllm) -> torch.Tensor:
    head = vllm.model.get_output_embeddings()
    return _dense_weight(head)


def _dense_weight(module) -> torch.Tensor:
    weight = module.weight
    if hasattr(weight, "quant_state") and weight.quant_state is not None:  # a 4-bit layer
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, weight.quant_state).float()
    return weight.detach().float()


def final_norm(vllm):
    """The language model's final norm as a function of float hidden states (float32 out)."""
    norm = vllm.language_model.norm
    dtype = next(norm.parameters()).dtype
    return lambda hidden: norm(hidden.to(dtype)).float()


@torch.inference_mode()
def lm_head(vllm):
    """The language model's output head (``lm_head``) as a function of float hidden states: logits
    ``(..., vocab)`` in float32 (4-bit weights dequantized once)."""
    weight = _lm_head_weight(vllm)
    return lambda hidden: hidden.float() @ weight.T


def logit_lens(vllm, hidden: torch.Tensor) -> torch.Tensor:
    """Logits (``..., vocab``) of hidden states through the final norm and ``lm_head``."""
    return final_norm(vllm)(hidden) @ _lm_head_weight(vllm).T


@torch.inference_mode()
def emergence_probs(vllm, hidden: torch.Tensor, letter_ids, readout=PAPER_EMERGENCE) -> torch.Tensor:
    """p(each option letter) ``(num_layers, options)`` from the last position's stream leaving every
    layer (``hidden``: ``(num_layers, d_model)``), through the named emergence readout
    (:data:`flowkit.prompts.readout.EMERGENCE_READOUTS`; default the paper's, no final norm before
    the last layer), or a readout function of the same signature (e.g.
    :func:`flowkit.analysis.tuned_lens.tuned_lens_readout`)."""
    fn = readout if callable(readout) else emergence_readout(readout)
    return fn(hidden.float(), final_norm(vllm), _lm_head_weight(vllm), letter_ids)


@torch.inference_mode()
def embedding_lens(vllm, hidden: torch.Tensor) -> torch.Tensor:
    """Scores (``..., vocab``) of hidden states against the input embedding matrix (no norm)."""
    embeddings = vllm.language_model.get_input_embeddings().weight.detach().float()
    return hidden.float() @ embeddings.T


def top_tokens(vllm, scores: torch.Tensor, k: int = 5) -> list[list[str]]:
    """The ``k`` best-scoring tokens (decoded, stripped) for each row of ``scores``."""
    tokenizer = vllm.tokenizer
    rows = scores.reshape(-1, scores.shape[-1])
    ids = rows.topk(k, dim=-1).indices.tolist()
    return [[tokenizer.decode([i]).strip() for i in row] for row in ids]


def lens_at(
    vllm,
    prepared,
    layer: int,
    positions: Sequence[int],
    kind: str = "logit",
    k: int = 5,
    spec: KnockoutSpec | None = None,
) -> list[list[str]]:
    """Top-k decoded tokens at ``positions`` after layer ``layer`` (``kind``: 'logit' or 'embedding')."""
    if not 0 <= layer < vllm.num_layers:
        raise ValueError(f"layer must be in 0..{vllm.num_layers - 1}")
    hidden = activations(vllm, prepared, spec).resid_post(layer, list(positions))
    scores = logit_lens(vllm, hidden) if kind == "logit" else embedding_lens(vllm, hidden)
    return top_tokens(vllm, scores, k)


# ----------------------------------------------------------------- which layer a lens reads

#: How a lens table numbers its layers: ``"paper"`` (the paper's lens script: its "layer i" is the
#: *input* of decoder layer i, i.e. flowkit's ``resid_post(i - 1)`` (i = 0: the embeddings), and its
#: last entry, i = L - 1, the final norm's output; flowkit's ``resid_post(L - 2)`` is never read) or
#: ``"resid_post"`` (flowkit's: layer l = the output of layer l, before the final norm; -1 = the input).
LENS_LAYERINGS = ("paper", "resid_post")


def paper_lens_layer(layer: int, num_layers: int) -> tuple[int, bool]:
    """The one mapping from the paper's lens "layer i" to flowkit's stream: ``(l, normed)`` where
    ``l`` is the ``resid_post`` index read (-1: the language model's input, ``resid_pre(0)``) and
    ``normed`` whether the final norm is applied first.

    Paper layer i < L - 1 reads ``resid_post(i - 1)`` without the norm; paper layer L - 1 reads
    ``resid_post(L - 1)`` through the final norm.
    """
    if not 0 <= layer < num_layers:
        raise ValueError(f"the paper's lens layers are 0..{num_layers - 1}, got {layer}")
    return (num_layers - 1, True) if layer == num_layers - 1 else (layer - 1, False)


def _check_layering(layers: str) -> str:
    if layers not in LENS_LAYERINGS:
        raise ValueError(
            f"unknown lens layering {layers!r}: choose 'paper' (the paper's layer i = the input of layer i; "
            "the final norm at the last) or 'resid_post' (layer l = the output of layer l)."
        )
    return layers


def lens_layers(num_layers: int, layers: str = "paper") -> list[tuple[int, int, bool]]:
    """``(table layer, resid_post index, final norm)`` for every layer a lens table has."""
    if _check_layering(layers) == "paper":
        return [(i, *paper_lens_layer(i, num_layers)) for i in range(num_layers)]
    return [(layer, layer, False) for layer in range(-1, num_layers)]


def layer_regions(layers, num_layers: int):
    """Each lens-table layer's region in the paper's numbering (a pandas Categorical in layer order):
    the input (layer 0, the embeddings), early (1 to L/3), middle (to 2L/3), late (to L - 2) and the
    last layer (L - 1, read after the final norm)."""
    import pandas as pd

    if num_layers < 7:  # fewer layers leave two regions with no layer between their edges
        raise ValueError(f"layer regions need at least 7 layers, got {num_layers}")
    L = num_layers
    cuts = [-1, 0, L // 3, 2 * L // 3, L - 2, L - 1]
    labels = [
        "input (embeddings, layer 0)",
        f"early: layers 1-{cuts[2]}",
        f"middle: layers {cuts[2] + 1}-{cuts[3]}",
        f"late: layers {cuts[3] + 1}-{cuts[4]}",
        f"last ({L - 1}, after the final norm)",
    ]
    return pd.cut(pd.Series(layers), cuts, labels=labels).values


def temporal_share_by_region(shares, num_layers: int):
    """The lens table's temporal share by layer region (:func:`layer_regions`) and lens kind:
    ``mean`` over questions (each question's mean over the region's layers) and the ``lowest`` and
    ``highest`` question, with the number of ``questions``."""
    per_question = (
        shares.assign(region=layer_regions(shares["layer"], num_layers))
        .groupby(["region", "kind", "sample"], observed=True)["temporal_share"]
        .mean()
    )
    out = per_question.groupby(["region", "kind"], observed=True).agg(["mean", "min", "max", "count"])
    return out.rename(columns={"min": "lowest", "max": "highest", "count": "questions"})


def lens_hidden(vllm, cache, resid_post: int, normed: bool, positions) -> torch.Tensor:
    """The hidden states a lens reads: ``resid_post(resid_post)`` (-1: ``resid_pre(0)``), through the
    final norm when ``normed``."""
    hidden = cache.resid_pre(0, positions) if resid_post < 0 else cache.resid_post(resid_post, positions)
    return final_norm(vllm)(hidden) if normed else hidden


# ----------------------------------------------------------------- tidy lens tables

LENS_KINDS = ("embedding", "logit")


def _check_kind(kind: str) -> str:
    if kind not in LENS_KINDS:
        raise ValueError(
            f"unknown lens {kind!r}: choose 'embedding' (hidden · Eᵀ, the paper's) or 'logit' (final norm + lm_head)."
        )
    return kind


def frame_top_words(
    vllm,
    prepared,
    kind: str = "embedding",
    k: int = 5,
    spec: KnockoutSpec | None = None,
    cache=None,
    bag: str | None = None,
):
    """The ``k`` top decoded tokens of every video token, after every layer, as a tidy DataFrame.

    Columns: ``layer`` (0-indexed layer whose output is read, as in :func:`lens_at`),
    ``frame`` (frame block index), ``position`` (in the sequence), ``rank`` (0 = best),
    ``token`` (decoded, stripped) and ``score`` (the lens's raw score).

    Args:
        kind: ``"embedding"`` (hidden · Eᵀ, no norm: the paper's lens on video tokens) or
            ``"logit"`` (final norm + ``lm_head``).
        spec: read the residual stream under this knockout (default: the clean run).
        cache: the :func:`activations` already computed for this prompt (and spec), to
            read several lenses off one forward pass.
        bag: rank only the words of this closed list (a name of :data:`flowkit.data.vocab.WORD_BAGS`,
            e.g. ``"kit"``: the question set's spatial and temporal words; :func:`word_bag`) instead of
            the whole vocabulary, where a video token's nearest tokens are rare word pieces.
    """
    import pandas as pd

    _check_kind(kind)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if cache is None:
        cache = activations(vllm, prepared, spec)
    vocab_ids = word_bag(vllm, bag)[0] if bag is not None else None
    frame_of = {p: i for i, (s, e) in enumerate(prepared.spans.frame_spans) for p in range(s, e)}
    positions = sorted(frame_of)
    lens = embedding_lens if kind == "embedding" else logit_lens
    tokenizer = vllm.tokenizer
    decoded: dict[int, str] = {}
    rows = []
    for layer in range(cache.num_layers):
        scores_all = lens(vllm, cache.resid_post(layer, positions))
        if vocab_ids is None:
            top = scores_all.topk(k, dim=-1)
            values, indices = top.values.tolist(), top.indices.tolist()
        else:
            top = scores_all[:, vocab_ids].topk(min(k, len(vocab_ids)), dim=-1)
            values, indices = top.values.tolist(), vocab_ids[top.indices].tolist()
        for position, scores, ids in zip(positions, values, indices):
            for rank, (score, token_id) in enumerate(zip(scores, ids)):
                if token_id not in decoded:
                    decoded[token_id] = tokenizer.decode([token_id]).strip()
                rows.append((layer, frame_of[position], position, rank, decoded[token_id], score))
    return pd.DataFrame(rows, columns=["layer", "frame", "position", "rank", "token", "score"])


def frame_word_summary(top_words, top: int = 5):
    """Per layer and frame, the words that appear most often among its tokens' top lens words.

    Args:
        top_words: :func:`frame_top_words` output.
        top: how many words to keep per (layer, frame).

    Returns a DataFrame with ``layer``, ``frame``, ``word``, ``count`` (how many of the
    frame's (token, rank) entries are this word), ``tokens`` (how many of the frame's
    tokens have it in their top k) and ``share`` (``tokens`` / tokens in the frame).
    Words are ranked by ``tokens``, then by their best (mean) rank, then alphabetically.
    """
    tokens_per_frame = top_words.groupby(["layer", "frame"])["position"].nunique().rename("frame_tokens")
    grouped = (
        top_words.groupby(["layer", "frame", "token"], as_index=False)
        .agg(count=("position", "size"), tokens=("position", "nunique"), mean_rank=("rank", "mean"))
        .join(tokens_per_frame, on=["layer", "frame"])
    )
    grouped["share"] = grouped["tokens"] / grouped["frame_tokens"]
    ranked = grouped.sort_values(
        ["layer", "frame", "tokens", "mean_rank", "token"], ascending=[True, True, False, True, True]
    )
    summary = ranked.groupby(["layer", "frame"], sort=False).head(top).rename(columns={"token": "word"})
    return summary[["layer", "frame", "word", "count", "tokens", "share"]].reset_index(drop=True)


def word_kind_of(token: str, spatial: Sequence[str] | None = None, temporal: Sequence[str] | None = None) -> str:
    """``"spatial"``, ``"temporal"`` or ``"other"`` for a decoded token (case-insensitive, stripped).

    The word lists default to :data:`flowkit.data.SPATIAL_WORDS` and :data:`flowkit.data.TEMPORAL_WORDS`.
    """
    spatial, temporal = _word_lists(spatial, temporal)
    word = token.strip().lower()
    if word in spatial:
        return "spatial"
    if word in temporal:
        return "temporal"
    return "other"


def _word_lists(spatial, temporal) -> tuple[frozenset, frozenset]:
    if spatial is None or temporal is None:
        from flowkit.data.vocab import SPATIAL_WORDS, TEMPORAL_WORDS

        spatial = SPATIAL_WORDS if spatial is None else spatial
        temporal = TEMPORAL_WORDS if temporal is None else temporal
    return frozenset(w.lower() for w in spatial), frozenset(w.lower() for w in temporal)


def word_shares(top_words, spatial: Sequence[str] | None = None, temporal: Sequence[str] | None = None):
    """Per layer, the share of spatial and of temporal words among all top lens words of video tokens.

    Args:
        top_words: :func:`frame_top_words` output.
        spatial, temporal: the word lists (default: the synthetic question set's, :mod:`flowkit.data.vocab`).

    Returns a DataFrame with ``layer``, ``kind`` (``"spatial"`` / ``"temporal"``), ``share``
    (of all (token, rank) entries in that layer) and ``count`` — the input of
    :func:`flowkit.views.plots.lens_shares`.
    """
    import pandas as pd

    spatial_set, temporal_set = _word_lists(spatial, temporal)
    words = top_words["token"].str.strip().str.lower()
    rows = []
    for layer, index in top_words.groupby("layer").groups.items():
        layer_words = words.loc[index]
        for kind, vocab in (("spatial", spatial_set), ("temporal", temporal_set)):
            count = int(layer_words.isin(vocab).sum())
            rows.append((int(layer), kind, count / len(layer_words), count))
    return pd.DataFrame(rows, columns=["layer", "kind", "share", "count"])


def _word_token_ids(tokenizer, words: Sequence[str], match: str = "whole_word") -> dict[int, str]:
    """Token ids of ``words`` (with or without a leading space): ``match="whole_word"`` keeps a word
    only where it is one token; ``"first_token"`` (the paper's) takes the word's first token."""
    ids = {}
    for word in words:
        for text in (word, " " + word):
            tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(tokens) == 1 or (match == "first_token" and tokens):
                ids[tokens[0]] = word
    return ids


def word_bag(vllm, bag: str = "kit") -> tuple[torch.Tensor, torch.Tensor]:
    """The bag of word tokens a restricted lens ranks: the token ids of a named bag's spatial and
    temporal words (:data:`flowkit.data.vocab.WORD_BAGS`: ``"kit"``, the question set's balanced
    lists, or ``"paper_action_sequence"``, the paper's), matched as that bag says
    (:data:`flowkit.data.vocab.WORD_BAG_MATCH`), and which of them are temporal."""
    from flowkit.data.vocab import WORD_BAG_MATCH, word_bag_words

    spatial_words, temporal_words = word_bag_words(bag)
    match = WORD_BAG_MATCH[bag]
    spatial = _word_token_ids(vllm.tokenizer, spatial_words, match)
    temporal = _word_token_ids(vllm.tokenizer, temporal_words, match)
    vocab_ids = torch.tensor(sorted(set(spatial) | set(temporal)))
    return vocab_ids, torch.tensor([i in temporal for i in vocab_ids.tolist()])


def bag_temporal_share(vllm, hidden: torch.Tensor, bag, kind: str = "embedding", k: int = 10) -> float:
    """The share of temporal words among each hidden state's ``k`` best words *within* ``bag``
    (:func:`word_bag`), pooled over the rows of ``hidden``: the lens asked only "spatial or
    temporal?". :func:`word_shares` counts the same words among the top words of the whole
    vocabulary instead."""
    vocab_ids, is_temporal = bag
    scores = embedding_lens(vllm, hidden) if _check_kind(kind) == "embedding" else logit_lens(vllm, hidden)
    top = scores[:, vocab_ids].topk(min(k, len(vocab_ids)), dim=-1).indices
    return float(is_temporal[top].float().mean())


def answer_by_layer(vllm, prepared, spec: KnockoutSpec | None = None, cache=None, readout: str = PAPER_EMERGENCE):
    """p(each option letter) at the last position after every layer (finding 3's answer emergence).

    ``readout`` names the rule (:data:`flowkit.prompts.readout.EMERGENCE_READOUTS`): ``"paper"``
    (default; ``hidden · lm_headᵀ`` with no final norm except at the last layer, softmax over the
    whole vocabulary, as the paper's script runs), ``"logit_lens"`` (final norm at every layer),
    ``"options"`` (the logit lens renormalised over the option letters).

    Returns a DataFrame with ``layer`` (0-indexed: the output of layer ``layer``, ``resid_post``;
    the paper's ``hidden_states`` index is ``layer + 1``), ``letter``, ``prob`` and ``true``
    (whether the letter is the correct option; needs a prompt prepared with its answer)
    — the input of :func:`flowkit.views.plots.prob_by_layer`.
    """
    import pandas as pd

    spans = prepared.spans
    if spans.true_option is None:
        raise ValueError("answer_by_layer needs to know the correct option: prepare the prompt with answer=...")
    if cache is None:
        cache = activations(vllm, prepared, spec)
    probs = emergence_probs(vllm, cache.resid_posts(spans.last), list(prepared.letter_ids), readout)
    rows = [
        (layer, letter, float(probs[layer, i]), i == spans.true_option)
        for layer in range(probs.shape[0])
        for i, letter in enumerate(spans.letters)
    ]
    return pd.DataFrame(rows, columns=["layer", "letter", "prob", "true"])
