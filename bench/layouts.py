"""Which video layout for the kit's model, version 3 (issue 26, item 2): the layout table.

For each reachable layout (8x8 patches, the processor's stride-2 pooling: 4, 9, 16, 36, 64 video
tokens per frame) and, for reference, the paper's 144: the prompt length (the issue's prompt shape,
12 prefix + 25 question + 8 other text tokens, and the kit's real ChatML prompt, 3 + 31 + 17), the
share of edges the paper's 7B pathway mask (scaled to 30 layers) keeps on each, and the CPU forward
time as a ratio to today's layout: the shipped language model in NF4 fed that many positions, plus
a fresh vision tower of that layout on 8 frames (fp32), one thread, best of ``--repeats``.

    python bench/layouts.py [--repeats 3] [--threads 1]

Prints a markdown table and writes ``runs/bench/layouts.json`` (runs/ is git-ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, setup_torch, smol_video_model  # noqa: E402

from flowkit.analysis.pathways import paper_windows, pathway_suppressed_fraction  # noqa: E402
from flowkit.prompts.hypothetical import hypothetical_spans, paper_prompt_spans  # noqa: E402
from flowkit.smol_video.assembly import LAYOUTS, SHIPPED_LAYOUT, vision_config_kwargs  # noqa: E402

LAYERS = 30
#: the kit's real prompt (a 4-option shipped question): 3 prefix tokens, question span 31, 17 other
KIT_SHAPE = dict(prefix=3, question=31, other=17)


def kept(spans, layers: int = LAYERS) -> float:
    return 100 * (1 - pathway_suppressed_fraction(paper_windows(layers), spans, layers))


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.no_grad()
def lm_seconds(vllm, seq_len: int, repeats: int) -> float:
    lm = vllm.language_model
    embeds = torch.randn(1, seq_len, lm.config.hidden_size, generator=torch.Generator().manual_seed(seq_len)) * 0.05
    return best_of(lambda: lm(inputs_embeds=embeds, use_cache=False), repeats)


@torch.no_grad()
def vision_seconds(layout, repeats: int) -> float:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    tower = CLIPVisionModel(CLIPVisionConfig(**vision_config_kwargs(layout))).eval()
    pixels = torch.randn(8, 3, layout.frame_size, layout.frame_size)
    return best_of(lambda: tower(pixels), repeats)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "layouts.json"))
    args = parser.parse_args(argv)
    setup_torch(args.threads)
    vllm, name = smol_video_model("nf4")
    rows = []
    for tokens, layout in LAYOUTS.items():
        issue, real = hypothetical_spans(tokens), hypothetical_spans(tokens, **KIT_SHAPE)
        rows.append(
            {
                "tokens_per_frame": tokens,
                "frame": f"{layout.frame_size}x{layout.frame_size}",
                "pooling": f"{layout.pool_stride}x{layout.pool_stride}",
                "prompt_len_issue_shape": issue.seq_len,
                "prompt_len_kit_prompt": real.seq_len,
                "kept_percent_issue_shape": round(kept(issue), 2),
                "kept_percent_kit_prompt": round(kept(real), 2),
                "lm_seconds": lm_seconds(vllm, real.seq_len, args.repeats),
                "vision_seconds": vision_seconds(layout, args.repeats),
                "shipped": layout == SHIPPED_LAYOUT,
            }
        )
    today = next(r for r in rows if r["shipped"])
    for r in rows:
        r["lm_ratio"] = round(r["lm_seconds"] / today["lm_seconds"], 2)
        r["forward_ratio"] = round(
            (r["lm_seconds"] + r["vision_seconds"]) / (today["lm_seconds"] + today["vision_seconds"]), 2
        )
    paper = paper_prompt_spans()
    reference = {
        "tokens_per_frame": 144,
        "prompt_len_issue_shape": hypothetical_spans(144).seq_len,
        "kept_percent_issue_shape": round(kept(hypothetical_spans(144)), 2),
        "paper_prompt_len": paper.seq_len,
        "paper_prompt_kept_percent_32_layers": round(kept(paper, 32), 2),
        "paper_prompt_kept_percent_30_layers": round(kept(paper, 30), 2),
    }
    print(f"model: {name}, NF4 language model + fp32 vision tower, {args.threads} thread(s), best of {args.repeats}")
    print()
    print(
        "| tokens/frame | frame | pooling | prompt (issue shape / kit prompt) | kept, paper mask (issue / kit) | LM time ratio | forward ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['tokens_per_frame']}{' (today)' if r['shipped'] else ''} | {r['frame']} | {r['pooling']} | "
            f"{r['prompt_len_issue_shape']} / {r['prompt_len_kit_prompt']} | "
            f"{r['kept_percent_issue_shape']:.1f} % / {r['kept_percent_kit_prompt']:.1f} % | "
            f"{r['lm_ratio']:.2f} | {r['forward_ratio']:.2f} |"
        )
    print(
        f"| 144 (paper) | 336x336 | 2x2 | {reference['prompt_len_issue_shape']} / - | "
        f"{reference['kept_percent_issue_shape']:.1f} % / - | - | - |"
    )
    print(
        f"\nthe paper's real prompt (N = {paper.seq_len}): kept {reference['paper_prompt_kept_percent_32_layers']:.2f} % "
        f"under its own 32-layer windows, {reference['paper_prompt_kept_percent_30_layers']:.2f} % under them scaled to 30"
    )
    print(f"today: LM {today['lm_seconds']:.3f} s, vision {today['vision_seconds']:.3f} s per forward")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": name, "threads": args.threads, "rows": rows, "paper": reference}, indent=2))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
