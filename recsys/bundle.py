"""A trained two-tower model as files: weights (safetensors), configs and vocabulary (JSON).

This is what MLflow stores and what later jobs (candidates, A/B simulation) load; no
pickle anywhere. The features are rebuilt from the dataset, so the bundle also records the
dataset fingerprint and refuses a dataset that changed.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from data.dataset import DatasetError
from data.io import write_json
from recsys.features import FeatureConfig, FeatureSet
from recsys.model import TwoTower, TwoTowerConfig, Vocab
from recsys.train import load_weights, save_weights

WEIGHTS = "weights.safetensors"
CONFIG = "model.json"


def save_bundle(folder: Path, model: TwoTower, fs: FeatureSet, vocab_folds: tuple[str, ...], extra: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, folder / WEIGHTS)
    write_json(
        {
            "model_config": model.config.to_json(),
            "vocab": asdict(model.vocab),
            "feature_config": asdict(fs.config),
            "vocab_folds": list(vocab_folds),
            "dataset_fingerprint": fs.fingerprint,
            **(extra or {}),
        },
        folder / CONFIG,
    )
    return folder


def read_bundle_config(folder: Path) -> dict:
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise DatasetError(f"{path}: not a stylerec model bundle")
    return json.loads(path.read_text())


def load_bundle(folder: Path, fs: FeatureSet) -> tuple[TwoTower, FeatureSet]:
    """The model, and ``fs`` with the id vocabulary it was trained with."""
    meta = read_bundle_config(folder)
    if meta["dataset_fingerprint"] != fs.fingerprint:
        raise DatasetError(
            f"{folder}: model was trained on dataset {meta['dataset_fingerprint'][:12]}…, not {fs.fingerprint[:12]}…"
        )
    fs = fs.with_vocab(tuple(meta["vocab_folds"]))
    cfg = meta["model_config"]
    config = TwoTowerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    vocab = Vocab(**meta["vocab"])
    if vocab != Vocab.of(fs):
        raise DatasetError(f"{folder}: vocabulary {vocab} does not match the dataset's {Vocab.of(fs)}")
    model = TwoTower(config, vocab, TwoTower.item_tables(fs))
    load_weights(model, Path(folder) / WEIGHTS)
    model.eval()
    return model, fs


def feature_config_from(meta: dict) -> FeatureConfig:
    cfg = dict(meta["feature_config"])
    cfg["eval_events"] = tuple(cfg["eval_events"])
    return FeatureConfig(**cfg)
