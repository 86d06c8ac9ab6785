"""Benchmark: how fast recipe B's (``--supervision dense``) training batches are built, per CPU core.

    python bench/batch_throughput.py [--seconds 5] [--model-steps 1] [--frame-sizes 32 64]

One process, one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``), so every rate is
*per core*; all paths run in the same process, one after the other, on the same steps
(batch 8, every 4th batch single frames, as ``--stage video``):

- ``today``: :func:`dense.conversation_batch` + ``collate_conversations(fast=False)`` — the
  reference encoding, one processor call per conversation (what the GPU A/B ran);
- ``fast``: the same batches, byte for byte (checked here), with
  :class:`~flowkit.smol_video.training.encoding.ConversationEncoder` — the trainer's default now;
- ``pool``: batches drawn from a pre-rendered training pool (:mod:`flowkit.smol_video.training.pool`),
  first epoch (stored tokens) and later epochs (options re-ordered, so re-tokenized);
- ``pool build``: the one-time cost of a pool entry.

Each at the model's frame size today (32x32 input, 4 tokens per frame) and at a v3 candidate
(64x64 input, 8x8 patches, stride-2 pooling: 16 tokens per frame). Then, as a reference, the CPU
training step of the kit's model on a batch of 8 (``--model-steps``; 0 skips it), and what the GPU
logs in ``data/models/flowkit-smol-video/ab-gpu/`` say a GPU step costs, hence how many cores
each path needs to keep a GPU busy. Writes ``runs/bench/batch_throughput.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GPU_LOGS = ROOT / "data" / "models" / "flowkit-smol-video" / "ab-gpu"


def processor_for(frame_size: int):
    from flowkit.model.checkpoints import CHATML_VIDEO_TEMPLATE, llava_next_video_processor
    from flowkit.smol_video.assembly import PATCH_SIZE
    from flowkit.smol_video.smollm2 import video_tokenizer

    return llava_next_video_processor(video_tokenizer(), frame_size, PATCH_SIZE, CHATML_VIDEO_TEMPLATE)


def same_batch(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key, value in a.items():
        other = b[key]
        if isinstance(value, torch.Tensor):
            if value.dtype != other.dtype or not torch.equal(value, other):
                return False
        elif value != other:
            return False
    return True


def rate(build, config, seconds: float, first_step: int = 1, last_step: int | None = None) -> dict:
    """Build batches of steps first_step, first_step+1, ... for about ``seconds`` (or up to
    ``last_step``); samples per second."""
    from flowkit.smol_video.training.budget import samples_seen

    build(first_step)  # warm caches (tokenizer, templates, the pool's shards)
    step, started = first_step, time.perf_counter()
    per_kind = {"clips": [], "frames": []}
    while (time.perf_counter() - started < seconds or step == first_step) and (last_step is None or step < last_step):
        t0 = time.perf_counter()
        build(step)
        before, after = samples_seen(config, step), samples_seen(config, step + 1)
        kind = "clips" if after["clips"] > before["clips"] else "frames"
        per_kind[kind].append(time.perf_counter() - t0)
        step += 1
    elapsed = time.perf_counter() - started
    samples = (step - first_step) * config.batch_size
    out = {"steps": step - first_step, "samples_per_s": samples / elapsed}
    for kind, times in per_kind.items():
        if times:
            out[f"{kind}_per_s"] = config.batch_size * len(times) / sum(times)
    return out


def measure_paths(frame_size: int, seconds: float, pool_dir: Path, pool_per_task: int) -> dict:
    from flowkit.smol_video.training.dense import conversation_batch
    from flowkit.smol_video.training.encoding import collate_conversations
    from flowkit.smol_video.training.pool import build_pool, pool_batch
    from flowkit.smol_video.training.trainer import TrainConfig, step_batch

    processor = processor_for(frame_size)
    config = TrainConfig(stage="video", supervision="dense", batch_size=8, seed=1)
    results = {}
    today = lambda s: collate_conversations(processor, conversation_batch(config, s), fast=False)  # noqa: E731
    fast = lambda s: step_batch(config, processor, s)  # noqa: E731
    for s in (1, 4):  # a clip batch and a frame batch
        if not same_batch(today(s), fast(s)):
            raise SystemExit(f"the fast path's batch of step {s} differs from today's")
    results["fast_equals_today"] = True
    results["today"] = rate(today, config, seconds)
    results["fast"] = rate(fast, config, seconds)

    # the pool: entries per task sized so that the first-epoch run below stays inside epoch 0
    if pool_dir.exists():
        shutil.rmtree(pool_dir)
    started = time.perf_counter()
    build_pool(
        pool_dir,
        processor,
        seed=5,
        clips_per_task=pool_per_task,
        frames_per_task=pool_per_task // 3 + 1,
        shard_size=256,
    )
    entries = 6 * pool_per_task + 6 * (pool_per_task // 3 + 1)
    results["pool_build"] = {
        "entries_per_s": entries / (time.perf_counter() - started),
        "bytes_per_entry": sum(f.stat().st_size for f in pool_dir.iterdir()) / entries,
    }
    pooled = TrainConfig(stage="video", supervision="dense", batch_size=8, seed=1, pool=str(pool_dir))
    pooled.notes["pool_per_task"] = {"clip": pool_per_task, "frame": pool_per_task // 3 + 1}
    # an epoch: 6 x pool_per_task clips at 6 clips per step (3 steps in 4 hold 8 clips), frames alike
    epoch_steps = pool_per_task
    results["pool_epoch0"] = rate(
        lambda s: pool_batch(pooled, processor, s), pooled, seconds, first_step=1, last_step=epoch_steps - 1
    )
    results["pool_later_epochs"] = rate(
        lambda s: pool_batch(pooled, processor, s), pooled, seconds, first_step=2 * epoch_steps + 4
    )
    first, end = step_batch(config, processor, 1)["video_spans"][0]
    results["video_tokens_per_clip"] = int(end - first)
    return results


def model_step(steps: int) -> dict:
    """Seconds of one CPU training step (dense loss, backward, AdamW) of the kit's model, batch 8."""
    from flowkit.smol_video.assembly import build_model
    from flowkit.smol_video.training.dense import dense_loss
    from flowkit.smol_video.training.lora import lora_parameters
    from flowkit.smol_video.training.trainer import TrainConfig, Trainable, step_batch

    model, processor = build_model(seed=0)
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = Trainable(model, 8)
    for p in trainable.vision_parameters() + lora_parameters(model):
        p.requires_grad_(True)
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    config = TrainConfig(stage="video", supervision="dense", batch_size=8, seed=1)
    trainable.train()
    times = []
    for step in range(1, steps + 1):
        batch = step_batch(config, processor, step)
        t0 = time.perf_counter()
        loss, _ = dense_loss(trainable, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return {
        "batch_size": 8,
        "tokens_per_row": int(batch["input_ids"].shape[1]),
        "seconds_per_step": min(times),
        "steps": steps,
    }


def gpu_logs() -> dict:
    """GPU seconds per step (batch building excluded: the trainer times from a batch in hand) and wall time."""
    out = {}
    for arm in ("A", "B", "continue-B"):
        path = GPU_LOGS / f"{arm}.log.jsonl"
        if not path.is_file():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        rows = [r for r in rows if "seconds_per_step" in r and "train_seconds" in r and "seconds" in r]
        if not rows:
            continue
        last = rows[-1]
        steps = last["step"]
        samples = last.get("clips", 0) + last.get("frames", 0)
        out[arm] = {
            "seconds_per_step": statistics.median(r["seconds_per_step"] for r in rows),
            "batch_size": samples / steps,
            "wall_minus_step_seconds": round(last["seconds"] - last["train_seconds"], 1),
            "steps": steps,
        }
        out[arm]["samples_per_s_needed"] = out[arm]["batch_size"] / out[arm]["seconds_per_step"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per path and frame size")
    parser.add_argument("--frame-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--pool-per-task", type=int, default=240, help="clip entries per task of the bench pool")
    parser.add_argument("--model-steps", type=int, default=1, help="CPU training steps to time (0: skip)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "batch_throughput.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = {"threads": torch.get_num_threads(), "per_frame_size": {}}
    for size in args.frame_sizes:
        report["per_frame_size"][size] = measure_paths(
            size, args.seconds, ROOT / "runs" / "bench" / f"pool-{size}", args.pool_per_task
        )
    if args.model_steps:
        report["cpu_model_step"] = model_step(args.model_steps)
    report["gpu_logs"] = gpu_logs()

    print(
        f"dense batches (batch 8, 1 in 4 single frames), samples per second on ONE core ({report['threads']} thread):"
    )
    for size, r in report["per_frame_size"].items():
        base = r["today"]["samples_per_s"]
        print(f"  {size}x{size} input, {r['video_tokens_per_clip']} video tokens per clip:")
        for name in ("today", "fast", "pool_epoch0", "pool_later_epochs"):
            x = r[name]
            print(
                f"    {name:18s} {x['samples_per_s']:8.0f}/s  (clips {x.get('clips_per_s', 0):6.0f}/s, "
                f"frames {x.get('frames_per_s', 0):6.0f}/s)  x{x['samples_per_s'] / base:.1f}"
            )
        b = r["pool_build"]
        print(
            f"    pool build         {b['entries_per_s']:8.0f} entries/s, {b['bytes_per_entry']:.0f} bytes/entry on disk"
        )
    if "cpu_model_step" in report:
        m = report["cpu_model_step"]
        print(
            f"CPU training step, batch {m['batch_size']} x {m['tokens_per_row']} tokens: {m['seconds_per_step']:.1f} s"
        )
    for arm, g in report["gpu_logs"].items():
        cores = {
            name: g["samples_per_s_needed"] / report["per_frame_size"][args.frame_sizes[0]][name]["samples_per_s"]
            for name in ("today", "fast", "pool_epoch0")
        }
        print(
            f"GPU log {arm}: {g['seconds_per_step']:.3f} s/step at batch {g['batch_size']:.0f} -> "
            f"{g['samples_per_s_needed']:.0f} samples/s to keep up; cores needed: "
            + ", ".join(f"{k} {v:.2f}" for k, v in cores.items())
            + f" (wall - step time over the run: {g['wall_minus_step_seconds']} s)"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
