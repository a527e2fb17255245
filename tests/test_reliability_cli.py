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
