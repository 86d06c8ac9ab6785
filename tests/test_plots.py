"""flowkit.plots: the chart specs (``chart.to_dict()``), not pixels."""

from __future__ import annotations

import pandas as pd
import pytest

from flowkit import plots
from flowkit.readout import AnswerDistribution

EDGE_GROUPS = ["cross_frame", "video->question", "question->last"]


def summary_frame(num_layers=6, tasks=("action_antonym", "object_count")):
    rows = [{"task": task, "edge_group": edge_group, "center": c, "pct_change": -5.0 * c + i, "n": 3}
            for task in tasks for i, edge_group in enumerate(EDGE_GROUPS) for c in range(num_layers)]
    return pd.DataFrame(rows)


def rows_of(spec: dict) -> list[dict]:
    """All inline data rows of a chart dict (altair moves them to ``datasets``)."""
    return [row for rows in spec.get("datasets", {}).values() for row in rows]


def marks(spec: dict) -> list[str]:
    layers = spec.get("spec", spec).get("layer", [])
    return [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in layers]


def test_flow_curves_facets_tasks_with_a_line_per_edge_group_a_zero_line_and_the_first_half_shaded():
    spec = plots.flow_curves(summary_frame(), num_layers=32).to_dict()
    assert spec["facet"]["field"] == "task"
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
    assert rows == {("A left", "before"): 0.25, ("★ B right", "before"): 0.75,
                    ("A left", "after"): 0.6, ("★ B right", "after"): 0.4}
    bars = spec["layer"][0]
    assert bars["encoding"]["color"]["scale"]["range"] == [plots.BEFORE_COLOR, plots.AFTER_COLOR]
    vocab = plots.answer_bars(before.to_dict(), scale="vocab").to_dict()
    assert sorted(r["p"] for r in rows_of(vocab)) == [0.1, 0.3]
    with pytest.raises(ValueError, match="scale"):
        plots.answer_bars(before, scale="logits")
    with pytest.raises(TypeError, match="AnswerDistribution"):
        plots.answer_bars([0.1, 0.3])


def test_prob_by_layer_plots_true_against_false_options():
    df = pd.DataFrame([(layer, letter, 0.1 * layer if letter == "B" else 0.05, letter == "B")
                       for layer in range(4) for letter in "ABC"], columns=["layer", "letter", "prob", "true"])
    spec = plots.prob_by_layer(df).to_dict()
    assert marks(spec) == ["errorband", "line"]
    line = spec["layer"][1]
    assert line["encoding"]["y"]["aggregate"] == "mean" and line["encoding"]["y"]["field"] == "prob"
    assert line["encoding"]["color"]["scale"]["domain"] == ["true option", "false options"]
    assert {r["option"] for r in rows_of(spec)} == {"true option", "false options"}
    with pytest.raises(ValueError, match="missing \\['true'\\]"):
        plots.prob_by_layer(df.drop(columns="true"))


def test_lens_shares_colours_spatial_and_temporal_words():
    df = pd.DataFrame([(layer, kind, 0.1 * layer) for layer in range(3) for kind in ("spatial", "temporal")],
                      columns=["layer", "kind", "share"])
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

    from flowkit.experiments import curves_with_ci, question_troughs
    from flowkit.plots import curves_with_band, question_strip

    rows = []
    for q in range(6):
        for center in range(4):
            rows.append({"sample": f"t/{q}", "task": "t" if q < 4 else "u", "edge_group": "cross_frame", "center": center,
                         "pct_change": -10.0 * (center == 1) - q, "correct_base": q != 3})
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
