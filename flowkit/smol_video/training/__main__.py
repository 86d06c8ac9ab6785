"""``python -m flowkit.smol_video.training RUN_DIR --stage align|video --steps N [--supervision dense]``: train or resume a run."""

from __future__ import annotations

import argparse
import json
import sys

from flowkit.smol_video.training.trainer import TrainConfig, train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowkit.smol_video.training", description=__doc__)
    parser.add_argument("run_dir", help="folder for the checkpoint and log (resumes if it holds one)")
    parser.add_argument("--stage", choices=("embed", "align", "video"), default="align")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr-vision", type=float, default=1e-4)
    parser.add_argument("--lr-lora", type=float, default=1e-3)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        help="video tasks (stage 2): the question set's, or the curriculum's lone_moving_direction; default: all tasks",
    )
    parser.add_argument(
        "--frame-tasks",
        nargs="+",
        default=None,
        help="single-frame tasks (colour shape position scene count size, or the curriculum's "
        "lone_side lone_height lone_position named_side); default: the first six",
    )
    parser.add_argument("--frame-batch-every", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-per-task", type=int, default=16)
    parser.add_argument(
        "--positions",
        action="store_true",
        help="stage 0: objects anywhere, and their place written into the tokens as words",
    )
    parser.add_argument("--init-from", default=None, help="a finished run whose weights start this one")
    parser.add_argument(
        "--stop-after", type=int, default=None, help="stop (with a checkpoint) after this step of the --steps schedule"
    )
    parser.add_argument(
        "--supervision",
        choices=("letters", "dense"),
        default="letters",
        help="letters: one option letter per clip (recipe A, default); dense: the same question "
        "plus more questions and a caption per clip in one conversation (recipe B)",
    )
    parser.add_argument(
        "--questions-per-clip", type=int, default=3, help="dense: questions per conversation, the question first"
    )
    parser.add_argument("--no-captions", action="store_true", help="dense: questions only, no caption turn")
    parser.add_argument(
        "--caption-weight",
        type=float,
        default=1.0,
        help="dense: weight of answer-text and caption tokens against the option letters",
    )
    parser.add_argument(
        "--eval-seed",
        type=int,
        default=None,
        help="evaluate tasks on clips generated with this seed instead of the shipped split",
    )
    parser.add_argument(
        "--eval-frame-per-task",
        type=int,
        default=None,
        help="single-frame evaluation questions per task (default: --eval-per-task)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a machine with an NVIDIA GPU")
    parser.add_argument("--workers", type=int, default=0, help="processes that build batches ahead of the model")
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock budget: --steps becomes an upper bound and the schedule is fitted to "
        "the budget after the first steps (the fitted length is logged and kept in config.json)",
    )
    parser.add_argument(
        "--pool",
        default=None,
        help="dense: draw batches from a pre-rendered training pool folder "
        "(build it with python -m flowkit.smol_video.training.pool)",
    )
    parser.add_argument(
        "--layout",
        default=None,
        help="video tokens per frame (4, 9, 16, 36, 64) or a frame size (64x64); default: the shipped "
        "model's 4 (32x32). A warm start from another layout interpolates the vision tower's position embeddings",
    )
    parser.add_argument(
        "--freeze-projector-norm",
        action="store_true",
        help="normalise the projected video tokens with fixed statistics; needed with --init-from a shipped "
        "delta (delta.safetensors, control.safetensors), whose norm is folded into the projector",
    )
    args = parser.parse_args(argv)
    try:
        config = TrainConfig(
            stage=args.stage,
            steps=args.steps,
            batch_size=args.batch_size,
            lr_vision=args.lr_vision,
            lr_lora=args.lr_lora,
            lora_rank=args.lora_rank,
            seed=args.seed,
            frame_batch_every=args.frame_batch_every,
            eval_every=args.eval_every,
            eval_per_task=args.eval_per_task,
            init_from=args.init_from,
            positions=args.positions,
            supervision=args.supervision,
            questions_per_clip=args.questions_per_clip,
            captions=not args.no_captions,
            caption_weight=args.caption_weight,
            eval_seed=args.eval_seed,
            eval_frame_per_task=args.eval_frame_per_task,
            device=args.device,
            workers=args.workers,
            minutes=args.minutes,
            pool=args.pool,
            layout=args.layout,
            freeze_projector_norm=args.freeze_projector_norm,
            **({"video_tasks": tuple(args.tasks)} if args.tasks else {}),
            **({"frame_tasks": tuple(args.frame_tasks)} if args.frame_tasks else {}),
        )
    except ValueError as error:
        parser.error(str(error))
    from flowkit.smol_video.training.trainer import TrainingStopped

    try:
        result = train(config, args.run_dir, stop_after=args.stop_after)
    except TrainingStopped as stopped:
        print(stopped)
        return 130
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
