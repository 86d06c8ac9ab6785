"""``python -m flowkit.smol_video.training.export VIDEO_RUN CONTROL_RUN``: write the shipped deltas.

Writes ``data/models/flowkit-smol-video/delta.safetensors`` (the trained model: vision
tower, projector with its norm folded in, LoRA factors) and ``control.safetensors`` (the
image-only control: stage-1 vision side only), in float16, plus ``meta.json`` with the
runs' configs and last evaluations. Files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from flowkit.atomic_files import atomic_path

from flowkit.smol_video import shipped_dir
from flowkit.smol_video.training.trainer import export_delta


def _save(tensors: dict[str, torch.Tensor], path: Path) -> int:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    half = {
        k: (v.half() if v.is_floating_point() and k != "lora::scale" else v).contiguous() for k, v in tensors.items()
    }
    with atomic_path(path) as tmp:
        save_file(half, str(tmp))
    return path.stat().st_size


def _last_eval(run: Path) -> dict:
    evals = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if '"eval"' in l]
    return evals[-1] if evals else {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flowkit.smol_video.training.export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("video_run", help="the stage-2 run folder (the trained model)")
    parser.add_argument("control_run", help="the stage-1 run folder (the image-only control)")
    parser.add_argument("--history", nargs="*", default=[], help="earlier run folders to record in meta.json")
    args = parser.parse_args(argv)
    out = shipped_dir()
    sizes = {
        "delta.safetensors": _save(export_delta(args.video_run), out / "delta.safetensors"),
        "control.safetensors": _save(export_delta(args.control_run), out / "control.safetensors"),
    }
    runs = [Path(r) for r in [*args.history, args.control_run, args.video_run]]
    meta = {
        "files_bytes": sizes,
        "runs": [
            {"name": r.name, "config": json.loads((r / "config.json").read_text()), "last_eval": _last_eval(r)}
            for r in runs
        ],
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    print(json.dumps(sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
