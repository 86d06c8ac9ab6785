"""Every bad input answered clearly: each message says what was wrong and what to do.

One test (or one parametrized case) per row of the table in issue 23, section 3, found by trying
the public API and the command line. The video rows (a missing user clip, a corrupt or truncated
clip, "end=None s", the one-line short-clip warning) are in ``test_data_video.py``; the one-pass
question-set loader is in ``test_data_question_sets.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import OPTIONS, QUESTION, random_frames, run_cli_check
from flowkit import KnockoutError, KnockoutSpec, ModelLoadError, load_videollm
from flowkit.knockout_check import check
from flowkit.model.videollm import checkpoint_config, config_num_layers

# ------------------------------------------------------------------------------ the model path


def test_missing_absolute_path_shows_it_in_full(tmp_path):
    missing = tmp_path / "models" / "missing"
    with pytest.raises(ModelLoadError) as raised:
        load_videollm(str(missing))
    message = str(raised.value)
    assert message.startswith(
        f"the folder {missing} does not exist (the nearest folder that does is {tmp_path}). "
        "Check the path, or pass a hub id"
    )
    assert "relative to" not in message


def test_missing_relative_path_shows_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ModelLoadError,
        match=re.escape(
            f"the folder ./ckpts/missing (= {tmp_path}/ckpts/missing) "
            f"does not exist (the nearest folder that does is {tmp_path})"
        ),
    ):
        load_videollm("./ckpts/missing")


def test_folder_without_config_json_is_not_a_checkpoint(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError) as raised:
        load_videollm(tmp_path)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path} is not a model checkpoint: no config.json in it")
    assert message.endswith("Give the folder that holds config.json and the weights.")
    assert "Unrecognized model" not in message and "model_type" not in message


def test_parent_of_a_checkpoint_points_one_level_down(tmp_path, toy_checkpoint):
    with pytest.raises(
        ModelLoadError,
        match=re.escape(f"{toy_checkpoint.parent} is not a model checkpoint: no config.json in it")
        + ".*"
        + re.escape(f"A checkpoint is one level down: {toy_checkpoint}."),
    ):
        load_videollm(toy_checkpoint.parent)


@pytest.mark.parametrize("name", ["clip.mp4", "config.json"])
def test_a_file_as_the_model_asks_for_the_checkpoint_folder(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00\x00\x00 ftypisom")
    with pytest.raises(ModelLoadError) as raised:
        load_videollm(path)
    message = str(raised.value)
    assert message.startswith(f"{path} is a file, not a model checkpoint: give the checkpoint folder")
    assert "config.json and the weights" in message and "not a valid JSON" not in message
    if name == "config.json":
        assert f"give the checkpoint folder ({tmp_path})" in message


# ------------------------------------------------------------------------------ knockout specs


@pytest.mark.parametrize(
    ("cut", "wanted"),
    [
        (
            {"edges": "video->last"},
            "cut 0 of the knockout spec ({'edges': 'video->last'}) has no 'layers': each cut "
            "names its edge group and its layers, e.g. ",
        ),
        (
            {"layers": {"layers": [1, 2]}},
            "cut 0 of the knockout spec ({'layers': {'layers': [1, 2]}}) has no 'edges': ",
        ),
        ({}, "cut 0 of the knockout spec ({}) has no 'edges' and no 'layers': "),
        (
            "video->last",
            "cut 0 of the knockout spec is the string 'video->last', not a cut: write each cut as an object "
            "with 'edges' and 'layers', e.g. ",
        ),
        (7, "cut 0 of the knockout spec is 7, not a cut: "),
    ],
)
def test_spec_json_with_a_bad_cut_names_it_and_the_missing_field(cut, wanted):
    text = json.dumps({"cuts": [cut]})
    with pytest.raises(KnockoutError) as raised:
        KnockoutSpec.from_json(text)
    message = str(raised.value)
    assert message.startswith(wanted)
    assert '{"edges": "video->question", "layers": {"layers": [5, 6, 7]}}' in message


def test_spec_json_names_the_cut_that_is_wrong_among_several():
    good = {"edges": "video->last", "layers": {"layers": [1]}}
    with pytest.raises(
        KnockoutError,
        match=r"^cut 1 of the knockout spec: its 'layers': 'center' and 'size' must be "
        r"whole numbers, got \{'center': 'x'\}; write ",
    ):
        KnockoutSpec.from_json(json.dumps({"cuts": [good, {"edges": "video->last", "layers": {"center": "x"}}]}))
    spec = KnockoutSpec.single("video->last", "1-2").plus(KnockoutSpec.single("cross_frame", "3"))
    assert KnockoutSpec.from_json(spec.to_json()) == spec  # the round trip is untouched


def test_negative_frame_index_is_before_the_start():
    with pytest.raises(KnockoutError) as raised:
        KnockoutSpec.single("frame:-1->last", "1")
    assert str(raised.value) == (
        "'frame:-1': frame index -1 is before the start: frames count from 0 (frame:0 is the first)."
    )
    assert "beyond" not in str(raised.value)


# ------------------------------------------------------------------------------ the check command, before loading


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from flowkit.data import write_video

    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, random_frames(12, 48, 64, seed=9))
    return path


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if the command loads model weights (every check below must come first)."""
    monkeypatch.setattr("flowkit.model.videollm.load_videollm", lambda *a, **k: pytest.fail("the model loaded first"))


@pytest.mark.parametrize(
    ("extra", "options", "wanted"),
    [
        (
            ["--cut", "video->nowhere", "--layers", "1"],
            OPTIONS,
            "error: unknown token group 'nowhere' in --cut 'video->nowhere'. Known groups: video, question, ",
        ),
        (["--cut", "video", "--layers", "1"], OPTIONS, "error: unknown edge group 'video'. Write 'source->target'"),
        (
            ["--cut", "option:E->last", "--layers", "1"],
            OPTIONS,
            "error: option 'E' does not exist: with 4 --options the letters are A, B, C, D.",
        ),
        (
            ["--cut", "true_option->last", "--layers", "1"],
            OPTIONS,
            "error: the group 'true_option' needs to know the correct answer: pass --answer LETTER.",
        ),
        (
            ["--cut", "video->last", "--layers", "1"],
            ["left"],
            "error: --options gives 1 option ('left'); a multiple-choice question needs at least 2, e.g. --options left "
            "right up down",
        ),
        (
            ["--cut", "video->last", "--layers", "1", "--answer", "E"],
            OPTIONS,
            "error: --answer 'E' is not an option letter: with 4 --options the letters are A, B, C, D.",
        ),
        (
            ["--cut", "video->last", "--window", "50"],
            OPTIONS,
            "error: window centre 50 is beyond the model's depth: layers are 0..3.",
        ),
        (
            ["--cut", "video->last", "--layers", "1-40"],
            OPTIONS,
            "error: layer(s) 4-40 are beyond the model's depth: layers are 0..3.",
        ),
    ],
)
def test_check_refuses_bad_arguments_before_the_model_loads(
    toy_checkpoint, clip, capsys, no_weights, extra, options, wanted
):
    assert run_cli_check(toy_checkpoint, clip, *extra, options=options) == 2
    err = capsys.readouterr().err
    assert err.startswith(wanted) and err.count("\n") == 1 and "Traceback" not in err


def test_check_with_a_missing_model_fails_before_reading_the_video(tmp_path, capsys, no_weights):
    assert run_cli_check(tmp_path / "missing", tmp_path / "missing.mp4", "--cut", "video->last", "--layers", "1") == 2
    assert capsys.readouterr().err.startswith(f"error: the folder {tmp_path / 'missing'} does not exist")


def test_check_with_a_missing_clip_says_the_file_does_not_exist(toy_checkpoint, tmp_path, capsys, no_weights):
    assert run_cli_check(toy_checkpoint, tmp_path / "holiday.mp4", "--cut", "video->last", "--layers", "1") == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: video file not found: {tmp_path / 'holiday.mp4'} does not exist; check the file name and folder\n"
    )


def test_layer_count_from_the_config_matches_the_loaded_model(toy_checkpoint, toy_fp32):
    assert config_num_layers(checkpoint_config(toy_checkpoint)) == toy_fp32.num_layers == 4


# ------------------------------------------------------------------------------ identical frames


def test_cross_frame_cut_on_identical_frames_says_so(toy_fp32):
    still = np.repeat(random_frames(1, seed=3), 8, axis=0)
    prepared = toy_fp32.prepare(still, QUESTION, OPTIONS)
    assert prepared.identical_frames
    result = check(toy_fp32, prepared, "cross_frame", layers="1-2", options=OPTIONS)
    assert result.identical_frames and str(result).endswith(
        "\nnote: every frame of this clip is the same picture, so the cross_frame cut only stops frames reading "
        "copies of themselves; its effect says little about how the model uses time"
    )
    assert not check(toy_fp32, prepared, "video->last", layers="1-2").note  # only cross_frame means little
    moving = toy_fp32.prepare(random_frames(8, seed=3), QUESTION, OPTIONS)
    assert not moving.identical_frames
    assert "note:" not in str(check(toy_fp32, moving, "cross_frame", layers="1-2"))


def test_one_frame_clip_on_the_command_line(toy_checkpoint, tmp_path):
    """What a shell user sees: a one-line warning (no source line), the cut's result, and the note."""
    from flowkit.data import write_video

    write_video(tmp_path / "still.mp4", random_frames(1, 48, 64, seed=4))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowkit",
            "check",
            "--model",
            str(toy_checkpoint),
            "--quant",
            "fp32",
            "--video",
            str(tmp_path / "still.mp4"),
            "--question",
            QUESTION,
            "--options",
            *OPTIONS,
            "--cut",
            "cross_frame",
            "--layers",
            "1-2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stderr.splitlines() if "ShortClipWarning" in line]
    assert warning == [
        f"ShortClipWarning: {tmp_path / 'still.mp4'}: only 1 frame but 8 requested; every sampled "
        "frame is a copy of that one frame"
    ]
    assert "warnings.warn(" not in done.stderr and "video.py" not in done.stderr
    assert "knockout: cross_frame (layers 1-2)" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith("note: every frame of this clip is the same picture")
