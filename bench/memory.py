"""Benchmark: peak memory of the effective-pathway knockout, boolean broadcast masks vs
per-head additive masks materialised for every layer (as the paper's code does).

    python bench/memory.py

Geometry: a 32-layer, 32-head language model (LLaVA-NeXT-7B's layer and head counts,
narrow hidden size so it runs on a laptop) on a 1,276-token prompt laid out like the
paper's (8 frames x 144 video tokens). Each mode runs in a fresh process; the script
prints peak resident memory above a clean forward of the same model and input.
"""

from __future__ import annotations

import json
import subprocess
import sys

NUM_LAYERS, NUM_HEADS, HIDDEN = 32, 32, 256
FRAMES, PER_FRAME, PREFIX, TEXT = 8, 144, 35, 88  # 35 + 1152 + 88 + 1 = 1276 tokens


def spans():
    from flowkit.prompts.spans import Spans

    start = PREFIX
    frames = tuple((start + i * PER_FRAME, start + (i + 1) * PER_FRAME) for i in range(FRAMES))
    video_end = frames[-1][1]
    n = video_end + TEXT + 1
    options = tuple((video_end + 40 + 8 * i, video_end + 46 + 8 * i) for i in range(4))
    return Spans(
        seq_len=n, frame_spans=frames, question_text=(video_end + 2, video_end + 30), option_spans=options, last=n - 1
    )


def model():
    import torch
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_HEADS,
        max_position_embeddings=4096,
    )
    config._attn_implementation = "sdpa"
    return LlamaModel(config).eval()


def run(mode: str) -> dict:
    import resource

    import torch

    from flowkit.intervention.attention import apply_block_masks
    from flowkit.intervention.masks import count_edges
    from flowkit.analysis.pathways import paper_windows, pathway_masks, pathway_spec

    lm, sp = model(), spans()
    embeds = torch.randn(1, sp.seq_len, HIDDEN)
    with torch.inference_mode():
        lm(inputs_embeds=embeds)  # warm-up: allocator and kernels
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    windows = paper_windows(NUM_LAYERS)
    info = {"mode": mode, "seq_len": sp.seq_len}
    with torch.inference_mode():
        if mode == "clean":
            lm(inputs_embeds=embeds)
        elif mode == "flowkit":
            masks = pathway_masks(windows, sp, NUM_LAYERS)
            info["mask_bytes"] = sum(m.numel() * m.element_size() for m in {id(m): m for m in masks.values()}.values())
            with apply_block_masks(lm, masks):
                lm(inputs_embeds=embeds)
            info.update(count_edges(pathway_spec(windows, NUM_LAYERS), sp, NUM_LAYERS))
        elif mode == "per_head":
            masks = pathway_masks(windows, sp, NUM_LAYERS)
            causal = torch.ones(sp.seq_len, sp.seq_len, dtype=torch.bool).tril()
            additive = []
            for layer in range(NUM_LAYERS):  # (1, H, N, N) float per layer, all built up front
                blocked = masks.get(layer, torch.zeros_like(causal)) | ~causal
                m = torch.zeros(1, NUM_HEADS, sp.seq_len, sp.seq_len, dtype=embeds.dtype)
                m.masked_fill_(blocked, torch.finfo(embeds.dtype).min)
                additive.append(m)
            info["mask_bytes"] = sum(m.numel() * m.element_size() for m in additive)
            hooks = []
            for layer, block in enumerate(lm.layers):

                def pre(_module, args, kwargs, mask=additive[layer]):
                    kwargs["attention_mask"] = mask
                    return args, kwargs

                hooks.append(block.register_forward_pre_hook(pre, with_kwargs=True))
            lm(inputs_embeds=embeds)
            for h in hooks:
                h.remove()
    info["peak_rss_mib_above_warm"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return info


def mask_bytes() -> dict:
    """Bytes of the effective-pathway masks at the geometry above, without running the model:
    flowkit's boolean ``(N, N)`` masks (one tensor per distinct layer mask) vs per-head float32
    additive masks for every layer (``(1, H, N, N)`` each, as the paper's code builds them)."""
    from flowkit.analysis.pathways import paper_windows, pathway_masks

    sp = spans()
    masks = pathway_masks(paper_windows(NUM_LAYERS), sp, NUM_LAYERS)
    flowkit = sum(m.numel() * m.element_size() for m in {id(m): m for m in masks.values()}.values())
    per_head = NUM_LAYERS * NUM_HEADS * sp.seq_len**2 * 4
    return {"flowkit": flowkit, "per_head": per_head, "ratio": per_head / flowkit, "seq_len": sp.seq_len}


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--mode":
        print(json.dumps(run(sys.argv[2])))
        return 0
    results = {}
    for mode in ("clean", "flowkit", "per_head"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode], capture_output=True, text=True, check=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    flow, head, clean = results["flowkit"], results["per_head"], results["clean"]
    print(f"geometry: {NUM_LAYERS} layers, {NUM_HEADS} heads, {flow['seq_len']} tokens; effective-pathway knockout")
    print(f"edges kept: {flow['kept']:,} of {flow['total']:,} ({100 * flow['kept_fraction']:.1f} %)")
    print(f"{'':28}{'mask bytes':>14}{'peak RSS above warm':>22}")
    print(f"{'clean forward':28}{0:>14,}{clean['peak_rss_mib_above_warm']:>19.0f} MiB")
    print(f"{'flowkit (bool, broadcast)':28}{flow['mask_bytes']:>14,}{flow['peak_rss_mib_above_warm']:>19.0f} MiB")
    print(f"{'per-head additive (paper)':28}{head['mask_bytes']:>14,}{head['peak_rss_mib_above_warm']:>19.0f} MiB")
    print(
        f"mask memory ratio: {head['mask_bytes'] / flow['mask_bytes']:.0f}x;  peak ratio (above warm): "
        f"{head['peak_rss_mib_above_warm'] / max(flow['peak_rss_mib_above_warm'], 1):.1f}x"
    )
    print(f"(in bf16, as on a GPU, the per-head masks would take {head['mask_bytes'] / 2 / 2**30:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
