"""NF4 vs another weight format, question by question (flowkit.analysis.quantization), on the toy model."""

from __future__ import annotations

import pandas as pd
import pytest

from flowkit.errors import FlowkitError


@pytest.fixture(scope="module")
def letters_nf4(letters_checkpoint):
    from flowkit import load_videollm

    return load_videollm(letters_checkpoint, quant="nf4")


def test_the_comparison_is_paired_and_says_how_far_apart_the_formats_are(letters_nf4, letters_fp32):
    from flowkit.analysis.quantization import format_agreement, quantization_agreement, quantization_sweeps
    from flowkit.data import shipped_questions
    from flowkit.data.sample import first_per_task

    samples = first_per_task(shipped_questions(), 2)
    table = quantization_sweeps({"nf4": letters_nf4, "fp32": letters_fp32}, samples, step=2, progress=False)
    assert set(table["quant"]) == {"nf4", "fp32"} and set(table["center"]) == {0, 2}
    assert len(table) == 2 * 2 * len(samples)
    summary = quantization_agreement(table, "nf4", "fp32")
    correct = sorted(table[(table["quant"] == "nf4") & table["correct_base"]]["sample"].unique())
    assert summary["trough_agree"]["questions"] == len(correct) > 0
    clean = table.drop_duplicates(["sample", "quant"]).pivot(index="sample", columns="quant", values="p_base")
    expected_gap = (clean.loc[correct, "nf4"] - clean.loc[correct, "fp32"]).mean()
    assert summary["p_answer_gap"]["mean"] == pytest.approx(expected_gap)
    lo, hi = summary["mean_abs_gap"]["ci"]
    assert 0 <= lo <= summary["mean_abs_gap"]["mean"] <= hi
    assert "questions answered correctly under nf4" in format_agreement(summary)
    # a format compared with itself: no gap, every trough agrees
    same = pd.concat([table[table["quant"] == "nf4"], table[table["quant"] == "nf4"].assign(quant="copy")])
    itself = quantization_agreement(same, "nf4", "copy")
    assert (
        itself["mean_abs_gap"]["mean"] == 0
        and itself["trough_agree"]["mean"] == 1
        and itself["p_answer_gap"]["mean"] == 0
    )
    with pytest.raises(FlowkitError, match="no rows for"):
        quantization_agreement(table, "nf4", "bf16")
    with pytest.raises(FlowkitError, match="at least two"):
        quantization_sweeps({"nf4": letters_nf4}, samples)
