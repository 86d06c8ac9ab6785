"""Effective pathways (finding 4): keep only the edges the flow needs, cut everything else.

The paper keeps, for LLaVA-NeXT-7B (32 layers, 1-indexed): cross-frame edges in L6-15,
video->question in L6-20, question->last in L16-25; it cuts video->last and last->last
everywhere, all video->video attention after L20 and question->question after L25.
:class:`PathwayWindows` holds such windows (0-indexed, inclusive) and
:func:`pathway_spec` turns them into a :class:`~flowkit.intervention.spec.KnockoutSpec`.

**Presets.** :data:`PAPER_PATHWAY_PRESETS` holds the windows of each of the paper's four
models as its official code (``byminji/map-the-flow``, ``analysis/effective_pathway_analysis*.py``)
sets them, with the share of edges its random control cuts; select one by name with
:func:`paper_pathway_preset` or :func:`paper_windows`. For a depth no preset has,
:func:`paper_windows` scales a preset's windows by the rule of :func:`scale_windows`.

**Random controls.** Two, both seeded (same seed, same masks):

- ``"paper"`` (:func:`paper_random_block_masks`, the default wherever a number is compared
  with the paper): in *every* layer cut ``int(f · N(N+1)/2)`` edges drawn uniformly among the
  causal pairs whose query and key are both at or after the first video token, diagonal
  included (so BOS and the system prompt are never cut). ``f`` is the share of edges the
  pathways suppress: the paper's value for its models (0.58 / 0.63 / 0.60 / 0.42), and on
  any other model the mean over questions of that model's own pathway mask's suppressed share.
- ``"layer_matched"`` (:func:`layer_matched_random_block_masks`, flowkit's own): in each layer
  cut exactly as many edges as the pathway mask cuts there, drawn among all causal pairs
  except a token's edge to itself. It asks "is it *where* the pathway mask cuts that
  matters, given the same cuts per layer?"; the paper's asks "does cutting this share of
  the video-and-text edges at random hurt as the pathways do not?".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from collections.abc import Sequence

import torch

from flowkit.errors import KnockoutError
from flowkit.intervention.spec import Cut, KnockoutSpec, LayerSet
from flowkit.intervention.masks import block_masks, causal_mask, count_edges
from flowkit.prompts.spans import Spans


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
    def from_dict(cls, data: dict) -> PathwayWindows:
        """Inverse of :meth:`to_dict`, also after a JSON round trip (ranges come back as lists)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# ------------------------------------------------------------------------------ presets


@dataclass(frozen=True)
class PaperPathwayPreset:
    """One of the paper's models: its effective-pathway windows and its random control.

    Attributes:
        name: the preset's name (``"llava-next-7b-video-ft"``, ...).
        model: the checkpoint the paper used.
        num_layers: the language model's depth.
        windows: the kept windows, 0-indexed, as the official code's ``range(...)`` lists.
        suppressed_fraction: the share ``f`` of edges the paper's random control cuts per
            layer (its scripts' ``--random_block_ratio``; the paper: "58 % suppressed" etc.).
        paper_kept_percent: edges kept as the paper reports it.
        paper_accuracy: TVBench accuracy (%) full / pathways only / random, as reported.
    """

    name: str
    model: str
    num_layers: int
    windows: PathwayWindows
    suppressed_fraction: float
    paper_kept_percent: float
    paper_accuracy: tuple[float, float, float]


def _preset(name, model, num_layers, cross, vq, ql, f, kept, acc) -> PaperPathwayPreset:
    # The official code cuts video->video after the video->question window and
    # question->question after the question->last window (``RANGE[-1] + 1`` onwards).
    windows = PathwayWindows(
        cross_frame=cross,
        video_to_question=vq,
        question_to_last=ql,
        video_to_video_until=vq[1],
        question_to_question_until=ql[1],
    )
    return PaperPathwayPreset(name, model, num_layers, windows, f, kept, acc)


#: The paper's four models, read from ``analysis/effective_pathway_analysis.py`` (``--target
#: effective-pathway-7b / -13b / -internvl``), ``analysis/effective_pathway_analysis_videollama3.py``
#: and the ``--random_block_ratio`` of ``scripts/analysis/effective_pathway_analysis_*.sh``.
PAPER_PATHWAY_PRESETS: dict[str, PaperPathwayPreset] = {
    p.name: p
    for p in (
        _preset(
            "llava-next-7b-video-ft",
            "LLaVA-NeXT-7B-Video-FT",
            32,
            cross=(5, 14),
            vq=(5, 19),
            ql=(15, 24),
            f=0.58,
            kept=42.0,
            acc=(51.5, 51.2, 40.1),
        ),
        _preset(
            "llava-next-13b-video-ft",
            "LLaVA-NeXT-13B-Video-FT",
            40,
            cross=(5, 14),
            vq=(5, 19),
            ql=(15, 29),
            f=0.63,
            kept=37.0,
            acc=(55.1, 54.6, 41.5),
        ),
        _preset(
            "mini-internvl-4b-video-ft",
            "Mini-InternVL-4B-Video-FT",
            32,
            cross=(5, 14),
            vq=(5, 19),
            ql=(10, 29),
            f=0.60,
            kept=40.0,
            acc=(56.0, 56.0, 41.0),
        ),
        _preset(
            "videollama3-7b",
            "VideoLLaMA3-7B",
            28,
            cross=(0, 14),
            vq=(5, 19),
            ql=(20, 27),
            f=0.42,
            kept=58.0,
            acc=(55.2, 57.2, 22.2),
        ),
    )
}

#: The preset :func:`paper_windows` scales when no model is named.
DEFAULT_PRESET = "llava-next-7b-video-ft"


def paper_pathway_preset(name: str) -> PaperPathwayPreset:
    """The preset of one of the paper's models, by name (case and ``_``/``-`` insensitive)."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in PAPER_PATHWAY_PRESETS:
        raise KnockoutError(
            f"no pathway preset named {name!r}. The paper's models: {', '.join(PAPER_PATHWAY_PRESETS)}."
        )
    return PAPER_PATHWAY_PRESETS[key]


def _scaled_boundary(boundary: int, from_layers: int, to_layers: int) -> int:
    return math.floor(boundary * to_layers / from_layers + 0.5)


def scale_windows(windows: PathwayWindows, from_layers: int, to_layers: int) -> PathwayWindows:
    """Windows for ``from_layers`` layers carried over to ``to_layers`` layers.

    The rule: every window is a half-open layer range ``[start, end + 1)``; each boundary
    ``b`` becomes ``floor(b * to_layers / from_layers + 1/2)`` (the same share of the depth,
    rounded half up), and a window keeps at least one layer. The ``*_until`` layers are
    window ends and scale the same way. At ``to_layers == from_layers`` nothing changes.
    """
    if from_layers < 1 or to_layers < 1:
        raise KnockoutError(f"cannot scale windows from {from_layers} to {to_layers} layers")

    def window(w: tuple[int, int]) -> tuple[int, int]:
        start = min(to_layers - 1, _scaled_boundary(w[0], from_layers, to_layers))
        end = min(to_layers - 1, max(start, _scaled_boundary(w[1] + 1, from_layers, to_layers) - 1))
        return (start, end)

    def until(last_kept: int) -> int:
        return min(to_layers - 1, max(0, _scaled_boundary(last_kept + 1, from_layers, to_layers) - 1))

    return PathwayWindows(
        cross_frame=window(windows.cross_frame),
        video_to_question=window(windows.video_to_question),
        question_to_last=window(windows.question_to_last),
        video_to_video_until=until(windows.video_to_video_until),
        question_to_question_until=until(windows.question_to_question_until),
    )


def paper_windows(num_layers: int = 32, model: str = DEFAULT_PRESET) -> PathwayWindows:
    """The paper's pathway windows for ``model`` (a preset name), at ``num_layers`` layers.

    At the preset's own depth these are exactly the paper's windows; at any other depth
    they are scaled by :func:`scale_windows`. ``paper_windows(40)`` is the 7B windows scaled
    to 40 layers, *not* the paper's 13B windows: ask for those with
    ``paper_windows(40, "llava-next-13b-video-ft")``.
    """
    preset = paper_pathway_preset(model)
    if num_layers == preset.num_layers:
        return preset.windows
    return scale_windows(preset.windows, preset.num_layers, num_layers)


# ------------------------------------------------------------------------------- masks


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


def pathway_masks(windows: PathwayWindows, spans: Spans, num_layers: int) -> dict[int, torch.Tensor]:
    """Per-layer block masks of :func:`pathway_spec` on one prompt."""
    return block_masks(pathway_spec(windows, num_layers), spans, num_layers)


def pathway_suppressed_fraction(windows: PathwayWindows, spans: Spans | Sequence[Spans], num_layers: int) -> float:
    """Share of causal edges (summed over layers) the pathway mask cuts; the mean over prompts
    when given several. This is ``f`` of the paper's random control on a model it did not study."""
    many = [spans] if isinstance(spans, Spans) else list(spans)
    if not many:
        raise KnockoutError("the suppressed share of the pathways needs at least one prompt's spans")
    spec = pathway_spec(windows, num_layers)
    return sum(1.0 - count_edges(spec, s, num_layers)["kept_fraction"] for s in many) / len(many)


#: the layouts :func:`kept_share_by_layout` walks through: LLaVA-NeXT-Video's reachable ones
#: (8x8 patches, integer pooling: 4, 9, 16, 36, 64 tokens per frame), one token, and the paper's 144
LAYOUT_TOKENS = (1, 4, 9, 16, 36, 64, 144)


def kept_share_by_layout(
    spans: Spans,
    num_layers: int,
    tokens_per_frame: Sequence[int] = LAYOUT_TOKENS,
    windows: PathwayWindows | None = None,
):
    """How much of a prompt a pathway mask keeps, had its frames held other numbers of tokens.

    The same prompt (``spans``: its template, question and options; frames back to back, as
    LLaVA-NeXT-Video lays them out) with each frame re-laid to ``t`` tokens
    (:func:`flowkit.prompts.hypothetical.relayout`), and the share of causal edges (all layers)
    that ``windows`` (default: the paper's 7B windows scaled to ``num_layers``) keep on it. The
    share is set by the share of video tokens: the mask cuts mostly video -> video edges, whose
    number grows with the square of the video's length. A DataFrame: ``tokens_per_frame``,
    ``prompt_len``, ``video_share`` (video tokens / prompt), ``kept_share``."""
    import pandas as pd

    from flowkit.prompts.hypothetical import relayout

    windows = paper_windows(num_layers) if windows is None else windows
    rows = []
    for t in tokens_per_frame:
        laid = relayout(spans, int(t))
        rows.append(
            {
                "tokens_per_frame": int(t),
                "prompt_len": laid.seq_len,
                "video_share": laid.num_frames * int(t) / laid.seq_len,
                "kept_share": 1.0 - pathway_suppressed_fraction(windows, laid, num_layers),
            }
        )
    return pd.DataFrame(rows)


def layouts_reaching(layouts, kept_share: float) -> tuple[int | None, int | None]:
    """Between which of a :func:`kept_share_by_layout` table's layouts the share kept falls to
    ``kept_share`` (e.g. the paper prompt's): ``(last layout above it, first layout at or below it)``
    in tokens per frame; ``None`` on a side where no layout of the table lies."""
    ordered = layouts.sort_values("tokens_per_frame")
    below = ordered[ordered["kept_share"] <= kept_share + 1e-12]
    above = ordered[ordered["kept_share"] > kept_share + 1e-12]
    first_below = int(below["tokens_per_frame"].iloc[0]) if len(below) else None
    before = above[above["tokens_per_frame"] < first_below] if first_below is not None else above
    last_above = int(before["tokens_per_frame"].iloc[-1]) if len(before) else None
    return last_above, first_below


def paper_prompt_kept_share(num_layers: int = 32) -> float:
    """The share of edges the paper's 7B pathway mask keeps on the paper's own prompt (N = 1,260,
    8 x 144 video tokens; :func:`flowkit.prompts.hypothetical.paper_prompt_spans`) at its 32 layers:
    0.4225, the paper's "58 % suppressed"."""
    from flowkit.prompts.hypothetical import paper_prompt_spans

    return 1.0 - pathway_suppressed_fraction(paper_windows(num_layers), paper_prompt_spans(), num_layers)


# ------------------------------------------------------------------------ random controls

#: The paper's random control (the default wherever a number is compared with the paper).
PAPER_RANDOM_CONTROL = "paper"
#: flowkit's control: as many cuts as the pathway mask in each layer, anywhere causal.
LAYER_MATCHED_RANDOM_CONTROL = "layer_matched"
RANDOM_CONTROLS = (PAPER_RANDOM_CONTROL, LAYER_MATCHED_RANDOM_CONTROL)


def paper_random_edge_count(seq_len: int, suppressed_fraction: float) -> int:
    """Edges the paper's random control cuts in every layer: ``int(f · N(N+1)/2)``."""
    if not 0 <= suppressed_fraction < 1:
        raise KnockoutError(f"the suppressed share f must lie in [0, 1), got {suppressed_fraction}")
    return int(suppressed_fraction * (seq_len * (seq_len + 1) // 2))


def paper_random_pool(seq_len: int, pool_start: int) -> torch.Tensor:
    """The pairs the paper's random control draws from, as flat indices ``query * N + key``:
    causal pairs (diagonal included) whose query and key are both ``>= pool_start``."""
    if not 0 <= pool_start < seq_len:
        raise KnockoutError(f"the random pool must start inside the sequence of {seq_len}, got {pool_start}")
    rows, cols = torch.tril_indices(seq_len - pool_start, seq_len - pool_start)
    return (rows + pool_start) * seq_len + (cols + pool_start)


#: What the paper's random control does when its count exceeds its pool (a short prompt):
#: ``"refuse"`` (flowkit's default: a ``KnockoutError`` gives the count and the pool) or
#: ``"cut_pool"`` (the paper's code: ``randperm(pool)[:count]`` silently cuts the whole pool).
RANDOM_OVERFLOW_RULES = ("refuse", "cut_pool")


def paper_random_block_masks(
    seq_len: int,
    pool_start: int,
    num_layers: int,
    suppressed_fraction: float,
    seed: int,
    on_overflow: str = "refuse",
) -> dict[int, torch.Tensor]:
    """The paper's random control: in every layer, ``int(f · N(N+1)/2)`` random edges cut.

    Edges are drawn without replacement, independently in each layer, among the causal
    pairs (diagonal included) whose query and key both sit at or after ``pool_start`` (the
    first video token: nothing before the video, BOS and system prompt included, is ever
    cut, so every query keeps a key). One ``torch.Generator`` seeded with ``seed`` draws the
    layers in order: the same seed gives the same masks.

    When the count exceeds the pool (a prompt short beside its video), ``on_overflow="refuse"``
    (default) raises; ``"cut_pool"`` reproduces the paper's code, which then cuts the whole pool
    in every layer (:data:`RANDOM_OVERFLOW_RULES`).
    """
    if on_overflow not in RANDOM_OVERFLOW_RULES:
        raise KnockoutError(f"on_overflow must be one of {', '.join(RANDOM_OVERFLOW_RULES)}, got {on_overflow!r}")
    if pool_start < 1:
        raise KnockoutError(
            "the paper's random control keeps every edge into the tokens before the first video token, so a "
            "query never loses all its keys; this prompt has none (the video starts at position 0)."
        )
    count = paper_random_edge_count(seq_len, suppressed_fraction)
    pool = paper_random_pool(seq_len, pool_start)
    if count > len(pool):
        if on_overflow == "refuse":
            raise KnockoutError(
                f"the paper's random control would cut {count} edges per layer (f={suppressed_fraction:g} of "
                f"{seq_len * (seq_len + 1) // 2}), but only {len(pool)} causal pairs lie at or after the first "
                f"video token (position {pool_start}); this prompt is too short for that share "
                "(on_overflow='cut_pool' cuts the whole pool, as the paper's code does)."
            )
        count = len(pool)
    generator = torch.Generator().manual_seed(int(seed))
    masks = {}
    if count == 0:
        return masks
    for layer in range(num_layers):
        chosen = pool[torch.randperm(len(pool), generator=generator)[:count]]
        mask = torch.zeros(seq_len * seq_len, dtype=torch.bool)
        mask[chosen] = True
        masks[layer] = mask.view(seq_len, seq_len)
    return masks


def layer_matched_random_block_masks(
    reference: dict[int, torch.Tensor], seq_len: int, num_layers: int, seed: int
) -> dict[int, torch.Tensor]:
    """flowkit's layer-matched control: in every layer, as many random causal edges as ``reference`` cuts there.

    Drawn among all causal pairs (BOS included); a token's edge to itself is never cut, so no
    query is left without a key. Not the paper's control: see :func:`paper_random_block_masks`.
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


def random_control_masks(
    control: str,
    spans: Spans,
    num_layers: int,
    seed: int,
    *,
    suppressed_fraction: float | None = None,
    reference: dict[int, torch.Tensor] | None = None,
    on_overflow: str = "refuse",
) -> dict[int, torch.Tensor]:
    """Masks of a named random control (:data:`RANDOM_CONTROLS`) on one prompt.

    ``"paper"`` needs ``suppressed_fraction`` (f) and draws from the first video token on
    (``on_overflow``: see :func:`paper_random_block_masks`);
    ``"layer_matched"`` needs the pathway masks as ``reference``.
    """
    if control == PAPER_RANDOM_CONTROL:
        if suppressed_fraction is None:
            raise KnockoutError("the paper's random control needs the suppressed share f (suppressed_fraction)")
        return paper_random_block_masks(
            spans.seq_len, spans.video[0], num_layers, suppressed_fraction, seed, on_overflow=on_overflow
        )
    if control == LAYER_MATCHED_RANDOM_CONTROL:
        if reference is None:
            raise KnockoutError("the layer-matched random control needs the pathway masks it matches (reference)")
        return layer_matched_random_block_masks(reference, spans.seq_len, num_layers, seed)
    raise KnockoutError(f"unknown random control {control!r}; the controls are {', '.join(RANDOM_CONTROLS)}.")


__all__ = [
    "RANDOM_OVERFLOW_RULES",
    "DEFAULT_PRESET",
    "LAYOUT_TOKENS",
    "LAYER_MATCHED_RANDOM_CONTROL",
    "PAPER_PATHWAY_PRESETS",
    "PAPER_RANDOM_CONTROL",
    "RANDOM_CONTROLS",
    "PaperPathwayPreset",
    "PathwayWindows",
    "kept_share_by_layout",
    "layer_matched_random_block_masks",
    "paper_pathway_preset",
    "paper_prompt_kept_share",
    "paper_random_block_masks",
    "paper_random_edge_count",
    "paper_random_pool",
    "paper_windows",
    "pathway_masks",
    "pathway_spec",
    "pathway_suppressed_fraction",
    "random_control_masks",
    "scale_windows",
]
