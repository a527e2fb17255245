"""The demo end to end on the tiny preset: every stage runs, and a re-run re-uses the model."""

import pytest
from click.testing import CliRunner

from pipelines.cli import cli


@pytest.mark.slow
def test_demo_runs_every_stage_and_reuses_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    runner = CliRunner()
    args = ["--workdir", str(tmp_path / "wd"), "demo", "--preset", "tiny"]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    stages = ("generate StyleMart", "validate", "split", "style embeddings", "style gallery and style check", "train the two-tower model",
              "ranker", "offline evaluation", "FAISS index and top-100 candidates", "simulated A/B test")
    for stage in stages:
        assert f"\n== {stage}" in first.output, stage
    assert "registered stylerec version 1" in first.output
    assert "registered stylerec-ranker version 1" in first.output
    assert "expected purchases per user: ALS" in first.output and ", ranked " in first.output and ", two-tower " in first.output
    assert first.output.count("spread that benchmarks/quality.py measures") == 2  # after the table and the A/B verdict
    for path in ("datasets/stylemart-tiny/style/gallery.png", "reports/offline-eval-stylemart-tiny.json", "ab/stylemart-tiny-als-vs-two-tower/report/report.html",
                 "ab/stylemart-tiny-als-vs-ranked/report/report.html"):
        assert (tmp_path / "wd" / path).is_file(), path
    second = runner.invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert "re-using stylerec version 1" in second.output
    assert "re-using stylerec-ranker version 1" in second.output
    assert "0 embedded + 240 cached" in second.output
