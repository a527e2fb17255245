"""`stylerec rank train`: the multi-source ranking stage on top of the registered two-tower,
tracked in MLflow and registered as ``stylerec-ranker``; with ``--deploy``, its refit on the
whole timeline for serving (the section at the end)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import click

from data.dataset import DatasetError
from data.validate import ValidatedDataset
from pipelines import tracking
from pipelines.common import load_ds
from pipelines.ranker_store import CODE_TAG, CONFIG_ARTIFACT
from recsys.config import ConfigError
from recsys.evaluate import load_ground_truth
from recsys.rank.config import RankConfig, RankConfigError, load_rank_config
from recsys.rank.ranker import NEW_ITEM_BOOST, RankerError
from recsys.rank.run import ABLATIONS, RankingResult, format_recall, format_test, importance_figure, run_ranking

EXPERIMENT = "stylerec/ranking"
RANKER_NAME = tracking.RANKER_NAME
METRIC_TAG = "val_ndcg_10"
RANK_CONFIG_TAG = "stylerec.rank_config"  # the run's RankConfig.sha256() (deploy mode finds its evaluated run by it)


def _two_tower(ds, model_uri: str):
    from mlflow.exceptions import MlflowException

    try:
        return tracking.load_served_model(ds, model_uri, evaluated_only=True)
    except (MlflowException, tracking.ModelNotFoundError) as exc:
        raise click.ClickException(f"no two-tower model at {model_uri} ({str(exc).splitlines()[0][:200]}); run `stylerec train` on this dataset first") from exc


VALIDATION_TAG = "validation"  # how the version's validation NDCG@10 was measured: only equal ones compare
HONEST_VALIDATION = "windows see a two-tower trained before them"
LEAKY_VALIDATION = "windows see the served two-tower"


def validation_protocol(window_two_tower: bool) -> str:
    """The ``validation`` tag of a ranker whose training windows saw (``window_two_tower``) a
    two-tower trained before them, or the served one; the latter has seen the windows'
    labels, which inflates validation NDCG@10 (recsys/rank/window_two_tower.py)."""
    return HONEST_VALIDATION if window_two_tower else LEAKY_VALIDATION


@dataclass
class Promotion:
    version: str
    promoted: bool
    reason: str = ""  # why, when the rule was not "a better validation NDCG@10"


def promotion(val_ndcg: float, protocol: str, champion_ndcg: float | None, champion_protocol: str | None) -> tuple[bool, str]:
    """Whether a new ranker takes ``champion``, and why when it is not a plain comparison.

    Validation NDCG@10 compares only between rankers validated the same way: a NaN score
    never wins; any real score beats a missing champion or one without a score; against a
    champion validated otherwise (or before versions were tagged with how), an honestly
    validated ranker takes the alias and a leaky one does not."""
    if champion_protocol == protocol or not tracking.is_better(champion_ndcg, None) or not tracking.is_better(val_ndcg, None):
        return tracking.is_better(val_ndcg, champion_ndcg), ""  # comparable, or one of the two has no score
    how = f"validated with {champion_protocol}" if champion_protocol else "from before versions recorded how they were validated"
    return protocol == HONEST_VALIDATION, f"the champion is {how}: its validation NDCG@10 ({champion_ndcg:.4f}) does not compare with this one's"


def _register(
    client, model_uri: str, run_id: str, val_ndcg: float, fingerprint: str, two_tower_version: str, config_sha256: str = "", new_item_boost: float = 0.0,
    window_two_tower: bool = True,
) -> Promotion:
    """Register the ranker; move ``champion`` to it by :func:`promotion`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from recsys.training_run import ranking_code_sha256

    version = mlflow.register_model(model_uri, RANKER_NAME)
    protocol = validation_protocol(window_two_tower)
    tags = (
        (METRIC_TAG, f"{val_ndcg:.6f}"), ("run_id", run_id), ("dataset_fingerprint", fingerprint), ("two_tower", two_tower_version), ("config_sha256", config_sha256),
        (NEW_ITEM_BOOST, repr(float(new_item_boost))), (VALIDATION_TAG, protocol), (CODE_TAG, ranking_code_sha256()),
    )
    for key, value in tags:
        client.set_model_version_tag(RANKER_NAME, version.version, key, value)
    try:
        champion = client.get_model_version_by_alias(RANKER_NAME, tracking.CHAMPION)
        current, current_protocol = float(champion.tags.get(METRIC_TAG, "nan")), champion.tags.get(VALIDATION_TAG)
    except MlflowException:
        current, current_protocol = None, None
    promoted, reason = promotion(val_ndcg, protocol, current, current_protocol)
    if promoted:
        client.set_registered_model_alias(RANKER_NAME, tracking.CHAMPION, version.version)
    return Promotion(str(version.version), promoted, reason)


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
    mlflow.log_metrics({"best_val_ndcg_10": fit.val_ndcg_10, "best_iteration": fit.best_iteration, "train_rows": fit.train_rows, "val_rows": fit.val_rows, NEW_ITEM_BOOST: fit.new_item_boost})
    seen = ("trained before each window" if config.window_two_tower_per_window else "trained before the first window") if result.window_two_tower else "the served two-tower"
    mlflow.log_param("window_two_tower", seen)
    mlflow.log_param(VALIDATION_TAG, validation_protocol(result.window_two_tower))
    mlflow.log_metrics({f"{_slug(m)}.best_val_ndcg_10": f.val_ndcg_10 for m, f in result.variants.items() if f.val_ndcg_10 == f.val_ndcg_10})
    mlflow.log_metrics({f"retrieval_recall.{t}.{s}": v for t, by in result.recall.items() for s, v in by.items() if v == v})
    mlflow.log_metrics({f"{_slug(m)}.{sl}.{k.replace('@', '_at_')}": v for m, slices in result.test.items() for sl, vals in slices.items() for k, v in vals.items() if k in ("recall@10", "ndcg@10", "recall@50", "ndcg@50")})
    mlflow.log_dict({"importance_gain": fit.importance, "retrieval_recall": result.recall}, "ranker.json")
    mlflow.log_dict(config.to_json(), CONFIG_ARTIFACT)  # what serving rebuilds the candidate sources from
    if config.model == "dcn":  # the network (normaliser in its buffers), pytorch flavour pickled (pt2 would need an input example to trace)
        return mlflow.pytorch.log_model(fit.model.net, name="model", serialization_format="pickle").model_uri
    mlflow.log_figure(importance_figure(fit), "plots/feature_importance.png")
    return mlflow.lightgbm.log_model(fit.model, name="model").model_uri


@dataclass
class RankOutcome:
    result: RankingResult
    run_id: str
    tracking_uri: str
    two_tower_version: str
    version: str | None  # the registered version (None without --register)
    promoted: bool
    promotion_reason: str = ""  # why champion moved or not, when not by a plain comparison

    @property
    def model_uri(self) -> str | None:
        return f"models:/{RANKER_NAME}/{self.version}" if self.version else None

    @property
    def registered_line(self) -> str:
        """``registered stylerec-ranker version 3; champion: moved to it`` (and why, when not by a plain comparison)."""
        reason = f" ({self.promotion_reason})" if self.promotion_reason else ""
        return f"registered {RANKER_NAME} version {self.version}; champion: {'moved to it' if self.promoted else 'unchanged'}{reason}"


def train_ranker(
    ds: ValidatedDataset, config: RankConfig, model_uri: str = tracking.CHAMPION_URI, ablations: bool = False, register: bool = True, echo: Callable[[str], None] = click.echo
) -> RankOutcome:
    """Train the ranker over the two-tower at ``model_uri``, score it on the test fold, log it
    to MLflow and (``register``) register it; errors are one-line ClickExceptions."""
    import mlflow

    try:
        lm = _two_tower(ds, model_uri)
        uri = tracking.setup(EXPERIMENT)
        with mlflow.start_run(run_name=f"rank-{ds.manifest.name}", tags={RANK_CONFIG_TAG: config.sha256()}) as run:
            result = run_ranking(
                ds, lm.fs, config, lm.recommender, load_ground_truth(lm.fs, ds.dir.root), ablations=ABLATIONS if ablations else (), echo=echo, run_config=tracking.served_run_config(model_uri)
            )
            model_uri_logged = _log(result, ds, config, lm)
            version, promoted, reason = None, False, ""
            if register:
                outcome = _register(
                    mlflow.tracking.MlflowClient(), model_uri_logged, run.info.run_id, result.fit.val_ndcg_10, ds.manifest.fingerprint, lm.version, config.sha256(),
                    result.fit.new_item_boost, result.window_two_tower,
                )
                version, promoted, reason = outcome.version, outcome.promoted, outcome.reason
                mlflow.set_tags({"registered_version": version, "champion": str(promoted)})
    except (DatasetError, RankerError, RankConfigError, ConfigError) as exc:  # ConfigError: the two-tower's saved config
        raise click.ClickException(str(exc)) from exc
    return RankOutcome(result, run.info.run_id, uri, lm.version, version, promoted, reason)


@click.group("rank")
def rank_group() -> None:
    """The ranking stage: several candidate sources re-ordered by a LightGBM (or DCN-v2) ranker."""


@rank_group.command("train")
@click.argument("dataset")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None, help="TOML with a [rank] section (recsys/rank/config.py)")
@click.option("--model-uri", default=tracking.CHAMPION_URI, show_default=True, help="the two-tower model used as a source and a feature")
@click.option("--ablations", is_flag=True, help=f"also train and score: {', '.join(ABLATIONS)}")
@click.option("--register/--no-register", default=True, show_default=True, help=f"register the ranker as {RANKER_NAME}")
@click.option("--deploy", is_flag=True, help=f"refit on windows ending at the end of the data over {tracking.PRODUCTION_URI}, for the rounds of the last evaluated run; alias {tracking.PRODUCTION!r}")
@click.pass_context
def rank_train(ctx, dataset, config_path, model_uri, ablations, register, deploy):
    """Train the ranker on DATASET over the candidates of every source, score it on the test
    fold beside ALS and the two-tower, log it to MLflow and register it.

    With --deploy: after an evaluated run, refit it on the whole timeline (docs/ranking.md)."""
    try:
        config = load_rank_config(config_path)
    except RankConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if deploy:
        if config.model != "lightgbm":
            raise click.ClickException(f"[rank] model = {config.model!r}: deploy mode refits the LightGBM ranker only")
        if ablations or ctx.get_parameter_source("model_uri") is not click.core.ParameterSource.DEFAULT:
            raise click.UsageError(f"--deploy ranks over {tracking.PRODUCTION_URI} and scores nothing; it does not go with --model-uri or --ablations")
        rank_deploy(load_ds(ctx, dataset), dataset, config, register)
        return
    if config.model == "dcn" and register:
        raise click.ClickException(
            "[rank] model = \"dcn\": the DCN-v2 ranker is trained, scored and logged with --no-register; the registry serves LightGBM rankers "
            "(or keep model = \"lightgbm\" and add --ablations to see both)"
        )
    ds = load_ds(ctx, dataset)
    out = train_ranker(ds, config, model_uri, ablations, register)
    click.echo(format_recall(out.result.recall))
    click.echo(format_test(out.result.test))
    click.echo(f"MLflow run {out.run_id} in {out.tracking_uri}")
    if out.version:
        click.echo(out.registered_line)
    click.echo(f"UI: {tracking.ui_hint(out.tracking_uri)}")


# -- deploy mode: `stylerec rank train --deploy` -------------------------------------------
# The number of boosting rounds is the best iteration of the last evaluated ranking run of
# the same dataset and [rank] config (tagged stylerec.rank_config); the windows end at the
# end of the data, every one trains, nothing is held out or scored. The two-tower source
# and features are the deployed two-tower (models:/stylerec@production); the ranker is
# registered as a version of stylerec-ranker under the alias production.

def last_evaluated_rank_run(client, experiment: str, dataset_fingerprint: str, config_sha256: str):
    """The newest FINISHED evaluated ranking run (not a deploy-mode one) of this dataset and config, or None."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{RANK_CONFIG_TAG}` = '{config_sha256}' and params.dataset_manifest_sha256 = '{dataset_fingerprint}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    return next((r for r in runs if r.data.tags.get(tracking.DEPLOY_TAG) != "true" and "best_iteration" in r.data.metrics), None)


def _production_two_tower(ds, dataset_arg: str):
    from mlflow.exceptions import MlflowException

    try:
        return tracking.load_served_model(ds, tracking.PRODUCTION_URI)
    except (MlflowException, tracking.ModelNotFoundError) as exc:
        raise click.ClickException(
            f"no deployed two-tower at {tracking.PRODUCTION_URI} ({str(exc).splitlines()[0][:200]}); run `stylerec train {dataset_arg} --deploy` first"
        ) from exc


def rank_deploy(ds, dataset_arg: str, config: RankConfig, register: bool) -> None:
    """Fit, log and register (alias ``production``) the deploy-mode ranker; prints what it did."""
    import mlflow

    from recsys.rank.run import deploy_ranking

    config_sha = config.sha256()
    uri = tracking.setup(EXPERIMENT)
    client = mlflow.tracking.MlflowClient()
    source = last_evaluated_rank_run(client, EXPERIMENT, ds.manifest.fingerprint, config_sha)
    if source is None:
        raise click.ClickException(f"no evaluated ranking run of this dataset and [rank] config; run `stylerec rank train {dataset_arg}` first (with the same --config)")
    rounds = int(source.data.metrics["best_iteration"])
    boost = float(source.data.metrics.get(NEW_ITEM_BOOST, 0.0))  # runs from before the boost: none
    lm = _production_two_tower(ds, dataset_arg)
    end = int(lm.fs.ev_ts.max()) + 1
    try:
        with mlflow.start_run(run_name=f"rank-deploy-{ds.manifest.name}", tags={RANK_CONFIG_TAG: config_sha, tracking.DEPLOY_TAG: "true"}) as run:
            ranked = deploy_ranking(ds, lm.fs, config, rounds, lm.recommender, echo=click.echo, new_item_boost=boost, run_config=tracking.served_run_config(tracking.PRODUCTION_URI))
            fit = ranked.fit
            mlflow.log_params({
                "job": "rank-deploy", "dataset": ds.manifest.name, "dataset_manifest_sha256": ds.manifest.fingerprint, "two_tower": lm.version,
                "features": ",".join(fit.features)[:6000], **config.flat_params(),
                "deploy.from_run": source.info.run_id, "deploy.rounds": rounds, "deploy.new_item_boost": boost, "deploy.windows_end": dt.datetime.fromtimestamp(end, dt.UTC).isoformat(),
            })
            mlflow.log_metrics({"train_rows": fit.train_rows})
            mlflow.log_dict({"importance_gain": fit.importance}, "ranker.json")
            mlflow.log_dict(config.to_json(), CONFIG_ARTIFACT)  # what serving rebuilds the candidate sources from
            mlflow.log_figure(importance_figure(fit), "plots/feature_importance.png")
            logged = mlflow.lightgbm.log_model(fit.model, name="model").model_uri
            version = None
            if register:
                version = tracking.register_production(client, logged, RANKER_NAME, {
                    "run_id": run.info.run_id, "dataset_fingerprint": ds.manifest.fingerprint, "two_tower": lm.version,
                    "from_run": source.info.run_id, "rounds": rounds, "config_sha256": config_sha, NEW_ITEM_BOOST: repr(float(boost)),
                })
                mlflow.set_tags({"registered_version": version, tracking.PRODUCTION: "True"})
    except (DatasetError, RankerError, RankConfigError, ConfigError) as exc:  # ConfigError: the two-tower's saved config
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{rounds} rounds: the best iteration of evaluated ranking run {source.info.run_id}; two-tower {lm.version}")
    click.echo("a deploy run has no held-out window: no validation or test metrics (the evaluated run's metrics are its estimate)")
    click.echo(f"MLflow run {run.info.run_id} in {uri}")
    if version:
        click.echo(f"registered {RANKER_NAME} version {version}; {tracking.PRODUCTION}: moved to it ({tracking.CHAMPION} unchanged)")
    click.echo(f"UI: {tracking.ui_hint(uri)}")
