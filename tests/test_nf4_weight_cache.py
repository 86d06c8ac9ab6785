"""Keeping dequantized NF4 weights changes speed, not numbers: bitsandbytes' portable path to float rounding,
and bit-identical from one call to the next."""

from __future__ import annotations

import torch

from flowkit import KnockoutSpec, LayerWindow
from flowkit.data import generate
from flowkit.model.nf4_cpu import cache_dequantized_weights, drop_dequantized_weights, four_bit_layers


def _max_dp(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((torch.softmax(a, -1) - torch.softmax(b, -1)).abs().max())


def _logits(vllm, prepared, specs):
    with torch.inference_mode():
        return [vllm.last_logits(prepared, spec) for spec in specs]


def test_cached_weights_give_bit_identical_logits_and_session_replays(toy_checkpoint):
    from flowkit import load_videollm

    vllm = load_videollm(toy_checkpoint, quant="nf4")
    # load_videollm keeps dequantized weights by default on the CPU's portable path
    assert vllm.extra["nf4_layers_keeping_dequantized_weights"] == len(four_bit_layers(vllm.model)) > 0
    drop_dequantized_weights(vllm.model)  # the plain bitsandbytes path first
    sample = generate("scene_transition", 1, seed=5, num_frames=8, size=32)[0]
    prepared = vllm.prepare_sample(sample)
    specs = [
        None,
        KnockoutSpec.single("cross_frame", LayerWindow(1)),
        KnockoutSpec.single("video->last", LayerWindow(2)),
    ]
    plain = _logits(vllm, prepared, specs)
    plain_replay = vllm.session(prepared).last_logits([{}, {1: torch.ones(1, 1, dtype=torch.bool)}][:1])
    try:
        changed = cache_dequantized_weights(vllm.model)
        assert changed == len(four_bit_layers(vllm.model)) > 0
        cached = _logits(vllm, prepared, specs)
        again = _logits(vllm, prepared, specs)  # second call: from the cache
        cached_replay = vllm.session(prepared).last_logits([{}])
        # the same product with the weight stored transposed: the same bits on the CPUs measured,
        # float rounding at most elsewhere (the kit's portable-path promise: <= 1e-5 in p)
        assert max(_max_dp(a, b) for a, b in zip(plain, cached)) <= 1e-5
        assert max(_max_dp(a, b) for a, b in zip(plain_replay, cached_replay)) <= 1e-5
        assert all(torch.equal(a, b) for a, b in zip(cached, again))  # and deterministic
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


def test_the_transposed_product_is_linear_for_any_rows_and_bias():
    from flowkit.model.nf4_cpu import _matmul_transposed

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 40, generator=generator)
    bias = torch.randn(48, generator=generator)
    for shape in [(1, 40), (3, 40), (2, 17, 40), (1, 83, 40)]:
        x = torch.randn(*shape, generator=generator)
        for b in (None, bias):
            got = _matmul_transposed(x, weight.t().contiguous(), b)
            want = torch.nn.functional.linear(x, weight, b)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
