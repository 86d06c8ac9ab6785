"""Altair versions of *Map the Flow*'s figures, readable on a classroom projector.

Every function takes a tidy pandas DataFrame (or an answer distribution) and returns an
:class:`altair.Chart` (or a layered / faceted chart); nothing is drawn until a notebook
displays it. Colours come from the Okabe-Ito palette, which stays distinguishable for
the common kinds of colour blindness; lines also differ by stroke dash where colour
alone would carry meaning.

=====================  ==========================================================
:func:`flow_curves`    % change vs window centre, one line per edge group,
                       one panel per task (:func:`flowkit.analysis.sweep.summarize` output)
:func:`answer_bars`    p(option) before and after a knockout
:func:`prob_by_layer`  p(true option) vs p(false options) at the last position, per
                       layer (:func:`flowkit.analysis.lens.answer_by_layer` output)
:func:`lens_shares`    share of spatial vs temporal words among the lens's top words
                       of video tokens, per layer (:func:`flowkit.analysis.lens.word_shares`)
:func:`accuracy_bars`  accuracy per condition (e.g. full model / pathways / random)
:func:`curves_with_band` mean % change per window over learned tasks' questions, with
                       the 95 % bootstrap band (:func:`flowkit.analysis.experiments.curves_with_ci`)
:func:`question_strip` every question's deepest % change in one task, the chosen one marked
                       (:func:`flowkit.analysis.experiments.question_troughs`)
:func:`save_png`       write any chart as a PNG (through vl-convert, no browser)
:func:`highlight_on_click` click a task (a mark, or its legend entry) to dim the others
=====================  ==========================================================

Charts that show several tasks come with :func:`highlight_on_click` (it changes nothing
until a task is clicked) and tooltips; :func:`widgets.interactive`
makes them live in JupyterLab, offline.
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING

import altair as alt
import numpy as np
import pandas as pd

from flowkit.intervention.edge_groups import EDGE_GROUPS, edge_group_label
from flowkit.palette import OKABE_ITO
from flowkit.prompts.readout import AnswerDistribution

if TYPE_CHECKING:
    import torch

#: One fixed colour per named edge group (:data:`flowkit.intervention.edge_groups.EDGE_GROUPS`), so an
#: edge group looks the same in every figure and widget.
EDGE_GROUP_COLORS = {name: group.color for name, group in EDGE_GROUPS.items()}
_SPARE_COLORS = (
    OKABE_ITO["sky_blue"],
    OKABE_ITO["black"],
    OKABE_ITO["yellow"],
    OKABE_ITO["orange"],
    OKABE_ITO["blue"],
    OKABE_ITO["bluish_green"],
    OKABE_ITO["vermillion"],
    OKABE_ITO["reddish_purple"],
)

#: Colours of the two sides of a before/after comparison.
BEFORE_COLOR = "#9E9E9E"
AFTER_COLOR = OKABE_ITO["blue"]
#: Colours of spatial and temporal words (lens figures and the LensView widget).
WORD_KIND_COLORS = {"spatial": OKABE_ITO["blue"], "temporal": OKABE_ITO["orange"]}

#: Font sizes that stay readable on a projector.
FONT = {"label": 16, "title": 18, "header": 18, "chart_title": 20}


def edge_group_colors(edge_groups: Sequence[str]) -> dict[str, str]:
    """A colour for each edge group: the registry's fixed one for named edge groups, spare
    Okabe-Ito colours for others."""
    used = {EDGE_GROUPS[g].color for g in edge_groups if g in EDGE_GROUPS}
    spare = [c for c in _SPARE_COLORS if c not in used] or list(_SPARE_COLORS)
    colors, extra = {}, 0
    for edge_group in edge_groups:
        if edge_group in EDGE_GROUPS:
            colors[edge_group] = EDGE_GROUPS[edge_group].color
        else:
            colors[edge_group] = spare[extra % len(spare)]
            extra += 1
    return colors


def projector(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """Large fonts for axes, legends, facet headers and titles (apply to a top-level chart)."""
    return (
        chart.configure_axis(labelFontSize=FONT["label"], titleFontSize=FONT["title"])
        .configure_legend(labelFontSize=FONT["label"], titleFontSize=FONT["title"], labelLimit=320)
        .configure_header(labelFontSize=FONT["header"], titleFontSize=FONT["header"])
        .configure_title(fontSize=FONT["chart_title"])
        .configure_view(strokeWidth=0)
    )


def _require(df: pd.DataFrame, columns: Sequence[str], what: str, hint: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} needs a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {list(columns)}; missing {missing}. {hint}")
    if df.empty:
        raise ValueError(f"{what} got an empty DataFrame: nothing to plot.")


def _by_edge_group(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str], alt.Color]:
    """``table`` with an ``edge_group_label`` column, the labels in order, and the colour encoding
    that draws each edge group in its registry colour."""
    edge_groups = list(dict.fromkeys(table["edge_group"]))
    colors = edge_group_colors(edge_groups)
    labels = [edge_group_label(g) for g in edge_groups]
    color = alt.Color(
        "edge_group_label:N",
        title="knocked out",
        sort=labels,
        scale=alt.Scale(domain=labels, range=[colors[g] for g in edge_groups]),
    )
    return table.assign(edge_group_label=table["edge_group"].map(edge_group_label)), labels, color


#: How faint the marks of the tasks not clicked are drawn.
DIMMED_OPACITY = 0.15
_LEGEND_CHANNELS = ("color", "fill", "stroke", "shape", "strokeDash", "opacity", "size")
_POINT_MARKS = ("point", "circle", "square", "tick")


def task_selection(field: str = "task", legend: bool = False, name: str | None = None) -> alt.Parameter:
    """A click selection of ``field`` values (click: one, shift-click: more, double-click: none).

    ``legend=True`` binds it to the legend of ``field`` as well (clicking a legend entry selects it);
    the chart must then show ``field`` in a legend. Its name is ``highlight_<field>`` by default,
    which is what :class:`altair.JupyterChart` reports under ``chart.selections``.
    """
    return alt.selection_point(
        fields=[field], name=name or f"highlight_{field}", bind="legend" if legend else alt.Undefined
    )


def _channel_dict(channel, data) -> dict | list:
    if isinstance(channel, (list, tuple)):
        return [_channel_dict(c, data) for c in channel]
    if isinstance(channel, str):
        return alt.utils.parse_shorthand(channel)
    try:
        return channel.to_dict(validate=False, context={"data": data})
    except ValueError:  # a shorthand whose type needs the data (a layer's data is given to the layer chart)
        kwds = {k: v for k, v in getattr(channel, "_kwds", {}).items() if v is not alt.Undefined}
        shorthand = kwds.pop("shorthand", None)
        return {**kwds, **(alt.utils.parse_shorthand(shorthand) if isinstance(shorthand, str) else {})}


def _encodings(chart: alt.Chart) -> dict:
    """``chart``'s encoding channels as dicts (types left out where the data cannot tell them)."""
    channels = {} if chart.encoding is alt.Undefined else chart.encoding._kwds
    return {
        name: _channel_dict(channel, chart.data) for name, channel in channels.items() if channel is not alt.Undefined
    }


def _mark_opacity(chart: alt.Chart) -> float:
    """The opacity ``chart``'s marks are drawn with now (explicit, or Vega-Lite's default)."""
    mark = chart.mark
    mark = {"type": mark} if isinstance(mark, str) else mark.to_dict(validate=False)
    if isinstance(mark.get("opacity"), (int, float)):
        return float(mark["opacity"])
    aggregated = any(isinstance(e, dict) and "aggregate" in e for e in _encodings(chart).values())
    return 0.7 if mark.get("type") in _POINT_MARKS and not aggregated else 1.0  # Vega-Lite's defaults


def _has_legend(chart: alt.Chart, field: str) -> bool:
    return any(
        isinstance(e, dict) and e.get("field") == field and e.get("legend", {}) is not None
        for channel, e in _encodings(chart).items()
        if channel in _LEGEND_CHANNELS
    )


def highlight_on_click(
    chart: alt.Chart,
    field: str = "task",
    *,
    selection: alt.Parameter | None = None,
    legend: bool | None = None,
    dim: float = DIMMED_OPACITY,
) -> alt.Chart:
    """``chart`` (one layer: an :class:`altair.Chart`) where clicking a mark, or the legend entry, of
    one ``field`` value (a task, by default) keeps that value's marks as they are and dims the
    others to ``dim``; shift-click adds values, double-click clears. Until something is clicked
    the chart looks exactly as before.

    Args:
        selection: a :func:`task_selection` shared by several layers of one chart (default: a new one).
        legend: bind to the legend of ``field`` too (default: when ``chart`` has one).

    >>> lines = alt.Chart(df).mark_line().encode(x="layer:Q", y="share:Q", color="task:N")  # doctest: +SKIP
    >>> highlight_on_click(lines)  # click "object_count" in the legend                        # doctest: +SKIP
    """
    if not isinstance(chart, alt.Chart):
        raise TypeError(
            f"highlight_on_click takes one layer (an altair.Chart), got {type(chart).__name__}; "
            "apply it to the layer that draws the tasks, before layering or faceting"
        )
    if "opacity" in _encodings(chart):
        raise ValueError("the chart already encodes opacity; highlight_on_click needs that channel")
    if selection is None:
        selection = task_selection(field, legend=_has_legend(chart, field) if legend is None else legend)
    opacity = _mark_opacity(chart)
    return chart.add_params(selection).encode(opacity=alt.condition(selection, alt.value(opacity), alt.value(dim)))


# ----------------------------------------------------------------------- flow curves


def flow_curves(
    summary: pd.DataFrame,
    num_layers: int | None = None,
    columns: int = 3,
    width: int = 300,
    height: int = 220,
    learned: Sequence[str] | None = None,
) -> alt.FacetChart:
    """% change vs layer-window centre, one line per edge group, one panel per task.

    Args:
        summary: :func:`flowkit.analysis.sweep.summarize` output (``task``, ``edge_group``, ``center``,
            ``pct_change``; ``n`` is shown in tooltips when present), or
            :func:`flowkit.analysis.experiments.task_curves_with_ci` output, whose ``lo`` / ``hi`` are
            drawn as a band around each line (95 % bootstrap interval over questions).
        num_layers: the model's depth; the first half of the layers is shaded. Default:
            one more than the largest window centre.
        columns: panels per row.
        learned: the tasks the model has learned (:mod:`flowkit.analysis.learned`). Panels of the other
            tasks come last, titled "not learned", with faint lines: their curves average questions
            answered near chance, so they show noise.
    """
    _require(
        summary,
        ["task", "edge_group", "center", "pct_change"],
        "flow_curves",
        "Pass flowkit.analysis.sweep.summarize(sweep(...)).",
    )
    depth = int(num_layers if num_layers is not None else summary["center"].max() + 1)
    data, labels, color = _by_edge_group(summary)
    tasks = list(dict.fromkeys(data["task"]))
    if learned is not None:
        learned = set(learned)
        tasks = [t for t in tasks if t in learned] + [t for t in tasks if t not in learned]
        titles = {t: t if t in learned else f"{t} (not learned)" for t in tasks}
    else:
        titles = {t: t for t in tasks}
    data = data.assign(
        panel=data["task"].map(titles),
        style=["not learned" if learned is not None and t not in learned else "learned" for t in data["task"]],
    )
    x = alt.X("center:Q", title="window centre (layer)", scale=alt.Scale(domain=[0, depth - 1], nice=False))
    tooltip = [
        alt.Tooltip("task:N"),
        alt.Tooltip("edge_group_label:N", title="edge group"),
        alt.Tooltip("center:Q", title="centre"),
        alt.Tooltip("pct_change:Q", title="% change", format=".1f"),
    ]
    if "n" in summary.columns:
        tooltip.append(alt.Tooltip("n:Q", title="samples"))
    has_band = {"lo", "hi"} <= set(summary.columns)
    if has_band:
        tooltip += [
            alt.Tooltip("lo:Q", title="95 % low", format=".1f"),
            alt.Tooltip("hi:Q", title="95 % high", format=".1f"),
        ]
    first_half = (
        alt.Chart()
        .mark_rect(color="#BDBDBD", opacity=0.25)
        .transform_aggregate(rows="count()")
        .encode(x=alt.X(datum=0, type="quantitative"), x2=alt.datum((depth - 1) / 2))
    )
    zero = alt.Chart().mark_rule(color="#424242", strokeDash=[4, 4]).encode(y=alt.Y(datum=0, type="quantitative"))
    layers = [first_half, zero]
    y = {"field": "pct_change", "type": "quantitative", "title": "% change in p(answer)"}
    if has_band:
        layers.append(
            alt.Chart().mark_area(opacity=0.15).encode(x=x, y=alt.Y("lo:Q", title=y["title"]), y2="hi:Q", color=color)
        )  # one legend for both
    # one line layer (so a click on any curve selects its task); tasks not learned: thin and faint
    mixed = bool((data["style"] == "not learned").any())
    styles = ["learned", "not learned"]
    line = (
        alt.Chart()
        .mark_line(point=True, strokeWidth=3)
        .encode(
            x=x,
            y=alt.Y(**y),
            color=color,
            strokeDash=alt.StrokeDash("edge_group_label:N", sort=labels, legend=None),
            tooltip=tooltip,
        )
    )
    if mixed:
        line = line.encode(
            strokeWidth=alt.StrokeWidth("style:N", legend=None, scale=alt.Scale(domain=styles, range=[3, 1.5]))
        )
    shown = (
        alt.Opacity("style:N", legend=None, scale=alt.Scale(domain=styles, range=[1.0, 0.35]))
        if mixed
        else alt.value(1.0)
    )
    if summary["task"].nunique() > 1:  # click a curve: its task's panel stays, the others fade
        pick = task_selection()
        line = line.add_params(pick).encode(opacity=alt.condition(pick, shown, alt.value(DIMMED_OPACITY)))
        if has_band:
            layers[-1] = layers[-1].encode(opacity=alt.condition(pick, alt.value(0.15), alt.value(0.03)))
    elif mixed:
        line = line.encode(opacity=shown)
    chart = (
        alt.layer(*layers, line, data=data)
        .properties(width=width, height=height)
        .facet(facet=alt.Facet("panel:N", title=None, sort=[titles[t] for t in tasks]), columns=columns)
        .properties(
            title=f"Knockout in a window of layers (shaded: first half of {depth} layers"
            + ("; bands: 95 % intervals over questions" if has_band else "")
            + ")"
        )
    )
    return projector(chart)


def curves_with_band(
    table: pd.DataFrame, num_layers: int, title: str, width: int = 560, height: int = 300
) -> alt.LayerChart:
    """Mean % change vs window centre with its 95 % bootstrap band, one line per edge group.

    Args:
        table: :func:`flowkit.analysis.experiments.curves_with_ci` output (``edge_group``, ``center``,
            ``pct_change``, ``lo``, ``hi``, ``n``).
        num_layers: the model's depth (the first half of the layers is shaded).
        title: says which tasks and how many questions the curve rests on.
    """
    _require(
        table,
        ["edge_group", "center", "pct_change", "lo", "hi", "n"],
        "curves_with_band",
        "Pass flowkit.analysis.experiments.curves_with_ci(...) output.",
    )
    data, labels, color = _by_edge_group(table)
    x = alt.X("center:Q", title="window centre (layer)", scale=alt.Scale(domain=[0, num_layers - 1], nice=False))
    tooltip = [
        alt.Tooltip("edge_group_label:N", title="edge group"),
        alt.Tooltip("center:Q", title="centre"),
        alt.Tooltip("pct_change:Q", title="mean % change", format=".1f"),
        alt.Tooltip("lo:Q", title="95 % CI low", format=".1f"),
        alt.Tooltip("hi:Q", title="95 % CI high", format=".1f"),
        alt.Tooltip("n:Q", title="questions"),
    ]
    shade = (
        alt.Chart(pd.DataFrame({"x": [0], "x2": [(num_layers - 1) / 2]}))
        .mark_rect(color="#BDBDBD", opacity=0.25)
        .encode(x="x:Q", x2="x2:Q")
    )
    zero = alt.Chart(pd.DataFrame({"y": [0]})).mark_rule(color="#424242", strokeDash=[4, 4]).encode(y="y:Q")
    band = (
        alt.Chart(data)
        .mark_area(opacity=0.2)
        .encode(x=x, y=alt.Y("lo:Q", title="% change in p(answer)"), y2="hi:Q", color=color)
    )
    line = (
        alt.Chart(data)
        .mark_line(point=True, strokeWidth=3)
        .encode(
            x=x,
            y="pct_change:Q",
            color=color,
            strokeDash=alt.StrokeDash("edge_group_label:N", sort=labels, legend=None),
            tooltip=tooltip,
        )
    )
    return projector(alt.layer(shade, zero, band, line).properties(width=width, height=height, title=title))


def question_strip(troughs: pd.DataFrame, highlight: str | None = None, width: int = 560) -> alt.LayerChart:
    """Each question's deepest % change (one dot per question, one row per task); ``highlight``
    (a sample id) is drawn large, so a chosen example is seen beside its task's distribution.

    Args:
        troughs: :func:`flowkit.analysis.experiments.question_troughs` output.
    """
    _require(
        troughs,
        ["sample", "task", "pct_change"],
        "question_strip",
        "Pass flowkit.analysis.experiments.question_troughs(...) output.",
    )
    data = troughs.assign(chosen=troughs["sample"] == highlight)
    y = alt.Y("task:N", title=None)
    x = alt.X("pct_change:Q", title="deepest % change in p(answer) over the windows")
    tooltip = [
        alt.Tooltip("sample:N"),
        alt.Tooltip("task:N"),
        alt.Tooltip("pct_change:Q", format=".1f", title="% change"),
        alt.Tooltip("center:Q", title="at window centre"),
    ]
    dots = (
        alt.Chart(data[~data["chosen"]])
        .mark_circle(size=60, opacity=0.5, color=BEFORE_COLOR)
        .encode(x=x, y=y, tooltip=tooltip)
    )
    chosen = (
        alt.Chart(data[data["chosen"]])
        .mark_point(size=260, strokeWidth=3, color=OKABE_ITO["vermillion"])
        .encode(x=x, y=y, tooltip=tooltip)
    )
    if troughs["task"].nunique() > 1:  # click a dot: its task's row stays, the others fade
        pick = task_selection()
        dots, chosen = highlight_on_click(dots, selection=pick), highlight_on_click(chosen, selection=pick)
    title = "every swept question, one dot each" + (f" (circled: {highlight})" if highlight else "")
    return projector(alt.layer(dots, chosen).properties(width=width, title=title))


def lens_words(
    words_by_frame: Sequence[Sequence[dict]],
    title: str,
    frame_labels: Sequence[str] | None = None,
) -> alt.Chart:
    """The top words of each frame's video tokens as a table-like chart (one column per frame):
    what :class:`widgets.LensView` shows, for saved outputs. Words are ``{"word", "kind", ...}``."""
    rows = [
        {
            "frame": (frame_labels[f] if frame_labels else f"frame {f}"),
            "rank": r,
            "word": str(w.get("word", "")),
            "kind": w.get("kind") or "other",
        }
        for f, words in enumerate(words_by_frame)
        for r, w in enumerate(words)
    ]
    data = pd.DataFrame(rows or [{"frame": "", "rank": 0, "word": "(no words)", "kind": "other"}])
    kinds = [k for k in WORD_KIND_COLORS if k in set(data["kind"])] + ["other"]
    colors = [WORD_KIND_COLORS.get(k, "#424242") for k in kinds]
    chart = (
        alt.Chart(data)
        .mark_text(fontSize=15, align="center")
        .encode(
            x=alt.X(
                "frame:N",
                title=None,
                sort=list(dict.fromkeys(data["frame"])),
                axis=alt.Axis(orient="top", labelAngle=0),
            ),
            y=alt.Y("rank:O", title="rank", axis=None),
            text="word:N",
            tooltip=["frame:N", "word:N", "kind:N"],
            color=alt.Color("kind:N", title="words", scale=alt.Scale(domain=kinds, range=colors)),
        )
    )
    return projector(chart.properties(width=alt.Step(110), height=alt.Step(24), title=title))


def pathway_windows(
    windows: dict, num_layers: int, title: str = "effective-pathway windows (layers kept)"
) -> alt.Chart:
    """The pathway windows as bars over the layers: what :class:`widgets.PathwaySliders` holds, for saved outputs.

    ``windows`` maps a name to ``(first, last)`` (a window) or ``last`` (an "until" layer)."""
    rows = [
        {
            "window": name.replace("_", " "),
            "from": (v[0] if isinstance(v, (tuple, list)) else 0),
            "to": (v[1] if isinstance(v, (tuple, list)) else v) + 1,
        }
        for name, v in windows.items()
    ]
    rows = [{**row, "last": row["to"] - 1} for row in rows]
    chart = (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar(color=OKABE_ITO["blue"], height=18)
        .encode(
            x=alt.X("from:Q", title="layer", scale=alt.Scale(domain=[0, num_layers])),
            x2="to:Q",
            y=alt.Y("window:N", title=None, sort=None),
            tooltip=["window:N", alt.Tooltip("from:Q", title="first layer"), alt.Tooltip("last:Q", title="last layer")],
        )
    )
    return projector(chart.properties(width=520, title=title))


# ------------------------------------------------------------------------ answer bars


def _distribution_dict(dist: AnswerDistribution | dict) -> dict:
    if isinstance(dist, AnswerDistribution):
        return dist.to_dict()
    if isinstance(dist, dict) and {"letters", "probs", "option_probs"} <= set(dist):
        return dist
    raise TypeError(f"answer_bars needs an AnswerDistribution (or its to_dict()), got {type(dist).__name__}")


def answer_bars(
    before: AnswerDistribution | dict,
    after: AnswerDistribution | dict | None = None,
    scale: str = "options",
    options: Sequence[str] | None = None,
) -> alt.LayerChart:
    """p(option) per option letter, before (grey) and after (blue) a knockout; ★ marks the true option.

    Args:
        before: the clean answer (an :class:`AnswerDistribution` or its ``to_dict()``).
        after: the answer under a knockout, or None to show one distribution.
        scale: ``"options"`` (renormalised over the options, sums to 1) or ``"vocab"``
            (softmax over the whole vocabulary, what the paper's % change uses).
        options: the option texts, shown next to the letters.
    """
    if scale not in ("options", "vocab"):
        raise ValueError(f"scale must be 'options' or 'vocab', got {scale!r}")
    key = "option_probs" if scale == "options" else "probs"
    rows = []
    for when, dist in (("before", before), ("after", after)):
        if dist is None:
            continue
        d = _distribution_dict(dist)
        true = d.get("true_option")
        for i, (letter, p) in enumerate(zip(d["letters"], d[key])):
            text = f" {options[i]}" if options is not None else ""
            rows.append({"option": f"{'★ ' if i == true else ''}{letter}{text}", "when": when, "p": float(p)})
    data = pd.DataFrame(rows)
    whens = list(dict.fromkeys(data["when"]))
    title = "p(option), renormalised over the options" if scale == "options" else "p(option), whole vocabulary"
    base = alt.Chart(data).encode(
        y=alt.Y("option:N", title=None, sort=None),
        yOffset=alt.YOffset("when:N", sort=whens),
        x=alt.X("p:Q", title=title, scale=alt.Scale(domain=[0, 1]) if scale == "options" else alt.Undefined),
    )
    bars = base.mark_bar().encode(
        color=alt.Color(
            "when:N",
            title=None,
            sort=whens,
            scale=alt.Scale(domain=["before", "after"], range=[BEFORE_COLOR, AFTER_COLOR]),
        ),
        tooltip=["option:N", "when:N", alt.Tooltip("p:Q", format=".3f")],
    )
    labels = base.mark_text(align="left", dx=4, fontSize=FONT["label"]).encode(text=alt.Text("p:Q", format=".2f"))
    return projector(
        alt.layer(bars, labels).properties(width=420, height=alt.Step(28), title="Answer (★ = correct option)")
    )


def _lookup_expr(labels: dict) -> str:
    """A Vega expression giving ``labels[datum.value]`` (the tick's own value where none is given)."""
    expr = "datum.label"
    for value, label in sorted(labels.items(), reverse=True):
        text = str(label).replace("\\", "\\\\").replace("'", "\\'")
        expr = f"datum.value == {int(value)} ? '{text}' : ({expr})"
    return expr


def attention_edges(block: torch.Tensor, spans, title: str = "Attention edges (query ← key)") -> alt.Chart:
    """Every attention edge (causal query, key pair) of one prompt: kept, or cut by ``block``.

    Args:
        block: an ``(N, N)`` boolean mask, True where an edge is cut (e.g.
            :func:`flowkit.intervention.masks.edge_block_mask` or one layer of ``block_masks``).
        spans: the prompt's :class:`~flowkit.Spans`; the first position of each frame, the question
            and the last position label the axes (``f0`` ... on the keys, ``frame 0 · 3`` ... on the queries).
    """
    import torch

    block = torch.as_tensor(block).bool()
    n = block.shape[0]
    if block.shape != (n, n) or n != spans.seq_len:
        raise ValueError(f"block must be ({spans.seq_len}, {spans.seq_len}) for this prompt, got {tuple(block.shape)}")
    if n > 300:
        raise ValueError(
            f"a {n}-token prompt has too many edges to draw one by one; draw a slice, e.g. "
            "block[a:b, a:b] with matching spans, or count them with flowkit.count_edges"
        )
    query, key = torch.ones(n, n, dtype=torch.bool).tril().nonzero().T  # causal pairs only: the rest are no edges
    cut = block[query, key]
    data = pd.DataFrame({"query": query.numpy(), "key": key.numpy(), "edge": np.where(cut.numpy(), "cut", "kept")})
    names = {start: i for i, (start, _) in enumerate(spans.frame_spans)}
    short = {start: f"f{i}" for start, i in names.items()} | {spans.question_text[0]: "question", spans.last: "last"}
    long = {start: f"frame {i} · {start}" for start, i in names.items()}
    long |= {spans.question_text[0]: f"question · {spans.question_text[0]}", spans.last: f"last · {spans.last}"}
    ticks = sorted(short)
    domain = ["kept", "cut"]
    chart = (
        alt.Chart(data)
        .mark_rect()
        .encode(
            x=alt.X(
                "key:O",
                title="key position (what is read)",
                scale=alt.Scale(domain=list(range(n))),
                axis=alt.Axis(values=ticks, labelAngle=-45, labelExpr=_lookup_expr(short)),
            ),
            y=alt.Y(
                "query:O",
                title="query position (who reads)",
                scale=alt.Scale(domain=list(range(n))),
                axis=alt.Axis(values=ticks, labelExpr=_lookup_expr(long)),
            ),
            color=alt.Color(
                "edge:N",
                title=None,
                sort=domain,
                scale=alt.Scale(domain=domain, range=["#D9D9D9", OKABE_ITO["vermillion"]]),
            ),
            tooltip=["query:O", "key:O", "edge:N"],
        )
    )
    return projector(chart.properties(width=420, height=420, title=title))


# ---------------------------------------------------------------------- by layer


def prob_by_layer(df: pd.DataFrame) -> alt.LayerChart:
    """p(true option) vs p(false options) at the last position, read through the logit lens, per layer.

    Args:
        df: :func:`flowkit.analysis.lens.answer_by_layer` output (``layer``, ``prob``, ``true``),
            one frame or several concatenated (e.g. with a ``sample`` column). The lines
            are means over samples (and over false options); the band is their 95 % CI.
    """
    _require(df, ["layer", "prob", "true"], "prob_by_layer", "Pass flowkit.analysis.lens.answer_by_layer(...) output.")
    data = df.assign(option=df["true"].map({True: "true option", False: "false options"}))
    domain = ["true option", "false options"]
    color = alt.Color(
        "option:N",
        title=None,
        sort=domain,
        scale=alt.Scale(domain=domain, range=[OKABE_ITO["bluish_green"], OKABE_ITO["vermillion"]]),
    )
    x = alt.X("layer:Q", title="layer")
    title = "p(option) at the last position"
    line = (
        alt.Chart(data)
        .mark_line(point=True, strokeWidth=3)
        .encode(
            x=x,
            y=alt.Y("mean(prob):Q", title=title),
            color=color,
            strokeDash=alt.StrokeDash("option:N", sort=domain, legend=None),
            tooltip=["layer:Q", "option:N", alt.Tooltip("mean(prob):Q", format=".3f", title="mean p")],
        )
    )
    band = (
        alt.Chart(data)
        .mark_errorband(extent="ci", opacity=0.2)
        .encode(x=x, y=alt.Y("prob:Q", title=title), color=color)
    )
    return projector(
        alt.layer(band, line).properties(width=520, height=300, title="When is the answer ready? (logit lens)")
    )


#: How each emergence readout is named in charts and tables.
READOUT_TITLES = {
    "paper": "paper's readout (no final norm before the last layer)",
    "logit_lens": "logit lens (final norm at every layer)",
    "options": "logit lens, renormalised over the options",
    "tuned_lens": "tuned lens",
}


def emergence_by_readout(df: pd.DataFrame, threshold: float = 0.5) -> alt.LayerChart:
    """Mean p(true option) at the last position per layer under each readout, with 95 % bootstrap
    bands over questions (computed here, so the picture is the same on every run) and the 0.5 line.

    Args:
        df: the stored ``emergence`` table (:func:`flowkit.analysis.experiments.answer_emergence` with
            ``readouts=``): ``readout``, ``layer``, ``p_true``, one row per question and layer.
    """
    from flowkit.analysis.stats import mean_with_ci

    _require(
        df, ["readout", "layer", "p_true"], "emergence_by_readout", "Pass answer_emergence(..., readouts=...) output."
    )
    data = mean_with_ci(df, ["readout", "layer"], "p_true")
    data["readout"] = data["readout"].map(lambda r: READOUT_TITLES.get(r, r))
    domain = [READOUT_TITLES.get(r, r) for r in dict.fromkeys(df["readout"])]
    palette = [OKABE_ITO[c] for c in ("bluish_green", "vermillion", "blue", "reddish_purple", "orange", "sky_blue")]
    color = alt.Color(
        "readout:N",
        title="readout",
        sort=domain,
        scale=alt.Scale(domain=domain, range=palette[: len(domain)]),
        legend=alt.Legend(orient="bottom", columns=1, labelLimit=400),
    )
    x = alt.X("layer:Q", title="layer (the stream leaving it)")
    y_title = "mean p(true option)"
    band = alt.Chart(data).mark_area(opacity=0.15).encode(x=x, y=alt.Y("lo:Q", title=y_title), y2="hi:Q", color=color)
    line = (
        alt.Chart(data)
        .mark_line(point=True, strokeWidth=2.5)
        .encode(
            x=x,
            y=alt.Y("p_true:Q", title=y_title, scale=alt.Scale(domain=[0, 1])),
            color=color,
            tooltip=[
                "readout:N",
                "layer:Q",
                alt.Tooltip("p_true:Q", format=".3f"),
                alt.Tooltip("lo:Q", format=".3f"),
                alt.Tooltip("hi:Q", format=".3f"),
            ],
        )
    )
    rule = alt.Chart(pd.DataFrame({"y": [threshold]})).mark_rule(strokeDash=[4, 4], color="gray").encode(y="y:Q")
    return projector(
        alt.layer(band, line, rule).properties(
            width=560, height=320, title="When is the answer ready? The same questions, four readouts (bands: 95 % CI)"
        )
    )


def lens_shares(df: pd.DataFrame, bag_temporal_share: float | None = None) -> alt.Chart:
    """Share of spatial vs temporal words among the top lens words of video tokens, per layer.

    Args:
        df: :func:`flowkit.analysis.lens.word_shares` output (``layer``, ``kind``, ``share``); a
            ``sample`` column (several samples concatenated) is averaged over.
        bag_temporal_share: the temporal words' share of the word list itself
            (:func:`flowkit.analysis.experiments.lens_bag_temporal_share`), drawn as a grey dashed line
            labelled on the chart (not a series): the temporal share a lens picking words at random would show.
    """
    _require(df, ["layer", "kind", "share"], "lens_shares", "Pass flowkit.analysis.lens.word_shares(...) output.")
    kinds = [k for k in WORD_KIND_COLORS if k in set(df["kind"])]
    color = alt.Color(
        "kind:N", title="words", sort=kinds, scale=alt.Scale(domain=kinds, range=[WORD_KIND_COLORS[k] for k in kinds])
    )
    chart = (
        alt.Chart(df)
        .mark_line(point=True, strokeWidth=3)
        .encode(
            x=alt.X("layer:Q", title="layer"),
            y=alt.Y("mean(share):Q", title="share of top words", axis=alt.Axis(format="%")),
            color=color,
            strokeDash=alt.StrokeDash("kind:N", sort=kinds, legend=None),
            tooltip=["layer:Q", "kind:N", alt.Tooltip("mean(share):Q", format=".1%")],
        )
    )
    if bag_temporal_share is not None:
        label = f"baseline (words picked at random): {bag_temporal_share:.0%}"
        reference = alt.Chart(
            pd.DataFrame({"share": [bag_temporal_share], "label": [label], "layer": [float(df["layer"].min())]})
        )
        chart = alt.layer(
            chart,
            reference.mark_rule(color="#555555", strokeDash=[2, 2], strokeWidth=2).encode(
                y="share:Q", tooltip=["label:N"]
            ),
            reference.mark_text(
                align="left", baseline="bottom", dy=-4, fontSize=FONT["label"] - 2, color="#555555"
            ).encode(x="layer:Q", y="share:Q", text="label:N"),
        )
    return projector(chart.properties(width=520, height=300, title="What do video tokens say? (lens)"))


def accuracy_bars(df: pd.DataFrame) -> alt.Chart:
    """Accuracy per condition (e.g. full model / effective pathways / random mask), one panel per task.

    Args:
        df: ``condition`` and ``accuracy`` (0..1) columns, one row per condition (and
            ``task`` if present, which gives one panel per task); ``lo`` and ``hi`` (0..1), when
            present, are drawn as an interval on each bar (e.g. a 95 % bootstrap interval).
    """
    _require(
        df,
        ["condition", "accuracy"],
        "accuracy_bars",
        "One row per condition with its accuracy in 0..1 (optionally per task).",
    )
    conditions = list(dict.fromkeys(df["condition"]))
    palette = list(_SPARE_COLORS[4:]) + list(_SPARE_COLORS[:4])
    colors = [palette[i % len(palette)] for i in range(len(conditions))]
    color = alt.Color("condition:N", sort=conditions, legend=None, scale=alt.Scale(domain=conditions, range=colors))
    base = alt.Chart(df).encode(
        x=alt.X("condition:N", title=None, sort=conditions, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
    )
    has_interval = {"lo", "hi"} <= set(df.columns)
    tooltip = (
        (["task:N"] if "task" in df.columns else [])
        + ["condition:N", alt.Tooltip("accuracy:Q", format=".1%")]
        + (
            [alt.Tooltip("lo:Q", format=".1%", title="95 % low"), alt.Tooltip("hi:Q", format=".1%", title="95 % high")]
            if has_interval
            else []
        )
    )
    bars = base.mark_bar().encode(color=color, tooltip=tooltip)
    text = base.mark_text(dy=-10, dx=-22 if has_interval else 0, fontSize=FONT["label"]).encode(
        text=alt.Text("accuracy:Q", format=".1%")
    )
    layers = [bars, text]
    if has_interval:
        layers.append(base.mark_rule(color="#212121", strokeWidth=2).encode(y="lo:Q", y2="hi:Q"))
    if "task" in df.columns and df["task"].nunique() > 1:  # click a bar: its task's panel stays, the others fade
        pick = task_selection()
        layers = [highlight_on_click(layer, selection=pick) for layer in layers]
    chart = alt.layer(*layers).properties(width=alt.Step(110), height=280)
    if "task" in df.columns:
        chart = chart.facet(column=alt.Column("task:N", title=None))
    title = "Accuracy (black line: 95 % interval)" if has_interval else "Accuracy"
    return projector(chart.properties(title=title))


def faithfulness_curve(df: pd.DataFrame) -> alt.LayerChart:
    """Accuracy (with intervals) against the share of edges suppressed, one chart for every kind of mask.

    Args:
        df: :func:`flowkit.analysis.pathway_search.faithfulness_curve`'s table: ``family``
            (``search``, ``window rule``, ``paper windows``, ``random``, ``full``), ``label``,
            ``suppressed_share`` and ``accuracy`` (0..1), ``lo`` / ``hi`` (the 95 % interval).
            The search's path and the random masks are drawn as lines, every mask as a point
            with its interval.
    """
    _require(
        df,
        ["family", "label", "suppressed_share", "accuracy", "lo", "hi"],
        "faithfulness_curve",
        "Use flowkit.analysis.pathway_search.faithfulness_curve(...) to build the table.",
    )
    families = list(dict.fromkeys(df["family"]))
    colors = [_SPARE_COLORS[i % len(_SPARE_COLORS)] for i in range(len(families))]
    color = alt.Color("family:N", title="masks", sort=families, scale=alt.Scale(domain=families, range=colors))
    x = alt.X("suppressed_share:Q", title="edges suppressed", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"))
    y = alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"))
    tooltip = [
        "family:N",
        "label:N",
        alt.Tooltip("suppressed_share:Q", format=".1%", title="suppressed"),
        alt.Tooltip("accuracy:Q", format=".1%"),
        alt.Tooltip("lo:Q", format=".1%", title="95 % low"),
        alt.Tooltip("hi:Q", format=".1%", title="95 % high"),
    ]
    base = alt.Chart(df).encode(x=x, color=color)
    points = base.mark_point(filled=True, size=60).encode(y=y, tooltip=tooltip)
    intervals = base.mark_rule().encode(y="lo:Q", y2="hi:Q")
    lines = (
        base.transform_filter(alt.FieldOneOfPredicate(field="family", oneOf=["search", "random"]))
        .mark_line(opacity=0.6)
        .encode(y=y, detail="family:N")
    )
    chart = alt.layer(lines, intervals, points).properties(width=520, height=300)
    return projector(chart.properties(title="Faithfulness: accuracy against edges suppressed (95 % intervals)"))


def kept_by_layout(df: pd.DataFrame, current: int | None = None, paper_kept: float | None = None) -> alt.LayerChart:
    """Share of edges a pathway mask keeps against video tokens per frame, one prompt re-laid out.

    Args:
        df: :func:`flowkit.analysis.pathways.kept_share_by_layout`'s table (``tokens_per_frame``,
            ``prompt_len``, ``kept_share``): the paper's windows on this kit's prompt at each layout.
        current: this model's tokens per frame, ringed and labelled on the line.
        paper_kept: the share the paper's mask keeps on the paper's own prompt (8 x 144 video tokens
            and its long system prompt, 32 layers; :func:`flowkit.analysis.pathways.paper_prompt_kept_share`),
            drawn as a separate labelled diamond at 144.
    """
    _require(
        df,
        ["tokens_per_frame", "prompt_len", "kept_share"],
        "kept_by_layout",
        "Use flowkit.analysis.pathways.kept_share_by_layout(spans, num_layers) to build the table.",
    )
    ticks = sorted(int(t) for t in df["tokens_per_frame"])
    x = alt.X(
        "tokens_per_frame:Q",
        title="video tokens per frame (log scale)",
        scale=alt.Scale(type="log", domain=[min(ticks) * 0.8, max(ticks) * 1.25], nice=False),
        axis=alt.Axis(values=ticks, format="d"),
    )
    y = alt.Y("kept_share:Q", title="edges kept", scale=alt.Scale(domain=[0.3, 1]), axis=alt.Axis(format="%"))
    tooltip = [
        alt.Tooltip("tokens_per_frame:Q", title="tokens per frame"),
        alt.Tooltip("prompt_len:Q", title="prompt tokens"),
        alt.Tooltip("kept_share:Q", format=".1%", title="edges kept"),
    ]
    blue = OKABE_ITO["blue"]
    line = alt.Chart(df).mark_line(point=True, strokeWidth=3, color=blue).encode(x=x, y=y, tooltip=tooltip)
    labels = (
        alt.Chart(df)
        .mark_text(dy=-12, fontSize=FONT["label"] - 3, color=blue)
        .encode(x=x, y=y, text=alt.Text("kept_share:Q", format=".0%"))
    )
    layers = [line, labels]
    if current is not None and current in ticks:
        here = df[df["tokens_per_frame"] == current].assign(label=f"this model: {current} per frame")
        ring = alt.Chart(here).mark_point(size=400, strokeWidth=2.5, color="#212121").encode(x=x, y=y)
        text = (
            alt.Chart(here)
            .mark_text(align="left", dx=20, dy=-22, fontSize=FONT["label"] - 2, color="#212121")
            .encode(x=x, y=y, text="label:N")
        )
        layers += [ring, text]
    if paper_kept is not None:
        paper = pd.DataFrame(
            {"tokens_per_frame": [144], "kept_share": [paper_kept], "label": [f"paper's own prompt: {paper_kept:.1%}"]}
        )
        vermillion = OKABE_ITO["vermillion"]
        layers += [
            alt.Chart(paper).mark_point(shape="diamond", filled=True, size=220, color=vermillion).encode(x=x, y=y),
            alt.Chart(paper)
            .mark_text(align="right", dx=8, dy=-36, fontSize=FONT["label"] - 2, color=vermillion)
            .encode(x=x, y=y, text="label:N"),
        ]
    chart = alt.layer(*layers).properties(width=520, height=300)
    return projector(
        chart.properties(title="The paper's pathway mask on this prompt: edges kept vs video tokens per frame")
    )


def prediction(setup: dict, guess: dict | None = None, result: dict | None = None, title: str = "") -> alt.LayerChart:
    """A predict-then-reveal picture: the axes, the student's guess (an orange cross) and, once revealed,
    the curve with its 95 % band and the point asked about (a black ring).

    Args:
        setup: :meth:`flowkit.course.predictions.CurveQuestion.setup`.
        guess: ``{"x", "y"}`` (None: no guess yet).
        result: :meth:`~flowkit.course.predictions.CurveQuestion.reveal` (None: not revealed; the
            picture then shows no data).
    """
    x = alt.X("x:Q", title=setup["x_title"], scale=alt.Scale(domain=setup["x_domain"], nice=False))
    y = alt.Y("y:Q", title=setup["y_title"], scale=alt.Scale(domain=setup["y_domain"], nice=False))
    frame = pd.DataFrame({"x": setup["x_domain"], "y": setup["y_domain"]})
    layers = [alt.Chart(frame).mark_point(opacity=0).encode(x=x, y=y)]
    if setup.get("at") is not None:
        layers.append(
            alt.Chart(pd.DataFrame({"x": [setup["at"]]})).mark_rule(strokeDash=[6, 4], color="#555").encode(x=x)
        )
    if result is not None:
        points = pd.DataFrame(result["points"])
        if {"lo", "hi"} <= set(points.columns):
            layers.append(alt.Chart(points).mark_area(opacity=0.2, color=AFTER_COLOR).encode(x=x, y="lo:Q", y2="hi:Q"))
        layers.append(alt.Chart(points).mark_line(point=True, color=AFTER_COLOR).encode(x=x, y=y))
        truth = pd.DataFrame([result["truth"]])
        layers.append(alt.Chart(truth).mark_point(size=400, color="black", strokeWidth=3).encode(x=x, y=y))
        guess = result["guess"]
    if guess is not None:
        layers.append(
            alt.Chart(pd.DataFrame([guess]))
            .mark_point(shape="cross", size=400, filled=True, color=OKABE_ITO["orange"])
            .encode(x=x, y=y)
        )
    if not title:
        title = "revealed: the curve (blue), your guess (orange cross)" if result else setup["prompt"]
    return projector(alt.layer(*layers).properties(width=520, height=300, title=title))


def gate_map(df: pd.DataFrame, title: str = "Which gates the search kept") -> alt.Chart:
    """One cell per gate (edge group x layer): kept or cut, with the attribution score in the tooltip.

    Args:
        df: :func:`flowkit.analysis.pathway_search.gate_table`'s table: ``edges``, ``layer``,
            ``kept`` and optionally ``score`` / ``agree``.
    """
    _require(
        df,
        ["edges", "layer", "kept"],
        "gate_map",
        "Use flowkit.analysis.pathway_search.gate_table(found_spec, num_layers, scores) to build the table.",
    )
    data = df.assign(
        status=np.where(df["kept"], "kept", "cut"),
        group=[e.replace("->", " → ").replace("_", " ") for e in df["edges"]],
    )
    order = list(dict.fromkeys(data["group"]))
    tooltip = ["group:N", "layer:O", "status:N"]
    if "score" in data:
        tooltip += [
            alt.Tooltip("score:Q", format=".3g"),
            alt.Tooltip("agree:Q", format=".0%", title="questions agreeing"),
        ]
    chart = (
        alt.Chart(data)
        .mark_rect(stroke="white", strokeWidth=0.5)
        .encode(
            x=alt.X("layer:O", title="layer"),
            y=alt.Y("group:N", title=None, sort=order),
            color=alt.Color(
                "status:N",
                title="gate",
                scale=alt.Scale(domain=["kept", "cut"], range=[OKABE_ITO["blue"], "#e6e6e6"]),
            ),
            tooltip=tooltip,
        )
        .properties(width=560, height=22 * len(order), title=title)
    )
    return projector(chart)


# -------------------------------------------------------------------------- export


def png_base64(chart, scale: float = 1.0) -> str:
    """Base64 PNG of an altair chart (or its spec dict), rendered here by vl-convert: no browser, no network."""
    import base64

    import vl_convert as vlc

    spec = chart if isinstance(chart, dict) else chart.to_dict()
    return base64.b64encode(vlc.vegalite_to_png(_drawable_text(spec), scale=scale)).decode("ascii")


#: characters the PNG renderer's fonts lack, written with ones they have ("↛" came out as "→/")
PNG_TEXT = {"↛": "-/->"}


def _drawable_text(value):
    """``value`` (a chart spec, with its data) with every string's :data:`PNG_TEXT` characters replaced."""
    if isinstance(value, str):
        for missing, drawable in PNG_TEXT.items():
            value = value.replace(missing, drawable)
        return value
    if isinstance(value, dict):
        return {key: _drawable_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_drawable_text(item) for item in value]
    return value


def _png_renderer(spec: dict, scale: float = 1.0, **_metadata) -> dict:
    title = spec.get("title")
    title = title.get("text") if isinstance(title, dict) else title
    return {"image/png": png_base64(spec, scale=scale), "text/plain": f"<chart{': ' + str(title) if title else ''}>"}


def enable_offline_charts(scale: float = 1.0) -> None:
    """Show Altair charts as PNG images rendered here by vl-convert.

    Altair's default notebook renderer loads Vega from a CDN, which fails in an offline
    classroom; a PNG needs nothing and also shows on GitHub's notebook viewer.
    """
    alt.renderers.register("flowkit-png", lambda spec, **metadata: _png_renderer(spec, scale=scale, **metadata))
    alt.renderers.enable("flowkit-png")


def save_png(chart: alt.TopLevelMixin, path: str | os.PathLike, scale: float = 2.0) -> Path:
    """Write ``chart`` as a PNG (rendered by vl-convert, no browser or network needed)."""
    import base64

    from flowkit.atomic_files import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = base64.b64decode(png_base64(chart, scale=scale))
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(png)
    return path


__all__ = [
    "png_base64",
    "AFTER_COLOR",
    "BEFORE_COLOR",
    "DIMMED_OPACITY",
    "EDGE_GROUP_COLORS",
    "OKABE_ITO",
    "WORD_KIND_COLORS",
    "accuracy_bars",
    "attention_edges",
    "enable_offline_charts",
    "highlight_on_click",
    "task_selection",
    "answer_bars",
    "edge_group_colors",
    "edge_group_label",
    "flow_curves",
    "kept_by_layout",
    "lens_shares",
    "prob_by_layer",
    "projector",
    "save_png",
]
