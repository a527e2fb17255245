"""The CLI on faults: one-line errors (tracebacks only with --debug), no folders made by --help."""

import os
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from pipelines.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def _boom_command():
    @click.command("boom")
    def boom():
        raise IndexError("index 3 is out of bounds")

    return boom


def test_uncaught_error_is_one_line_unless_debug(monkeypatch):
    cli.add_command(_boom_command())
    try:
        result = CliRunner().invoke(cli, ["boom"])
        assert result.exit_code == 1
        assert result.output.splitlines()[0] == "Error: IndexError: index 3 is out of bounds"
        assert "--debug" in result.output and "Traceback" not in result.output
        result = CliRunner().invoke(cli, ["--debug", "boom"])
        assert isinstance(result.exception, IndexError)
    finally:
        cli.commands.pop("boom")


def test_help_creates_no_workspace(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("STYLEREC_WORKDIR", None)
    for args in (["--help"], ["train", "--help"], ["ab", "report", "--help"]):
        subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=tmp_path, env=env, capture_output=True, check=True)
    assert list(tmp_path.iterdir()) == []


def _dataset_with_split(make_dataset, tmp_path, **tables):
    root = make_dataset(**tables).root
    result = CliRunner().invoke(cli, ["--workdir", str(tmp_path / "wd"), "data", "split", str(root), "--cutoff", "2026-03-20", "--val-days", "10"])
    assert result.exit_code == 0, result.output
    return root


def _one_line_error(result, *fragments):
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_models_that_are_not_there_are_one_line_errors(make_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    root = _dataset_with_split(make_dataset, tmp_path)
    not_a_model = tmp_path / "folder"
    not_a_model.mkdir()
    wd = ["--workdir", str(tmp_path / "wd")]
    for model, fragment in (("models:/does-not-exist@champion", "not found"), ("models:/stylerec/999", "not found"), (str(not_a_model), "not a model bundle")):
        result = CliRunner().invoke(cli, [*wd, "candidates", str(root), "--model", model, "--out", str(tmp_path / "c")])
        _one_line_error(result, fragment)


def test_candidates_k_is_checked_before_anything_is_written(make_dataset, tmp_path):
    root = make_dataset().root
    for k in ("0", "-5"):
        result = CliRunner().invoke(cli, ["--workdir", str(tmp_path / "wd"), "candidates", str(root), "--k", k, "--out", str(tmp_path / "c")])
        assert result.exit_code == 2 and "--k" in result.output, result.output
    assert not (tmp_path / "c").exists() and not (tmp_path / "wd").exists()


def test_style_embed_without_any_image_is_a_clear_error(make_dataset, tmp_path):
    import polars as pl

    root = make_dataset(items=lambda df: df.with_columns(pl.lit(None, pl.String).alias("image_path"))).root
    result = CliRunner().invoke(cli, ["--workdir", str(tmp_path / "wd"), "style", "embed", str(root)])
    _one_line_error(result, "no item has an image")
    assert not (root / "style").exists()


def test_train_on_an_empty_style_table_is_a_clear_error(make_dataset, tmp_path, monkeypatch):
    import json

    import polars as pl

    from style.embeddings import META_FILE, STYLE_DIR, embeddings_path

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    root = _dataset_with_split(make_dataset, tmp_path)
    embeddings_path(root).parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"item_id": [], "style": []}, schema={"item_id": pl.String, "style": pl.Array(pl.Float32, 100)}).write_parquet(embeddings_path(root))
    (root / STYLE_DIR / META_FILE).write_text(json.dumps({"catalogue_mean": [0.0] * 100, "encoder": "x", "encoder_version": "1"}))
    result = CliRunner().invoke(cli, ["--workdir", str(tmp_path / "wd"), "train", str(root), "--epochs", "1"])
    _one_line_error(result, "style table is empty")
