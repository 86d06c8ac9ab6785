"""Mask geometry: boolean ``(N, N)`` block masks (True = the query (row) <- key (column) edge is cut).

Masks are broadcast over batch and heads, never materialised per head. A spec that would
leave some query with no key to attend to (a softmax over nothing gives NaN) is refused.
"""

from __future__ import annotations

import torch

from flowkit.intervention.edge_groups import normalize_edges
from flowkit.errors import KnockoutError
from flowkit.intervention.spec import KnockoutSpec
from flowkit.prompts.spans import Spans


def edge_block_mask(edges: str, spans: Spans) -> torch.Tensor:
    """Boolean ``(N, N)`` mask, True where the query (row) <- key (column) edge is cut.

    Only causal edges (key <= query) are ever marked: a token cannot attend forward anyway.
    """
    edges = normalize_edges(edges)
    n = spans.seq_len
    block = torch.zeros(n, n, dtype=torch.bool)
    if edges == "cross_frame":  # frame tokens only: separators between frames are neither side of a cut
        for i, (qs, qe) in enumerate(spans.frame_spans):
            for ks, ke in spans.frame_spans[:i]:
                block[qs:qe, ks:ke] = True
        return block
    if edges == "within_frame":  # video->video minus cross_frame
        return edge_block_mask("video->video", spans) & ~edge_block_mask("cross_frame", spans)
    source, target = edges.split("->")
    keys = torch.tensor(spans.positions(source), dtype=torch.long)
    queries = torch.tensor(spans.positions(target), dtype=torch.long)
    if len(keys) and len(queries):
        block[queries.unsqueeze(1), keys.unsqueeze(0)] = True
    return block & causal_mask(n)


def causal_mask(n: int) -> torch.Tensor:
    """Boolean lower-triangular ``(n, n)`` mask, True where the query may attend the key."""
    return torch.ones(n, n, dtype=torch.bool).tril()


def block_masks(spec: KnockoutSpec, spans: Spans, num_layers: int) -> dict[int, torch.Tensor]:
    """Per-layer boolean block masks ``{layer: (N, N) bool}`` for a spec on one prompt.

    Layers with no cut are absent. Layers cut by the same set of edge groups share
    one tensor. Raises :class:`KnockoutError` if any query would be left with no key.
    """
    per_cut = [(c, c.layers.resolve(num_layers), edge_block_mask(c.edges, spans)) for c in spec.cuts]
    combined: dict[tuple[int, ...], torch.Tensor] = {}
    masks: dict[int, torch.Tensor] = {}
    for layer in range(num_layers):
        active = tuple(i for i, (_, layers, _) in enumerate(per_cut) if layer in layers)
        if not active:
            continue
        if active not in combined:
            mask = per_cut[active[0]][2].clone()
            for i in active[1:]:
                mask |= per_cut[i][2]
            refuse_empty_rows(mask, [per_cut[i][0].edges for i in active], layer)
            combined[active] = mask
        masks[layer] = combined[active]
    return masks


def refuse_empty_rows(block: torch.Tensor, edges: list[str], layer: int) -> None:
    allowed = causal_mask(block.shape[0]) & ~block
    empty = (~allowed.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise KnockoutError(
            f"cutting {' + '.join(edges)} in layer {layer} leaves query position {int(empty[0])} "
            f"(and {len(empty) - 1} more) with no key to attend to, which has no defined softmax. "
            "Keep at least one edge into every position, e.g. do not cut a token's only key."
        )


def count_edges(spec: KnockoutSpec, spans: Spans, num_layers: int) -> dict:
    """Exact edge counts: causal (query, key) pairs summed over layers, and how many are cut."""
    n = spans.seq_len
    per_layer = n * (n + 1) // 2
    masks = block_masks(spec, spans, num_layers)
    cut = sum(int(m.sum()) for m in masks.values())
    total = per_layer * num_layers
    return {"total": total, "cut": cut, "kept": total - cut, "kept_fraction": (total - cut) / total}
