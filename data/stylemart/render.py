"""Product photos: a category silhouette filled with a style's pattern, lit and shadowed."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from data.stylemart.styles import STYLES, Rng, render_pattern

Draw = Callable[[ImageDraw.ImageDraw, float, Rng], None]


def _poly(draw: ImageDraw.ImageDraw, pts: list[tuple[float, float]], s: float) -> None:
    draw.polygon([(px * s, py * s) for px, py in pts], fill=255)


def _shirt(d, s, rng):
    w = rng.uniform(0.0, 0.04)
    _poly(d, [(0.32 - w, 0.2), (0.42, 0.16), (0.5, 0.22), (0.58, 0.16), (0.68 + w, 0.2), (0.88, 0.36),
              (0.78, 0.45), (0.7, 0.38), (0.7, 0.85), (0.3, 0.85), (0.3, 0.38), (0.22, 0.45), (0.12, 0.36)], s)


def _dress(d, s, rng):
    flare = rng.uniform(0.0, 0.08)
    _poly(d, [(0.4, 0.12), (0.44, 0.12), (0.46, 0.22), (0.54, 0.22), (0.56, 0.12), (0.6, 0.12), (0.62, 0.3),
              (0.58, 0.45), (0.8 + flare, 0.9), (0.2 - flare, 0.9), (0.42, 0.45), (0.38, 0.3)], s)


def _mug(d, s, rng):
    d.rounded_rectangle([0.24 * s, 0.28 * s, 0.66 * s, 0.82 * s], radius=0.04 * s, fill=255)
    d.ellipse([0.58 * s, 0.38 * s, 0.84 * s, 0.68 * s], fill=255)
    d.ellipse([0.64 * s, 0.45 * s, 0.77 * s, 0.61 * s], fill=0)


def _bag(d, s, rng):
    d.rounded_rectangle([0.18 * s, 0.38 * s, 0.82 * s, 0.86 * s], radius=0.07 * s, fill=255)
    d.arc([0.32 * s, 0.14 * s, 0.68 * s, 0.6 * s], start=180, end=360, fill=255, width=max(2, int(0.05 * s)))


def _sofa(d, s, rng):
    d.rounded_rectangle([0.12 * s, 0.3 * s, 0.88 * s, 0.62 * s], radius=0.06 * s, fill=255)
    d.rounded_rectangle([0.06 * s, 0.45 * s, 0.94 * s, 0.76 * s], radius=0.05 * s, fill=255)
    d.rectangle([0.14 * s, 0.76 * s, 0.18 * s, 0.84 * s], fill=255)
    d.rectangle([0.82 * s, 0.76 * s, 0.86 * s, 0.84 * s], fill=255)


def _lamp(d, s, rng):
    _poly(d, [(0.34, 0.12), (0.66, 0.12), (0.8, 0.46), (0.2, 0.46)], s)
    d.rectangle([0.48 * s, 0.46 * s, 0.52 * s, 0.8 * s], fill=255)
    d.ellipse([0.3 * s, 0.78 * s, 0.7 * s, 0.9 * s], fill=255)


def _sneaker(d, s, rng):
    _poly(d, [(0.1, 0.5), (0.2, 0.38), (0.42, 0.36), (0.52, 0.48), (0.78, 0.56), (0.92, 0.64), (0.92, 0.74),
              (0.1, 0.74)], s)
    d.rounded_rectangle([0.08 * s, 0.72 * s, 0.94 * s, 0.8 * s], radius=0.03 * s, fill=255)


def _poster(d, s, rng):
    aspect = rng.uniform(0.65, 0.8)
    w = 0.7 * aspect
    d.rectangle([(0.5 - w / 2) * s, 0.12 * s, (0.5 + w / 2) * s, 0.88 * s], fill=255)


SILHOUETTES: dict[str, Draw] = {
    "shirt": _shirt, "dress": _dress, "mug": _mug, "bag": _bag,
    "sofa": _sofa, "lamp": _lamp, "sneaker": _sneaker, "poster": _poster,
}
CATEGORIES: tuple[str, ...] = tuple(SILHOUETTES)


@dataclass(frozen=True)
class RenderSpec:
    """Everything needed to draw one product photo."""

    category: str
    style: int  # index into STYLES
    seed: int
    size: int = 256


def silhouette_mask(category: str, size: int, rng: Rng) -> np.ndarray:
    """(size, size) float mask in [0, 1], randomly scaled and shifted."""
    canvas = Image.new("L", (size, size), 0)
    SILHOUETTES[category](ImageDraw.Draw(canvas), float(size), rng)
    scale = rng.uniform(0.82, 1.0)
    new = max(8, int(size * scale))
    canvas = canvas.resize((new, new), Image.Resampling.BILINEAR)
    placed = Image.new("L", (size, size), 0)
    slack = size - new
    placed.paste(canvas, (int(rng.integers(0, slack + 1)), int(rng.integers(0, slack + 1))))
    placed = placed.filter(ImageFilter.GaussianBlur(0.6))
    return np.asarray(placed, dtype=np.float32) / 255.0


def render_product(spec: RenderSpec) -> np.ndarray:
    """The product photo as a (size, size, 3) uint8 array."""
    rng = np.random.default_rng(spec.seed)
    size = spec.size
    mask = silhouette_mask(spec.category, size, rng)
    texture = render_pattern(STYLES[spec.style], size, rng)

    coords = np.linspace(-1, 1, size, dtype=np.float32)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    angle = rng.uniform(0, 2 * np.pi)
    light = 0.85 + 0.2 * (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(0.5, 1.0)
    shaded = np.clip(texture * light[..., None], 0, 1)

    tint = rng.uniform(0.88, 0.99, size=3).astype(np.float32)
    background = (tint * (1.0 - 0.08 * (yy[..., None] + 1) / 2)).astype(np.float32)
    shadow = np.asarray(
        Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(6)).transform(
            (size, size), Image.Transform.AFFINE, (1, 0, -size * 0.02, 0, 1, -size * 0.03)
        ),
        dtype=np.float32,
    ) / 255.0
    background = background * (1.0 - 0.25 * shadow[..., None])
    img = background * (1.0 - mask[..., None]) + shaded * mask[..., None]
    return (np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def encode_image(pixels: np.ndarray, fmt: str = "JPEG", quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, quality=quality) if fmt == "JPEG" else Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


__all__ = ["CATEGORIES", "RenderSpec", "SILHOUETTES", "STYLES", "encode_image", "render_product", "silhouette_mask"]
