"""The widgets' state and everything they show, computed in Python (no browser)."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import anywidget
import traitlets
from PIL import Image

from flowkit import FlowkitError, KnockoutError, KnockoutSpec, LayerSet, LayerWindow, block_masks
from flowkit.data import Sample
from flowkit.data.vocab import word_bag_words
from flowkit.views.thumbnails import frame_thumbnails
from flowkit.views.view_models import (
    AnswerExplorer,
    answer_view,
    cells_to_spec,
    describe_cells,
    flow_curve_series,
    grid_columns,
    lens_view_table,
    spec_to_cells,
    window_cells,
)
from flowkit.intervention.edge_groups import PAPER_EDGE_GROUPS
from flowkit.intervention.spec import Cut
from flowkit.analysis.lens import (
    activations,
    answer_by_layer,
    frame_top_words,
    frame_word_summary,
    lens_at,
    word_kind_of,
    word_shares,
)
from flowkit.prompts.readout import percent_change
from widgets import FlowCurves, KnockoutGrid, LensView

from conftest import OPTIONS, QUESTION, random_frames


def assert_same_answer(shown: dict, dist, tol=1e-5):
    assert np.allclose(shown["probs"], dist.probs, rtol=tol, atol=1e-9)
    assert np.allclose(shown["option_probs"], dist.option_probs, atol=tol)
    assert shown["predicted"] == dist.predicted


@pytest.fixture(scope="module")
def prepared(toy_fp32):
    return toy_fp32.prepare(random_frames(seed=3), QUESTION, OPTIONS, answer="B")


@pytest.fixture(scope="module")
def grid(toy_fp32, prepared):
    return KnockoutGrid(toy_fp32, prepared)


# --------------------------------------------------------------------------- columns


def test_paper_columns_and_frame_columns(prepared):
    spans = prepared.spans
    paper = grid_columns(PAPER_EDGE_GROUPS, spans)
    assert [c.key for c in paper] == list(PAPER_EDGE_GROUPS)
    assert [c.label for c in paper][:2] == ["cross-frame", "video ↛ question"]
    frames = grid_columns("frames", spans)
    assert [c.key for c in frames] == [f"frame:{i}" for i in range(1, spans.num_frames)]
    assert frames[2].edges == ("frame:0->frame:3", "frame:1->frame:3", "frame:2->frame:3") and frames[2].frame == 3
    mixed = grid_columns(["video -/-> question", "frame:2"], spans)
    assert [c.key for c in mixed] == ["video->question", "frame:2"]


@pytest.mark.parametrize(
    "columns, message",
    [
        ([], "at least one column"),
        (["frame:0"], "no earlier frame"),
        (["frame:99"], "frame:1 .. frame:7"),
        (["frame:x"], "frame index"),
        (["video->elsewhere"], "unknown token group"),
        (["cross_frame", "cross-frame"], "more than once"),
    ],
)
def test_bad_columns_are_refused_clearly(prepared, columns, message):
    with pytest.raises(KnockoutError, match=message):
        grid_columns(columns, prepared.spans)


def test_every_frame_column_together_cuts_exactly_cross_frame(prepared):
    columns = grid_columns("frames", prepared.spans)
    cells = [(layer, c) for layer in (1, 2) for c in range(len(columns))]
    by_frames = block_masks(cells_to_spec(cells, columns, 4), prepared.spans, 4)
    cross = block_masks(KnockoutSpec.single("cross_frame", LayerSet((1, 2))), prepared.spans, 4)
    assert by_frames.keys() == cross.keys() == {1, 2}
    assert all(torch.equal(by_frames[layer], cross[layer]) for layer in (1, 2))


# ----------------------------------------------------------------------- cells/spec


def test_cells_and_specs_convert_both_ways(prepared):
    columns = grid_columns(PAPER_EDGE_GROUPS, prepared.spans)
    cells = [(0, 1), (1, 1), (3, 3), (2, 0)]
    spec = cells_to_spec(cells, columns, 4)
    assert spec == KnockoutSpec(
        (
            Cut("cross_frame", LayerSet((2,))),
            Cut("video->question", LayerSet((0, 1))),
            Cut("question->last", LayerSet((3,))),
        )
    )
    assert spec_to_cells(spec, columns, 4) == sorted(cells)
    assert (
        describe_cells(cells, columns)
        == "cross-frame: layer 2 · video ↛ question: layers 0-1 · question ↛ last: layer 3"
    )
    assert describe_cells([], columns) == "no knockout"
    assert spec_to_cells(KnockoutSpec.from_json(spec.to_json()), columns, 4) == sorted(cells)
    window = KnockoutSpec.single("question->last", LayerWindow(center=1, size=3))
    assert spec_to_cells(window, columns, 4) == [(0, 3), (1, 3), (2, 3)] == window_cells(1, 3, 4, size=3)
    assert cells_to_spec([], columns, 4) == KnockoutSpec()


def test_specs_the_grid_cannot_show_are_refused(prepared):
    columns = grid_columns(PAPER_EDGE_GROUPS, prepared.spans)
    with pytest.raises(KnockoutError, match="video->frame:2 in layers 1"):
        spec_to_cells(KnockoutSpec.single("video->frame:2", "1"), columns, 4)
    frames = grid_columns("frames", prepared.spans)
    with pytest.raises(KnockoutError, match="only part of a column"):  # frame 3 also reads frames 1 and 2
        spec_to_cells(KnockoutSpec.single("frame:0->frame:3", "1"), frames, 4)
    with pytest.raises(KnockoutError, match="outside the grid"):
        cells_to_spec([(4, 0)], columns, 4)


# --------------------------------------------------------------------------- answers


def test_answer_explorer_runs_the_clean_forward_once_and_memoises(toy_fp32, prepared):
    explorer = AnswerExplorer(toy_fp32, prepared)
    spec = KnockoutSpec.single("question->last", "2")
    first = explorer.answer(spec)
    session = explorer.session
    assert explorer.answer(KnockoutSpec.from_json(spec.to_json())) is first
    assert explorer.session is session
    assert_same_answer(first.to_dict(), toy_fp32.answer(prepared, spec))


def test_answer_view_holds_both_sides_and_the_papers_metric(toy_fp32, prepared):
    spec = KnockoutSpec.single("video->question", "0-3")
    before, after = toy_fp32.answer(prepared), toy_fp32.answer(prepared, spec)
    view = answer_view(before, after, spec, options=OPTIONS)
    assert json.loads(json.dumps(view)) == view  # JSON-safe
    assert view["spec"] == spec.to_json() and view["letters"] == ["A", "B", "C", "D"] and view["true_option"] == 1
    base = before.predicted
    assert view["pct_change"] == pytest.approx(percent_change(before.probs[base], after.probs[base]))
    assert view["pct_change_letter"] == "ABCD"[base] and view["options"] == OPTIONS
    with pytest.raises(ValueError, match="option texts"):
        answer_view(before, after, spec, options=["x"])


# ----------------------------------------------------------------------- KnockoutGrid


def test_grid_starts_clean(grid, toy_fp32, prepared):
    grid.clear()
    assert KnockoutSpec.from_json(grid.spec_json) == KnockoutSpec()
    assert grid.num_layers == 4 and len(grid.columns) == 5 and grid.cells == []
    assert grid.answer["before"] == grid.answer["after"] and grid.answer["pct_change"] == 0
    assert_same_answer(grid.answer["before"], toy_fp32.answer(prepared))


@pytest.mark.parametrize("layer, column", [(0, 0), (2, 1), (1, 2), (3, 3), (1, 4)])
def test_toggling_a_cell_cuts_that_edge_group_in_that_layer(grid, toy_fp32, prepared, layer, column):
    grid.clear()
    grid.toggle(layer, column)
    spec = KnockoutSpec.single(PAPER_EDGE_GROUPS[column], LayerSet((layer,)))
    assert KnockoutSpec.from_json(grid.spec_json) == spec
    assert grid.cells == [(layer, column)] and grid.view["cells"] == [[layer, column]]
    assert grid.answer["spec"] == spec.to_json()
    assert grid.answer["spec_text"] == f"{grid.columns[column]['label']}: layer {layer}"
    assert_same_answer(grid.answer["after"], toy_fp32.answer(prepared, spec))  # session replay vs full forward
    grid.toggle(layer, column)
    assert grid.cells == [] and grid.answer["after"] == grid.answer["before"]


def test_view_messages_paint_cut_windows_and_clear(grid, toy_fp32, prepared):
    grid.clear()
    grid._on_frontend_msg(grid, {"action": "paint", "cells": [[0, 1], [1, 1], [1, 3]], "cut": True}, [])
    assert grid.cells == [(0, 1), (1, 1), (1, 3)]
    grid._on_frontend_msg(grid, {"action": "paint", "cells": [[0, 1]], "cut": False}, [])
    assert grid.cells == [(1, 1), (1, 3)]
    expected = KnockoutSpec((Cut("video->question", LayerSet((1,))), Cut("question->last", LayerSet((1,)))))
    assert grid.spec == expected
    assert_same_answer(grid.answer["after"], toy_fp32.answer(prepared, expected))
    grid._on_frontend_msg(grid, {"action": "clear"}, [])
    assert grid.cells == []
    grid.window_size = 3
    grid._on_frontend_msg(grid, {"action": "window", "layer": 0, "column": 3}, [])
    assert grid.cells == [(0, 3), (1, 3)]  # layers -1..1 clipped to 0..1
    grid._on_frontend_msg(grid, {"action": "window", "layer": 0, "column": 3}, [])
    assert grid.cells == []  # the same window again restores it
    grid._on_frontend_msg(grid, {"action": "explode"}, [])
    assert "unknown action" in grid.error
    grid._on_frontend_msg(grid, {"action": "paint", "cells": [[9, 0]], "cut": True}, [])
    assert "outside the grid" in grid.error and grid.cells == []
    grid.toggle(0, 0)
    assert grid.error == ""
    grid.window_size = 9


def test_spec_json_round_trips_and_restores_a_grid(grid, toy_fp32, prepared):
    window = KnockoutSpec.single("video->question", LayerWindow(center=1, size=3))
    grid.spec_json = window.to_json()
    saved = grid.spec_json
    assert KnockoutSpec.from_json(saved) == KnockoutSpec.single("video->question", LayerSet((0, 1, 2)))
    masks = block_masks(KnockoutSpec.from_json(saved), prepared.spans, 4)
    expected = block_masks(window, prepared.spans, 4)
    assert masks.keys() == expected.keys() and all(torch.equal(masks[k], expected[k]) for k in masks)
    restored = KnockoutGrid(toy_fp32, prepared, spec=KnockoutSpec.from_json(saved), session=grid.explorer.session)
    assert restored.spec_json == saved and restored.cells == grid.cells == [(0, 1), (1, 1), (2, 1)]
    assert restored.view == grid.view
    with pytest.raises(traitlets.TraitError, match="no column"):
        grid.spec_json = KnockoutSpec.single("video->frame:2", "1").to_json()
    with pytest.raises(traitlets.TraitError, match="not valid JSON"):
        grid.spec_json = "{cuts"
    assert grid.spec_json == saved


def test_a_cut_that_leaves_a_token_nothing_to_read_is_refused(toy_fp32, prepared):
    grid = KnockoutGrid(toy_fp32, prepared, edge_groups=["prefix->prefix", "question->last"])
    grid.toggle(1, 1)
    grid.toggle(0, 0)  # position 0 would have no key left
    assert "no key to attend to" in grid.error
    assert grid.cells == [(1, 1)]


def test_a_sample_brings_its_options_question_and_thumbnails(toy_fp32):
    frames = random_frames(num_frames=4, seed=5)
    sample = Sample(
        id="toy/0000",
        task="moving_direction",
        frames=frames,
        question=QUESTION,
        candidates=tuple(OPTIONS),
        answer="C",
        answer_text="up",
    )
    grid = KnockoutGrid(toy_fp32, sample, edge_groups="frames")
    assert [c["key"] for c in grid.columns] == ["frame:1", "frame:2", "frame:3"]
    assert grid.question == QUESTION and grid.answer["options"] == OPTIONS and grid.answer["true_option"] == 2
    assert len(grid.setup["thumbnails"]) == 4 and grid.setup["thumbnails"][0].startswith("data:image/png;base64,")
    grid.toggle(2, 1)
    spec = KnockoutSpec((Cut("frame:0->frame:2", LayerSet((2,))), Cut("frame:1->frame:2", LayerSet((2,)))))
    assert grid.spec == spec
    assert_same_answer(grid.answer["after"], toy_fp32.answer(toy_fp32.prepare_sample(sample), spec))
    with pytest.raises(TypeError, match="Sample or a prepared prompt"):
        KnockoutGrid(toy_fp32, "clip.mp4")


def test_nf4_grid_matches_the_full_forward(toy_nf4):
    prepared = toy_nf4.prepare(random_frames(seed=3), QUESTION, OPTIONS, answer="B")
    grid = KnockoutGrid(toy_nf4, prepared)
    grid.set_cells([(1, 1), (2, 1), (3, 3)])
    assert_same_answer(grid.answer["after"], toy_nf4.answer(prepared, grid.spec))


# --------------------------------------------------------------------------- lens


def test_frame_top_words_match_lens_at(toy_fp32, prepared):
    cache = activations(toy_fp32, prepared)
    for kind in ("embedding", "logit"):
        words = frame_top_words(toy_fp32, prepared, kind, k=3, cache=cache)
        spans = prepared.spans
        assert len(words) == 4 * spans.num_video_tokens * 3
        position = spans.frame_spans[2][0] + 1
        row = words[(words.layer == 2) & (words.position == position)].sort_values("rank")
        assert row["frame"].unique().tolist() == [2]
        assert row["token"].tolist() == lens_at(toy_fp32, prepared, 2, [position], kind=kind, k=3)[0]
    with pytest.raises(ValueError, match="unknown lens"):
        frame_top_words(toy_fp32, prepared, "tuned", cache=cache)


def test_word_summary_and_shares():
    top = pd.DataFrame(
        [
            (0, 0, 3, 0, "red", 1.0),
            (0, 0, 3, 1, "left", 0.5),
            (0, 0, 4, 0, "red", 0.9),
            (0, 0, 4, 1, "the", 0.1),
            (1, 0, 3, 0, "moves", 1.0),
            (1, 0, 3, 1, "up", 0.5),
            (1, 0, 4, 0, "Up", 0.9),
            (1, 0, 4, 1, "x", 0.1),
        ],
        columns=["layer", "frame", "position", "rank", "token", "score"],
    )
    summary = frame_word_summary(top, top=2)
    first = summary[summary.layer == 0]
    assert first["word"].tolist() == ["red", "left"] and first["tokens"].tolist() == [2, 1]
    assert first["share"].tolist() == [1.0, 0.5]
    shares = word_shares(top).set_index(["layer", "kind"])["share"]
    assert shares[(0, "spatial")] == 0.5 and shares[(0, "temporal")] == 0.25
    assert shares[(1, "spatial")] == 0.0 and shares[(1, "temporal")] == 0.75
    custom = word_shares(top, spatial=["x"], temporal=["the"]).set_index(["layer", "kind"])["share"]
    assert custom[(1, "spatial")] == 0.25 and custom[(0, "temporal")] == 0.25
    assert (word_kind_of(" Red"), word_kind_of("before"), word_kind_of("Dale")) == ("spatial", "temporal", "other")
    table = lens_view_table(top, num_layers=2, num_frames=1, top=2)
    assert [w["word"] for w in table[0][0]] == ["red", "left"] and table[0][0][0]["kind"] == "spatial"


def test_answer_by_layer_ends_at_the_models_answer(toy_fp32, prepared):
    df = answer_by_layer(toy_fp32, prepared)
    assert len(df) == 4 * 4 and df[df.true]["letter"].unique().tolist() == ["B"]
    last = df[df.layer == 3].sort_values("letter")["prob"].to_numpy()
    assert np.allclose(last, toy_fp32.answer(prepared).probs, rtol=1e-4)
    with pytest.raises(ValueError, match="correct option"):
        answer_by_layer(toy_fp32, toy_fp32.prepare(random_frames(), QUESTION, OPTIONS))


def test_frame_thumbnails_are_pngs_scaled_up_crisply():
    frames = random_frames(num_frames=2, height=32, width=16)
    urls = frame_thumbnails(frames, size=64)
    image = Image.open(io.BytesIO(base64.b64decode(urls[0].split(",", 1)[1])))
    assert image.size == (32, 64)
    assert np.array_equal(np.asarray(image)[::2, ::2], frames[0])  # nearest neighbour: no smoothing
    with pytest.raises(ValueError, match="T, H, W, 3"):
        frame_thumbnails(frames[0])


def test_lens_view_state_and_words(toy_fp32, prepared):
    frames = random_frames(seed=3)
    view = LensView(toy_fp32, prepared, frames=frames, k=3, top=2)
    assert view.num_layers == 4 and len(view.setup["thumbnails"]) == len(view.frame_labels) == 8
    assert set(view.table) == {"embedding", "logit"} and len(view.table["logit"]) == 4
    assert view.setup["ranked"].startswith("words ranked within the closed list 'kit'")
    spatial, temporal = word_bag_words("kit")
    closed = {w.lower() for w in spatial + temporal}
    assert set(frame_top_words(toy_fp32, prepared, "logit", k=3, bag="kit")["token"].str.lower()) <= closed
    whole = LensView(toy_fp32, prepared, k=3, top=2, bag=None)
    assert whole.table["logit"] == lens_view_table(frame_top_words(toy_fp32, prepared, "logit", k=3), 4, 8, top=2)
    with pytest.raises(FlowkitError, match="unknown word list 'nope'"):
        LensView(toy_fp32, prepared, bag="nope")
    expected = lens_view_table(frame_top_words(toy_fp32, prepared, "logit", k=3, bag="kit"), 4, 8, top=2)
    view.kind, view.layer = "logit", 2
    assert view.words() == expected[2]
    with pytest.raises(traitlets.TraitError, match="0..3"):
        view.layer = 4
    clean = view.table
    view.spec_json = KnockoutSpec.single("cross_frame", "0-3").to_json()
    assert view.table["embedding"][3][0] == clean["embedding"][3][0]  # frame 0 reads no earlier frame
    assert view.table["embedding"][3][7] != clean["embedding"][3][7]
    with pytest.raises(traitlets.TraitError, match="no key to attend to"):
        view.spec_json = KnockoutSpec.single("prefix->prefix", "0").to_json()


# --------------------------------------------------------------------------- curves


def summary_frame():
    return pd.DataFrame(
        [
            {"task": t, "edge_group": g, "center": c, "pct_change": -4.0 * c - i, "n": 2}
            for t in ("scene", "count")
            for i, g in enumerate(PAPER_EDGE_GROUPS[:3])
            for c in (3, 0, 1, 2)
        ]
    )


def test_flow_curve_series():
    series = flow_curve_series(summary_frame())
    assert series["tasks"] == ["scene", "count"] and series["edge_groups"] == list(PAPER_EDGE_GROUPS[:3])
    assert series["num_layers"] == 4 and series["y_domain"] == [-15, 0]
    assert series["curves"]["scene"]["video->question"] == [[0, -1.0, 2], [1, -5.0, 2], [2, -9.0, 2], [3, -13.0, 2]]
    assert series["labels"]["video->question"] == "video ↛ question"
    assert flow_curve_series(summary_frame(), num_layers=32)["num_layers"] == 32
    with pytest.raises(ValueError, match="missing"):
        flow_curve_series(summary_frame().drop(columns="center"))


def test_flow_curves_widget_state_and_chart():
    widget = FlowCurves(summary_frame())
    assert widget.task == "scene" and widget.hidden == []
    widget.task, widget.hidden = "count", ["cross_frame"]
    chart = widget.chart().to_dict()
    rows = [r for rows in chart["datasets"].values() for r in rows]
    assert {r["task"] for r in rows} == {"count"} and "cross_frame" not in {r["edge_group"] for r in rows}
    with pytest.raises(traitlets.TraitError, match="unknown task"):
        widget.task = "nope"
    with pytest.raises(traitlets.TraitError, match="unknown edge groups"):
        widget.hidden = ["video->nowhere"]
    raw = pd.DataFrame(
        [
            {
                "sample": s,
                "task": "scene",
                "edge_group": "cross_frame",
                "center": c,
                "pct_change": -10.0 * s,
                "correct_base": s < 2,
                "correct_after": True,
            }
            for s in range(3)
            for c in range(2)
        ]
    )
    summarised = FlowCurves(raw)
    assert summarised.series["curves"]["scene"]["cross_frame"] == [[0, -5.0, 2], [1, -5.0, 2]]


def _bundle_png(widget) -> Image.Image:
    bundle = widget._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data  # JupyterLab still shows the live widget
    return Image.open(io.BytesIO(base64.b64decode(data["image/png"])))  # a saved notebook shows this picture


def test_every_widget_saves_a_picture_of_what_it_shows(toy_fp32, prepared, grid):
    from flowkit.data import generate
    from flowkit.analysis.pathways import PathwayWindows
    from widgets import PathwaySliders

    pictures = [
        _bundle_png(grid),
        _bundle_png(LensView(toy_fp32, prepared, frames=random_frames(seed=3), k=3, top=2)),
        _bundle_png(FlowCurves(summary_frame())),
        _bundle_png(
            PathwaySliders(
                toy_fp32,
                generate("scene_transition", 1, seed=5, num_frames=8, size=32),
                PathwayWindows((0, 1), (1, 2), (2, 3), 2, 3),
            )
        ),
    ]
    assert all(p.width > 200 and p.height > 100 for p in pictures)


def test_a_picture_that_cannot_be_drawn_never_hides_the_widget(grid, monkeypatch):
    monkeypatch.setattr(type(grid), "snapshot_chart", lambda self: 1 / 0)
    bundle = grid._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data and "image/png" not in data


# ------------------------------------------------------------------- front-end files


def _synced(widget_class) -> set[str]:
    base = set(anywidget.AnyWidget.class_traits(sync=True))
    return set(widget_class.class_traits(sync=True)) - base - {"_esm", "_css", "_anywidget_id"}


def test_views_are_files_anywidget_can_watch_and_sync_only_what_changes():
    """``_esm`` / ``_css`` are files beside the module (anywidget reloads them); static data travels once."""
    from anywidget._file_contents import FileContents

    from widgets import OfflineChart

    from widgets import PredictReveal

    for widget_class, stem in (
        (KnockoutGrid, "knockout_grid"),
        (LensView, "lens_view"),
        (FlowCurves, "flow_curves"),
        (PredictReveal, "predict_reveal"),
    ):
        for key, suffix in (("_esm", "js"), ("_css", "css")):
            contents = getattr(widget_class, key)
            assert isinstance(contents, FileContents) and contents._path.name == f"{stem}.{suffix}", (widget_class, key)
        source = str(widget_class._esm)
        assert "export default" in source and "function h(" in source
        # no imports, no CDN (the SVG namespace is a name, never fetched)
        assert not re.search(r"^\s*import\b|\bimport\s*\(|https?://(?!www\.w3\.org/)", source, re.M), stem
    assert isinstance(OfflineChart._esm, FileContents) and OfflineChart._esm._path.name == "offline_chart.js"
    assert _synced(KnockoutGrid) == {"spec_json", "scale", "window_size", "view", "setup"}
    assert _synced(LensView) == {"kind", "layer", "spec_json", "table", "setup"}
    assert _synced(FlowCurves) == {"series", "task", "hidden"}
    assert _synced(PredictReveal) == {"guess", "revealed", "result", "setup"}


def test_static_setup_is_sent_once(grid):
    sent = []
    grid.observe(lambda change: sent.append(change["name"]), names=["setup", "view"])
    grid.clear()
    grid.toggle(1, 1)
    grid.toggle(1, 1)
    assert "setup" not in sent and "view" in sent
    assert set(grid.setup) == {"num_layers", "columns", "thumbnails", "question", "sample_id"}
    assert set(grid.view) == {"cells", "answer", "error"}


def test_lens_view_model_reads_both_lenses_once(toy_fp32, prepared):
    from flowkit.views.view_models import applicable_spec, frame_labels, lens_setup, lens_tables

    top_words, table = lens_tables(toy_fp32, prepared, k=3, top=2)
    assert set(top_words) == set(table) == {"embedding", "logit"}
    assert table["logit"] == lens_view_table(frame_top_words(toy_fp32, prepared, "logit", k=3), 4, 8, top=2)
    setup = lens_setup(prepared.spans, 4)
    assert setup["frame_labels"] == frame_labels(prepared.spans) == [f"frame {i}" for i in range(8)]
    assert setup["thumbnails"] == [] and set(setup["kind_colors"]) == {"spatial", "temporal"}
    with pytest.raises(KnockoutError, match="no key to attend to"):
        applicable_spec(KnockoutSpec.single("prefix->prefix", "0").to_json(), prepared.spans, 4)


# ------------------------------------------------------------------- predict, then reveal


def trough_curve() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "center": range(8),
            "pct_change": [-5.0, -12.0, -31.0, -28.0, -9.0, -2.0, 0.5, 1.0],
            "lo": [-9.0, -18.0, -41.0, -37.0, -15.0, -5.0, -1.0, -1.0],
            "hi": [-1.0, -6.0, -21.0, -19.0, -3.0, 1.0, 2.0, 3.0],
        }
    )


def test_a_prediction_sees_no_data_before_the_reveal_and_says_how_far_off_it_was():
    from flowkit.course.predictions import CurveQuestion
    from widgets import PredictReveal

    question = CurveQuestion.deepest(trough_curve())
    setup = question.setup()
    sent = json.dumps(setup)
    assert "-31" not in sent and "-28" not in sent  # the axes only: no value of the curve
    assert setup["x_values"] == [float(c) for c in range(8)] and setup["y_domain"] == [-105.0, 15.0]  # no hint
    widget = PredictReveal(question)
    widget.revealed = True  # nothing to reveal without a guess
    assert not widget.revealed and widget.result == {}
    widget.guess = {"x": 4.4, "y": -20}
    assert widget.guess == {"x": 4.0, "y": -20.0} and widget.result == {}  # snapped to a window centre, still hidden
    widget.revealed = True
    result = widget.result
    assert result["truth"] == {"x": 2.0, "y": -31.0, "lo": -41.0, "hi": -21.0}
    assert result["dx"] == 2.0 and result["dy"] == pytest.approx(11.0)
    assert "2 layers later" in result["verdict"] and "11.0 % too high" in result["verdict"]
    assert "2, 3 (a tie" in result["verdict"]  # window 3's interval reaches the lowest mean
    assert len(result["points"]) == 8
    widget.revealed = False
    assert widget.result == {}
    again = widget.reveal(2, -35)
    assert again["inside_interval"] and "the same place" in again["verdict"]
    assert _bundle_png(widget).size[0] > 300


def test_a_value_question_and_bad_questions():
    from flowkit.course.predictions import CurveQuestion

    curve = pd.DataFrame(
        {"kept": [25.0, 50.0, 75.0], "accuracy": [0.49, 0.35, 0.34], "lo": [0.45, 0.31, 0.30], "hi": [0.53, 0.40, 0.39]}
    )
    question = CurveQuestion.value_at(
        curve, at=50, x="kept", y="accuracy", y_scale=100, x_title="kept (%)", y_title="accuracy (%)"
    )
    result = question.reveal(None, 60)
    assert result["truth"]["y"] == pytest.approx(35.0) and result["guess"] == {"x": 50.0, "y": 60.0}
    assert "25.0 % too high" in result["verdict"]
    with pytest.raises(FlowkitError, match="no point at kept = 40"):
        CurveQuestion.value_at(curve, at=40, x="kept", y="accuracy", x_title="", y_title="")
    with pytest.raises(FlowkitError, match="no column 'pct'"):
        CurveQuestion.deepest(curve, x="kept", y="pct")
    with pytest.raises(FlowkitError, match="no points"):
        CurveQuestion.deepest(trough_curve().iloc[:0])
    with pytest.raises(FlowkitError, match="finite number"):
        CurveQuestion.deepest(trough_curve()).reveal(2, float("nan"))
