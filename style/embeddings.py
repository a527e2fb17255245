"""Style embeddings of a catalogue: parallel decoding, batched inference, cache by image hash.

Written to ``<dataset>/style/style_embeddings.parquet`` (item_id, style vector, image
sha256, encoder name and version) beside ``style_meta.json`` (the catalogue mean the
style space is centred on). Items whose image is missing or does not decode go to
``<dataset>/quarantine/style_embed.parquet`` with a reason; the batch goes on. A run
journals each chunk's new vectors under ``<dataset>/style/.partial/``, so a killed run's
re-run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image
from tqdm.auto import tqdm

from data.dataset import DatasetDir, DatasetError
from data.io import read_json, write_json, write_parquet
from style.encoder import StyleEncoder
from style.space import StyleSpace

STYLE_DIR = "style"
EMBEDDINGS_FILE = "style_embeddings.parquet"
META_FILE = "style_meta.json"
QUARANTINE_FILE = "style_embed.parquet"
PARTIAL_DIR = ".partial"


@dataclass(frozen=True)
class EmbedStats:
    items: int
    embedded: int  # newly run through the encoder
    cached: int  # re-used by image hash
    quarantined: int
    seconds: float

    @property
    def reconciled(self) -> bool:
        return self.items == self.embedded + self.cached + self.quarantined


def embeddings_path(root: Path) -> Path:
    return Path(root) / STYLE_DIR / EMBEDDINGS_FILE


def _read(root: Path, rel: str | None, encoder: StyleEncoder, cache: dict[str, np.ndarray]) -> tuple[str | None, np.ndarray | None, str | None]:
    """(sha256, preprocessed input, problem) of one item image.

    The hash comes first and the image is decoded only when its vector is not cached,
    so a re-run over unchanged photos costs a file read and a hash per item."""
    if rel is None:
        return None, None, "no_image"
    try:
        data = (root / rel).read_bytes()
    except OSError:
        return None, None, "image_missing"
    digest = hashlib.sha256(data).hexdigest()
    if digest in cache:
        return digest, None, None
    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = encoder.preprocess(im)
    except Exception:
        return digest, None, "image_unreadable"
    return digest, arr, None


def _vectors_by_hash(table: pl.DataFrame, encoder: StyleEncoder) -> dict[str, np.ndarray]:
    mine = table.filter((pl.col("encoder") == encoder.name) & (pl.col("encoder_version") == encoder.version))
    return dict(zip(mine["image_sha256"].to_list(), mine["style"].to_numpy(), strict=True))


class _Journal:
    """Vectors embedded by a run that has not finished, one atomic parquet part per chunk
    under ``style/.partial/``: a killed run's re-run takes them as cached and resumes."""

    def __init__(self, root: Path, encoder: StyleEncoder):
        self.folder = root / STYLE_DIR / PARTIAL_DIR
        self.encoder = encoder
        self.parts = len(list(self.folder.glob("part-*.parquet"))) if self.folder.is_dir() else 0

    def cached(self) -> dict[str, np.ndarray]:
        if not self.folder.is_dir():
            return {}
        out: dict[str, np.ndarray] = {}
        for part in sorted(self.folder.glob("part-*.parquet")):
            out.update(_vectors_by_hash(pl.read_parquet(part), self.encoder))
        return out

    def append(self, digests: list[str], vectors: np.ndarray) -> None:
        write_parquet(_style_table([""] * len(digests), digests, vectors, self.encoder), self.folder / f"part-{self.parts:06d}.parquet")
        self.parts += 1

    def clear(self) -> None:
        if self.folder.is_dir():
            shutil.rmtree(self.folder)


def _load_cache(root: Path, encoder: StyleEncoder, journal: _Journal) -> dict[str, np.ndarray]:
    path = embeddings_path(root)
    cache = _vectors_by_hash(pl.read_parquet(path), encoder) if path.is_file() else {}
    cache.update(journal.cached())
    return cache


def _style_table(item_ids: list[str], digests: list[str], vectors: np.ndarray, encoder: StyleEncoder) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": pl.Series(item_ids, dtype=pl.String),
            "style": pl.Series(np.asarray(vectors, np.float32).reshape(-1, encoder.dim), dtype=pl.Array(pl.Float32, encoder.dim)),
            "image_sha256": pl.Series(digests, dtype=pl.String),
            "encoder": pl.Series([encoder.name] * len(item_ids), dtype=pl.String),
            "encoder_version": pl.Series([encoder.version] * len(item_ids), dtype=pl.String),
        }
    )


@dataclass
class _Collected:
    """What the chunks produced, in catalogue order."""

    item_ids: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    bad: list[tuple[str, str | None, str]] = field(default_factory=list)
    embedded: int = 0
    cached: int = 0

    def add(self, item_id: str, digest: str, vector: np.ndarray) -> None:
        self.item_ids.append(item_id)
        self.digests.append(digest)
        self.vectors.append(vector)


def _embed_chunk(ids: list[str], paths: list[str | None], loaded: list, encoder: StyleEncoder, cache: dict[str, np.ndarray], journal: _Journal, out: _Collected) -> None:
    todo: list[int] = []
    for offset, (digest, arr, problem) in enumerate(loaded):
        if problem is not None:
            out.bad.append((ids[offset], paths[offset], problem))
        elif arr is None:
            out.add(ids[offset], digest, cache[digest])
            out.cached += 1
        else:
            todo.append(offset)
    if not todo:
        return
    vectors = encoder.embed_arrays(np.stack([loaded[o][1] for o in todo]))
    digests = [loaded[o][0] for o in todo]
    journal.append(digests, vectors)
    for offset, digest, vector in zip(todo, digests, vectors, strict=True):
        cache[digest] = vector
        out.add(ids[offset], digest, vector)
    out.embedded += len(todo)


def _write_outputs(root: Path, encoder: StyleEncoder, out: _Collected, n_items: int, seconds: float) -> EmbedStats:
    table = _style_table(out.item_ids, out.digests, np.asarray(out.vectors, np.float32), encoder)
    vectors = table["style"].to_numpy()
    if not np.isfinite(vectors).all():
        raise DatasetError(f"{root}: the style encoder produced non-finite vectors")
    quarantine = pl.DataFrame(out.bad, schema={"item_id": pl.String, "image_path": pl.String, "reason": pl.String}, orient="row")
    mean = vectors.mean(axis=0) if len(vectors) else np.zeros(encoder.dim, np.float32)
    write_parquet(quarantine, root / "quarantine" / QUARANTINE_FILE)
    write_parquet(table, embeddings_path(root))
    stats = EmbedStats(n_items, out.embedded, out.cached, len(out.bad), seconds)
    write_json(
        {
            "encoder": encoder.name,
            "encoder_version": encoder.version,
            "dim": encoder.dim,
            "catalogue_mean": mean.tolist(),
            "stats": stats.__dict__,
            "quarantine_reasons": dict(quarantine.group_by("reason").len().iter_rows()),
        },
        root / STYLE_DIR / META_FILE,
    )
    return stats


def embed_catalogue(
    root: str | Path,
    items: pl.DataFrame,
    encoder: StyleEncoder,
    chunk_size: int = 128,
    workers: int = 2,
    progress: bool = True,
) -> EmbedStats:
    """Embed every item image of the dataset at ``root``; re-uses vectors of unchanged images
    (and those a killed run had finished, which it journalled chunk by chunk)."""
    started = time.perf_counter()
    root = Path(root)
    journal = _Journal(root, encoder)
    cache = _load_cache(root, encoder, journal)
    ids = items["item_id"].to_list()
    paths = items["image_path"].to_list()
    out = _Collected()

    def load_chunk(start: int, pool: ThreadPoolExecutor) -> list:
        return list(pool.map(lambda rel: _read(root, rel, encoder, cache), paths[start : start + chunk_size]))

    starts = list(range(0, len(ids), chunk_size))
    bar = tqdm(total=len(ids), desc="style embed", unit="img", disable=not progress or None)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, ThreadPoolExecutor(max_workers=1) as prefetch:
        pending = prefetch.submit(load_chunk, starts[0], pool) if starts else None
        for n, start in enumerate(starts):
            loaded = pending.result()
            # read and decode the next chunk while this one runs through the network
            pending = prefetch.submit(load_chunk, starts[n + 1], pool) if n + 1 < len(starts) else None
            end = start + len(loaded)
            _embed_chunk(ids[start:end], paths[start:end], loaded, encoder, cache, journal, out)
            bar.update(len(loaded))
    bar.close()
    stats = _write_outputs(root, encoder, out, len(ids), time.perf_counter() - started)
    journal.clear()
    return stats


def load_style_space(root: str | Path) -> StyleSpace:
    """The dataset's style space (vectors + stored catalogue mean); clear error if absent or broken."""
    root = Path(root)
    path = embeddings_path(root)
    meta_path = root / STYLE_DIR / META_FILE
    if not path.is_file() or not meta_path.is_file():
        raise DatasetError(f"{path}: no style embeddings; run `stylerec style embed {root}` first")
    table = pl.read_parquet(path)
    if table.height == 0:
        raise DatasetError(
            f"{path}: the style table is empty (no item image could be embedded: see {root / STYLE_DIR} and "
            f"`stylerec style embed`); add images, or train without style features (e.g. --config recsys/configs/two_tower_id_only.toml)"
        )
    vectors = table["style"].to_numpy().astype(np.float32)
    if not np.isfinite(vectors).all():
        bad = table.filter(~pl.col("style").arr.to_list().list.eval(pl.element().is_finite()).list.all())["item_id"].head(5).to_list()
        raise DatasetError(f"{path}: non-finite style vectors for item(s) {bad}")
    mean = np.asarray(read_json(meta_path)["catalogue_mean"], np.float32)
    return StyleSpace(table["item_id"].to_numpy(), vectors, mean)


__all__ = ["EmbedStats", "embed_catalogue", "embeddings_path", "load_style_space", "DatasetDir"]
