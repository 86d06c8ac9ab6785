"""write_split and its command, atomic writes, and the shipped evaluation split in data/questions."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

import flowkit.data.question_sets as bench_module
from flowkit.data import (
    EVAL_SEED,
    NUM_OPTIONS,
    TASKS,
    QuestionSetError,
    shipped_questions_root,
    generate,
    load_question_set,
    read_video,
    write_split,
)
from flowkit.data.__main__ import main
from flowkit.data.video import encoder_build

SHIPPED_PER_TASK = 60
CODEC_MEAN_ABS_ERROR = 8.0  # libx264 CRF 18, yuv420p; see test_data_video.py


def leftovers(parent, name):
    """Temporary folders that write_split may have left next to ``parent / name``."""
    return sorted(path.name for path in parent.iterdir() if path.name.startswith(f".{name}."))


def available_files(folder):
    return sorted(path.name for path in folder.iterdir())


def test_write_split_layout_and_round_trip(tmp_path):
    summary = write_split(tmp_path / "bench", seed=7, per_task=4, tasks=["action_antonym", "object_count"])
    root = tmp_path / "bench"
    assert summary.counts == {"action_antonym": 4, "object_count": 4}
    assert summary.num_bytes == sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert sorted(p.name for p in root.iterdir()) == ["README.md", "json", "manifest.json", "video"]
    assert sorted(p.name for p in (root / "video" / "object_count").iterdir()) == [f"{i:04d}.mp4" for i in range(4)]
    entries = json.loads((root / "json" / "object_count.json").read_text())
    assert set(entries[0]) == {"video", "question", "candidates", "answer"}
    assert entries[0]["answer"] in entries[0]["candidates"]

    loaded = {s.id: s for s in load_question_set(root, num_frames=16)}
    for task in summary.counts:
        for original in generate(task, 4, seed=7):
            copy = loaded[original.id]
            assert (copy.question, copy.candidates, copy.answer) == (
                original.question,
                original.candidates,
                original.answer,
            )
            assert np.abs(copy.frames.astype(int) - original.frames).mean() < CODEC_MEAN_ABS_ERROR
    assert leftovers(tmp_path, "bench") == []


def test_refuses_to_overwrite_unless_asked(tmp_path):
    write_split(tmp_path / "bench", seed=1, per_task=2, tasks=["scene_transition"])
    with pytest.raises(
        QuestionSetError, match=r"bench already exists; pass overwrite=True \(command line: --overwrite\)"
    ):
        write_split(tmp_path / "bench", seed=2, per_task=2, tasks=["scene_transition"])
    write_split(tmp_path / "bench", seed=2, per_task=3, tasks=["object_shuffle"], overwrite=True)
    assert available_files(tmp_path / "bench" / "json") == ["object_shuffle.json"]
    assert leftovers(tmp_path, "bench") == []


class EncoderCrash(RuntimeError):
    pass


def crash_on_third_clip(monkeypatch):
    calls = []

    def failing_write_video(path, frames, fps):
        calls.append(path)
        if len(calls) == 3:
            raise EncoderCrash("simulated interrupt")
        return real_write_video(path, frames, fps=fps)

    real_write_video = bench_module.write_video
    monkeypatch.setattr(bench_module, "write_video", failing_write_video)


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    crash_on_third_clip(monkeypatch)
    with pytest.raises(EncoderCrash):
        write_split(tmp_path / "bench", seed=1, per_task=4, tasks=["action_sequence"])
    assert not (tmp_path / "bench").exists()
    assert leftovers(tmp_path, "bench") == []


def test_interrupted_overwrite_keeps_the_old_split(tmp_path, monkeypatch):
    write_split(tmp_path / "bench", seed=1, per_task=2, tasks=["action_sequence"])
    before = {p: p.read_bytes() for p in (tmp_path / "bench").rglob("*") if p.is_file()}
    crash_on_third_clip(monkeypatch)
    with pytest.raises(EncoderCrash):
        write_split(tmp_path / "bench", seed=2, per_task=4, tasks=["action_sequence"], overwrite=True)
    assert {p: p.read_bytes() for p in (tmp_path / "bench").rglob("*") if p.is_file()} == before
    assert leftovers(tmp_path, "bench") == []


def test_write_split_rejects_unknown_tasks(tmp_path):
    with pytest.raises(QuestionSetError, match="unknown synthetic task 'dance'"):
        write_split(tmp_path / "bench", tasks=["dance"])
    assert not (tmp_path / "bench").exists()


def test_command_writes_and_summarises(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["generate", "--out", str(out), "--seed", "3", "--per-task", "2", "--tasks", "object_count"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "object_count" in printed and "MB" in printed
    assert main(["generate", "--out", str(out), "--per-task", "2", "--tasks", "object_count"]) == 2
    assert "already exists" in capsys.readouterr().err


# --------------------------------------------------------------------------- the shipped split


@pytest.fixture(scope="module")
def shipped():
    return load_question_set(shipped_questions_root(), num_frames=8)


def test_shipped_split_has_the_documented_counts(shipped):
    root = shipped_questions_root()
    manifest = json.loads((root / "manifest.json").read_text())
    assert Counter(s.task for s in shipped) == {task: SHIPPED_PER_TASK for task in TASKS}
    assert manifest["counts"] == {task: SHIPPED_PER_TASK for task in TASKS}
    assert (manifest["seed"], manifest["num_frames"], manifest["size"]) == (EVAL_SEED, 16, 64)
    assert all(s.frames.shape == (8, 64, 64, 3) for s in shipped)
    readme = (root / "README.md").read_text()
    assert f"seed: {EVAL_SEED}" in readme and f"| `object_shuffle` | {SHIPPED_PER_TASK} |" in readme
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < 5e6


def test_shipped_answers_are_balanced_over_letters(shipped):
    for task in TASKS:
        letters = Counter(s.answer for s in shipped if s.task == task)
        per_letter = SHIPPED_PER_TASK // NUM_OPTIONS[task]
        assert letters == {letter: per_letter for letter in "ABCD"[: NUM_OPTIONS[task]]}, task


@pytest.mark.parametrize("task", TASKS)
def test_shipped_task_regenerates_identically(tmp_path, task):
    """Two regenerations of a task in one run are byte-identical, and equal the shipped split.

    Annotations must match byte for byte. Clips must match byte for byte — and decode to
    exactly the same frames — when the encoder build (PyAV pinned in pyproject.toml) matches
    the one recorded in manifest.json; with another build only the decoded frames are compared
    with the shipped ones (within the codec tolerance), but the two fresh runs must still agree.
    """
    root = shipped_questions_root()
    manifest = json.loads((root / "manifest.json").read_text())
    runs = []
    for name in ("first", "second"):
        write_split(
            tmp_path / name,
            seed=manifest["seed"],
            per_task=manifest["per_task"],
            tasks=[task],
            num_frames=manifest["num_frames"],
            size=manifest["size"],
        )
        runs.append(tmp_path / name)
    clips = sorted(path.name for path in (root / "video" / task).iterdir())
    assert clips == sorted(path.name for path in (runs[0] / "video" / task).iterdir())
    differing = [
        clip
        for clip in clips
        if (runs[0] / "video" / task / clip).read_bytes() != (runs[1] / "video" / task / clip).read_bytes()
    ]
    assert differing == [], f"two runs in one process wrote different bytes for {differing}"
    assert (runs[0] / "json" / f"{task}.json").read_bytes() == (root / "json" / f"{task}.json").read_bytes()
    same_encoder = manifest["encoder"] == encoder_build()
    for clip in clips:
        fresh, stored = read_video(runs[0] / "video" / task / clip), read_video(root / "video" / task / clip)
        if same_encoder:
            assert (runs[0] / "video" / task / clip).read_bytes() == (root / "video" / task / clip).read_bytes(), clip
            assert np.array_equal(fresh, stored), clip
        else:
            assert np.abs(fresh.astype(int) - stored).mean() < CODEC_MEAN_ABS_ERROR, clip
    if not same_encoder:
        pytest.skip(f"encoder {encoder_build()} differs from {manifest['encoder']}: compared decoded frames only")


def test_yuv_conversion_is_exact_integer_arithmetic():
    """The RGB <-> YUV 4:2:0 conversions the clips go through are plain integer numpy (no CPU-specific SIMD)."""
    from flowkit.data.video import rgb_to_yuv420p, yuv420p_to_rgb

    frame = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    planes = rgb_to_yuv420p(frame)
    assert planes.shape == (9, 10) and planes.dtype == np.uint8
    r, g, b = (int(c) for c in frame[0, 0])
    assert planes[0, 0] == ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    gray = np.full((4, 4, 3), 128, dtype=np.uint8)
    assert np.abs(yuv420p_to_rgb(rgb_to_yuv420p(gray)).astype(int) - 128).max() <= 1
