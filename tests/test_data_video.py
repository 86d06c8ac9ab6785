"""Clip I/O: the mp4 round trip, uniform sampling, trimming, short clips, containers, bad files."""

from __future__ import annotations

import re
import warnings

import av
import numpy as np
import pytest

from flowkit.data import ShortClipWarning, generate, read_video, uniform_frame_indices, write_video
from flowkit.data.render import COLOUR_RGB
from flowkit.data.video import frames_identical
from flowkit.errors import VideoError

# libx264 at CRF 18 with 4:2:0 chroma: edges of saturated shapes bleed, flat areas survive.
CODEC_MEAN_ABS_ERROR = 8.0


def grey_ramp(num_frames: int, size: int = 32) -> np.ndarray:
    """Flat frames whose grey level, 10 * t + 20, encodes the frame number t."""
    levels = (10 * np.arange(num_frames) + 20).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, size, size, 3)).copy()


def frame_numbers(frames: np.ndarray) -> list[int]:
    """Invert :func:`grey_ramp` (the codec moves flat grey levels by a step or two at most)."""
    return [int(round((frame.mean() - 20) / 10)) for frame in frames]


def target_centre(frame: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    distance = np.abs(frame.astype(int) - np.array(rgb)).sum(axis=-1)
    ys, xs = np.nonzero(distance < 90)
    return np.array([xs.mean(), ys.mean()])


def test_uniform_frame_indices_match_llava_sampling():
    assert uniform_frame_indices(16, 8).tolist() == [0, 2, 4, 6, 9, 11, 13, 15]
    assert uniform_frame_indices(16, 8).tolist() == np.linspace(0, 15, 8).round().astype(int).tolist()
    assert uniform_frame_indices(5, 8).tolist() == [0, 1, 1, 2, 2, 3, 3, 4]


def test_round_trip_keeps_frames_and_answer(tmp_path):
    sample = generate("moving_direction", 1, seed=17)[0]
    path = tmp_path / "clip.mp4"
    write_video(path, sample.frames)
    decoded = read_video(path)
    assert decoded.shape == sample.frames.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - sample.frames).mean() < CODEC_MEAN_ABS_ERROR
    colour = re.search(r"the (\w+) \w+ move", sample.question).group(1)
    dx, dy = target_centre(decoded[-1], COLOUR_RGB[colour]) - target_centre(decoded[0], COLOUR_RGB[colour])
    seen = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
    assert seen == sample.answer_text


def test_encoding_is_reproducible(tmp_path):
    frames = generate("object_shuffle", 1, seed=3)[0].frames
    write_video(tmp_path / "a.mp4", frames)
    write_video(tmp_path / "b.mp4", frames)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_uniform_sampling_picks_linspace_frames(tmp_path):
    write_video(tmp_path / "ramp.mp4", grey_ramp(16))
    assert frame_numbers(read_video(tmp_path / "ramp.mp4", num_frames=8)) == [0, 2, 4, 6, 9, 11, 13, 15]


def test_start_end_trim_by_timestamp(tmp_path):
    write_video(tmp_path / "ramp.mp4", grey_ramp(16), fps=8)  # frame t at t / 8 s
    trimmed = read_video(tmp_path / "ramp.mp4", start=0.5, end=1.5)
    assert frame_numbers(trimmed) == list(range(4, 13))  # both bounds inclusive
    sampled = read_video(tmp_path / "ramp.mp4", num_frames=3, start=0.5, end=1.5)
    assert frame_numbers(sampled) == [4, 8, 12]


def test_short_clip_repeats_frames_and_warns(tmp_path):
    path = tmp_path / "short.mp4"
    write_video(path, grey_ramp(5))
    with pytest.warns(ShortClipWarning, match=r"short\.mp4: only 5 frames .* 8 requested; repeating frames"):
        frames = read_video(path, num_frames=8)
    assert frame_numbers(frames) == [0, 1, 1, 2, 2, 3, 3, 4]


def test_size_resizes_frames(tmp_path):
    write_video(tmp_path / "clip.mp4", generate("scene_transition", 1, seed=1)[0].frames)
    assert read_video(tmp_path / "clip.mp4", num_frames=4, size=32).shape == (4, 32, 32, 3)


@pytest.mark.parametrize(
    ("suffix", "container_format", "codec"), [(".webm", "webm", "libvpx"), (".avi", "avi", "mpeg4")]
)
def test_other_containers_decode(tmp_path, suffix, container_format, codec):
    path = tmp_path / f"clip{suffix}"
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for image in grey_ramp(12):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    assert frame_numbers(read_video(path, num_frames=4)) == [0, 4, 7, 11]


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match=r"video file not found: .*nowhere\.mp4"):
        read_video(tmp_path / "nowhere.mp4")


def test_zero_length_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty \(0 bytes\): .*empty\.mp4; replace it with a working copy"):
        read_video(tmp_path / "empty.mp4")


def test_corrupt_file(tmp_path):
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match=r"cannot decode video .*noise\.mp4.*corrupt or not a video"):
        read_video(tmp_path / "noise.mp4")


def test_truncated_file(tmp_path):
    write_video(tmp_path / "clip.mp4", generate("object_count", 1, seed=1)[0].frames)
    data = (tmp_path / "clip.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoError, match=r"cut\.mp4"):
        read_video(tmp_path / "cut.mp4")


def test_start_after_end(tmp_path):
    write_video(tmp_path / "ramp.mp4", grey_ramp(8))
    with pytest.raises(VideoError, match=r"ramp\.mp4: start=2 s is after end=1 s"):
        read_video(tmp_path / "ramp.mp4", start=2, end=1)


def test_trim_window_without_frames(tmp_path):
    write_video(tmp_path / "ramp.mp4", grey_ramp(8))
    with pytest.raises(
        VideoError,
        match=r"ramp\.mp4: no frames between start=5 s and end=6 s: the clip's 8 frames "
        r"run from 0 s to 0\.875 s; pick start/end inside that range",
    ):
        read_video(tmp_path / "ramp.mp4", start=5, end=6)


@pytest.mark.parametrize(("bounds", "window"), [({"start": 5}, "from start=5 s on"), ({"end": -1}, "up to end=-1 s")])
def test_trim_window_with_one_bound_says_no_none(tmp_path, bounds, window):
    write_video(tmp_path / "ramp.mp4", grey_ramp(8))
    with pytest.raises(VideoError) as raised:
        read_video(tmp_path / "ramp.mp4", **bounds)
    assert f"ramp.mp4: no frames {window}: the clip's 8 frames run from 0 s to 0.875 s" in str(raised.value)
    assert "None" not in str(raised.value)


def test_missing_user_clip_is_a_video_error_without_question_set_advice(tmp_path, monkeypatch):
    with pytest.raises(VideoError) as raised:
        read_video(tmp_path / "holiday.mp4")
    message = str(raised.value)
    assert message == f"video file not found: {tmp_path / 'holiday.mp4'} does not exist; check the file name and folder"
    assert "question set" not in message and "regenerate" not in message
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        VideoError,
        match=re.escape(
            f"clips/a.mp4 (= {tmp_path / 'clips' / 'a.mp4'}) does not exist "
            f"(its folder does not exist either; the nearest folder that does "
            f"is {tmp_path})"
        ),
    ):
        read_video("clips/a.mp4")


def _one_sentence(message: str, path) -> None:
    """A decode error is one line that names the file once, with no FFmpeg error codes."""
    assert "\n" not in message and message.count(str(path)) == 1
    assert "Errno" not in message and "avcodec" not in message and "replace it with a working copy" in message


def test_garbage_and_truncated_clips_say_not_a_video_in_one_sentence(tmp_path):
    write_video(tmp_path / "clip.mp4", generate("object_count", 1, seed=1)[0].frames)
    data = (tmp_path / "clip.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.9)])  # the index (moov) sits at the end: it is lost
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for path in (tmp_path / "cut.mp4", tmp_path / "noise.mp4"):
        with pytest.raises(VideoError) as raised:
            read_video(path, num_frames=8)
        assert str(raised.value) == (
            f"cannot decode video {path}: FFmpeg cannot open it, so the file is corrupt or "
            "not a video; replace it with a working copy (download or export it again)"
        )
        _one_sentence(str(raised.value), path)
        assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_clip_damaged_midway_says_how_many_frames_decoded(tmp_path):
    write_video(tmp_path / "clip.mp4", generate("object_count", 1, seed=1)[0].frames)
    data = (tmp_path / "clip.mp4").read_bytes()
    middle = (data.find(b"mdat") + data.find(b"moov")) // 2  # garbage over the middle of the frame data
    (tmp_path / "damaged.mp4").write_bytes(data[:middle] + b"\xff" * 200 + data[middle + 200 :])
    with pytest.raises(VideoError) as raised:
        read_video(tmp_path / "damaged.mp4", num_frames=8)
    message = str(raised.value)
    decoded = re.fullmatch(
        rf"cannot decode video {re.escape(str(tmp_path / 'damaged.mp4'))}: decoded (\d+) of 16 "
        r"frames before FFmpeg hit broken data, so the file is truncated or corrupt; replace it "
        r"with a working copy \(download or export it again\)",
        message,
    )
    assert decoded and int(decoded.group(1)) < 16
    _one_sentence(message, tmp_path / "damaged.mp4")


def test_one_frame_clip_warns_in_one_line_without_source_line(tmp_path):
    write_video(tmp_path / "one.mp4", grey_ramp(1))
    with pytest.warns(ShortClipWarning) as caught:
        frames = read_video(tmp_path / "one.mp4", num_frames=8)
    message = str(caught[0].message)
    assert message == (
        f"{tmp_path / 'one.mp4'}: only 1 frame but 8 requested; every sampled frame is a copy of that one frame"
    )
    assert frames_identical(frames) and frame_numbers(frames) == [0] * 8
    # what a terminal or a Jupyter cell shows: the category and the message, no file:line, no source line
    shown = warnings.formatwarning(
        caught[0].message, ShortClipWarning, "/kit/flowkit/data/video.py", 250, "warnings.warn("
    )
    assert shown == f"ShortClipWarning: {message}\n"
    other = warnings.formatwarning("x", UserWarning, "/somewhere.py", 3, "warnings.warn('x')")
    assert "/somewhere.py:3" in other  # every other warning keeps Python's format


def test_frames_identical():
    assert frames_identical(np.zeros((8, 4, 4, 3), np.uint8))
    assert not frames_identical(grey_ramp(2)) and not frames_identical(grey_ramp(1))
    assert not frames_identical([np.zeros((4, 4, 3)), np.zeros((2, 2, 3))])  # ragged: not a clip
