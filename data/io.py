"""Atomic file writes, content hashing and folder locks.

Every output of stylerec is written to a temporary file in the destination folder and
renamed into place, so a killed job never leaves a half-written file that looks complete.
Jobs that write several files of one folder hold :func:`folder_lock` on it meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import socket
import tempfile
import time
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


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinities (which JSON does not have) replaced by None."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(obj: Any, path: str | os.PathLike[str], strict: bool = False) -> Path:
    """``obj`` as JSON. ``strict`` (reports meant for other tools): a NaN or infinity
    becomes null, never a bare ``NaN`` token that strict parsers refuse; without it they
    are kept (configs and checkpoints hold ``Infinity`` on purpose and read it back)."""
    with atomic_path(path) as tmp:
        text = json.dumps(json_safe(obj), allow_nan=False, indent=2, default=str) if strict else json.dumps(obj, indent=2, sort_keys=False, default=str)
        tmp.write_text(text + "\n")
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


LOCK_FILE = ".lock"


class FolderLockError(RuntimeError):
    """The folder is locked by another live process (or one this host cannot check)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _read_lock(path: Path) -> dict[str, Any] | None:
    """The lock's holder, ``{}`` if the file is unreadable (being written?), None if it is gone."""
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _lock_is_stale(holder: dict[str, Any], path: Path) -> bool:
    """Only a lock of a dead process on this host is stale (or an unreadable one over a minute old)."""
    if not holder:
        try:
            return time.time() - path.stat().st_mtime > 60
        except FileNotFoundError:
            return False
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike[str], what: str = "", wait: float = 0.0) -> Iterator[Path]:
    """Hold ``<path>/.lock`` (created atomically, holding PID and host) while the body runs.

    A lock held by a live process raises :class:`FolderLockError` (after polling for up to
    ``wait`` seconds); the lock of a dead process on this host is taken over. The lock is
    not re-entrant: a process must not take it twice. It is removed on exit.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    token = secrets.token_hex(8)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "what": what, "token": token, "since": time.time()}
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            if holder is None:  # released meanwhile
                continue
            if _lock_is_stale(holder, lock):
                # a dead holder: remove its lock and race for a fresh one (O_EXCL picks one winner)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)
                continue
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            doing = f"{holder.get('what') or 'a stylerec job'} on {holder.get('host', 'an unknown host')}"
            raise FolderLockError(
                f"{folder} is in use by PID {holder.get('pid', '?')} ({doing}); "
                f"wait for it or remove {lock} if that process is gone"
            ) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(me))
        break
    try:
        yield lock
    finally:
        holder = _read_lock(lock)
        if holder and holder.get("token") == token:  # never remove a lock that is no longer ours
            lock.unlink(missing_ok=True)


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
