"""A dataset folder: canonical tables, manifest, and where derived outputs live."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from data.io import read_json, sha256_file, write_json, write_parquet
from data.schema import SCHEMAS, TABLES

MANIFEST = "manifest.json"
QUARANTINE_DIR = "quarantine"
SPLIT_DIR = "split"
GROUND_TRUTH_DIR = "ground_truth"


class DatasetError(Exception):
    """A dataset cannot be read: the message names the file and, where known, the column."""


class SchemaError(DatasetError):
    """A table or column is missing or has the wrong type."""


@dataclass(frozen=True)
class Manifest:
    name: str
    source: str
    created_at: str
    row_counts: dict[str, int]
    content_sha256: dict[str, str]
    params: dict[str, Any] = field(default_factory=dict)
    linked_dirs: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "created_at": self.created_at,
            "row_counts": self.row_counts,
            "content_sha256": self.content_sha256,
            "params": self.params,
            "linked_dirs": self.linked_dirs,
            **self.extra,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Manifest:
        known = {"name", "source", "created_at", "row_counts", "content_sha256", "params", "linked_dirs"}
        return cls(
            name=obj["name"],
            source=obj["source"],
            created_at=obj["created_at"],
            row_counts=obj.get("row_counts", {}),
            content_sha256=obj.get("content_sha256", {}),
            params=obj.get("params", {}),
            linked_dirs=obj.get("linked_dirs", {}),
            extra={k: v for k, v in obj.items() if k not in known},
        )

    @property
    def fingerprint(self) -> str:
        """One hash for the dataset's tables, logged with every model trained on it."""
        import hashlib

        joined = "".join(f"{k}={self.content_sha256[k]};" for k in sorted(self.content_sha256))
        return hashlib.sha256(joined.encode()).hexdigest()


class DatasetDir:
    """Paths and raw table access for one dataset folder."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"DatasetDir({str(self.root)!r})"

    def table_path(self, table: str) -> Path:
        return self.root / SCHEMAS[table].file_name

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def quarantine_dir(self) -> Path:
        return self.root / QUARANTINE_DIR

    @property
    def split_dir(self) -> Path:
        return self.root / SPLIT_DIR

    @property
    def ground_truth_dir(self) -> Path:
        return self.root / GROUND_TRUTH_DIR

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> Manifest:
        if not self.manifest_path.is_file():
            raise DatasetError(f"{self.manifest_path}: no manifest.json — is {self.root} a stylerec dataset?")
        return Manifest.from_json(read_json(self.manifest_path))

    def read_raw(self, table: str) -> pl.DataFrame:
        path = self.table_path(table)
        if not path.is_file():
            raise SchemaError(f"{path}: missing table {table!r} (expected {SCHEMAS[table].file_name})")
        try:
            return pl.read_parquet(path)
        except Exception as exc:  # polars raises several error types for broken files
            raise DatasetError(f"{path}: cannot read parquet: {exc}") from exc

    def write_table(self, table: str, df: pl.DataFrame) -> Path:
        return write_parquet(df, self.table_path(table))

    def write_manifest(
        self,
        name: str,
        source: str,
        params: dict[str, Any] | None = None,
        linked_dirs: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Manifest:
        """Hash the tables on disk and write ``manifest.json`` (last, so it marks completeness)."""
        counts: dict[str, int] = {}
        hashes: dict[str, str] = {}
        for table in TABLES:
            path = self.table_path(table)
            if path.is_file():
                counts[table] = pq.ParquetFile(path).metadata.num_rows
                hashes[table] = sha256_file(path)
        manifest = Manifest(
            name=name,
            source=source,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            row_counts=counts,
            content_sha256=hashes,
            params=params or {},
            linked_dirs=linked_dirs or {},
            extra=extra or {},
        )
        write_json(manifest.to_json(), self.manifest_path)
        return manifest
