"""The chapters print the same text on every CPU.

Every cell nbval compares (``# NBVAL_CHECK_OUTPUT``) is rerun — with only the statements it
needs (:mod:`flowkit.testing.notebook_slices`) — in a fresh kernel under another CPU's
arithmetic, and must reproduce its saved output:

- ``ATEN_CPU_CAPABILITY=default``: PyTorch's non-SIMD kernels (what a CPU without AVX
  computes; they round differently from the AVX2/AVX-512 kernels the chapters were run with);
- ``MKL_CBWR=COMPATIBLE``: MKL's most portable code path for torch's matrix products.

The slices of all chapters run as one notebook (one kernel, the model loaded once). Each run
also records every number the chapters print through :mod:`flowkit.formatting`. Between the
two runs those numbers move by the *spread across kernels*; a printed number must sit further
than ``SAFETY`` times that spread from its rounding boundary — and a probability further than
1e-5, the agreement the kit promises across CPUs — or another CPU could print another digit.
Stored results are recomputed (``verify``, one entry per table) under the same settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowkit.formatting import RECORD_ENV, rounding_margin
from flowkit.testing.notebook_slices import slice_chapters

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SETTINGS = {"aten-default": {"ATEN_CPU_CAPABILITY": "default"}, "mkl-compatible": {"MKL_CBWR": "COMPATIBLE"}}
#: the tables whose stored rows are recomputed under each setting (one entry each)
VERIFIED_TABLES = (
    "sweeps",
    "accuracy",
    "emergence",
    "lens",
    "pathways",
    "pathway_search",
    "pathway_search_test",
    "quantization",
)
#: how many times the spread across kernels a printed number must keep from its rounding boundary
SAFETY = 4
#: the least distance of a printed probability from its rounding boundary: the kit's promise across CPUs
PROB_AGREEMENT = 1e-5
VERIFY_CELL = (
    "from flowkit.course import chapters\nfrom flowkit.course.results import verify\n\n"
    f"for name in {VERIFIED_TABLES!r}:\n    verify(chapters.model(), name, n=1)  # raises on a mismatch\n"
)


def _run_checked_cells(name: str, folder: Path) -> tuple[subprocess.CompletedProcess, list[dict]]:
    folder.mkdir()
    notebook = folder / "checked_cells.ipynb"
    notebook.write_text(json.dumps(slice_chapters(CHAPTERS, [VERIFY_CELL]), indent=1))
    record = folder / "numbers.jsonl"
    env = {**os.environ, **SETTINGS[name], RECORD_ENV: str(record)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "--rootdir",
        str(folder),
        "--nbval-lax",
        f"--nbval-sanitize-with={ROOT / 'notebooks' / 'sanitize.cfg'}",
        "--nbval-cell-timeout=600",
        str(notebook),
    ]
    result = subprocess.run(command, cwd=ROOT / "notebooks", env=env, capture_output=True, text=True, timeout=1200)
    numbers = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return result, numbers


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("cross_kernel")
    return {name: _run_checked_cells(name, base / name) for name in SETTINGS}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SETTINGS))
def test_checked_cells_and_stored_results_match_under_other_kernels(runs, name):
    result, _ = runs[name]
    assert result.returncode == 0, f"{SETTINGS[name]}:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    assert " passed" in result.stdout and "failed" not in result.stdout


@pytest.mark.slow
def test_printed_numbers_sit_away_from_rounding_boundaries(runs):
    (_, a), (_, b) = runs["aten-default"], runs["mkl-compatible"]
    assert a and len(a) == len(b), "both runs print the same numbers through flowkit.formatting"
    assert [(x["kind"], x["text"]) for x in a] == [(x["kind"], x["text"]) for x in b]
    for x, y in zip(a, b):
        unit = 10.0 ** -x["decimals"]
        needed = max(SAFETY * abs(x["value"] - y["value"]), PROB_AGREEMENT if x["kind"] == "prob" else 1e-6 * unit)
        assert rounding_margin(x["value"], x["decimals"]) > needed, (
            f"{x['text']} (raw {x['value']!r} here, {y['value']!r} there) sits within {needed:.2g} of a rounding "
            "boundary: print it with fewer decimals, or check another cell"
        )
