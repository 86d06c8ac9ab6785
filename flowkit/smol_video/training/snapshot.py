"""``python -m flowkit.smol_video.training.snapshot RUN OUT.safetensors``: a small, committable resume point.

Training runs live in git-ignored folders that a fresh clone on another machine does not
have. A snapshot keeps what must survive — the vision side, projector, its norm and the
LoRA factors, in float16 — and ``python -m flowkit.smol_video.training ... --init-from OUT.safetensors``
starts from it.
"""

from __future__ import annotations

import argparse
import sys

from flowkit.smol_video.training.trainer import save_snapshot


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flowkit.smol_video.training.snapshot", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run_dir")
    parser.add_argument("out")
    args = parser.parse_args(argv)
    size = save_snapshot(args.run_dir, args.out)
    print(f"wrote {args.out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
