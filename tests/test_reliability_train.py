"""Training on faults: checkpoints keyed by the real data, empty folds refused, NaN never promotes."""

import datetime as dt

from click.testing import CliRunner

from data.split import SplitConfig, split_dataset
from data.validate import load_dataset
from pipelines import tracking
from pipelines.cli import cli
from recsys import training_run
from recsys.config import RunConfig


def test_checkpoint_folder_follows_the_data_and_the_split(make_dataset, tmp_path):
    import polars as pl

    config = RunConfig()
    a = load_dataset(make_dataset("a").root)
    split_dataset(a, SplitConfig(cutoff=dt.date(2026, 3, 20), test_fraction=None, val_days=5))
    ckpt_a = training_run.checkpoint_dir(tmp_path, a, config)
    assert training_run.checkpoint_dir(tmp_path, a, config) == ckpt_a
    # the same dataset split again elsewhere: its checkpoints are not the old split's
    split_dataset(a, SplitConfig(cutoff=dt.date(2026, 3, 24), test_fraction=None, val_days=5))
    assert training_run.checkpoint_dir(tmp_path, load_dataset(a.dir.root), config) != ckpt_a
    # another dataset with the same name (the fixture's) but other tables
    b = load_dataset(make_dataset("b", users=lambda df: df.with_columns(pl.col("age") + 1)).root)
    split_dataset(b, SplitConfig(cutoff=dt.date(2026, 3, 20), test_fraction=None, val_days=5))
    assert b.manifest.name == a.manifest.name
    assert training_run.checkpoint_dir(tmp_path, b, config) != ckpt_a


def test_empty_test_fold_is_refused_before_training(make_dataset, tmp_path):
    root = make_dataset().root
    runner = CliRunner()
    wd = ["--workdir", str(tmp_path / "wd")]
    result = runner.invoke(cli, [*wd, "data", "split", str(root), "--cutoff", "2027-01-01"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, [*wd, "train", str(root), "--epochs", "1"])
    assert result.exit_code != 0
    assert "an empty test fold" in result.output and "empty validation" in result.output and "stylerec train --deploy" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "wd" / "runs").exists()


def test_nan_never_moves_the_champion():
    nan = float("nan")
    assert not tracking.is_better(nan, None)
    assert not tracking.is_better(nan, 0.1)
    assert not tracking.is_better(None, 0.1)
    assert tracking.is_better(0.2, nan)
    assert tracking.is_better(0.2, None)
    assert tracking.is_better(0.2, 0.1) and not tracking.is_better(0.1, 0.2)
