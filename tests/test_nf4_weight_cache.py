"""Keeping dequantized NF4 weights changes speed, never numbers: bit-identical to bitsandbytes' portable path."""

from __future__ import annotations

import torch

from flowkit import KnockoutSpec, LayerWindow
from flowkit.data import generate
from flowkit.session import Session
from flowkit.nf4_cpu import cache_dequantized_weights, drop_dequantized_weights, four_bit_layers


def _logits(vllm, prepared, specs):
    with torch.inference_mode():
        return [vllm.last_logits(prepared, spec) for spec in specs]


def test_cached_weights_give_bit_identical_logits_and_engine_replays(toy_checkpoint):
    from flowkit import load_videollm

    vllm = load_videollm(toy_checkpoint, quant="nf4")
    # load_videollm keeps dequantized weights by default on the CPU's portable path
    assert vllm.extra["nf4_layers_keeping_dequantized_weights"] == len(four_bit_layers(vllm.model)) > 0
    drop_dequantized_weights(vllm.model)  # the plain bitsandbytes path first
    sample = generate("scene_transition", 1, seed=5, num_frames=8, size=32)[0]
    prepared = vllm.prepare_sample(sample)
    specs = [None, KnockoutSpec.single("cross_frame", LayerWindow(1)), KnockoutSpec.single("video->last", LayerWindow(2))]
    plain = _logits(vllm, prepared, specs)
    plain_engine = Session(vllm, prepared).last_logits([{}, {1: torch.ones(1, 1, dtype=torch.bool)}][:1])
    try:
        changed = cache_dequantized_weights(vllm.model)
        assert changed == len(four_bit_layers(vllm.model)) > 0
        cached = _logits(vllm, prepared, specs)
        again = _logits(vllm, prepared, specs)  # second call: from the cache
        cached_engine = Session(vllm, prepared).last_logits([{}])
        assert all(torch.equal(a, b) for a, b in zip(plain, cached))
        assert all(torch.equal(a, b) for a, b in zip(plain, again))
        assert all(torch.equal(a, b) for a, b in zip(plain_engine, cached_engine))
        kept = [m for _, m in four_bit_layers(vllm.model) if m.__dict__.get("_flowkit_dequantized")]
        assert kept and all(w.dtype == torch.float32 for m in kept for w in m._flowkit_dequantized.values())
    finally:
        drop_dequantized_weights(vllm.model)
    assert not any("_flowkit_dequantized" in m.__dict__ for _, m in four_bit_layers(vllm.model))
    assert all(torch.equal(a, b) for a, b in zip(plain, _logits(vllm, prepared, specs)))


def test_the_cache_is_skipped_when_it_would_not_fit(toy_checkpoint):
    from flowkit import load_videollm

    vllm = load_videollm(toy_checkpoint, quant="nf4")
    drop_dequantized_weights(vllm.model)
    assert cache_dequantized_weights(vllm.model, max_bytes=16) == 0
    assert not any("_flowkit_original_forward" in m.__dict__ for _, m in four_bit_layers(vllm.model))
