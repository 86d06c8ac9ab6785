"""Knockout specs: which edge groups to cut in which layers, as frozen data (JSON, a cache key).

>>> spec = KnockoutSpec.single("video->question", LayerWindow(center=10))
>>> spec.to_json()                                                    # doctest: +SKIP

A spec is data until :func:`flowkit.intervention.attention.knockout` (or a model's
:meth:`~flowkit.model.videollm.VideoLLM.session`) applies it.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from dataclasses import dataclass

from flowkit.intervention.edge_groups import normalize_edges
from flowkit.errors import KnockoutError

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
            raise KnockoutError(
                f"a layer window's centre is a layer index (0, 1, 2, ...), got {self.center!r}; "
                "layers count from 0 at the input."
            )
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


Layers = LayerWindow | LayerSet


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


_LAYERS_FORMAT = '{"layers": [5, 6, 7]} (or "5-7") or {"center": 10, "size": 9}'


def _json_whole(value) -> int | None:
    """A whole number read from JSON (``10`` or ``10.0``), else None."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return _whole_number(value)


def _layers_from_dict(data: dict, where: str = "layers") -> Layers:
    """The layers of one cut as stored in JSON (:meth:`LayerWindow.to_dict` / :meth:`LayerSet.to_dict`)."""
    if isinstance(data, str):
        return parse_layers(data)
    if isinstance(data, (list, tuple)):
        data = {"layers": data}
    if not isinstance(data, dict):
        raise KnockoutError(f"{where} is {data!r}; write {_LAYERS_FORMAT}.")
    if "center" in data:
        center, size = _json_whole(data["center"]), _json_whole(data.get("size", 9))
        if center is None or size is None:
            raise KnockoutError(
                f"{where}: 'center' and 'size' must be whole numbers, got {data!r}; write {_LAYERS_FORMAT}."
            )
        return LayerWindow(center=center, size=size)
    if "layers" in data:
        layers = data["layers"]
        if isinstance(layers, str):
            return parse_layers(layers)
        numbers = [_json_whole(x) for x in layers] if isinstance(layers, (list, tuple)) else [None]
        if None in numbers:
            raise KnockoutError(
                f"{where}: 'layers' must be a list of layer numbers, got {layers!r}; write {_LAYERS_FORMAT}."
            )
        return LayerSet(tuple(numbers))
    raise KnockoutError(f"cannot read {where} from {data!r}: write {_LAYERS_FORMAT}.")


def _cut_from_dict(data: object, index: int) -> Cut:
    """Cut ``index`` of a spec's ``cuts`` list, or a :class:`KnockoutError` naming it and what it lacks."""
    name = f"cut {index}"
    example = '{"edges": "video->question", "layers": {"layers": [5, 6, 7]}}'
    if isinstance(data, str):
        raise KnockoutError(
            f"{name} of the knockout spec is the string {data!r}, not a cut: write each cut as "
            f"an object with 'edges' and 'layers', e.g. {example}."
        )
    if not isinstance(data, dict):
        raise KnockoutError(
            f"{name} of the knockout spec is {data!r}, not a cut: write each cut as an object "
            f"with 'edges' and 'layers', e.g. {example}."
        )
    missing = [key for key in ("edges", "layers") if key not in data]
    if missing:
        raise KnockoutError(
            f"{name} of the knockout spec ({data!r}) has no {' and no '.join(map(repr, missing))}: "
            f"each cut names its edge group and its layers, e.g. {example}."
        )
    try:
        return Cut(data["edges"], _layers_from_dict(data["layers"], where="its 'layers'"))
    except KnockoutError as exc:
        raise KnockoutError(f"{name} of the knockout spec: {exc}") from None


# ------------------------------------------------------------------------------ specs


@dataclass(frozen=True)
class Cut:
    """One edge group cut in a set of layers."""

    edges: str
    layers: Layers

    def __post_init__(self):
        object.__setattr__(self, "edges", normalize_edges(self.edges))
        for side in self.edges.split("->"):  # a negative frame index is wrong for every prompt
            stem, _, index = side.partition(":")
            if stem == "frame" and re.fullmatch(r"-\d+", index):
                raise KnockoutError(
                    f"{side!r}: frame index {index} is before the start: frames count from 0 (frame:0 is the first)."
                )
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
    def single(cls, edges: str, layers: Layers | str) -> KnockoutSpec:
        """One cut: ``KnockoutSpec.single("video->question", LayerWindow(10))`` or ``(..., "5-14")``."""
        if isinstance(layers, str):
            layers = parse_layers(layers)
        return cls((Cut(edges, layers),))

    def plus(self, other: KnockoutSpec) -> KnockoutSpec:
        """The union of two specs."""
        return KnockoutSpec(self.cuts + other.cuts)

    def to_dict(self) -> dict:
        return {"cuts": [c.to_dict() for c in self.cuts]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> KnockoutSpec:
        """The spec :meth:`to_dict` wrote; a cut that is not ``{'edges': ..., 'layers': ...}`` is a
        :class:`KnockoutError` naming the cut and what it lacks."""
        if not isinstance(data, dict) or not isinstance(data.get("cuts"), list):
            raise KnockoutError(f"a knockout spec is {{'cuts': [...]}}, got {data!r}")
        return cls(tuple(_cut_from_dict(c, i) for i, c in enumerate(data["cuts"])))

    @classmethod
    def from_json(cls, text: str) -> KnockoutSpec:
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
