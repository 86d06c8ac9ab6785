"""``python -m flowkit``: quick checks from the shell.

    python -m flowkit check --model PATH --video clip.mp4 \\
        --question "Which way does the red square move?" --options left right up down \\
        --cut "video->question" --layers 5-14

prints the answer distribution before and after the knockout.

    python -m flowkit sweep --model PATH --tasks moving_direction scene_transition --per-task 10 \
        --groups "video->question" "question->last" --centers 4-20 --cache results-cache \
        --executor local-ray:2 --out table.csv.gz

knocks out each edge group in each 9-layer window on each question (here or on a Ray
cluster, see :mod:`flowkit.analysis.distributed`) and writes the tidy table. ``python -m flowkit questions``
forwards to the data command line (``python -m flowkit.data``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from flowkit.atomic_files import atomic_path
from flowkit.errors import FlowkitError
from flowkit.model.named_models import KIT_MODEL

DEFAULT_MODEL = KIT_MODEL


def _check_parser(sub) -> None:
    p = sub.add_parser(
        "check",
        help="answer distribution of one video question, before and after a knockout",
        description="Ask a VideoLLM one multiple-choice question about a video and show how "
        "cutting attention edges moves the answer.",
    )
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"checkpoint folder, hub id, or shipped model name (default: {DEFAULT_MODEL})",
    )
    p.add_argument("--quant", default="nf4", choices=("nf4", "bf16", "fp32"))
    p.add_argument("--video", required=True, help="video file (mp4, webm, avi, ...)")
    p.add_argument("--frames", type=int, default=8, help="frames sampled uniformly from the video (default 8)")
    p.add_argument("--question", required=True)
    p.add_argument("--options", nargs="+", required=True, help="the answer options, in order (A, B, ...)")
    p.add_argument("--answer", default=None, help="the correct option letter, if known")
    p.add_argument(
        "--cut",
        action="append",
        default=[],
        metavar="EDGES",
        help="edge group to cut, e.g. 'video->question', 'cross_frame' (repeatable)",
    )
    p.add_argument(
        "--spec",
        default=None,
        metavar="FILE",
        help="a KnockoutSpec JSON file to apply (e.g. the mask `pathways search` saved), instead of --cut/--layers",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--layers", default=None, help="0-indexed layers to cut in, e.g. '5-14' or '3,4,9-12'")
    where.add_argument(
        "--window", type=int, default=None, metavar="CENTRE", help="the paper's 9-layer window centred on this layer"
    )
    p.set_defaults(run=run_check)


def _check_token_groups(spec, num_options: int, has_answer: bool) -> None:
    """A clear error for a token group the cut names that no prompt of this question can have.

    Checked from the names alone, before any model loads (a frame index is checked once the
    prompt is built: how many frames a prompt has depends on the model family).
    """
    from flowkit.data.sample import OPTION_LETTERS
    from flowkit.errors import KnockoutError
    from flowkit.prompts.spans import TOKEN_GROUPS

    for cut in spec.cuts:
        if cut.edges in ("cross_frame", "within_frame"):
            continue
        for group in cut.edges.split("->"):
            stem, colon, index = group.partition(":")
            token_group = next((g for g in TOKEN_GROUPS if g.stem == stem and g.indexed == bool(colon)), None)
            if token_group is None:
                raise KnockoutError(
                    f"unknown token group {group!r} in --cut {cut.edges!r}. Known groups: "
                    f"{', '.join(g.name for g in TOKEN_GROUPS)} (frame:i takes a 0-based frame index)."
                )
            if token_group.needs_answer and not has_answer:
                raise KnockoutError(f"the group {group!r} needs to know the correct answer: pass --answer LETTER.")
            if stem == "option" and index.upper() not in OPTION_LETTERS[:num_options]:
                raise KnockoutError(
                    f"option {index.upper()!r} does not exist: with {num_options} --options the "
                    f"letters are {', '.join(OPTION_LETTERS[:num_options])}."
                )
            if stem == "frame" and not index.isdigit():
                raise KnockoutError(f"{group!r}: the frame index must be a whole number from 0, e.g. 'frame:0'.")


def _checked_arguments(args):
    """The knockout spec of ``check``, after every check of its arguments that needs no model weights:
    what and where to cut (edge group and token group names), the question and its options, the
    answer letter, and, from the checkpoint's config alone, the layer range."""
    from flowkit.data.sample import OPTION_LETTERS
    from flowkit.knockout_check import check_spec
    from flowkit.model.videollm import checkpoint_config, config_num_layers

    if getattr(args, "spec", None) is not None:
        if args.cut or args.layers is not None or args.window is not None:
            raise FlowkitError("--spec FILE gives the whole knockout: drop --cut, --layers and --window")
        spec = read_spec_file(args.spec)
    else:
        if not args.cut:
            raise FlowkitError("say what to cut with --cut, e.g. --cut 'video->question' --layers 5-14")
        if args.layers is None and args.window is None:
            raise FlowkitError("say where to cut with --layers (e.g. 5-14) or --window CENTRE")
        spec = check_spec(args.cut, args.layers, args.window)  # a bad edge group or --layers fails here
    if not args.question.strip():
        raise FlowkitError("--question is empty: give the question to ask about the video.")
    if len(args.options) < 2:
        raise FlowkitError(
            f"--options gives {len(args.options)} option ({args.options[0]!r}); a multiple-choice "
            "question needs at least 2, e.g. --options left right up down"
        )
    if len(args.options) > len(OPTION_LETTERS):
        raise FlowkitError(
            f"--options gives {len(args.options)} options; at most {len(OPTION_LETTERS)} are "
            "supported (one letter each)."
        )
    letters = OPTION_LETTERS[: len(args.options)]
    if args.answer is not None and args.answer.strip().upper() not in letters:
        raise FlowkitError(
            f"--answer {args.answer!r} is not an option letter: with {len(args.options)} --options "
            f"the letters are {', '.join(letters)}."
        )
    _check_token_groups(spec, len(args.options), args.answer is not None)
    num_layers = config_num_layers(checkpoint_config(args.model))  # the config only, no weights
    if num_layers is not None:
        spec.layers_touched(num_layers)  # --layers 1-40 or --window 50 past the model's depth
    return spec


def read_spec_file(path: str):
    """The :class:`KnockoutSpec` in a JSON file, or a clear error."""
    from flowkit.intervention.spec import KnockoutSpec

    file = Path(path).expanduser()
    if not file.is_file():
        raise FlowkitError(f"--spec {path}: no such file")
    return KnockoutSpec.from_json(file.read_text())


def run_check(args) -> int:
    from flowkit.data import read_video
    from flowkit.knockout_check import check
    from flowkit.model.videollm import load_videollm

    spec = _checked_arguments(args)  # everything that can fail fails before the (slow) weights load
    frames = read_video(args.video, num_frames=args.frames)
    vllm = load_videollm(args.model, quant=args.quant)
    prepared = vllm.prepare(frames, args.question, args.options, answer=args.answer)
    if args.spec is not None:
        result = check(vllm, prepared, spec=spec, options=args.options)
    else:
        result = check(vllm, prepared, args.cut, layers=args.layers, window=args.window, options=args.options)
    before, after = result.before, result.after
    print(
        f"model: {args.model} ({args.quant}, {vllm.num_layers} layers); {prepared.seq_len} tokens, "
        f"{prepared.spans.num_video_tokens} of them video"
    )
    print(f"knockout: {result.spec}")
    print(result.table_text())  # p with 3 decimals, % change with 1: the same text on every CPU
    print(f"predicted: {before.predicted_letter} before, {after.predicted_letter} after")
    if result.note:
        print(result.note)
    return 0


def _sweep_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="knockout sweep over a question set, here or on a Ray cluster (writes a table)",
        description="Knock out each edge group in each layer window on each question and write "
        "one row per (question, group, window). Results are cached by model content, "
        "question and spec: a stopped sweep resumes, a finished one is not recomputed.",
    )
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"checkpoint folder, hub id, or shipped model name (default: {DEFAULT_MODEL}); on a Ray "
        "cluster every worker loads it, so a folder must exist at the same path on every node",
    )
    p.add_argument("--quant", default="nf4", choices=("nf4", "bf16", "fp32"))
    p.add_argument("--device", default=None, help="'cuda' to run each worker on one GPU (default: CPU)")
    p.add_argument(
        "--questions",
        default=None,
        metavar="DIR",
        help="question set folder in the MVBench/TVBench layout (default: the shipped split)",
    )
    p.add_argument("--tasks", nargs="+", default=None, help="tasks of the question set (default: every task)")
    p.add_argument("--per-task", type=int, default=None, metavar="N", help="the first N questions of each task")
    p.add_argument("--frames", type=int, default=8, help="frames sampled per question (default 8)")
    p.add_argument(
        "--groups",
        nargs="+",
        default=None,
        metavar="EDGES",
        help="edge groups to cut, e.g. 'video->question' cross_frame (default: the paper's five)",
    )
    p.add_argument("--centers", default=None, help="window centres, e.g. '4-20' or '0,8,16' (default: every layer)")
    p.add_argument("--size", type=int, default=9, help="window size in layers (default 9, the paper's)")
    p.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="result cache folder (may be on a shared filesystem); strongly advised for long sweeps",
    )
    p.add_argument(
        "--executor", default="local", help="'local' (default), 'auto', 'local-ray:N', 'ray://HOST:PORT' or 'HOST:PORT'"
    )
    p.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="Ray workers (default: one per GPU, or per CPU slot, the cluster offers)",
    )
    p.add_argument(
        "--question-timeout",
        type=float,
        default=4 * 3600.0,
        metavar="SECONDS",
        help="on Ray, a question running longer counts as a lost worker and is retried (default 4 h)",
    )
    p.add_argument("--out", required=True, help="table to write: .csv or .csv.gz (written atomically)")
    p.set_defaults(run=run_sweep_command)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _pathways_parser(sub) -> None:
    p = sub.add_parser(
        "pathways",
        help="find the pathways automatically: the smallest set of attention edges that keeps the answers",
    )
    psub = p.add_subparsers(dest="pathways_command", required=True)
    s = psub.add_parser(
        "search",
        help="score every (edge group, layer) gate by attribution, then cut greedily with exact knockouts",
        description="Score every gate (edge group x layer) by d log p(answer)/dg, cut gates in score order while "
        "accuracy on the search questions stays within the rule, and save the found mask as KnockoutSpec JSON. "
        "With --cache a stopped search resumes; a finished one is replayed from the cache.",
    )
    s.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint or shipped model (default: {DEFAULT_MODEL})")
    s.add_argument("--quant", default="nf4", choices=("nf4", "bf16", "fp32"))
    s.add_argument("--questions", default=None, metavar="DIR", help="question set folder (default: the shipped split)")
    s.add_argument("--tasks", nargs="+", default=None, help="tasks of the question set (default: every task)")
    s.add_argument("--per-task", type=int, default=None, metavar="N", help="the first N questions of each task")
    s.add_argument("--skip", type=int, default=0, metavar="K", help="skip the first K questions of each task")
    s.add_argument("--frames", type=int, default=8, help="frames sampled per question (default 8)")
    s.add_argument("--margin", type=float, default=0.03, help="accuracy drop the rule allows (default 0.03)")
    s.add_argument(
        "--loss-margin",
        type=float,
        default=None,
        help="also bound the mean loss in p(answer) (a question's %% change, gains counted as 0): "
        "the loss the rule allows, in percent (default: no such bound)",
    )
    s.add_argument(
        "--losses-only",
        action="store_true",
        help="the accuracy bound counts answers lost only: a question the mask gets right where the full "
        "model did not never pays for one it gets wrong",
    )
    s.add_argument("--max-run", type=int, default=32, help="most candidates tried together in one step")
    s.add_argument(
        "--prediction",
        choices=("vocabulary", "options"),
        default="vocabulary",
        help="which answers count as correct: the whole vocabulary's top token (the paper's, default) or the top option letter",
    )
    s.add_argument("--cache", default=None, metavar="DIR", help="result cache folder (resumable)")
    s.add_argument("--out", required=True, help="where to write the found mask (KnockoutSpec JSON)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(run=run_pathways_search)


def run_pathways_search(args) -> int:
    import json

    from flowkit.analysis.pathway_search import AccuracyRule, search_pathways
    from flowkit.model.videollm import load_videollm

    out = Path(args.out).expanduser()
    if not out.parent.is_dir():
        raise FlowkitError(f"--out {args.out}: the folder {out.parent} does not exist; create it first")
    if args.skip < 0:
        raise FlowkitError(f"--skip must be at least 0, got {args.skip}")
    per_task = None if args.per_task is None else args.per_task + args.skip
    samples = _sweep_samples(argparse.Namespace(**{**vars(args), "per_task": per_task}))
    if args.skip:
        by_task: dict[str, list] = {}
        for sample in samples:
            by_task.setdefault(sample.task, []).append(sample)
        samples = [s for task in by_task.values() for s in task[args.skip :]]
    if not samples:
        raise FlowkitError("no questions to search on: check --tasks, --per-task and --skip")
    vllm = load_videollm(args.model, quant=args.quant)
    started = time.perf_counter()
    result = search_pathways(
        vllm,
        samples,
        rule=AccuracyRule(margin=args.margin, loss_margin=args.loss_margin, count_gains=not args.losses_only),
        max_run=args.max_run,
        cache=args.cache,
        progress=not args.no_progress,
        prediction=args.prediction,
    )
    result.save_spec(out)
    summary = result.summary()
    print(
        f"{summary['gates_cut']} of {summary['gates']} gates cut ({100 * summary['suppressed_share']:.1f} % of edges "
        f"suppressed); accuracy on the {summary['questions']} search questions {summary['search_accuracy']:.3f} "
        f"(full {summary['full_accuracy']:.3f}) in {time.perf_counter() - started:.1f} s -> {out}"
    )
    print(json.dumps(summary["timings"]))
    return 0


TABLE_SUFFIXES = (".csv", ".csv.gz")


def _check_out_path(out: str) -> Path:
    path = Path(out).expanduser()
    if not path.name.endswith(TABLE_SUFFIXES):
        raise FlowkitError(f"--out {out}: write the table as .csv or .csv.gz (e.g. --out table.csv.gz)")
    if path.is_dir():
        raise FlowkitError(f"--out {out} is a folder; give a file name such as {path / 'table.csv.gz'}")
    if not path.parent.is_dir():
        raise FlowkitError(f"--out {out}: the folder {path.parent} does not exist; create it first")
    if not os.access(path.parent, os.W_OK):
        raise FlowkitError(f"--out {out}: the folder {path.parent} is not writable")
    return path


def write_table_atomically(table, path: Path) -> None:
    """Write a sweep table as CSV (gzip for ``.gz``, with a fixed timestamp) via a temporary file and a rename."""
    compression = {"method": "gzip", "mtime": 0} if path.name.endswith(".gz") else None
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, compression=compression)


def _sweep_samples(args) -> list:
    from flowkit.data import first_per_task, load_question_set, shipped_questions_root

    root = Path(args.questions) if args.questions else shipped_questions_root()
    if args.per_task is not None and args.per_task < 1:
        raise FlowkitError(f"--per-task must be at least 1, got {args.per_task}")
    questions = load_question_set(root, task=args.tasks, num_frames=args.frames)
    tasks = args.tasks or sorted({s.task for s in questions})
    return first_per_task(questions, args.per_task, tasks=tasks)


def run_sweep_command(args) -> int:
    from flowkit.analysis.sweep import make_executor
    from flowkit.analysis.sweep_work import LocalExecutor, ModelSource
    from flowkit.intervention.edge_groups import PAPER_EDGE_GROUPS
    from flowkit.intervention.spec import parse_layers
    from flowkit.analysis.sweep import sweep

    out = _check_out_path(args.out)
    centers = list(parse_layers(args.centers).layers) if args.centers else None
    executor = make_executor(args.executor, num_workers=args.num_workers, question_timeout_s=args.question_timeout)
    started = time.perf_counter()
    if not isinstance(executor, LocalExecutor):
        executor.connect()  # a wrong address fails here, before the questions are decoded or a model loaded
    try:
        samples = _sweep_samples(args)
        if not samples:
            raise FlowkitError("no questions to sweep: check --tasks and --per-task")
        source = ModelSource(args.model, quant=args.quant, device=args.device)
        table = sweep(
            source,
            samples,
            edge_groups=args.groups or PAPER_EDGE_GROUPS,
            centers=centers,
            size=args.size,
            cache=args.cache,
            progress=not args.no_progress,
            executor=executor,
        )
    finally:
        if not isinstance(executor, LocalExecutor):
            executor.close()
    write_table_atomically(table, out)
    info = table.attrs.get("sweep", {})
    print(
        f"{len(table)} rows ({info.get('questions')} questions: {info.get('computed')} computed, "
        f"{info.get('from_cache')} from the cache"
        + (f"; {info['retried_questions']} retried after a lost worker" if info.get("retried_questions") else "")
        + f") in {time.perf_counter() - started:.1f} s on {args.executor} -> {out}"
    )
    return 0


#: entry-point group of commands that other parts add (the course adds ``fidelity``): each is a
#: callable ``add_command(subparsers)`` that adds its parser with ``set_defaults(run=...)``
COMMAND_ENTRY_POINTS = "flowkit.commands"


def main(argv: list[str] | None = None) -> int:
    from importlib.metadata import entry_points

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "questions":
        from flowkit.data.__main__ import main as data_main

        return data_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m flowkit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _check_parser(sub)
    _sweep_parser(sub)
    _pathways_parser(sub)
    for entry in sorted(entry_points(group=COMMAND_ENTRY_POINTS), key=lambda e: e.name):
        entry.load()(sub)
    sub.add_parser(
        "questions", help="generate or inspect a synthetic question set (see python -m flowkit questions --help)"
    )
    args = parser.parse_args(argv)
    from flowkit.data import QuestionSetError

    try:
        return args.run(args)
    except (FlowkitError, QuestionSetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
