"""Execute the chapter notebooks in place, so their committed outputs are what the kit computes now.

    python notebooks/run_chapters.py                 # every chapter
    python notebooks/run_chapters.py 01_cross_frame  # some

Runs each notebook in a fresh kernel from the notebooks folder (cells tagged
``raises-exception`` are the exercises' blanks and are expected to raise), strips
machine-specific paths from the outputs and the widgets' saved state (each widget output
carries a PNG snapshot) and prints each chapter's wall time.
Needs the precomputed results (``python -m flowkit fidelity``) for the current model.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _scrub(text: str) -> str:
    """Replace absolute paths of this checkout, the home folder and temp folders with neutral ones."""
    text = text.replace(str(ROOT) + "/", "").replace(str(ROOT), ".")
    text = text.replace(str(Path.home()), "~")
    return re.sub(r"/tmp/[\w.-]+", "<tmp>", text)


def scrub_outputs(notebook) -> None:
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = _scrub(output["text"])
            for key in ("text/plain", "text/html", "text/markdown"):
                if key in output.get("data", {}):
                    output["data"][key] = _scrub(output["data"][key])
            if "traceback" in output:
                output["traceback"] = [_scrub(line) for line in output["traceback"]]


def run(path: Path, timeout: int = 600) -> float:
    notebook = nbformat.read(path, as_version=4)
    started = time.monotonic()
    NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(HERE)}},
    ).execute()
    seconds = time.monotonic() - started
    scrub_outputs(notebook)
    # the widgets' saved state (chart specs with their data, new model ids on every run) is not
    # needed: a saved notebook shows each widget's PNG snapshot, in JupyterLab and on GitHub alike
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, path)
    return seconds


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in HERE.glob("[0-9][0-9]_*.ipynb"))
    for name in names:
        path = HERE / (name if name.endswith(".ipynb") else f"{name}.ipynb")
        print(f"{path.name:<32} {run(path):6.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
