"""`stylerec train`: train the two-tower model, evaluate it, track and register it in MLflow."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import polars as pl

from data.dataset import DatasetError
from data.split import load_or_create_split
from data.validate import ValidatedDataset, load_dataset
from pipelines import tracking
from pipelines.train import training_options
from pipelines.workspace import resolve_dataset
from recsys.bundle import save_bundle
from recsys.config import ConfigError, RunConfig, load_run_config
from recsys.evaluate import EvalConfig, evaluate, load_ground_truth, results_table
from recsys.features import FeatureSet, build_features
from recsys.train import Trainer, TrainResult, TwoTowerRecommender

@dataclass
class TrainOutcome:
    run_id: str
    result: TrainResult
    test: dict
    version: str | None
    promoted: bool
    tracking_uri: str


def features_for(ds: ValidatedDataset, config: RunConfig) -> FeatureSet:
    """Build the feature set; fails before training when style vectors are needed but absent or broken."""
    split = load_or_create_split(ds)
    uses_style = bool({"style", "user_style"} & (set(config.model.item_features) | set(config.model.user_features)))
    return build_features(ds, split, config.features, require_style=uses_style)


# the modules whose code decides what a training run produces from a dataset and a config
_TRAINING_CODE = ("features", "model", "losses", "train", "distributed_train", "sharding", "text")


def training_code_sha256() -> str:
    import recsys

    root = Path(recsys.__file__).parent
    digest = hashlib.sha256()
    for name in _TRAINING_CODE:
        digest.update((root / f"{name}.py").read_bytes())
    return digest.hexdigest()


def config_sha256(config: RunConfig) -> str:
    """Key of a training run: the config and the training code's fingerprint, so neither a
    model registered by other code nor its checkpoints are taken for this run's."""
    payload = {"config": config.to_json(), "code": training_code_sha256()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def checkpoint_dir(workdir: Path, ds: ValidatedDataset, config: RunConfig) -> Path:
    """Checkpoints of one dataset + config. The epoch budget and patience are left out of
    the key, so ``--resume --epochs N`` continues a run with a larger budget."""
    budgetless = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=0, patience=0))
    return workdir / "runs" / ds.manifest.name / f"{ds.manifest.fingerprint[:12]}-{config_sha256(budgetless)[:12]}"


def training_curve(history):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    epochs = [h.epoch for h in history]
    ax[0].plot(epochs, [h.loss for h in history], marker="o")
    ax[0].set(title="training loss", xlabel="epoch")
    ax[1].plot(epochs, [h.val_recall_50 for h in history], marker="o", color="tab:green")
    ax[1].set(title="validation Recall@50", xlabel="epoch")
    fig.tight_layout()
    return fig


def recall_by_slice_figure(results: dict[str, dict[str, dict[str, float]]], k: int = 50):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slices = ["all", "warm_items", "cold_items", "warm_users", "cold_users"]
    models = list(results)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(models)), 3.5))
    width = 0.8 / len(slices)
    for j, sl in enumerate(slices):
        values = [results[m].get(sl, {}).get(f"recall@{k}", 0.0) for m in models]
        ax.bar(np.arange(len(models)) + j * width, values, width, label=sl)
    ax.set_xticks(np.arange(len(models)) + 0.4, models, rotation=20)
    ax.set(title=f"Recall@{k} by slice", ylabel=f"recall@{k}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


TrainerFactory = Callable[[FeatureSet, Path, Callable | None], Trainer]


def train_and_track(
    ds: ValidatedDataset, config: RunConfig, workdir: Path, resume: bool = False, progress: bool = True, register: bool = True,
    make_trainer: TrainerFactory | None = None, is_main: bool = True, run_params: dict | None = None,
) -> TrainOutcome | None:
    """Train, evaluate on the test fold, log to MLflow and register.

    ``make_trainer(fs, checkpoint_dir, on_epoch)`` builds the trainer (default: one
    process). Under torchrun every rank calls this; only the main rank (``is_main``)
    touches MLflow, evaluates and registers, the others train and return None."""
    fs = features_for(ds, config)
    ckpt = checkpoint_dir(workdir, ds, config)
    if make_trainer is None:
        def make_trainer(fs, ckpt, on_epoch):
            return Trainer(fs, config.model, config.train, checkpoint_dir=ckpt, progress=progress, on_epoch=on_epoch)
    if not is_main:
        make_trainer(fs, ckpt, None).fit(resume=resume)
        return None

    import mlflow

    uri = tracking.setup(tracking.OFFLINE_EVAL)
    with mlflow.start_run(run_name=f"train-{ds.manifest.name}") as run:
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
        trainer = make_trainer(
            fs, ckpt,
            lambda log: mlflow.log_metrics(
                {"loss": log.loss, "val_recall_50": log.val_recall_50, "examples_per_s": log.examples_per_s, "epoch_seconds": log.seconds},
                step=log.epoch,
            ),
        )
        started = time.perf_counter()
        result = trainer.fit(resume=resume)
        mlflow.log_metrics({"best_val_recall_50": result.best_val_recall_50, "best_epoch": result.best_epoch, "train_seconds": time.perf_counter() - started})

        truth_style = load_ground_truth(result.features, ds.dir.root)
        test = evaluate(TwoTowerRecommender(result.model, result.features), result.features, EvalConfig(), truth_style)
        mlflow.log_metrics({f"test_{sl}_{m.replace('@', '_at_')}": v for sl, values in test.items() for m, v in values.items() if m != "users"})
        mlflow.log_param("eval_mask_seen", True)
        table = results_table({"two-tower": test})
        mlflow.log_table(table.to_pandas(), artifact_file="metrics/test_metrics.json")
        mlflow.log_figure(training_curve(result.history), "plots/training_curve.png")
        mlflow.log_figure(recall_by_slice_figure({"two-tower": test}), "plots/recall_by_slice.png")

        version, promoted = None, False
        with tempfile.TemporaryDirectory() as tmp:
            bundle = save_bundle(
                Path(tmp) / "bundle", result.model, result.features,
                vocab_folds=("train", "val") if config.train.refit else ("train",),
                extra={"dataset_path": str(ds.dir.root.resolve()), "run_id": run.info.run_id, "config": config.to_json()},
                tables_sha256=ds.manifest.content_sha256,
            )
            rec = TwoTowerRecommender(result.model, result.features)
            item_vecs = rec.item_matrix().numpy()
            pl.DataFrame({"item_id": result.features.items.ids, "embedding": pl.Series(item_vecs, dtype=pl.Array(pl.Float32, item_vecs.shape[1]))}).write_parquet(Path(tmp) / "item_embeddings.parquet")
            mlflow.log_artifact(str(Path(tmp) / "item_embeddings.parquet"), "embeddings")
            (Path(tmp) / "config.json").write_text(json.dumps(config.to_json(), indent=2, default=str))
            mlflow.log_artifact(str(Path(tmp) / "config.json"))
            import pandas as pd
            from mlflow.models import infer_signature

            signature = infer_signature(
                pd.DataFrame({"user_id": ["U0"]}),
                pd.DataFrame({"user_id": ["U0"], "rank": [1], "item_id": ["I0"]}),
                params={"k": 10},
            )
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(__file__).with_name("mlflow_model.py")),
                artifacts={"bundle": str(bundle)},
                signature=signature,
            )
        if register:
            version, promoted = tracking.register_and_promote(
                mlflow.tracking.MlflowClient(), info.model_uri, run.info.run_id, result.best_val_recall_50, ds.manifest.fingerprint, config_sha256(config)
            )
            mlflow.set_tags({"registered_version": version, "champion": str(promoted)})
    return TrainOutcome(run.info.run_id, result, test, version, promoted, uri)


def format_metrics(results: dict[str, dict[str, dict[str, float]]], k: int = 50, slices=("all", "warm_items", "cold_items", "warm_users", "cold_users")) -> str:
    header = f"{'model':<24}" + "".join(f"{s + f' R@{k}':>17}" for s in slices) + f"{'NDCG@' + str(k):>10}{'cover@' + str(k):>10}{'style@' + str(k):>10}"
    lines = [header]
    for model, res in results.items():
        row = f"{model:<24}" + "".join(f"{res.get(s, {}).get(f'recall@{k}', float('nan')):>17.4f}" for s in slices)
        a = res.get("all", {})
        row += f"{a.get(f'ndcg@{k}', float('nan')):>10.4f}{a.get(f'coverage@{k}', float('nan')):>10.3f}{a.get(f'style_consistency@{k}', float('nan')):>10.3f}"
        lines.append(row)
    return "\n".join(lines)


@click.command("train")
@training_options
@click.option("--nproc", type=click.IntRange(min=1), default=None, help="train on N ranks of this machine (torchrun, TorchRec DistributedModelParallel)")
@click.pass_context
def train_cmd(ctx, dataset, config_path, seed, epochs, resume, sharding, nproc):
    """Train the style-aware two-tower model on DATASET, evaluate it, log and register it.

    With --nproc N it runs `torchrun --standalone --nproc_per_node=N -m pipelines.train`
    with the same arguments."""
    if nproc is not None:
        from pipelines.ranks import launch

        args = [dataset, "--workdir", str(ctx.obj["workdir"])]
        for flag, value in (("--config", config_path), ("--seed", seed), ("--epochs", epochs), ("--sharding", sharding)):
            if value is not None:
                args += [flag, str(value)]
        args += ["--resume"] if resume else []
        ctx.exit(launch(nproc, "pipelines.train", args))
    if sharding is not None:
        raise click.UsageError("--sharding needs --nproc")
    overrides = {"train": {k: v for k, v in (("seed", seed), ("epochs", epochs)) if v is not None}}
    try:
        config = load_run_config(config_path, overrides)
        ds = load_dataset(resolve_dataset(dataset, ctx.obj["workdir"]))
        out = train_and_track(ds, config, ctx.obj["workdir"], resume=resume)
    except (ConfigError, DatasetError) as exc:
        raise click.ClickException(str(exc)) from exc
    report(out)


def report(out: TrainOutcome) -> None:
    r = out.result
    click.echo(f"best epoch {r.best_epoch} (validation Recall@50 {r.best_val_recall_50:.4f}); {len(r.history)} epochs run")
    click.echo(format_metrics({"two-tower": out.test}))
    click.echo(f"MLflow run {out.run_id} in {out.tracking_uri}")
    if out.version:
        click.echo(f"registered {tracking.MODEL_NAME} version {out.version}; champion: {'moved to it' if out.promoted else 'unchanged'}")
    click.echo(f"UI: {tracking.ui_hint(out.tracking_uri)}")
