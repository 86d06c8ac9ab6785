"""The pathway search (flowkit.analysis.pathway_search): the edge partition, gated attention,
attribution scores, greedy exact pruning on a planted pathway, determinism and the saved spec."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch

from flowkit.analysis.pathway_search import (
    AccuracyRule,
    Gate,
    gate_bias,
    gate_grid,
    gate_masks,
    gates_of,
    held_out_report,
    question_gate_scores,
    rank_correlation,
    search_pathways,
    spec_of,
)
from flowkit.analysis.pathways import paper_windows, pathway_spec
from flowkit.data import Sample
from flowkit.errors import FlowkitError, KnockoutError
from flowkit.intervention.attention import apply_attention_biases, apply_block_masks
from flowkit.intervention.edge_groups import PARTITION_EDGE_GROUPS
from flowkit.intervention.masks import block_masks, causal_mask, count_edges, edge_block_mask
from flowkit.intervention.spec import KnockoutSpec

from conftest import OPTIONS, QUESTION, random_frames

#: the planted route: question tokens read the video in layer 0, the last position reads the question in layer 1
ROUTE = (Gate("video->question", 0), Gate("question->last", 1))
#: frame seeds whose answer (D) the toy model gives only through the route (cutting either gate flips it)
PLANTED_SEEDS = (1, 2, 3, 11)


def test_partition_edge_groups_are_disjoint_and_cover_every_edge_the_window_mask_can_cut(prepared_fp32):
    spans, layers = prepared_fp32.spans, 30
    masks = gate_masks(spans)
    assert masks.sum(dim=0).max() == 1  # disjoint
    union = masks.any(dim=0)
    window = block_masks(pathway_spec(paper_windows(layers), layers), spans, layers)
    for mask in window.values():
        assert not (mask & ~union).any()  # every edge the paper's mask cuts is in one group
    video_video = edge_block_mask("video->video", spans)
    assert torch.equal(edge_block_mask("within_frame", spans) | edge_block_mask("cross_frame", spans), video_video)
    assert not (edge_block_mask("within_frame", spans) & edge_block_mask("cross_frame", spans)).any()
    other = spans.positions("other_text")
    assert set(other) | set(spans.positions("question")) == set(spans.positions("prompt_after_video"))
    # "edges kept" of a set of gates is exact: the spec's count equals the gates' sizes
    gates = [Gate("within_frame", 1), Gate("video->other_text", 2), Gate("last->last", 0)]
    cut = count_edges(spec_of(gates), spans, 4)["cut"]
    sizes = {g: int(m.sum()) for g, m in zip(PARTITION_EDGE_GROUPS, masks)}
    assert cut == sum(sizes[g.edges] for g in gates)
    assert gates_of(spec_of(gates), 4) == sorted(gates)
    assert KnockoutSpec.from_json(spec_of(gates).to_json()) == spec_of(gates)


def test_a_gate_covering_all_of_a_query_keys_is_refused(prepared_fp32):
    from dataclasses import replace

    spans = replace(prepared_fp32.spans, video_span=(0, prepared_fp32.spans.video[1]))  # no prefix
    with pytest.raises(KnockoutError, match="no-op"):
        gate_masks(spans)
    assert causal_mask(3).sum() == 6


def test_gates_at_one_are_the_clean_model_and_near_zero_the_knockout(toy_fp32, prepared_fp32):
    session = toy_fp32.session(prepared_fp32)
    masks = gate_masks(prepared_fp32.spans)
    values = torch.ones(len(PARTITION_EDGE_GROUPS), toy_fp32.num_layers)
    with torch.no_grad(), apply_attention_biases(session.lm, gate_bias(values, masks)):
        clean = toy_fp32.model(**prepared_fp32.inputs, logits_to_keep=1).logits[0, -1]
    assert torch.allclose(clean, session.clean_logits, atol=1e-5)
    values[2, 1] = 0.0  # video->question in layer 1, clamped to EPSILON
    with torch.no_grad(), apply_attention_biases(session.lm, gate_bias(values, masks)):
        gated = toy_fp32.model(**prepared_fp32.inputs, logits_to_keep=1).logits[0, -1].softmax(-1)
    exact = session.last_logits([spec_of([Gate("video->question", 1)])])[0].softmax(-1)
    assert (gated - exact).abs().max() < 1e-4


def test_scores_are_the_gradient_of_log_p_answer(toy_fp32, prepared_fp32):
    session = toy_fp32.session(prepared_fp32)
    scores = question_gate_scores(session)
    assert scores.shape == (len(PARTITION_EDGE_GROUPS), toy_fp32.num_layers)
    masks = gate_masks(prepared_fp32.spans)
    theta = torch.zeros_like(scores)
    step = 1e-2
    theta[5, 2] = step  # question->last in layer 2, log g moved by +step (central difference)
    logp = []
    for sign in (1, -1):
        with torch.no_grad(), apply_attention_biases(session.lm, gate_bias(sign * theta, masks, log_space=True)):
            logits = toy_fp32.model(**prepared_fp32.inputs, logits_to_keep=1).logits[0, -1].double()
        logp.append(float(logits.log_softmax(-1)[prepared_fp32.letter_ids[1]]))
    assert math.isclose((logp[0] - logp[1]) / (2 * step), float(scores[5, 2]), rel_tol=0.05, abs_tol=1e-5)


def test_rank_correlation_and_the_rule():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 1, 2], [1, 1, 2]) == pytest.approx(1.0)
    rule = AccuracyRule()
    assert rule.passes([True] * 12, [True] * 12)
    assert not rule.passes([True] * 11 + [False], [True] * 12)  # one lost question of 12 is > 3 points
    assert rule.passes([True] * 400 + [False] * 2, [True] * 402)
    bounded = AccuracyRule(loss_margin=5.0)
    assert bounded.passes([True] * 12, [True] * 12, [-1.0] * 12)
    assert not bounded.passes([True] * 12, [True] * 12, [-10.0] * 12)  # every answer kept, p(answer) -10 %
    # a gain never hides a loss: half the questions +40 %, half -20 % (mean change +10 %, mean loss -10 %)
    assert not bounded.passes([True] * 12, [True] * 12, [40.0, -20.0] * 6)
    assert bounded.loss_lower_bound([40.0, 0.0, 25.0]) == 0.0
    assert AccuracyRule().passes([True] * 12, [True] * 12, [-90.0] * 12)  # no loss bound by default
    # one answer lost, four gained on 40 questions: the net rule passes; counting losses only it does not
    full = [True] * 20 + [False] * 20
    masked = [False] * 1 + [True] * 19 + [True] * 4 + [False] * 16
    assert AccuracyRule().passes(masked, full)
    losses_only = AccuracyRule(count_gains=False)
    assert not losses_only.passes(masked, full)
    assert losses_only.lower_bound(masked, full) < AccuracyRule().lower_bound(masked, full)
    assert losses_only.passes([True] * 40, full)  # gains alone are no loss
    assert losses_only.to_dict()["count_gains"] is False


def test_the_study_chooses_the_smallest_mask_that_keeps_97_percent_then_the_most_accurate():
    import pandas as pd

    from flowkit.course.pathway_study import choose_rule

    rows = pd.DataFrame({"accuracy": [0.74, 0.70, 0.75], "kept_share": [0.50, 0.40, 0.60]})
    assert choose_rule(rows, full_accuracy=0.75) == 0  # 0.74 >= 0.97 x 0.75; 0.70 is not; 0.50 < 0.60
    assert choose_rule(rows, full_accuracy=0.80) == 2  # none keeps 97 %: the most accurate
    tied = pd.DataFrame({"accuracy": [0.6, 0.6], "kept_share": [0.7, 0.5]})
    assert choose_rule(tied, full_accuracy=0.9) == 1  # equally accurate: fewer edges kept
    same_size = pd.DataFrame({"accuracy": [0.74, 0.75], "kept_share": [0.5, 0.5]})
    assert choose_rule(same_size, full_accuracy=0.75) == 1  # equally small: the more accurate
    with pytest.raises(FlowkitError, match="no candidate"):
        choose_rule(rows.iloc[:0], 0.75)


def planted_samples():
    return [
        Sample(f"planted/{seed}", "planted", random_frames(seed=seed), QUESTION, tuple(OPTIONS), "D", "down")
        for seed in PLANTED_SEEDS
    ]


@contextlib.contextmanager
def planted(vllm):
    """The toy model with every gate but the route's knocked out: the answer can only flow through the route."""
    spans = vllm.prepare_sample(planted_samples()[0]).spans  # every planted prompt has the same layout
    rest = [g for g in gate_grid(vllm.num_layers) if g not in ROUTE]
    with apply_block_masks(vllm.language_model, block_masks(spec_of(rest), spans, vllm.num_layers)):
        yield


def test_the_search_recovers_a_planted_pathway_and_cuts_the_rest(toy_fp32, tmp_path):
    samples = planted_samples()
    with planted(toy_fp32):
        # the toy's top token is often no letter: it answers by the option-letter rule
        result = search_pathways(toy_fp32, samples, cache=tmp_path / "cache", progress=False, prediction="options")
        for gate in ROUTE:  # each route gate alone carries the answer
            session = toy_fp32.session(toy_fp32.prepare_sample(samples[0]))
            assert session.clean_answer.predicted_letter == "D"
            assert session.answer(spec_of([gate])).predicted_letter != "D"
        again = search_pathways(  # from the cache
            toy_fp32, samples, cache=tmp_path / "cache", progress=False, prediction="options"
        )
    assert set(result.kept) == set(ROUTE)
    assert len(result.cut) == len(gate_grid(toy_fp32.num_layers)) - 2
    off_route = result.scores[~result.scores.apply(lambda r: Gate(r.edges, r.layer) in ROUTE, axis=1)]
    assert (off_route["score"] == 0).all()  # already cut: no gradient
    assert result.full_accuracy == 1.0 and result.path["kept"].any()
    assert again.spec == result.spec and again.path.equals(result.path)
    saved = result.save_spec(tmp_path / "found.json")
    assert KnockoutSpec.from_json(saved.read_text()) == result.spec


def own_answer_samples(vllm, seeds):
    """Questions on the unplanted toy model whose correct answer is the toy's own (option-letter rule)."""
    samples = []
    for seed in seeds:
        letter = vllm.answer(vllm.prepare(random_frames(seed=seed), QUESTION, OPTIONS)).predicted_letter
        text = OPTIONS["ABCD".index(letter)]
        samples.append(Sample(f"toy/{seed}", "toy", random_frames(seed=seed), QUESTION, tuple(OPTIONS), letter, text))
    return samples


def test_the_search_is_deterministic(toy_fp32):
    samples = own_answer_samples(toy_fp32, (0, 1))
    groups = ("cross_frame", "video->question", "question->last", "last->last")
    first = search_pathways(toy_fp32, samples[:2], groups=groups, progress=False, max_run=4, prediction="options")
    second = search_pathways(toy_fp32, samples[:2], groups=groups, progress=False, max_run=4, prediction="options")
    assert first.spec == second.spec
    assert first.path.equals(second.path)
    assert first.scores["rank"].tolist() == second.scores["rank"].tolist()


def test_every_step_decides_as_the_rule_does_on_plain_knockouts_of_every_question(toy_fp32):
    """Checks resume from earlier replays and stop early on a certain rejection: each step's verdict
    must still be the rule's verdict on plain (full-forward) knockouts of all the search questions."""
    samples = planted_samples()
    rule = AccuracyRule(loss_margin=20.0)
    with planted(toy_fp32):
        result = search_pathways(toy_fp32, samples, rule=rule, progress=False, max_run=8, prediction="options")
        sessions = [toy_fp32.session(toy_fp32.prepare_sample(s)) for s in samples]
        full = [session.clean_answer.is_correct("options") for session in sessions]
        before: list[Gate] = []
        for row in result.path.itertuples():
            spec = spec_of(before + [Gate(e, l) for e, l in json.loads(row.tried)])
            correct, pct = [], []
            for session, right in zip(sessions, full):
                clean = session.clean_answer
                try:
                    after = session.full_forward_answer(spec)
                    correct.append(after.is_correct("options"))
                    change = 100 * (after.probs[clean.true_option] - clean.probs[clean.true_option])
                    change /= clean.probs[clean.true_option]
                except KnockoutError:  # a cut that empties a row: refused, counted wrong and -100 %
                    correct.append(False)
                    change = -100.0
                if right:
                    pct.append(change)
            assert rule.passes(correct, full, pct) == row.kept, row
            if row.checked == len(samples):
                assert row.accuracy == pytest.approx(sum(correct) / len(correct))
            before = [Gate(e, l) for e, l in json.loads(row.cut_after)]
    assert (result.path["checked"] < len(samples)).any()  # some rejections stopped early
    assert result.path["kept"].any() and (~result.path["kept"]).any()


def test_held_out_report_refuses_search_questions_and_reports_each_condition(toy_fp32):
    samples = planted_samples()
    found = spec_of([Gate("last->last", layer) for layer in range(toy_fp32.num_layers)])
    with pytest.raises(Exception, match="search questions"):
        held_out_report(toy_fp32, samples[:1], found, search_samples=[samples[0].id], progress=False)
    table, summary = held_out_report(toy_fp32, samples[:2], found, progress=False)
    assert list(summary["condition"]) == ["full", "found", "window", "random"]
    row = summary.set_index("condition")
    assert row.loc["random", "seeds"] == 5
    assert row.loc["found", "edges_kept"] < row.loc["full", "edges_kept"]


def test_check_accepts_a_saved_spec(toy_fp32, prepared_fp32, tmp_path, capsys):
    from flowkit.cli import main
    from flowkit.knockout_check import check

    spec = spec_of([Gate("question->last", 1), Gate("within_frame", 0)])
    path = tmp_path / "found.json"
    path.write_text(spec.to_json())
    result = check(toy_fp32, prepared_fp32, spec=KnockoutSpec.from_json(path.read_text()))
    assert result.spec == spec
    assert result.after.probs != result.before.probs
    with pytest.raises(Exception, match="not both"):
        check(toy_fp32, prepared_fp32, "video->last", layers="1", spec=spec)
    code = main(
        ["check", "--video", "clip.mp4", "--question", "q", "--options", "a", "b", "--spec", str(path)]
        + ["--cut", "video->last"]
    )
    assert code == 2 and "drop --cut" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pathways", "search", "--help"])


def test_faithfulness_curve_table_and_chart(toy_fp32):
    from flowkit.analysis.pathway_search import faithfulness_curve
    from flowkit.views import plots

    samples = planted_samples()[:1]
    table = faithfulness_curve(
        toy_fp32,
        samples,
        presets=("llava-next-7b-video-ft",),
        random_fractions=(0.5,),
        random_seeds=(0,),
        progress=False,
    )
    assert set(table["family"]) == {"full", "paper windows", "random"}
    assert table.set_index("family").loc["full", "suppressed_share"] == 0
    spec = plots.faithfulness_curve(table).to_dict()
    assert spec["title"].startswith("Faithfulness")


def test_the_pathway_experiment_accepts_a_found_spec(toy_fp32):
    from flowkit.analysis.experiments import pathway_summary

    samples = planted_samples()[:1]
    spec = spec_of([Gate("last->last", layer) for layer in range(toy_fp32.num_layers)])
    summary = pathway_summary(toy_fp32, samples, spec)
    assert summary["windows"] == spec.to_dict()
    assert 0 < summary["random_fraction"] < 0.05


def test_a_random_control_interval_resamples_questions_not_seed_rows():
    import pandas as pd

    from flowkit.analysis.pathway_search import summarize_conditions

    rows = []  # 10 questions x 5 seeds: question i is right under seeds < i // 2
    for i in range(10):
        for seed in range(5):
            correct = seed < i // 2
            rows.append(
                {"sample": f"q{i}", "family": "random", "condition": "random", "seed": seed, "correct": correct}
            )
    table = pd.DataFrame(rows).assign(pct_change=0.0, edges_kept=1, suppressed_share=0.5)
    (row,) = summarize_conditions(table).to_dict("records")
    per_question = [min(i // 2, 5) / 5 for i in range(10)]
    assert row["accuracy"] == pytest.approx(sum(per_question) / 10)
    assert row["questions"] == 10 and row["seeds"] == 5
    pooled = summarize_conditions(table.assign(sample=[f"r{i}" for i in range(50)], seed=None))
    width = row["hi"] - row["lo"]
    assert width > 1.2 * (pooled["hi"][0] - pooled["lo"][0])  # 50 rows as if independent: too narrow
    assert row["seed_min"] < row["accuracy"] < row["seed_max"]
    # the chapters' paired table (experiments.pathway_accuracy) prints the same interval for the same rows
    from flowkit.analysis.experiments import pathway_accuracy

    full = pd.DataFrame(
        [{"sample": f"q{i}", "condition": "full", "seed": None, "correct": i % 3 > 0} for i in range(10)]
    )
    both = pd.concat([table.iloc[::-1], full.assign(family="full", pct_change=0.0, edges_kept=2, suppressed_share=0.0)])
    paired = {r["condition"]: (r["lo"], r["hi"]) for r in pathway_accuracy(both, conditions=("full", "random"))}
    summary = summarize_conditions(both).set_index("condition")
    assert all(paired[c] == (summary.loc[c, "lo"], summary.loc[c, "hi"]) for c in ("full", "random"))


def test_a_mask_condition_is_data(toy_fp32, prepared_fp32):
    from flowkit.analysis.pathway_search import MaskCondition

    found = spec_of([Gate("question->last", 1)])
    for condition in (
        MaskCondition("found", "found", spec=found),
        MaskCondition("random", "random", random_like=found, seed=3),
        MaskCondition("random", "random f=0.5", random_fraction=0.5, seed=1),
    ):
        again = MaskCondition.from_dict(json.loads(json.dumps(condition.to_dict())))
        assert again == condition
        a, b = condition.masks(prepared_fp32.spans, 2), again.masks(prepared_fp32.spans, 2)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_gate_swept_from_open_to_shut_goes_from_the_clean_run_to_the_knockout(toy_fp32, prepared_fp32):
    from flowkit.analysis.pathway_search import gate_sweep, gate_table
    from flowkit.views import plots

    session = toy_fp32.session(prepared_fp32)
    table = gate_sweep(session, Gate("question->last", 1), values=(1.0, 0.5, 0.0))
    assert table["p_answer"][0] == pytest.approx(table["clean"][0], abs=1e-5)
    assert table["p_answer"].iloc[-1] == pytest.approx(table["knockout"][0], abs=1e-5)
    assert table["p_answer"][1] != pytest.approx(table["clean"][0], abs=1e-7)
    with pytest.raises(Exception, match="not one of the search's edge groups"):
        gate_sweep(session, Gate("video->video", 1))
    with pytest.raises(Exception, match="not a layer"):
        gate_sweep(session, Gate("question->last", 99))
    found = spec_of([Gate("question->last", 1), Gate("cross_frame", 0)])
    gates = gate_table(found, toy_fp32.num_layers)
    assert len(gates) == len(PARTITION_EDGE_GROUPS) * toy_fp32.num_layers and (~gates["kept"]).sum() == 2
    chart = plots.gate_map(gates).to_dict()
    assert chart["title"] == "Which gates the search kept"


SEARCH_IN_ANOTHER_KERNEL = """
import sys
sys.path[:0] = [{tests!r}]
from flowkit import load_videollm
from test_pathway_search import planted, planted_samples
from flowkit.analysis.pathway_search import search_pathways
vllm = load_videollm({checkpoint!r}, quant="fp32")
with planted(vllm):
    result = search_pathways(vllm, planted_samples(), progress=False, prediction="options", max_run=8)
print(result.spec.to_json())
print(result.path[["tried", "kept"]].to_json())
"""


def test_the_search_finds_the_same_mask_under_another_cpus_arithmetic(toy_checkpoint, toy_fp32):
    """The same questions give the same mask and the same path with PyTorch's non-SIMD kernels."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    with planted(toy_fp32):
        here = search_pathways(toy_fp32, planted_samples(), progress=False, prediction="options", max_run=8)
    script = SEARCH_IN_ANOTHER_KERNEL.format(tests=str(Path(__file__).parent), checkpoint=str(toy_checkpoint))
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    spec, path = run.stdout.strip().splitlines()[-2:]
    assert KnockoutSpec.from_json(spec) == here.spec
    assert path == here.path[["tried", "kept"]].to_json()


def test_a_report_counts_a_mask_refused_on_a_prompt_as_wrong_instead_of_failing(toy_fp32):
    from flowkit.analysis.pathway_search import MaskCondition, conditions_table, summarize_conditions

    from flowkit.intervention.spec import Cut, LayerSet

    into_last = [Gate(g, 0) for g in ("question->last", "other_text->last", "video->last", "last->last")]
    everything = KnockoutSpec(spec_of(into_last).cuts + (Cut("prefix->last", LayerSet((0,))),))  # last reads nothing
    table = conditions_table(
        toy_fp32, planted_samples()[:2], [MaskCondition("found", "all cut", spec=everything)], progress=False
    )
    refused = table[table["condition"] == "all cut"]
    assert refused["refused"].all() and not refused["correct"].any() and refused["p_answer"].isna().all()
    assert not table[table["condition"] == "full"]["refused"].any()
    assert summarize_conditions(table).set_index("condition").loc["all cut", "accuracy"] == 0
    with pytest.raises(Exception, match="pass the % changes"):
        AccuracyRule(loss_margin=5.0).passes([True], [True])


def test_search_questions_first_or_a_seeded_sample_never_held_out():
    from flowkit.course.pathway_study import split_questions

    frames = random_frames(seed=0)
    samples = [
        Sample(f"{task}/{i:04d}", task, frames, "q", ("a", "b"), "A", "a") for task in ("t1", "t2") for i in range(12)
    ]
    first, held = split_questions(samples, ["t1", "t2"], 3)
    assert [s.id for s in first] == ["t1/0000", "t1/0001", "t1/0002", "t2/0000", "t2/0001", "t2/0002"]
    drawn, rest = split_questions(samples, ["t1", "t2"], 3, how="random", seed=5)
    again, _ = split_questions(samples, ["t1", "t2"], 3, how="random", seed=5)
    assert [s.id for s in drawn] == [s.id for s in again] and len(drawn) == 6
    assert [s.id for s in drawn] != [s.id for s in first]
    assert not {s.id for s in drawn} & {s.id for s in rest} and len(rest) == 18
    held_two = split_questions(samples, ["t1", "t2"], 3, held_out_per_task=2, how="random", seed=5)[1]
    assert [s.id for s in held_two] == [s.id for s in rest if s.task == "t1"][:2] + [
        s.id for s in rest if s.task == "t2"
    ][:2]
    with pytest.raises(Exception, match="how must be one of"):
        split_questions(samples, ["t1"], 3, how="best")


def test_kept_layers_lists_the_open_gates_of_each_route():
    from flowkit.analysis.pathway_search import kept_layers

    found = spec_of([Gate("other_text->last", 1), Gate("video->other_text", 0), Gate("video->other_text", 2)])
    routes = kept_layers(found, 3, ("video->other_text", "other_text->last", "video->last"))
    assert routes == {"video->other_text": [1], "other_text->last": [0, 2], "video->last": [0, 1, 2]}
    with pytest.raises(Exception, match="not one of the search's edge groups"):
        kept_layers(found, 3, ("video->template",))
