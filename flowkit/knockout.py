"""Attention knockout: cut chosen query <- key edges in chosen layers of the language model.

The method of Geva et al. (2023) as used in *Map the Flow*: an edge is a pair
(query position <- key position); knocking it out adds -inf to that attention score
before the softmax, in every head, in a window of layers. Everything here is data
until :func:`knockout` applies it:

>>> spec = KnockoutSpec.single("video->question", LayerWindow(center=10))
>>> with knockout(vllm, spec, spans):          # doctest: +SKIP
...     logits = vllm.model(**inputs).logits

Edge groups are written ``"source->target"``: information flows from the *source*
(key) tokens to the *target* (query) tokens, so ``"video->question"`` blocks question
tokens from reading video tokens. Any group of :mod:`flowkit.spans` can be used on
either side; ``"cross_frame"`` is special (frame i <- every earlier frame j < i; with
Qwen's temporal patches a "frame" is a block of two frames, see ``Spans.frames_per_span``).

Block masks are boolean ``(N, N)`` tensors (True = cut) broadcast over batch and heads:
never materialised per head. A spec that would leave some query with no key to attend
to (a softmax over nothing gives NaN) is refused with an error.

The groups, windows and counts follow the paper's official analysis code
(``byminji/map-the-flow``): ``question`` is the paper's question span (header through the
last option), ``video->question`` cuts question+options <- video, ``question->last`` cuts
last <- question span. :data:`DEFINITIONS_VERSION` names this set of definitions; result
caches key on it so numbers computed under older definitions are never reused.
"""

from __future__ import annotations

import operator

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Iterator, Union

import torch

from flowkit.errors import KnockoutError
from flowkit.spans import Spans

# ------------------------------------------------------------------------------ edges

#: Version of the knockout definitions (what each token group and edge family means, the
#: random control, the accuracy after knockout). Bump it whenever a definition changes
#: what a stored number means; :class:`flowkit.cache.ResultCache` never returns a record
#: computed under another version.
#: 1: ``question`` was every token between the video and the last position.
#: 2: ``question`` is the paper's question span (header / question sentence through the
#:    last option); the wide group is ``prompt_after_video``; the paper's random control;
#:    the paper's accuracy after knockout; the paper's PLLaVA prompt byte for byte.
DEFINITIONS_VERSION = 2

#: The edge families of the paper, by name.
PAPER_EDGE_FAMILIES = (
    "cross_frame",
    "video->question",
    "video->last",
    "question->last",
    "last->last",
)
#: Finer families of the paper's answer analysis.
OPTION_EDGE_FAMILIES = ("question_text->last", "true_option->last", "false_options->last")

_ARROWS = ("-/->", "↛", "-x->", "→", "->")


def normalize_edges(edges: str) -> str:
    """Canonical spelling of an edge group: ``"video -/-> question"`` -> ``"video->question"``."""
    if not isinstance(edges, str) or not edges.strip():
        raise KnockoutError(f"an edge group must be a non-empty string like 'video->question', got {edges!r}")
    text = edges.strip().lower().replace(" ", "")
    if text in ("cross_frame", "cross-frame", "crossframe"):
        return "cross_frame"
    for arrow in _ARROWS:
        if arrow in text:
            parts = text.split(arrow)
            if len(parts) != 2 or not all(parts):
                break
            return f"{parts[0]}->{parts[1]}"
    raise KnockoutError(
        f"unknown edge group {edges!r}. Write 'source->target' with token groups such as "
        f"video, frame:0, question, prompt_after_video, question_text, options, option:A, true_option, "
        f"false_options, prefix, last — or 'cross_frame'. The paper's families: {', '.join(PAPER_EDGE_FAMILIES)}."
    )


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
    source, target = edges.split("->")
    keys = torch.tensor(spans.positions(source), dtype=torch.long)
    queries = torch.tensor(spans.positions(target), dtype=torch.long)
    if len(keys) and len(queries):
        block[queries.unsqueeze(1), keys.unsqueeze(0)] = True
    return block & causal_mask(n)


def causal_mask(n: int) -> torch.Tensor:
    """Boolean lower-triangular ``(n, n)`` mask, True where the query may attend the key."""
    return torch.ones(n, n, dtype=torch.bool).tril()


# ----------------------------------------------------------------------------- layers


def _whole_number(value) -> int | None:
    """``value`` as an int if it is a whole number (int, numpy integer), else None (bools are not numbers here)."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


@dataclass(frozen=True)
class LayerWindow:
    """The paper's window: ``size`` layers centred on ``center``, clipped at both ends.

    For size 9 and centre l this is layers ``max(0, l-4) .. min(L, l+5) - 1``.
    """

    center: int
    size: int = 9

    def __post_init__(self):
        center, size = _whole_number(self.center), _whole_number(self.size)
        if center is None or center < 0:
            raise KnockoutError(f"a layer window's centre is a layer index (0, 1, 2, ...), got {self.center!r}; "
                                "layers count from 0 at the input.")
        if size is None or size < 1:
            raise KnockoutError(f"a layer window needs a whole size >= 1 (the paper uses 9), got size={self.size!r}")
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "size", size)

    def resolve(self, num_layers: int) -> tuple[int, ...]:
        if not 0 <= self.center < num_layers:
            raise KnockoutError(
                f"window centre {self.center} is beyond the model's depth: layers are 0..{num_layers - 1}."
            )
        start = self.center - self.size // 2
        stop = start + self.size
        return tuple(range(max(0, start), min(num_layers, stop)))

    def to_dict(self) -> dict:
        return {"center": self.center, "size": self.size}


@dataclass(frozen=True)
class LayerSet:
    """An arbitrary set of layers (0-indexed)."""

    layers: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(sorted({int(x) for x in self.layers})))
        negative = [x for x in self.layers if x < 0]
        if negative:
            raise KnockoutError(f"layer(s) {_compact(tuple(negative))} are negative: layers count from 0 at the input.")

    def resolve(self, num_layers: int) -> tuple[int, ...]:
        if not self.layers:
            raise KnockoutError("the layer set is empty: name at least one layer to cut in.")
        bad = [x for x in self.layers if not 0 <= x < num_layers]
        if bad:
            raise KnockoutError(
                f"layer(s) {_compact(tuple(bad))} are beyond the model's depth: layers are 0..{num_layers - 1}."
            )
        return self.layers

    def to_dict(self) -> dict:
        return {"layers": list(self.layers)}


Layers = Union[LayerWindow, LayerSet]


def parse_layers(text: str) -> LayerSet:
    """Parse ``"5-14"``, ``"3"``, ``"1,2,7-9"`` (0-indexed, ranges inclusive) into a :class:`LayerSet`."""
    layers: set[int] = set()
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise KnockoutError(f"cannot read layers {text!r}: write e.g. '5-14' or '1,2,7-9' (0-indexed).")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) else lo
        if hi < lo:
            raise KnockoutError(f"layer range {part!r} is empty: the end comes before the start.")
        layers.update(range(lo, hi + 1))
    if not layers:
        raise KnockoutError(f"no layers in {text!r}: write e.g. '5-14'.")
    return LayerSet(tuple(layers))


def _layers_from_dict(data: dict) -> Layers:
    if "center" in data:
        return LayerWindow(center=int(data["center"]), size=int(data.get("size", 9)))
    if "layers" in data:
        return LayerSet(tuple(int(x) for x in data["layers"]))
    raise KnockoutError(f"cannot read layers from {data!r}: expected {{'center', 'size'}} or {{'layers'}}.")


# ------------------------------------------------------------------------------ specs


@dataclass(frozen=True)
class Cut:
    """One edge group cut in a set of layers."""

    edges: str
    layers: Layers

    def __post_init__(self):
        object.__setattr__(self, "edges", normalize_edges(self.edges))
        if not isinstance(self.layers, (LayerWindow, LayerSet)):
            raise KnockoutError(f"layers must be a LayerWindow or LayerSet, got {type(self.layers).__name__}")

    def to_dict(self) -> dict:
        return {"edges": self.edges, "layers": self.layers.to_dict()}


@dataclass(frozen=True)
class KnockoutSpec:
    """A frozen, JSON-serialisable intervention: which edges to cut in which layers.

    The canonical JSON (``spec.to_json()``) doubles as a cache key (``spec.key``).
    An empty spec (no cuts) is the clean run.
    """

    cuts: tuple[Cut, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "cuts", tuple(self.cuts))

    @classmethod
    def single(cls, edges: str, layers: Layers | str) -> "KnockoutSpec":
        """One cut: ``KnockoutSpec.single("video->question", LayerWindow(10))`` or ``(..., "5-14")``."""
        if isinstance(layers, str):
            layers = parse_layers(layers)
        return cls((Cut(edges, layers),))

    def plus(self, other: "KnockoutSpec") -> "KnockoutSpec":
        """The union of two specs."""
        return KnockoutSpec(self.cuts + other.cuts)

    def to_dict(self) -> dict:
        return {"cuts": [c.to_dict() for c in self.cuts]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> "KnockoutSpec":
        if not isinstance(data, dict) or not isinstance(data.get("cuts"), list):
            raise KnockoutError(f"a knockout spec is {{'cuts': [...]}}, got {data!r}")
        return cls(tuple(Cut(c["edges"], _layers_from_dict(c["layers"])) for c in data["cuts"]))

    @classmethod
    def from_json(cls, text: str) -> "KnockoutSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KnockoutError(f"the knockout spec is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @property
    def key(self) -> str:
        """A short stable hash of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def layers_touched(self, num_layers: int) -> tuple[int, ...]:
        """Every layer in which at least one edge is cut."""
        return tuple(sorted({layer for c in self.cuts for layer in c.layers.resolve(num_layers)}))

    def first_layer(self, num_layers: int) -> int | None:
        layers = self.layers_touched(num_layers)
        return layers[0] if layers else None

    def __str__(self) -> str:
        if not self.cuts:
            return "no knockout"
        parts = []
        for c in self.cuts:
            if isinstance(c.layers, LayerWindow):
                where = f"window {c.layers.size} @ {c.layers.center}"
            else:
                where = f"layers {_compact(c.layers.layers)}"
            parts.append(f"{c.edges} ({where})")
        return "; ".join(parts)


def _compact(layers: tuple[int, ...]) -> str:
    out, start = [], None
    for i, x in enumerate(layers):
        if start is None:
            start = x
        if i + 1 == len(layers) or layers[i + 1] != x + 1:
            out.append(str(start) if start == x else f"{start}-{x}")
            start = None
    return ",".join(out)


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
            _refuse_empty_rows(mask, [per_cut[i][0].edges for i in active], layer)
            combined[active] = mask
        masks[layer] = combined[active]
    return masks


def _refuse_empty_rows(block: torch.Tensor, edges: list[str], layer: int) -> None:
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


# ------------------------------------------------------------------ attention function

_KNOCKOUT_ATTR = "_flowkit_knockout_stack"
SUPPORTED_BASES = ("sdpa", "eager")


def _blocked_for(module: torch.nn.Module) -> torch.Tensor | None:
    stack = getattr(module, _KNOCKOUT_ATTR, None)
    if not stack:
        return None
    layer = getattr(module, "layer_idx", None)
    found = [masks[layer] for masks in stack if layer in masks]
    if not found:
        return None
    block = found[0]
    for extra in found[1:]:
        block = block | extra
    return block


def _slice_block(block: torch.Tensor, q_len: int, k_len: int) -> torch.Tensor:
    """Block-mask rows of the current queries (the last ``q_len`` of ``k_len`` positions).

    ``block`` is ``(N, N)`` or, for a batch of different specs, ``(B, N, N)``.
    """
    n = block.shape[-1]
    if k_len > n:  # positions beyond the analysed prompt (e.g. generated tokens) are never cut
        padded = torch.zeros(*block.shape[:-2], k_len, k_len, dtype=torch.bool, device=block.device)
        padded[..., :n, :n] = block
        block = padded
    return block[..., k_len - q_len : k_len, :k_len]


def _with_block(attention_mask, block: torch.Tensor, query: torch.Tensor, key: torch.Tensor):
    q_len, k_len = query.shape[2], key.shape[2]
    blk = _slice_block(block.to(query.device), q_len, k_len)
    blk = blk[:, None] if blk.ndim == 3 else blk[None, None]  # broadcast over heads (and batch)
    if attention_mask is None:  # the stock path relied on is_causal: build the causal mask explicitly
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
        return allowed[None, None] & ~blk
    if attention_mask.dtype == torch.bool:
        return attention_mask[..., :k_len] & ~blk
    return attention_mask[..., :k_len].masked_fill(blk, float("-inf"))


def _make_attention(base: str):
    def knockout_attention(module, query, key, value, attention_mask, **kwargs):
        base_fn = _base_attention(base)
        block = _blocked_for(module)
        if block is None:
            return base_fn(module, query, key, value, attention_mask, **kwargs)
        return base_fn(module, query, key, value, _with_block(attention_mask, block, query, key), **kwargs)

    knockout_attention.__name__ = f"flowkit_{base}_attention"
    return knockout_attention


def _base_attention(base: str):
    if base == "sdpa":
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward
    from transformers.models.llama.modeling_llama import eager_attention_forward

    return eager_attention_forward


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

    for base, mask_fn in (("sdpa", sdpa_mask), ("eager", eager_mask)):
        AttentionInterface.register(f"flowkit_{base}", _make_attention(base))
        AttentionMaskInterface.register(f"flowkit_{base}", mask_fn)


_register()


# ------------------------------------------------------------------- context manager


def language_model_of(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack (``.layers``) of a VideoLLM's language model."""
    for path in ("model.language_model", "language_model", "model.model", "model"):
        obj = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if obj is not None and hasattr(obj, "layers") and hasattr(obj, "config"):
            return obj
    if hasattr(model, "layers") and hasattr(model, "config"):
        return model
    raise KnockoutError(
        f"cannot find the language model's decoder layers in {type(model).__name__}; "
        "flowkit expects `model.model.language_model.layers` as in transformers' VideoLLMs."
    )


def attention_modules(language_model: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention module of every decoder layer, in order."""
    modules = []
    for i, layer in enumerate(language_model.layers):
        attn = getattr(layer, "self_attn", None)
        if attn is None or getattr(attn, "layer_idx", i) != i:
            raise KnockoutError(f"decoder layer {i} has no `self_attn` with layer_idx={i}; unsupported architecture.")
        modules.append(attn)
    return modules


@contextlib.contextmanager
def knockout(model, spec: KnockoutSpec, spans: Spans) -> Iterator[dict[int, torch.Tensor]]:
    """Apply ``spec`` to the language model of ``model`` (a VideoLLM or HF model) while inside.

    Contexts nest (their cuts add up). The model is always restored on exit, even on
    error. Yields the per-layer block masks.
    """
    lm = language_model_of(_hf_model(model))
    masks = block_masks(spec, spans, len(attention_modules(lm)))
    with apply_block_masks(lm, masks):
        yield masks


def _hf_model(model) -> torch.nn.Module:
    return model.model if hasattr(model, "adapter") else model


@contextlib.contextmanager
def apply_block_masks(language_model: torch.nn.Module, masks: dict[int, torch.Tensor]) -> Iterator[None]:
    """Low level: cut the edges of ready-made block masks ``{layer: (N, N) or (B, N, N) bool}``.

    :func:`knockout` builds and checks the masks from a spec; the engine uses this directly
    to evaluate a batch of specs at once (one ``(N, N)`` mask per batch row).
    """
    modules = attention_modules(language_model)
    config = language_model.config
    current = config._attn_implementation
    outermost = not (isinstance(current, str) and current.startswith("flowkit_"))
    if outermost and current not in SUPPORTED_BASES:
        raise KnockoutError(
            f"knockout needs the language model to use 'sdpa' or 'eager' attention, not {current!r}. "
            "Load the model with attn_implementation='sdpa' (or 'eager' to read attention weights)."
        )
    for m in modules:
        if not hasattr(m, _KNOCKOUT_ATTR):
            setattr(m, _KNOCKOUT_ATTR, [])
        getattr(m, _KNOCKOUT_ATTR).append(masks)
    if outermost:
        config._attn_implementation = f"flowkit_{current}"
    try:
        yield
    finally:
        for m in modules:
            stack = getattr(m, _KNOCKOUT_ATTR, [])
            if stack and stack[-1] is masks:
                stack.pop()
            if not stack and hasattr(m, _KNOCKOUT_ATTR):
                delattr(m, _KNOCKOUT_ATTR)
        if outermost:
            config._attn_implementation = current
