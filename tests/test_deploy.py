"""Deploy mode: `stylerec train --deploy` and `stylerec rank train --deploy` refit the last
evaluated run on every event up to the end of the data and register under `production`."""

import dataclasses
import datetime as dt
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from pipelines.cli import cli



def _only_in_test(fs):
    """(user rows, item rows) whose every event lies in the test fold."""
    out = []
    for rows in (fs.ev_user, fs.ev_item):
        before = np.unique(rows[fs.ev_fold != "test"])
        out.append(np.setdiff1d(np.unique(rows[fs.ev_fold == "test"]), before))
    return out


def test_fixed_epochs_train_on_every_fold(tiny_features):
    from recsys.model import TwoTowerConfig
    from recsys.train import Trainer, TrainConfig

    seen = []
    cfg = TrainConfig(epochs=9, batch_size=64, val_users=None, max_batches_per_epoch=3)
    trainer = Trainer(tiny_features, TwoTowerConfig(), cfg, on_epoch=seen.append, progress=False)
    trainer.validation_recall = lambda model: pytest.fail("a fixed-epoch run must not validate")
    result = trainer.fit_fixed(2)
    assert len(result.history) == 2 == len(seen) and result.best_epoch == 1  # the given count, not [train] epochs
    assert np.isnan(result.best_val_recall_50) and all(np.isnan(h.val_recall_50) for h in result.history)
    users, items = _only_in_test(tiny_features)
    assert len(users) and len(items)  # the fixture has users and items first seen in the test fold
    assert (result.features.user_index[users] > 0).all() and (result.features.items.id_index[items] > 0).all()
    assert (tiny_features.user_index[users] == 0).all()
    with pytest.raises(ValueError, match="at least one epoch"):
        trainer.fit_fixed(0)


def test_fixed_rounds_ranker_trains_on_windows_ending_at_the_end(tiny_features, monkeypatch):
    from recsys.rank import ranker
    from recsys.rank.config import RankConfig
    from recsys.rank.features import FeatureContext
    from recsys.rank.sources import CandidateGenerator

    fs = tiny_features
    config = RankConfig(sources={"als": 30, "item_cf": 30, "popular": 20}, negatives_per_user=10, als_factors=8, als_iterations=3, windows=3, window_days=7.0)
    gen = CandidateGenerator(fs, config, None)
    ctx = FeatureContext(np.linspace(5.0, 120.0, fs.items.n), als=gen.sources.get("als"))
    windows = []
    real = ranker.window_frame

    def recording(gen, ctx, start, end, negatives, seed):
        windows.append((start, end, negatives))
        return real(gen, ctx, start, end, negatives, seed)

    monkeypatch.setattr(ranker, "window_frame", recording)
    end = int(fs.ev_ts.max()) + 1
    fit = ranker.fit_ranker(gen, ctx, end, rounds=7)
    width = int(7.0 * 86400)
    assert windows == [(end - (3 - k) * width, end - (2 - k) * width, 10) for k in range(3)]  # all train, the last ends at the end
    assert fit.best_iteration == 7 == fit.model.num_trees() and fit.val_rows == 0 and fit.val_curve == [] and np.isnan(fit.val_ndcg_10)
    with pytest.raises(ranker.RankerError, match=">= 1"):
        ranker.fit_ranker(gen, ctx, end, rounds=0)


def test_deploy_without_an_evaluated_run_is_a_one_line_error(make_dataset, tmp_path, mlflow_store):
    root = make_dataset().root
    wd = ["--workdir", str(tmp_path / "wd")]
    result = CliRunner().invoke(cli, [*wd, "train", str(root), "--deploy"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if "mlflow.store" not in line]  # MLflow's own notices of a new store aside
    assert errors == [f"Error: no evaluated run of this dataset and config; run `stylerec train {root}` first (with the same --config and --seed)"]
    result = CliRunner().invoke(cli, [*wd, "train", str(root), "--deploy", "--epochs", "3"])
    assert result.exit_code == 2 and "does not go with --epochs" in result.output
    result = CliRunner().invoke(cli, [*wd, "rank", "train", str(root), "--deploy"])
    assert result.exit_code == 1 and "no evaluated ranking run of this dataset and [rank] config; run `stylerec rank train" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_deploy_end_to_end(tiny_embedded, tmp_path, mlflow_store, fast_configs):
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from data.validate import load_dataset
    from pipelines import tracking

    root = tmp_path / "ds"
    shutil.copytree(tiny_embedded, root)
    train = ["--config", str(fast_configs.train)]
    rank = ["--config", str(fast_configs.rank)]
    runner = CliRunner()
    wd = ["--workdir", str(tmp_path / "wd")]
    client = MlflowClient(mlflow_store)

    # deploy mode needs an evaluated run of the same config
    result = runner.invoke(cli, [*wd, "train", str(root), *train])
    assert result.exit_code == 0 and "champion: moved to it" in result.output, result.output
    evaluated = client.get_run(client.get_model_version_by_alias("stylerec", "champion").tags["run_id"])
    result = runner.invoke(cli, [*wd, "train", str(root), "--deploy", *train, "--seed", "1"])
    assert result.exit_code == 1 and "no evaluated run of this dataset and config" in result.output

    result = runner.invoke(cli, [*wd, "train", str(root), "--deploy", *train])
    assert result.exit_code == 0, result.output
    epochs = int(evaluated.data.metrics["best_epoch"]) + 1
    assert f"for {epochs} epoch(s), the epoch count of evaluated run {evaluated.info.run_id}" in result.output
    assert "a deploy run has no held-out fold" in result.output and "nan" not in result.output.lower()
    assert "registered stylerec version 2; production: moved to it (champion unchanged)" in result.output
    assert str(client.get_model_version_by_alias("stylerec", "champion").version) == "1"
    production = client.get_model_version_by_alias("stylerec", "production")
    assert str(production.version) == "2" and production.tags["stylerec.deploy"] == "true" and production.tags["from_run"] == evaluated.info.run_id
    deployed = client.get_run(production.tags["run_id"])
    assert deployed.data.tags["stylerec.deploy"] == "true"
    assert deployed.data.params["deploy.from_run"] == evaluated.info.run_id and deployed.data.params["deploy.epochs"] == str(epochs)
    assert [m.step for m in client.get_metric_history(deployed.info.run_id, "loss")] == list(range(epochs))
    assert not any(k.startswith(("test_", "val_", "best_val")) for k in deployed.data.metrics)
    # the demo's re-use of a trained model never picks the deploy version
    assert str(tracking.find_trained(production.tags["dataset_fingerprint"], production.tags["config_sha256"]).version) == "1"

    # the deployed model knows users and items seen only in the test fold; the evaluated one does not
    ds = load_dataset(root)
    served = tracking.load_served_model(ds, "models:/stylerec@production")
    champion = tracking.load_served_model(ds, tracking.CHAMPION_URI)
    users, items = _only_in_test(served.fs)
    assert len(users) and len(items)
    assert (served.fs.user_index[users] > 0).all() and (served.fs.items.id_index[items] > 0).all()
    assert (champion.fs.user_index[users] == 0).all() and (champion.fs.items.id_index[items] == 0).all()
    with pytest.raises(tracking.ModelNotFoundError, match="deploy mode"):
        tracking.load_served_model(ds, "models:/stylerec@production", evaluated_only=True)
    model = mlflow.pyfunc.load_model("models:/stylerec@production")
    assert len(model.predict(pd.DataFrame({"user_id": [str(served.fs.user_ids[users[0]])]}), params={"k": 5})) == 5

    # serving defaults to production once it exists
    assert tracking.serving_alias_uri("stylerec") == "models:/stylerec@production"
    assert tracking.serving_alias_uri("stylerec-ranker") == "models:/stylerec-ranker@champion"
    result = runner.invoke(cli, [*wd, "candidates", str(root), "--k", "5", "--out", str(tmp_path / "cand")])
    assert result.exit_code == 0, result.output
    assert "model: models:/stylerec@production" in result.output

    # the ranker: an evaluated run first, then its deploy-mode refit over the deployed two-tower
    result = runner.invoke(cli, [*wd, "rank", "train", str(root), *rank, "--deploy"])
    assert result.exit_code == 1 and "no evaluated ranking run" in result.output
    result = runner.invoke(cli, [*wd, "rank", "train", str(root), *rank])
    assert result.exit_code == 0 and "stylerec-ranker version 1; champion: moved to it" in result.output, result.output
    rank_evaluated = client.get_run(client.get_model_version_by_alias("stylerec-ranker", "champion").tags["run_id"])
    assert rank_evaluated.data.params["two_tower"] == "stylerec/1"  # the evaluated ranker never sees a deploy model
    result = runner.invoke(cli, [*wd, "rank", "train", str(root), *rank, "--deploy", "--model-uri", tracking.CHAMPION_URI])
    assert result.exit_code == 2 and "does not go with --model-uri" in result.output
    result = runner.invoke(cli, [*wd, "rank", "train", str(root), *rank, "--deploy"])
    assert result.exit_code == 0, result.output
    rounds = int(rank_evaluated.data.metrics["best_iteration"])
    assert f"{rounds} rounds: the best iteration of evaluated ranking run {rank_evaluated.info.run_id}; two-tower stylerec/2" in result.output
    assert "registered stylerec-ranker version 2; production: moved to it (champion unchanged)" in result.output
    assert str(client.get_model_version_by_alias("stylerec-ranker", "champion").version) == "1"
    ranker_version = client.get_model_version_by_alias("stylerec-ranker", "production")
    rank_deployed = client.get_run(ranker_version.tags["run_id"])
    end = dt.datetime.fromtimestamp(int(served.fs.ev_ts.max()) + 1, dt.UTC).isoformat()
    assert rank_deployed.data.params["deploy.from_run"] == rank_evaluated.info.run_id and rank_deployed.data.params["deploy.rounds"] == str(rounds)
    assert rank_deployed.data.params["deploy.windows_end"] == end and rank_deployed.data.params["two_tower"] == "stylerec/2"
    boost = float(rank_evaluated.data.metrics["new_item_boost"])  # the evaluated run's new-item boost, like its rounds
    assert float(rank_deployed.data.params["deploy.new_item_boost"]) == boost and float(ranker_version.tags["new_item_boost"]) == boost
    import mlflow.lightgbm

    assert mlflow.lightgbm.load_model("models:/stylerec-ranker@production").num_trees() == rounds
    assert tracking.serving_alias_uri("stylerec-ranker") == "models:/stylerec-ranker@production"


def test_production_missing_for_rank_deploy_is_a_clear_error(tmp_path, mlflow_store, monkeypatch):
    """An evaluated ranking run but no deployed two-tower: say to deploy it first."""
    import click
    from mlflow.tracking import MlflowClient

    from pipelines import rank_job, tracking
    from recsys.rank.config import RankConfig

    class Ds:
        manifest = dataclasses.make_dataclass("M", [("fingerprint", str), ("name", str)])("f" * 64, "tiny")

    config = RankConfig()
    tracking.setup(rank_job.EXPERIMENT)
    import mlflow

    with mlflow.start_run(tags={rank_job.RANK_CONFIG_TAG: config.sha256()}):
        mlflow.log_params({"dataset_manifest_sha256": "f" * 64})
        mlflow.log_metric("best_iteration", 4)
    assert rank_job.last_evaluated_rank_run(MlflowClient(), rank_job.EXPERIMENT, "f" * 64, config.sha256()) is not None
    assert rank_job.last_evaluated_rank_run(MlflowClient(), rank_job.EXPERIMENT, "f" * 64, RankConfig(seed=1).sha256()) is None
    with pytest.raises(click.ClickException, match=r"no deployed two-tower at models:/stylerec@production .*run `stylerec train DS --deploy` first"):
        rank_job.rank_deploy(Ds(), "DS", config, register=True)
