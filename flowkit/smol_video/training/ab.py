"""``python -m flowkit.smol_video.training.ab ROOT --init-from CKPT --steps N [--arm A|B|both]``: recipe A vs recipe B.

The decision gate of the dense-supervision issue: two runs of stage 2 (``video``) from the
same starting weights, with the same seed, batch size, steps and therefore the same
training clips and questions, differing only in what a step learns from:

- arm **A** (``ROOT/A``): ``--supervision letters`` — one option letter per clip (today's recipe);
- arm **B** (``ROOT/B``): ``--supervision dense`` — the same question, more questions about
  the clip and a caption, in one conversation (:mod:`flowkit.smol_video.training.dense`).

Both are evaluated every ``--eval-every`` steps on the same fresh evaluation set:
``--eval-per-task`` (>= 64) clips per task generated with ``--eval-seed``, which must
be neither the training seed nor the shipped split's (1234), plus single-frame questions.
The process that runs arm A first evaluates the starting weights once (``ROOT/init_eval.json``,
step 0 of both curves; ``--no-eval-init`` skips it).
Each arm logs to its ``log.jsonl`` and resumes from its ``checkpoint.pt`` (run the same
command again). ``ROOT/ab.json`` pins the shared settings (a second call with other settings
is refused, so the arms cannot drift apart); ``ROOT/curves.csv`` (one row per arm, step and
task: accuracy, training clips and frames, training seconds, seconds per step, samples per
second) and ``ROOT/summary.json`` are rewritten after every arm and by ``--report``.

Run the arms side by side on two cores, one thread each::

    python -m flowkit.smol_video.training.ab runs/ab --init-from data/models/flowkit-smol-video/resume/place.safetensors \\
        --steps 300 --arm A &
    python -m flowkit.smol_video.training.ab runs/ab --init-from data/models/flowkit-smol-video/resume/place.safetensors \\
        --steps 300 --arm B &
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path

from flowkit.atomic_files import atomic_write_json, atomic_path
from flowkit.data import TASKS
from flowkit.data.synthetic import EVAL_SEED
from flowkit.smol_video.training.frames import FRAME_TASKS
from flowkit.smol_video.training.budget import samples_seen
from flowkit.smol_video.training.trainer import TrainConfig, train

ARMS = {"A": "letters", "B": "dense"}
#: settings both arms share; these and arm B's (questions per clip, captions, caption weight) are
#: pinned in ROOT/ab.json
SHARED = (
    "init_from",
    "steps",
    "batch_size",
    "seed",
    "lr_vision",
    "lr_lora",
    "lora_rank",
    "tasks",
    "frame_tasks",
    "frame_batch_every",
    "eval_every",
    "eval_per_task",
    "eval_frame_per_task",
    "eval_seed",
    "base",
    "minutes",
)
ARM_B = ("questions_per_clip", "captions", "caption_weight")
MIN_EVAL_PER_TASK = 64


def arm_config(settings: dict, arm: str) -> TrainConfig:
    """The :class:`TrainConfig` of one arm from the shared settings."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose from: {' '.join(ARMS)}")
    return TrainConfig(
        stage="video",
        steps=settings["steps"],
        batch_size=settings["batch_size"],
        lr_vision=settings["lr_vision"],
        lr_lora=settings["lr_lora"],
        lora_rank=settings["lora_rank"],
        seed=settings["seed"],
        video_tasks=tuple(settings["tasks"]),
        frame_tasks=tuple(settings["frame_tasks"]),
        frame_batch_every=settings["frame_batch_every"],
        eval_every=settings["eval_every"],
        eval_per_task=settings["eval_per_task"],
        eval_frame_per_task=settings["eval_frame_per_task"],
        eval_seed=settings["eval_seed"],
        init_from=settings["init_from"],
        base=settings["base"],
        log_every=math.gcd(10, settings["eval_every"]),
        supervision=ARMS[arm],
        questions_per_clip=settings["questions_per_clip"],
        captions=settings["captions"],
        caption_weight=settings["caption_weight"],
        notes={"ab_arm": arm},
        minutes=settings.get("minutes"),
        device=settings.get("device", "cpu"),
        workers=settings.get("workers", 0),
    )


def pin_settings(root: Path, settings: dict) -> dict:
    """Write ``root/ab.json`` the first time; later, refuse shared settings that differ from it."""
    path = root / "ab.json"
    if path.exists():
        pinned = json.loads(path.read_text())
        changed = {k: (pinned.get(k), settings.get(k)) for k in SHARED + ARM_B if pinned.get(k) != settings.get(k)}
        if changed:
            details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ValueError(
                f"{root} is an A/B with other shared settings ({details}); use the same settings "
                "to resume it, or another folder"
            )
        return pinned
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))
    return settings


def evaluate_init(root: Path, config: TrainConfig) -> dict:
    """Evaluate the starting weights on the A/B's evaluation set once; cached in ``root/init_eval.json``."""
    import time

    from flowkit.smol_video.training.trainer import build, evaluate, evaluation_sets

    path = root / "init_eval.json"
    if path.exists():
        return json.loads(path.read_text())
    started = time.time()
    trainable, processor = build(config)
    trainable.to(config.device)
    result = {
        "step": 0,
        "clips": 0,
        "frames": 0,
        "train_seconds": 0.0,
        "eval": evaluate(trainable, processor, evaluation_sets(config)),
    }
    result["eval_seconds"] = round(time.time() - started, 2)
    atomic_write_json(path, result, indent=2)
    return result


def _read_log(run_dir: Path) -> list[dict]:
    log = run_dir / "log.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def write_report(root: str | os.PathLike) -> dict:
    """(Re)write ``root/curves.csv`` and ``root/summary.json`` from the arms' logs; returns the summary."""
    root = Path(root)
    settings = json.loads((root / "ab.json").read_text()) if (root / "ab.json").exists() else {}
    rows, summary = [], {"settings": settings, "arms": {}}
    init = json.loads((root / "init_eval.json").read_text()) if (root / "init_eval.json").exists() else None
    if init:
        summary["init_eval"] = init["eval"]
    for arm in ARMS:
        records = _read_log(root / arm)
        if not records:
            continue
        # a resumed run may repeat steps in its log: keep the last record of each step
        by_step = {r["step"]: r for r in records}
        if init:
            by_step.setdefault(0, init)
        evals = [by_step[s] for s in sorted(by_step) if "eval" in by_step[s]]
        for record in evals:
            bench = [record["eval"][t] for t in record["eval"] if not t.startswith("frame_")]
            accuracies = dict(record["eval"], mean_bench=sum(bench) / len(bench) if bench else float("nan"))
            for task, accuracy in accuracies.items():
                rows.append(
                    {
                        "arm": arm,
                        "supervision": ARMS[arm],
                        "step": record["step"],
                        "clips": record.get("clips", ""),
                        "frames": record.get("frames", ""),
                        "train_seconds": record.get("train_seconds", ""),
                        "seconds_per_step": record.get("seconds_per_step", ""),
                        "samples_per_second": record.get("samples_per_second", ""),
                        "task": task,
                        "accuracy": round(accuracy, 4),
                    }
                )
        last = by_step[max(by_step)]
        steps, seconds = last["step"], float(last.get("train_seconds") or 0.0)
        seen = last.get("clips", 0) + last.get("frames", 0)
        summary["arms"][arm] = {
            "supervision": ARMS[arm],
            "steps": steps,
            "clips": last.get("clips"),
            "frames": last.get("frames"),
            "train_seconds": seconds,
            "seconds_per_step": seconds / steps if steps and seconds else None,
            "samples_per_second": seen / seconds if seconds else None,
            "clips_per_second": last.get("clips", 0) / seconds if seconds else None,
            "eval_seconds_each": [r.get("eval_seconds") for r in evals],
            "first_eval": evals[0]["eval"] if evals else None,
            "last_eval": evals[-1]["eval"] if evals else None,
            "last_eval_step": evals[-1]["step"] if evals else None,
        }
    fields = [
        "arm",
        "supervision",
        "step",
        "clips",
        "frames",
        "train_seconds",
        "seconds_per_step",
        "samples_per_second",
        "task",
        "accuracy",
    ]
    with atomic_path(root / "curves.csv") as tmp:  # unique temporary names: two arms may report at once
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    atomic_write_json(root / "summary.json", summary, indent=2)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flowkit.smol_video.training.ab",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("root", help="folder of the A/B (use a git-ignored one, e.g. runs/ab)")
    parser.add_argument(
        "--arm",
        choices=("A", "B", "both"),
        default="both",
        help="which arm to run (both: A, then B); run A and B in two processes to go side by side",
    )
    parser.add_argument("--report", action="store_true", help="only rewrite curves.csv and summary.json")
    parser.add_argument(
        "--init-from", default=None, help="starting weights of both arms: a run folder or a snapshot .safetensors"
    )
    parser.add_argument("--steps", type=int, default=300, help="steps per arm (budget: steps x batch size samples)")
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="stop (with a checkpoint) after this step; the same command without it resumes",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lr-vision", type=float, default=1e-4)
    parser.add_argument("--lr-lora", type=float, default=1e-3)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), help="video tasks (default: the six tasks)")
    parser.add_argument("--frame-tasks", nargs="+", default=list(FRAME_TASKS), help="single-frame tasks")
    parser.add_argument("--frame-batch-every", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-per-task", type=int, default=MIN_EVAL_PER_TASK)
    parser.add_argument("--eval-frame-per-task", type=int, default=16)
    parser.add_argument(
        "--eval-seed",
        type=int,
        default=4321,
        help="seed of the evaluation clips: not the training seed, not the shipped split's 1234",
    )
    parser.add_argument("--questions-per-clip", type=int, default=3, help="arm B: questions per conversation")
    parser.add_argument("--no-captions", action="store_true", help="arm B: no caption turn (questions only)")
    parser.add_argument("--caption-weight", type=float, default=1.0, help="arm B: weight of non-letter tokens")
    parser.add_argument("--base", default=None, help="base checkpoint folder (default: the SmolLM2 assembly)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of this process")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a machine with an NVIDIA GPU")
    parser.add_argument("--workers", type=int, default=0, help="processes that build batches ahead of the model")
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock budget per arm: --steps becomes an upper bound, the schedule is fitted "
        "to the budget after the first steps (the fitted length is logged)",
    )
    parser.add_argument(
        "--no-eval-init", action="store_true", help="do not evaluate the starting weights (step 0 of the curves)"
    )
    args = parser.parse_args(argv)
    root = Path(args.root)
    if args.report:
        if not (root / "ab.json").exists():
            parser.error(f"{root} holds no A/B (no ab.json)")
        print(json.dumps(write_report(root), indent=2))
        return 0
    if args.eval_per_task < MIN_EVAL_PER_TASK:
        parser.error(f"--eval-per-task must be at least {MIN_EVAL_PER_TASK} for the A/B to tell arms apart")
    if args.eval_seed in (EVAL_SEED, args.seed):
        parser.error(f"--eval-seed must differ from the shipped split's seed {EVAL_SEED} and from --seed")
    if args.init_from and not Path(args.init_from).exists():
        parser.error(f"--init-from {args.init_from} does not exist")
    settings = {k: getattr(args, k) for k in SHARED}
    run_settings = {"device": args.device, "workers": args.workers}  # where it runs, not what it learns
    settings.update(
        questions_per_clip=args.questions_per_clip, captions=not args.no_captions, caption_weight=args.caption_weight
    )
    arms = ["A", "B"] if args.arm == "both" else [args.arm]
    try:
        configs = {arm: arm_config({**settings, **run_settings}, arm) for arm in arms}
        settings = pin_settings(root, settings)
    except ValueError as error:
        parser.error(str(error))
    import torch

    torch.set_num_threads(args.threads)
    if "A" in arms and not args.no_eval_init and args.stop_after != 0:
        print("evaluating the starting weights (step 0 of both curves) ...", flush=True)
        evaluate_init(root, configs["A"])
    for arm in arms:
        config = configs[arm]
        budget = samples_seen(config, config.steps)
        print(
            f"arm {arm} ({config.supervision}): {config.steps} steps = {budget['clips']} clips + "
            f"{budget['frames']} single frames, into {root / arm}",
            flush=True,
        )
        train(config, root / arm, stop_after=args.stop_after)
        write_report(root)
    print(json.dumps(write_report(root)["arms"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
