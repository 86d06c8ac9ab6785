"""The session's shortcuts give the same answers as a full forward under the same spec."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from flowkit import KnockoutSpec, LayerSet, LayerWindow
from flowkit.analysis.result_cache import CorruptCacheWarning, ResultCache
from flowkit.intervention.spec import Cut
from flowkit.analysis.sweep import COLUMNS, summarize, sweep

from conftest import OPTIONS, QUESTION, random_frames

EDGE_GROUPS = [
    "cross_frame",
    "video->question",
    "video->last",
    "question->last",
    "last->last",
    "question_text->last",
    "true_option->last",
    "false_options->last",
]


def all_specs(num_layers):
    specs = [KnockoutSpec.single(g, LayerWindow(c, 3)) for g in EDGE_GROUPS for c in range(num_layers)]
    specs.append(KnockoutSpec((Cut("cross_frame", LayerSet((0, 1))), Cut("question->last", LayerSet((2, 3))))))
    specs.append(KnockoutSpec())
    return specs


@pytest.mark.parametrize("model", ["toy_fp32", "toy_nf4", "toy_eager"])
def test_session_matches_full_forward_for_every_edge_group(model, request):
    vllm = request.getfixturevalue(model)
    prepared = vllm.prepare(random_frames(seed=11), QUESTION, OPTIONS, answer="D")
    session = vllm.session(prepared)
    specs = all_specs(vllm.num_layers)
    fast = session.last_logits(specs)
    worst = 0.0
    for spec, logits in zip(specs, fast):
        reference = vllm.last_logits(prepared, spec)
        worst = max(worst, float((torch.softmax(reference, -1) - torch.softmax(logits, -1)).abs().max()))
    # fp32 and nf4 alike: the replay runs the same (dequantized) weights, only summation order differs
    assert worst <= 1e-5, worst


def test_plans_pick_the_cheapest_exact_path(toy_fp32, prepared_fp32):
    session = toy_fp32.session(prepared_fp32)
    spans, layers = prepared_fp32.spans, toy_fp32.num_layers
    last = session.plan(KnockoutSpec.single("question->last", LayerSet((2, 3))))
    assert (last.first_layer, last.first_position) == (2, spans.last)
    assert last.layer_positions == 2 * 1
    vq = session.plan(KnockoutSpec.single("video->question", LayerSet((1,))))
    assert (vq.first_layer, vq.first_position) == (1, spans.question[0])  # the paper's question span
    cross = session.plan(KnockoutSpec.single("cross_frame", LayerWindow(0, 3)))
    assert (cross.first_layer, cross.first_position) == (0, spans.frame_spans[1][0])
    clean = session.plan(KnockoutSpec())
    assert clean.layer_positions == 0
    assert session.plan(KnockoutSpec.single("video->last", "0")).layer_positions == layers * 1


def test_batches_of_any_size_agree(toy_fp32, prepared_fp32):
    specs = all_specs(toy_fp32.num_layers)
    one_by_one = toy_fp32.session(prepared_fp32, row_budget=1).last_logits(specs)
    batched = toy_fp32.session(prepared_fp32, row_budget=4096).last_logits(specs)
    for a, b in zip(one_by_one, batched):
        assert torch.allclose(torch.softmax(a, -1), torch.softmax(b, -1), atol=1e-6)


def test_a_batch_grows_as_the_replay_reaches_each_specs_first_layer(toy_fp32, prepared_fp32):
    """No layer is recomputed for a spec before its first cut layer, even inside a batch."""
    layers = toy_fp32.num_layers
    specs = [KnockoutSpec.single("question->last", LayerSet((first,))) for first in range(layers)]
    session = toy_fp32.session(prepared_fp32)
    _ = session.clean_logits  # the clean run, on first use
    seen = {}
    handles = [
        layer.register_forward_pre_hook(
            lambda _m, args, kwargs, i=i: seen.setdefault(i, []).append(
                (args[0] if args else kwargs["hidden_states"]).shape[0]
            ),
            with_kwargs=True,
        )
        for i, layer in enumerate(session.layers)
    ]
    try:
        fast = session.last_logits(specs)  # one batch: every spec starts at the last position
    finally:
        for handle in handles:
            handle.remove()
    assert seen == {i: [i + 1] for i in range(layers)}  # spec k joins at layer k
    for spec, logits in zip(specs, fast):
        reference = toy_fp32.last_logits(prepared_fp32, spec)
        assert torch.allclose(torch.softmax(reference, -1), torch.softmax(logits, -1), atol=1e-6)


def test_session_clean_answer_is_the_stock_answer(toy_nf4):
    prepared = toy_nf4.prepare(random_frames(seed=12), QUESTION, OPTIONS, answer="A")
    assert toy_nf4.session(prepared).clean_answer == toy_nf4.answer(prepared)


@pytest.fixture(scope="module")
def samples():
    from flowkit.data import generate

    return generate("moving_direction", 2, seed=7, num_frames=8, size=32) + generate(
        "scene_transition", 1, seed=7, num_frames=8, size=32
    )


def test_sweep_table_matches_naive(toy_fp32, samples):
    edge_groups = ["cross_frame", "question->last"]
    fast = sweep(toy_fp32, samples, edge_groups=edge_groups, size=3, progress=False)
    naive = sweep(toy_fp32, samples, edge_groups=edge_groups, size=3, progress=False, replay=False)
    assert list(fast.columns) == COLUMNS
    assert len(fast) == len(samples) * len(edge_groups) * toy_fp32.num_layers
    assert set(fast["task"]) == {"moving_direction", "scene_transition"}
    assert (fast[["sample", "edge_group", "center"]].values == naive[["sample", "edge_group", "center"]].values).all()
    assert (fast["p_new"] - naive["p_new"]).abs().max() <= 1e-5
    row = fast.iloc[0]
    assert row["pct_change"] == pytest.approx(100 * (row["p_new"] - row["p_base"]) / row["p_base"])
    table = summarize(fast, only_correct=False)
    assert set(table.columns) >= {"task", "edge_group", "center", "pct_change", "n"}


def test_sweep_cache_is_used_and_corruption_is_recomputed(toy_fp32, samples, tmp_path, monkeypatch):
    import flowkit.intervention.session

    first = sweep(toy_fp32, samples[:1], edge_groups=["last->last"], size=3, cache=tmp_path, progress=False)
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 1

    class Forbidden(flowkit.intervention.session.Session):
        def __init__(self, *a, **k):
            raise AssertionError("everything should come from the cache")

    monkeypatch.setattr(flowkit.intervention.session, "Session", Forbidden)
    again = sweep(toy_fp32, samples[:1], edge_groups=["last->last"], size=3, cache=tmp_path, progress=False)
    assert again.equals(first)
    monkeypatch.undo()

    # a tampered record fails its checksum and is recomputed
    data = json.loads(files[0].read_text())
    key = next(k for k in data if "last->last" in k)
    data[key]["payload"]["probs"][0] = 0.123
    files[0].write_text(json.dumps(data))
    with pytest.warns(CorruptCacheWarning, match="failed its check"):
        redone = sweep(toy_fp32, samples[:1], edge_groups=["last->last"], size=3, cache=tmp_path, progress=False)
    # recomputed alone instead of in a batch: equal up to float summation order
    assert (redone["p_new"] - first["p_new"]).abs().max() <= 1e-9

    # a truncated file is reported, recomputed and rewritten whole
    files[0].write_text(files[0].read_text()[:40])
    with pytest.warns(CorruptCacheWarning, match="unreadable"):
        sweep(toy_fp32, samples[:1], edge_groups=["last->last"], size=3, cache=tmp_path, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ResultCache(tmp_path).get(toy_fp32.fingerprint, samples[0].id, KnockoutSpec().to_json()) is not None
    assert not list(tmp_path.rglob(".tmp-*"))


def test_fingerprint_separates_quantizations(toy_fp32, toy_nf4):
    assert toy_fp32.fingerprint != toy_nf4.fingerprint
    assert toy_fp32.fingerprint == toy_fp32.fingerprint


def test_families_without_replay_fall_back_to_full_forwards(toy_fp32, prepared_fp32, monkeypatch):
    monkeypatch.setattr(type(toy_fp32.adapter), "supports_replay", False)
    session = toy_fp32.session(prepared_fp32)
    spec = KnockoutSpec.single("video->question", LayerSet((1, 2)))
    assert torch.equal(session.last_logits([spec])[0], toy_fp32.last_logits(prepared_fp32, spec))
