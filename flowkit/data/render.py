"""Vectorised drawing of flat-coloured sprites and scene backgrounds.

A clip is rendered in one go: every sprite carries per-frame arrays for its
centre, half-size and visibility, and its mask is computed for all frames at
once.  Coordinates are continuous pixel units with ``(0, 0)`` the top-left
corner and ``y`` growing downwards; a pixel is covered when its centre falls
inside the shape.  Edges are hard (no anti-aliasing), which keeps codecs and
classifiers honest about what is in the picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

BACKGROUND_RGB = (24, 24, 32)
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (235, 50, 50),
    "green": (40, 200, 70),
    "blue": (60, 110, 255),
    "yellow": (245, 220, 40),
    "cyan": (40, 220, 230),
    "pink": (255, 110, 200),
    "white": (235, 235, 235),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "diamond", "cross")
SHAPE_PLURALS: dict[str, str] = {
    "square": "squares",
    "circle": "circles",
    "triangle": "triangles",
    "diamond": "diamonds",
    "cross": "crosses",
}
SCENES: tuple[str, ...] = ("city", "desert", "forest", "sea", "space")
# Shapes that are drawn but never named in a question.
PROP_SHAPES: tuple[str, ...] = ("cup",)


@dataclass(frozen=True)
class Sprite:
    """A flat-coloured shape with per-frame centre, half-size and visibility.

    ``cx``, ``cy`` and ``radius`` are float arrays of shape ``(T,)`` in pixels,
    ``visible`` a bool array of shape ``(T,)``.
    """

    shape: str
    rgb: tuple[int, int, int]
    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    visible: np.ndarray


def still(value: float, num_frames: int) -> np.ndarray:
    """A per-frame float array holding ``value`` in every frame."""
    return np.full(num_frames, float(value))


def always(num_frames: int) -> np.ndarray:
    """A per-frame visibility array that is true in every frame."""
    return np.ones(num_frames, dtype=bool)


def sprite_masks(sprite: Sprite, size: int) -> np.ndarray:
    """The ``(T, size, size)`` bool coverage of ``sprite`` in every frame."""
    centres = np.arange(size, dtype=np.float64) + 0.5
    dx = centres[None, None, :] - sprite.cx[:, None, None]
    dy = centres[None, :, None] - sprite.cy[:, None, None]
    r = sprite.radius[:, None, None]
    adx, ady = np.abs(dx), np.abs(dy)
    if sprite.shape == "square":
        mask = (adx <= 0.9 * r) & (ady <= 0.9 * r)
    elif sprite.shape == "circle":
        mask = dx * dx + dy * dy <= r * r
    elif sprite.shape == "diamond":
        mask = adx + ady <= 1.15 * r
    elif sprite.shape == "triangle":  # apex up, base at 0.8 r below the centre
        mask = (dy >= -r) & (dy <= 0.8 * r) & (adx <= 0.6 * (dy + r))
    elif sprite.shape == "cross":
        mask = ((adx <= 0.35 * r) & (ady <= r)) | ((ady <= 0.35 * r) & (adx <= r))
    elif sprite.shape == "cup":  # an upturned cup: narrow closed top, wide open rim
        mask = (ady <= 0.9 * r) & (adx <= r * (0.8 + 0.4 * (dy + 0.9 * r) / (1.8 * r)))
    else:
        raise ValueError(f"unknown shape {sprite.shape!r}; known: {SHAPES + PROP_SHAPES}")
    return mask & sprite.visible[:, None, None]


def render(background: np.ndarray, sprites: list[Sprite], size: int) -> np.ndarray:
    """Paint ``sprites`` in order (later ones on top) over ``background``.

    ``background`` is either one ``(size, size, 3)`` image used for every
    frame or a ``(T, size, size, 3)`` stack.  Returns ``(T, size, size, 3)`` uint8.
    """
    num_frames = len(sprites[0].cx)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    frames[...] = background
    pixels = frames.reshape(-1, 3)  # a view; integer indexing beats a boolean mask here
    for sprite in sprites:
        pixels[np.flatnonzero(sprite_masks(sprite, size))] = sprite.rgb
    return frames


def plain_background(size: int) -> np.ndarray:
    """The dark, uniform background of every task except scene transitions."""
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[...] = BACKGROUND_RGB
    return image


@lru_cache(maxsize=32)
def scene_image(name: str, size: int) -> np.ndarray:
    """A ``(size, size, 3)`` picture of a named scene (read-only, cached).

    Each scene has its own base colour and texture so that it is recognisable
    from colour alone even after downsampling to a quarter of the size:
    ``city`` grey with a grid of lit windows, ``desert`` sand with dunes,
    ``forest`` dark green with tree trunks, ``sea`` blue with waves and
    ``space`` near-black with a fixed pattern of stars.
    """
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.empty((size, size, 3), dtype=np.uint8)
    if name == "city":
        image[...] = (80, 80, 92)
        image[(np.mod(x * 8, 1) < 0.45) & (np.mod(y * 8, 1) < 0.45)] = (150, 150, 120)
    elif name == "desert":
        image[...] = (185, 140, 70)
        image[np.mod(y * 6 + 0.15 * np.sin(2 * np.pi * 2 * x), 1) < 0.25] = (150, 110, 50)
    elif name == "forest":
        image[...] = (20, 75, 35)
        image[np.mod(x * 6, 1) < 0.3] = (55, 40, 25)
    elif name == "sea":
        image[...] = (20, 55, 130)
        image[np.mod(y * 7 + 0.1 * np.sin(2 * np.pi * 3 * x), 1) < 0.2] = (70, 120, 200)
    elif name == "space":
        image[...] = (8, 8, 20)
        star_rng = np.random.default_rng(0)  # a fixed sky, identical in every clip
        image[star_rng.random((size, size)) < 0.03] = (220, 220, 240)
    else:
        raise ValueError(f"unknown scene {name!r}; known: {SCENES}")
    image.flags.writeable = False
    return image
