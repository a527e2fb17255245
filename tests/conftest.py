from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from data.dataset import DatasetDir

UTC = dt.UTC


def _ts(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2026, 3, 1, hour, tzinfo=UTC) + dt.timedelta(days=day)


def write_image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def build_dataset(root: Path, items=None, users=None, interactions=None, reviews=None) -> DatasetDir:
    """A small valid dataset (3 users, 4 items with images) with any table replaced."""
    dd = DatasetDir(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        write_image(root / "images" / f"i{i}.png", seed=i)
    default_items = pl.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(4)],
            "title": ["red shirt", "blue mug", "floral dress", "plaid bag"],
            "description": ["a shirt", "a mug", "a dress", "a bag"],
            "category": ["shirt", "mug", "dress", "bag"],
            "price": [10.0, 5.0, 40.0, 60.0],
            "image_path": [f"images/i{i}.png" for i in range(4)],
            "created_at": [_ts(0)] * 3 + [_ts(20)],
        }
    )
    default_users = pl.DataFrame({"user_id": ["u0", "u1", "u2"], "age": [30, 40, 50]})
    default_interactions = pl.DataFrame(
        {
            "user_id": ["u0", "u0", "u0", "u1", "u1", "u2", "u2", "u2"],
            "item_id": ["i0", "i1", "i3", "i1", "i2", "i0", "i2", "i3"],
            "ts": [_ts(1), _ts(5), _ts(25), _ts(2), _ts(26), _ts(3), _ts(10), _ts(27)],
            "event": ["view", "purchase", "view", "click", "cart", "view", "purchase", "purchase"],
            "quantity": [1, 2, 1, 1, 1, 1, 1, 3],
        }
    )
    default_reviews = pl.DataFrame(
        {
            "user_id": ["u0", "u2"],
            "item_id": ["i1", "i2"],
            "ts": [_ts(6), _ts(11)],
            "rating": [5, 2],
            "text": ["love it", "not my style"],
        }
    )
    for name, given, default in (
        ("items", items, default_items),
        ("users", users, default_users),
        ("interactions", interactions, default_interactions),
        ("reviews", reviews, default_reviews),
    ):
        df = default if given is None else (given(default) if callable(given) else given)
        if df is not None:
            dd.write_table(name, df)
    dd.write_manifest("fixture", "test")
    return dd


@pytest.fixture
def make_dataset(tmp_path):
    def make(name: str = "ds", **tables) -> DatasetDir:
        return build_dataset(tmp_path / name, **tables)

    return make


FAST_TRAIN_TOML = "[train]\nepochs = 2\nbatch_size = 64\nval_users = 200\n"
FAST_RANK_TOML = """[rank]
windows = 3
window_days = 7.0
n_estimators = 20
early_stopping_rounds = 5
negatives_per_user = 10
als_factors = 8
als_iterations = 3
[rank.sources]
two_tower = 30
als = 30
item_cf = 30
style_knn = 20
new_arrivals = 10
"""


@dataclass(frozen=True)
class FastConfigs:
    train: Path  # a two-epoch two-tower
    rank: Path  # a small ranker over five sources


@pytest.fixture
def fast_configs(tmp_path) -> FastConfigs:
    """TOML files for the jobs' end-to-end tests: a quick `train` and `rank train` on `tiny`."""
    (tmp_path / "fast.toml").write_text(FAST_TRAIN_TOML)
    (tmp_path / "rank.toml").write_text(FAST_RANK_TOML)
    return FastConfigs(tmp_path / "fast.toml", tmp_path / "rank.toml")


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A fresh MLflow sqlite store for one test, with the test's folder as working directory."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def tiny_stylemart(tmp_path_factory) -> Path:
    """The `tiny` StyleMart preset, generated once per test session."""
    from data.stylemart import generate

    out = tmp_path_factory.mktemp("stylemart") / "tiny"
    generate(out, "tiny", seed=3, workers=2)
    return out


@pytest.fixture(scope="session")
def tiny_embedded(tiny_stylemart, tmp_path_factory) -> Path:
    """A copy of the tiny StyleMart dataset with style embeddings and a saved split."""
    import shutil

    from data.split import SplitConfig, split_dataset
    from data.validate import load_dataset
    from style.embeddings import embed_catalogue
    from style.encoder import MagentaStyleEncoder

    root = tmp_path_factory.mktemp("embedded") / "tiny"
    shutil.copytree(tiny_stylemart, root)
    ds = load_dataset(root)
    embed_catalogue(root, ds.items, MagentaStyleEncoder(), progress=False)
    split_dataset(ds, SplitConfig(test_fraction=0.25, val_days=10))
    return root


@pytest.fixture(scope="session")
def tiny_features(tiny_embedded):
    from data.split import load_or_create_split
    from data.validate import load_dataset
    from recsys.features import build_features

    ds = load_dataset(tiny_embedded)
    return build_features(ds, load_or_create_split(ds))
