"""`stylerec rank train`: the multi-source ranking stage on top of the registered two-tower,
tracked in MLflow and registered as ``stylerec-ranker``."""

from __future__ import annotations

import click

from data.dataset import DatasetError
from pipelines import tracking
from pipelines.common import load_ds
from recsys.evaluate import load_ground_truth
from recsys.rank.config import RankConfigError, load_rank_config
from recsys.rank.ranker import RankerError
from recsys.rank.run import ABLATIONS, format_recall, format_test, importance_figure, run_ranking

EXPERIMENT = "stylerec/ranking"
RANKER_NAME = "stylerec-ranker"
METRIC_TAG = "val_ndcg_10"


def _two_tower(ds, model_uri: str):
    from mlflow.exceptions import MlflowException

    try:
        return tracking.load_served_model(ds, model_uri)
    except (MlflowException, tracking.ModelNotFoundError) as exc:
        raise click.ClickException(f"no two-tower model at {model_uri} ({str(exc).splitlines()[0][:200]}); run `stylerec train` on this dataset first") from exc


def _register(client, model_uri: str, run_id: str, val_ndcg: float, fingerprint: str, two_tower_version: str) -> tuple[str, bool]:
    """Register the ranker; move ``champion`` to it only on a better validation NDCG@10."""
    import mlflow
    from mlflow.exceptions import MlflowException

    version = mlflow.register_model(model_uri, RANKER_NAME)
    for key, value in ((METRIC_TAG, f"{val_ndcg:.6f}"), ("run_id", run_id), ("dataset_fingerprint", fingerprint), ("two_tower", two_tower_version)):
        client.set_model_version_tag(RANKER_NAME, version.version, key, value)
    try:
        current = float(client.get_model_version_by_alias(RANKER_NAME, tracking.CHAMPION).tags.get(METRIC_TAG, "nan"))
    except MlflowException:
        current = None
    # a NaN score never wins, and any real score beats a champion without one
    promoted = val_ndcg == val_ndcg and (current is None or current != current or val_ndcg > current)
    if promoted:
        client.set_registered_model_alias(RANKER_NAME, tracking.CHAMPION, version.version)
    return str(version.version), promoted


def _slug(model: str) -> str:
    """A model name as MLflow allows it in a metric key ("multi-source + ranker" -> "multi-source_plus_ranker")."""
    return model.replace(" + ", "_plus_").replace(" ", "_")


def _log(result, ds, config, lm) -> str:
    """Params, the validation curve, recall and test metrics, the importance plot and the
    model (LightGBM flavour); returns the logged model's URI."""
    import mlflow

    fit = result.fit
    mlflow.log_params({"job": "rank-train", "dataset": ds.manifest.name, "dataset_manifest_sha256": ds.manifest.fingerprint, "two_tower": lm.version, "features": ",".join(fit.features)[:6000], **config.flat_params()})
    for step, value in enumerate(fit.val_curve, start=1):
        mlflow.log_metric("val_ndcg_10", value, step=step)
    mlflow.log_metrics({"best_val_ndcg_10": fit.val_ndcg_10, "best_iteration": fit.best_iteration, "train_rows": fit.train_rows, "val_rows": fit.val_rows})
    mlflow.log_metrics({f"{_slug(m)}.best_val_ndcg_10": f.val_ndcg_10 for m, f in result.variants.items() if f.val_ndcg_10 == f.val_ndcg_10})
    mlflow.log_metrics({f"retrieval_recall.{t}.{s}": v for t, by in result.recall.items() for s, v in by.items() if v == v})
    mlflow.log_metrics({f"{_slug(m)}.{sl}.{k.replace('@', '_at_')}": v for m, slices in result.test.items() for sl, vals in slices.items() for k, v in vals.items() if k in ("recall@10", "ndcg@10", "recall@50", "ndcg@50")})
    mlflow.log_dict({"importance_gain": fit.importance, "retrieval_recall": result.recall}, "ranker.json")
    if config.model == "dcn":  # the network (normaliser in its buffers), pytorch flavour pickled (pt2 would need an input example to trace)
        return mlflow.pytorch.log_model(fit.model.net, name="model", serialization_format="pickle").model_uri
    mlflow.log_figure(importance_figure(fit), "plots/feature_importance.png")
    return mlflow.lightgbm.log_model(fit.model, name="model").model_uri


@click.group("rank")
def rank_group() -> None:
    """The ranking stage: several candidate sources re-ordered by a LightGBM (or DCN-v2) ranker."""


@rank_group.command("train")
@click.argument("dataset")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None, help="TOML with a [rank] section (recsys/rank/config.py)")
@click.option("--model-uri", default=tracking.CHAMPION_URI, show_default=True, help="the two-tower model used as a source and a feature")
@click.option("--ablations", is_flag=True, help=f"also train and score: {', '.join(ABLATIONS)}")
@click.option("--register/--no-register", default=True, show_default=True, help=f"register the ranker as {RANKER_NAME}")
@click.pass_context
def rank_train(ctx, dataset, config_path, model_uri, ablations, register):
    """Train the ranker on DATASET over the candidates of every source, score it on the test
    fold beside ALS and the two-tower, log it to MLflow and register it."""
    import mlflow

    try:
        config = load_rank_config(config_path)
    except RankConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    ds = load_ds(ctx, dataset)
    try:
        lm = _two_tower(ds, model_uri)
        uri = tracking.setup(EXPERIMENT)
        with mlflow.start_run(run_name=f"rank-{ds.manifest.name}") as run:
            result = run_ranking(ds, lm.fs, config, lm.recommender, load_ground_truth(lm.fs, ds.dir.root), ablations=ABLATIONS if ablations else (), echo=click.echo)
            model_uri_logged = _log(result, ds, config, lm)
            version, promoted = None, False
            if register:
                version, promoted = _register(mlflow.tracking.MlflowClient(), model_uri_logged, run.info.run_id, result.fit.val_ndcg_10, ds.manifest.fingerprint, lm.version)
                mlflow.set_tags({"registered_version": version, "champion": str(promoted)})
    except (DatasetError, RankerError, RankConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_recall(result.recall))
    click.echo(format_test(result.test))
    click.echo(f"MLflow run {run.info.run_id} in {uri}")
    if version:
        click.echo(f"registered {RANKER_NAME} version {version}; champion: {'moved to it' if promoted else 'unchanged'}")
    click.echo(f"UI: {tracking.ui_hint(uri)}")
