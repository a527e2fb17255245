"""Style embeddings of a catalogue: parallel decoding, batched inference, cache by image hash.

Written to ``<dataset>/style/style_embeddings.parquet`` (item_id, style vector, image
sha256, encoder name and version) beside ``style_meta.json`` (the catalogue mean the
style space is centred on). Items whose image is missing or does not decode go to
``<dataset>/quarantine/style_embed.parquet`` with a reason; the batch goes on.
"""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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


def _read(root: Path, rel: str | None, encoder: StyleEncoder) -> tuple[str | None, np.ndarray | None, str | None]:
    """(sha256, preprocessed input, problem) of one item image."""
    if rel is None:
        return None, None, "no_image"
    path = root / rel
    try:
        data = path.read_bytes()
    except OSError:
        return None, None, "image_missing"
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = encoder.preprocess(im)
    except Exception:
        return digest, None, "image_unreadable"
    return digest, arr, None


def _load_cache(root: Path, encoder: StyleEncoder) -> dict[str, np.ndarray]:
    path = embeddings_path(root)
    if not path.is_file():
        return {}
    old = pl.read_parquet(path).filter((pl.col("encoder") == encoder.name) & (pl.col("encoder_version") == encoder.version))
    return dict(zip(old["image_sha256"].to_list(), old["style"].to_numpy(), strict=True))


def embed_catalogue(
    root: str | Path,
    items: pl.DataFrame,
    encoder: StyleEncoder,
    chunk_size: int = 128,
    workers: int = 2,
    progress: bool = True,
) -> EmbedStats:
    """Embed every item image of the dataset at ``root``; re-uses vectors of unchanged images."""
    import time

    started = time.perf_counter()
    root = Path(root)
    cache = _load_cache(root, encoder)
    ids = items["item_id"].to_list()
    paths = items["image_path"].to_list()
    out_ids: list[str] = []
    out_sha: list[str] = []
    out_vec: list[np.ndarray] = []
    bad: list[tuple[str, str | None, str]] = []
    embedded = cached = 0

    def load_chunk(start: int, pool: ThreadPoolExecutor):
        return list(pool.map(lambda rel: _read(root, rel, encoder), paths[start : start + chunk_size]))

    starts = list(range(0, len(ids), chunk_size))
    bar = tqdm(total=len(ids), desc="style embed", unit="img", disable=not progress or None)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, ThreadPoolExecutor(max_workers=1) as prefetch:
        pending = prefetch.submit(load_chunk, starts[0], pool) if starts else None
        for n, start in enumerate(starts):
            loaded = pending.result()
            # decode the next chunk while this one runs through the network
            pending = prefetch.submit(load_chunk, starts[n + 1], pool) if n + 1 < len(starts) else None
            todo_idx, todo_arr = [], []
            for offset, (digest, arr, problem) in enumerate(loaded):
                item = ids[start + offset]
                if problem is not None:
                    bad.append((item, paths[start + offset], problem))
                elif digest in cache:
                    out_ids.append(item), out_sha.append(digest), out_vec.append(cache[digest])
                    cached += 1
                else:
                    todo_idx.append(offset), todo_arr.append(arr)
            if todo_arr:
                vecs = encoder.embed_arrays(np.stack(todo_arr))
                for offset, vec in zip(todo_idx, vecs, strict=True):
                    digest = loaded[offset][0]
                    out_ids.append(ids[start + offset]), out_sha.append(digest), out_vec.append(vec)
                embedded += len(todo_arr)
            bar.update(len(loaded))
    bar.close()

    dim = encoder.dim
    vectors = np.asarray(out_vec, np.float32).reshape(-1, dim)
    if not np.isfinite(vectors).all():
        raise DatasetError(f"{root}: the style encoder produced non-finite vectors")
    table = pl.DataFrame(
        {
            "item_id": pl.Series(out_ids, dtype=pl.String),
            "style": pl.Series(vectors, dtype=pl.Array(pl.Float32, dim)),
            "image_sha256": pl.Series(out_sha, dtype=pl.String),
            "encoder": encoder.name,
            "encoder_version": encoder.version,
        }
    )
    quarantine = pl.DataFrame(bad, schema={"item_id": pl.String, "image_path": pl.String, "reason": pl.String}, orient="row")
    mean = vectors.mean(axis=0) if len(vectors) else np.zeros(dim, np.float32)
    write_parquet(quarantine, root / "quarantine" / QUARANTINE_FILE)
    write_parquet(table, embeddings_path(root))
    stats = EmbedStats(len(ids), embedded, cached, len(bad), time.perf_counter() - started)
    write_json(
        {
            "encoder": encoder.name,
            "encoder_version": encoder.version,
            "dim": dim,
            "catalogue_mean": mean.tolist(),
            "stats": stats.__dict__,
            "quarantine_reasons": dict(quarantine.group_by("reason").len().iter_rows()),
        },
        root / STYLE_DIR / META_FILE,
    )
    return stats


def load_style_space(root: str | Path) -> StyleSpace:
    """The dataset's style space (vectors + stored catalogue mean); clear error if absent or broken."""
    root = Path(root)
    path = embeddings_path(root)
    meta_path = root / STYLE_DIR / META_FILE
    if not path.is_file() or not meta_path.is_file():
        raise DatasetError(f"{path}: no style embeddings; run `stylerec style embed {root}` first")
    table = pl.read_parquet(path)
    vectors = table["style"].to_numpy().astype(np.float32)
    if not np.isfinite(vectors).all():
        bad = table.filter(~pl.col("style").arr.to_list().list.eval(pl.element().is_finite()).list.all())["item_id"].head(5).to_list()
        raise DatasetError(f"{path}: non-finite style vectors for item(s) {bad}")
    mean = np.asarray(read_json(meta_path)["catalogue_mean"], np.float32)
    return StyleSpace(table["item_id"].to_numpy(), vectors, mean)


__all__ = ["EmbedStats", "embed_catalogue", "embeddings_path", "load_style_space", "DatasetDir"]
