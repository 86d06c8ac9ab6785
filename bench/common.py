"""Shared helpers for the benchmark scripts (not part of the kit's API)."""

from __future__ import annotations

import time
from pathlib import Path

import torch


def smol_video_model(quant: str = "nf4", **load_options):
    """The shipped model if it is available, else the same architecture with an untrained vision side."""
    from flowkit import load_videollm
    from flowkit.model import named_models
    from flowkit.errors import ModelLoadError
    from flowkit.smol_video import NAME, assemble
    from flowkit.smol_video.smollm2 import cache_dir

    if NAME in named_models.available():
        try:
            return load_videollm(NAME, quant=quant, **load_options), NAME
        except ModelLoadError as exc:
            print(f"(shipped model unavailable: {exc}; using the untrained architecture)")
    from flowkit.smol_video.assembly import SHIPPED_LAYOUT

    # keyed on the layout, so a change of the shipped layout never reuses an assembly of the old one
    folder = cache_dir() / "bench" / f"smol-video-untrained-{SHIPPED_LAYOUT.frame_size}px-s{SHIPPED_LAYOUT.pool_stride}"
    if not (folder / "config.json").exists():
        assemble(folder, seed=0)
    return load_videollm(folder, quant=quant, **load_options), "SmolLM2 LLaVA-NeXT-Video, untrained vision side"


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def setup_torch(threads: int | None = None) -> None:
    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(threads)


ROOT = Path(__file__).resolve().parents[1]


def max_prob_diff(rows_a, rows_b) -> float:
    """Largest |p_a - p_b| over the vocabulary, between matching logits of two nested lists."""
    return max(
        float((torch.softmax(a, -1) - torch.softmax(b, -1)).abs().max())
        for row_a, row_b in zip(rows_a, rows_b)
        for a, b in zip(row_a, row_b)
    )
