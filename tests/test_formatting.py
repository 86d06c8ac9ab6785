"""The one formatter for printed numbers, and the slicer that reruns the checked chapter cells."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from flowkit.formatting import RECORD_ENV, format_pct_change, format_prob, format_share, format_table, rounding_margin
from flowkit.testing.notebook_slices import checked_cells, slice_chapters, slice_notebook


def test_probabilities_have_three_decimals_and_changes_one_with_a_sign():
    assert format_prob(0.81752) == "0.818"
    assert format_prob(float("nan")) == "n/a"
    assert format_pct_change(-45.97431) == "-46.0 %"
    assert format_pct_change(161.13) == "+161.1 %"
    assert format_share(0.86143) == "86.1 %"
    assert format_share(0.58333, decimals=0) == "58 %"


@pytest.mark.parametrize("value", [-0.04, 0.04, -0.0, 0.0])
def test_a_change_that_rounds_to_zero_has_no_sign(value):
    # -0.04 on one CPU and +0.04 on another must print alike
    assert format_pct_change(value) == "0.0 %"
    assert format_prob(-1e-9) == "0.000"


def test_rounding_margin_is_the_distance_to_the_nearest_boundary():
    assert rounding_margin(0.7255, 3) == pytest.approx(0.0, abs=1e-12)
    assert rounding_margin(0.725493, 3) == pytest.approx(7e-6, abs=1e-9)
    assert rounding_margin(0.7250, 3) == pytest.approx(0.0005, abs=1e-12)
    assert rounding_margin(-35.2, 1) == pytest.approx(0.05, abs=1e-9)
    assert rounding_margin(58.3333, 0) == pytest.approx(0.1667, abs=1e-4)


def test_format_table_formats_only_the_named_columns():
    table = pd.DataFrame({"p": [0.12345, 0.5], "pct": [-3.14159, 20.0], "n": [1, 2]})
    shown = format_table(table, probs=["p"], pct_changes=["pct"])
    assert shown["p"].tolist() == ["0.123", "0.500"]
    assert shown["pct"].tolist() == ["-3.1 %", "+20.0 %"]
    assert shown["n"].tolist() == [1, 2]
    assert table["p"].tolist() == [0.12345, 0.5]  # the table itself is left alone


def test_printed_numbers_are_recorded_when_asked(tmp_path, monkeypatch):
    record = tmp_path / "numbers.jsonl"
    monkeypatch.setenv(RECORD_ENV, str(record))
    format_prob(0.25)
    format_pct_change(-12.34)
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert lines == [
        {"kind": "prob", "value": 0.25, "decimals": 3, "text": "0.250"},
        {"kind": "pct_change", "value": -12.34, "decimals": 1, "text": "-12.3"},
    ]


def _notebook(*sources: str) -> dict:
    return {
        "cells": [
            {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": s} for s in sources
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def test_the_slice_keeps_checked_cells_and_the_statements_they_need():
    notebook = _notebook(
        "import math\nsetup_done = True\n",
        "a = 1\nb = 2\nchart(b)\n",
        "rows = []\nfor i in range(a):\n    rows.append(i)\nunused = 3\n",
        "c = b + 1\n",
        "# NBVAL_CHECK_OUTPUT\nprint(len(rows), math.pi)\n",
    )
    assert checked_cells(notebook) == [4]
    sliced = slice_notebook(notebook)
    sources = ["".join(cell["source"]) for cell in sliced["cells"]]
    assert sources == [
        "import math\nsetup_done = True\n",
        "a = 1\n",
        "rows = []\nfor i in range(a):\n    rows.append(i)\n",
        "# NBVAL_CHECK_OUTPUT\nprint(len(rows), math.pi)\n",
    ]
    namespace: dict = {}
    exec("\n".join(sources[:-1]), namespace)  # the slice runs on its own
    assert namespace["rows"] == [0]


def test_a_later_rebinding_wins_and_chapters_join_in_order(tmp_path):
    notebook = _notebook("x = 1\n", "x = 2\n", "# NBVAL_CHECK_OUTPUT\nprint(x)\n")
    assert ["".join(c["source"]) for c in slice_notebook(notebook)["cells"]] == [
        "x = 1\n",
        "x = 2\n",
        "# NBVAL_CHECK_OUTPUT\nprint(x)\n",
    ]  # the first cell is the setup, always kept
    first, second = tmp_path / "01_a.ipynb", tmp_path / "02_b.ipynb"
    first.write_text(json.dumps(notebook))
    second.write_text(json.dumps(_notebook("y = 5\n", "print('not checked')\n")))
    joined = slice_chapters([first, second], ["print('extra')\n"])
    assert [c["id"] for c in joined["cells"]] == ["01-0", "01-1", "01-2", "extra-0"]
