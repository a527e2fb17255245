"""Seeded fuzzing of bad input: random corruptions (dropped, renamed or retyped columns,
nulls, NaN and inf, duplicates, empty tables, truncated files) of the tiny preset's tables
and of small A/B tables, fed to `data validate`, `ab report` and `train`.

Every run must end either with exit 0 and reconciled counts, or with a non-zero exit and
a one-line error: never a traceback. Most cases run in process (click's runner: an
exception escaping the CLI is a traceback); a few run `python -m pipelines.cli` in a
subprocess to check the real entry point.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from data.dataset import DatasetDir
from pipelines.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261201
TABLES = ("items", "users", "interactions", "reviews")
KINDS = ("drop", "rename", "retype", "nulls", "nan_inf", "duplicates", "empty", "garbage", "truncate")


def corrupt(df: pl.DataFrame, rng: np.random.Generator, kind: str) -> pl.DataFrame:
    """``df`` with one corruption of ``kind`` (``truncate`` is done on the file)."""
    col = df.columns[int(rng.integers(len(df.columns)))]
    n = df.height
    some = pl.Series(rng.random(n) < 0.2) if n else pl.Series([], dtype=pl.Boolean)
    dtype = df.schema[col]
    if kind == "drop":
        return df.drop(col)
    if kind == "rename":
        return df.rename({col: f"{col}_renamed"})
    if kind == "retype":
        if dtype == pl.String:
            return df.with_columns(pl.col(col).cast(pl.Int64, strict=False))
        if dtype.is_temporal():
            return df.with_columns(pl.col(col).dt.epoch("s") if rng.random() < 0.5 else pl.col(col).cast(pl.String))
        return df.with_columns(pl.col(col).cast(pl.String))
    if kind == "nulls":
        return df.with_columns(pl.when(pl.lit(some)).then(None).otherwise(pl.col(col)).alias(col))
    if kind == "nan_inf":
        floats = [c for c, t in df.schema.items() if t.is_float()] or [col]
        col = floats[int(rng.integers(len(floats)))]
        bad = pl.Series(rng.choice([float("nan"), float("inf"), -float("inf"), -1.0], n)) if n else pl.Series([], dtype=pl.Float64)
        return df.with_columns(pl.col(col).cast(pl.Float64, strict=False)).with_columns(pl.when(pl.lit(some)).then(pl.lit(bad)).otherwise(pl.col(col)).alias(col))
    if kind == "duplicates":
        return pl.concat([df, df.sample(max(1, n // 5), seed=int(rng.integers(1 << 30)), with_replacement=True)]) if n else df
    if kind == "empty":
        return df.head(0)
    if kind == "garbage":
        words = pl.Series(rng.choice(["yesterday", "", "NaN", "-1", "🙂"], n)) if n else pl.Series([], dtype=pl.String)
        return df.with_columns(pl.col(col).cast(pl.String)).with_columns(pl.when(pl.lit(some)).then(pl.lit(words)).otherwise(pl.col(col)).alias(col))
    return df


def truncate(path: Path, rng: np.random.Generator) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * rng.uniform(0.1, 0.9))])


def assert_clean_failure_or_success(result, what: str) -> bool:
    """True when the command succeeded; fails the test on a traceback."""
    out = result.output
    assert "Traceback" not in out, f"{what}\n{out}"
    if result.exit_code == 0:
        return True
    assert isinstance(result.exception, SystemExit), f"{what}: uncaught {result.exception!r}\n{out}"
    assert [line for line in out.splitlines() if line.startswith("Error: ")], f"{what}: no error line\n{out}"
    return False


def corrupted_dataset(source: Path, dest: Path, rng: np.random.Generator, table: str, kind: str) -> None:
    dd = DatasetDir(dest)
    dest.mkdir(parents=True)
    shutil.copytree(source / "images", dest / "images", copy_function=os.link)  # a symlink would escape the dataset
    for name in TABLES:
        df = pl.read_parquet(source / f"{name}.parquet")
        dd.write_table(name, corrupt(df, rng, kind) if name == table else df)
    dd.write_manifest("fuzzed", "test")
    if kind == "truncate":
        truncate(dd.table_path(table), rng)


def dataset_cases(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [(str(rng.choice(TABLES)), str(rng.choice(KINDS)), int(rng.integers(1 << 30))) for _ in range(n)]


@pytest.mark.parametrize("table,kind,seed", dataset_cases(12, SEED))
def test_validate_survives_corrupted_tables(tiny_stylemart, tmp_path, table, kind, seed):
    root = tmp_path / "ds"
    corrupted_dataset(Path(tiny_stylemart), root, np.random.default_rng(seed), table, kind)
    result = CliRunner().invoke(cli, ["--workdir", str(tmp_path / "wd"), "data", "validate", str(root), "--no-decode"])
    if assert_clean_failure_or_success(result, f"validate {table} {kind}"):
        report = json.loads((root / "validation_report.json").read_text())
        for name, rep in report["tables"].items():
            assert rep["rows_in"] == rep["accepted"] + rep["quarantined"], (name, rep)


def ab_tables(rng: np.random.Generator, n_users: int = 120) -> tuple[pl.DataFrame, pl.DataFrame]:
    t0 = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    users = [f"u{i}" for i in range(n_users)]
    assignments = pl.DataFrame({
        "user_id": users,
        "variant": rng.choice(["control", "treatment"], n_users),
        "first_exposure": [t0 + dt.timedelta(hours=int(h)) for h in rng.integers(0, 96, n_users)],
    })
    buyers = rng.choice(users, 80)
    events = pl.DataFrame({
        "user_id": buyers,
        "ts": [t0 + dt.timedelta(hours=int(h)) for h in rng.integers(0, 200, len(buyers))],
        "event": rng.choice(["purchase", "view"], len(buyers)),
        "revenue": rng.gamma(2.0, 20.0, len(buyers)),
    })
    return assignments, events


def ab_cases(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [(str(rng.choice(["assignments", "events"])), str(rng.choice(KINDS)), str(rng.choice(["parquet", "csv"])), int(rng.integers(1 << 30))) for _ in range(n)]


@pytest.mark.parametrize("table,kind,fmt,seed", ab_cases(18, SEED + 1))
def test_ab_report_survives_corrupted_tables(tmp_path, table, kind, fmt, seed):
    rng = np.random.default_rng(seed)
    tables = dict(zip(("assignments", "events"), ab_tables(rng), strict=True))
    tables[table] = corrupt(tables[table], rng, kind)
    paths = {}
    for name, df in tables.items():
        paths[name] = tmp_path / f"{name}.{fmt}"
        df.write_parquet(paths[name]) if fmt == "parquet" else df.write_csv(paths[name])
    if kind == "truncate":
        truncate(paths[table], rng)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["ab", "report", "--assignments", str(paths["assignments"]), "--events", str(paths["events"]), "--out", str(out), "--no-mlflow"])
    if assert_clean_failure_or_success(result, f"ab report {table} {kind} {fmt}"):
        report = json.loads((out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in report.json"))
        i = report["inputs"]
        assert i["event_rows"] == (
            i["events_bad_timestamp"] + i["events_invalid_revenue"] + i["events_unassigned_users"] + i["events_before_exposure"]
            + i["events_after_attribution_window"] + i["events_other_types"] + i["events_used"]
        ), i
        bad_rows = i["assignment_rows_missing_user_id"] + i["assignment_rows_missing_variant"] + i["assignment_rows_bad_first_exposure"]
        assert i["users_assigned"] + i["duplicate_rows_merged"] + bad_rows <= i["assignment_rows"], i
        assert sum(report["arms"]["users"].values()) == i["users_assigned"], (report["arms"], i)


TRAIN_CASES = [("interactions", "nulls", 11), ("items", "retype", 12)]


@pytest.mark.parametrize("table,kind,seed", TRAIN_CASES)
def test_train_survives_corrupted_tables(tiny_stylemart, tmp_path, monkeypatch, table, kind, seed):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "ds"
    corrupted_dataset(Path(tiny_stylemart), root, np.random.default_rng(seed), table, kind)
    config = tmp_path / "tiny.toml"
    config.write_text('[model]\nitem_features = ["item_id", "category"]\nuser_features = ["user_id", "history"]\n[train]\nbatch_size = 64\nmax_batches_per_epoch = 2\nval_users = 50\nrefit = false\n')
    result = CliRunner().invoke(cli, ["--workdir", str(tmp_path / "wd"), "train", str(root), "--config", str(config), "--epochs", "1"])
    assert_clean_failure_or_success(result, f"train {table} {kind}")


def test_the_real_entry_point_prints_no_traceback(tiny_stylemart, tmp_path):
    """A few corruptions through `python -m pipelines.cli` itself (its own process)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    rng = np.random.default_rng(SEED + 2)
    root = tmp_path / "ds"
    corrupted_dataset(Path(tiny_stylemart), root, rng, "interactions", "truncate")
    assignments, events = ab_tables(rng)
    assignments.with_columns(pl.col("first_exposure").cast(pl.String)).with_columns(
        pl.when(pl.col("user_id") == "u1").then(pl.lit("yesterday")).otherwise(pl.col("first_exposure")).alias("first_exposure")
    ).write_csv(tmp_path / "a.csv")
    events.with_columns(pl.when(pl.col("user_id") == events["user_id"][0]).then(float("nan")).otherwise(pl.col("revenue")).alias("revenue")).write_parquet(tmp_path / "e.parquet")
    script = (
        f"{sys.executable} -m pipelines.cli --workdir {tmp_path}/wd data validate {root} --no-decode; echo rc=$?; "
        f"{sys.executable} -m pipelines.cli ab report --assignments {tmp_path}/a.csv --events {tmp_path}/e.parquet --out {tmp_path}/ab --no-mlflow; echo rc=$?"
    )
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    codes = [line for line in proc.stdout.splitlines() if line.startswith("rc=")]
    assert codes[0] != "rc=0" and "does not match" in out, out  # the truncated table is refused in one line
    assert codes[1] == "rc=0", out
    inputs = json.loads((tmp_path / "ab" / "report.json").read_text())["inputs"]
    assert inputs["assignment_rows_bad_first_exposure"] == 1 and inputs["events_invalid_revenue"] >= (events["event"][0] == "purchase")
