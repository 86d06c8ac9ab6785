"""``python -m flowkit.smol_video.training.evaluate DELTA [DELTA ...] [--control DELTA]``: compare trained deltas.

Each delta (a ``delta.safetensors`` from :mod:`flowkit.smol_video.training.export`, or a run's snapshot
``.safetensors`` / run folder, exported on the fly) is assembled with SmolLM2, loaded in NF4 on
the default numeric path, and asked every question of the shipped split (``data/questions``, the
setting the kit's findings are measured in) or of another split (``--questions DIR``, e.g. a fresh
one from ``python -m flowkit.data generate --seed S``: a split no training or selection used). Prints accuracy per task, chance, the control's
accuracy and which tasks are learned (:mod:`flowkit.analysis.learned`); ``--json`` writes the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def delta_file(source: str) -> Path:
    """A delta file for ``source``: itself if it is one, else the delta exported from a run or snapshot."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{source} does not exist: give a delta .safetensors, a snapshot or a run folder")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        from flowkit.smol_video.training.trainer import is_delta

        with safe_open(str(path), "pt") as handle:
            if is_delta(dict.fromkeys(handle.keys())):
                return path  # already a delta (the norm is folded in)
    from flowkit.smol_video.training.export import _save
    from flowkit.smol_video.training.trainer import export_delta

    out = Path(tempfile.mkdtemp(prefix="flowkit-delta-")) / "delta.safetensors"
    _save(export_delta(path), out)
    return out


def accuracy_of(source: str, progress: bool = True, questions=None):
    """Per-question accuracy table of the model made from ``source`` (NF4, CPU) on ``questions``
    (samples; default: the shipped split)."""
    from flowkit.data import shipped_questions
    from flowkit.analysis.experiments import answer_table
    from flowkit.model.videollm import load_videollm
    from flowkit.smol_video import folder_for_delta

    vllm = load_videollm(folder_for_delta(delta_file(source)), "nf4")
    return answer_table(vllm, shipped_questions() if questions is None else questions, progress=progress)


def questions_of(folder: str | None):
    """The samples of a question-set folder (None: the shipped split), with one clear error if it is not one."""
    if folder is None:
        return None
    from flowkit.data import load_question_set

    if not Path(folder).is_dir():
        raise SystemExit(
            f"--questions {folder}: no such folder; render one with "
            "python -m flowkit.data generate --out FOLDER --seed SEED --per-task N"
        )
    return tuple(load_question_set(folder))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flowkit.smol_video.training.evaluate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("deltas", nargs="+", help="delta files, run snapshots or run folders")
    parser.add_argument("--control", default=None, help="the image-only control's delta (for the learned rule)")
    parser.add_argument("--json", default=None, help="write {source: {task: accuracy}} here")
    parser.add_argument(
        "--questions", default=None, metavar="DIR", help="question-set folder to ask (default: the shipped split)"
    )
    args = parser.parse_args(argv)
    from flowkit.analysis.learned import RULE, learned_table

    questions = questions_of(args.questions)
    control = accuracy_of(args.control, questions=questions) if args.control else None
    results = {}
    for source in args.deltas:
        table = learned_table(accuracy_of(source, questions=questions), control)
        results[source] = table["accuracy"].to_dict()
        print(f"\n{source}  (mean {table['accuracy'].mean():.1%}; {int(table['learned'].sum())} learned)")
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    if control is not None:
        results["control"] = control.groupby("task")["correct"].mean().to_dict()
    print(f"\n{RULE}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
