"""``python -m flowkit``: quick checks from the shell.

    python -m flowkit check --model PATH --video clip.mp4 \\
        --question "Which way does the red square move?" --options left right up down \\
        --cut "video->question" --layers 5-14

prints the answer distribution before and after the knockout. ``python -m flowkit bench``
forwards to the data command line (``python -m flowkit.data``).
"""

from __future__ import annotations

import argparse
import sys

from flowkit.errors import FlowkitError

DEFAULT_MODEL = "flowkit-smol-video"


def _check_parser(sub) -> None:
    p = sub.add_parser("check", help="answer distribution of one video question, before and after a knockout",
                       description="Ask a VideoLLM one multiple-choice question about a video and show how "
                                   "cutting attention edges moves the answer.")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"checkpoint folder, hub id, or shipped model name (default: {DEFAULT_MODEL})")
    p.add_argument("--quant", default="nf4", choices=("nf4", "bf16", "fp32"))
    p.add_argument("--video", required=True, help="video file (mp4, webm, avi, ...)")
    p.add_argument("--frames", type=int, default=8, help="frames sampled uniformly from the video (default 8)")
    p.add_argument("--question", required=True)
    p.add_argument("--options", nargs="+", required=True, help="the answer options, in order (A, B, ...)")
    p.add_argument("--answer", default=None, help="the correct option letter, if known")
    p.add_argument("--cut", action="append", default=[], metavar="EDGES",
                   help="edge group to cut, e.g. 'video->question', 'cross_frame' (repeatable)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--layers", default=None, help="0-indexed layers to cut in, e.g. '5-14' or '3,4,9-12'")
    where.add_argument("--window", type=int, default=None, metavar="CENTRE",
                       help="the paper's 9-layer window centred on this layer")


def run_check(args) -> int:
    from flowkit.data import read_video
    from flowkit.knockout import Cut, KnockoutSpec, LayerWindow, parse_layers
    from flowkit.models import load_videollm
    from flowkit.readout import percent_change

    if not args.cut:
        raise FlowkitError("say what to cut with --cut, e.g. --cut 'video->question' --layers 5-14")
    if args.layers is None and args.window is None:
        raise FlowkitError("say where to cut with --layers (e.g. 5-14) or --window CENTRE")
    layers = parse_layers(args.layers) if args.layers is not None else LayerWindow(args.window)
    spec = KnockoutSpec(tuple(Cut(edges, layers) for edges in args.cut))
    frames = read_video(args.video, num_frames=args.frames)
    vllm = load_videollm(args.model, quant=args.quant)
    spec.layers_touched(vllm.num_layers)  # validate against the depth before running
    prepared = vllm.prepare(frames, args.question, args.options, answer=args.answer)
    before = vllm.answer(prepared)
    after = vllm.answer(prepared, spec)
    print(f"model: {args.model} ({args.quant}, {vllm.num_layers} layers); {prepared.seq_len} tokens, "
          f"{prepared.spans.num_video_tokens} of them video")
    print(f"knockout: {spec}")
    print(f"{'option':<28} {'p before':>9} {'p after':>9} {'% change':>9}")
    for i, (letter, option) in enumerate(zip(before.letters, args.options)):
        mark = "*" if prepared.spans.true_option == i else " "
        label = f"{mark}({letter}) {option}"[:28]
        print(f"{label:<28} {before.probs[i]:>9.4f} {after.probs[i]:>9.4f} "
              f"{percent_change(before.probs[i], after.probs[i]) if before.probs[i] > 0 else float('nan'):>+9.1f}")
    print(f"predicted: {before.predicted_letter} before, {after.predicted_letter} after"
          + ("   (* = correct answer)" if prepared.spans.true_option is not None else ""))
    return 0


def _fidelity_parser(sub) -> None:
    p = sub.add_parser("fidelity", help="measure the four findings on the kit's small model (writes a JSON report)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--control", default=f"{DEFAULT_MODEL}-control", help="image-only control ('' to skip)")
    p.add_argument("--quant", default="nf4", choices=("nf4", "bf16", "fp32"))
    p.add_argument("--per-task", type=int, default=None, help="questions per task (default: the whole split)")
    p.add_argument("--sweep-per-task", type=int, default=6, help="correct questions per task used in sweeps")
    p.add_argument("--centers-step", type=int, default=1, help="sweep every n-th window centre")
    p.add_argument("--random-seeds", type=int, default=5)
    p.add_argument("--out", default=None, help="JSON path (default data/results/fidelity.json)")


def run_fidelity_command(args) -> int:
    from flowkit.fidelity import DEFAULT_OUT, format_report, run_fidelity

    report = run_fidelity(model=args.model, control=args.control or None, quant=args.quant, per_task=args.per_task,
                          sweep_per_task=args.sweep_per_task, centers_step=args.centers_step,
                          random_seeds=tuple(range(args.random_seeds)), out=args.out or DEFAULT_OUT)
    print(format_report(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "bench":
        from flowkit.data.__main__ import main as data_main

        return data_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m flowkit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _check_parser(sub)
    _fidelity_parser(sub)
    sub.add_parser("bench", help="generate or inspect the synthetic bench (see python -m flowkit bench --help)")
    args = parser.parse_args(argv)
    from flowkit.data import BenchError

    try:
        if args.command == "check":
            return run_check(args)
        if args.command == "fidelity":
            return run_fidelity_command(args)
    except (FlowkitError, BenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1
