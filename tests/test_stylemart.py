from __future__ import annotations

import polars as pl

from data.dataset import DatasetDir
from data.split import SplitConfig, assign_folds, split_dataset
from data.stylemart import STYLE_NAMES, generate
from data.validate import validate_dataset


def test_same_seed_gives_identical_tables_and_images(tiny_stylemart, tmp_path):
    again = generate(tmp_path / "again", "tiny", seed=3, workers=1)
    first = DatasetDir(tiny_stylemart).manifest()
    assert again.content_sha256 == first.content_sha256
    assert again.extra["images_sha256"] == first.extra["images_sha256"]
    other = generate(tmp_path / "other", "tiny", seed=4, workers=1)
    assert other.content_sha256["interactions"] != first.content_sha256["interactions"]
    assert other.extra["images_sha256"] != first.extra["images_sha256"]


def test_rerun_reuses_existing_dataset(tiny_stylemart):
    before = DatasetDir(tiny_stylemart).manifest()
    again = generate(tiny_stylemart, "tiny", seed=3)
    assert again.created_at == before.created_at


def test_generated_dataset_is_valid_with_ground_truth(tiny_stylemart):
    ds = validate_dataset(tiny_stylemart)  # decodes every image
    for rep in ds.report.tables.values():
        assert rep.quarantined == 0, rep
    assert set(ds.interactions["event"].unique()) == {"view", "click", "cart", "purchase"}
    assert ds.reviews.height > 0 and ds.reviews["rating"].is_between(1, 5).all()
    gt = DatasetDir(tiny_stylemart).ground_truth_dir
    items_truth = pl.read_parquet(gt / "items.parquet")
    users_truth = pl.read_parquet(gt / "users.parquet")
    assert set(items_truth["style"]) <= set(STYLE_NAMES) and items_truth.height == ds.items.height
    assert users_truth.height == ds.users.height
    affinities = users_truth["style_affinity"].to_numpy()
    assert affinities.shape == (ds.users.height, len(STYLE_NAMES))
    assert abs(affinities.sum(axis=1) - 1).max() < 1e-4
    assert len(STYLE_NAMES) >= 12 and ds.items["category"].n_unique() >= 8


def test_funnel_and_style_signal(tiny_stylemart):
    ds = validate_dataset(tiny_stylemart, write=False)
    counts = dict(ds.interactions.group_by("event").len().iter_rows())
    assert counts["view"] > counts["click"] > counts["cart"] > counts["purchase"] > 0
    # users buy items of the styles they like: ground-truth affinity of purchased items
    # is well above the 1/12 a style-blind shopper would show
    gt = DatasetDir(tiny_stylemart).ground_truth_dir
    users = pl.read_parquet(gt / "users.parquet").select("user_id", "style_affinity")
    items = pl.read_parquet(gt / "items.parquet").select("item_id", "style_index")
    bought = ds.interactions.filter(pl.col("event") == "purchase").join(users, on="user_id").join(items, on="item_id")
    aff = bought.select(pl.col("style_affinity").arr.get(pl.col("style_index"))).to_series()
    assert aff.mean() > 3 / len(STYLE_NAMES)


def test_items_keep_arriving_so_test_has_cold_items(tiny_stylemart):
    ds = validate_dataset(tiny_stylemart, write=False)
    split = split_dataset(ds, SplitConfig(test_fraction=0.2))
    test = assign_folds(ds.interactions, split).filter(pl.col("fold") == "test")
    assert set(test["item_id"]) & split.cold_items
