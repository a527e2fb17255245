"""The two-tower the ranker's training windows see.

The served two-tower is trained on every event before the test cutoff (or, deployed, the end
of the data), so in the training windows its scores have seen the very events that are the
windows' labels: the ranker learns to trust it far more than it deserves on the test fold
(or tomorrow). The windows therefore see a two-tower trained the same way on the events
before them: one for all, trained before the first window (default), or one per window,
trained before its start (``[rank] window_two_tower_per_window``); the lists scored and
served still use the served two-tower. On the StyleMart demo the single one moved the
ranker's validation NDCG@10 down (0.085-0.093 to 0.075-0.078: the leak was inflating it)
and its test Recall@50 up (docs/ranking.md)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from data.split import SplitConfig, load_or_create_split, make_split
from data.validate import ValidatedDataset
from recsys.config import RunConfig
from recsys.features import FeatureSet, build_features
from recsys.rank.config import RankConfig, RankConfigError
from recsys.rank.ranker import window_starts


def train_window_two_tower(
    ds: ValidatedDataset, fs: FeatureSet, config: RankConfig, run_config: RunConfig, cutoff: int, echo: Callable[[str], None] = lambda _: None, before: int | None = None,
):
    """A ``recsys.train.TwoTowerRecommender`` trained with ``run_config`` (the served model's
    [model] / [train] / [features]) on the events before ``before`` (default: the first of
    the ranker's windows before ``cutoff``), its own validation the ``val_days`` before that,
    then refit as configured. Users and items keep ``fs``'s rows (the ranker indexes them so)."""
    from recsys.train import Trainer, TwoTowerRecommender

    first = window_starts(cutoff, config)[0] if before is None else before
    split = load_or_create_split(ds)
    day = dt.datetime.fromtimestamp(first, dt.UTC).date()  # the split cuts at a day: never after the window's start
    early = make_split(ds.interactions, ds.items, ds.users, SplitConfig(cutoff=day, test_fraction=None, val_days=split.config.val_days), split.interactions_sha256)
    if early.counts.get("train", 0) == 0:
        raise RankConfigError(f"no event before {day} (the first training window's start) to train the windows' two-tower on; use fewer or shorter windows, or [rank] window_two_tower = false")
    fs_early = build_features(ds, early, fs.config, require_style=bool(fs.items.has_style.any()))
    if list(fs_early.items.ids) != list(fs.items.ids) or list(fs_early.user_ids) != list(fs.user_ids):
        raise RuntimeError("the windows' feature set orders items or users differently from the served one's")
    echo(f"training the two-tower the ranker's windows see, on the events before {day} (the served one has seen the windows' labels)")
    trained = Trainer(fs_early, run_config.model, run_config.train, progress=False).fit()
    echo(f"  best epoch {trained.best_epoch}, validation Recall@50 {trained.best_val_recall_50:.4f}")
    return TwoTowerRecommender(trained.model, trained.features)


def train_window_two_towers(
    ds: ValidatedDataset, fs: FeatureSet, config: RankConfig, run_config: RunConfig, cutoff: int, echo: Callable[[str], None] = lambda _: None,
) -> list:
    """The two-tower each of the ranker's windows before ``cutoff`` sees, in window order:
    with ``[rank] window_two_tower_per_window`` one per window, trained on the events before
    its start; else the one trained before the first window, for all."""
    starts = window_starts(cutoff, config)
    if not config.window_two_tower_per_window:
        return [train_window_two_tower(ds, fs, config, run_config, cutoff, echo)] * len(starts)
    return [train_window_two_tower(ds, fs, config, run_config, cutoff, echo, before=s) for s in starts]
