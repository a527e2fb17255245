"""The visual styles of StyleMart: a palette and a pattern family each.

Every pattern is a pure function of a coordinate grid and a random generator, so an image
is reproducible from its item's seed. Variation (scale, rotation, hue jitter) keeps any
two images of a style different while the style stays recognisable.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

Rng = np.random.Generator
Pattern = Callable[[np.ndarray, np.ndarray, np.ndarray, Rng], np.ndarray]


@dataclass(frozen=True)
class Style:
    name: str
    palette: tuple[str, ...]  # hex colours
    colour_words: tuple[str, ...]  # how a copywriter names the palette
    synonyms: tuple[str, ...]  # words for the style itself
    pattern: Pattern


def hex_to_rgb(code: str) -> np.ndarray:
    code = code.lstrip("#")
    return np.array([int(code[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float32) / 255.0


def jitter_palette(palette: tuple[str, ...], rng: Rng, hue: float = 0.03, sv: float = 0.08) -> np.ndarray:
    """Palette as (k, 3) floats with a small random shift of hue, saturation and value."""
    dh = rng.uniform(-hue, hue)
    out = []
    for code in palette:
        h, s, v = colorsys.rgb_to_hsv(*hex_to_rgb(code))
        s = float(np.clip(s + rng.uniform(-sv, sv), 0, 1))
        v = float(np.clip(v + rng.uniform(-sv, sv), 0, 1))
        out.append(colorsys.hsv_to_rgb((h + dh) % 1.0, s, v))
    return np.asarray(out, dtype=np.float32)


def rotated(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return c * x - s * y, s * x + c * y


def smooth_noise(size: int, cells: int, rng: Rng) -> np.ndarray:
    """Smooth value noise in [0, 1]: a coarse random grid upsampled bicubically."""
    coarse = rng.random((cells, cells), dtype=np.float32)
    img = Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / max(hi - lo, 1e-6)


def _mix(mask: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel blend: ``mask`` (H, W) in [0, 1] of colour ``b`` over ``a``."""
    m = mask[..., None]
    return a * (1.0 - m) + b * m


def _fill(shape: tuple[int, int], colour: np.ndarray) -> np.ndarray:
    return np.broadcast_to(colour, (*shape, 3)).astype(np.float32)


def _soft_step(d: np.ndarray, edge: float = 0.015) -> np.ndarray:
    """1 inside (d < 0), 0 outside, with an anti-aliased edge."""
    return np.clip(0.5 - d / edge, 0.0, 1.0)


def _window(x: np.ndarray, y: np.ndarray, cx: float, cy: float, half: float) -> tuple[slice, slice]:
    """Row/column slices of the grid within ``half`` of (cx, cy): motifs are drawn only there."""
    xs, ys = x[0], y[:, 0]
    cols = np.searchsorted(xs, [cx - half, cx + half])
    rows = np.searchsorted(ys, [cy - half, cy + half])
    return slice(int(rows[0]), int(rows[1])), slice(int(cols[0]), int(cols[1]))


def _centres(x: np.ndarray, y: np.ndarray, n: int, rng: Rng) -> np.ndarray:
    """``n`` random motif centres inside the grid's extent (and a little beyond its edge)."""
    lo = np.array([x.min(), y.min()]) - 0.05
    hi = np.array([x.max(), y.max()]) + 0.05
    return lo + rng.random((n, 2)) * (hi - lo)


# ---------------------------------------------------------------------------------------
# pattern families. x, y: coordinates in [0, 1); pal: jittered palette (k, 3)


def floral(x, y, pal, rng):
    out = _fill(x.shape, pal[0]).copy()
    radius = rng.uniform(0.05, 0.09)
    for cx, cy in _centres(x, y, int(rng.integers(28, 44)), rng):
        win = _window(x, y, cx, cy, radius * 1.1)
        petals = int(rng.integers(5, 7))
        phase = rng.uniform(0, 2 * np.pi)
        dx, dy = x[win] - cx, y[win] - cy
        r = np.hypot(dx, dy)
        theta = np.arctan2(dy, dx)
        petal_r = radius * (0.55 + 0.45 * np.abs(np.cos(petals / 2 * (theta + phase))))
        colour = pal[1 + int(rng.integers(0, len(pal) - 2))]
        patch = _mix(_soft_step(r - petal_r), out[win], colour)
        out[win] = _mix(_soft_step(r - radius * 0.22), patch, pal[-1])
    return out


def stripes(x, y, pal, rng):
    u, _ = rotated(x, y, rng.uniform(-0.4, 0.4) + rng.choice([0.0, np.pi / 2]))
    freq = rng.uniform(5, 11)
    band = np.floor((u * freq) % len(pal)).astype(np.int64)
    return pal[band]


def polka_dots(x, y, pal, rng):
    u, v = rotated(x, y, rng.uniform(0, np.pi / 4))
    cells = rng.uniform(6, 11)
    fu, fv = (u * cells) % 1.0 - 0.5, (v * cells) % 1.0 - 0.5
    d = np.hypot(fu, fv) - rng.uniform(0.18, 0.3)
    return _mix(_soft_step(d, 0.08), _fill(x.shape, pal[0]), pal[1 + int(rng.integers(0, len(pal) - 1))])


def plaid(x, y, pal, rng):
    u, v = rotated(x, y, rng.uniform(-0.1, 0.1))
    freq = rng.uniform(3, 6)
    out = _fill(x.shape, pal[0])
    for coord in (u, v):
        wave = (coord * freq) % 1.0
        out = _mix(((wave > 0.15) & (wave < 0.45)).astype(np.float32) * 0.5, out, pal[1])
        out = _mix(((wave > 0.6) & (wave < 0.66)).astype(np.float32) * 0.7, out, pal[2])
        out = _mix(((wave > 0.8) & (wave < 0.82)).astype(np.float32) * 0.8, out, pal[3])
    return out


def marble(x, y, pal, rng):
    size = x.shape[0]
    turb = smooth_noise(size, 5, rng) * 2.0 + smooth_noise(size, 11, rng) * 0.8
    u, _ = rotated(x, y, rng.uniform(0, np.pi))
    veins = np.abs(np.sin((u * rng.uniform(3, 6) + turb) * np.pi)) ** rng.uniform(0.15, 0.3)
    base = _mix(smooth_noise(size, 4, rng) * 0.5, _fill(x.shape, pal[0]), pal[1])
    return _mix(1.0 - veins, base, pal[2])


def watercolour(x, y, pal, rng):
    size = x.shape[0]
    out = _fill(x.shape, pal[0])
    for colour in pal[1:]:
        blob = smooth_noise(size, int(rng.integers(3, 6)), rng)
        out = _mix(np.clip((blob - 0.45) * 2.0, 0, 1) * 0.75, out, colour)
    return out


def geometric(x, y, pal, rng):
    u, v = rotated(x, y, rng.choice([0.0, np.pi / 4, np.pi / 6]))
    cells = rng.uniform(3, 6)
    iu, iv = np.floor(u * cells), np.floor(v * cells)
    fu, fv = (u * cells) % 1.0, (v * cells) % 1.0
    tri = (fu > fv).astype(np.int64)
    idx = ((iu + 2 * iv).astype(np.int64) * 2 + tri) % len(pal)
    return pal[idx]


def minimal_solid(x, y, pal, rng):
    colour = pal[int(rng.integers(0, len(pal)))]
    grain = (smooth_noise(x.shape[0], 40, rng) - 0.5) * 0.03
    return np.clip(_fill(x.shape, colour) + grain[..., None], 0, 1)


def animal_print(x, y, pal, rng):
    size = x.shape[0]
    out = _mix(smooth_noise(size, 6, rng) * 0.4, _fill(x.shape, pal[0]), pal[1])
    wobble = (smooth_noise(size, 18, rng) - 0.5) * 0.03
    scale = rng.uniform(0.035, 0.055)
    for cx, cy in _centres(x, y, int(rng.integers(45, 70)), rng):
        win = _window(x, y, cx, cy, scale * 2.0)
        r = np.hypot((x[win] - cx) * rng.uniform(0.8, 1.3), y[win] - cy) + wobble[win]
        ring = _soft_step(np.abs(r - scale) - scale * 0.35)
        patch = _mix(ring, out[win], pal[2])
        out[win] = _mix(_soft_step(r - scale * 0.55) * 0.7, patch, pal[3])
    return out


def paisley(x, y, pal, rng):
    out = _fill(x.shape, pal[0]).copy()
    s = rng.uniform(0.06, 0.09)
    for cx, cy in _centres(x, y, int(rng.integers(18, 28)), rng):
        win = _window(x, y, cx, cy, s * 3.2)
        u, v = rotated(x[win] - cx, y[win] - cy, rng.uniform(0, 2 * np.pi))
        # teardrop: a circle whose radius shrinks along u, curling into a tail
        r = s * np.clip(1.0 - (u / (2.2 * s)), 0, 1.4) ** 0.8
        d = np.hypot(u * 0.8, v - 0.35 * u**2 / s) - r
        colour = pal[1 + int(rng.integers(0, len(pal) - 2))]
        patch = _mix(_soft_step(d), out[win], colour)
        out[win] = _mix(_soft_step(np.abs(d + s * 0.3) - s * 0.06), patch, pal[-1])
    return out


def camouflage(x, y, pal, rng):
    size = x.shape[0]
    out = _fill(x.shape, pal[0])
    for colour in pal[1:]:
        blob = smooth_noise(size, int(rng.integers(5, 9)), rng)
        out = _mix(_soft_step(rng.uniform(0.5, 0.62) - blob, 0.02), out, colour)
    return out


def gradient(x, y, pal, rng):
    u, _ = rotated(x - 0.5, y - 0.5, rng.uniform(0, 2 * np.pi))
    t = np.clip(u + 0.5, 0, 1)
    i = int(rng.integers(0, len(pal) - 1))
    return _mix(t, _fill(x.shape, pal[i]), pal[i + 1])


STYLES: tuple[Style, ...] = (
    Style("floral", ("#f6efe4", "#d9486f", "#f28fb1", "#7fb069", "#f2c14e"), ("pink", "rose", "cream", "blush"),
          ("floral", "flower-print", "botanical", "blossom"), floral),
    Style("stripes", ("#1f3b73", "#f5f5f0", "#c8102e"), ("navy", "white", "red", "nautical blue"),
          ("striped", "stripe", "pinstripe", "breton"), stripes),
    Style("polka_dots", ("#111111", "#fafafa", "#e63946"), ("black", "white", "red", "monochrome"),
          ("polka dot", "dotted", "spotty", "dot-print"), polka_dots),
    Style("plaid", ("#7a1f1f", "#1d4d2b", "#e8c547", "#101820"), ("burgundy", "forest green", "mustard", "tartan red"),
          ("plaid", "tartan", "check", "checked"), plaid),
    Style("marble", ("#f2f2ef", "#d9d7d2", "#5c5c62"), ("white", "grey", "stone", "ivory"),
          ("marble", "marbled", "stone-effect", "veined"), marble),
    Style("watercolour", ("#fbf7f2", "#8ecae6", "#ffb5a7", "#b8e0d2"), ("pastel", "sky blue", "peach", "mint"),
          ("watercolour", "painterly", "washed", "aquarelle"), watercolour),
    Style("geometric", ("#ff6b35", "#004e89", "#f7c59f", "#1a1a2e", "#00a6a6"), ("orange", "cobalt", "teal", "bold"),
          ("geometric", "graphic", "triangle-print", "art-deco"), geometric),
    Style("minimal_solid", ("#e8e4dc", "#2b2b2b", "#a3b1a0", "#c9b79c"), ("beige", "charcoal", "sage", "sand"),
          ("minimal", "plain", "solid", "clean-lined"), minimal_solid),
    Style("animal_print", ("#d9a05b", "#c58940", "#2b1a0f", "#7a4a21"), ("tan", "camel", "brown", "caramel"),
          ("leopard", "animal-print", "wild", "cheetah"), animal_print),
    Style("paisley", ("#4a1942", "#c1440e", "#e9b44c", "#1b998b", "#f4e4c1"), ("plum", "rust", "gold", "jewel-toned"),
          ("paisley", "boho", "bohemian", "teardrop-print"), paisley),
    Style("camouflage", ("#6b705c", "#3a3f2b", "#a5a58d", "#2d2a22"), ("olive", "khaki", "army green", "earthy"),
          ("camouflage", "camo", "military", "utility-print"), camouflage),
    Style("gradient", ("#ff0080", "#7928ca", "#00c6ff", "#f9d423"), ("neon", "magenta", "violet", "electric blue"),
          ("gradient", "ombre", "colour-fade", "dip-dye"), gradient),
)

STYLE_NAMES: tuple[str, ...] = tuple(s.name for s in STYLES)


def render_pattern(style: Style, size: int, rng: Rng) -> np.ndarray:
    """A (size, size, 3) float32 texture in [0, 1] of ``style`` with random variation."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    scale = rng.uniform(0.8, 1.25)
    y, x = np.meshgrid(coords * scale + rng.random(), coords * scale + rng.random(), indexing="ij")
    pal = jitter_palette(style.palette, rng)
    return np.clip(style.pattern(x, y, pal, rng), 0.0, 1.0).astype(np.float32)
