"""`stylerec evaluate`: every model side by side, scored by the same protocol, tracked in MLflow."""

from __future__ import annotations

import time

import click

from data.dataset import DatasetError
from data.io import write_json
from data.validate import ValidatedDataset, load_dataset
from pipelines import tracking
from pipelines.workspace import resolve_dataset
from recsys.baselines import default_baselines
from recsys.config import VARIANT_FILES, ConfigError, RunConfig, load_run_config, model_variant
from recsys.evaluate import EvalConfig, evaluate, load_ground_truth, results_table
from recsys.rank.config import RankConfig, RankConfigError, load_rank_config
from recsys.rank.ranker import RankerError
from recsys.rank.run import run_ranking
from recsys.reporting import format_metrics, recall_by_slice_figure
from recsys.train import Trainer, TwoTowerRecommender
from recsys.training_run import features_for


def _log_results(results: dict, timings: dict) -> None:
    import mlflow

    mlflow.log_table(results_table(results).to_pandas(), artifact_file="metrics/offline_eval.json")
    mlflow.log_figure(recall_by_slice_figure(results), "plots/recall_by_slice.png")
    # MLflow keys allow no "+": "multi-source + ranker" -> "multi-source_plus_ranker"
    mlflow.log_metrics({f"{m.replace(' + ', '_plus_')}.{sl}.{k.replace('@', '_at_')}": v for m, slices in results.items() for sl, vals in slices.items() for k, v in vals.items() if k in ("recall@50", "ndcg@50", "recall@10", "recall@100")})
    mlflow.log_dict({"timings_s": timings}, "timings.json")


def _rank_rows(ds: ValidatedDataset, rank_config: RankConfig, two_tower, features, truth_style, results: dict, timings: dict, echo, run_config: RunConfig) -> None:
    """The ranker over every source and over the two-tower alone, trained here on windows
    before the test cutoff and scored like every other row (the windows see a two-tower
    trained with ``run_config`` before them: recsys/rank/window_two_tower.py)."""
    started = time.perf_counter()
    ranked = run_ranking(ds, features, rank_config, two_tower, truth_style, compare=False, ablations=("two-tower + ranker",), echo=echo, run_config=run_config)
    seconds = time.perf_counter() - started
    timings["both rankers"] = seconds  # trained and scored in one call
    for name in (ranked.recommender.name, "two-tower + ranker"):  # the main row is named after its model (LightGBM or DCN-v2)
        results[name] = ranked.test[name]
        echo(f"  {name:<22} recall@50 {results[name]['all']['recall@50']:.4f}")
    echo(f"  (both rankers {seconds:.1f}s)")


def run_evaluation(
    ds: ValidatedDataset,
    config: RunConfig,
    model_uri: str | None = None,
    variants: tuple[str, ...] = ("two-tower-id-only",),
    progress: bool = True,
    echo=print,
    rank_config: RankConfig | None = None,
) -> tuple[dict, str, str]:
    """Baselines, the registered model (or one trained here) and ``variants``, scored on the
    test fold; with ``rank_config`` also the ranker over that two-tower ("multi-source +
    ranker") and over the two-tower alone ("two-tower + ranker"), trained on windows before
    the test cutoff. Returns (results, MLflow run id, tracking URI)."""
    import mlflow

    uri = tracking.setup(tracking.OFFLINE_EVAL)
    fs = features_for(ds, config)
    eval_cfg = EvalConfig()
    truth_style = load_ground_truth(fs, ds.dir.root)
    test_start = fs.time_of("test")
    results: dict[str, dict] = {}
    timings: dict[str, float] = {}

    def score(name: str, model, features, started: float) -> None:
        results[name] = evaluate(model, features, eval_cfg, truth_style)
        timings[name] = time.perf_counter() - started

    with mlflow.start_run(run_name=f"evaluate-{ds.manifest.name}") as run:
        mlflow.log_params({"job": "evaluate", "dataset": ds.manifest.name, "dataset_manifest_sha256": ds.manifest.fingerprint, "eval_mask_seen": eval_cfg.mask_seen, "eval_ks": str(eval_cfg.ks), "seed": config.train.seed, **config.flat_params()})
        for baseline in default_baselines(config.train.seed):
            started = time.perf_counter()
            baseline.fit(fs, test_start)
            score(baseline.name, baseline, fs, started)
            echo(f"  {baseline.name:<22} recall@50 {results[baseline.name]['all']['recall@50']:.4f}  ({timings[baseline.name]:.1f}s)")
        to_train = [(name, model_variant(name, config.model)) for name in variants]
        two_tower = None  # (recommender, its features) of the "two-tower" row
        if model_uri:
            started = time.perf_counter()
            lm = tracking.load_served_model(ds, model_uri, evaluated_only=True)
            score("two-tower", lm.recommender, lm.fs, started)
            two_tower = (lm.recommender, lm.fs)
            two_tower_config = tracking.served_run_config(model_uri) or config
            echo(f"  {'two-tower (' + model_uri + ')':<22} recall@50 {results['two-tower']['all']['recall@50']:.4f}")
        else:
            to_train.insert(0, ("two-tower", config.model))
            two_tower_config = config
        for name, model_cfg in to_train:
            started = time.perf_counter()
            result = Trainer(fs, model_cfg, config.train, progress=progress).fit()
            score(name, TwoTowerRecommender(result.model, result.features), result.features, started)
            if name == "two-tower":
                two_tower = (TwoTowerRecommender(result.model, result.features), result.features)
            echo(f"  {name:<22} recall@50 {results[name]['all']['recall@50']:.4f}  ({timings[name]:.1f}s, best epoch {result.best_epoch})")
        if rank_config is not None and two_tower is not None:
            _rank_rows(ds, rank_config, *two_tower, truth_style, results, timings, echo, two_tower_config)
        _log_results(results, timings)
    return results, run.info.run_id, uri


@click.command("evaluate")
@click.argument("dataset")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--model-uri", default=None, help=f"evaluate this registered two-tower model (e.g. {tracking.CHAMPION_URI}) instead of training one")
@click.option("--variants", default="two-tower-id-only", show_default=True, help=f"comma-separated two-tower variants to train beside it: {', '.join(VARIANT_FILES)} (or 'none')")
@click.option("--seed", type=int, default=None)
@click.option("--rank-config", "rank_config_path", type=click.Path(exists=True, dir_okay=False), default=None, help="TOML with a [rank] section for the ranker rows (recsys/rank/config.py)")
@click.option("--no-ranker", is_flag=True, help="skip the rows 'multi-source + ranker' and 'two-tower + ranker' (a LightGBM ranker trained here over the two-tower)")
@click.pass_context
def evaluate_cmd(ctx, dataset, config_path, model_uri, variants, seed, rank_config_path, no_ranker):
    """Train or load every model, score them all with one protocol, print and log the table.

    Rows: the baselines, the two-tower (and --variants), and the ranker trained here on
    windows before the test cutoff, over every candidate source and over the two-tower alone."""
    try:
        rank_config = None if no_ranker else load_rank_config(rank_config_path)
        config = load_run_config(config_path, {"train": {"seed": seed}} if seed is not None else None)
        ds = load_dataset(resolve_dataset(dataset, ctx.obj["workdir"]))
        names = () if variants.strip() in ("", "none") else tuple(v.strip() for v in variants.split(","))
        unknown = [v for v in names if v not in VARIANT_FILES]
        if unknown:
            raise click.BadParameter(f"unknown variant(s) {unknown}; choose from {list(VARIANT_FILES)}", param_hint="--variants")
        results, run_id, uri = run_evaluation(ds, config, model_uri, names, echo=click.echo, rank_config=rank_config)
    except (ConfigError, DatasetError, RankConfigError, RankerError) as exc:
        raise click.ClickException(str(exc)) from exc
    out = ctx.obj["workdir"] / "reports" / f"offline-eval-{ds.manifest.name}.json"
    write_json({"dataset": ds.manifest.name, "run_id": run_id, "results": results}, out, strict=True)
    click.echo(format_metrics(results))
    click.echo(f"results: {out}\nMLflow run {run_id} ({uri}); UI: {tracking.ui_hint(uri)}")
