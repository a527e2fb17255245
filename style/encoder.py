"""Style encoders: images in, style vectors out, behind one small interface.

``StyleEncoder.embed(images) -> (N, dim)`` is all callers use, so another encoder (VGG /
AdaIN statistics from user-supplied weights, say) can be added without touching them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from style.networks import PREDICT, STYLE_DIM, STYLE_INPUT_SIZE, encoder_info, session

ImageInput = Image.Image | np.ndarray


@runtime_checkable
class StyleEncoder(Protocol):
    name: str
    version: str
    dim: int

    def embed(self, images: Sequence[ImageInput]) -> np.ndarray:
        """(N, dim) float32 style vectors."""
        ...


def to_rgb(image: ImageInput) -> Image.Image:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("RGB")


def style_input(image: ImageInput, size: int = STYLE_INPUT_SIZE) -> np.ndarray:
    """Centre square crop, resized to ``size`` (Lanczos): (size, size, 3) float32 in [0, 1].

    The same preprocessing as the reference per-image path, so vectors are comparable.
    """
    img = to_rgb(image)
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.float32) / 255.0


class MagentaStyleEncoder:
    """Magenta's style-prediction network (MobileNet-v2 → 100-d), batched with onnxruntime."""

    dim = STYLE_DIM

    def __init__(self, batch_size: int = 16, threads: int | None = None):
        info = encoder_info()
        self.name, self.version, self.weights_sha256 = info.name, info.version, info.sha256
        self.batch_size = batch_size
        self._session = session(PREDICT, dynamic=True, threads=threads)
        self._input = self._session.get_inputs()[0].name

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Style vectors of preprocessed inputs (N, 256, 256, 3) float32."""
        out = []
        for start in range(0, batch.shape[0], self.batch_size):
            chunk = np.ascontiguousarray(batch[start : start + self.batch_size], dtype=np.float32)
            out.append(self._session.run(None, {self._input: chunk})[0].reshape(chunk.shape[0], STYLE_DIM))
        return np.concatenate(out) if out else np.zeros((0, STYLE_DIM), np.float32)

    def embed(self, images: Sequence[ImageInput]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, STYLE_DIM), np.float32)
        return self.embed_arrays(np.stack([style_input(im) for im in images]))
