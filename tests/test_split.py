from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from data.dataset import DatasetError
from data.split import SplitConfig, assign_folds, load_or_create_split, load_split, split_dataset
from data.validate import validate_dataset


def test_temporal_cutoff_split(make_dataset):
    ds = validate_dataset(make_dataset().root)
    split = split_dataset(ds, SplitConfig(cutoff=dt.date(2026, 3, 22), test_fraction=None, val_days=12))
    folded = assign_folds(ds.interactions, split)
    cutoff = dt.datetime(2026, 3, 22, tzinfo=dt.UTC)
    train = folded.filter(pl.col("fold") == "train")
    test = folded.filter(pl.col("fold") == "test")
    val = folded.filter(pl.col("fold") == "val")
    assert train["ts"].max() < cutoff - dt.timedelta(days=12)
    assert test["ts"].min() >= cutoff
    assert val.height == 1
    assert val["ts"].min() >= cutoff - dt.timedelta(days=12) and val["ts"].max() < cutoff
    assert train.height + val.height + test.height == ds.interactions.height
    assert split.counts == {"train": train.height, "val": val.height, "test": test.height}
    # i3 is only interacted with after the cutoff: cold, and really unseen in train
    assert split.cold_items == frozenset({"i3"})
    assert not set(train["item_id"]) & split.cold_items
    assert not set(val["item_id"]) & split.cold_items
    assert split.cold_users == frozenset()


def test_fraction_split_puts_the_latest_events_in_test(make_dataset):
    ds = validate_dataset(make_dataset().root)
    split = split_dataset(ds, SplitConfig(test_fraction=0.3, val_days=0))
    folded = assign_folds(ds.interactions, split)
    test = folded.filter(pl.col("fold") == "test")
    rest = folded.filter(pl.col("fold") != "test")
    assert test.height == 3
    assert rest["ts"].max() < test["ts"].min()


def test_leave_last_n(make_dataset):
    ds = validate_dataset(make_dataset().root)
    cfg = SplitConfig(strategy="leave_last_n", cutoff=None, test_fraction=None, val_days=0, leave_last_n=1)
    folded = assign_folds(ds.interactions, split_dataset(ds, cfg))
    last = ds.interactions.sort("ts").group_by("user_id").last()
    test = folded.filter(pl.col("fold") == "test")
    assert sorted(test["item_id"]) == sorted(last["item_id"])
    assert test.height == 3


def test_saved_split_round_trip_and_stale_split_refused(make_dataset, tmp_path):
    dd = make_dataset()
    ds = validate_dataset(dd.root)
    made = split_dataset(ds, SplitConfig(cutoff=dt.date(2026, 3, 22), test_fraction=None))
    loaded = load_split(dd)
    assert loaded == made
    assert load_or_create_split(ds) == made
    # change the interactions: the saved split no longer applies
    dd.write_table("interactions", ds.interactions.head(5))
    dd.write_manifest("fixture", "test")
    with pytest.raises(DatasetError, match="another interactions table"):
        load_or_create_split(validate_dataset(dd.root))


def test_default_split_created_when_missing(make_dataset):
    ds = validate_dataset(make_dataset().root)
    split = load_or_create_split(ds)
    assert split.config == SplitConfig()
    assert (ds.dir.split_dir / "split.json").is_file()


def test_bad_split_config():
    with pytest.raises(ValueError, match="exactly one"):
        SplitConfig(cutoff=dt.date(2026, 1, 1), test_fraction=0.2)
    with pytest.raises(ValueError, match="test_fraction"):
        SplitConfig(test_fraction=1.5)


def test_split_is_written_under_the_folder_lock(make_dataset, tmp_path, monkeypatch):
    import data.split as split_mod
    from data.dataset import DatasetBusyError
    from tests.test_io import _holder

    monkeypatch.setattr(split_mod, "LOCK_WAIT_S", 0.2)
    ds = validate_dataset(make_dataset().root)
    proc, release = _holder(ds.dir.root, tmp_path)
    try:
        with pytest.raises(DatasetBusyError, match=f"in use by PID {proc.pid}"):
            split_dataset(ds, SplitConfig())
    finally:
        release.write_text("go")
        proc.wait(timeout=60)
    assert load_split(ds.dir) is None
    split_dataset(ds, SplitConfig())
    assert load_split(ds.dir) is not None
