"""A dataset folder: canonical tables, manifest, and where derived outputs live."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from data.io import FolderLockError, folder_lock, read_json, sha256_file, write_json, write_parquet
from data.schema import SCHEMAS, TABLES

MANIFEST = "manifest.json"
VERIFIED = ".verified.json"  # cache: (size, mtime_ns, inode) -> sha256 of each table file
REPORT_FILE = "validation_report.json"
MANIFEST_REQUIRED = ("name", "source", "created_at", "content_sha256")
QUARANTINE_DIR = "quarantine"
SPLIT_DIR = "split"
GROUND_TRUTH_DIR = "ground_truth"


class DatasetError(Exception):
    """A dataset cannot be read: the message names the file and, where known, the column."""


class SchemaError(DatasetError):
    """A table or column is missing or has the wrong type."""


class DatasetIntegrityError(DatasetError):
    """A table on disk is not the one ``manifest.json`` records (edited after it was written)."""


class DatasetBusyError(DatasetError, FolderLockError):
    """Another live process holds the dataset folder's lock."""


REWRITE_HINT = (
    "re-import (`stylerec data import-hm`) or re-generate (`stylerec data synth --force`) the dataset; "
    "code that rewrites a table on purpose must call DatasetDir.write_manifest afterwards"
)


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def _hash_stable(path: Path) -> tuple[dict[str, int], str]:
    """(stat key, sha256) of a file that did not change while it was hashed."""
    before = _stat_key(path)
    sha = sha256_file(path)
    if _stat_key(path) != before:
        raise DatasetIntegrityError(f"{path}: changed while it was being hashed; is another job writing this dataset? Try again")
    return before, sha


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
            content_sha256=obj["content_sha256"],
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
        self._verified_stats: dict[str, dict[str, int]] = {}  # table -> stat key, set by verified_manifest

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

    @property
    def verified_cache_path(self) -> Path:
        return self.root / VERIFIED

    @property
    def report_path(self) -> Path:
        return self.root / REPORT_FILE

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> Manifest:
        """The manifest as written (see :meth:`verified_manifest` for one checked against the tables)."""
        path = self.manifest_path
        if not path.is_file():
            raise DatasetError(f"{path}: no manifest.json — is {self.root} a stylerec dataset?")
        fix = "re-import or re-generate the dataset"
        try:
            obj = read_json(path)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc}; truncated?); {fix}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{path}: cannot read: {exc}") from exc
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}: expected a JSON object, found {type(obj).__name__}; {fix}")
        missing = [k for k in MANIFEST_REQUIRED if k not in obj]
        if missing:
            raise DatasetError(f"{path}: missing field(s) {', '.join(map(repr, missing))}; {fix}")
        if not isinstance(obj["content_sha256"], dict):
            raise DatasetError(f"{path}: 'content_sha256' is not an object; {fix}")
        return Manifest.from_json(obj)

    def _read_verified(self) -> dict[str, dict[str, Any]]:
        try:
            obj = read_json(self.verified_cache_path)
        except (OSError, ValueError):
            return {}
        tables = obj.get("tables") if isinstance(obj, dict) else None
        return tables if isinstance(tables, dict) else {}

    def _write_verified(self, entries: dict[str, dict[str, Any]]) -> None:
        try:
            write_json({"doc": "sha256 of the tables, checked against manifest.json; keyed by size, mtime and inode", "tables": entries}, self.verified_cache_path)
        except OSError:  # a read-only dataset is still usable: it is hashed every time
            pass

    def verified_manifest(self) -> Manifest:
        """The manifest, after checking that every table on disk is the one it records.

        A table is hashed only when its size, mtime or inode differ from the last
        verification (cached in ``.verified.json``). Raises :class:`DatasetIntegrityError`
        naming the table when it does not match; a missing table is left to :meth:`read_raw`.
        Call :meth:`check_unchanged` after reading the tables to make sure they are the ones
        verified.
        """
        manifest = self.manifest()
        cache = self._read_verified()
        fresh: dict[str, dict[str, Any]] = {}
        self._verified_stats = {}
        for table in TABLES:
            path = self.table_path(table)
            if not path.is_file():
                continue
            recorded = manifest.content_sha256.get(table)
            if recorded is None:
                raise DatasetIntegrityError(f"{path}: table {table!r} is not recorded in {self.manifest_path}; {REWRITE_HINT}")
            key = _stat_key(path)
            entry = cache.get(path.name)
            if isinstance(entry, dict) and {k: entry.get(k) for k in key} == key and isinstance(entry.get("sha256"), str):
                sha = entry["sha256"]
            else:
                key, sha = _hash_stable(path)
                fresh[path.name] = {**key, "sha256": sha}
            if sha != recorded:
                raise DatasetIntegrityError(
                    f"{path}: table {table!r} does not match {self.manifest_path} "
                    f"(sha256 {sha[:12]}… on disk, {recorded[:12]}… recorded), so it was changed after the dataset was written; "
                    f"{REWRITE_HINT}"
                )
            self._verified_stats[table] = key
        if fresh:
            self._write_verified({**cache, **fresh})
        return manifest

    def check_unchanged(self) -> None:
        """Raise if a table verified by :meth:`verified_manifest` has changed since."""
        for table, key in self._verified_stats.items():
            path = self.table_path(table)
            if not path.is_file() or _stat_key(path) != key:
                raise DatasetIntegrityError(f"{path}: changed while it was being loaded; is another job writing this dataset? Try again")

    @contextlib.contextmanager
    def lock(self, what: str, wait: float = 0.0) -> Iterator[Path]:
        """:func:`data.io.folder_lock` on the dataset folder; a lock held by another live
        process raises :class:`DatasetBusyError`, which every job reports in one line."""
        stack = contextlib.ExitStack()
        try:
            path = stack.enter_context(folder_lock(self.root, what=what, wait=wait))
        except FolderLockError as exc:
            raise DatasetBusyError(str(exc)) from None
        with stack:
            yield path

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
        verified: dict[str, dict[str, Any]] = {}
        for table in TABLES:
            path = self.table_path(table)
            if path.is_file():
                counts[table] = pq.ParquetFile(path).metadata.num_rows
                key, hashes[table] = _hash_stable(path)
                verified[path.name] = {**key, "sha256": hashes[table]}
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
        self._write_verified(verified)  # these hashes are the manifest's: no need to hash again on load
        write_json(manifest.to_json(), self.manifest_path)
        return manifest
