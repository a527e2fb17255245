"""Style encoders: images in, style vectors out, behind one small interface.

``StyleEncoder.embed(images) -> (N, dim)`` is all callers use, so another encoder (VGG /
AdaIN statistics from user-supplied weights, say) can be added without touching them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """One image as the network's input array (thread-safe: decoders call it in parallel)."""
        ...

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """(N, dim) style vectors of stacked ``preprocess`` outputs."""
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
    """Magenta's style-prediction network (MobileNet-v2 → 100-d), batched with onnxruntime.

    The int8 graph does not scale across cores inside one call (intra-op threads), so the
    encoder keeps one single-threaded session per core and runs small batches on them in
    parallel (benchmarks/style_embed.py: 2.5x the package's per-image path on 2 cores).
    """

    dim = STYLE_DIM

    def __init__(self, batch_size: int = 2, replicas: int | None = None):
        info = encoder_info()
        self.name, self.version, self.weights_sha256 = info.name, info.version, info.sha256
        self.batch_size = batch_size
        n = replicas or max(1, os.cpu_count() or 1)
        self._sessions = [session(PREDICT, dynamic=True, threads=1) for _ in range(n)]
        self._input = self._sessions[0].get_inputs()[0].name
        self._pool = ThreadPoolExecutor(max_workers=n) if n > 1 else None

    def _run(self, job: tuple[int, np.ndarray]) -> np.ndarray:
        index, chunk = job
        sess = self._sessions[index % len(self._sessions)]
        return sess.run(None, {self._input: chunk})[0].reshape(chunk.shape[0], STYLE_DIM)

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Style vectors of preprocessed inputs (N, 256, 256, 3) float32."""
        batch = np.asarray(batch, dtype=np.float32)
        jobs = [(i, np.ascontiguousarray(batch[s : s + self.batch_size])) for i, s in enumerate(range(0, batch.shape[0], self.batch_size))]
        if not jobs:
            return np.zeros((0, STYLE_DIM), np.float32)
        out = list(self._pool.map(self._run, jobs)) if self._pool and len(jobs) > 1 else [self._run(j) for j in jobs]
        return np.concatenate(out)

    def preprocess(self, image: ImageInput) -> np.ndarray:
        return style_input(image)

    def embed(self, images: Sequence[ImageInput]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, STYLE_DIM), np.float32)
        return self.embed_arrays(np.stack([self.preprocess(im) for im in images]))
