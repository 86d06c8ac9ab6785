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
        raise ModelLoadError(f"unknown nf4_cpu_kernel {kernel!r}: choose {' or '.join(map(repr, NF4_CPU_KERNELS))} "
                             "('portable' gives the same numbers on every CPU).")
    fast = kernel == "avx512_bf16"
    if fast and not cpu_has_avx512_bf16():
        raise ModelLoadError("nf4_cpu_kernel='avx512_bf16' needs a CPU with AVX512-BF16 "
                             "(`lscpu | grep avx512_bf16` shows nothing here); use the default 'portable'.")
    for _, module in four_bit_layers(model):
        module.support_avx512bf16_for_cpu = fast


def fast_path_layers(model: torch.nn.Module) -> list[str]:
    """Names of NF4 layers that may take (or have taken) the AVX512-BF16 path: flag on, or weights repacked."""
    return [name for name, module in four_bit_layers(model)
            if getattr(module, "support_avx512bf16_for_cpu", False)
            or getattr(getattr(module.weight, "quant_state", None), "packing_format_for_cpu", False)]


def numeric_path(quant: str, device: str, nf4_cpu_kernel: str = "portable") -> str:
    """A short name for the arithmetic a loaded model runs, e.g. ``"nf4/fp32-dequant/cpu"``.

    Two models with the same weights and the same numeric path give the same numbers (up to
    summation order); the path is part of :attr:`flowkit.VideoLLM.fingerprint`.
    """
    device_type = torch.device(device).type if device else "cpu"
    if quant == "nf4":
        if device_type == "cpu":
            return "nf4/fp32-dequant/cpu" if nf4_cpu_kernel == "portable" else "nf4/avx512-bf16/cpu"
        return f"nf4/bf16-compute/{device_type}"
    return f"{quant}/{device_type}"


__all__ = ["NF4_CPU_KERNELS", "cpu_has_avx512_bf16", "fast_path_layers", "four_bit_layers", "import_bitsandbytes",
           "numeric_path", "set_cpu_kernel"]
