"""load_question_set on a TVBench/MVBench-style download that the tests write themselves, and every bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from flowkit.data import (
    QuestionSetError,
    ShortClipWarning,
    SkippedEntriesWarning,
    available_tasks,
    load_question_set,
    read_video,
    write_video,
)
from flowkit.errors import VideoError


def grey_ramp(num_frames: int, size: int = 32) -> np.ndarray:
    """Flat frames whose grey level, 10 * t + 20, encodes the frame number t."""
    levels = (10 * np.arange(num_frames) + 20).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, size, size, 3)).copy()


def frame_numbers(frames: np.ndarray) -> list[int]:
    return [int(round((frame.mean() - 20) / 10)) for frame in frames]


def write_webm(path: Path, frames: np.ndarray) -> None:
    with av.open(str(path), mode="w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def write_annotations(root: Path, task: str, entries: object) -> Path:
    path = root / "json" / f"{task}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture
def tvbench(tmp_path) -> Path:
    """Two tasks in the TVBench layout: mp4 clips (one trimmed, one with MVBench extra keys) and a webm clip."""
    root = tmp_path / "TVBench"
    (root / "video" / "moving_direction").mkdir(parents=True)
    (root / "video" / "unexpected_action").mkdir(parents=True)
    write_video(root / "video" / "moving_direction" / "a.mp4", grey_ramp(16))
    write_video(root / "video" / "moving_direction" / "b.mp4", grey_ramp(12))
    write_webm(root / "video" / "unexpected_action" / "c.webm", grey_ramp(10))
    write_annotations(
        root,
        "moving_direction",
        [
            {
                "video": "a.mp4",
                "question": "Which way does it move?",
                "candidates": ["up", "down", "left"],
                "answer": "left",
                "start": 0.5,
                "end": 1.5,
            },
            {
                "video": "b.mp4",
                "question": "Which way?",
                "candidates": ["left", "right"],
                "answer": "left",
                "accurate_start": 0.0,
                "bound": True,
                "extra": {"nested": [1, 2]},
            },
        ],
    )
    write_annotations(
        root,
        "unexpected_action",
        [
            {"video": "c.webm", "question": "What is unexpected?", "candidates": ["x", "y", "z", "w"], "answer": "w"},
        ],
    )
    return root


def test_loads_every_task_with_trimming_and_extra_keys(tvbench):
    samples = load_question_set(tvbench, num_frames=4)
    assert [s.id for s in samples] == ["moving_direction/0000", "moving_direction/0001", "unexpected_action/0000"]
    trimmed, extra, webm = samples
    assert frame_numbers(trimmed.frames) == [4, 7, 9, 12]  # frames 4..12 (0.5 s to 1.5 s at 8 fps)
    assert frame_numbers(extra.frames) == [0, 4, 7, 11]
    assert frame_numbers(webm.frames) == [0, 3, 6, 9]
    assert (trimmed.answer, trimmed.answer_text, trimmed.answer_index) == ("C", "left", 2)
    assert trimmed.candidates == ("up", "down", "left") and trimmed.letters == ("A", "B", "C")
    assert (extra.answer, webm.answer) == ("A", "D")
    assert trimmed.task == "moving_direction" and trimmed.question == "Which way does it move?"
    assert trimmed.video_path == str(tvbench / "video" / "moving_direction" / "a.mp4")


def test_task_may_be_a_name_or_a_list(tvbench):
    assert {s.task for s in load_question_set(tvbench, task="unexpected_action")} == {"unexpected_action"}
    assert len(load_question_set(tvbench, task=["unexpected_action", "moving_direction"], num_frames=2)) == 3
    assert available_tasks(tvbench) == ["moving_direction", "unexpected_action"]


def test_size_resizes(tvbench):
    assert load_question_set(tvbench, task="unexpected_action", num_frames=2, size=16)[0].frames.shape == (2, 16, 16, 3)


def test_unknown_task_lists_available(tvbench):
    with pytest.raises(
        QuestionSetError, match="unknown task.*'dance'.*available tasks: moving_direction, unexpected_action"
    ):
        load_question_set(tvbench, task=["moving_direction", "dance"])


def test_root_does_not_exist(tmp_path):
    with pytest.raises(QuestionSetError, match=r"question-set root does not exist: .*missing-root"):
        load_question_set(tmp_path / "missing-root")


def test_missing_json_folder(tmp_path):
    with pytest.raises(QuestionSetError, match=r"has no json/ folder"):
        load_question_set(tmp_path)


def test_json_not_a_list(tvbench):
    path = write_annotations(tvbench, "moving_direction", {"video": "a.mp4"})
    with pytest.raises(
        QuestionSetError, match=re.escape(str(path)) + " must hold a JSON list of entries, found a dict"
    ):
        load_question_set(tvbench)


def test_invalid_json(tvbench):
    path = tvbench / "json" / "moving_direction.json"
    path.write_text("[{not json")
    with pytest.raises(QuestionSetError, match=re.escape(str(path)) + " is not valid JSON"):
        load_question_set(tvbench)


def test_entry_missing_keys(tvbench):
    path = write_annotations(tvbench, "moving_direction", [{"video": "a.mp4", "question": "q?"}])
    with pytest.raises(
        QuestionSetError, match=re.escape(f"{path}, entry 0: missing required key(s) ['candidates', 'answer']")
    ):
        load_question_set(tvbench)


def test_entry_not_an_object(tvbench):
    write_annotations(tvbench, "moving_direction", ["a.mp4"])
    with pytest.raises(QuestionSetError, match="entry 0: expected an object"):
        load_question_set(tvbench)


def test_answer_not_among_candidates(tvbench):
    path = write_annotations(
        tvbench,
        "moving_direction",
        [
            {"video": "a.mp4", "question": "q?", "candidates": ["up", "down"], "answer": "B"},
        ],
    )
    with pytest.raises(QuestionSetError, match=re.escape(f"{path}, entry 0: answer 'B' is not among the candidates")):
        load_question_set(tvbench)


@pytest.mark.parametrize("candidates", [[], ["up"]])
def test_fewer_than_two_candidates_are_rejected_at_load(tvbench, candidates):
    path = write_annotations(
        tvbench,
        "moving_direction",
        [
            {"video": "a.mp4", "question": "q?", "candidates": candidates, "answer": "up"},
        ],
    )
    with pytest.raises(
        QuestionSetError,
        match=re.escape(f"{path}, entry 0: 'candidates' has {len(candidates)} option(s)")
        + ".*needs at least 2 options",
    ):
        load_question_set(tvbench)


def test_every_problem_of_a_task_is_reported_at_once(tvbench):
    path = write_annotations(
        tvbench,
        "moving_direction",
        [
            {"video": "a.mp4", "question": "q?", "candidates": ["up", "down"], "answer": "up"},
            {"video": "b.mp4", "question": "q?", "candidates": ["up"], "answer": "up"},
            {"video": "a.mp4", "question": "q?"},
            {"video": "gone.mp4", "question": "q?", "candidates": ["up", "down"], "answer": "down"},
        ],
    )
    with pytest.raises(QuestionSetError) as raised:
        load_question_set(tvbench, task="moving_direction")
    message = str(raised.value)
    assert message.startswith("3 bad entries in task(s) 'moving_direction'") and "skip_invalid=True" in message
    for index, problem in ((1, "needs at least 2 options"), (2, "missing required key"), (3, "video file not found")):
        assert f"{path}, entry {index}: " in message and problem in message


def test_skip_invalid_loads_the_good_entries_and_reports_the_rest(tvbench):
    write_annotations(
        tvbench,
        "moving_direction",
        [
            {"video": "a.mp4", "question": "q?", "candidates": ["up", "down"], "answer": "up"},
            {"video": "b.mp4", "question": "q?", "candidates": ["up"], "answer": "up"},
            {"video": "b.mp4", "question": "q?", "candidates": ["left", "right"], "answer": "right"},
        ],
    )
    (tvbench / "video" / "unexpected_action" / "c.webm").write_bytes(b"not a video" * 20)
    with pytest.warns(SkippedEntriesWarning, match="skipped 2"):
        loaded = load_question_set(tvbench, skip_invalid=True)
    assert [s.id for s in loaded] == ["moving_direction/0000", "moving_direction/0002"]
    assert len(loaded.skipped) == 2 and "entry 1" in loaded.skipped[0] and "cannot decode" in loaded.skipped[1]
    assert "skipped 2" in loaded.report()


def test_bad_frame_counts_name_the_argument(tvbench):
    for bad in (0, -3, 2.5):
        with pytest.raises(QuestionSetError, match=r"num_frames must be a whole number >= 1 .*got"):
            load_question_set(tvbench, num_frames=bad)


def test_reading_a_directory_says_it_is_one(tvbench):
    with pytest.raises(VideoError, match="is a directory, not a video file"):
        read_video(tvbench / "video" / "moving_direction")


def test_duplicate_candidates(tvbench):
    write_annotations(
        tvbench,
        "moving_direction",
        [
            {"video": "a.mp4", "question": "q?", "candidates": ["up", "up"], "answer": "up"},
        ],
    )
    with pytest.raises(QuestionSetError, match="contains duplicates"):
        load_question_set(tvbench)


def test_bad_start_end_type(tvbench):
    write_annotations(
        tvbench,
        "moving_direction",
        [
            {"video": "a.mp4", "question": "q?", "candidates": ["up", "down"], "answer": "up", "start": "0:05"},
        ],
    )
    with pytest.raises(QuestionSetError, match="'start' must be a number of seconds"):
        load_question_set(tvbench)


def test_missing_video_file(tvbench):
    (tvbench / "video" / "moving_direction" / "b.mp4").unlink()
    with pytest.raises(QuestionSetError, match=r"entry 1: video file not found: .*moving_direction/b\.mp4"):
        load_question_set(tvbench)


def test_zero_length_video(tvbench):
    (tvbench / "video" / "moving_direction" / "b.mp4").write_bytes(b"")
    with pytest.raises(QuestionSetError, match=r"empty \(0 bytes\): .*b\.mp4"):
        load_question_set(tvbench)


def test_corrupt_video(tvbench):
    (tvbench / "video" / "unexpected_action" / "c.webm").write_bytes(b"\x1aE\xdf\xa3 definitely not a webm" * 20)
    with pytest.raises(QuestionSetError, match=r"cannot decode video .*c\.webm"):
        load_question_set(tvbench)


def test_short_clip_warns_and_repeats(tvbench):
    with pytest.warns(ShortClipWarning, match=r"c\.webm: only 10 frames"):
        samples = load_question_set(tvbench, task="unexpected_action", num_frames=16)
    assert frame_numbers(samples[0].frames) == np.linspace(0, 9, 16).round().astype(int).tolist()


def test_one_pass_lists_every_bad_entry_of_every_task_in_entry_order(tvbench):
    """Annotation problems and decode problems (empty, corrupt clip) come in one error, in entry order."""
    clips = tvbench / "video" / "moving_direction"
    (clips / "empty.mp4").write_bytes(b"")
    data = (clips / "a.mp4").read_bytes()
    (clips / "cut.mp4").write_bytes(data[: len(data) // 3])  # a real clip of the kit's, truncated
    good = {"question": "q?", "candidates": ["up", "down"], "answer": "up"}
    path = write_annotations(
        tvbench,
        "moving_direction",
        [
            {"video": "empty.mp4", **good},
            {"video": "a.mp4", "question": "q?"},
            {"video": "cut.mp4", **good},
            {"video": "a.mp4", **good},
            {"video": "b.mp4", **good, "start": 2, "end": 1},
        ],
    )
    other = write_annotations(
        tvbench, "unexpected_action", [{"video": "c.webm", **good}, {"video": "gone.webm", **good}]
    )
    with pytest.raises(QuestionSetError) as raised:
        load_question_set(tvbench)
    message = str(raised.value)
    assert message.startswith(
        "5 bad entries in task(s) 'moving_direction', 'unexpected_action'; fix them, or pass skip_invalid=True"
    )
    listed = message.splitlines()[1:]
    assert [line.split(": ", 1)[0] for line in listed] == [
        f"  - {path}, entry 0",
        f"  - {path}, entry 1",
        f"  - {path}, entry 2",
        f"  - {path}, entry 4",
        f"  - {other}, entry 1",
    ]
    assert "video file is empty (0 bytes)" in listed[0] and "missing required key(s)" in listed[1]
    assert "cut.mp4: FFmpeg cannot open it, so the file is corrupt or not a video" in listed[2]
    assert "'start' (2 s) is after 'end' (1 s); fix the entry's start/end" in listed[3]
    assert "video file not found" in listed[4]


def test_skip_invalid_skips_a_task_file_that_is_not_a_list(tvbench):
    path = write_annotations(tvbench, "moving_direction", {"video": "a.mp4"})
    with pytest.warns(SkippedEntriesWarning, match="skipped 1"):
        loaded = load_question_set(tvbench, num_frames=2, skip_invalid=True)
    assert [s.id for s in loaded] == ["unexpected_action/0000"]
    assert loaded.skipped == [
        f"{path} must hold a JSON list of entries, found a dict; fix or re-download it (the whole task is skipped)"
    ]
    assert f"  - {path} must hold a JSON list" in loaded.report()


def test_a_task_file_that_is_not_a_list_is_listed_with_the_bad_entries(tvbench):
    path = write_annotations(tvbench, "moving_direction", "[not a list]")
    other = write_annotations(tvbench, "unexpected_action", [{"video": "c.webm", "question": "q?"}])
    with pytest.raises(QuestionSetError) as raised:
        load_question_set(tvbench)
    message = str(raised.value)
    assert message.startswith(
        "1 bad entry and 1 unreadable task file in task(s) 'moving_direction', 'unexpected_action'"
    )
    assert f"  - {path} must hold a JSON list of entries, found a str" in message
    assert f"  - {other}, entry 0: missing required key(s)" in message


def test_a_decode_error_in_a_question_set_names_the_entry_once(tvbench):
    (tvbench / "video" / "unexpected_action" / "c.webm").write_bytes(b"")
    path = tvbench / "json" / "unexpected_action.json"
    with pytest.raises(QuestionSetError) as raised:
        load_question_set(tvbench, task="unexpected_action")
    line = str(raised.value).splitlines()[1]
    assert line.startswith(f"  - {path}, entry 0: video file is empty (0 bytes): ") and line.count("entry 0") == 1
