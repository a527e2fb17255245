"""Style transfer: render a content image in the style given by a style vector."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from style.encoder import ImageInput, MagentaStyleEncoder, StyleEncoder, to_rgb
from style.networks import TRANSFORM, session

DEFAULT_SIZE = 384  # the resolution the transfer network was trained at
_DOWNSAMPLE = 4  # the network halves the resolution twice: sides must be multiples of 4


@runtime_checkable
class StyleTransfer(Protocol):
    def render(self, content: ImageInput, style_vector: np.ndarray, strength: float = 1.0, keep_colors: bool = False, size: int = DEFAULT_SIZE) -> Image.Image:
        ...


def keep_content_colours(stylised: Image.Image, content: Image.Image) -> Image.Image:
    """Luminance from the stylised image, chroma (Cb, Cr) from the content: colours stay."""
    y, _, _ = stylised.convert("YCbCr").split()
    _, cb, cr = content.resize(stylised.size, Image.Resampling.LANCZOS).convert("YCbCr").split()
    return Image.merge("YCbCr", (y, cb, cr)).convert("RGB")


def fit_longer_side(image: Image.Image, size: int) -> Image.Image:
    scale = size / max(image.size)
    w, h = max(_DOWNSAMPLE, round(image.width * scale)), max(_DOWNSAMPLE, round(image.height * scale))
    return image.resize((w, h), Image.Resampling.LANCZOS) if (w, h) != image.size else image


class MagentaStyleTransfer:
    """Magenta's style-transfer network at any size (shapes rewritten at load time)."""

    def __init__(self, encoder: StyleEncoder | None = None, threads: int | None = None):
        self.encoder = encoder or MagentaStyleEncoder()
        self._session = session(TRANSFORM, dynamic=True, threads=threads)
        self._content, self._style = (i.name for i in self._session.get_inputs())

    def transform(self, content: np.ndarray, style_vectors: np.ndarray) -> np.ndarray:
        """Raw network call: (N, H, W, 3) in [0, 1] and (N, 100) → (N, H, W, 3) in [0, 1]; H, W multiples of 4."""
        vec = np.asarray(style_vectors, np.float32).reshape(-1, 1, 1, style_vectors.shape[-1])
        return self._session.run(None, {self._content: np.ascontiguousarray(content, np.float32), self._style: vec})[0]

    def render(self, content: ImageInput, style_vector: np.ndarray, strength: float = 1.0, keep_colors: bool = False, size: int = DEFAULT_SIZE) -> Image.Image:
        """``content`` in the style of ``style_vector``.

        ``strength`` interpolates the target style vector with the content's own and
        blends the result over the content (0 keeps the content's look, 1 is the full
        style); ``keep_colors`` keeps the content's colours and transfers luminance only
        (YCbCr).
        """
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must lie in [0, 1], got {strength}")
        if size < 2 * _DOWNSAMPLE:
            raise ValueError(f"size must be at least {2 * _DOWNSAMPLE}, got {size}")
        image = fit_longer_side(to_rgb(content), size)
        target = np.asarray(style_vector, np.float32).reshape(-1)
        if strength < 1.0:
            own = self.encoder.embed([image])[0]
            target = strength * target + (1.0 - strength) * own
        arr = np.asarray(image, np.float32) / 255.0
        h, w = arr.shape[:2]
        ph, pw = (-h) % _DOWNSAMPLE, (-w) % _DOWNSAMPLE
        if ph or pw:
            arr = np.pad(arr, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        out = self.transform(arr[None], target[None])[0][:h, :w]
        # the network re-draws even its own style with texture: fade the result in over the
        # content as well, so strength 0 is the content itself and 1 the full style
        out = strength * out + (1.0 - strength) * arr[:h, :w]
        stylised = Image.fromarray((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8))
        return keep_content_colours(stylised, image) if keep_colors else stylised
