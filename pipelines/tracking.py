"""MLflow helpers: the default local store, experiments, the model registry's champion."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_URI = "sqlite:///mlflow/mlflow.db"
ARTIFACTS_DIR = Path("mlflow/artifacts")
MODEL_NAME = "stylerec"
CHAMPION = "champion"
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
    return float(value) if value is not None else None


def register_and_promote(client, model_uri: str, run_id: str, val_recall_50: float, dataset_fingerprint: str, config_sha256: str = "") -> tuple[str, bool]:
    """Register ``model_uri`` as a version of ``stylerec``; move ``champion`` to it only if it
    beats the current champion on validation Recall@50. Returns (version, promoted)."""
    import mlflow

    version = mlflow.register_model(model_uri, MODEL_NAME)
    client.set_model_version_tag(MODEL_NAME, version.version, "val_recall_50", f"{val_recall_50:.6f}")
    client.set_model_version_tag(MODEL_NAME, version.version, "dataset_fingerprint", dataset_fingerprint)
    client.set_model_version_tag(MODEL_NAME, version.version, "run_id", run_id)
    client.set_model_version_tag(MODEL_NAME, version.version, "config_sha256", config_sha256)
    current = champion_score(client)
    promoted = current is None or val_recall_50 > current
    if promoted:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, version.version)
    return str(version.version), promoted


def use_store() -> str:
    """Point MLflow at the configured store without choosing an experiment."""
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    mlflow.set_tracking_uri(uri)
    return uri


def fetch_bundle(model: str) -> tuple[Path, str]:
    """A model bundle folder and its version label, from a folder or an MLflow model URI
    (``models:/stylerec@champion``, ``models:/stylerec/3``, ``runs:/<id>/model``)."""
    import hashlib

    import mlflow
    from mlflow.tracking import MlflowClient

    folder = Path(model)
    if folder.is_dir():
        digest = hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest()[:12]
        return folder, f"bundle-{digest}"
    use_store()
    local = Path(mlflow.artifacts.download_artifacts(f"{model.rstrip('/')}/artifacts/bundle"))
    label = model
    if model.startswith("models:/"):
        name_part = model[len("models:/"):]
        client = MlflowClient()
        if "@" in name_part:
            name, alias = name_part.split("@", 1)
            label = f"{name}/{client.get_model_version_by_alias(name, alias).version}"
        else:
            label = name_part
    return local, label


def find_trained(dataset_fingerprint: str, config_sha256: str):
    """The newest registered version trained on this dataset with this config, or None."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    use_store()
    try:
        versions = MlflowClient().search_model_versions(f"name='{MODEL_NAME}'")
    except MlflowException:
        return None
    matching = [
        v for v in versions
        if v.tags.get("dataset_fingerprint") == dataset_fingerprint and v.tags.get("config_sha256") == config_sha256
    ]
    return max(matching, key=lambda v: int(v.version), default=None)
