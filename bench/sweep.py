"""Benchmark: the session versus one full forward per (sample, spec), on the same inputs.

    python bench/sweep.py [--quant nf4] [--samples-per-task 4] [--tasks 5]

It prints the numeric path it ran (``nf4/fp32-dequant/cpu`` by default: the same numbers on
every CPU). On a CPU with AVX512-BF16 it also times the session with bitsandbytes' fast kernel
(``nf4_cpu_kernel="avx512_bf16"``) on the same inputs and prints its speed and max |Δp|
against the default path.

Prints the wall time of each, their ratio, the session's FLOP lower bound (layers
recomputed x positions recomputed, priced at the clean forward's cost per
layer-position) and how close the session gets to it, max |Δp| between the two, and the
latency of one single-spec evaluation (the widget's click).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, max_prob_diff, setup_torch, smol_video_model  # noqa: E402

from flowkit.data import TASKS, generate  # noqa: E402
from flowkit.intervention.edge_groups import PAPER_EDGE_GROUPS  # noqa: E402
from flowkit.intervention.spec import KnockoutSpec, LayerWindow  # noqa: E402
from flowkit.analysis.sweep import window_specs  # noqa: E402

BENCH_SEED = 90_001  # not the evaluation split's seed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quant", default="nf4", choices=("nf4", "fp32", "bf16"))
    parser.add_argument("--samples-per-task", type=int, default=4)
    parser.add_argument(
        "--tasks", type=int, default=5, help="how many of the bench's tasks (default 5, as in the paper)"
    )
    args = parser.parse_args(argv)
    setup_torch()
    vllm, label = smol_video_model(args.quant)
    samples = [
        s for task in TASKS[: args.tasks] for s in generate(task, args.samples_per_task, seed=BENCH_SEED, num_frames=8)
    ]
    specs = [spec for _, _, spec in window_specs(PAPER_EDGE_GROUPS, range(vllm.num_layers))]
    prepared = [vllm.prepare_sample(s) for s in samples]
    n_evals = len(samples) * len(specs)
    print(f"model: {label} ({args.quant}), {vllm.num_layers} layers, {prepared[0].seq_len} tokens per prompt")
    print(f"numeric path: {vllm.numeric_path}")
    print(
        f"workload: {len(PAPER_EDGE_GROUPS)} edge groups x {vllm.num_layers} window centres x "
        f"{args.tasks} tasks x {args.samples_per_task} samples = {n_evals} knockout evaluations"
    )

    m = measure_sweep(vllm, prepared, specs)
    t_naive, t_session, bound_units, bound_seconds = m["naive_s"], m["session_s"], m["bound_units"], m["bound_s"]
    max_dp, agree, fast = m["max_dp"], m["agree"], m["fast_logits"]
    clicks, t_cold, t_full_one = m["clicks_s"], m["cold_s"], m["full_forward_s"]

    print()
    print(f"naive (one full forward per spec): {t_naive:8.1f} s  ({t_naive / n_evals * 1000:.0f} ms/spec)")
    print(f"session:                           {t_session:8.1f} s  ({t_session / n_evals * 1000:.0f} ms/spec)")
    print(f"speed-up:                          {t_naive / t_session:8.2f} x   (target >= 3x)")
    print(
        f"FLOP lower bound of the plan:      {bound_units:,} layer-positions = {bound_seconds:.1f} s "
        f"at {m['unit_s'] * 1e6:.1f} us each"
    )
    print(f"session / bound:                   {t_session / bound_seconds:8.2f} x   (target <= 1.5x)")
    print(
        f"naive work / plan work:            {len(prepared) * len(specs) * vllm.num_layers * prepared[0].seq_len / bound_units:8.2f} x"
    )
    print(f"max |Δp| session vs naive:         {max_dp:.2e}   (predicted option agrees in {agree}/{n_evals})")
    print(
        f"one click, clean run cached:       {max(clicks) * 1000:6.0f} ms worst, {sum(clicks) / len(clicks) * 1000:.0f} ms mean (target <= 500 ms)"
    )
    print(f"one click, cold (clean run + spec): {t_cold * 1000:5.0f} ms;  full forward: {t_full_one * 1000:.0f} ms")
    fast_path(args, prepared, specs, fast, t_session)
    return 0


def measure_sweep(vllm, prepared, specs) -> dict:
    """Time the naive loop and the session on the same prompts and specs (see the module docstring).

    Returns seconds (``naive_s``, ``session_s``), the plan's FLOP bound (``bound_units``
    layer-positions, ``bound_s`` priced at the clean forward's cost per layer-position),
    ``max_dp`` and ``agree`` (session vs naive), the session's logits, and the latency of single
    windows clicked on the first prompt (``clicks_s`` with its clean run cached, ``cold_s``)
    beside one full forward (``full_forward_s``).
    """
    # price of one layer-position: a clean language-model forward over the whole prompt
    lm = vllm.language_model
    session0 = vllm.session(prepared[0])
    _ = session0.clean_logits  # the clean run (on first use) records the stream entering every layer
    with torch.inference_mode(), Timer() as t_lm:
        for _ in range(3):
            lm(inputs_embeds=session0.hidden_in[0], logits_to_keep=1)
    unit = t_lm.seconds / 3 / (vllm.num_layers * prepared[0].seq_len)

    with Timer() as t_naive:
        naive = [[vllm.last_logits(p, spec) for spec in specs] for p in prepared]
    with Timer() as t_session:
        fast, bound_units = [], 0
        for p in prepared:
            session = vllm.session(p)
            bound_units += vllm.num_layers * p.seq_len  # the one clean forward
            bound_units += sum(session.plan(spec).layer_positions for spec in specs)
            fast.append(session.last_logits(specs))
    max_dp = max_prob_diff(naive, fast)
    agree = sum(int(a.argmax() == b.argmax()) for row_a, row_b in zip(naive, fast) for a, b in zip(row_a, row_b))

    # the widget's click: one spec on one sample, with and without the sample's clean run cached
    spec = KnockoutSpec.single("cross_frame", LayerWindow(vllm.num_layers // 3))
    with Timer() as t_cold:
        session = vllm.session(prepared[0])
        session.answer(spec)
    clicks = []
    for centre in range(0, vllm.num_layers, 3):
        with Timer() as t_click:
            session.answer(KnockoutSpec.single("cross_frame", LayerWindow(centre)))
        clicks.append(t_click.seconds)
    with Timer() as t_full_one:
        vllm.answer(prepared[0], spec)
    return {
        "naive_s": t_naive.seconds,
        "session_s": t_session.seconds,
        "bound_units": bound_units,
        "bound_s": bound_units * unit,
        "unit_s": unit,
        "max_dp": max_dp,
        "agree": agree,
        "fast_logits": fast,
        "clicks_s": clicks,
        "cold_s": t_cold.seconds,
        "full_forward_s": t_full_one.seconds,
    }


def fast_path(args, prepared, specs, portable_logits, portable_seconds) -> None:
    """The same session workload with bitsandbytes' AVX512-BF16 kernel, where this CPU has it."""
    from flowkit.model.nf4_cpu import cpu_has_avx512_bf16

    if args.quant != "nf4":
        return
    if not cpu_has_avx512_bf16():
        print("AVX512-BF16 fast path:             not measured (this CPU has no avx512_bf16)")
        return
    vllm, _ = smol_video_model("nf4", nf4_cpu_kernel="avx512_bf16")
    with Timer() as t_fast:
        fast = [vllm.session(p).last_logits(specs) for p in prepared]
    max_dp = max_prob_diff(portable_logits, fast)
    print(
        f"AVX512-BF16 fast path ({vllm.numeric_path}): session {t_fast.seconds:.1f} s = "
        f"{portable_seconds / t_fast.seconds:.2f}x the default path's speed; max |Δp| vs default {max_dp:.2e}"
    )


if __name__ == "__main__":
    sys.exit(main())
