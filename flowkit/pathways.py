"""Effective pathways (finding 4): keep only the edges the flow needs, cut everything else.

The paper keeps, for LLaVA-NeXT-7B (32 layers, 1-indexed): cross-frame edges in L6-15,
video->question in L6-20, question->last in L16-25; it cuts video->last and last->last
everywhere, all video->video attention after L20 and question->question after L25.
:class:`PathwayWindows` holds such windows (0-indexed, inclusive) and
:func:`pathway_spec` turns them into a :class:`~flowkit.knockout.KnockoutSpec`.
:func:`random_block_masks` draws the control: as many edges cut, at random, per layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from flowkit.errors import KnockoutError
from flowkit.knockout import Cut, KnockoutSpec, LayerSet, block_masks, causal_mask
from flowkit.spans import Spans


@dataclass(frozen=True)
class PathwayWindows:
    """Layers (0-indexed, inclusive ranges) where each pathway is kept."""

    cross_frame: tuple[int, int]
    video_to_question: tuple[int, int]
    question_to_last: tuple[int, int]
    video_to_video_until: int  # video->video is cut from the layer after this one
    question_to_question_until: int  # question->question is cut from the layer after this one

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PathwayWindows":
        """Inverse of :meth:`to_dict`, also after a JSON round trip (ranges come back as lists)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def paper_windows(num_layers: int = 32) -> PathwayWindows:
    """The paper's LLaVA-NeXT-7B pathways, scaled to ``num_layers`` layers."""
    def at(layer_1_indexed: int) -> int:
        return max(0, min(num_layers - 1, round((layer_1_indexed - 1) * num_layers / 32)))

    return PathwayWindows(cross_frame=(at(6), at(15)), video_to_question=(at(6), at(20)),
                          question_to_last=(at(16), at(25)), video_to_video_until=at(20),
                          question_to_question_until=at(25))


def _outside(window: tuple[int, int], num_layers: int) -> LayerSet:
    lo, hi = window
    if not (0 <= lo <= hi < num_layers):
        raise KnockoutError(f"pathway window {window} must satisfy 0 <= start <= end < {num_layers}")
    return LayerSet(tuple(layer for layer in range(num_layers) if not lo <= layer <= hi))


def pathway_spec(windows: PathwayWindows, num_layers: int) -> KnockoutSpec:
    """The knockout that keeps only the effective pathways."""
    everywhere = LayerSet(tuple(range(num_layers)))
    after = lambda last_kept: LayerSet(tuple(range(last_kept + 1, num_layers)))  # noqa: E731
    cuts = [
        Cut("cross_frame", _outside(windows.cross_frame, num_layers)),
        Cut("video->question", _outside(windows.video_to_question, num_layers)),
        Cut("question->last", _outside(windows.question_to_last, num_layers)),
        Cut("video->last", everywhere),
        Cut("last->last", everywhere),
    ]
    if windows.video_to_video_until + 1 < num_layers:
        cuts.append(Cut("video->video", after(windows.video_to_video_until)))
    if windows.question_to_question_until + 1 < num_layers:
        cuts.append(Cut("question->question", after(windows.question_to_question_until)))
    return KnockoutSpec(tuple(c for c in cuts if c.layers.layers))


def random_block_masks(reference: dict[int, torch.Tensor], seq_len: int, num_layers: int,
                       seed: int) -> dict[int, torch.Tensor]:
    """Cut, in every layer, as many random causal edges as ``reference`` cuts there.

    A token's edge to itself is never cut, so no query is left without a key.
    """
    generator = torch.Generator().manual_seed(seed)
    causal = causal_mask(seq_len)
    candidates = (causal & ~torch.eye(seq_len, dtype=torch.bool)).nonzero()
    masks = {}
    for layer in range(num_layers):
        count = int(reference[layer].sum()) if layer in reference else 0
        if count == 0:
            continue
        if count > len(candidates):
            raise KnockoutError(f"layer {layer}: cannot cut {count} random edges out of {len(candidates)}")
        chosen = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
        mask = torch.zeros(seq_len, seq_len, dtype=torch.bool)
        mask[chosen[:, 0], chosen[:, 1]] = True
        masks[layer] = mask
    return masks


def pathway_masks(windows: PathwayWindows, spans: Spans, num_layers: int) -> dict[int, torch.Tensor]:
    return block_masks(pathway_spec(windows, num_layers), spans, num_layers)
