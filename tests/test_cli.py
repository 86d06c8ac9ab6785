"""``python -m flowkit check`` on a tiny checkpoint and a real mp4 written by the test."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import random_frames, run_cli_check


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from flowkit.data import write_video

    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, random_frames(12, 48, 64, seed=9))
    return path


def test_check_prints_before_and_after(toy_checkpoint, toy_fp32, clip, capsys):
    from flowkit import KnockoutSpec
    from flowkit.data import read_video

    assert run_cli_check(toy_checkpoint, clip, "--answer", "B", "--cut", "question->last", "--layers", "1-2") == 0
    out = capsys.readouterr().out
    assert "knockout: question->last (layers 1-2)" in out
    # the printed numbers are what the library computes, through the kit's one formatter
    from flowkit.formatting import format_pct_change, format_prob
    from flowkit.prompts.readout import percent_change

    prepared = toy_fp32.prepare(
        read_video(clip, num_frames=8), "Which way does the red square move?", ["left", "right", "up", "down"]
    )
    before = toy_fp32.answer(prepared)
    after = toy_fp32.answer(prepared, KnockoutSpec.single("question->last", "1-2"))
    row = next(line for line in out.splitlines() if line.startswith("(B) right"))
    assert row.split()[2:] == [
        "True",
        format_prob(before.probs[1]),
        format_prob(after.probs[1]),
        *format_pct_change(percent_change(before.probs[1], after.probs[1])).split(),
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--cut", "video->question"], "say where to cut"),
        (["--layers", "1-2"], "say what to cut"),
        (["--cut", "video->nowhere", "--layers", "1"], "unknown token group 'nowhere'"),
        (["--cut", "video->last", "--layers", "1-40"], "beyond the model's depth"),
    ],
)
def test_check_bad_input_is_one_clear_line(toy_checkpoint, clip, capsys, extra, message):
    assert run_cli_check(toy_checkpoint, clip, *extra) == 2
    err = capsys.readouterr().err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and message in last_line and "Traceback" not in err


def test_check_missing_video(toy_checkpoint, tmp_path, capsys):
    assert run_cli_check(toy_checkpoint, tmp_path / "nope.mp4", "--cut", "video->last", "--layers", "1") == 2
    assert "nope.mp4" in capsys.readouterr().err


def test_module_entry_point_help():
    out = subprocess.run(
        [sys.executable, "-m", "flowkit", "check", "--help"], capture_output=True, text=True, check=True
    )
    assert "--cut EDGES" in out.stdout and "--window CENTRE" in out.stdout


def test_the_regeneration_script_calls_commands_that_exist_with_flags_they_accept(capsys):
    """tools/regenerate_results.sh runs the kit's own commands: each one parses (--help appended last,
    so every flag before it is checked and nothing runs)."""
    import shlex
    from pathlib import Path

    from flowkit.analysis import tuned_lens
    from flowkit.cli import main as flowkit_main

    root = Path(__file__).resolve().parents[1]
    script = (root / "tools" / "regenerate_results.sh").read_text().replace("\\\n", " ")
    mains = {"flowkit": flowkit_main, "flowkit.analysis.tuned_lens": tuned_lens.main}
    calls = [shlex.split(line.split('"$PY" -m ', 1)[1]) for line in script.splitlines() if '"$PY" -m ' in line]
    assert [c[0] for c in calls] == ["flowkit.analysis.tuned_lens", "flowkit", "flowkit", "flowkit", "flowkit"]
    for module, *args in calls:
        with pytest.raises(SystemExit) as done:
            mains[module]([*args, "--help"])
        assert done.value.code == 0, (module, args)
    assert 'step "$PY" notebooks/run_chapters.py' in script and (root / "notebooks" / "run_chapters.py").is_file()
