"""What the chapters rely on: exercise checks, precomputed results and their live verification,
one-cell checks, pathway summaries, the paper comparison and the small chart/clip helpers."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import torch

from flowkit import FlowkitError, KnockoutSpec, LayerWindow, check, count_edges
from flowkit.course import solutions
from flowkit.course.exercises import _CHECKS, show_solution, solution_source
from flowkit.course.exercises import check as check_exercise


# ---------------------------------------------------------------------------- exercises
@pytest.mark.parametrize("name", solutions.EXERCISES)
def test_every_solution_passes_its_check(name, capsys):
    check_exercise(name, getattr(solutions, name))
    assert capsys.readouterr().out.startswith(f"✓ {name}: ")


def test_every_check_has_a_solution_and_back():
    assert sorted(_CHECKS) == sorted(solutions.EXERCISES)


def _window_sweep_on_option_probs(session, edge_group, centers, size=9):
    """A common slip: the % change of p renormalised over the options instead of over the vocabulary."""
    specs = [KnockoutSpec.single(edge_group, LayerWindow(center, size)) for center in centers]
    clean = session.clean_answer
    true = clean.true_option
    return {
        center: 100 * (after.option_probs[true] - clean.option_probs[true]) / clean.option_probs[true]
        for center, after in zip(centers, session.answers(specs))
    }


WRONG = {
    "frame_positions": lambda spans, frame: list(range(*spans.frame_spans[frame]))[1:],
    "option_probabilities": lambda logits: torch.softmax(logits, -1).flip(0),
    "cross_frame_mask": lambda spans: solutions.cross_frame_mask(spans).T,
    "percent_change": lambda p_base, p_new: 100 * (p_new - p_base),
    # averages every question, not only the correctly answered ones
    "sweep_curve": lambda rows, seed=0: solutions.sweep_curve(rows.assign(correct_base=True), seed),
    # forgets to clip at the model's ends
    "window_layers": lambda center, num_layers, size=9: list(range(center - size // 2, center - size // 2 + size)),
    "embedding_lens_scores": lambda hidden, embedding: hidden @ embedding.T / 2,
    "temporal_share": lambda top_words, temporal: 0.5,
    "first_layer_above": lambda probs, threshold=0.5: next((i for i, p in enumerate(probs) if p >= threshold), None),
    "deepest_window": lambda curve: max(curve.items(), key=lambda kv: kv[1]),
    # forgets the half-window: the centres only
    "window_from_curve": lambda curve, fraction=0.5: (
        min(i for i, v in enumerate(curve) if v <= fraction * min(curve)),
        max(i for i, v in enumerate(curve) if v <= fraction * min(curve)),
    ),
    "kept_fraction": lambda masks, n, layers: 1 - sum(int(m.sum()) for m in masks.values()) / (n * n * layers),
    "random_cut_like": lambda block, seed: block.clone(),
    # forgets that last->last has no window (cut in every layer)
    "pathway_cuts": lambda windows, n: KnockoutSpec(
        tuple(c for c in solutions.pathway_cuts(windows, n).cuts if c.edges != "last->last")
    ),
    "hypothesis_spec": lambda: KnockoutSpec.single("question->last", "12-20"),
    "trough_shift": lambda a, b: max(b, key=b.get) - max(a, key=a.get),
    "window_sweep": _window_sweep_on_option_probs,
    # softmax before masking: cut edges keep weight
    "knockout_attention": lambda scores, cut: torch.softmax(scores, -1).masked_fill(cut, 0.0),
    # renormalised over the letters instead of the whole vocabulary
    "logit_lens_probs": lambda hidden, norm, head, letters: torch.softmax(head(norm(hidden))[:, list(letters)], -1),
    # mean +- one standard deviation of the values: far too wide
    "bootstrap_interval": lambda values, seed=0: (
        float(values.mean() - values.std()),
        float(values.mean() + values.std()),
    ),
    # the gate value itself added, not its log: g = 1 would move every score
    "gate_bias": lambda values, masks: (values[:, None, None] * masks).sum(0),
}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_wrong_answer_fails_with_what_differed(name):
    with pytest.raises(AssertionError, match=f"{name}: wrong on"):
        check_exercise(name, WRONG[name])


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (_window_sweep_on_option_probs, "renormalised over the options"),
        (lambda session, group, centers, size=9: solutions.window_sweep(session, group, centers), "9-layer window"),
        (
            lambda session, group, centers, size=9: {
                c: v / 100 for c, v in solutions.window_sweep(session, group, centers, size).items()
            },
            "a fraction",
        ),
        (
            lambda session, group, centers, size=9: list(
                solutions.window_sweep(session, group, centers, size).values()
            ),
            r"a dict \{centre: % change\}",
        ),
    ],
)
def test_window_sweep_check_names_the_slip(wrong, hint):
    """The sweep exercise's check compares with flowkit's sweep on a tiny model and says what went wrong."""
    with pytest.raises(AssertionError, match=hint):
        check_exercise("window_sweep", wrong)


def test_the_blank_raises_not_implemented_through_the_check():
    def blank(p_base, p_new):
        raise NotImplementedError("Exercise 1.2")

    with pytest.raises(NotImplementedError, match="Exercise 1.2"):
        check_exercise("percent_change", blank)


def test_show_solution_prints_the_one_copy_and_checks_it(capsys):
    show_solution("kept_fraction")
    out = capsys.readouterr().out
    assert out.startswith(solution_source("kept_fraction")) and "✓ kept_fraction" in out
    with pytest.raises(KeyError, match="no exercise called"):
        show_solution("nope")


# ---------------------------------------------------------------- fidelity + results
@pytest.fixture(scope="module")
def fidelity_run(letters_checkpoint, tmp_path_factory):
    """The fidelity command's code path on the toy model whose top token is mostly a letter (the
    paper's rule then finds correct answers to sweep): 1 question per task, a few windows."""
    from flowkit.course.fidelity import TABLES, run_fidelity

    out = tmp_path_factory.mktemp("results") / "fidelity.json"
    report = run_fidelity(
        model=str(letters_checkpoint),
        control=str(letters_checkpoint),
        quant="fp32",
        per_task=1,
        sweep_per_task=1,
        other_per_task=1,
        centers_step=2,
        random_seeds=(0, 1),
        out=out,
        progress=False,
    )
    return report, out.parent, TABLES


def test_fidelity_writes_the_report_and_every_table(fidelity_run):
    report, folder, tables = fidelity_run
    stored = json.loads((folder / "fidelity.json").read_text())
    assert stored["fingerprint"] == report["fingerprint"] and stored["quant"] == "fp32"
    assert len(stored["samples"]) == 6 and stored["random_seeds"] == [0, 1]
    for key in ("F1", "F2", "F3", "F4", "accuracy", "control_accuracy", "learned"):
        assert key in stored
    from flowkit.analysis.learned import RULE, learned_tasks

    # the learned tasks follow the one rule, from this run's accuracy and control accuracy
    assert stored["learned"]["rule"] == RULE
    assert stored["learned"]["tasks"] == learned_tasks(stored["accuracy"], stored["control_accuracy"])
    assert stored["learned"]["headline_tasks"] == (stored["learned"]["tasks"] or sorted(stored["accuracy"]))
    for task, (lo, hi) in stored["accuracy_ci"].items():
        assert lo <= stored["accuracy"][task] <= hi
    # the paper's readouts, with the non-letter share and the option-letter rule beside them
    assert stored["readouts"] == {"prediction": "vocabulary", "emergence": "paper", "lens_layers": "paper"}
    assert set(stored["non_letter_share"]) == set(stored["accuracy_options"]) == set(stored["accuracy"])
    for task, share in stored["non_letter_share"].items():
        assert 0 <= share <= 1 and stored["accuracy"][task] <= stored["accuracy_options"][task]
    assert stored["sweep_samples"]  # this toy answers some questions with the true letter
    assert isinstance(stored["learned"]["tasks_options_rule"], list)
    for centre, (lo, hi) in stored["F1"].get("curve_ci", {}).items():
        assert lo - 1e-9 <= stored["F1"]["curve"][centre] <= hi + 1e-9
    produced = {p.name for p in folder.iterdir()}
    if stored["sweep_samples"]:  # sweeps need correctly answered questions
        assert {f"{t}.csv.gz" for t in tables} <= produced
    assert not [p for p in produced if p.startswith(".tmp-")]
    with gzip.open(folder / "accuracy.csv.gz", "rb") as handle:  # tables are plain gzip'd CSV
        assert handle.readline().startswith(b"sample,task")


def test_tables_are_byte_reproducible(fidelity_run, tmp_path):
    from flowkit.course.fidelity import _atomic_write_tables
    from flowkit.course.results import load_table

    _, folder, _ = fidelity_run
    table = load_table("accuracy", folder)
    _atomic_write_tables(tmp_path, {"accuracy": table})
    _atomic_write_tables(tmp_path / "again", {"accuracy": table})
    assert (tmp_path / "accuracy.csv.gz").read_bytes() == (tmp_path / "again" / "accuracy.csv.gz").read_bytes()


@pytest.mark.parametrize("table", ["accuracy", "emergence", "pathways", "lens", "sweeps"])
def test_verify_recomputes_stored_rows(fidelity_run, letters_fp32, table):
    from flowkit.course.results import load_report, verify

    report, folder, _ = fidelity_run
    if table in ("sweeps", "lens", "emergence") and not load_report(folder)["sweep_samples"]:
        pytest.skip("the toy model answered no question correctly, so nothing was swept")
    checked = verify(letters_fp32, table, n=1, folder=folder)
    assert len(checked) >= 1 and checked["max_abs_diff"].max() <= 1e-4


def test_the_pathway_study_writes_its_tables_and_verify_recomputes_them(
    fidelity_run, letters_checkpoint, letters_fp32, tmp_path
):
    import shutil

    from flowkit.analysis.pathway_search import AccuracyRule
    from flowkit.course.pathway_study import format_study, run_pathway_study
    from flowkit.course.results import STUDY_JSON, load_study, load_table, verify

    _, folder, _ = fidelity_run
    results = tmp_path / "results"
    shutil.copytree(folder, results)
    report = json.loads((results / "fidelity.json").read_text())
    tasks = sorted({sample.split("/")[0] for sample in report["sweep_samples"]})
    if not tasks:
        pytest.skip("the toy model answered no question correctly: nothing to search on")
    report["learned"]["headline_tasks"] = tasks  # the toy learns no task: search where it answers correctly
    (results / "fidelity.json").write_text(json.dumps(report))
    study = run_pathway_study(
        model=str(letters_checkpoint),
        quant="fp32",
        search_per_task=1,
        held_out_per_task=1,
        search_split="first",
        results=results,
        progress=False,
        test_seed=60227,
        test_per_task=1,
        rules=[AccuracyRule(), AccuracyRule(count_gains=False)],
    )
    choice = study["rule_choice"]  # both rules searched; the held-out questions chose, and the study says so
    assert [c["rule"]["count_gains"] for c in choice["candidates"]] == [True, False]
    assert study["search"]["rule"] == choice["candidates"][choice["chosen"]]["rule"]
    assert "<- chosen" in format_study(study)
    assert load_study(results) == json.loads((results / STUDY_JSON).read_text())
    assert study["search_samples"] == [f"{task}/0000" for task in tasks]
    table = load_table("pathway_search", results)
    assert set(table["sample"]).isdisjoint(study["search_samples"]) and table["sample"].nunique() == len(tasks)
    held = {row["condition"]: row for row in study["held_out"]}
    assert list(held) == ["full", "found", "window rule f=0.5", "llava-next-7b-video-ft", "random (found size)"]
    assert held["random (found size)"]["seeds"] == 5
    assert (
        study["gradient_vs_exact"]["gates"] == 9 * letters_fp32.num_layers
        and study["seconds"]["search_to_exhaustive"] > 0
    )
    assert "searched on" in format_study(study)
    checked = verify(letters_fp32, "pathway_search", n=1, folder=results)
    assert len(checked) >= 30 and checked["max_abs_diff"].max() <= 1e-4
    # the fresh test split: one question per task, the held-out report's masks, recomputed from its seed
    assert study["test_split"]["seed"] == 60227 and study["test_split"]["questions"] == len(tasks)
    assert [row["condition"] for row in study["test"]] == list(held)
    test = load_table("pathway_search_test", results)
    assert sorted(test["sample"].unique()) == sorted(f"{task}/0000" for task in tasks)
    assert "never used to choose anything" in format_study(study)
    checked = verify(letters_fp32, "pathway_search_test", n=1, folder=results)
    assert len(checked) == 9 and checked["max_abs_diff"].max() <= 1e-4  # full, found, F4, paper 7B, 5 random seeds


def test_verify_catches_a_tampered_table(fidelity_run, letters_fp32, tmp_path):
    from flowkit.course.fidelity import _atomic_write_tables
    from flowkit.course.results import load_table, verify

    _, folder, _ = fidelity_run
    (tmp_path / "fidelity.json").write_text((folder / "fidelity.json").read_text())
    table = load_table("accuracy", folder)
    table["p_answer"] = table["p_answer"] * 0.9 + 0.05
    _atomic_write_tables(tmp_path, {"accuracy": table})
    with pytest.raises(FlowkitError, match="does not match what the kit computes now"):
        verify(letters_fp32, "accuracy", n=6, folder=tmp_path)


def test_verify_refuses_another_model(fidelity_run, toy_nf4):
    from flowkit.course.results import verify

    _, folder, _ = fidelity_run
    with pytest.raises(FlowkitError, match="fingerprint .*quantized as nf4, the table's model as fp32"):
        verify(toy_nf4, "accuracy", n=1, folder=folder)


def test_a_chapter_goes_on_after_a_mismatch_with_one_note(fidelity_run, toy_nf4, letters_fp32, tmp_path, capsys):
    """What a chapter meets on another model, numeric path or a stale table: one note, no exception."""
    from flowkit.course.fidelity import _atomic_write_tables
    from flowkit.course.results import load_table, verify

    _, folder, _ = fidelity_run
    checked = verify(letters_fp32, "accuracy", n=1, folder=folder, on_mismatch="note")
    line = capsys.readouterr().out
    assert line.startswith(f"verify 'accuracy': {len(checked)} stored row") and line.count("\n") == 1
    assert "recomputed now; largest difference" in line
    assert verify(toy_nf4, "accuracy", n=1, folder=folder, on_mismatch="note") is None
    note = capsys.readouterr().out
    assert note.startswith("Note: the table 'accuracy' was computed with a model whose fingerprint is")
    assert "python -m flowkit fidelity" in note and note.count("\n") == 1
    (tmp_path / "fidelity.json").write_text((folder / "fidelity.json").read_text())
    table = load_table("accuracy", folder)
    table["p_answer"] = table["p_answer"] * 0.9 + 0.05
    _atomic_write_tables(tmp_path, {"accuracy": table})
    assert verify(letters_fp32, "accuracy", n=6, folder=tmp_path, on_mismatch="note") is None
    assert "does not match what the kit computes now" in capsys.readouterr().out


def test_per_task_accuracy_cells_carry_their_intervals():
    from flowkit.course.chapters import accuracy_by_task_table

    rows = pd.DataFrame(
        [
            {"task": "b_task", "condition": "full", "accuracy": 0.5, "lo": 0.36, "hi": 0.64},
            {"task": "b_task", "condition": "found", "accuracy": 0.56, "lo": 0.42, "hi": 0.7},
            {"task": "a_task", "condition": "full", "accuracy": 1.0, "lo": 1.0, "hi": 1.0},
            {"task": "a_task", "condition": "found", "accuracy": 0.98, "lo": 0.94, "hi": 1.0},
        ]
    )
    table = accuracy_by_task_table(rows, ["full", "found"])
    assert list(table.index) == ["a_task", "b_task"] and list(table.columns) == ["full", "found"]
    assert table.loc["b_task", "found"] == "56.0 [42.0, 70.0]" and table.loc["a_task", "full"] == "100.0 [100.0, 100.0]"
    with pytest.raises(FlowkitError, match="no rows for"):
        accuracy_by_task_table(rows, ["full", "random"])


def test_missing_results_say_how_to_make_them(tmp_path):
    from flowkit.course.results import load_report, load_table

    with pytest.raises(FlowkitError, match="python -m flowkit fidelity"):
        load_report(tmp_path)
    with pytest.raises(FlowkitError, match="unknown results table"):
        load_table("nope", tmp_path)


def test_paper_comparison_applies_the_targets(fidelity_run):
    from flowkit.course.fidelity import READOUT_NAMES, paper_comparison

    report, _, _ = fidelity_run
    rows = paper_comparison(report)
    names = [r[0] for r in rows]
    others = [name for name in report["F3"]["by_readout"] if name != "paper"]  # F3 again under each other readout
    assert names[0] == "accuracy" and "F4 edges kept" in names and len(rows) == 9 + len(others)
    assert [n for n in names if n.startswith("F3 p(true option) > 0.5 from layer — ")] == [
        f"F3 p(true option) > 0.5 from layer — {READOUT_NAMES[name]}" for name in others
    ]
    assert all(r[3] in ("reproduced", "partly", "not reproduced", "not measured") for r in rows)
    good = {"full": 0.9, "pathways": 0.9, "random": 0.5}
    fake = {
        **report,
        "F4": {
            **report["F4"],
            "accuracy": good,
            "accuracy_headline_tasks": good,
            "edges_kept_headline": {**report["F4"]["edges_kept_headline"], "mean": 0.4},
            "paired_headline_tasks": {
                "pathways": {"minus_full": 0.0, "ci": [-0.02, 0.02], "worse": 1, "better": 1},
                "random": {"minus_full": -0.4, "ci": [-0.5, -0.3], "worse": 40, "better": 0},
            },
        },
    }
    f4 = dict((r[0], r[3]) for r in paper_comparison(fake, findings=("F4",)))
    assert f4 == {"F4 edges kept": "reproduced", "F4 accuracy full / pathways / random": "reproduced"}
    assert "paired vs full: pathways +0.0 [95 % CI -2.0, +2.0] points" in paper_comparison(fake, findings=("F4",))[1][2]
    # the same point estimates, but the paired interval of the pathways reaches 6 points below full: partly
    fake["F4"]["paired_headline_tasks"]["pathways"]["ci"] = [-0.06, 0.02]
    assert paper_comparison(fake, findings=("F4",))[1][3] == "partly"
    assert report["F4"]["paired_headline_tasks"].keys() == {"pathways", "random"}  # the fidelity run stores them
    fake["F4"]["accuracy"] = fake["F4"]["accuracy_headline_tasks"] = {"full": 0.9, "pathways": 0.5, "random": 0.5}
    assert paper_comparison(fake, findings=("F4",))[1][3] == "not reproduced"
    # F1 is judged on the trough's interval: a point estimate past -20 % is not enough
    deep = {**report["F1"], "trough": -25.0, "trough_center": 1, "trough_ci": [-30.0, -21.0]}
    assert paper_comparison({**report, "F1": deep}, findings=("F1",))[0][3] == "reproduced"
    wide = {**deep, "trough_ci": [-30.0, -19.0]}
    assert paper_comparison({**report, "F1": wide}, findings=("F1",))[0][3] == "partly"
    # F2 names each headline task's own troughs beside the pooled order
    f2 = report["F2"]
    swept = {t["task"] for t in f2["per_task_question_to_last"]} & set(f2["tasks"])  # tasks with swept questions
    assert swept
    f2_row = paper_comparison(report, findings=("F2",))[0][2]
    task = sorted(swept)[0]
    vq = next(t["center"] for t in f2["per_task_video_to_question"] if t["task"] == task)
    ql = next(t["center"] for t in f2["per_task_question_to_last"] if t["task"] == task)
    assert f"per learned task, v->q / q->last troughs at: {task} {vq} / {ql}" in f2_row


# ------------------------------------------------------------------- one-cell check
def test_check_matches_the_readout(toy_fp32, prepared_fp32):
    result = check(
        toy_fp32, prepared_fp32, cut=["video->question", "video->last"], window=1, size=3, options=["l", "r", "u", "d"]
    )
    spec = KnockoutSpec.single("video->question", LayerWindow(1, 3)).plus(
        KnockoutSpec.single("video->last", LayerWindow(1, 3))
    )
    assert result.spec == spec
    assert result.after == toy_fp32.answer(prepared_fp32, spec)
    assert list(result.table.index) == ["(A) l", "(B) r", "(C) u", "(D) d"]
    assert "knockout:" in str(result) and result.chart().to_dict()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cut": []}, "say what to cut"),
        ({"cut": "video->last"}, "exactly one of"),
        ({"cut": "video->last", "layers": "1", "window": 2}, "exactly one of"),
        ({"cut": "video->last", "layers": "2-9"}, "layer"),
    ],
)
def test_check_bad_input(toy_fp32, prepared_fp32, kwargs, message):
    with pytest.raises(FlowkitError, match=message):
        check(toy_fp32, prepared_fp32, **kwargs)


# ---------------------------------------------------------------- pathways, sliders
def test_pathway_summary_counts_exactly(toy_fp32):
    from flowkit.data import generate
    from flowkit.analysis.experiments import pathway_summary
    from flowkit.analysis.pathways import PathwayWindows, pathway_spec

    samples = generate("scene_transition", 2, seed=5, num_frames=8, size=32)
    windows = PathwayWindows((0, 1), (1, 2), (2, 3), 2, 3)
    result = pathway_summary(toy_fp32, samples, windows, random_seeds=(0, 1))
    spans = toy_fp32.prepare_sample(samples[0]).spans
    exact = count_edges(pathway_spec(windows, 4), spans, 4)
    assert {key: result["edges"][key] for key in exact} == exact  # the first question's exact counts
    assert 0 < result["edges"]["mean_kept_fraction"] < 1
    assert result["edges"]["random_fraction"] == pytest.approx(1 - result["edges"]["mean_kept_fraction"])
    assert set(result["accuracy"]) == {"full", "pathways", "random"} and result["questions"] == 2
    assert json.loads(json.dumps(result)) == result  # plain data


def test_pathway_sliders_hold_windows_and_measure(toy_fp32):
    from flowkit.data import generate
    from flowkit.analysis.pathways import PathwayWindows
    from widgets import PathwaySliders

    windows = PathwayWindows((0, 1), (1, 2), (2, 3), 2, 3)
    sliders = PathwaySliders(toy_fp32, generate("scene_transition", 1, seed=5, num_frames=8, size=32), windows)
    assert sliders.windows == windows
    sliders.sliders["question_to_last"].value = (1, 3)
    assert sliders.windows.question_to_last == (1, 3)
    result = sliders.measure()
    assert result is sliders.result and "edges kept" in sliders.status.value
    with pytest.raises(FlowkitError, match="at least one question"):
        PathwaySliders(toy_fp32, [], windows)


# --------------------------------------------------------------- charts and clips
def test_attention_edges_chart_marks_cut_kept_and_future():
    from flowkit.course.exercises import _spans_cases
    from flowkit.intervention.masks import edge_block_mask
    from flowkit.views.plots import attention_edges

    spans = _spans_cases()[0]
    chart = attention_edges(edge_block_mask("cross_frame", spans), spans).to_dict()
    values = pd.DataFrame(next(iter(chart["datasets"].values())))
    counts = values["edge"].value_counts()
    n = spans.seq_len
    assert counts["cut"] == int(edge_block_mask("cross_frame", spans).sum())
    assert counts["cut"] + counts["kept"] == n * (n + 1) // 2 and (values["key"] <= values["query"]).all()
    with pytest.raises(ValueError, match="must be"):
        attention_edges(torch.zeros(3, 3, dtype=torch.bool), spans)


def test_offline_charts_render_png_without_network():
    import altair as alt

    from flowkit.views.plots import enable_offline_charts

    previous = alt.renderers.active
    try:
        enable_offline_charts()
        bundle = alt.Chart(pd.DataFrame({"x": [1, 2]})).mark_point().encode(x="x")._repr_mimebundle_()
        bundle = bundle[0] if isinstance(bundle, tuple) else bundle
        assert set(bundle) == {"image/png", "text/plain"}
    finally:
        alt.renderers.enable(previous)


def test_clip_strip_and_sample_lookup():
    from flowkit.course import chapters

    strip = chapters.clip_strip(np.zeros((8, 32, 32, 3), dtype=np.uint8), size=40, gap=2)
    assert strip.size == (8 * 42 - 2, 40)
    first = chapters.samples_of("scene_transition")[0]
    assert chapters.sample(first.id) is first
    with pytest.raises(FlowkitError, match="ids look like"):
        chapters.sample("scene_transition/9999")
    with pytest.raises(FlowkitError, match="no task"):
        chapters.samples_of("nope")


def test_knockout_grid_knows_its_sample(toy_fp32):
    from flowkit.data import generate
    from widgets import KnockoutGrid

    sample = generate("scene_transition", 1, seed=5, num_frames=8, size=32)[0]
    assert KnockoutGrid(toy_fp32, sample, edge_groups="frames").sample_id == sample.id
    assert KnockoutGrid(toy_fp32, toy_fp32.prepare_sample(sample)).sample_id == ""


def test_chapters_use_the_learned_tasks_of_the_stored_report():
    """The chapters' learned tasks (recomputed from the stored tables) are the fidelity report's."""
    from flowkit.course import chapters
    from flowkit.course.results import load_report

    report = load_report()
    assert chapters.learned_tasks() == report["learned"]["tasks"]
    clip = chapters.telling_clip("cross_frame")
    assert clip.task in report["learned"]["tasks"]
    table = chapters.learned_table()  # each accuracy with its 95 % interval, the report's where it has one
    assert {"accuracy", "chance", "control", "learned", "lo", "hi"} <= set(table.columns)
    assert ((table["lo"] <= table["accuracy"] + 1e-9) & (table["accuracy"] <= table["hi"] + 1e-9)).all()
    for task, (lo, hi) in report.get("accuracy_ci", {}).items():
        assert (table.loc[task, "lo"], table.loc[task, "hi"]) == pytest.approx((lo, hi))


def test_an_exercise_cell_never_raises_and_later_cells_use_what_passed(capsys):
    from flowkit.course.exercises import exercise, use

    def blank(p_base, p_new):
        raise NotImplementedError("Exercise 1.2")

    exercise("percent_change", blank)
    out = capsys.readouterr().out
    assert out.startswith("✗ percent_change: not written yet") and "reference percent_change" in out
    assert use("percent_change") is solutions.percent_change
    assert "the reference percent_change" in capsys.readouterr().out
    exercise("percent_change", WRONG["percent_change"])
    out = capsys.readouterr().out
    assert out.startswith("✗ percent_change: wrong on") and "expected:" in out
    exercise("percent_change", lambda p_base, p_new: [][1])  # crashes: said, not raised
    assert "it raised IndexError" in capsys.readouterr().out

    def mine(p_base, p_new):
        return 100.0 * (p_new - p_base) / p_base

    exercise("percent_change", mine)
    assert capsys.readouterr().out.startswith("✓ percent_change: ")
    assert use("percent_change") is mine
    assert capsys.readouterr().out.strip() == "(your percent_change)"
    exercise("percent_change", blank)  # a later failing attempt goes back to the reference
    assert use("percent_change") is solutions.percent_change
    with pytest.raises(KeyError, match="no exercise called"):
        use("nope")


def test_the_model_cards_findings_are_the_chapters(tmp_path):
    """One source: the shipped card's findings block is what card_findings writes from the stored report,
    whose rows and verdicts are the chapters' comparison tables."""
    from flowkit.course.fidelity import CARD_FINDINGS, card_findings, paper_comparison, write_card_findings
    from flowkit.course.results import load_report
    from flowkit.locations import data_path
    from flowkit.model.named_models import KIT_MODEL

    report = load_report()
    card = (data_path("models") / KIT_MODEL / "README.md").read_text()
    block = card.split(CARD_FINDINGS[0], 1)[1].split(CARD_FINDINGS[1], 1)[0].strip()
    assert block == card_findings(report), "the model card is stale: python -m flowkit fidelity --card-only"
    for finding, _paper, _ours, verdict, _rule in paper_comparison(report):
        assert f"| {finding} |" in block and f"| {verdict} |" in block
    copy = tmp_path / "README.md"
    copy.write_text(card)
    assert write_card_findings(copy, report) is False  # already current
    copy.write_text("# a card\n")
    with pytest.raises(FlowkitError, match="no findings block"):
        write_card_findings(copy, report)
