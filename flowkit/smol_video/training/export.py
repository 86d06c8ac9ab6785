"""``python -m flowkit.smol_video.training.export VIDEO_RUN [CONTROL_RUN]``: write the shipped deltas.

Writes ``data/models/flowkit-smol-video/delta.safetensors`` (the trained model: vision
tower, projector with its norm folded in, LoRA factors) and ``control.safetensors`` (the
image-only control: stage-1 vision side only), in float16, plus ``meta.json`` with the
runs' configs and last evaluations. Files are written atomically.

``--keep-control`` leaves the shipped control as it is (no CONTROL_RUN; with ``--keep-history``, so
that the control's run stays recorded); ``--keep-history`` keeps
the runs ``meta.json`` already records (earlier versions' runs, whose folders may be gone) and
appends the new ones after them (a run recorded under the same name is replaced).
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


def _run_record(run: Path) -> dict:
    return {"name": run.name, "config": json.loads((run / "config.json").read_text()), "last_eval": _last_eval(run)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flowkit.smol_video.training.export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("video_run", help="the stage-2 run folder (the trained model)")
    parser.add_argument("control_run", nargs="?", default=None, help="the stage-1 run folder (the image-only control)")
    parser.add_argument("--history", nargs="*", default=[], help="earlier run folders to record in meta.json")
    parser.add_argument("--keep-control", action="store_true", help="keep the shipped control (give no CONTROL_RUN)")
    parser.add_argument(
        "--keep-history", action="store_true", help="keep the runs meta.json records and append the new ones"
    )
    args = parser.parse_args(argv)
    if (args.control_run is None) != args.keep_control:
        parser.error("give either CONTROL_RUN or --keep-control")
    if args.keep_control and not args.keep_history:
        parser.error("--keep-control also needs --keep-history, so that meta.json keeps the kept control's run")
    runs = [Path(r) for r in [*args.history, *([args.control_run] if args.control_run else []), args.video_run]]
    for run in runs:
        if not (run / "config.json").is_file():
            parser.error(f"{run} is not a training run folder (no config.json); give the folder training wrote")
    out = shipped_dir()
    old_meta = json.loads((out / "meta.json").read_text()) if (out / "meta.json").is_file() else {}
    if args.keep_control and not (out / "control.safetensors").is_file():
        parser.error(f"--keep-control: there is no control in {out}; give CONTROL_RUN")
    delta = export_delta(args.video_run)
    control = export_delta(args.control_run) if args.control_run else None
    sizes = dict(old_meta.get("files_bytes", {})) if args.keep_history else {}
    sizes["delta.safetensors"] = _save(delta, out / "delta.safetensors")
    if control is not None:
        sizes["control.safetensors"] = _save(control, out / "control.safetensors")
    else:
        sizes["control.safetensors"] = (out / "control.safetensors").stat().st_size
    records = list(old_meta.get("runs", [])) if args.keep_history else []
    new = [_run_record(r) for r in runs]
    names = {r["name"] for r in new}
    records = [r for r in records if r["name"] not in names] + new
    meta = {"files_bytes": sizes, "runs": records}
    with atomic_path(out / "meta.json") as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2, sort_keys=True))
    print(json.dumps(sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
