"""An A/B report from tables to files: analyse, then write report.json and report.html."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data.io import atomic_path, write_json, write_parquet
from recsys.ab.analysis import ABConfig, ABInputError, analyse, clean_assignments, from_aggregated, per_user_metrics
from recsys.ab.html import render
from recsys.tomlconf import build_dataclass, read_toml


def load_config(path: Path | None) -> ABConfig:
    """An A/B config TOML (top-level keys = ABConfig fields); None = the defaults."""
    if path is None:
        return ABConfig()
    return build_dataclass(ABConfig, read_toml(path, ABInputError), str(path), ABInputError)


def build_report(assignments: pl.DataFrame | None, events: pl.DataFrame | None, aggregated: pl.DataFrame | None, cfg: ABConfig) -> tuple[dict, pl.DataFrame]:
    """(report, quarantined assignments) from assignments + events, or from an aggregated table."""
    if aggregated is not None:
        return analyse(from_aggregated(aggregated, cfg), cfg), pl.DataFrame()
    assigned, quarantine, counts = clean_assignments(assignments, cfg)
    per_user = per_user_metrics(assigned, events, cfg, counts)
    return analyse(per_user, cfg, counts), quarantine


def write_report(report: dict, quarantine: pl.DataFrame, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_json(report, out / "report.json")
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(render(report))
    if quarantine.height:
        write_parquet(quarantine, out / "quarantine_assignments.parquet")
    return json_path, out / "report.html"
