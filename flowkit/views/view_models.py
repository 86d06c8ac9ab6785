"""What the kit's Jupyter widgets show, computed in plain Python (and tested without a browser).

The widgets in the top-level ``widgets`` package are thin views over this module: they
hold their state in synced traitlets (the :class:`~flowkit.intervention.spec.KnockoutSpec` JSON
is the state of a knockout grid) and ask this module for everything they draw.

Knockout grid
    Rows are language-model layers, columns are edge groups (:class:`GridColumn`). A cell
    (layer, column) is cut when every edge group of its column is cut in that layer.
    :func:`cells_to_spec` and :func:`spec_to_cells` convert between cut cells and a spec.
    Columns are written as:

    - an edge group, ``"video->question"``, ``"cross_frame"``, ... (one edge group);
    - ``"frame:i"`` (i >= 1): **frame i's cross-frame inputs**, the edges from every
      earlier frame j < i into frame i (edge groups ``"frame:j->frame:i"``). Frame i's
      within-frame attention and its attention to the prompt's prefix are kept. Cutting
      every frame column in a layer cuts exactly what ``cross_frame`` cuts there;
    - ``"frames"``: shorthand for ``"frame:1"`` ... ``"frame:{N-1}"``.

    :class:`AnswerExplorer` answers a spec with one cached :class:`~flowkit.intervention.session.Session`
    (one clean forward pass per prompt) and :func:`answer_view` packs before/after
    distributions into the JSON the widget draws.

Lens view
    :func:`lens_view_table` turns :func:`flowkit.analysis.lens.frame_top_words` output into
    per-layer, per-frame word lists (frame pictures come from :mod:`flowkit.views.thumbnails`).

Flow curves
    :func:`flow_curve_series` turns :func:`flowkit.analysis.sweep.summarize` output into one
    series per task and edge group, with the axes' extent.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from collections.abc import Iterable, Sequence

import numpy as np

from flowkit.errors import KnockoutError
from flowkit.intervention.spec import Cut, KnockoutSpec, LayerSet, LayerWindow, _compact
from flowkit.intervention.edge_groups import edge_group_label, edge_group_title, normalize_edges
from flowkit.prompts.readout import AnswerDistribution, percent_change
from flowkit.prompts.spans import Spans

#: Column shorthand for "one column per frame's cross-frame inputs".
FRAMES = "frames"
_FRAME_COLUMN = re.compile(r"frame:\s*\w*", re.IGNORECASE)

Cell = tuple[int, int]  # (layer, column index)


# ------------------------------------------------------------------------ columns


@dataclass(frozen=True)
class GridColumn:
    """One column of a knockout grid.

    Attributes:
        key: how the column was asked for (``"video->question"``, ``"frame:3"``).
        label: a short header (the paper's notation, ``"video ↛ question"``).
        title: a sentence saying what a cut cell in this column does.
        edges: the edge groups a cut cell cuts (normalised spelling).
        frame: the frame index of a ``"frame:i"`` column, else None.
    """

    key: str
    label: str
    title: str
    edges: tuple[str, ...]
    frame: int | None = None

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "label": self.label,
            "title": self.title,
            "edges": list(self.edges),
            "frame": self.frame,
        }


def grid_columns(edge_groups: str | Sequence[str], spans: Spans) -> tuple[GridColumn, ...]:
    """The columns of a knockout grid for one prompt (see the module docstring for the spelling)."""
    requested = [edge_groups] if isinstance(edge_groups, str) else list(edge_groups)
    if not requested:
        raise KnockoutError("a knockout grid needs at least one column, e.g. edge_groups=PAPER_EDGE_GROUPS.")
    keys: list[str] = []
    for column in requested:
        if not isinstance(column, str):
            raise KnockoutError(f"grid columns are strings such as 'video->question' or 'frame:2', got {column!r}")
        if column.strip().lower() == FRAMES:
            if spans.num_frames < 2:
                raise KnockoutError("the 'frames' columns need a video of at least 2 frames.")
            keys += [f"frame:{i}" for i in range(1, spans.num_frames)]
        else:
            keys.append(column.strip())
    columns = []
    for key in keys:
        if _FRAME_COLUMN.fullmatch(key):
            columns.append(_frame_column(key, spans))
        else:
            edges = normalize_edges(key)
            if edges not in ("cross_frame", "within_frame"):
                spans.positions(edges.split("->")[0])  # fail now on a group this prompt lacks
                spans.positions(edges.split("->")[1])
            columns.append(
                GridColumn(key=edges, label=edge_group_label(edges), title=edge_group_title(edges), edges=(edges,))
            )
    seen = [c.key for c in columns]
    duplicates = sorted({k for k in seen if seen.count(k) > 1})
    if duplicates:
        raise KnockoutError(f"grid columns must differ; {', '.join(duplicates)} appear(s) more than once.")
    return tuple(columns)


def _frame_column(key: str, spans: Spans) -> GridColumn:
    raw = key.split(":", 1)[1].strip()
    if not raw.isdigit():
        raise KnockoutError(f"column {key!r}: write 'frame:i' with a frame index i >= 1.")
    i = int(raw)
    if not 1 <= i < spans.num_frames:
        raise KnockoutError(
            f"column {key!r}: frame {i} has no earlier frame to cut from; frame columns run "
            f"frame:1 .. frame:{spans.num_frames - 1} for this {spans.num_frames}-frame video."
        )
    edges = tuple(f"frame:{j}->frame:{i}" for j in range(i))
    earlier = "frame 0" if i == 1 else f"frames 0–{i - 1}"
    return GridColumn(
        key=f"frame:{i}", label=f"→ frame {i}", title=f"frame {i} cannot read {earlier}", edges=edges, frame=i
    )


# --------------------------------------------------------------------- cells <-> spec


def _check_cells(cells: Iterable[Sequence[int]], columns: Sequence[GridColumn], num_layers: int) -> set[Cell]:
    out = set()
    for cell in cells:
        try:
            layer, column = (int(x) for x in cell)
        except (TypeError, ValueError):
            raise KnockoutError(f"a grid cell is (layer, column), got {cell!r}") from None
        if not 0 <= layer < num_layers or not 0 <= column < len(columns):
            raise KnockoutError(
                f"cell {(layer, column)} is outside the grid of {num_layers} layers x {len(columns)} columns."
            )
        out.add((layer, column))
    return out


def cells_to_spec(cells: Iterable[Sequence[int]], columns: Sequence[GridColumn], num_layers: int) -> KnockoutSpec:
    """The canonical spec of a set of cut cells: one ``LayerSet`` cut per edge group, in column order."""
    by_column: dict[int, list[int]] = {}
    for layer, column in sorted(_check_cells(cells, columns, num_layers)):
        by_column.setdefault(column, []).append(layer)
    cuts = [Cut(edges, LayerSet(tuple(by_column[c]))) for c in sorted(by_column) for edges in columns[c].edges]
    return KnockoutSpec(tuple(cuts))


def spec_to_cells(spec: KnockoutSpec, columns: Sequence[GridColumn], num_layers: int) -> list[Cell]:
    """The cut cells of a spec, sorted; refuses a spec that cuts edges the grid cannot show.

    A cell is cut when every edge group of its column is cut in that layer. Windows
    (``LayerWindow``) are resolved against ``num_layers``.
    """
    cut: dict[str, set[int]] = {}
    for c in spec.cuts:
        cut.setdefault(c.edges, set()).update(c.layers.resolve(num_layers))
    cells, shown = [], {edges: set() for edges in cut}
    for index, column in enumerate(columns):
        layers = set.intersection(*(cut.get(edges, set()) for edges in column.edges))
        cells += [(layer, index) for layer in layers]
        if layers:
            for edges in column.edges:
                shown[edges].update(layers)
    hidden = {edges: sorted(layers - shown[edges]) for edges, layers in cut.items() if layers - shown[edges]}
    if hidden:
        what = "; ".join(f"{edges} in layers {','.join(map(str, layers))}" for edges, layers in hidden.items())
        raise KnockoutError(
            f"this grid cannot show the spec: it cuts {what}, which no column (or only part of a "
            f"column) covers. The grid's columns: {', '.join(c.key for c in columns)}."
        )
    return sorted(cells)


def describe_cells(cells: Iterable[Sequence[int]], columns: Sequence[GridColumn]) -> str:
    """The cut cells in words, column by column: ``"video ↛ question: layers 5-13 · → frame 2: layer 0"``."""
    by_column: dict[int, list[int]] = {}
    for layer, column in sorted((int(a), int(b)) for a, b in cells):
        by_column.setdefault(column, []).append(layer)
    if not by_column:
        return "no knockout"
    parts = []
    for column, layers in sorted(by_column.items()):
        noun = "layer" if len(layers) == 1 else "layers"
        parts.append(f"{columns[column].label}: {noun} {_compact(tuple(layers))}")
    return " · ".join(parts)


def window_cells(center: int, column: int, num_layers: int, size: int = 9) -> list[Cell]:
    """The cells of the paper's layer window (``size`` layers centred on ``center``) in one column."""
    return [(layer, column) for layer in LayerWindow(center, size).resolve(num_layers)]


# ------------------------------------------------------------------------ prompts


def resolve_prompt(vllm, prompt, frames=None, options: Sequence[str] | None = None):
    """``(prepared, frames, options, question)`` from a :class:`flowkit.data.Sample` or a prepared prompt.

    A sample brings its own frames, option texts and question; for a prepared prompt
    (``vllm.prepare(...)``) pass ``frames`` and ``options`` to show them (else None, and
    the question is ``""``).
    """
    prepared = vllm.prepare_prompt(prompt)
    if prepared is prompt:
        return prepared, (None if frames is None else np.asarray(frames)), options, ""
    return (
        prepared,
        np.asarray(prompt.frames if frames is None else frames),
        list(prompt.candidates if options is None else options),
        str(prompt.question),
    )


def span_thumbnails(frames, spans: Spans, size: int = 112) -> list[str]:
    """PNG data URLs, one per frame position of ``spans`` (the first frame of each span); [] without frames."""
    from flowkit.views.thumbnails import frame_thumbnails

    if frames is None:
        return []
    return frame_thumbnails(np.asarray(frames)[:: spans.frames_per_span][: spans.num_frames], size=size)


def frame_labels(spans: Spans) -> list[str]:
    """One label per frame position: ``"frame 3"``, or ``"frames 4–5"`` when a position holds several frames."""
    per = spans.frames_per_span
    return [f"frame {i}" if per == 1 else f"frames {i * per}–{(i + 1) * per - 1}" for i in range(spans.num_frames)]


def grid_setup(
    columns: Sequence[GridColumn], num_layers: int, spans: Spans, frames=None, question: str = "", sample_id: str = ""
) -> dict:
    """What a knockout grid's view needs once: ``{"num_layers", "columns", "thumbnails", "question", "sample_id"}``.

    Thumbnails (64 px) only when some column is a frame's.
    """
    thumbs = span_thumbnails(frames, spans, size=64) if any(c.frame is not None for c in columns) else []
    return {
        "num_layers": int(num_layers),
        "columns": [c.to_dict() for c in columns],
        "thumbnails": thumbs,
        "question": str(question),
        "sample_id": str(sample_id),
    }


# ------------------------------------------------------------------------ answers


class AnswerExplorer:
    """Answer distributions under knockout specs for one prompt, fast enough to click.

    The first call runs the clean forward once (in the prompt's :class:`~flowkit.intervention.session.Session`);
    every spec after that replays only what it can change: from the first cut layer on,
    or — when the spec equals a recent one in its first layers, as a click that adds or
    removes one cell does — from the first layer where the two differ, starting from the
    residual stream that replay computed (:meth:`~flowkit.intervention.session.Session.last_logits_resuming`).
    Answers are memoised by spec (the ``maxsize`` most recent); the ``traces`` most recent
    replays are kept for resuming (each holds the stream of the layers it replayed).
    """

    def __init__(self, vllm, prepared, session=None, maxsize: int = 256, traces: int = 6):
        self.vllm, self.prepared, self.maxsize, self.max_traces = vllm, prepared, maxsize, traces
        self._session = session
        self._memo: OrderedDict[str, AnswerDistribution] = OrderedDict()
        self._traces: list = []
        #: how many answers resumed from an earlier replay instead of the clean run
        self.resumed = 0

    @property
    def session(self):
        """The prompt's :class:`~flowkit.intervention.session.Session` (its clean run happens on first use)."""
        if self._session is None:
            self._session = self.vllm.session(self.prepared)
        return self._session

    @property
    def clean(self) -> AnswerDistribution:
        """The answer without any knockout."""
        return self.session.clean_answer

    def answer(self, spec: KnockoutSpec) -> AnswerDistribution:
        """The answer under ``spec`` (memoised)."""
        from flowkit.intervention.masks import block_masks
        from flowkit.prompts.readout import answer_distribution

        key = spec.to_json()
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        session = self.session
        masks = block_masks(spec, self.prepared.spans, session.num_layers)
        logits, trace = session.last_logits_resuming(masks, self._traces)
        if trace is not None:
            self.resumed += trace.resumed and trace not in self._traces
            self._traces = [t for t in self._traces if t is not trace][-(self.max_traces - 1) :] + [trace]
        dist = answer_distribution(logits, self.prepared.letter_ids, self.prepared.spans.true_option)
        self._memo[key] = dist
        if len(self._memo) > self.maxsize:
            self._memo.popitem(last=False)
        return dist


def _side(dist: AnswerDistribution) -> dict:
    return {
        "probs": list(dist.probs),
        "option_probs": list(dist.option_probs),
        "predicted": dist.predicted,
        "predicted_letter": dist.predicted_letter,
        # the paper's rule (flowkit.prompts.readout): is the whole vocabulary's top token a letter at all?
        "top_is_letter": None if dist.top_token_id is None else dist.top_is_letter,
        "correct": dist.correct,
    }


def answer_view(
    before: AnswerDistribution,
    after: AnswerDistribution,
    spec: KnockoutSpec,
    options: Sequence[str] | None = None,
    spec_text: str | None = None,
) -> dict:
    """The JSON a knockout grid draws: both distributions, the paper's % change and the spec.

    Keys: ``spec`` (canonical JSON), ``spec_text`` (in words: ``spec_text`` if given, else
    ``str(spec)``), ``letters``, ``options``
    (texts, or empty strings), ``true_option`` (index or None), ``before`` / ``after``
    (``probs`` over the whole vocabulary, ``option_probs`` renormalised over the options,
    ``predicted``, ``predicted_letter``, ``top_is_letter`` and ``correct`` under the paper's
    rule, :mod:`flowkit.prompts.readout`), ``pct_change`` (the paper's metric: change of the
    full-vocabulary probability of the clean run's predicted option, in %) and
    ``pct_change_letter`` (that option's letter).
    """
    letters = list(before.letters)
    if options is not None and len(options) != len(letters):
        raise ValueError(f"{len(options)} option texts for {len(letters)} options")
    base = before.predicted
    return {
        "spec": spec.to_json(),
        "spec_text": str(spec) if spec_text is None else spec_text,
        "letters": letters,
        "options": [str(o) for o in options] if options is not None else [""] * len(letters),
        "true_option": before.true_option,
        "before": _side(before),
        "after": _side(after),
        "pct_change": percent_change(before.probs[base], after.probs[base]),
        "pct_change_letter": letters[base],
    }


def grid_view(
    explorer: AnswerExplorer,
    spec: KnockoutSpec,
    columns: Sequence[GridColumn],
    num_layers: int,
    options: Sequence[str] | None = None,
) -> dict:
    """What a knockout grid draws for ``spec``: ``{"cells", "answer", "error"}``.

    ``cells`` are the cut ``[layer, column]`` pairs, ``answer`` is :func:`answer_view` of the
    clean run and the run under ``spec`` (``spec_text`` in the grid's words), ``error`` is ``""``.
    """
    cells = spec_to_cells(spec, columns, num_layers)
    answer = answer_view(explorer.clean, explorer.answer(spec), spec, options, spec_text=describe_cells(cells, columns))
    return {"cells": [list(c) for c in cells], "answer": answer, "error": ""}


# ---------------------------------------------------------------------- lens view


def lens_view_table(top_words, num_layers: int, num_frames: int, top: int = 5) -> list[list[list[dict]]]:
    """``table[layer][frame]`` = the frame's top words after that layer, for the lens view.

    Each word is ``{"word", "tokens", "share", "kind"}``: how many of the frame's tokens
    have it among their top lens words, that as a share of the frame's tokens, and
    ``"spatial"`` / ``"temporal"`` / ``"other"`` (:func:`flowkit.analysis.lens.word_kind_of`).
    """
    from flowkit.analysis.lens import frame_word_summary, word_kind_of

    table: list[list[list[dict]]] = [[[] for _ in range(num_frames)] for _ in range(num_layers)]
    for row in frame_word_summary(top_words, top).itertuples(index=False):
        table[int(row.layer)][int(row.frame)].append(
            {
                "word": row.word if row.word else "⎵",
                "tokens": int(row.tokens),
                "share": float(row.share),
                "kind": word_kind_of(row.word),
            }
        )
    return table


def applicable_spec(spec_json: str, spans: Spans, num_layers: int) -> KnockoutSpec:
    """The spec in ``spec_json``; raises :class:`~flowkit.errors.FlowkitError` when it is not JSON or cannot be applied
    (e.g. it leaves a token nothing to attend to)."""
    from flowkit.intervention.masks import block_masks

    spec = KnockoutSpec.from_json(spec_json)
    block_masks(spec, spans, num_layers)
    return spec


def lens_setup(spans: Spans, num_layers: int, frames=None, question: str = "", bag: str | None = None) -> dict:
    """What a lens view needs once: ``{"num_layers", "frame_labels", "thumbnails", "kind_colors", "question",
    "ranked"}`` (``ranked``: which words the lens ranks, in words)."""
    from flowkit.views.plots import WORD_KIND_COLORS

    return {
        "num_layers": int(num_layers),
        "frame_labels": frame_labels(spans),
        "thumbnails": span_thumbnails(frames, spans),
        "kind_colors": dict(WORD_KIND_COLORS),
        "question": str(question),
        "ranked": ranked_words(bag),
    }


def ranked_words(bag: str | None) -> str:
    """Which words a lens ranks, in words: a closed word list, or the whole vocabulary."""
    if bag is None:
        return "words ranked over the whole vocabulary (rare word pieces come first)"
    from flowkit.data.vocab import word_bag_words

    spatial, temporal = word_bag_words(bag)
    return f"words ranked within the closed list {bag!r}: {len(spatial)} spatial and {len(temporal)} temporal words"


def lens_tables(
    vllm, prepared, spec: KnockoutSpec | None = None, k: int = 5, top: int = 5, bag: str | None = None
) -> tuple[dict, dict]:
    """``(top_words, table)`` per lens kind: one forward pass under ``spec``, read through every lens
    (ranking only the words of the closed list ``bag`` when given).

    ``top_words[kind]`` is :func:`flowkit.analysis.lens.frame_top_words` output, ``table[kind]`` its
    :func:`lens_view_table` (``table[kind][layer][frame]`` = words).
    """
    from flowkit.analysis.lens import LENS_KINDS, activations, frame_top_words

    cache = activations(vllm, prepared, spec)
    spans = prepared.spans
    top_words = {kind: frame_top_words(vllm, prepared, kind, k, cache=cache, bag=bag) for kind in LENS_KINDS}
    table = {kind: lens_view_table(words, vllm.num_layers, spans.num_frames, top) for kind, words in top_words.items()}
    return top_words, table


# --------------------------------------------------------------------- flow curves


def flow_curve_series(summary, num_layers: int | None = None) -> dict:
    """Series for the flow-curves widget from :func:`flowkit.analysis.sweep.summarize` output.

    Returns ``{"tasks", "edge_groups", "labels", "colors", "num_layers", "y_domain", "curves"}``
    where ``curves[task][edge_group]`` is a list of ``[centre, pct_change, n]`` sorted by centre
    and ``y_domain`` spans every value and 0 (rounded out to multiples of 5 %).
    """
    from flowkit.views.plots import edge_group_colors

    needed = ["task", "edge_group", "center", "pct_change"]
    missing = [c for c in needed if c not in summary.columns]
    if missing:
        raise ValueError(
            f"flow curves need columns {needed}; missing {missing}. Pass flowkit.analysis.sweep.summarize(sweep(...))."
        )
    if summary.empty:
        raise ValueError("flow curves got an empty summary: run a sweep first.")
    tasks = list(dict.fromkeys(summary["task"]))
    edge_groups = list(dict.fromkeys(summary["edge_group"]))
    curves: dict[str, dict[str, list]] = {task: {} for task in tasks}
    for (task, edge_group), group in summary.sort_values("center").groupby(["task", "edge_group"], sort=False):
        n = group["n"] if "n" in group.columns else [None] * len(group)
        curves[task][edge_group] = [
            [int(c), float(p), None if m is None else int(m)]
            for c, p, m in zip(group["center"], group["pct_change"], n)
        ]
    values = [float(v) for v in summary["pct_change"] if math.isfinite(v)] + [0.0]
    low, high = math.floor(min(values) / 5) * 5, math.ceil(max(values) / 5) * 5
    if low == high:
        low, high = low - 5, high + 5
    depth = int(num_layers if num_layers is not None else summary["center"].max() + 1)
    return {
        "tasks": tasks,
        "edge_groups": edge_groups,
        "labels": {g: edge_group_label(g) for g in edge_groups},
        "colors": edge_group_colors(edge_groups),
        "num_layers": depth,
        "y_domain": [low, high],
        "curves": curves,
    }


__all__ = [
    "FRAMES",
    "AnswerExplorer",
    "GridColumn",
    "answer_view",
    "applicable_spec",
    "cells_to_spec",
    "describe_cells",
    "flow_curve_series",
    "frame_labels",
    "grid_columns",
    "grid_setup",
    "grid_view",
    "lens_setup",
    "lens_tables",
    "lens_view_table",
    "resolve_prompt",
    "span_thumbnails",
    "spec_to_cells",
    "window_cells",
]
