"""The session replays every supported family exactly, the paper's PLLaVA route included.

For each family's tiny same-class model: the adapter declares ``supports_replay``,
an :class:`~flowkit.intervention.session.Session` really replays (no fallback), and its answers under
specs and under raw masks (pathway-like and the paper's random control) equal a full
forward under the same masks to <= 1e-5 in p. Where a replay would be wrong if done
naively, a test shows why: Qwen3-VL's deepstack features must be re-added after the same
layers, and a sliding-window layer is answered with full forwards (the fallback).
"""

from __future__ import annotations

import pytest
import torch

from flowkit import KnockoutSpec, LayerSet, LayerWindow, load_videollm
from flowkit.intervention.spec import Cut
from flowkit.intervention.attention import apply_block_masks
from flowkit.intervention.masks import block_masks
from flowkit.analysis.pathways import paper_random_block_masks
from flowkit.testing.tiny_models import TOY_BUILDERS

from conftest import OPTIONS, QUESTION, random_frames

FAMILIES = ["llava_onevision", "qwen2_5_vl", "qwen3_vl", "video_llama_3", "internvl", "pllava"]


@pytest.fixture(scope="module")
def family_model(tmp_path_factory):
    """Family name -> loaded fp32 model (built and loaded on first use)."""
    root = tmp_path_factory.mktemp("session-families")
    loaded = {}

    def get(family):
        if family not in loaded:
            if family == "pllava":
                from flowkit.convert.pllava import main
                from test_convert_pllava import pllava_source

                pllava_source(root / "pllava-src")
                assert main([str(root / "pllava-src"), str(root / "pllava")]) == 0
                folder = root / "pllava"
            else:
                folder = TOY_BUILDERS[family](root / family, seed=0)
            loaded[family] = load_videollm(folder, quant="fp32")
        return loaded[family]

    return get


def prepare(vllm, seed=3):
    frames = getattr(vllm.adapter, "num_frames", 8)
    return vllm.prepare(random_frames(frames, seed=seed), QUESTION, OPTIONS, answer="C")


def full_forward(vllm, prepared, masks):
    with torch.inference_mode(), apply_block_masks(vllm.language_model, masks):
        return vllm.model(**prepared.inputs, logits_to_keep=1).logits[0, -1].float()


def max_dp(a, b):
    return float((torch.softmax(a, -1) - torch.softmax(b, -1)).abs().max())


def family_specs(num_layers):
    last = num_layers - 1
    return [
        KnockoutSpec.single("cross_frame", LayerWindow(0, 3)),
        KnockoutSpec.single("video->question", LayerSet((1,))),
        KnockoutSpec.single("question->last", LayerSet((last,))),
        KnockoutSpec.single("video->last", LayerSet(tuple(range(num_layers)))),
        KnockoutSpec((Cut("video->question", LayerSet((0,))), Cut("last->last", LayerSet((last,))))),
        KnockoutSpec(),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_replays_exactly(family_model, family):
    vllm = family_model(family)
    assert vllm.adapter.supports_replay
    prepared = prepare(vllm)
    session = vllm.session(prepared)
    assert session.replay, session.fallback_reason
    specs = family_specs(vllm.num_layers)
    for spec, fast in zip(specs, session.last_logits(specs)):
        assert max_dp(fast, vllm.last_logits(prepared, spec)) <= 1e-5, (family, str(spec))
    # raw masks: a spec's masks, two draws of the paper's random control, the clean run — one batch
    spans = prepared.spans
    n, pool = spans.seq_len, spans.seq_len - spans.video[0]
    f = 0.5 * pool * (pool + 1) / (n * (n + 1))  # half of the pairs the paper's control may draw from
    masks = [
        block_masks(specs[4], spans, vllm.num_layers),
        paper_random_block_masks(n, spans.video[0], vllm.num_layers, f, seed=0),
        paper_random_block_masks(n, spans.video[0], vllm.num_layers, f, seed=1),
        {},
    ]
    fast = session.last_logits(masks)
    assert torch.equal(fast[-1], session.clean_logits)
    for m, logits in zip(masks, fast):
        assert max_dp(logits, full_forward(vllm, prepared, m)) <= 1e-5, family


@pytest.mark.slow
def test_qwen3_deepstack_is_re_added_by_the_replay(family_model):
    """Why Qwen3-VL needs care: its video positions get visual features added after the first
    layers. A replay from layer 0 that skipped them would be wrong; the session re-adds them."""
    vllm = family_model("qwen3_vl")
    prepared = prepare(vllm)
    session = vllm.session(prepared)
    _ = session.clean_logits  # the clean run (on first use) records the deepstack features
    assert session.deepstack, "the toy Qwen3-VL should inject deepstack features"
    spec = KnockoutSpec.single("video->last", LayerSet((0,)))  # replays from layer 0, the video rows included
    masks = block_masks(KnockoutSpec.single("cross_frame", LayerSet((0,))), prepared.spans, vllm.num_layers)
    reference = full_forward(vllm, prepared, masks)
    assert max_dp(session.last_logits([masks])[0], reference) <= 1e-5
    session.deepstack = []  # what a naive replay would do: logits off by far more than rounding
    naive = session.last_logits([masks])[0]
    assert float((naive - reference).abs().max()) > 1e-2
    assert session.plan(spec).first_layer == 0


@pytest.mark.slow
def test_sliding_window_layers_fall_back_to_full_forwards(family_model, monkeypatch):
    """One plain causal mask cannot stand for a sliding window: such models get full forwards."""
    vllm = family_model("llava_onevision")
    prepared = prepare(vllm)
    config = vllm.language_model.config
    monkeypatch.setattr(config, "layer_types", ["sliding_attention"] * vllm.num_layers, raising=False)
    monkeypatch.setattr(config, "sliding_window", 4, raising=False)
    monkeypatch.setattr(vllm.language_model, "has_sliding_layers", True, raising=False)
    session = vllm.session(prepared)
    assert not session.replay and "sliding" in session.fallback_reason
    masks = block_masks(KnockoutSpec.single("video->question", LayerSet((1,))), prepared.spans, vllm.num_layers)
    assert torch.equal(session.last_logits([masks])[0], full_forward(vllm, prepared, masks))
