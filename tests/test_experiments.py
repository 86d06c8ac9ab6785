"""The findings' functions on a tiny model: shapes, consistency with the readout, exact counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowkit.errors import FlowkitError
import torch

from flowkit.analysis import experiments
from flowkit.intervention.masks import block_masks
from flowkit.analysis.pathways import PathwayWindows, layer_matched_random_block_masks, paper_windows, pathway_spec


@pytest.fixture(scope="module")
def samples():
    from flowkit.data import generate

    return generate("action_antonym", 2, seed=3, num_frames=8, size=32)


def test_answer_emergence_last_layer_is_the_answer(toy_fp32, samples):
    df = experiments.answer_emergence(toy_fp32, samples, progress=False)
    assert len(df) == len(samples) * toy_fp32.num_layers
    last = df[df["layer"] == toy_fp32.num_layers - 1].iloc[0]
    dist = toy_fp32.answer(toy_fp32.prepare_sample(samples[0]))
    assert last["p_true"] == pytest.approx(dist.p(samples[0].answer), rel=1e-4)
    assert ((df["p_true"] >= 0) & (df["p_true"] <= 1)).all()


@pytest.mark.parametrize("kind", ["embedding", "logit"])
def test_video_token_lens_shares(toy_fp32, samples, kind):
    df = experiments.video_token_lens(toy_fp32, samples[:1], kind=kind, k=5, progress=False)
    assert sorted(df["layer"].unique()) == list(range(toy_fp32.num_layers))  # the paper's numbering
    df = experiments.video_token_lens(toy_fp32, samples[:1], kind=kind, k=5, progress=False, layers="resid_post")
    assert sorted(df["layer"].unique()) == list(range(-1, toy_fp32.num_layers))
    assert np.allclose(df["temporal_share"] + df["spatial_share"], 1.0)
    assert df["temporal_share"].between(0, 1).all()


def test_effective_pathways_counts_and_conditions(toy_fp32, samples):
    windows = PathwayWindows(
        cross_frame=(0, 1),
        video_to_question=(0, 2),
        question_to_last=(2, 3),
        video_to_video_until=2,
        question_to_question_until=3,
    )
    df, counts = experiments.effective_pathways(toy_fp32, samples, windows, random_seeds=(0, 1), progress=False)
    assert set(df["condition"]) == {"full", "pathways", "random"}
    assert len(df) == len(samples) * 4
    assert 0 < counts["kept_fraction"] < 1 and counts["kept"] + counts["cut"] == counts["total"]
    full = df[df["condition"] == "full"].iloc[0]
    assert full["p_answer"] == pytest.approx(toy_fp32.answer(toy_fp32.prepare_sample(samples[0])).p(samples[0].answer))


def test_layer_matched_random_masks_cut_as_many_edges_per_layer(prepared_fp32):
    spec = pathway_spec(paper_windows(4), 4)
    masks = block_masks(spec, prepared_fp32.spans, 4)
    rand = layer_matched_random_block_masks(masks, prepared_fp32.seq_len, 4, seed=0)
    for layer, mask in masks.items():
        assert int(rand[layer].sum()) == int(mask.sum())
        assert not torch.diagonal(rand[layer]).any()
    again = layer_matched_random_block_masks(masks, prepared_fp32.seq_len, 4, seed=0)
    assert all(torch.equal(rand[l], again[l]) for l in rand)


def test_paper_windows_match_the_paper_at_32_layers():
    w = paper_windows(32)
    assert (w.cross_frame, w.video_to_question, w.question_to_last) == ((5, 14), (5, 19), (15, 24))
    assert (w.video_to_video_until, w.question_to_question_until) == (19, 24)


def test_windows_from_sweeps_reads_troughs():
    rows = []
    for edge_group, trough in (("cross_frame", 8), ("video->question", 12), ("question->last", 20)):
        for center in range(30):
            rows.append(
                {
                    "task": "t",
                    "edge_group": edge_group,
                    "center": center,
                    "pct_change": -40.0 * np.exp(-(((center - trough) / 2.0) ** 2)),
                }
            )
    windows = experiments.windows_from_sweeps(pd.DataFrame(rows), 30)
    assert windows.cross_frame[0] <= 8 <= windows.cross_frame[1]
    assert windows.video_to_question[0] <= 12 <= windows.video_to_question[1]
    assert windows.question_to_last[0] <= 20 <= windows.question_to_last[1]
    table = experiments.troughs(pd.DataFrame(rows).assign(task="t"))
    assert dict(zip(table["edge_group"], table["center"])) == {
        "cross_frame": 8,
        "question->last": 20,
        "video->question": 12,
    }


def test_effective_pathways_random_controls_and_their_fraction(toy_fp32, samples):
    windows = PathwayWindows(
        cross_frame=(0, 1),
        video_to_question=(0, 2),
        question_to_last=(2, 3),
        video_to_video_until=2,
        question_to_question_until=3,
    )
    df, counts = experiments.effective_pathways(
        toy_fp32, samples, windows, random_seeds=(0,), random_controls=("paper", "layer_matched"), progress=False
    )
    assert set(df["condition"]) == {"full", "pathways", "random", "random_layer_matched"}
    assert len(df) == len(samples) * 4
    # on a model the paper did not study, f is the mean share its own pathway mask suppresses
    assert counts["random_fraction"] == pytest.approx(1 - counts["mean_kept_fraction"])
    assert "mean over 2 questions" in counts["random_fraction_source"]
    # a given f is used as is; the same seed gives the same rows
    again, given = experiments.effective_pathways(
        toy_fp32, samples[:1], windows, random_seeds=(0,), random_fraction=counts["random_fraction"], progress=False
    )
    first = df[(df["sample"] == samples[0].id) & (df["condition"] == "random")]
    assert given["random_fraction_source"] == "given"
    assert again[again["condition"] == "random"]["p_answer"].tolist() == pytest.approx(first["p_answer"].tolist())


def test_effective_pathways_preset_needs_its_depth(toy_fp32, samples):
    with pytest.raises(Exception, match="is for 32 layers, this model has 4"):
        experiments.effective_pathways(toy_fp32, samples, "llava-next-7b-video-ft", progress=False)
    with pytest.raises(Exception, match="unknown random control"):
        experiments.effective_pathways(
            toy_fp32, samples, paper_windows(4), random_controls=("uniform",), progress=False
        )


def test_summarize_accuracy_after_is_the_papers():
    # four questions of one (task, edge group, centre): correct before / after
    df = pd.DataFrame(
        {
            "task": "t",
            "edge_group": "video->question",
            "center": 3,
            "pct_change": [-10.0, -30.0, 5.0, 50.0],
            "correct_base": [True, True, False, False],
            "correct_after": [True, False, True, False],
        }
    )
    row = experiments.summarize(df).iloc[0]
    assert row["pct_change"] == pytest.approx(-20.0) and row["n"] == 2  # averaged over correct questions
    assert row["questions"] == 4 and row["accuracy_before"] == pytest.approx(0.5)
    # the paper's (its default --sample_mode correct): correct before and after / all questions; question 2,
    # wrong before and right after, does not count
    assert row["accuracy_after"] == pytest.approx(0.25)
    assert row["still_correct_share"] == pytest.approx(0.5)  # of the 2 correct questions, 1 stays correct
    df.loc[1, "correct_after"] = True
    row = experiments.summarize(df).iloc[0]
    assert row["accuracy_after"] == pytest.approx(0.5) and row["still_correct_share"] == pytest.approx(1.0)


def test_pathway_accuracy_averages_seeds_per_question_before_the_interval():
    import pandas as pd

    from flowkit.analysis.experiments import pathway_accuracy

    rows = []
    for q in range(6):
        rows.append({"sample": f"q{q}", "condition": "full", "seed": None, "correct": True})
        rows.append({"sample": f"q{q}", "condition": "pathways", "seed": None, "correct": q != 0})
        for seed in range(4):  # question q is right under seeds < q: seed accuracies differ
            rows.append({"sample": f"q{q}", "condition": "random", "seed": seed, "correct": seed < q})
    table = pd.DataFrame(rows)
    calls = []

    def interval(values, seed=0):
        calls.append(len(values))
        return float(min(values)), float(max(values))

    out = {r["condition"]: r for r in pathway_accuracy(table, interval, task="toy")}
    assert set(calls) == {6}  # one value per question, never one per seed row
    assert out["pathways"]["accuracy"] == pytest.approx(5 / 6) and out["pathways"]["minus full"] == pytest.approx(
        -1 / 6
    )
    assert out["random"]["accuracy"] == pytest.approx(sum(min(q, 4) / 4 for q in range(6)) / 6)
    assert (out["random"]["lo"], out["random"]["hi"]) == (0.0, 1.0)
    assert out["random"]["seed range"] == "33.3-83.3 %" and out["full"]["seed range"] == ""
    assert out["full"]["task"] == "toy" and out["full"]["questions"] == 6
    # answers changed: pathways loses question 0; random is below full on every question but q4, q5
    assert (out["pathways"]["worse"], out["pathways"]["better"]) == (1, 0)
    assert (out["random"]["worse"], out["random"]["better"]) == (4, 0)
    assert (out["full"]["worse"], out["full"]["better"]) == (0, 0)
    with pytest.raises(FlowkitError, match="no rows for"):
        pathway_accuracy(table[table["condition"] != "random"])


def test_leave_one_task_out_shows_which_task_carries_the_headline():
    import pandas as pd

    from flowkit.analysis.experiments import leave_one_task_out

    rows = [
        {
            "sample": f"{task}/{q}",
            "task": task,
            "edge_group": "cross_frame",
            "center": c,
            "pct_change": (-60.0 if task == "deep" else -5.0) * (c == 2) - q,
            "correct_base": True,
        }
        for task in ("deep", "flat1", "flat2")
        for q in range(4)
        for c in range(4)
    ]
    table = leave_one_task_out(pd.DataFrame(rows), ["deep", "flat1", "flat2"]).set_index("left_out")
    assert list(table.index) == ["none", "deep", "flat1", "flat2"]
    assert table.loc["none", "n"] == 12 and table.loc["deep", "n"] == 8
    assert table.loc["deep", "pct_change"] == pytest.approx(-5.0 - 1.5)  # the flat tasks alone
    assert table.loc["none", "pct_change"] < table.loc["deep", "pct_change"] and table.loc["none", "center"] == 2
