"""The code follows one style: `ruff check` (lint) and `ruff format --check` (layout), as configured in
pyproject.toml. Notebooks are not formatted: their saved outputs must not churn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(command):
    result = subprocess.run([sys.executable, "-m", "ruff", *command, "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, (
        f"`ruff {' '.join(command)}` found problems; run `.venv/bin/ruff "
        f"{'check --fix' if command == ['check'] else 'format'}` and review:\n"
        f"{result.stdout[-4000:]}{result.stderr[-1000:]}"
    )
