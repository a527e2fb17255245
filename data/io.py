"""Atomic file writes and content hashing.

Every output of stylerec is written to a temporary file in the destination folder and
renamed into place, so a killed job never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_parquet(df: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, compression="zstd", statistics=True)
    return Path(path)


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)


def write_bytes(data: bytes, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ParquetStreamWriter:
    """Append polars frames to one parquet file chunk by chunk; renamed into place on close.

    Used by generators and importers whose output does not fit in memory at once.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        self._tmp: Path | None = None
        self._writer = None
        self.rows = 0

    def __enter__(self) -> ParquetStreamWriter:
        self._tmp = self._ctx.__enter__()
        return self

    def write(self, df: pl.DataFrame) -> None:
        import pyarrow.parquet as pq

        table = df.to_arrow()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, table.schema, compression="zstd")
        self._writer.write_table(table)
        self.rows += df.height

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        if self._writer is not None:
            self._writer.close()
        elif exc_type is None:
            raise ValueError(f"{self.path}: nothing was written")
        return self._ctx.__exit__(exc_type, exc, tb)
