"""One benchmark of the kit's speed targets: every figure side by side, in one process, on the same inputs.

    python bench/run.py [--quant nf4] [--samples-per-task 2] [--tasks 5] [--fidelity-per-task 2]
                        [--fidelity-centers-step 5] [--skip-fidelity]

Prints, each beside its target:

- the sweep (5 edge groups x every window centre): speed-up over one full forward per
  spec, session time / the plan's FLOP bound, max |Δp| session vs naive (``bench/sweep.py``);
- clicks in the knockout grid's view-model (:class:`flowkit.views.view_models.AnswerExplorer`) as
  a fraction of one full forward on the same prompt: warm (clean run cached; a drag along one column, each
  click adding one cell, and independent windows) and cold (clean run + first click);
- the fidelity run on a subset (``run_fidelity(per_task=2, sweep_per_task=1,
  centers_step=5, random_seeds=(0, 1))``; ``--fidelity-centers-step 1`` sweeps every centre, as
  the full run does) with the former path (full forwards,
  ``replay=False``) and the new one, part by part, and a check that both give the same numbers;
- the mask memory ratio (``bench/memory.py``'s geometry) and the numeric path.

Timings on a busy machine are noisy; ratios measured in one process are what to compare.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, setup_torch, smol_video_model  # noqa: E402
from memory import mask_bytes  # noqa: E402
from sweep import BENCH_SEED, measure_sweep  # noqa: E402

from flowkit.data import TASKS, generate  # noqa: E402
from flowkit.views.view_models import AnswerExplorer  # noqa: E402
from flowkit.intervention.edge_groups import PAPER_EDGE_GROUPS  # noqa: E402
from flowkit.intervention.spec import KnockoutSpec, LayerSet, LayerWindow  # noqa: E402
from flowkit.analysis.sweep import window_specs  # noqa: E402

#: issue 16's targets
TARGETS = {
    "sweep_speedup": 4.0,
    "bound": 1.2,
    "max_dp": 1e-5,
    "fidelity_speedup": 4.0,
    "click_warm": 0.4,
    "click_cold": 1.5,
}


def line(name: str, value: str, target: str, met: bool | None) -> None:
    verdict = "" if met is None else ("  met" if met else "  NOT met")
    print(f"{name:<44}{value:>22}   target {target}{verdict}")


def measure_clicks(vllm, prepared) -> dict:
    """Warm and cold clicks of the grid's view-model, as fractions of one full forward on the same
    prompt (the mean of 5, after one to warm up)."""
    layers = vllm.num_layers
    vllm.answer(prepared)
    with Timer() as forwards:
        for _ in range(5):
            vllm.answer(prepared)
    full_forward_s = forwards.seconds / 5
    with Timer() as cold:
        explorer = AnswerExplorer(vllm, prepared)
        explorer.answer(KnockoutSpec.single("video->question", LayerSet((layers // 3,))))
    drag = []  # a drag down one column: every click adds one cell (layer) to the cut
    for stop in range(layers // 3 + 1, min(layers, layers // 3 + 9)):
        spec = KnockoutSpec.single("video->question", LayerSet(tuple(range(layers // 3, stop + 1))))
        with Timer() as t:
            explorer.answer(spec)
        drag.append(t.seconds)
    windows = []  # independent windows, one column after another (nothing earlier to resume from)
    for edge_group in ("cross_frame", "question->last"):
        for centre in range(0, layers, 3):
            with Timer() as t:
                explorer.answer(KnockoutSpec.single(edge_group, LayerWindow(centre)))
            windows.append(t.seconds)
    return {
        "cold": cold.seconds / full_forward_s,
        "drag": statistics.mean(drag) / full_forward_s,
        "windows": statistics.mean(windows) / full_forward_s,
        "all": statistics.mean(drag + windows) / full_forward_s,
        "resumed": explorer.resumed,
        "clicks": len(drag) + len(windows),
        "full_forward_s": full_forward_s,
    }


#: report keys that hold wall times, not results
TIMINGS = ("seconds", "seconds_by_part")


def compare_reports(old: dict, new: dict, path: str = "") -> float:
    """Largest |difference| between two fidelity reports' numbers; raises if anything else differs."""
    if isinstance(old, dict):
        if set(old) != set(new):
            raise AssertionError(f"{path}: keys differ: {sorted(set(old) ^ set(new))}")
        return max([compare_reports(old[k], new[k], f"{path}/{k}") for k in old if k not in TIMINGS], default=0.0)
    if isinstance(old, (list, tuple)):
        if len(old) != len(new):
            raise AssertionError(f"{path}: lengths differ")
        return max([compare_reports(a, b, f"{path}[{i}]") for i, (a, b) in enumerate(zip(old, new))], default=0.0)
    if isinstance(old, float) and not isinstance(old, bool):
        if math.isnan(old) and math.isnan(new):
            return 0.0
        return abs(old - new)
    if old != new:
        raise AssertionError(f"{path}: {old!r} != {new!r}")
    return 0.0


def measure_fidelity(per_task: int, centers_step: int = 5) -> dict:
    from flowkit.course.fidelity import run_fidelity

    options = dict(
        per_task=per_task, sweep_per_task=1, centers_step=centers_step, random_seeds=(0, 1), out=None, progress=True
    )
    with Timer() as old_t:
        old = run_fidelity(**options, replay=False)
    with Timer() as new_t:
        new = run_fidelity(**options, replay=True)
    worst = compare_reports(old, new)
    return {
        "old_s": old_t.seconds,
        "new_s": new_t.seconds,
        "worst": worst,
        "questions": len(new["samples"]),
        "old_parts": old["seconds_by_part"],
        "new_parts": new["seconds_by_part"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quant", default="nf4", choices=("nf4", "fp32", "bf16"))
    parser.add_argument("--samples-per-task", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--fidelity-per-task", type=int, default=2)
    parser.add_argument(
        "--fidelity-centers-step",
        type=int,
        default=5,
        help="sweep every n-th window centre in the fidelity subset (the full run uses 1)",
    )
    parser.add_argument("--skip-fidelity", action="store_true", help="leave out the fidelity subset (the slowest part)")
    args = parser.parse_args(argv)
    setup_torch()
    vllm, label = smol_video_model(args.quant)
    samples = [
        s for task in TASKS[: args.tasks] for s in generate(task, args.samples_per_task, seed=BENCH_SEED, num_frames=8)
    ]
    prepared = [vllm.prepare_sample(s) for s in samples]
    specs = [spec for _, _, spec in window_specs(PAPER_EDGE_GROUPS, range(vllm.num_layers))]
    print(f"model: {label} ({args.quant}), {vllm.num_layers} layers, {prepared[0].seq_len} tokens per prompt")
    print(f"numeric path: {vllm.numeric_path}")
    print(
        f"sweep workload: {len(PAPER_EDGE_GROUPS)} edge groups x {vllm.num_layers} centres x {len(samples)} questions"
    )

    sweep = measure_sweep(vllm, prepared, specs)
    clicks = measure_clicks(vllm, prepared[1 % len(prepared)])
    memory = mask_bytes()
    fidelity = None if args.skip_fidelity else measure_fidelity(args.fidelity_per_task, args.fidelity_centers_step)

    print()
    speedup, bound = sweep["naive_s"] / sweep["session_s"], sweep["session_s"] / sweep["bound_s"]
    line(
        "sweep speed-up vs naive",
        f"{speedup:.2f}x ({sweep['naive_s']:.0f} s / {sweep['session_s']:.0f} s)",
        ">= 4x",
        speedup >= TARGETS["sweep_speedup"],
    )
    line("sweep session / FLOP bound", f"{bound:.2f}x", "<= 1.2x", bound <= TARGETS["bound"])
    line("sweep max |Δp| session vs naive", f"{sweep['max_dp']:.1e}", "<= 1e-5", sweep["max_dp"] <= TARGETS["max_dp"])
    print(f"{'one full forward (clicks prompt, mean of 5)':<44}{clicks['full_forward_s'] * 1000:>19.0f} ms")
    line(
        "click, warm (mean of all clicks)",
        f"{clicks['all']:.2f}x forward",
        "<= 0.4x",
        clicks["all"] <= TARGETS["click_warm"],
    )
    line(
        "  drag along a column (adds one cell)",
        f"{clicks['drag']:.2f}x forward",
        "<= 0.4x",
        clicks["drag"] <= TARGETS["click_warm"],
    )
    line(
        "  independent windows",
        f"{clicks['windows']:.2f}x forward",
        "<= 0.4x",
        clicks["windows"] <= TARGETS["click_warm"],
    )
    print(f"{'  clicks resumed from an earlier replay':<44}{clicks['resumed']:>18} of {clicks['clicks']}")
    line(
        "click, cold (clean run + click)",
        f"{clicks['cold']:.2f}x forward",
        "<= 1.5x",
        clicks["cold"] <= TARGETS["click_cold"],
    )
    if fidelity:
        ratio = fidelity["old_s"] / fidelity["new_s"]
        line(
            f"fidelity subset ({fidelity['questions']} questions) speed-up",
            f"{ratio:.2f}x ({fidelity['old_s']:.0f} s / {fidelity['new_s']:.0f} s)",
            ">= 4x",
            ratio >= TARGETS["fidelity_speedup"],
        )
        for name, old_s in fidelity["old_parts"].items():
            new_s = fidelity["new_parts"].get(name, float("nan"))
            print(f"  {name:<42}{old_s / new_s:>10.2f}x ({old_s:.1f} s / {new_s:.1f} s)")
        line(
            "fidelity old vs new, max |Δ| of any number",
            f"{fidelity['worst']:.1e}",
            "same numbers",
            fidelity["worst"] <= 1e-3,
        )
    line("mask memory ratio (per-head / flowkit)", f"{memory['ratio']:.0f}x", "(bench/memory.py geometry)", None)
    print(f"numeric path: {vllm.numeric_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
