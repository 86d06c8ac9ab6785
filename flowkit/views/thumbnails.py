"""Video frames as pictures: thumbnails for widgets and strips for chapters, scaled one way.

Small frames are enlarged without smoothing (nearest neighbour), so a 32x32 synthetic frame
stays crisp on a projector; larger frames are shrunk with bilinear filtering.
"""

from __future__ import annotations

import base64
import io

import numpy as np


def frame_images(frames, size: int = 112) -> list:
    """One PIL image per frame of a ``(T, H, W, 3)`` array, the longer side scaled to ``size`` pixels."""
    from PIL import Image

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be a (T, H, W, 3) array, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    images = []
    for frame in frames:
        image = Image.fromarray(frame)
        scale = size / max(image.size)
        resample = Image.NEAREST if scale >= 1 else Image.BILINEAR
        images.append(image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample))
    return images


def frame_thumbnails(frames, size: int = 112) -> list[str]:
    """One PNG data URL per frame, the longer side scaled to ``size`` pixels (for widgets)."""
    urls = []
    for image in frame_images(frames, size):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    return urls


def clip_strip(frames, size: int = 96, gap: int = 4):
    """The frames side by side as one PIL image, each scaled like :func:`frame_images`."""
    from PIL import Image

    images = frame_images(frames, size)
    width, height = images[0].size
    strip = Image.new("RGB", (len(images) * (width + gap) - gap, height), "white")
    for i, image in enumerate(images):
        strip.paste(image, (i * (width + gap), 0))
    return strip


__all__ = ["clip_strip", "frame_images", "frame_thumbnails"]
