"""Serving the ranker: rebuild a :class:`RankedRecommender` from a trained booster, and write
every user's ranked lists (the candidate union re-ordered by the ranker) in the resumable
parquet parts of :mod:`recsys.serving`.

Pure: the booster, its config and the two-tower come in as objects (the MLflow side is in
``pipelines/``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from data.validate import ValidatedDataset
from recsys.features import FeatureSet
from recsys.features.featureset import PROFILE_SCORES_KEPT
from recsys.rank.config import RankConfig
from recsys.rank.features import ITEM_EVENTS, pair_features
from recsys.rank.ranker import NEW_ITEM_BOOST, RankedRecommender, RankerFit
from recsys.rank.run import generator_and_context
from recsys.serving import CandidateJob, LoadedModel, write_parts
from recsys.sharding import DistContext

TOP_CONTRIBUTIONS = 3  # feature contributions per row with --explain
CONTRIBUTION_TYPE = pl.List(pl.Struct({"feature": pl.String, "contribution": pl.Float32}))
SCORE_BATCH_USERS = 1024  # users whose candidates are scored at once, within a part of any --chunk-size
MIN_SCORE_BATCH_USERS = 128


def score_batch_users(n_items: int) -> int:
    """Users scored at once: ``SCORE_BATCH_USERS``, fewer on a catalogue of over ~16,000 items,
    so that a batch's (users x catalogue) score matrices stay within ``PROFILE_SCORES_KEPT``
    cells (64 MB each; kept, the sources and the features share them), down to
    ``MIN_SCORE_BATCH_USERS``."""
    return max(MIN_SCORE_BATCH_USERS, min(SCORE_BATCH_USERS, PROFILE_SCORES_KEPT // max(n_items, 1)))


@dataclass
class ServedRanker:
    """A registered ranker rebuilt for one dataset: the ranked recommender over the two-tower
    it was trained with. ``version`` labels it (e.g. ``stylerec-ranker/3``)."""

    recommender: RankedRecommender
    two_tower: LoadedModel
    version: str

    @property
    def fs(self) -> FeatureSet:
        return self.two_tower.fs

    @property
    def query_time(self) -> int:
        """Serving time: just after the last event in the data (as the two-tower's)."""
        return self.two_tower.query_time

    @property
    def config(self) -> RankConfig:
        return self.recommender.gen.config


def served_ranker(
    ds: ValidatedDataset, config: RankConfig, booster, features: list[str], two_tower: LoadedModel, version: str, name: str = "multi-source + ranker", new_item_boost: float = 0.0,
) -> ServedRanker:
    """The candidate generator, feature context and ranked recommender of a trained ``booster``
    (LightGBM) over ``features`` (its feature names, in its column order) and its new-item
    boost, as training built them."""
    fs = two_tower.fs
    gen, ctx = generator_and_context(ds, fs, config, two_tower.recommender)
    n_trees = int(booster.current_iteration())
    fit = RankerFit(booster, list(features), n_trees, math.nan, [], 0, 0, new_item_boost=new_item_boost)
    return ServedRanker(RankedRecommender(gen, ctx, fit, name), two_tower, version)


def top_contributions(contrib: np.ndarray, names: list[str], n: int = TOP_CONTRIBUTIONS) -> list[list[dict]]:
    """Per row of LightGBM's ``pred_contrib`` matrix (features..., bias), its ``n`` feature
    contributions largest in absolute value, largest first: [{"feature", "contribution"}]."""
    contrib = np.asarray(contrib, np.float64)
    feats = contrib[:, : len(names)]
    order = np.argsort(-np.abs(feats), axis=1, kind="stable")[:, :n]
    return [[{"feature": names[j], "contribution": float(feats[r, j])} for j in row] for r, row in enumerate(order)]


def format_contributions(items: list[dict]) -> str:
    """``two_tower_dot:+0.41,item_pop_7d:+0.22`` (for printing)."""
    return ",".join(f"{c['feature']}:{c['contribution']:+.2f}" for c in items)


def _sources_expr(sources: tuple[str, ...]) -> pl.Expr:
    """The names of the sources whose list holds the item, in the config's order."""
    return pl.concat_list([pl.when(pl.col(f"{s}_rank").is_not_null()).then(pl.lit(s)).otherwise(pl.lit(None, pl.String)) for s in sources]).list.drop_nulls().alias("sources")


def _empty_part(explain: bool) -> pl.DataFrame:
    """A part of users without any candidate (same columns)."""
    schema = {"user_id": pl.String, "rank": pl.Int32, "item_id": pl.String, "score": pl.Float32, "model_version": pl.String, "sources": pl.List(pl.String)}
    if explain:
        schema["top_contributions"] = CONTRIBUTION_TYPE
    return pl.DataFrame(schema=schema)


def ranked_part(served: ServedRanker, users: np.ndarray, job: CandidateJob, excluded: np.ndarray) -> pl.DataFrame:
    """The top-k of the ranked candidate union of one chunk of users at the serving time:
    excluded items and (``job.drop_bought``) the user's own purchases dropped; ``sources``
    lists the sources that returned each item; with ``job.explain`` its top feature
    contributions. Scored :func:`score_batch_users` at a time, whatever the part's size."""
    users = np.asarray(users, np.int64)
    step = score_batch_users(served.fs.items.n)
    batches = [ranked_batch(served, users[lo : lo + step], job, excluded) for lo in range(0, len(users), step)]
    return pl.concat(batches) if batches else _empty_part(job.explain)


def ranked_batch(served: ServedRanker, users: np.ndarray, job: CandidateJob, excluded: np.ndarray) -> pl.DataFrame:
    """:func:`ranked_part` of one batch of users."""
    rec, fs, time = served.recommender, served.fs, served.query_time
    users = np.asarray(users, np.int64)
    union = rec.gen.union(users, time)
    if union.height:
        union = union.filter(~pl.Series(excluded[union["i"].to_numpy()]))
    if union.height and job.drop_bought:
        own = fs.items_before(users, time, event="purchase")
        bought = pl.DataFrame({"u": np.repeat(users, [len(o) for o in own]), "i": np.concatenate([*own, np.zeros(0, np.int64)]).astype(np.int64)})
        union = union.join(bought, on=["u", "i"], how="anti", maintain_order="left")
    if not union.height:
        return _empty_part(job.explain)
    frame = pair_features(fs, union, time, rec.ctx)
    scored = frame.select("u", "i", _sources_expr(rec.gen.source_names)).with_columns(
        pl.Series("score", rec.predict(frame).astype(np.float32)), pl.Series("_row", np.arange(frame.height))
    )
    top = scored.sort(["u", "score", "i"], descending=[False, True, False]).with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over("u").alias("rank")).filter(pl.col("rank") <= job.k)
    out = top.select(
        pl.Series("user_id", fs.user_ids[top["u"].to_numpy()]).cast(pl.String),
        "rank",
        pl.Series("item_id", fs.items.ids[top["i"].to_numpy()]).cast(pl.String),
        "score",
        pl.lit(served.version, pl.String).alias("model_version"),
        "sources",
    )
    if job.explain:
        rows = top["_row"].to_numpy()
        x = frame.select(rec.fit.features).to_numpy().astype(np.float32)
        contrib = rec.fit.model.predict(x[rows], pred_contrib=True, num_threads=0)
        # the new-item boost is part of the score: one more "feature" (before the bias column)
        boost = rec.fit.new_item_boost * (frame[ITEM_EVENTS].to_numpy()[rows] == 0)
        contrib = np.insert(contrib, contrib.shape[1] - 1, boost, axis=1)
        out = out.with_columns(pl.Series("top_contributions", top_contributions(contrib, [*rec.fit.features, NEW_ITEM_BOOST]), dtype=CONTRIBUTION_TYPE))
    return out


def generate_ranked_candidates(
    served: ServedRanker, out: Path, job: CandidateJob, excluded: np.ndarray, progress: bool = True, max_parts: int | None = None, ranks: DistContext | None = None
) -> dict:
    """Write every user's ranked top-k to ``out`` (parts as ``generate_candidates`` writes
    them, resumable); the pinned job names the ranker and its two-tower, so parts of a
    ranked and an unranked job (or of two rankers) never mix."""
    if job.steer_item is not None:
        raise ValueError("steering applies to the two-tower's retrieval, not to the ranked lists")
    fs = served.fs
    params = {
        **asdict(job), "ranker_version": served.version, "model_version": served.two_tower.version, "rank_config": asdict(served.config),
        "features": served.recommender.fit.features, "dataset": fs.fingerprint, "query_time": served.query_time,
    }
    return write_parts(fs, served.version, out, job, params, lambda users: ranked_part(served, users, job, excluded), progress, max_parts, ranks, served.recommender.expect_users)
