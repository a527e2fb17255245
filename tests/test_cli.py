from __future__ import annotations

import re
import subprocess
import sys

from click.testing import CliRunner

from pipelines.cli import cli


def test_help_lists_the_jobs():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "--help"], capture_output=True, text=True, check=True).stdout
    listed = out.split("Commands:")[1]
    for job in ("data", "style", "train", "evaluate", "index", "candidates", "ab", "demo"):
        assert re.search(rf"^  {job} ", listed, re.MULTILINE), job
    data_help = CliRunner().invoke(cli, ["data", "--help"]).output
    for job in ("synth", "validate", "split", "summary", "import-hm"):
        assert job in data_help


def test_synth_validate_split_summary(tmp_path):
    runner = CliRunner()
    env = {"STYLEREC_WORKDIR": str(tmp_path / "wd")}
    result = runner.invoke(cli, ["data", "synth", "--preset", "tiny", "--seed", "1", "--no-images"], env=env)
    assert result.exit_code == 0, result.output
    ds = tmp_path / "wd" / "datasets" / "stylemart-tiny"
    assert (ds / "manifest.json").is_file() and not (ds / "images").exists()
    result = runner.invoke(cli, ["data", "validate", "stylemart-tiny"], env=env)
    assert result.exit_code == 0, result.output
    assert "interactions" in result.output and "quarantined" in result.output
    result = runner.invoke(cli, ["data", "split", "stylemart-tiny", "--cutoff", "2026-06-01", "--val-days", "5"], env=env)
    assert result.exit_code == 0, result.output
    assert "test from 2026-06-01" in result.output
    result = runner.invoke(cli, ["data", "summary", str(ds)], env=env)
    assert result.exit_code == 0 and "cold items" in result.output


def test_missing_dataset_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["--workdir", str(tmp_path), "data", "validate", "nope"])
    assert result.exit_code != 0
    assert "does not exist" in result.output
