"""The offline evaluation protocol: one code path for every model.

Saved global temporal split; full-catalogue ranking; items the user interacted with
before the fold masked from the ranking and from the truth (``mask_seen``, recorded with
the results; turn it off for repeat-purchase studies). Slices: warm vs cold items (truth
restricted to items with / without interactions before the cutoff, ranking unchanged)
and warm vs cold users.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import polars as pl

from recsys import metrics
from recsys.features import FeatureSet


class Recommender(Protocol):
    name: str

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        """(len(users), n_items) scores for user rows queried at ``time`` (seconds)."""
        ...


@dataclass(frozen=True)
class EvalConfig:
    fold: str = "test"
    ks: tuple[int, ...] = (10, 50, 100)
    mask_seen: bool = True
    max_users: int | None = None  # evaluate a seeded sample of users (validation)
    seed: int = 0
    chunk: int = 1024
    shard: tuple[int, int] | None = None  # (rank, world size): this rank's share of the users

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class GroundTruthStyle:
    """StyleMart's true user affinities and item style labels, aligned with feature rows."""

    affinity: np.ndarray  # (n_users, S)
    item_style: np.ndarray  # (n_items,) label index


def load_ground_truth(fs: FeatureSet, root) -> GroundTruthStyle | None:
    from data.dataset import DatasetDir

    gt = DatasetDir(root).ground_truth_dir
    if not (gt / "users.parquet").is_file():
        return None
    users = pl.DataFrame({"user_id": fs.user_ids}).join(pl.read_parquet(gt / "users.parquet"), on="user_id", how="left")
    items = pl.DataFrame({"item_id": fs.items.ids}).join(pl.read_parquet(gt / "items.parquet"), on="item_id", how="left")
    return GroundTruthStyle(users["style_affinity"].to_numpy().astype(np.float32), items["style_index"].to_numpy().astype(np.int64))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def recommend(model: Recommender, fs: FeatureSet, users: np.ndarray, time: int, k: int, mask_seen: bool, chunk: int = 1024) -> np.ndarray:
    out = []
    for start in range(0, len(users), chunk):
        batch = users[start : start + chunk]
        scores = np.asarray(model.scores(batch, time), np.float32).copy()
        if mask_seen:
            for row, seen in enumerate(fs.items_before(batch, time)):
                scores[row, seen] = -np.inf
        out.append(top_k(scores, k))
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def evaluate(model: Recommender, fs: FeatureSet, config: EvalConfig = EvalConfig(), truth_style: GroundTruthStyle | None = None) -> dict[str, dict[str, float]]:
    """Metrics by slice: ``all``, ``warm_items``, ``cold_items``, ``warm_users``, ``cold_users``."""
    users, truth, times = fs.truth(config.fold, mask_seen=config.mask_seen)
    if config.max_users is not None and len(users) > config.max_users:
        pick = np.sort(np.random.default_rng(config.seed).choice(len(users), config.max_users, replace=False))
        users, truth = users[pick], [truth[i] for i in pick]
    if config.shard is not None:
        rank, world = config.shard
        users, truth = users[rank::world], truth[rank::world]
    if len(users) == 0:
        return {}
    time = int(times[0])
    kmax = max(config.ks)
    recs = recommend(model, fs, users, time, kmax, config.mask_seen, config.chunk)

    results: dict[str, dict[str, float]] = {"all": metrics.ranking_metrics(recs, truth, config.ks)}
    cold = fs.items.cold
    for name, keep in (("warm_items", ~cold), ("cold_items", cold)):
        restricted = [t[keep[t]] for t in truth]
        has = np.array([len(t) > 0 for t in restricted])
        if has.any():
            results[name] = metrics.ranking_metrics(recs[has], [t for t, h in zip(restricted, has, strict=True) if h], config.ks)
    cold_users = np.isin(fs.user_ids[users], np.array(sorted(fs.split.cold_users), dtype=object))
    for name, sel in (("warm_users", ~cold_users), ("cold_users", cold_users)):
        if sel.any():
            results[name] = metrics.ranking_metrics(recs[sel], [t for t, s in zip(truth, sel, strict=True) if s], config.ks)

    popularity = fs.popularity(before=time)
    profiles = fs.history_profile(users, time, fs.items.style)
    beyond = results["all"]
    for k in config.ks:
        beyond[f"coverage@{k}"] = metrics.coverage_at_k(recs, fs.items.n, k)
        beyond[f"gini@{k}"] = metrics.exposure_gini_at_k(recs, fs.items.n, k)
        beyond[f"popularity@{k}"] = metrics.mean_popularity_at_k(recs, popularity, k)
        beyond[f"style_consistency@{k}"] = metrics.style_consistency_at_k(recs, profiles, fs.items.style, k)
        if truth_style is not None:
            beyond[f"gt_style_affinity@{k}"] = metrics.ground_truth_affinity_at_k(recs, truth_style.affinity[users], truth_style.item_style, k)
    return results


def results_table(results: dict[str, dict[str, dict[str, float]]]) -> pl.DataFrame:
    """Long table: model x slice x metric -> value."""
    rows = [
        {"model": model, "slice": sl, "metric": m, "value": float(v)}
        for model, slices in results.items()
        for sl, values in slices.items()
        for m, v in values.items()
    ]
    return pl.DataFrame(rows, schema={"model": pl.String, "slice": pl.String, "metric": pl.String, "value": pl.Float64})
