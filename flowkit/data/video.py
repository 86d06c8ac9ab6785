"""Reading and writing clips with PyAV, plus the uniform frame sampler.

Writing uses a fixed encoder configuration (libx264, yuv420p, CRF 18,
preset ``medium``, one thread, no lookahead or B-frames, FFmpeg's
``bitexact`` flags), so the same
frames written with the same PyAV/FFmpeg build give byte-identical files.
The RGB -> YUV 4:2:0 conversion is done here in integer numpy (BT.601,
limited range) and each frame is handed to x264 as a fresh YUV frame with
its timestamp set: letting PyAV convert inside ``encode`` passed frames
whose metadata x264 read differently from one run to the next (the same
clip gave up to four different files on one machine), and swscale's SIMD
paths may round differently on different CPUs.

Reading converts decoded YUV 4:2:0 frames back to RGB the same way (numpy,
BT.601), so decoded pixels are the same on every CPU; other pixel formats,
and resizing with ``size``, go through FFmpeg's swscale.

Reading decodes the clip twice: the first pass only collects presentation
times (to apply ``start``/``end`` trimming and count the frames), the second
converts just the sampled frames to RGB.  Holding every decoded frame of a
long, high-resolution benchmark video would otherwise cost gigabytes.

A file that cannot be read (missing, empty, damaged, not a video) raises
:class:`~flowkit.errors.VideoError` with one sentence: which file, what is
wrong with it (e.g. how many of its frames decoded) and what to do.  A clip
shorter than requested gives a :class:`ShortClipWarning`, shown as one line
(``ShortClipWarning: <message>``, no source line) in a terminal and in Jupyter.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from flowkit.data.sample import QuestionSetError, ShortClipWarning
from flowkit.errors import VideoError

VIDEO_FPS = 8
VIDEO_CODEC = "libx264"
# x264's lookahead (rc-lookahead, mb-tree, adaptive B-frames) gave different files for the same
# frames from one run to the next even with one thread (measured: 3 of 8 clips differ between two
# runs); without it, 8 clips x 8 runs were byte-identical. Plain I/P frames at CRF 18 suffice for
# 16-frame synthetic clips.
_X264_PARAMS = "rc-lookahead=0:bframes=0:mbtree=0:sliced-threads=0:threads=1"
_ENCODER_OPTIONS = {"crf": "18", "preset": "medium", "threads": "1", "x264-params": _X264_PARAMS}
# Frames within this many seconds of a trimming bound count as inside it.
_TIME_TOLERANCE = 1e-6


def _install_one_line_warnings() -> None:
    """Show :class:`ShortClipWarning` as one line, ``ShortClipWarning: <message>``.

    Python's default format adds ``file:line:`` and the source line of the ``warn`` call
    (a line inside the kit, which says nothing to a user). Only this category is
    formatted differently; every other warning keeps the format it had. Installed once,
    wrapping whatever ``warnings.formatwarning`` was at import time.
    """
    previous = warnings.formatwarning
    if getattr(previous, "_flowkit_one_line", False):
        return

    def formatwarning(message, category, filename, lineno, line=None):
        if isinstance(category, type) and issubclass(category, ShortClipWarning):
            return f"{category.__name__}: {message}\n"
        return previous(message, category, filename, lineno, line)

    formatwarning._flowkit_one_line = True
    warnings.formatwarning = formatwarning


_install_one_line_warnings()


def frames_identical(frames) -> bool:
    """True when ``frames`` (``(T, H, W, 3)``, any array-like) holds two or more frames that are all
    equal to the first: e.g. a 1-frame clip sampled to 8 frames. A ``cross_frame`` cut on such a
    clip only stops frames reading copies of themselves (see :class:`flowkit.knockout_check.CheckResult`)."""
    try:
        array = np.asarray(frames)
    except (TypeError, ValueError):
        return False
    return array.ndim >= 2 and len(array) >= 2 and bool((array == array[:1]).all())


def uniform_frame_indices(num_available: int, num_frames: int) -> np.ndarray:
    """Indices of ``num_frames`` frames spread uniformly over ``num_available``.

    This is the LLaVA-style sampler the paper uses,
    ``np.linspace(0, num_available - 1, num_frames).round()``.  When fewer
    frames are available than requested, indices repeat.
    """
    if num_available < 1 or num_frames < 1:
        raise QuestionSetError(
            f"uniform_frame_indices needs at least one available and one requested frame, "
            f"got num_available={num_available}, num_frames={num_frames}"
        )
    return np.linspace(0, num_available - 1, num_frames).round().astype(np.int64)


def check_num_frames(num_frames) -> None:
    """Refuse a frame count that is not a whole number >= 1 (``None`` means every frame)."""
    if num_frames is None:
        return
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise QuestionSetError(
            f"num_frames must be a whole number >= 1 (the paper samples 8 frames per video), got {num_frames!r}"
        )


def _pyav():
    """PyAV, imported when a video is read or written (training and analysis need no video files)."""
    try:
        import av
        import av.video.reformatter  # noqa: F401
    except ImportError as error:
        raise QuestionSetError(
            "reading or writing video files needs PyAV: pip install av==18.1.0 (the kit's setup script installs it)"
        ) from error
    return av


def encoder_build() -> dict[str, str]:
    """The PyAV and libavcodec versions that :func:`write_video` encodes with.

    Byte-identical output is only expected between identical builds.
    """
    av = _pyav()
    return {
        "pyav": av.__version__,
        "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        "options": ", ".join(f"{key}={value}" for key, value in _ENCODER_OPTIONS.items()),
    }


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """One ``(H, W, 3)`` uint8 RGB frame (even H and W) as planar YUV 4:2:0, shape ``(H * 3 // 2, W)``.

    BT.601 limited range in integer arithmetic (the same on every CPU); chroma is the
    rounded mean of each 2x2 block. The layout is what ``av.VideoFrame.from_ndarray(...,
    format="yuv420p")`` takes: the Y plane, then the U plane, then the V plane, back to back.
    """
    rgb = frame.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128
    v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128
    height, width = y.shape

    def pooled(plane):
        blocks = plane.reshape(height // 2, 2, width // 2, 2).sum(axis=(1, 3))
        return ((blocks + 2) >> 2).ravel()

    flat = np.concatenate([y.ravel(), pooled(u), pooled(v)])
    return flat.clip(0, 255).astype(np.uint8).reshape(height * 3 // 2, width)


def yuv420p_to_rgb(planes: np.ndarray) -> np.ndarray:
    """The inverse of :func:`rgb_to_yuv420p` (BT.601 limited range, chroma repeated over 2x2)."""
    height = planes.shape[0] * 2 // 3
    width = planes.shape[1]
    flat = planes.astype(np.int32).ravel()
    y = flat[: height * width].reshape(height, width) - 16
    chroma = flat[height * width :].reshape(2, height // 2, width // 2) - 128
    u, v = (np.repeat(np.repeat(c, 2, axis=0), 2, axis=1) for c in chroma)
    r = (298 * y + 409 * v + 128) >> 8
    g = (298 * y - 100 * u - 208 * v + 128) >> 8
    b = (298 * y + 516 * u + 128) >> 8
    return np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)


def write_video(path: str | Path, frames: np.ndarray, fps: int = VIDEO_FPS) -> None:
    """Encode ``frames`` (``(T, H, W, 3)`` uint8 RGB, even H and W) as an mp4 at ``path``."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise QuestionSetError(
            f"{path}: frames must be a uint8 array of shape (T, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise QuestionSetError(f"{path}: yuv420p needs even frame sizes, got {width}x{height}")
    av = _pyav()
    with av.open(str(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(VIDEO_CODEC, rate=fps, options=_ENCODER_OPTIONS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        stream.codec_context.thread_type = "NONE"
        stream.codec_context.thread_count = 1
        for index, frame in enumerate(frames):
            yuv = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")
            yuv.pts = index
            container.mux(stream.encode(yuv))
        container.mux(stream.encode())


def read_video(
    path: str | Path,
    num_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
    size: int | None = None,
) -> np.ndarray:
    """Decode a clip into a ``(T, H, W, 3)`` uint8 RGB array.

    ``start``/``end`` (seconds, both inclusive) keep only the frames whose
    presentation time lies between them.  ``num_frames`` then picks frames
    with :func:`uniform_frame_indices`; a clip with fewer (trimmed) frames
    than that is padded by repeating frames along the same indices and a
    :class:`ShortClipWarning` naming the file is emitted.  ``size`` resizes
    every frame to ``size x size`` (area interpolation), which keeps a real
    benchmark's high-resolution videos affordable in memory.  A file that
    cannot be read raises :class:`~flowkit.errors.VideoError` naming it (and,
    for a damaged file, how many of its frames decoded); a bad ``num_frames``
    raises :class:`QuestionSetError`.
    """
    path = Path(path)
    if path.is_dir():
        raise VideoError(
            f"{path} is a directory, not a video file; pass the path of one clip inside it "
            "(or load a whole question-set folder with flowkit.data.load_question_set)"
        )
    if not path.is_file():
        raise VideoError(
            f"video file not found: {_shown(path)} does not exist{_nearest_folder(path)}; "
            "check the file name and folder"
        )
    check_num_frames(num_frames)
    if path.stat().st_size == 0:
        raise VideoError(
            f"video file is empty (0 bytes): {path}; replace it with a working copy (download or export it again)"
        )
    if start is not None and end is not None and start > end:
        raise VideoError(f"{path}: start={start:g} s is after end={end:g} s; pass a start at or before the end")

    times = [time for _, time in _decoded_frames(path, convert=False)]
    kept = [
        number
        for number, time in enumerate(times)
        if (start is None or time >= start - _TIME_TOLERANCE) and (end is None or time <= end + _TIME_TOLERANCE)
    ]
    if not times:
        raise VideoError(
            f"{path} holds a video stream without a single decodable frame; replace it with a "
            "working copy (download or export it again)"
        )
    if not kept:
        raise VideoError(
            f"{path}: no frames {_window(start, end)}: the clip's {len(times)} frames run from "
            f"{times[0]:g} s to {times[-1]:g} s; pick start/end inside that range"
        )
    if num_frames is None:
        wanted = np.asarray(kept)
    else:
        if len(kept) < num_frames:
            trimmed = " (after start/end trimming)" if (start, end) != (None, None) else ""
            repeats = (
                "every sampled frame is a copy of that one frame"
                if len(kept) == 1
                else "repeating frames at np.linspace(0, n - 1, num_frames).round() indices"
            )
            warnings.warn(
                f"{path}: only {len(kept)} frame{'s' if len(kept) != 1 else ''}{trimmed} but {num_frames} "
                f"requested; {repeats}",
                ShortClipWarning,
                stacklevel=2,
            )
        wanted = np.asarray(kept)[uniform_frame_indices(len(kept), num_frames)]

    wanted_set = set(wanted.tolist())
    converted: dict[int, np.ndarray] = {}
    for number, image in _decoded_frames(path, convert=True, size=size, only=wanted_set):
        converted[number] = image
    missing = wanted_set - converted.keys()
    if missing:
        raise VideoError(
            f"{path}: frames {sorted(missing)} vanished on the second decoding pass; the file is "
            "unstable, replace it with a working copy"
        )
    return np.stack([converted[number] for number in wanted.tolist()])


def _shown(path: Path) -> str:
    """``path`` as given, plus the absolute path it stands for when it is relative."""
    return str(path) if path.is_absolute() else f"{path} (= {path.absolute()})"


def _nearest_folder(path: Path) -> str:
    """Where a missing file's path stops existing: `` (its folder ... does not exist either)``, or ``""``."""
    parent = path.absolute().parent
    if parent.is_dir():
        return ""
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    return f" (its folder does not exist either; the nearest folder that does is {parent})"


def _window(start: float | None, end: float | None) -> str:
    """The trimming window in words, with no ``None`` in it."""
    if start is not None and end is not None:
        return f"between start={start:g} s and end={end:g} s"
    if start is not None:
        return f"from start={start:g} s on"
    return f"up to end={end:g} s"


def _decoded_frames(
    path: Path, *, convert: bool, size: int | None = None, only: set[int] | None = None
) -> Iterator[tuple[int, object]]:
    """Yield ``(frame_number, payload)`` for every frame of the first video stream.

    The payload is the presentation time in seconds when ``convert`` is false,
    otherwise the RGB array of the frame (only for frame numbers in ``only``).
    FFmpeg errors become one :class:`~flowkit.errors.VideoError` naming the file: "not a
    video" when it cannot be opened, else how many of its frames decoded before the error.
    """
    av = _pyav()
    try:
        container = av.open(str(path))
    except av.FFmpegError:
        raise VideoError(
            f"cannot decode video {path}: FFmpeg cannot open it, so the file is corrupt or not a "
            "video; replace it with a working copy (download or export it again)"
        ) from None
    decoded, expected = 0, 0
    try:
        with container:
            if not container.streams.video:
                raise VideoError(f"{path} has no video stream (only {_stream_kinds(container)}); pass a video clip")
            stream = container.streams.video[0]
            expected = stream.frames or 0
            rate = float(stream.average_rate or VIDEO_FPS)
            reformatter = (
                av.video.reformatter.VideoReformatter()
            )  # reusing it keeps one scaler context for the whole clip
            interpolation = None if size is None else "AREA"
            for number, frame in enumerate(container.decode(stream)):
                decoded = number + 1
                if not convert:
                    yield number, frame.time if frame.time is not None else number / rate
                elif number in only:
                    if (
                        size is None
                        and frame.format.name == "yuv420p"
                        and frame.width % 2 == 0
                        and frame.height % 2 == 0
                    ):
                        yield number, yuv420p_to_rgb(frame.to_ndarray())
                        continue
                    rgb = reformatter.reformat(
                        frame, format="rgb24", width=size, height=size, interpolation=interpolation
                    )
                    yield number, rgb.to_ndarray()
    except av.FFmpegError:
        count = (
            f"{decoded} of {expected} frames" if expected > decoded else f"{decoded} frame{'' if decoded == 1 else 's'}"
        )
        raise VideoError(
            f"cannot decode video {path}: decoded {count} before FFmpeg hit broken data, so the file "
            "is truncated or corrupt; replace it with a working copy (download or export it again)"
        ) from None


def _stream_kinds(container) -> str:
    kinds = sorted({stream.type for stream in container.streams})
    return " and ".join(f"{kind} streams" for kind in kinds) if kinds else "no streams at all"
