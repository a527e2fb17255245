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
    assert "an empty test fold" in result.output and "empty validation" in result.output and "`stylerec train DATASET --deploy`" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "wd" / "runs").exists()


def test_nan_never_moves_the_champion():
    nan = float("nan")
    assert not tracking.is_better(nan, None)
    assert not tracking.is_better(nan, 0.1)
    assert not tracking.is_better(None, 0.1)
    assert tracking.is_better(0.2, nan)
    assert tracking.is_better(0.2, None)
    assert tracking.is_better(0.2, 0.1) and not tracking.is_better(0.1, 0.2)


def _epochs_on_disk(folder):
    return sorted({p.name.split(".")[0] for p in folder.glob("epoch-*.*")})


def test_checkpoints_are_pruned_to_last_and_best_and_still_resume(tiny_features, tmp_path):
    import dataclasses

    import pytest

    from recsys.config import ConfigError, load_run_config
    from recsys.model import TwoTowerConfig
    from recsys.train import TrainConfig, Trainer

    small = TrainConfig(epochs=3, batch_size=64, patience=5, val_users=None, refit=False, max_batches_per_epoch=2)
    result = Trainer(tiny_features, TwoTowerConfig(), small, checkpoint_dir=tmp_path / "pruned", progress=False).fit()
    kept = {f"epoch-{e:03d}" for e in (2, result.best_epoch)}
    assert _epochs_on_disk(tmp_path / "pruned") == sorted(kept)
    resumed = Trainer(tiny_features, TwoTowerConfig(), dataclasses.replace(small, epochs=4), checkpoint_dir=tmp_path / "pruned", progress=False).fit(resume=True)
    assert len(resumed.history) == 4
    assert "epoch-003" in _epochs_on_disk(tmp_path / "pruned") and len(_epochs_on_disk(tmp_path / "pruned")) <= 2

    Trainer(tiny_features, TwoTowerConfig(), dataclasses.replace(small, keep_checkpoints="all"), checkpoint_dir=tmp_path / "all", progress=False).fit()
    assert _epochs_on_disk(tmp_path / "all") == ["epoch-000", "epoch-001", "epoch-002"]

    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nkeep_checkpoints = "some"\n')
    with pytest.raises(ConfigError, match="keep_checkpoints must be one of"):
        load_run_config(bad)


def _id_only_config(tmp_path):
    path = tmp_path / "id_only.toml"
    path.write_text('[model]\nitem_features = ["item_id"]\nuser_features = ["user_id", "history"]\n[train]\nepochs = 1\nbatch_size = 8\nval_users = 0\nrefit = false\n')
    return path


def test_killed_runs_are_marked_and_a_busy_checkpoint_folder_is_refused(make_dataset, tmp_path, monkeypatch):
    import mlflow

    from data.io import folder_lock
    from recsys.config import load_run_config

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    root = make_dataset().root
    wd = tmp_path / "wd"
    runner = CliRunner()
    assert runner.invoke(cli, ["--workdir", str(wd), "data", "split", str(root), "--cutoff", "2026-03-20", "--val-days", "10"]).exit_code == 0
    config_path = _id_only_config(tmp_path)
    ds = load_dataset(root)
    ckpt = training_run.checkpoint_dir(wd, ds, load_run_config(config_path))

    # a train killed earlier left its run RUNNING
    tracking.setup(tracking.OFFLINE_EVAL)
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_experiment_by_name(tracking.OFFLINE_EVAL).experiment_id
    stale = client.create_run(experiment, tags={tracking.RUN_KEY_TAG: ckpt.name}).info.run_id
    other = client.create_run(experiment, tags={tracking.RUN_KEY_TAG: "another-key"}).info.run_id

    # another live process trains into the same checkpoint folder: refused in one line, nothing touched
    with folder_lock(ckpt, what="stylerec train (another)"):
        result = runner.invoke(cli, ["--workdir", str(wd), "train", str(root), "--config", str(config_path)])
    assert result.exit_code == 1 and "in use by PID" in result.output and "Traceback" not in result.output, result.output
    assert client.get_run(stale).info.status == "RUNNING"

    result = runner.invoke(cli, ["--workdir", str(wd), "train", str(root), "--config", str(config_path)])
    assert result.exit_code == 0, result.output
    assert f"KILLED (left RUNNING by a killed process): {stale}" in result.output
    assert client.get_run(stale).info.status == "KILLED"
    assert client.get_run(other).info.status == "RUNNING"
