"""A trained two-tower model as files: weights (safetensors), configs and vocabulary (JSON).

This is what MLflow stores and what later jobs (candidates, A/B simulation) load; no
pickle anywhere. Features are rebuilt from the dataset with the encoders frozen in the
bundle (category list, price buckets, style centre), so the bundle refuses a dataset whose
behaviour changed, and, when asked, accepts one whose catalogue only grew: new items are
embedded from their content alone, old items exactly as in training.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file

from data.dataset import DatasetError
from data.io import write_json, write_parquet
from data.split import load_or_create_split
from data.validate import ValidatedDataset
from recsys.features import FeatureConfig, FeatureSet, ItemEncoders, build_features
from recsys.model import TwoTower, TwoTowerConfig, Vocab
from recsys.train import save_weights

WEIGHTS = "weights.safetensors"
CONFIG = "model.json"
ITEMS = "items.parquet"
HISTORY_TABLE = "history.embedding_bags.t_history.weight"
BEHAVIOUR_TABLES = ("interactions", "users", "reviews")


def save_bundle(folder: Path, model: TwoTower, fs: FeatureSet, vocab_folds: tuple[str, ...], extra: dict | None = None, tables_sha256: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, folder / WEIGHTS)
    write_parquet(pl.DataFrame({"item_id": pl.Series(fs.items.ids.tolist(), dtype=pl.String)}), folder / ITEMS)
    write_json(
        {
            "model_config": model.config.to_json(),
            "vocab": asdict(model.vocab),
            "feature_config": asdict(fs.config),
            "encoders": asdict(fs.encoders),
            "vocab_folds": list(vocab_folds),
            "dataset_fingerprint": fs.fingerprint,
            "tables_sha256": tables_sha256 or {},
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


def is_deploy(meta: dict) -> bool:
    """Whether a bundle's model was trained in deploy mode (on every event, test fold included)."""
    return bool(meta.get("deploy", False))


def feature_config_from(meta: dict) -> FeatureConfig:
    cfg = dict(meta["feature_config"])
    cfg["eval_events"] = tuple(cfg["eval_events"])
    # bundles written before history weights had their own table weighted history events
    # like the interaction matrix
    cfg.setdefault("history_event_weights", None)
    return FeatureConfig(**cfg)


def encoders_from(meta: dict) -> ItemEncoders:
    e = meta["encoders"]
    return ItemEncoders(tuple(e["categories"]), tuple(e["price_edges"]), tuple(e["style_mean"]) if e["style_mean"] is not None else None)


def model_config_from(meta: dict) -> TwoTowerConfig:
    return TwoTowerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["model_config"].items()})


def load_for_dataset(folder: Path, ds: ValidatedDataset, allow_new_items: bool = False) -> tuple[TwoTower, FeatureSet]:
    """The bundle's model and the dataset's features encoded as the model was trained.

    A dataset other than the training one is refused, except, with ``allow_new_items``, the
    same behaviour tables with a grown catalogue.
    """
    folder = Path(folder)
    meta = read_bundle_config(folder)
    if "encoders" not in meta or not (folder / ITEMS).is_file():
        raise DatasetError(f"{folder}: bundle written by an older stylerec (no frozen item encoders); train the model again")
    trained_ids = pl.read_parquet(folder / ITEMS)["item_id"].to_numpy()
    if ds.manifest.fingerprint != meta["dataset_fingerprint"]:
        changed = [t for t in BEHAVIOUR_TABLES if ds.manifest.content_sha256.get(t) != meta["tables_sha256"].get(t)]
        missing = np.setdiff1d(trained_ids, ds.items["item_id"].to_numpy())
        if not allow_new_items or changed or len(missing):
            why = f"changed tables {changed}" if changed else f"{len(missing)} trained items missing" if len(missing) else "a different catalogue"
            raise DatasetError(
                f"{folder}: model was trained on dataset {meta['dataset_fingerprint'][:12]}…, not {ds.manifest.fingerprint[:12]}… ({why})"
                + ("" if allow_new_items else "; only a catalogue that grew can be used, with new items allowed")
            )
    fs = build_features(
        ds, load_or_create_split(ds), feature_config_from(meta), require_style=model_config_from(meta).uses_style, encoders=encoders_from(meta), through_end=is_deploy(meta)
    )
    fs = fs.with_vocab(tuple(meta["vocab_folds"]))
    saved_vocab = Vocab(**meta["vocab"])
    vocab = Vocab.of(fs)
    if asdict(saved_vocab) | {"n_items": 0} != asdict(vocab) | {"n_items": 0}:
        raise DatasetError(f"{folder}: vocabulary {saved_vocab} does not match the dataset's {vocab}")
    model = TwoTower(model_config_from(meta), vocab, TwoTower.item_tables(fs))
    saved = load_file(str(folder / WEIGHTS))
    state = model.state_dict()
    buffers = set(TwoTower.item_tables(fs))
    for name, tensor in saved.items():
        if name in buffers:
            continue  # per-item feature buffers: rebuilt above from the data and the encoders
        if name.endswith(HISTORY_TABLE):
            # rows follow the catalogue order: move each trained item's row to its new place
            row = {i: r for r, i in enumerate(fs.items.ids.tolist())}
            remapped = torch.zeros_like(state[name])
            remapped[torch.tensor([row[i] for i in trained_ids])] = tensor
            tensor = remapped
        state[name] = tensor
    model.load_state_dict(state)
    model.eval()
    return model, fs
