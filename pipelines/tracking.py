"""MLflow helpers: the default local store, experiments, the model registry's champion."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click

DEFAULT_URI = "sqlite:///mlflow/mlflow.db"
ARTIFACTS_DIR = Path("mlflow/artifacts")
MODEL_NAME = "stylerec"
CHAMPION = "champion"
CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION}"  # the best evaluated model (validation score)
PRODUCTION = "production"  # the deploy-mode refit of an evaluated run on every event (`train --deploy`)
PRODUCTION_URI = f"models:/{MODEL_NAME}@{PRODUCTION}"
DEPLOY_TAG = "stylerec.deploy"  # "true" on deploy-mode runs and model versions
OFFLINE_EVAL = "stylerec/offline-eval"


def setup(experiment: str) -> str:
    """Point MLflow at ``MLFLOW_TRACKING_URI`` (default: the sqlite store in mlflow/) and
    select ``experiment``; artifacts of the default store live beside it in mlflow/artifacts."""
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri == DEFAULT_URI:
        Path("mlflow").mkdir(exist_ok=True)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        location = ARTIFACTS_DIR.resolve().as_uri() if uri == DEFAULT_URI else None
        mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    return uri


def ui_hint(uri: str) -> str:
    if uri.startswith("sqlite:"):
        return f"mlflow server --backend-store-uri {uri} --host 127.0.0.1  (then open http://127.0.0.1:5000)"
    return f"open the MLflow UI of {uri}"


def champion_score(client, metric: str = "val_recall_50") -> float | None:
    """The champion's validation score, or None when there is no champion yet."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except MlflowException:
        return None
    value = version.tags.get(metric)
    try:
        return float(value) if value is not None else None
    except ValueError:  # a hand-edited tag
        return None


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def is_better(score: float | None, champion: float | None) -> bool:
    """Whether ``score`` should take the champion alias from ``champion``'s: a NaN or
    missing score never does; a NaN or missing champion score is beaten by any real one."""
    if not _finite(score):
        return False
    return not _finite(champion) or score > champion


def register_and_promote(
    client, model_uri: str, run_id: str, val_recall_50: float, dataset_fingerprint: str, config_sha256: str = "", split: str = "",
) -> tuple[str, bool]:
    """Register ``model_uri`` as a version of ``stylerec`` (tags: its dataset, run key and
    ``split`` identity); move ``champion`` to it only if it beats the current champion on
    validation Recall@50. Returns (version, promoted)."""
    import mlflow

    version = mlflow.register_model(model_uri, MODEL_NAME)
    client.set_model_version_tag(MODEL_NAME, version.version, "val_recall_50", f"{val_recall_50:.6f}")
    client.set_model_version_tag(MODEL_NAME, version.version, "dataset_fingerprint", dataset_fingerprint)
    client.set_model_version_tag(MODEL_NAME, version.version, "run_id", run_id)
    client.set_model_version_tag(MODEL_NAME, version.version, "config_sha256", config_sha256)
    client.set_model_version_tag(MODEL_NAME, version.version, SPLIT_TAG, split)
    current = champion_score(client)
    promoted = is_better(val_recall_50, current)
    if promoted:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, version.version)
    return str(version.version), promoted


def use_store() -> str:
    """Point MLflow at the configured store without choosing an experiment."""
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    mlflow.set_tracking_uri(uri)
    return uri


class ModelNotFoundError(Exception):
    """A --model that names no model: the CLI reports it in one line."""


def fetch_bundle(model: str) -> tuple[Path, str]:
    """A model bundle folder and its version label, from a folder or an MLflow model URI
    (``CHAMPION_URI``, ``models:/stylerec/3``, ``runs:/<id>/model``); a model that is not
    there raises :class:`ModelNotFoundError` with what to do."""
    import hashlib

    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    folder = Path(model)
    if folder.is_dir():
        weights = folder / "weights.safetensors"
        if not weights.is_file():
            raise ModelNotFoundError(f"{folder} is not a model bundle folder (no {weights.name}); give a bundle folder or an MLflow model URI such as {CHAMPION_URI}")
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
        return folder, f"bundle-{digest}"
    if not model.startswith(("models:/", "runs:/")):
        raise ModelNotFoundError(f"--model {model!r}: no such folder, and not an MLflow model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model)")
    uri = use_store()
    label = model
    try:
        if model.startswith("models:/"):
            name_part = model[len("models:/"):]
            client = MlflowClient()
            if "@" in name_part:
                name, alias = name_part.split("@", 1)
                label = f"{name}/{client.get_model_version_by_alias(name, alias).version}"
            else:
                name, _, version = name_part.partition("/")
                client.get_model_version(name, version)
                label = name_part
        local = Path(mlflow.artifacts.download_artifacts(f"{model.rstrip('/')}/artifacts/bundle"))
    except (MlflowException, OSError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise ModelNotFoundError(f"--model {model}: not found in the MLflow store {uri} ({first}); train one with `stylerec train`, or list versions in the MLflow UI") from exc
    return local, label


def serving_alias_uri(name: str = MODEL_NAME) -> str:
    """``models:/<name>@production`` when that alias exists in the store, else
    ``models:/<name>@champion``: what serving jobs use by default."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    use_store()
    try:
        MlflowClient().get_model_version_by_alias(name, PRODUCTION)
    except MlflowException:
        return f"models:/{name}@{CHAMPION}"
    return f"models:/{name}@{PRODUCTION}"


def load_served_model(ds, model: str, allow_new_items: bool = False, evaluated_only: bool = False):
    """A registered model (URI) or bundle folder, loaded for serving ``ds`` (recsys.serving.LoadedModel).
    ``evaluated_only`` refuses a deploy-mode model (its training saw the test fold)."""
    from recsys.bundle import is_deploy, read_bundle_config
    from recsys.serving import load_model

    folder, version = fetch_bundle(model)
    if evaluated_only and is_deploy(read_bundle_config(folder)):
        raise ModelNotFoundError(
            f"{model} ({version}) was trained in deploy mode, on the test fold too, so it cannot be scored on it; "
            f"use an evaluated model such as {CHAMPION_URI}"
        )
    return load_model(folder, version, ds, allow_new_items)


def served_run_config(model_uri: str):
    """The ``recsys.config.RunConfig`` the two-tower at ``model_uri`` was trained with (its bundle keeps it; None
    for a bundle without one): the windows' own two-tower is trained the same way."""
    from recsys.bundle import read_bundle_config
    from recsys.config import load_run_config

    saved = read_bundle_config(fetch_bundle(model_uri)[0]).get("config")
    return load_run_config(None, saved) if saved else None


def find_trained(dataset_fingerprint: str, config_sha256: str, split: str | None = None):
    """The newest registered version trained on this dataset with this config (and, when
    given, on this ``split``: recsys.training_run.split_identity), or None."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    use_store()
    try:
        versions = MlflowClient().search_model_versions(f"name='{MODEL_NAME}'")
    except MlflowException:
        return None
    matching = [
        v for v in versions
        if v.tags.get("dataset_fingerprint") == dataset_fingerprint and v.tags.get("config_sha256") == config_sha256 and v.tags.get(DEPLOY_TAG) != "true"
        and (split is None or v.tags.get(SPLIT_TAG) == split)
    ]
    return max(matching, key=lambda v: int(v.version), default=None)


# -- a tracked training run ------------------------------------------------------------


@dataclass
class TrainOutcome:
    run_id: str
    result: object  # recsys.train.TrainResult
    test: dict
    version: str | None
    promoted: bool
    tracking_uri: str


def _log_run_params(ds, config, fs, resume: bool, run_params: dict | None) -> None:
    import mlflow

    mlflow.log_params(config.flat_params())
    split_json = fs.split.to_json()
    mlflow.log_params({
        "job": "train",
        "seed": config.train.seed,
        "dataset": ds.manifest.name,
        "dataset_manifest_sha256": ds.manifest.fingerprint,
        "split": json.dumps(split_json["config"], default=str),
        "split_test_start": split_json["test_start"],
        "resume": resume,
        **(run_params or {}),
    })


def _log_epoch(log) -> None:
    import mlflow

    mlflow.log_metrics({"loss": log.loss, "val_recall_50": log.val_recall_50, "examples_per_s": log.examples_per_s, "epoch_seconds": log.seconds}, step=log.epoch)


def _log_test_metrics(result, test: dict) -> None:
    import mlflow

    from recsys.evaluate import results_table
    from recsys.reporting import recall_by_slice_figure, training_curve

    mlflow.log_metrics({f"test_{sl}_{m.replace('@', '_at_')}": v for sl, values in test.items() for m, v in values.items() if m != "users"})
    mlflow.log_param("eval_mask_seen", True)
    mlflow.log_table(results_table({"two-tower": test}).to_pandas(), artifact_file="metrics/test_metrics.json")
    mlflow.log_figure(training_curve(result.history), "plots/training_curve.png")
    mlflow.log_figure(recall_by_slice_figure({"two-tower": test}), "plots/recall_by_slice.png")


DEFAULT_K = 10  # items per user the pyfunc model returns unless params say otherwise


def model_signature():
    """The pyfunc model's signature: user ids in; (user_id, rank, item_id) rows out; param k."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "user_id")]),
        outputs=Schema([ColSpec("string", "user_id"), ColSpec("long", "rank"), ColSpec("string", "item_id")]),
        params=ParamSchema([ParamSpec("k", "long", DEFAULT_K)]),
    )


def _log_model(result, ds, config, run_id: str, deploy: bool = False):
    """Log the model files and the pyfunc model (with its signature and an input example:
    a real user, so MLflow's check of the example runs the model)."""
    import mlflow
    import pandas as pd

    from recsys.training_run import write_model_files

    with tempfile.TemporaryDirectory() as tmp:
        files = write_model_files(Path(tmp), result, ds, config, run_id, deploy=deploy)
        mlflow.log_artifact(str(files.item_embeddings), "embeddings")
        mlflow.log_artifact(str(files.config))
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("mlflow_model.py")),
            artifacts={"bundle": str(files.bundle)},
            signature=model_signature(),
            input_example=(pd.DataFrame({"user_id": [str(result.features.user_ids[0])]}), {"k": DEFAULT_K}),
        )


SPLIT_TAG = "split"  # a registered version's split (recsys.training_run.split_identity)
RUN_KEY_TAG = "stylerec.run_key"  # the checkpoint folder's name: one dataset + split + config


def mark_stale_runs_killed(client, key: str) -> list[str]:
    """Mark the RUNNING training runs tagged with ``key`` KILLED (MLflow's status for a run
    whose process died); call it holding the checkpoint folder's lock, so none is alive.
    Returns their run ids."""
    experiment = client.get_experiment_by_name(OFFLINE_EVAL)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}' and attributes.status = 'RUNNING'")
    for r in runs:
        client.set_terminated(r.info.run_id, status="KILLED")
    return [r.info.run_id for r in runs]


def train_and_track(
    ds, config, workdir: Path, resume: bool = False, progress: bool = True, register: bool = True,
    make_trainer=None, is_main: bool = True, run_params: dict | None = None,
) -> TrainOutcome | None:
    """Train, evaluate on the test fold, log to MLflow and register.

    ``make_trainer(fs, checkpoint_dir, on_epoch)`` builds the trainer (default: one
    process). Under torchrun every rank calls this; only the main rank (``is_main``)
    touches MLflow, evaluates and registers, the others train and return None."""
    import mlflow

    from recsys.training_run import checkpoint_dir, evaluate_on_test, features_for, run_key, single_process_trainer, split_identity

    fs = features_for(ds, config)
    ckpt = checkpoint_dir(workdir, ds, config, fs.split)
    make_trainer = make_trainer or single_process_trainer(config, progress)
    if not is_main:
        make_trainer(fs, ckpt, None).fit(resume=resume)
        return None

    from data.io import folder_lock

    # one training run per checkpoint folder; holding its lock, any RUNNING run of this key is a killed one
    with folder_lock(ckpt, what=f"stylerec train {ds.manifest.name}"):
        uri = setup(OFFLINE_EVAL)
        stale = mark_stale_runs_killed(mlflow.tracking.MlflowClient(), ckpt.name)
        if stale:
            click.echo(f"marked {len(stale)} earlier MLflow run(s) of this training KILLED (left RUNNING by a killed process): {', '.join(stale)}")
        with mlflow.start_run(run_name=f"train-{ds.manifest.name}", tags={RUN_KEY_TAG: ckpt.name}) as run:
            _log_run_params(ds, config, fs, resume, run_params)
            trainer = make_trainer(fs, ckpt, _log_epoch)
            started = time.perf_counter()
            result = trainer.fit(resume=resume)
            mlflow.log_metrics({"best_val_recall_50": result.best_val_recall_50, "best_epoch": result.best_epoch, "train_seconds": time.perf_counter() - started})
            test = evaluate_on_test(result, ds)
            _log_test_metrics(result, test)
            info = _log_model(result, ds, config, run.info.run_id)
            version, promoted = None, False
            if register:
                version, promoted = register_and_promote(
                    mlflow.tracking.MlflowClient(), info.model_uri, run.info.run_id, result.best_val_recall_50, ds.manifest.fingerprint, run_key(ds, config),
                    split_identity(fs.split),
                )
                mlflow.set_tags({"registered_version": version, "champion": str(promoted)})
    return TrainOutcome(run.info.run_id, result, test, version, promoted, uri)


def format_outcome(out: TrainOutcome) -> str:
    from recsys.reporting import format_metrics

    r = out.result
    lines = [
        f"best epoch {r.best_epoch} (validation Recall@50 {r.best_val_recall_50:.4f}); {len(r.history)} epochs run",
        format_metrics({"two-tower": out.test}),
        f"MLflow run {out.run_id} in {out.tracking_uri}",
    ]
    if out.version:
        lines.append(f"registered {MODEL_NAME} version {out.version}; champion: {'moved to it' if out.promoted else 'unchanged'}")
    lines.append(f"UI: {ui_hint(out.tracking_uri)}")
    return "\n".join(lines)


# -- deploy mode: refit an evaluated run on every event -----------------------------------


class DeployError(Exception):
    """A deploy-mode run that cannot start (no evaluated run to take its settings from)."""


def no_evaluated_run(dataset: str) -> str:
    return f"no evaluated run of this dataset and config; run `stylerec train {dataset}` first (with the same --config and --seed)"


def last_evaluated_run(client, key: str):
    """The newest FINISHED evaluated training run (not a deploy-mode one) tagged with the run
    key ``key`` (dataset + split + config), or None."""
    experiment = client.get_experiment_by_name(OFFLINE_EVAL)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    return next((r for r in runs if r.data.tags.get(DEPLOY_TAG) != "true" and "best_epoch" in r.data.metrics), None)


@dataclass
class DeployOutcome:
    run_id: str
    source_run_id: str
    epochs: int
    result: object  # recsys.train.TrainResult (no validation score)
    trained_until: str  # the last event's time (ISO)
    version: str | None
    tracking_uri: str


def _log_deploy_epoch(log) -> None:
    import mlflow

    mlflow.log_metrics({"loss": log.loss, "examples_per_s": log.examples_per_s, "epoch_seconds": log.seconds}, step=log.epoch)


def register_production(client, model_uri: str, name: str, tags: dict[str, str]) -> str:
    """Register ``model_uri`` as a version of ``name`` tagged as a deploy-mode model and move
    ``production`` to it (``champion``, the evaluated models' alias, is left alone)."""
    import mlflow

    version = mlflow.register_model(model_uri, name)
    for key, value in {DEPLOY_TAG: "true", **tags}.items():
        client.set_model_version_tag(name, version.version, key, str(value))
    client.set_registered_model_alias(name, PRODUCTION, version.version)
    return str(version.version)


def deploy_and_track(ds, config, workdir: Path, progress: bool = True, register: bool = True, dataset_arg: str | None = None) -> DeployOutcome:
    """Deploy mode: take the epoch count of the last evaluated run of this dataset, split and
    config, retrain from scratch on every event up to the end of the data for that many
    epochs, log the run (no validation or test metrics: nothing is held out) and register it
    under ``production``. ``dataset_arg``: the dataset as the user named it (for messages)."""
    import datetime as dt

    import mlflow

    from data.io import folder_lock
    from recsys.training_run import checkpoint_dir, features_for, run_key, single_process_trainer

    key = checkpoint_dir(workdir, ds, config).name
    uri = setup(OFFLINE_EVAL)
    client = mlflow.tracking.MlflowClient()
    source = last_evaluated_run(client, key)
    if source is None:
        raise DeployError(no_evaluated_run(dataset_arg or ds.manifest.name))
    epochs = int(source.data.metrics["best_epoch"]) + 1
    if epochs < 1:
        raise DeployError(f"evaluated run {source.info.run_id} chose no epoch (its validation Recall@50 was never a number); fix that run first")
    fs = features_for(ds, config, deploy=True)
    until = dt.datetime.fromtimestamp(int(fs.ev_ts.max()), dt.UTC).isoformat()
    ckpt = workdir / "runs" / ds.manifest.name / f"{key}-deploy"
    with folder_lock(ckpt, what=f"stylerec train {ds.manifest.name} --deploy"):
        stale = mark_stale_runs_killed(client, ckpt.name)
        if stale:
            click.echo(f"marked {len(stale)} earlier MLflow run(s) of this deploy KILLED (left RUNNING by a killed process): {', '.join(stale)}")
        with mlflow.start_run(run_name=f"deploy-{ds.manifest.name}", tags={RUN_KEY_TAG: ckpt.name, DEPLOY_TAG: "true"}) as run:
            _log_run_params(ds, config, fs, False, {"job": "train-deploy", "deploy.from_run": source.info.run_id, "deploy.epochs": epochs, "deploy.trained_until": until})
            started = time.perf_counter()
            result = single_process_trainer(config, progress)(fs, ckpt, _log_deploy_epoch).fit_fixed(epochs)
            trained = result.features
            mlflow.log_metrics({"train_seconds": time.perf_counter() - started, "vocab_users": int(trained.user_index.max()), "vocab_items": int(trained.items.id_index.max())})
            info = _log_model(result, ds, config, run.info.run_id, deploy=True)
            version = None
            if register:
                version = register_production(client, info.model_uri, MODEL_NAME, {
                    "run_id": run.info.run_id, "dataset_fingerprint": ds.manifest.fingerprint, "config_sha256": run_key(ds, config),
                    "from_run": source.info.run_id, "epochs": epochs,
                })
                mlflow.set_tags({"registered_version": version, PRODUCTION: "True"})
    return DeployOutcome(run.info.run_id, source.info.run_id, epochs, result, until, version, uri)


def format_deploy_outcome(out: DeployOutcome) -> str:
    fs = out.result.features
    lines = [
        f"deploy mode: trained on every event up to {out.trained_until} (train + validation + test folds; "
        f"{int(fs.user_index.max()):,} users and {int(fs.items.id_index.max()):,} items with ids) for {out.epochs} epoch(s), "
        f"the epoch count of evaluated run {out.source_run_id}",
        "a deploy run has no held-out fold: no validation or test metrics (the evaluated run's metrics are its estimate)",
        f"MLflow run {out.run_id} in {out.tracking_uri}",
    ]
    if out.version:
        lines.append(f"registered {MODEL_NAME} version {out.version}; {PRODUCTION}: moved to it ({CHAMPION} unchanged)")
    lines.append(f"UI: {ui_hint(out.tracking_uri)}")
    return "\n".join(lines)


# -- A/B reports -----------------------------------------------------------------------

AB_EXPERIMENT = "ab-reports"


def log_ab_report(report: dict, json_path: Path, html_path: Path) -> str:
    """Log an A/B report to MLflow; returns "<run id> (<tracking uri>)"."""
    import mlflow

    uri = setup(AB_EXPERIMENT)
    with mlflow.start_run(run_name="ab-report") as run:
        mlflow.log_params({"control": report["arms"]["control"], "treatments": ",".join(report["arms"]["treatments"]), "alpha": report["alpha"]})
        mlflow.log_metrics({"srm_p_value": report["srm"]["p_value"], "srm_flagged": float(report["srm"]["flagged"])})
        for metric, arms in report["metrics"].items():
            for arm, b in arms.items():
                mlflow.log_metrics({f"{metric}.{arm}.rel_lift": b["rel_lift"]["estimate"], f"{metric}.{arm}.p_value_adjusted": b["p_value_adjusted"], f"{metric}.{arm}.chance_to_win": b["chance_to_win"]})
        mlflow.log_artifact(str(json_path))
        mlflow.log_artifact(str(html_path))
        mlflow.set_tag("verdict", report["verdict"][:250])
    return f"{run.info.run_id} ({uri})"


# -- candidate jobs --------------------------------------------------------------------

CANDIDATES_EXPERIMENT = "stylerec/candidates"


def log_candidates(dataset_name: str, params: dict, summary: dict) -> str:
    """Log a candidate job's parameters and its summary's numbers; returns the tracking URI."""
    import mlflow

    uri = setup(CANDIDATES_EXPERIMENT)
    with mlflow.start_run(run_name=f"candidates-{dataset_name}"):
        mlflow.log_params(params)
        mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return uri


# -- the ranker's registry name (pipelines/ranker_store.py loads it) ----------------------

RANKER_NAME = "stylerec-ranker"
RANKER_CHAMPION_URI = f"models:/{RANKER_NAME}@{CHAMPION}"  # the default ranker of every serving job
