"""The A/B report job: inputs with every kind of problem, a planted SRM, the HTML in Chromium."""

import datetime as dt
import json
import re
import shutil
import subprocess

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from PIL import Image

from pipelines.cli import cli
from recsys.ab.analysis import ABConfig, ABInputError, analyse, clean_assignments, per_user_metrics

T0 = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)


def experiment(n_a=4000, n_b=4000, p_a=0.05, p_b=0.07, seed=0, days=10):
    rng = np.random.default_rng(seed)
    n = n_a + n_b
    users = [f"u{i}" for i in range(n)]
    variant = ["control"] * n_a + ["treatment"] * n_b
    exposure = [T0 + dt.timedelta(hours=int(h)) for h in rng.integers(0, 24 * days, n)]
    pre = rng.poisson(1.0, n).astype(float)
    assignments = pl.DataFrame({"user_id": users, "variant": variant, "first_exposure": exposure, "device": rng.choice(["ios", "web"], n), "pre_purchases": pre})
    p = np.where(np.array(variant) == "control", p_a, p_b) * pre  # the pre-period predicts conversion
    buys = rng.random(n) < p
    rows = [
        {"user_id": u, "ts": e + dt.timedelta(hours=int(rng.integers(1, 100))), "event": "purchase", "revenue": float(rng.gamma(2, 20))}
        for u, e, b in zip(users, exposure, buys, strict=True)
        if b
    ]
    return assignments, pl.DataFrame(rows)


def test_planted_lift_is_found_with_cuped_and_segments():
    assignments, events = experiment()
    cfg = ABConfig(covariate="pre_purchases", segments=("device",), sequential=True)
    assigned, quarantine, counts = clean_assignments(assignments, cfg)
    report = analyse(per_user_metrics(assigned, events, cfg, counts), cfg, counts)
    conv = report["metrics"]["conversion"]["treatment"]
    assert list(report["metrics"]) == ["conversion", "revenue_per_user", "orders_per_user"]
    assert conv["abs_lift"]["estimate"] > 0 and conv["p_value_adjusted"] < 0.05
    assert conv["abs_lift"]["ci95"][0] < conv["abs_lift"]["estimate"] < conv["abs_lift"]["ci95"][1]
    assert conv["cuped"]["variance_reduction"] > 0.05
    assert conv["sequential"]["ci"][0] < conv["abs_lift"]["ci95"][0]  # wider than the fixed-n CI
    assert 0.99 < conv["chance_to_win"] <= 1 and conv["prob_b_beats_a_exact"] > 0.99
    assert set(report["segments"]["device"]) == {"ios", "web"}
    assert report["verdict"].startswith("Ship treatment")
    assert not report["srm"]["flagged"] and len(report["cumulative"]["treatment"]) >= 9
    assert counts.events_used == events.height and quarantine.height == 0


def test_bad_inputs_are_counted_or_refused():
    assignments, events = experiment(n_a=500, n_b=500)
    conflict = pl.DataFrame({"user_id": ["u1"], "variant": ["treatment"], "first_exposure": [T0], "device": ["ios"], "pre_purchases": [0.0]})
    dup = assignments.head(1)
    extra_events = pl.DataFrame(
        {
            "user_id": ["stranger", "stranger", "u2", "u3"],
            "ts": [T0, T0, T0 - dt.timedelta(days=30), T0 + dt.timedelta(days=60)],
            "event": ["purchase"] * 4,
            "revenue": [1.0] * 4,
        }
    )
    cfg = ABConfig()
    assigned, quarantine, counts = clean_assignments(pl.concat([assignments, conflict, dup]), cfg)
    per_user = per_user_metrics(assigned, pl.concat([events, extra_events]), cfg, counts)
    assert counts.conflicting_users_quarantined == 1 and quarantine["user_id"].unique().to_list() == ["u1"]
    assert counts.duplicate_rows_merged == 1 and counts.users_assigned == 999
    assert counts.events_unassigned_users == 2
    assert counts.events_before_exposure == 1 and counts.events_after_attribution_window == 1
    # every planted purchase lies in its window; u1's were dropped with its quarantined assignment
    assert counts.events_used == events.filter(pl.col("user_id") != "u1").height
    used_users = per_user.filter(pl.col("orders_per_user") > 0).height
    assert used_users == per_user["conversion"].sum()

    with pytest.raises(ABInputError, match="at least one treatment"):
        clean_assignments(assignments.filter(pl.col("variant") == "control"), cfg)
    with pytest.raises(ABInputError, match="unknown variant"):
        clean_assignments(assignments, ABConfig(weights={"control": 1, "other": 1}))
    with pytest.raises(ABInputError, match=r"no users in arm\(s\) \['b2'\]"):
        clean_assignments(assignments, ABConfig(weights={"control": 1, "treatment": 1, "b2": 1}))
    with pytest.raises(ABInputError, match="control variant 'ctl' not found"):
        clean_assignments(assignments, ABConfig(control="ctl"))
    with pytest.raises(ABInputError, match="missing column"):
        clean_assignments(assignments.drop("first_exposure"), cfg)


def test_planted_srm_blocks_shipping(tmp_path):
    assignments, events = experiment(n_a=10_000, n_b=10_500, p_a=0.05, p_b=0.08)
    assignments.write_parquet(tmp_path / "a.parquet")
    events.write_parquet(tmp_path / "e.parquet")
    result = CliRunner().invoke(cli, ["ab", "report", "--assignments", str(tmp_path / "a.parquet"), "--events", str(tmp_path / "e.parquet"), "--out", str(tmp_path / "out"), "--no-mlflow"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["srm"]["flagged"] and report["srm"]["p_value"] < 0.001
    assert report["verdict"].startswith("Do not ship: sample ratio mismatch")
    assert "SAMPLE RATIO MISMATCH" in result.output
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'class="banner"' in html
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)  # self-contained: nothing loaded from a network


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is installed by `make test`")
def test_html_report_renders_in_headless_chromium(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assignments, events = experiment()
    assignments.write_parquet(tmp_path / "a.parquet")
    events.write_csv(tmp_path / "e.csv")
    config = tmp_path / "ab.toml"
    config.write_text('covariate = "pre_purchases"\nsegments = ["device"]\n')
    result = CliRunner().invoke(cli, ["ab", "report", "--assignments", str(tmp_path / "a.parquet"), "--events", str(tmp_path / "e.csv"), "--config", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "MLflow run" in result.output
    page = (tmp_path / "out" / "report.html").resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", "--window-size=1200,1600", page], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # not a blank page
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page], check=True, capture_output=True, text=True, timeout=120).stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert 'id="verdict"' in dom and report["verdict"].split(":")[0] in dom
    assert "<svg" in dom
