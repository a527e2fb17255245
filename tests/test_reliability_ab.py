"""Bad A/B inputs: quarantined with a reason and counted, never NaN in report.json, never a traceback."""

import datetime as dt
import json

import polars as pl
from click.testing import CliRunner

from pipelines.cli import cli
from recsys.ab.analysis import ABConfig, clean_assignments
from tests.test_ab_report import T0, experiment


def _report(tmp_path, assignments, events, fmt="parquet"):
    paths = []
    for name, df in (("assignments", assignments), ("events", events)):
        path = tmp_path / f"{name}.{fmt}"
        df.write_parquet(path) if fmt == "parquet" else df.write_csv(path)
        paths.append(path)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["ab", "report", "--assignments", str(paths[0]), "--events", str(paths[1]), "--out", str(out), "--no-mlflow"])
    return result, out


def test_nan_and_negative_revenue_are_quarantined_and_json_is_strict(tmp_path):
    assignments, events = experiment(n_a=300, n_b=300)
    bad = pl.DataFrame({"user_id": ["u1", "u400", "u2"], "ts": [T0 + dt.timedelta(days=1)] * 3, "event": ["purchase"] * 3, "revenue": [float("nan"), -5.0, float("inf")]})
    result, out = _report(tmp_path, assignments, pl.concat([events, bad]))
    assert result.exit_code == 0, result.output
    text = (out / "report.json").read_text()
    report = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(f"bare {c} in report.json")))
    assert report["inputs"]["events_invalid_revenue"] == 3
    for arm in report["metrics"]["revenue_per_user"].values():
        assert arm["mean"]["control"] is not None and arm["mean"]["treatment"] is not None
    quarantined = pl.read_parquet(out / "quarantine_events.parquet")
    assert quarantined["reason"].to_list() == ["invalid_revenue"] * 3


def test_undefined_numbers_are_null_with_a_note(tmp_path):
    # nobody converts: relative lifts divide by a zero control mean
    assignments, _ = experiment(n_a=50, n_b=50)
    events = pl.DataFrame({"user_id": ["nobody"], "ts": [T0], "event": ["purchase"], "revenue": [1.0]})
    result, out = _report(tmp_path, assignments, events)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(), parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(c)))
    assert report["notes"] and all("null" in n for n in report["notes"])


def test_null_user_variant_and_exposure_have_their_own_reasons():
    assignments, _ = experiment(n_a=100, n_b=100)
    broken = pl.DataFrame(
        {"user_id": [None, None, "x1", "x2"], "variant": ["control", "treatment", None, "control"], "first_exposure": [T0, T0, T0, None], "device": ["ios"] * 4, "pre_purchases": [0.0] * 4},
        schema_overrides={"user_id": pl.String, "variant": pl.String},
    )
    assigned, quarantine, counts = clean_assignments(pl.concat([assignments, broken]), ABConfig())
    assert counts.conflicting_users_quarantined == 0
    assert counts.assignment_rows_missing_user_id == 2
    assert counts.assignment_rows_missing_variant == 1
    assert counts.assignment_rows_bad_first_exposure == 1
    assert counts.users_assigned == 200 and assigned.height == 200
    assert sorted(quarantine["reason"].to_list()) == ["missing_first_exposure", "missing_user_id", "missing_user_id", "missing_variant"]


def test_unparseable_exposure_time_in_csv_is_counted_not_a_traceback(tmp_path):
    assignments, events = experiment(n_a=100, n_b=100)
    a = assignments.with_columns(pl.col("first_exposure").dt.to_string("%Y-%m-%dT%H:%M:%S%z"))
    a = a.with_columns(pl.when(pl.col("user_id") == "u3").then(pl.lit("yesterday")).otherwise(pl.col("first_exposure")).alias("first_exposure"))
    a = a.with_columns(pl.when(pl.col("user_id") == "u4").then(None).otherwise(pl.col("variant")).alias("variant"))
    result, out = _report(tmp_path, a, events, fmt="csv")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    inputs = json.loads((out / "report.json").read_text())["inputs"]
    assert inputs["assignment_rows_bad_first_exposure"] == 1 and inputs["assignment_rows_missing_variant"] == 1
    assert inputs["users_assigned"] == 198
