"""Shared fixtures: tiny same-class VideoLLMs built and saved by the tests themselves."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def toy_checkpoint(tmp_path_factory):
    """A 4-layer LlavaNextVideo checkpoint (32x32 frames, 4 tokens per frame) on disk."""
    from flowkit.testing.tiny_models import build_toy_llava_next_video

    return build_toy_llava_next_video(tmp_path_factory.mktemp("ckpt") / "toy-llava-next-video", seed=0)


@pytest.fixture(scope="session")
def letters_checkpoint(tmp_path_factory):
    """The toy checkpoint with an ``lm_head`` that keeps only the option letters' rows: its top token
    is a letter on most questions, so the paper's rule finds correctly answered ones to sweep."""
    from flowkit.testing.tiny_models import build_toy_llava_next_video

    return build_toy_llava_next_video(tmp_path_factory.mktemp("ckpt") / "toy-letters", seed=0, letters_head=True)


@pytest.fixture(scope="session")
def letters_fp32(letters_checkpoint):
    from flowkit import load_videollm

    return load_videollm(letters_checkpoint, quant="fp32")


@pytest.fixture(scope="session")
def toy_fp32(toy_checkpoint):
    from flowkit import load_videollm

    return load_videollm(toy_checkpoint, quant="fp32")


@pytest.fixture(scope="session")
def toy_eager(toy_checkpoint):
    from flowkit import load_videollm

    return load_videollm(toy_checkpoint, quant="fp32", attn_implementation="eager")


@pytest.fixture(scope="session")
def toy_nf4(toy_checkpoint):
    from flowkit import load_videollm

    return load_videollm(toy_checkpoint, quant="nf4")


@pytest.fixture(scope="session")
def toy_bf16(toy_checkpoint):
    from flowkit import load_videollm

    return load_videollm(toy_checkpoint, quant="bf16")


def random_frames(num_frames=8, height=48, width=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


QUESTION = "Which way does the red square move?"
OPTIONS = ["left", "right", "up", "down"]


@pytest.fixture
def prepared_fp32(toy_fp32):
    return toy_fp32.prepare(random_frames(), QUESTION, OPTIONS, answer="B")


def run_cli_check(checkpoint, clip, *extra, options=tuple(OPTIONS)):
    """``python -m flowkit check`` in this process on a checkpoint and a clip (fp32), with ``extra`` arguments."""
    from flowkit.cli import main

    return main(
        ["check", "--model", str(checkpoint), "--quant", "fp32", "--video", str(clip), "--question", QUESTION]
        + ["--options", *options, *extra]
    )


def tiny_train_config(base, **overrides):
    """A two-step training config on a tiny checkpoint (one video task, one frame task): the training tests' base."""
    from flowkit.smol_video.training.trainer import TrainConfig

    settings = dict(
        steps=2,
        batch_size=2,
        eval_every=2,
        eval_per_task=1,
        log_every=1,
        warmup=1,
        lora_rank=2,
        base=str(base),
        video_tasks=("scene_transition",),
        frame_tasks=("colour",),
    )
    return TrainConfig(**{**settings, **overrides})
