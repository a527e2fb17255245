"""The registered ranker in MLflow: load one for serving a dataset (its LightGBM booster,
the ``RankConfig`` logged with its run, the two-tower version it was trained over), and find
one trained on a dataset with a config over a two-tower (the demo re-uses it)."""

from __future__ import annotations

import click

from pipelines import tracking
from recsys.rank.config import RankConfigError, load_rank_config
from recsys.rank.ranker import NEW_ITEM_BOOST

CODE_TAG = "code_sha256"  # a registered ranker's training code (recsys.training_run.ranking_code_sha256)
CONFIG_ARTIFACT = "rank_config.json"  # the RankConfig of a ranker's run (rank_job logs it)
# settings added after rankers were registered, read from a config that lacks them as those
# rankers were trained: item-CF kept every neighbour (more than any catalogue holds)
TRAINED_WITHOUT = {"item_cf_neighbours": 2**31 - 1}
TRAIN_FIRST = "run `stylerec rank train DATASET` first"


def _version(client, uri: str):
    """The model version a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI names."""
    from mlflow.exceptions import MlflowException

    if not uri.startswith("models:/"):
        raise click.ClickException(f"ranker {uri!r}: expected a registered ranker, {tracking.RANKER_CHAMPION_URI} or models:/{tracking.RANKER_NAME}/VERSION")
    name_part = uri[len("models:/"):].rstrip("/")
    try:
        if "@" in name_part:
            name, alias = name_part.split("@", 1)
            return client.get_model_version_by_alias(name, alias)
        name, _, version = name_part.partition("/")
        return client.get_model_version(name, version)
    except MlflowException as exc:
        raise click.ClickException(f"no ranker registered at {uri} in the MLflow store {tracking.use_store()}; {TRAIN_FIRST}") from exc


def two_tower_uri(label: str) -> str | None:
    """The URI of the two-tower a ranker's ``two_tower`` tag names (``stylerec/3``); None for a
    bundle folder's label, which the registry cannot load."""
    if label.startswith(("models:/", "runs:/")):
        return label
    if not label or label.startswith("bundle-"):
        return None
    return f"models:/{label}"


def logged_config(raw: dict):
    """The ``RankConfig`` of a ranker's logged ``rank_config.json``, a setting it lacks read
    as the ranker was trained (``TRAINED_WITHOUT``), not as today's default."""
    return load_rank_config(None, {**TRAINED_WITHOUT, **raw})


def load_ranker(ds, uri: str = tracking.RANKER_CHAMPION_URI):
    """The registered ranker at ``uri`` rebuilt for serving ``ds`` (recsys.rank.serving.ServedRanker);
    a missing ranker, config or two-tower is a one-line ClickException."""
    import mlflow
    import mlflow.lightgbm
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from recsys.rank.serving import served_ranker

    tracking.use_store()
    mv = _version(MlflowClient(), uri)
    label = f"{mv.name}/{mv.version}"
    run_id, tt_label = mv.tags.get("run_id"), mv.tags.get("two_tower", "")
    try:
        raw = mlflow.artifacts.load_dict(f"runs:/{run_id}/{CONFIG_ARTIFACT}")
        config = logged_config(raw)
    except (MlflowException, OSError, RankConfigError) as exc:
        raise click.ClickException(f"ranker {label}: no usable {CONFIG_ARTIFACT} in its run {run_id} ({' '.join(str(exc).split())[:160]}); {TRAIN_FIRST} again") from exc
    tt_uri = two_tower_uri(tt_label)
    if tt_uri is None:
        raise click.ClickException(f"ranker {label} was trained over the two-tower {tt_label or '(unknown)'}, which is not in the model registry; {TRAIN_FIRST} again with a registered two-tower")
    try:
        lm = tracking.load_served_model(ds, tt_uri)
    except (MlflowException, tracking.ModelNotFoundError) as exc:
        raise click.ClickException(f"ranker {label}: its two-tower {tt_uri} is missing ({' '.join(str(exc).split())[:160]}); {TRAIN_FIRST} again over a registered two-tower") from exc
    try:
        booster = mlflow.lightgbm.load_model(f"models:/{mv.name}/{mv.version}")
    except (MlflowException, OSError) as exc:
        raise click.ClickException(f"ranker {label}: its LightGBM model cannot be loaded ({' '.join(str(exc).split())[:160]}); {TRAIN_FIRST} again") from exc
    # rankers registered before the boost existed have no tag: no boost, as they were trained
    boost = float(mv.tags.get(NEW_ITEM_BOOST, "0") or 0)
    return served_ranker(ds, config, booster, list(booster.feature_name()), lm, label, new_item_boost=boost)


def find_ranker(dataset_fingerprint: str, config_sha256: str, two_tower_version: str):
    """The newest registered ranker trained on this dataset with this config over this
    two-tower version (``stylerec/3``) by this code (tag ``CODE_TAG``), or None."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from recsys.training_run import ranking_code_sha256

    tracking.use_store()
    try:
        versions = MlflowClient().search_model_versions(f"name='{tracking.RANKER_NAME}'")
    except MlflowException:
        return None
    # and trained by this code: a ranker of older code is not what this code would train
    want = {"dataset_fingerprint": dataset_fingerprint, "config_sha256": config_sha256, "two_tower": two_tower_version, CODE_TAG: ranking_code_sha256()}
    # an evaluated ranker only: a deploy-mode version (alias production) is not the demo's to re-use
    matching = [v for v in versions if all(v.tags.get(k) == value for k, value in want.items()) and v.tags.get(tracking.DEPLOY_TAG) != "true"]
    return max(matching, key=lambda v: int(v.version), default=None)
