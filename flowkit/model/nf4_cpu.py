"""Which arithmetic NF4 layers use on the CPU — the same on every CPU unless you opt in.

bitsandbytes has two ways to run a 4-bit NF4 ``Linear4bit`` on the CPU:

- ``"portable"`` (flowkit's default): dequantize the 4-bit weights to float32, then an
  ordinary float32 matmul. Every CPU (AVX2, AVX-512, ARM) computes the same numbers up to
  float summation order (≤ 1e-5 in p(answer) on the kit's model), so stored results,
  cache keys and the chapters agree across machines.
- ``"avx512_bf16"``: bitsandbytes' fused kernel for CPUs with AVX512-BF16. It repacks the
  weights on the first forward and computes in bfloat16, which moves p(answer) by up to
  about 1e-2 (measured on the kit's model) — results differ from every other CPU's.
  bitsandbytes picks it by itself on such CPUs; flowkit turns it off unless asked
  (``load_videollm(..., nf4_cpu_kernel="avx512_bf16")``).

The choice is part of the model's *numeric path* (:func:`numeric_path`), which is part of
its fingerprint, so results computed with the fast kernel never pass for portable ones.
"""

from __future__ import annotations

import logging

import torch

from flowkit.errors import ModelLoadError

NF4_CPU_KERNELS = ("portable", "avx512_bf16")

# bitsandbytes logs this at import on AVX512-BF16 CPUs: it looks for an optional hub package
# ("kernels-community") that cannot be used offline and is not needed by the portable path.
_OPTIONAL_KERNEL_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"
_BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"


class _DropOptionalKernelNotice(logging.Filter):
    """Drops exactly bitsandbytes' notice about the optional hub kernel; lets every other record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_OPTIONAL_KERNEL_MESSAGE)


def import_bitsandbytes():
    """Import bitsandbytes without its notice about an optional hub kernel (real warnings still show)."""
    logger = logging.getLogger(_BNB_CPU_LOGGER)
    if not any(isinstance(f, _DropOptionalKernelNotice) for f in logger.filters):
        logger.addFilter(_DropOptionalKernelNotice())
    try:
        import bitsandbytes
    except ImportError:
        raise ModelLoadError("quant='nf4' needs bitsandbytes: pip install bitsandbytes==0.50.2") from None
    return bitsandbytes


def cpu_has_avx512_bf16() -> bool:
    """Whether this CPU has the AVX512-BF16 instructions bitsandbytes' fast kernel needs."""
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


def four_bit_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(name, module)`` of every bitsandbytes ``Linear4bit`` in ``model``."""
    bnb = import_bitsandbytes()
    return [(name, module) for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)]


def set_cpu_kernel(model: torch.nn.Module, kernel: str) -> None:
    """Make every NF4 layer of ``model`` use ``kernel`` on the CPU (see the module docstring).

    ``"avx512_bf16"`` on a CPU without AVX512-BF16 raises :class:`ModelLoadError`.
    """
    if kernel not in NF4_CPU_KERNELS:
        raise ModelLoadError(
            f"unknown nf4_cpu_kernel {kernel!r}: choose {' or '.join(map(repr, NF4_CPU_KERNELS))} "
            "('portable' gives the same numbers on every CPU)."
        )
    fast = kernel == "avx512_bf16"
    if fast and not cpu_has_avx512_bf16():
        raise ModelLoadError(
            "nf4_cpu_kernel='avx512_bf16' needs a CPU with AVX512-BF16 "
            "(`lscpu | grep avx512_bf16` shows nothing here); use the default 'portable'."
        )
    for _, module in four_bit_layers(model):
        module.support_avx512bf16_for_cpu = fast


def fast_path_layers(model: torch.nn.Module) -> list[str]:
    """Names of NF4 layers that may take (or have taken) the AVX512-BF16 path: flag on, or weights repacked."""
    return [
        name
        for name, module in four_bit_layers(model)
        if getattr(module, "support_avx512bf16_for_cpu", False)
        or getattr(getattr(module.weight, "quant_state", None), "packing_format_for_cpu", False)
    ]


def numeric_path(
    quant: str, device: str, nf4_cpu_kernel: str = "portable", bf16_cpu_arithmetic: str = "float32"
) -> str:
    """A short name for the arithmetic a loaded model runs, e.g. ``"nf4/fp32-dequant/cpu"``.

    On the CPU, ``bf16`` weights compute in float32 by default (``"bf16/fp32-compute/cpu"``, the
    same on every CPU) or in bfloat16 when asked (``"bf16/bf16-compute/cpu"``, CPU-dependent).

    Two models with the same weights and the same numeric path give the same numbers (up to
    summation order); the path is part of :attr:`flowkit.VideoLLM.fingerprint`.
    """
    device_type = torch.device(device).type if device else "cpu"
    if quant == "nf4":
        if device_type == "cpu":
            return "nf4/fp32-dequant/cpu" if nf4_cpu_kernel == "portable" else "nf4/avx512-bf16/cpu"
        return f"nf4/bf16-compute/{device_type}"
    if quant == "bf16" and device_type == "cpu":
        return "bf16/fp32-compute/cpu" if bf16_cpu_arithmetic == "float32" else "bf16/bf16-compute/cpu"
    return f"{quant}/{device_type}"


# ------------------------------------------------------------------ dequantized-weight cache
#: models whose dequantized NF4 weights take at most this many bytes keep them (float32: 4 bytes a weight)
DEFAULT_CACHE_BYTES = 2 * 1024**3


def _dequantize_like_bitsandbytes(module, dtype: torch.dtype) -> torch.Tensor:
    """The weight exactly as bitsandbytes' portable CPU path dequantizes it on every call
    (``_gemm_4bit_default_impl``: nested absmax first, then ``dequantize_4bit`` in the input's dtype)."""
    state = module.weight.quant_state
    absmax = state.absmax
    if state.nested:
        absmax = (
            torch.ops.bitsandbytes.dequantize_blockwise.default(
                state.absmax, state.state2.absmax, state.state2.code, 256, torch.float32
            )
            + state.offset
        )
    return torch.ops.bitsandbytes.dequantize_4bit.default(
        module.weight.data.view(-1, 1), absmax, state.blocksize, state.quant_type, state.shape, dtype
    )


def _matmul_transposed(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``linear(x, weight, bias)`` with the weight stored transposed (``(in, out)``, contiguous).

    Same operation, same arithmetic as ``linear`` (``addmm`` / ``mm`` over the rows of ``x``):
    on the CPUs measured it gives the very same bits for 16 rows and more, and float
    rounding (~1e-5 in logits) below. What changes is speed on few rows: a replay of a
    handful of positions (a click, ``question->last``) runs 2-5x faster than through a
    weight read transposed on every call (``bench/run.py`` measures the clicks).
    """
    rows = x.reshape(-1, x.shape[-1])
    out = torch.mm(rows, weight_t) if bias is None else torch.addmm(bias, rows, weight_t)
    return out.view(*x.shape[:-1], weight_t.shape[1])


def _caching_forward(module, original):
    """A ``Linear4bit.forward`` that dequantizes once per dtype and then runs the same matrix product
    as bitsandbytes' portable path (:func:`_matmul_transposed`), without dequantizing on every call. Anything else
    (gradients, the AVX512-BF16 kernel, other devices, odd weight orientations) goes to ``original``."""
    from bitsandbytes.nn.modules import fix_4bit_weight_quant_state_from_module

    def forward(x: torch.Tensor):
        fix_4bit_weight_quant_state_from_module(module)
        state = module.weight.quant_state
        plain = (
            x.device.type == "cpu"
            and not module.support_avx512bf16_for_cpu
            and not getattr(state, "packing_format_for_cpu", False)
            and len(state.shape) == 2
            and not (x.shape[-1] == state.shape[0] and x.shape[-1] != state.shape[1])
            and not (
                torch.is_grad_enabled() and (x.requires_grad or (module.bias is not None and module.bias.requires_grad))
            )
            and (not state.nested or state.state2.blocksize == 256)
            and x.numel() > 0
        )
        if not plain:
            return original(x)
        if not module.compute_type_is_set:
            module.set_compute_type(x)
            module.compute_type_is_set = True
        inp_dtype = x.dtype
        if module.compute_dtype is not None:
            x = x.to(module.compute_dtype)
        bias = module.bias
        if bias is not None:
            if bias.dtype != x.dtype:
                bias.data = bias.data.to(x.dtype)
            bias = bias.to(module.compute_dtype)
        cache = module.__dict__.setdefault("_flowkit_dequantized", {})
        weight_t = cache.get(x.dtype)
        if weight_t is None:  # kept as (in, out), contiguous: see _matmul_transposed
            weight_t = cache[x.dtype] = _dequantize_like_bitsandbytes(module, x.dtype).t().contiguous()
        return _matmul_transposed(x, weight_t, bias).to(inp_dtype)

    return forward


def cache_dequantized_weights(model: torch.nn.Module, max_bytes: int = DEFAULT_CACHE_BYTES) -> int:
    """Let every NF4 layer of ``model`` keep its dequantized weight after first use (CPU, portable path).

    The numbers do not change beyond float rounding — each layer runs the product bitsandbytes'
    portable path runs (the same bits on the CPUs measured, from 16 rows on), with the
    dequantization done once instead of on every call and the weight kept transposed so that
    few-row products are fast — and repeated forwards (sweeps, clicks, replays) skip the
    dominant cost on short prompts. Costs 4 bytes a weight
    (float32); skipped (returns 0) when that exceeds ``max_bytes``. Returns the layers changed.
    """
    layers = four_bit_layers(model)
    weights = sum(
        int(torch.Size(m.weight.quant_state.shape).numel())
        for _, m in layers
        if getattr(m.weight, "quant_state", None) is not None
    )
    if not layers or 4 * weights > max_bytes:
        return 0
    for _, module in layers:
        if "_flowkit_original_forward" not in module.__dict__:
            module._flowkit_original_forward = module.forward
            module.forward = _caching_forward(module, module._flowkit_original_forward)
    return len(layers)


def drop_dequantized_weights(model: torch.nn.Module) -> None:
    """Undo :func:`cache_dequantized_weights`: original forwards, cached weights freed."""
    for _, module in four_bit_layers(model):
        original = module.__dict__.pop("_flowkit_original_forward", None)
        if original is not None:
            module.forward = original
        module.__dict__.pop("_flowkit_dequantized", None)


__all__ = [
    "DEFAULT_CACHE_BYTES",
    "NF4_CPU_KERNELS",
    "cache_dequantized_weights",
    "cpu_has_avx512_bf16",
    "drop_dequantized_weights",
    "fast_path_layers",
    "four_bit_layers",
    "import_bitsandbytes",
    "numeric_path",
    "set_cpu_kernel",
]
