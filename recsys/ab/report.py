"""An A/B report from tables to files: analyse, then write report.json and report.html."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from data.io import atomic_path, write_json, write_parquet
from recsys.ab.analysis import ABConfig, ABInputError, analyse, clean_assignments, from_aggregated, per_user_metrics
from recsys.ab.html import render
from recsys.tomlconf import build_dataclass, read_toml

UNDEFINED = "not a number (undefined for these inputs, e.g. no variance or a zero control mean); written as null"


def load_config(path: Path | None) -> ABConfig:
    """An A/B config TOML (top-level keys = ABConfig fields); None = the defaults."""
    if path is None:
        return ABConfig()
    return build_dataclass(ABConfig, read_toml(path, ABInputError), str(path), ABInputError)


def undefined_numbers(obj, path: str = "") -> list[str]:
    """A note for every NaN or infinite number in ``obj``: report.json writes them as null
    (JSON has no NaN; data.io.write_json strict), the notes say where and why."""
    if isinstance(obj, dict):
        return [n for k, v in obj.items() for n in undefined_numbers(v, f"{path}.{k}" if path else str(k))]
    if isinstance(obj, (list, tuple)):
        return [n for i, v in enumerate(obj) for n in undefined_numbers(v, f"{path}[{i}]")]
    if isinstance(obj, float) and not math.isfinite(obj):
        return [f"{path}: {UNDEFINED}"]
    return []


def build_report(assignments: pl.DataFrame | None, events: pl.DataFrame | None, aggregated: pl.DataFrame | None, cfg: ABConfig) -> tuple[dict, dict[str, pl.DataFrame]]:
    """(report, quarantined rows by table) from assignments + events, or from an aggregated
    table. ``notes`` lists the undefined (NaN) numbers, which report.json writes as null."""
    if aggregated is not None:
        report, quarantine = analyse(from_aggregated(aggregated, cfg), cfg), {}
    else:
        assigned, bad_assignments, counts = clean_assignments(assignments, cfg)
        bad_events: list[pl.DataFrame] = []
        per_user = per_user_metrics(assigned, events, cfg, counts, bad_events)
        report, quarantine = analyse(per_user, cfg, counts), {"assignments": bad_assignments, "events": bad_events[0]}
    report["notes"] = undefined_numbers(report)
    return report, quarantine


def write_report(report: dict, quarantine: dict[str, pl.DataFrame], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_json(report, out / "report.json", strict=True)
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(render(report))
    for table, rows in quarantine.items():
        if rows.height:
            write_parquet(rows, out / f"quarantine_{table}.parquet")
    return json_path, out / "report.html"
