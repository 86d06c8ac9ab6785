"""Same numbers on every CPU: NF4 never takes bitsandbytes' AVX512-BF16 kernel unless asked, and a
model's fingerprint comes from what its checkpoint holds and how it computes — not from where it was
loaded from or from tensors the kernel repacks at run time.

The flag checks guard every CPU: on an AVX2-only machine the fast path is simulated by making
bitsandbytes believe the CPU has AVX512-BF16.
"""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from flowkit import KnockoutSpec, LayerWindow, ModelLoadError, load_videollm
from flowkit.errors import QuestionError
from flowkit.model.nf4_cpu import cpu_has_avx512_bf16, fast_path_layers, four_bit_layers

from conftest import OPTIONS, QUESTION, random_frames


def test_nf4_layers_stay_on_the_portable_path_by_default(toy_nf4):
    assert four_bit_layers(toy_nf4.model), "the toy model should have 4-bit layers"
    assert fast_path_layers(toy_nf4.model) == []
    toy_nf4.answer(toy_nf4.prepare(random_frames(seed=3), QUESTION, OPTIONS, answer="A"))
    assert fast_path_layers(toy_nf4.model) == []  # nothing was repacked by the forward
    assert toy_nf4.numeric_path == "nf4/fp32-dequant/cpu"


def test_a_cpu_with_avx512_bf16_still_gets_the_portable_path(toy_checkpoint, monkeypatch):
    """What bitsandbytes would do on such a CPU (flag on at construction), and flowkit undoing it."""
    import bitsandbytes.nn.modules as bnb_modules

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)
    vllm = load_videollm(toy_checkpoint, quant="nf4")
    assert fast_path_layers(vllm.model) == []

    def refuse(*args, **kwargs):
        raise AssertionError("a Linear4bit took the AVX512-BF16 path without the opt-in")

    monkeypatch.setattr(bnb_modules, "_convert_weight_packed_for_cpu", refuse)
    vllm.answer(vllm.prepare(random_frames(seed=3), QUESTION, OPTIONS, answer="A"))


def test_the_fast_kernel_is_an_explicit_opt_in(toy_checkpoint, toy_nf4, monkeypatch):
    if not cpu_has_avx512_bf16():
        with pytest.raises(ModelLoadError, match="needs a CPU with AVX512-BF16"):
            load_videollm(toy_checkpoint, quant="nf4", nf4_cpu_kernel="avx512_bf16")
        monkeypatch.setattr("flowkit.model.nf4_cpu.cpu_has_avx512_bf16", lambda: True)
    fast = load_videollm(toy_checkpoint, quant="nf4", nf4_cpu_kernel="avx512_bf16")
    assert fast_path_layers(fast.model) == [name for name, _ in four_bit_layers(fast.model)]
    assert fast.numeric_path == "nf4/avx512-bf16/cpu" and fast.fingerprint != toy_nf4.fingerprint
    with pytest.raises(ModelLoadError, match="unknown nf4_cpu_kernel 'fast'"):
        load_videollm(toy_checkpoint, quant="nf4", nf4_cpu_kernel="fast")


def test_fingerprint_is_content_not_path(toy_checkpoint, toy_nf4, toy_fp32, tmp_path):
    copy = shutil.copytree(toy_checkpoint, tmp_path / "elsewhere" / "renamed-copy")
    assert load_videollm(copy, quant="nf4").fingerprint == toy_nf4.fingerprint
    assert toy_fp32.fingerprint != toy_nf4.fingerprint
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert load_videollm(copy, quant="nf4").fingerprint != toy_nf4.fingerprint


def test_fingerprint_does_not_change_after_forwards(toy_checkpoint):
    vllm = load_videollm(toy_checkpoint, quant="nf4")
    before = vllm.fingerprint
    vllm.extra.pop("fingerprint")
    prepared = vllm.prepare(random_frames(seed=5), QUESTION, OPTIONS, answer="B")
    vllm.answer(prepared, KnockoutSpec.single("question->last", LayerWindow(1)))
    assert vllm.fingerprint == before


def test_bitsandbytes_optional_kernel_notice_is_silenced_but_real_warnings_are_not(caplog):
    from flowkit.model.nf4_cpu import import_bitsandbytes

    import_bitsandbytes()
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        logger.warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure ...", "offline"
        )
        logger.warning("something real went wrong")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["something real went wrong"]


@pytest.mark.parametrize("path", ["./no_such_folder", "../models/none", "/nonexistent/ckpt", "~/no/such/place"])
def test_a_missing_local_folder_is_called_a_missing_folder(path):
    with pytest.raises(ModelLoadError, match="does not exist") as raised:
        load_videollm(path)
    assert "hf download" not in str(raised.value)


def test_a_bad_answer_letter_lists_the_valid_ones(toy_fp32):
    with pytest.raises(QuestionError, match=r"answer 'E' is not an option letter .* letters are A, B, C, D"):
        toy_fp32.prepare(random_frames(2), QUESTION, OPTIONS, answer="E")
    assert toy_fp32.prepare(random_frames(2), QUESTION, OPTIONS, answer=" b ").spans.true_option is not None


def test_bf16_on_the_cpu_computes_in_float32_from_bf16_weights_unless_asked(toy_checkpoint, toy_fp32):
    """bf16 matrix products on the CPU depend on the CPU (oneDNN picks AVX2, AVX-512 or AVX512-BF16
    code): by default flowkit rounds the weights to bfloat16 and computes in float32."""
    portable = load_videollm(toy_checkpoint, quant="bf16")
    assert portable.numeric_path == "bf16/fp32-compute/cpu"
    assert {p.dtype for p in portable.model.parameters()} == {torch.float32}
    for (name, p), (_, q) in zip(portable.model.named_parameters(), toy_fp32.model.named_parameters()):
        assert torch.equal(p, q.to(torch.bfloat16).float()), name  # exactly the bf16-rounded weights
    native = load_videollm(toy_checkpoint, quant="bf16", bf16_cpu_arithmetic="bfloat16")
    assert native.numeric_path == "bf16/bf16-compute/cpu" and native.fingerprint != portable.fingerprint
    assert next(native.model.parameters()).dtype == torch.bfloat16
    prepared = portable.prepare(random_frames(seed=3), QUESTION, OPTIONS, answer="A")
    a, b = (
        portable.answer(prepared),
        native.answer(native.prepare(random_frames(seed=3), QUESTION, OPTIONS, answer="A")),
    )
    assert max(abs(x - y) for x, y in zip(a.probs, b.probs)) < 0.05  # the same model, another arithmetic
    with pytest.raises(ModelLoadError, match="unknown bf16_cpu_arithmetic 'fast'"):
        load_videollm(toy_checkpoint, quant="bf16", bf16_cpu_arithmetic="fast")
