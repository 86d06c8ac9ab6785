"""Command line for the synthetic question set.

``python -m flowkit.data generate --out data/questions --seed 1234 --per-task 60``
renders the evaluation split and prints a summary (tasks, counts, MB, seconds).
"""

from __future__ import annotations

import argparse
import sys

from flowkit.data.question_sets import write_split
from flowkit.data.sample import QuestionSetError
from flowkit.data.synthetic import EVAL_SEED, TASKS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flowkit.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="render a synthetic split in the MVBench/TVBench layout")
    generate.add_argument("--out", required=True, help="output folder (created; must not exist without --overwrite)")
    generate.add_argument("--seed", type=int, default=EVAL_SEED, help=f"generation seed (evaluation: {EVAL_SEED})")
    generate.add_argument("--per-task", type=int, default=60, help="questions per task (default: 60)")
    generate.add_argument("--tasks", nargs="+", choices=TASKS, default=None, help="tasks to render (default: all)")
    generate.add_argument("--num-frames", type=int, default=16, help="frames per clip (default: 16)")
    generate.add_argument("--size", type=int, default=64, help="frame side in pixels (default: 64)")
    generate.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = write_split(
            args.out,
            seed=args.seed,
            per_task=args.per_task,
            tasks=args.tasks,
            num_frames=args.num_frames,
            size=args.size,
            overwrite=args.overwrite,
            progress=True,
        )
    except QuestionSetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
