"""Figures that show the style space works (``stylerec style check``).

- style consistency: render content images in each of several style images, re-embed the
  outputs, and count how often the nearest of the style images is the one applied;
- crop -> source: a random crop of an image should retrieve its own image's style first;
- kNN label accuracy: the style labels of an item's 10 nearest neighbours (cosine of
  centred vectors) predict its own label; reported for style and for category labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from style.encoder import StyleEncoder
from style.space import StyleSpace
from style.transfer import MagentaStyleTransfer


def knn_label_accuracy(unit: np.ndarray, labels: Sequence, k: int = 10, block: int = 2048) -> float:
    """Leave-one-out majority vote of the ``k`` nearest (cosine) neighbours; ties -> nearest label."""
    labels = np.asarray(labels)
    correct = 0
    for start in range(0, unit.shape[0], block):
        sims = unit[start : start + block] @ unit.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf
        nn = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, nn, axis=1), axis=1)
        nn = np.take_along_axis(nn, order, axis=1)
        for i, neighbours in enumerate(nn):
            votes = Counter(labels[neighbours].tolist())
            best = max(votes.values())
            # ties broken by the nearest neighbour among the tied labels
            pred = next(lab for lab in labels[neighbours] if votes[lab] == best)
            correct += pred == labels[start + i]
    return correct / unit.shape[0]


def random_crop(image: Image.Image, rng: np.random.Generator, min_frac: float = 0.5, max_frac: float = 0.8) -> Image.Image:
    w, h = image.size
    frac = rng.uniform(min_frac, max_frac)
    cw, ch = max(8, int(w * frac)), max(8, int(h * frac))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((x, y, x + cw, y + ch))


def crop_retrieval(encoder: StyleEncoder, space: StyleSpace, images: dict[str, Image.Image], labels: dict[str, str] | None = None, seed: int = 0) -> dict[str, float]:
    """Precision@1 of random crops against the whole catalogue.

    ``source``: the nearest item in style is the crop's own image; ``same_label`` (with
    ``labels``): the nearest item has the crop's style label.
    """
    rng = np.random.default_rng(seed)
    ids = list(images)
    queries = space.normalise(encoder.embed([random_crop(images[i], rng) for i in ids]))
    nearest = space.ids[np.argmax(queries @ space.unit.T, axis=1)]
    out = {"source": float(np.mean(nearest == np.asarray(ids)))}
    if labels is not None:
        out["same_label"] = float(np.mean([labels[str(n)] == labels[i] for n, i in zip(nearest, ids, strict=True)]))
    return out


@dataclass(frozen=True)
class ConsistencyResult:
    accuracy: float
    n_content: int
    n_styles: int
    confusion: dict[str, dict[str, int]]


def style_consistency(
    transfer: MagentaStyleTransfer,
    space: StyleSpace,
    contents: Sequence[Image.Image],
    styles: dict[str, Image.Image],
    size: int = 256,
) -> ConsistencyResult:
    """Render every content in every style; is the re-embedded output nearest its applied style?"""
    names = list(styles)
    style_vecs = transfer.encoder.embed([styles[n] for n in names])
    anchors = space.normalise(style_vecs)
    hits = 0
    confusion: dict[str, dict[str, int]] = {n: {} for n in names}
    for content in contents:
        renders = [transfer.render(content, style_vecs[j], size=size) for j in range(len(names))]
        found = np.argmax(space.normalise(transfer.encoder.embed(renders)) @ anchors.T, axis=1)
        for j, f in enumerate(found):
            hits += int(f == j)
            confusion[names[j]][names[f]] = confusion[names[j]].get(names[f], 0) + 1
    return ConsistencyResult(hits / (len(contents) * len(names)), len(contents), len(names), confusion)


def chroma_histogram(image: Image.Image, bins: int = 32) -> np.ndarray:
    """Normalised joint histogram of the (Cb, Cr) chroma channels: colour without brightness."""
    ycc = np.asarray(image.convert("YCbCr"), np.int64)
    idx = (ycc[..., 1] * bins // 256) * bins + ycc[..., 2] * bins // 256
    hist = np.bincount(idx.ravel(), minlength=bins * bins).astype(np.float64)
    return hist / hist.sum()


def histogram_intersection(a: np.ndarray, b: np.ndarray) -> float:
    """1 for identical histograms, 0 for disjoint ones."""
    return float(np.minimum(a, b).sum())


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute pixel difference in [0, 1] (b resized to a's size)."""
    b = b.resize(a.size, Image.Resampling.LANCZOS) if b.size != a.size else b
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b.convert("RGB"), np.float32)).mean() / 255.0)
