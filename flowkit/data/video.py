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
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from flowkit.data.sample import QuestionSetError, ShortClipWarning

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
        raise QuestionSetError(f"num_frames must be a whole number >= 1 (the paper samples 8 frames per video), "
                         f"got {num_frames!r}")


def _pyav():
    """PyAV, imported when a video is read or written (training and analysis need no video files)."""
    try:
        import av
        import av.video.reformatter  # noqa: F401
    except ImportError as error:
        raise QuestionSetError("reading or writing video files needs PyAV: pip install av==18.1.0 "
                         "(the kit's setup script installs it)") from error
    return av


def encoder_build() -> dict[str, str]:
    """The PyAV and libavcodec versions that :func:`write_video` encodes with.

    Byte-identical output is only expected between identical builds.
    """
    av = _pyav()
    return {"pyav": av.__version__, "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "options": ", ".join(f"{key}={value}" for key, value in _ENCODER_OPTIONS.items())}


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
    chroma = flat[height * width:].reshape(2, height // 2, width // 2) - 128
    u, v = (np.repeat(np.repeat(c, 2, axis=0), 2, axis=1) for c in chroma)
    r = (298 * y + 409 * v + 128) >> 8
    g = (298 * y - 100 * u - 208 * v + 128) >> 8
    b = (298 * y + 516 * u + 128) >> 8
    return np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)


def write_video(path: str | Path, frames: np.ndarray, fps: int = VIDEO_FPS) -> None:
    """Encode ``frames`` (``(T, H, W, 3)`` uint8 RGB, even H and W) as an mp4 at ``path``."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise QuestionSetError(
            f"{path}: frames must be a uint8 array of shape (T, H, W, 3), "
            f"got {frames.dtype} {frames.shape}"
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
    benchmark's high-resolution videos affordable in memory.  Any problem with
    the file raises :class:`QuestionSetError` naming it.
    """
    path = Path(path)
    if path.is_dir():
        raise QuestionSetError(f"{path} is a directory, not a video file; pass the path of one clip inside it "
                         "(or load a whole question-set folder with flowkit.data.load_question_set)")
    if not path.is_file():
        raise QuestionSetError(f"video file not found: {path}; check the path or regenerate/re-download the question set")
    check_num_frames(num_frames)
    if path.stat().st_size == 0:
        raise QuestionSetError(f"video file is empty (0 bytes): {path}; regenerate or re-download it")
    if start is not None and end is not None and start > end:
        raise QuestionSetError(f"{path}: start={start} s is after end={end} s; fix the annotation")

    times = [time for _, time in _decoded_frames(path, convert=False)]
    kept = [
        number
        for number, time in enumerate(times)
        if (start is None or time >= start - _TIME_TOLERANCE) and (end is None or time <= end + _TIME_TOLERANCE)
    ]
    if not kept:
        window = f" between start={start} s and end={end} s" if (start, end) != (None, None) else ""
        raise QuestionSetError(
            f"{path}: no decodable frames{window} (the clip has {len(times)} frames); "
            "check the file and its start/end annotation"
        )
    if num_frames is None:
        wanted = np.asarray(kept)
    else:
        if len(kept) < num_frames:
            warnings.warn(
                f"{path}: only {len(kept)} frames (after start/end trimming) but {num_frames} requested; "
                "repeating frames at np.linspace(0, n - 1, num_frames).round() indices",
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
        raise QuestionSetError(f"{path}: frames {sorted(missing)} vanished on the second decoding pass; the file is unstable")
    return np.stack([converted[number] for number in wanted.tolist()])


def _decoded_frames(
    path: Path, *, convert: bool, size: int | None = None, only: set[int] | None = None
) -> Iterator[tuple[int, object]]:
    """Yield ``(frame_number, payload)`` for every frame of the first video stream.

    The payload is the presentation time in seconds when ``convert`` is false,
    otherwise the RGB array of the frame (only for frame numbers in ``only``).
    FFmpeg errors become :class:`QuestionSetError` naming the file.
    """
    av = _pyav()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise QuestionSetError(f"{path}: the file has no video stream; replace it with a video clip")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or VIDEO_FPS)
            reformatter = av.video.reformatter.VideoReformatter()  # reusing it keeps one scaler context for the whole clip
            interpolation = None if size is None else "AREA"
            for number, frame in enumerate(container.decode(stream)):
                if not convert:
                    yield number, frame.time if frame.time is not None else number / rate
                elif number in only:
                    if size is None and frame.format.name == "yuv420p" and frame.width % 2 == 0 \
                            and frame.height % 2 == 0:
                        yield number, yuv420p_to_rgb(frame.to_ndarray())
                        continue
                    rgb = reformatter.reformat(frame, format="rgb24", width=size, height=size, interpolation=interpolation)
                    yield number, rgb.to_ndarray()
    except av.FFmpegError as error:
        raise QuestionSetError(
            f"cannot decode video {path}: {error}; the file is corrupt or not a video, regenerate or re-download it"
        ) from error
