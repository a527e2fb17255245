"""TOML files -> frozen dataclasses: the one loader of every config file (runs, A/B reports).

Every key must be a field of the dataclass; anything else is an error before any work
starts, naming the file (and section) and the key. TOML arrays become tuples.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path


def read_toml(path: str | Path, error: type[Exception] = ValueError) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise error(f"{path}: cannot read config: {exc}") from exc


def build_dataclass(cls, values: dict, where: str, error: type[Exception] = ValueError):
    """``cls(**values)``, refusing unknown keys and reporting bad values as ``error``."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise error(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**converted)
    except error:
        raise
    except (TypeError, ValueError) as exc:
        raise error(f"{where}: {exc}") from exc
