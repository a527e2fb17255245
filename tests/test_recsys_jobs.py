"""The train and evaluate jobs end to end, tracked in a real MLflow sqlite store."""

import json
import shutil

import mlflow
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from pipelines.cli import cli


@pytest.mark.slow
def test_train_registers_champion_and_evaluate_compares(tiny_embedded, tmp_path, mlflow_store, fast_configs):
    root = tmp_path / "ds"
    shutil.copytree(tiny_embedded, root)
    config = fast_configs.train
    runner = CliRunner()
    result = runner.invoke(cli, ["--workdir", str(tmp_path / "wd"), "train", str(root), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "registered stylerec version 1; champion: moved to it" in result.output
    assert "mlflow server --backend-store-uri" in result.output

    client = MlflowClient(mlflow_store)
    champion = client.get_model_version_by_alias("stylerec", "champion")
    assert str(champion.version) == "1"
    run = client.get_run(champion.tags["run_id"])
    assert run.data.params["dataset_manifest_sha256"] and run.data.params["train.seed"] == "0"
    assert len(client.get_metric_history(run.info.run_id, "val_recall_50")) == 2
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1]
    assert "test_all_recall_at_50" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plots", "metrics", "embeddings", "config.json"} <= artifacts

    # a second run that does worse on validation is registered but does not take the alias
    client.set_model_version_tag("stylerec", "1", "val_recall_50", "0.99")
    result = runner.invoke(cli, ["--workdir", str(tmp_path / "wd"), "train", str(root), "--config", str(config), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "version 2; champion: unchanged" in result.output
    assert str(client.get_model_version_by_alias("stylerec", "champion").version) == "1"

    # the registered model loads through MLflow's pyfunc interface
    model = mlflow.pyfunc.load_model("models:/stylerec@champion")
    import pandas as pd

    recs = model.predict(pd.DataFrame({"user_id": ["U0000001", "U0000002"]}), params={"k": 5})
    assert len(recs) == 10 and set(recs.columns) == {"user_id", "rank", "item_id"}

    result = runner.invoke(cli, ["--workdir", str(tmp_path / "wd"), "evaluate", str(root), "--config", str(config), "--model-uri", "models:/stylerec@champion", "--no-ranker"])
    assert result.exit_code == 0, result.output
    for name in ("popularity", "popularity-7d", "als", "bpr", "style-knn", "text-knn", "two-tower", "two-tower-id-only"):
        assert f"\n{name} " in result.output
    report = json.loads((tmp_path / "wd" / "reports" / "offline-eval-stylemart-tiny.json").read_text())
    assert report["results"]["als"]["cold_items"]["recall@50"] == 0.0
    experiment = mlflow.get_experiment_by_name("stylerec/offline-eval")
    runs = mlflow.search_runs([experiment.experiment_id], filter_string="tags.mlflow.runName LIKE 'evaluate%'")
    assert len(runs) >= 1 and "metrics.als.all.recall_at_50" in runs.columns


def test_train_refuses_bad_config_before_work(tiny_embedded, tmp_path, mlflow_store):
    config = tmp_path / "bad.toml"
    config.write_text('[model]\nitem_features = ["style", "sparkle"]\n')
    result = CliRunner().invoke(cli, ["train", str(tiny_embedded), "--config", str(config)])
    assert result.exit_code != 0 and "sparkle" in result.output


def test_training_key_covers_config_and_training_code(monkeypatch):
    """A registered model (or checkpoint) is re-used only for the same config *and* code."""
    from recsys import training_run as train_job
    from recsys.config import RunConfig
    from recsys.model import TwoTowerConfig

    base = train_job.config_sha256(RunConfig())
    assert train_job.config_sha256(RunConfig()) == base
    assert train_job.config_sha256(RunConfig(model=TwoTowerConfig(dim=32))) != base
    monkeypatch.setattr(train_job, "training_code_sha256", lambda: "0" * 64)  # stands for edited model code
    assert train_job.config_sha256(RunConfig()) != base
