"""One training run of the two-tower model, from a dataset and a config to a model bundle.

The steps (``stylerec train``, its torchrun launch and the demo take them in order; MLflow
tracking wraps them in pipelines/tracking.py): build the features, train (one process or
any trainer ``make_trainer`` builds), evaluate on the test fold, write the model files.
Runs are keyed by :func:`config_sha256`: the config, the training code and the encoders
that made the style and text vectors, so a checkpoint or a registered model is re-used
only for the same inputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from data.io import read_json
from data.dataset import DatasetError
from data.split import Split, load_or_create_split
from data.validate import ValidatedDataset
from recsys import text
from recsys.bundle import save_bundle
from recsys.config import RunConfig
from recsys.evaluate import EvalConfig, evaluate, load_ground_truth
from recsys.features import FeatureSet, build_features
from recsys.train import ALL_FOLDS, Trainer, TrainResult, TwoTowerRecommender
from style.embeddings import META_FILE, STYLE_DIR
from style.networks import encoder_info

# the modules whose code decides what a training run produces from a dataset and a config
_TRAINING_CODE = ("features", "model", "losses", "train", "distributed_train", "sharding", "text")

TrainerFactory = Callable[[FeatureSet, Path, Callable | None], Trainer]


DEPLOY_HINT = (
    "to train on every event up to the end of the data, keep a split with held-out folds, evaluate on it "
    "(`stylerec train DATASET`), then refit on everything with `stylerec train DATASET --deploy`"
)


def check_folds(split: Split, where: str) -> None:
    """Refuse a split with an empty validation or test fold: there would be nothing to pick
    the epoch on or to evaluate, and NaN metrics must never move the champion."""
    empty = [name for fold, name in (("val", "validation"), ("test", "test")) if not split.counts.get(fold)]
    if empty:
        how = f"test from {split.test_start:%Y-%m-%d %H:%M}, validation from {split.val_start:%Y-%m-%d %H:%M}" if split.test_start else f"{split.config.strategy}"
        raise DatasetError(
            f"{where}: the split has an empty {' and an empty '.join(empty)} fold ({how}; counts {split.counts}); "
            f"re-split with an earlier cutoff (`stylerec data split --cutoff`) or more --val-days; {DEPLOY_HINT}"
        )


def split_identity(split: Split) -> str:
    """sha256 of a split's parameters, boundaries and interactions table."""
    return hashlib.sha256(json.dumps(split.to_json(), sort_keys=True, default=str).encode()).hexdigest()


def features_for(ds: ValidatedDataset, config: RunConfig, deploy: bool = False) -> FeatureSet:
    """Build the feature set; fails before training when a validation or test fold is empty,
    or when style vectors are needed but absent or broken. ``deploy``: item texts mix every
    review up to the end of the data (the folds are the saved split's; deploy mode trains on all)."""
    split = load_or_create_split(ds)
    check_folds(split, str(ds.dir.root))
    return build_features(ds, split, config.features, require_style=config.model.uses_style, through_end=deploy)


def _code_files(root: Path, name: str) -> list[Path]:
    """A module's file, or every file of a package, in a fixed order."""
    package = root / name
    return sorted(package.glob("*.py")) if package.is_dir() else [root / f"{name}.py"]


def code_sha256(names: tuple[str, ...]) -> str:
    """Fingerprint of the ``recsys`` modules and packages ``names``."""
    import recsys

    root = Path(recsys.__file__).parent
    digest = hashlib.sha256()
    for name in names:
        for path in _code_files(root, name):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def training_code_sha256() -> str:
    return code_sha256(_TRAINING_CODE)


def ranking_code_sha256() -> str:
    """The code a ranker is trained by: the two-tower's (its windows train their own), the
    ranking stage and the ALS source."""
    return code_sha256((*_TRAINING_CODE, "rank", "baselines"))


def style_encoder_identity(dataset_root: Path | None = None) -> dict:
    """The encoder that made the dataset's style vectors (as recorded beside them) and the
    installed network's weights sha256."""
    info = encoder_info()
    identity = {"name": info.name, "version": info.version, "weights_sha256": info.sha256}
    meta = Path(dataset_root) / STYLE_DIR / META_FILE if dataset_root is not None else None
    if meta is not None and meta.is_file():
        recorded = read_json(meta)
        identity.update(embedded_with=f"{recorded.get('encoder')} {recorded.get('encoder_version')}")
    return identity


def encoder_identity(dataset_root: Path | None = None) -> dict:
    """What turned images and texts into the vectors a model is trained on."""
    return {"style": style_encoder_identity(dataset_root), "text": text.encoder_identity()}


def config_sha256(config: RunConfig, encoders: dict | None = None) -> str:
    """Key of a training run: the config, the training code's fingerprint and the encoders'
    identity (default: the installed ones), so neither a model registered by other code or
    on other vectors nor its checkpoints are taken for this run's."""
    as_json = config.to_json()
    as_json["train"].pop("keep_checkpoints", None)  # what stays on disk changes nothing trained
    payload = {"config": as_json, "code": training_code_sha256(), "encoders": encoders if encoders is not None else encoder_identity()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def run_key(ds: ValidatedDataset, config: RunConfig) -> str:
    """:func:`config_sha256` with the encoders of ``ds``'s vectors."""
    return config_sha256(config, encoder_identity(ds.dir.root))


def checkpoint_dir(workdir: Path, ds: ValidatedDataset, config: RunConfig, split: Split | None = None) -> Path:
    """Checkpoints of one dataset + split + config: the folder is named by the verified
    manifest's fingerprint (the tables' content), the split's identity (default: the saved
    split) and the run key, so ``--resume`` never continues another dataset's or another
    split's run. The epoch budget and patience are left out of the key, so
    ``--resume --epochs N`` continues a run with a larger budget."""
    budgetless = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=0, patience=0))
    split = split if split is not None else load_or_create_split(ds)
    return workdir / "runs" / ds.manifest.name / f"{ds.manifest.fingerprint[:12]}-{split_identity(split)[:8]}-{run_key(ds, budgetless)[:12]}"


def single_process_trainer(config: RunConfig, progress: bool = True) -> TrainerFactory:
    def make_trainer(fs: FeatureSet, ckpt: Path, on_epoch: Callable | None) -> Trainer:
        return Trainer(fs, config.model, config.train, checkpoint_dir=ckpt, progress=progress, on_epoch=on_epoch)

    return make_trainer


def evaluate_on_test(result: TrainResult, ds: ValidatedDataset) -> dict:
    """The trained model's metrics on the test fold (the offline-evaluation protocol)."""
    truth_style = load_ground_truth(result.features, ds.dir.root)
    return evaluate(TwoTowerRecommender(result.model, result.features), result.features, EvalConfig(), truth_style)


@dataclass
class ModelFiles:
    bundle: Path
    item_embeddings: Path
    config: Path


def write_model_files(folder: Path, result: TrainResult, ds: ValidatedDataset, config: RunConfig, run_id: str, deploy: bool = False) -> ModelFiles:
    """The model bundle, the item-tower embeddings (parquet) and the run config (JSON).
    A ``deploy`` model (trained on every fold) has the ids of every fold and says so."""
    vocab_folds = ALL_FOLDS if deploy else ("train", "val") if config.train.refit else ("train",)
    bundle = save_bundle(
        folder / "bundle", result.model, result.features,
        vocab_folds=vocab_folds,
        extra={"dataset_path": str(ds.dir.root.resolve()), "run_id": run_id, "config": config.to_json(), "deploy": deploy},
        tables_sha256=ds.manifest.content_sha256,
    )
    item_vecs = TwoTowerRecommender(result.model, result.features).item_matrix().numpy()
    embeddings = folder / "item_embeddings.parquet"
    pl.DataFrame({"item_id": result.features.items.ids, "embedding": pl.Series(item_vecs, dtype=pl.Array(pl.Float32, item_vecs.shape[1]))}).write_parquet(embeddings)
    config_json = folder / "config.json"
    config_json.write_text(json.dumps(config.to_json(), indent=2, default=str))
    return ModelFiles(bundle, embeddings, config_json)
