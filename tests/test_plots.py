"""flowkit.views.plots: the chart specs (``chart.to_dict()``), not pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowkit.views import plots
from flowkit.prompts.readout import AnswerDistribution

EDGE_GROUPS = ["cross_frame", "video->question", "question->last"]


def summary_frame(num_layers=6, tasks=("action_antonym", "object_count")):
    rows = [
        {"task": task, "edge_group": edge_group, "center": c, "pct_change": -5.0 * c + i, "n": 3}
        for task in tasks
        for i, edge_group in enumerate(EDGE_GROUPS)
        for c in range(num_layers)
    ]
    return pd.DataFrame(rows)


def rows_of(spec: dict) -> list[dict]:
    """All inline data rows of a chart dict (altair moves them to ``datasets``)."""
    return [row for rows in spec.get("datasets", {}).values() for row in rows]


def marks(spec: dict) -> list[str]:
    layers = spec.get("spec", spec).get("layer", [])
    return [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in layers]


def test_flow_curves_facets_tasks_with_a_line_per_edge_group_a_zero_line_and_the_first_half_shaded():
    spec = plots.flow_curves(summary_frame(), num_layers=32).to_dict()
    assert spec["facet"]["field"] == "panel"  # the task's name (marked when it is not learned)
    assert marks(spec) == ["rect", "rule", "line"]
    rect, zero, line = spec["spec"]["layer"]
    assert rect["encoding"]["x"]["datum"] == 0 and rect["encoding"]["x2"]["datum"] == 15.5  # layers 0..15 of 32
    assert zero["encoding"]["y"]["datum"] == 0
    assert line["encoding"]["x"]["field"] == "center" and line["encoding"]["y"]["field"] == "pct_change"
    scale = line["encoding"]["color"]["scale"]
    assert scale["domain"] == ["cross-frame", "video ↛ question", "question ↛ last"]
    assert scale["range"] == [plots.EDGE_GROUP_COLORS[g] for g in EDGE_GROUPS]
    assert {r["task"] for r in rows_of(spec)} == {"action_antonym", "object_count"}
    assert "32 layers" in spec["title"]
    assert spec["config"]["axis"]["labelFontSize"] >= 16  # readable on a projector


def test_flow_curves_draw_bands_and_set_tasks_not_learned_apart():
    frame = summary_frame()
    frame = frame.assign(lo=frame["pct_change"] - 1, hi=frame["pct_change"] + 1)
    spec = plots.flow_curves(frame, num_layers=32, learned=["object_count"]).to_dict()
    assert marks(spec) == ["rect", "rule", "area", "line"]  # the band, then one line layer
    area, line = spec["spec"]["layer"][2:]
    assert area["encoding"]["y"]["field"] == "lo" and area["encoding"]["y2"]["field"] == "hi"
    opacity = line["encoding"]["opacity"]  # clicked task (or none): by style; the others dimmed
    assert opacity["condition"]["field"] == "style" and opacity["condition"]["scale"]["range"] == [1.0, 0.35]
    assert opacity["value"] == plots.DIMMED_OPACITY
    assert [p["name"] for p in spec.get("params", [])] and "views" in spec["params"][0]  # one click selection
    panels = {r["task"]: r["panel"] for r in rows_of(spec)}
    assert panels == {"object_count": "object_count", "action_antonym": "action_antonym (not learned)"}
    assert spec["facet"]["sort"] == ["object_count", "action_antonym (not learned)"]  # learned tasks first
    assert "95 % intervals" in spec["title"]


def test_flow_curves_infers_depth_and_refuses_wrong_input():
    spec = plots.flow_curves(summary_frame(num_layers=6)).to_dict()
    assert spec["spec"]["layer"][0]["encoding"]["x2"]["datum"] == 2.5
    with pytest.raises(ValueError, match="missing \\['pct_change'\\]"):
        plots.flow_curves(summary_frame().drop(columns="pct_change"))
    with pytest.raises(ValueError, match="empty"):
        plots.flow_curves(summary_frame().iloc[:0])


def test_edge_group_colors_are_fixed_for_named_edge_groups_and_distinct_for_others():
    colors = plots.edge_group_colors(["question->last", "frame:0->frame:1", "prefix->last"])
    assert colors["question->last"] == plots.EDGE_GROUP_COLORS["question->last"]
    assert len(set(colors.values())) == 3
    assert set(colors.values()) <= set(plots.OKABE_ITO.values())


def test_answer_bars_show_before_and_after_with_the_true_option_starred():
    before = AnswerDistribution((0.1, 0.3), (0.25, 0.75), 1, true_option=1)
    after = AnswerDistribution((0.2, 0.1), (0.6, 0.4), 0, true_option=1)
    spec = plots.answer_bars(before, after, options=["left", "right"]).to_dict()
    rows = {(r["option"], r["when"]): r["p"] for r in rows_of(spec)}
    assert rows == {
        ("A left", "before"): 0.25,
        ("★ B right", "before"): 0.75,
        ("A left", "after"): 0.6,
        ("★ B right", "after"): 0.4,
    }
    bars = spec["layer"][0]
    assert bars["encoding"]["color"]["scale"]["range"] == [plots.BEFORE_COLOR, plots.AFTER_COLOR]
    vocab = plots.answer_bars(before.to_dict(), scale="vocab").to_dict()
    assert sorted(r["p"] for r in rows_of(vocab)) == [0.1, 0.3]
    with pytest.raises(ValueError, match="scale"):
        plots.answer_bars(before, scale="logits")
    with pytest.raises(TypeError, match="AnswerDistribution"):
        plots.answer_bars([0.1, 0.3])


def test_prob_by_layer_plots_true_against_false_options():
    df = pd.DataFrame(
        [
            (layer, letter, 0.1 * layer if letter == "B" else 0.05, letter == "B")
            for layer in range(4)
            for letter in "ABC"
        ],
        columns=["layer", "letter", "prob", "true"],
    )
    spec = plots.prob_by_layer(df).to_dict()
    assert marks(spec) == ["errorband", "line"]
    line = spec["layer"][1]
    assert line["encoding"]["y"]["aggregate"] == "mean" and line["encoding"]["y"]["field"] == "prob"
    assert line["encoding"]["color"]["scale"]["domain"] == ["true option", "false options"]
    assert {r["option"] for r in rows_of(spec)} == {"true option", "false options"}
    with pytest.raises(ValueError, match="missing \\['true'\\]"):
        plots.prob_by_layer(df.drop(columns="true"))


def test_lens_shares_colours_spatial_and_temporal_words():
    df = pd.DataFrame(
        [(layer, kind, 0.1 * layer) for layer in range(3) for kind in ("spatial", "temporal")],
        columns=["layer", "kind", "share"],
    )
    spec = plots.lens_shares(df).to_dict()
    color = spec["encoding"]["color"]
    assert color["scale"]["domain"] == ["spatial", "temporal"]
    assert color["scale"]["range"] == [plots.WORD_KIND_COLORS["spatial"], plots.WORD_KIND_COLORS["temporal"]]
    assert spec["encoding"]["y"]["aggregate"] == "mean"


def test_accuracy_bars_with_and_without_tasks():
    df = pd.DataFrame({"condition": ["full", "pathways", "random"], "accuracy": [0.5, 0.49, 0.3]})
    single = plots.accuracy_bars(df).to_dict()
    assert marks(single) == ["bar", "text"]
    assert single["layer"][0]["encoding"]["x"]["sort"] == ["full", "pathways", "random"]
    faceted = plots.accuracy_bars(pd.concat([df.assign(task="a"), df.assign(task="b")])).to_dict()
    assert faceted["facet"]["column"]["field"] == "task"
    with pytest.raises(ValueError, match="accuracy"):
        plots.accuracy_bars(df.drop(columns="accuracy"))


def test_save_png_writes_a_png(tmp_path):
    df = pd.DataFrame({"condition": ["full", "random"], "accuracy": [0.5, 0.3]})
    path = plots.save_png(plots.accuracy_bars(df), tmp_path / "figures" / "accuracy.png", scale=1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_with_band_and_question_strip_show_intervals_and_the_chosen_question():
    import pandas as pd

    from flowkit.analysis.experiments import curves_with_ci, question_troughs
    from flowkit.views.plots import curves_with_band, question_strip

    rows = []
    for q in range(6):
        for center in range(4):
            rows.append(
                {
                    "sample": f"t/{q}",
                    "task": "t" if q < 4 else "u",
                    "edge_group": "cross_frame",
                    "center": center,
                    "pct_change": -10.0 * (center == 1) - q,
                    "correct_base": q != 3,
                }
            )
    flows = pd.DataFrame(rows)
    table = curves_with_ci(flows, tasks=["t"])
    assert set(table["n"]) == {3}  # question 3 was answered wrongly, task u is not asked for
    at1 = table.set_index("center").loc[1]
    assert at1["pct_change"] == pytest.approx(-11.0) and at1["lo"] <= -11.0 <= at1["hi"]
    spec = curves_with_band(table, num_layers=4, title="learned tasks").to_dict()
    assert any(layer.get("mark", {}).get("type") == "area" for layer in spec["layer"])  # the band is drawn
    troughs = question_troughs(flows, "cross_frame")
    assert len(troughs) == 5 and troughs.set_index("sample").loc["t/2", "center"] == 1
    strip = question_strip(troughs, highlight="t/2").to_dict()
    assert len(strip["layer"]) == 2


# ------------------------------------------------------------- highlight and interactive charts


def troughs_frame(tasks=("a", "b")):
    return pd.DataFrame(
        {
            "sample": [f"s{i}" for i in range(8)],
            "task": [tasks[i % len(tasks)] for i in range(8)],
            "pct_change": [-10.0 * i for i in range(8)],
            "center": list(range(8)),
        }
    )


def highlight_param(spec: dict) -> dict:
    (param,) = [p for p in spec.get("params", []) if p["name"] == "highlight_task"]
    return param


def opacity_conditions(spec: dict) -> list[dict]:
    """Every opacity encoding of the chart's layers (through facets and layers)."""
    found, stack = [], [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            opacity = node.get("encoding", {}).get("opacity") if isinstance(node.get("encoding"), dict) else None
            if opacity:
                found.append(opacity)
            stack.extend(v for k, v in node.items() if k in ("spec", "layer", "facet", "hconcat", "vconcat", "concat"))
        elif isinstance(node, list):
            stack.extend(node)
    return found


def test_charts_with_several_tasks_highlight_the_clicked_task():
    flow = plots.flow_curves(summary_frame()).to_dict()
    param = highlight_param(flow)
    assert param["select"] == {"type": "point", "fields": ["task"]}
    (opacity,) = opacity_conditions(flow)  # only the curves fade, not the shading or the zero line
    assert opacity == {"condition": {"param": "highlight_task", "value": 1.0}, "value": plots.DIMMED_OPACITY}
    line = flow["spec"]["layer"][2]
    assert {"field": "task", "type": "nominal"} in line["encoding"]["tooltip"]
    strip = plots.question_strip(troughs_frame(), highlight="s3").to_dict()
    assert highlight_param(strip)["select"]["fields"] == ["task"]
    # the grey dots keep their 0.5, the circled question Vega-Lite's 0.7 for points
    assert sorted(o["condition"]["value"] for o in opacity_conditions(strip)) == [0.5, 0.7]
    accuracy = pd.DataFrame(
        {"condition": ["full", "random"] * 2, "accuracy": [0.5, 0.3, 0.6, 0.2], "task": ["a", "a", "b", "b"]}
    )
    bars = plots.accuracy_bars(accuracy).to_dict()
    assert highlight_param(bars) and len(opacity_conditions(bars)) == 2  # bars and their labels
    # one task: nothing to pick
    assert "params" not in plots.flow_curves(summary_frame(tasks=("only",))).to_dict()
    assert "params" not in plots.question_strip(troughs_frame(tasks=("only",))).to_dict()


def test_highlight_on_click_binds_the_legend_and_keeps_the_look_until_something_is_clicked():
    import altair as alt
    import vl_convert as vlc

    df = pd.DataFrame({"x": [0, 1, 0, 1], "y": [1, 2, 2, 3], "task": ["a", "a", "b", "b"]})
    line = alt.Chart(df).mark_line(point=True).encode(x="x:Q", y="y:Q", color="task:N")
    assert plots.highlight_on_click(line).to_dict()["params"][0]["bind"] == "legend"
    dots = alt.Chart(df).mark_point(size=200).encode(x="x:Q", y="task:N")  # no task legend: click the marks
    assert "bind" not in plots.highlight_on_click(dots).to_dict()["params"][0]
    with pytest.raises(TypeError, match="one layer"):
        plots.highlight_on_click(alt.layer(line, dots))
    with pytest.raises(ValueError, match="opacity"):
        plots.highlight_on_click(line.encode(opacity="y:Q"))
    # lines, points at Vega-Lite's default opacity (0.7) and circles at their own: drawn as before
    layers = [line, dots.encode(y="y:Q"), alt.Chart(df).mark_circle(opacity=0.4, size=300).encode(x="x:Q", y="y:Q")]
    pick = plots.task_selection()
    lit = alt.layer(*[plots.highlight_on_click(layer, selection=pick) for layer in layers])
    assert vlc.vegalite_to_png(alt.layer(*layers).to_dict(), scale=1) == vlc.vegalite_to_png(lit.to_dict(), scale=1)


def test_more_charts_have_tooltips():
    df = pd.DataFrame(
        [(layer, letter, 0.1, letter == "B") for layer in range(3) for letter in "AB"],
        columns=["layer", "letter", "prob", "true"],
    )
    assert "tooltip" in plots.prob_by_layer(df).to_dict()["layer"][1]["encoding"]
    assert "tooltip" in plots.pathway_windows({"early": (0, 3), "until": 5}, num_layers=8).to_dict()["encoding"]


def test_interactive_chart_bundle_is_a_widget_view_and_a_png_and_small():
    import base64
    import json

    from widgets import OfflineChart, interactive

    chart = plots.flow_curves(summary_frame())
    assert interactive(chart) is chart  # no Jupyter kernel here: the static chart
    widget = interactive(chart, live=True)
    assert isinstance(widget, OfflineChart) and widget.selections.highlight_task.value == []
    data, _metadata = widget._repr_mimebundle_()
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == widget.model_id
    png = base64.b64decode(data["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["text/plain"].startswith("<interactive chart: Knockout in a window")  # no memory address
    output = json.dumps(data)
    assert len(output) < 120_000, f"the saved output is {len(output)} bytes"
    assert "$schema" not in output and "pct_change" not in output and "vega" not in output.lower()
    # saved widget state holds the chart spec and a small loader: not the Vega bundle, not the PNG again
    state = widget.get_state()
    assert len(state["_esm"]) < 10_000 and len(json.dumps(state)) < 30_000, len(json.dumps(state))


def test_offline_esm_references_no_cdn():
    import re

    import altair as alt

    from widgets.offline_chart import OfflineChart, offline_bundle

    loader = str(OfflineChart._esm)  # the file offline_chart.js
    assert "http" not in loader and "import(url)" in loader
    bundle = offline_bundle()
    assert alt.JupyterChart._is_offline and bundle == str(alt.JupyterChart._esm)
    assert len(bundle) > 300_000  # vega, vega-lite and vega-embed themselves
    for cdn in ("cdn.jsdelivr", "unpkg", "esm.sh", "cdnjs", "skypack"):
        assert cdn not in bundle and cdn not in loader
    assert not re.search(r"""\bimport\s*(\(\s*)?["'`]https?:|\bfrom\s*["'`]https?:""", bundle)
    # the URLs left are XML namespaces and links in messages, never fetched
    urls = set(re.findall(r"""https?://[^\s"'`)<>\\]+""", bundle))
    allowed = ("http://www.w3.org/", "https://vega.github.io/", "https://github.com/vega/")
    assert all(url.startswith(allowed) for url in urls), sorted(u for u in urls if not u.startswith(allowed))
    # what the page imports is what the kernel sends
    widget = OfflineChart(alt.Chart(pd.DataFrame({"x": [1]})).mark_point().encode(x="x:Q"))
    reply, buffers = OfflineChart.vega_bundle(widget, {"id": widget._bundle_id}, [])
    assert reply == {"id": widget._bundle_id} and buffers[0].decode() == bundle


def test_emergence_by_readout_draws_each_readout_with_its_band_and_the_threshold():
    from flowkit.views.plots import READOUT_TITLES, emergence_by_readout

    rng = np.random.default_rng(0)
    rows = [
        {"readout": r, "sample": f"q{q}", "task": "t", "layer": layer, "p_true": float(rng.uniform(0, 1))}
        for r in ("paper", "tuned_lens")
        for q in range(5)
        for layer in range(4)
    ]
    spec = emergence_by_readout(pd.DataFrame(rows)).to_dict()
    assert spec == emergence_by_readout(pd.DataFrame(rows)).to_dict()  # bands computed here: the same every time
    names = {v["readout"] for d in spec["datasets"].values() for v in d if "readout" in v}
    assert names == {READOUT_TITLES["paper"], READOUT_TITLES["tuned_lens"]}
    assert any(v.get("y") == 0.5 for d in spec["datasets"].values() for v in d)
    with pytest.raises(Exception, match="emergence_by_readout"):
        emergence_by_readout(pd.DataFrame({"layer": [0], "p_true": [0.1]}))


def test_pictures_draw_every_character_and_label_the_mask_axes():
    """The PNG renderer's fonts lack "↛": PNGs write it "-/->" (the live chart keeps it); mask axes name
    the frames, the question and the last position."""
    from flowkit.intervention.masks import edge_block_mask
    from flowkit.prompts.spans import Spans
    from flowkit.views.plots import _drawable_text, attention_edges

    assert _drawable_text({"title": "video ↛ question", "data": [{"g": "a ↛ b"}, 3]}) == {
        "title": "video -/-> question",
        "data": [{"g": "a -/-> b"}, 3],
    }
    spans = Spans(
        seq_len=30,
        frame_spans=((3, 7), (7, 11), (11, 15)),
        question_text=(16, 22),
        option_spans=((23, 25), (25, 27)),
        last=29,
        true_option=0,
    )
    spec = attention_edges(edge_block_mask("cross_frame", spans), spans).to_dict()
    x_axis, y_axis = spec["encoding"]["x"]["axis"], spec["encoding"]["y"]["axis"]
    assert x_axis["values"] == y_axis["values"] == [3, 7, 11, 16, 29]
    assert "'f1'" in x_axis["labelExpr"] and "'last'" in x_axis["labelExpr"]
    assert "'frame 2 · 11'" in y_axis["labelExpr"] and "'question · 16'" in y_axis["labelExpr"]


def test_kept_by_layout_draws_the_line_rings_this_model_and_marks_the_papers_prompt():
    from flowkit.analysis.pathways import kept_share_by_layout, paper_prompt_kept_share
    from flowkit.prompts.hypothetical import hypothetical_spans

    table = kept_share_by_layout(hypothetical_spans(4), 30)
    spec = plots.kept_by_layout(table, current=16, paper_kept=paper_prompt_kept_share()).to_dict()
    assert spec["layer"][0]["encoding"]["x"]["scale"]["type"] == "log"
    labels = {row.get("label") for row in rows_of(spec)}
    assert "this model: 16 per frame" in labels and "paper's own prompt: 42.2%" in labels
    assert len(spec["layer"]) == 6  # line, its labels, the ring and its label, the diamond and its label
    bare = plots.kept_by_layout(table).to_dict()
    assert len(bare["layer"]) == 2
    with pytest.raises(ValueError, match="kept_share_by_layout"):
        plots.kept_by_layout(table.drop(columns="kept_share"))
