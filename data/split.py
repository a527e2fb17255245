"""Train / validation / test splits, saved in the dataset so every model sees the same one.

The default is a *global temporal* split: everything before the cutoff is history the
model may learn from (its last ``val_days`` held out for validation), everything after is
the future it must predict. Per-user leave-last-n is available for comparison with papers
that use it. Items with no interaction before the cutoff are *cold items*, users with
none are *cold users*.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any, Literal

import polars as pl

from data.dataset import DatasetDir, DatasetError
from data.io import read_json, write_json, write_parquet
from data.validate import LOCK_WAIT_S, ValidatedDataset

SPLIT_FILE = "split.json"
FOLDS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    """How to split; exactly one of ``cutoff`` / ``test_fraction`` for the temporal split.

    ``test_fraction`` is a fraction of the timeline: 0.2 puts the last fifth of the time
    between the first and the last event in test.
    """

    strategy: Literal["temporal", "leave_last_n"] = "temporal"
    cutoff: dt.date | None = None
    test_fraction: float | None = 0.2
    val_days: int = 7
    leave_last_n: int = 1  # for strategy="leave_last_n": last n interactions of a user are test, the n before val

    def __post_init__(self) -> None:
        if self.strategy == "temporal":
            if (self.cutoff is None) == (self.test_fraction is None):
                raise ValueError("temporal split needs exactly one of cutoff or test_fraction")
            if self.test_fraction is not None and not 0.0 < self.test_fraction < 1.0:
                raise ValueError(f"test_fraction must lie in (0, 1), got {self.test_fraction}")
        elif self.strategy == "leave_last_n":
            if self.leave_last_n < 1:
                raise ValueError("leave_last_n must be >= 1")
        else:
            raise ValueError(f"unknown split strategy {self.strategy!r}")
        if self.val_days < 0:
            raise ValueError("val_days must be >= 0")


@dataclass(frozen=True)
class Split:
    """A saved split: its parameters, its boundaries and the cold items/users."""

    config: SplitConfig
    interactions_sha256: str
    test_start: dt.datetime | None  # temporal only
    val_start: dt.datetime | None
    counts: dict[str, int]
    cold_items: frozenset[str]
    cold_users: frozenset[str]

    def to_json(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg["cutoff"] = self.config.cutoff.isoformat() if self.config.cutoff else None
        return {
            "config": cfg,
            "interactions_sha256": self.interactions_sha256,
            "test_start": self.test_start.isoformat() if self.test_start else None,
            "val_start": self.val_start.isoformat() if self.val_start else None,
            "counts": self.counts,
            "n_cold_items": len(self.cold_items),
            "n_cold_users": len(self.cold_users),
        }


def _fold_temporal(test_start: dt.datetime, val_start: dt.datetime) -> pl.Expr:
    return (
        pl.when(pl.col("ts") >= test_start)
        .then(pl.lit("test"))
        .when(pl.col("ts") >= val_start)
        .then(pl.lit("val"))
        .otherwise(pl.lit("train"))
    )


def _fold_leave_last_n(n: int, with_val: bool) -> pl.Expr:
    # rank from the end of each user's history; ties broken by the row order of the table
    rank_from_end = pl.int_range(pl.len()).reverse().over("user_id", order_by=["ts", "__row"])
    expr = pl.when(rank_from_end < n).then(pl.lit("test"))
    if with_val:
        expr = expr.when(rank_from_end < 2 * n).then(pl.lit("val"))
    return expr.otherwise(pl.lit("train"))


def temporal_boundaries(interactions: pl.DataFrame, config: SplitConfig) -> tuple[dt.datetime, dt.datetime]:
    if config.cutoff is not None:
        test_start = dt.datetime.combine(config.cutoff, dt.time(), tzinfo=dt.UTC)
    else:
        ts = interactions.get_column("ts")
        if ts.len() == 0:
            raise DatasetError("cannot split an empty interactions table")
        first, last = ts.min(), ts.max()
        # the last `test_fraction` of the timeline (time span, not event count), to the second
        test_start = last - (last - first) * float(config.test_fraction)
        test_start = test_start.replace(microsecond=0)
    val_start = test_start - dt.timedelta(days=config.val_days)
    return test_start, val_start


def assign_folds(interactions: pl.DataFrame, split: Split | SplitConfig) -> pl.DataFrame:
    """``interactions`` with a ``fold`` column (train / val / test)."""
    config = split.config if isinstance(split, Split) else split
    if config.strategy == "temporal":
        if isinstance(split, Split):
            test_start, val_start = split.test_start, split.val_start
        else:
            test_start, val_start = temporal_boundaries(interactions, config)
        return interactions.with_columns(_fold_temporal(test_start, val_start).alias("fold"))
    df = interactions.with_row_index("__row")
    return df.with_columns(_fold_leave_last_n(config.leave_last_n, config.val_days > 0).alias("fold")).drop("__row")


def make_split(interactions: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame, config: SplitConfig, interactions_sha256: str) -> Split:
    folded = assign_folds(interactions, config)
    test_start = val_start = None
    if config.strategy == "temporal":
        test_start, val_start = temporal_boundaries(interactions, config)
    counts = dict(folded.group_by("fold").len().iter_rows())
    counts = {f: int(counts.get(f, 0)) for f in FOLDS}
    # cold = no interaction before the cutoff (train or validation)
    history = folded.filter(pl.col("fold") != "test")
    seen_items = set(history.get_column("item_id").unique().to_list())
    seen_users = set(history.get_column("user_id").unique().to_list())
    cold_items = frozenset(set(items.get_column("item_id").to_list()) - seen_items)
    cold_users = frozenset(set(users.get_column("user_id").to_list()) - seen_users)
    return Split(config, interactions_sha256, test_start, val_start, counts, cold_items, cold_users)


def save_split(dd: DatasetDir, split: Split) -> None:
    with dd.lock("writing the split", wait=LOCK_WAIT_S):
        _write_split(dd, split)


def _write_split(dd: DatasetDir, split: Split) -> None:
    write_parquet(pl.DataFrame({"item_id": sorted(split.cold_items)}, schema={"item_id": pl.String}), dd.split_dir / "cold_items.parquet")
    write_parquet(pl.DataFrame({"user_id": sorted(split.cold_users)}, schema={"user_id": pl.String}), dd.split_dir / "cold_users.parquet")
    write_json(split.to_json(), dd.split_dir / SPLIT_FILE)  # written last: marks the split complete


def load_split(dd: DatasetDir) -> Split | None:
    path = dd.split_dir / SPLIT_FILE
    if not path.is_file():
        return None
    obj = read_json(path)
    cfg = dict(obj["config"])
    cfg["cutoff"] = dt.date.fromisoformat(cfg["cutoff"]) if cfg.get("cutoff") else None
    return Split(
        config=SplitConfig(**cfg),
        interactions_sha256=obj["interactions_sha256"],
        test_start=dt.datetime.fromisoformat(obj["test_start"]) if obj["test_start"] else None,
        val_start=dt.datetime.fromisoformat(obj["val_start"]) if obj["val_start"] else None,
        counts=obj["counts"],
        cold_items=frozenset(pl.read_parquet(dd.split_dir / "cold_items.parquet").get_column("item_id").to_list()),
        cold_users=frozenset(pl.read_parquet(dd.split_dir / "cold_users.parquet").get_column("user_id").to_list()),
    )


def split_dataset(ds: ValidatedDataset, config: SplitConfig) -> Split:
    """Make the split for a validated dataset and save it in the dataset folder."""
    sha = ds.manifest.content_sha256.get("interactions", "")
    split = make_split(ds.interactions, ds.items, ds.users, config, sha)
    save_split(ds.dir, split)
    return split


def load_or_create_split(ds: ValidatedDataset, default: SplitConfig | None = None) -> Split:
    """The saved split of ``ds``; a default one is made and saved if there is none.

    A split saved for a different interactions table is refused rather than silently
    reused: evaluating on it would compare models on different data.
    """
    split = load_split(ds.dir)
    if split is None:
        return split_dataset(ds, default or SplitConfig())
    current = ds.manifest.content_sha256.get("interactions", "")
    if split.interactions_sha256 != current:
        raise DatasetError(
            f"{ds.dir.split_dir / SPLIT_FILE}: saved split was made for another interactions table "
            f"(sha256 {split.interactions_sha256[:12]}… vs {current[:12]}…); run `stylerec data split` again"
        )
    return split

