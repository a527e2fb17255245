"""Candidate sources: each returns its top-N items per user at a query time, fitted only on
events before that time; their union per user keeps every source's rank and score.

A source is anything with ``fit(fs, before)`` and ``scores(users, time) -> (U, n_items)``
(the baselines are sources as they are). :func:`source_candidates` turns the scores into a
top-N list of the items on sale while the list is shown: created before ``until`` (the
end of the list's life; default the query time), never (with ``exclude_seen``) items the
user already interacted with. A list built at ``time`` and shown until ``until`` may hold
items launched in between (a storefront refreshes its lists; the offline evaluation
scores one list per user for the whole test fold, for every model alike); every score
and feature still uses only events before ``time``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.baselines import ContentKNN, ImplicitMF, Popularity
from recsys.evaluate import Recommender, top_k
from recsys.features import DAY, EVENT_CODES, FeatureSet
from recsys.features.events import KEY
from recsys.rank.config import SOURCE_NAMES, RankConfig, RankConfigError


def recent_events(fs: FeatureSet, users: np.ndarray, time: int, last: int) -> tuple[np.ndarray, np.ndarray]:
    """(query row, event position) of each user's last ``last`` events before ``time``."""
    users = np.asarray(users, np.int64)
    pos = np.searchsorted(fs.ev_key, users * KEY + int(time), side="left")
    lo = np.maximum(fs.ev_start[users], pos - last)
    lengths = pos - lo
    row = np.repeat(np.arange(len(users)), lengths)
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return row, lo[row] + within


class TwoTowerSource:
    """A trained two-tower model's scores (exact inner product of its user and item vectors)."""

    def __init__(self, recommender: Recommender):
        self.recommender = recommender

    def fit(self, fs: FeatureSet, before: int) -> TwoTowerSource:
        return self

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        return np.asarray(self.recommender.scores(users, time), np.float32)


@dataclass
class ItemCF:
    """Item-to-item co-occurrence (cosine over users who touched both) from the user's last
    ``recent`` items."""

    recent: int = 20

    def fit(self, fs: FeatureSet, before: int) -> ItemCF:
        sel = fs.ev_ts < before
        x = sp.csr_matrix((np.ones(int(sel.sum()), np.float32), (fs.ev_user[sel], fs.ev_item[sel])), shape=(fs.n_users, fs.items.n))
        x.data[:] = 1.0  # duplicates summed: binarise
        co = (x.T @ x).tocsr()
        counts = np.asarray(co.diagonal(), np.float64)
        co.setdiag(0)
        co.eliminate_zeros()
        norm = 1.0 / np.sqrt(np.maximum(counts, 1.0))
        self.co = sp.diags(norm) @ co @ sp.diags(norm)
        self.fs = fs
        return self

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        row, pos = recent_events(self.fs, users, time, self.recent)
        h = sp.csr_matrix((np.ones(len(row), np.float32), (row, self.fs.ev_item[pos])), shape=(len(users), self.fs.items.n))
        return np.asarray((h @ self.co).todense(), np.float32)


def category_share(fs: FeatureSet, users: np.ndarray, time: int, groups: np.ndarray | None = None, prior: float = 0.0) -> np.ndarray:
    """(U, n_groups): each user's share of events before ``time`` per item group (default: the
    item category, n_categories + 1 groups), with ``prior`` pseudo-events in every group."""
    users = np.asarray(users, np.int64)
    groups = fs.items.category if groups is None else groups
    n_cat = len(fs.items.categories) + 1 if groups is fs.items.category else int(groups.max()) + 1
    counts = np.full((len(users), n_cat), prior, np.float64)
    start, end = fs.ev_start[users], np.searchsorted(fs.ev_key, users * KEY + int(time), side="left")
    lengths = end - start
    row = np.repeat(np.arange(len(users)), lengths)
    pos = np.repeat(start, lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    np.add.at(counts, (row, groups[fs.ev_item[pos]]), 1.0)
    return counts / np.maximum(counts.sum(1, keepdims=True), 1e-12)


@dataclass
class PopularInCategory:
    """Recent popularity within the user's categories (weighted by the user's share of them)."""

    window_days: float = 7.0

    def fit(self, fs: FeatureSet, before: int) -> PopularInCategory:
        self.fs = fs
        self.pop = Popularity(window_days=self.window_days).fit(fs, before)._scores
        return self

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        share = category_share(self.fs, users, time)[:, self.fs.items.category]
        return np.where(share > 0, share * (1.0 + self.pop[None, :]), -np.inf).astype(np.float32)


@dataclass
class NewArrivals:
    """Items created in the ``days`` before the query (or later, while the list is shown),
    ordered by the user's style profile: the way cold items reach the ranker."""

    days: float = 14.0

    def fit(self, fs: FeatureSet, before: int) -> NewArrivals:
        self.fs = fs
        return self

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        created = self.fs.items.created_s
        new = created >= time - self.days * DAY  # source_candidates drops those not yet on sale
        items = self.fs.items
        vectors = items.style if items.has_style.any() else items.text  # a catalogue without images: by text
        sims = self.fs.history_profile(users, time, vectors) @ vectors.T
        return np.where(new[None, :], sims, -np.inf).astype(np.float32)


STYLE_SOURCES = ("style_knn",)  # sources that need the items' style vectors


def make_source(name: str, config: RankConfig, two_tower: Recommender | None = None):
    """The (unfitted) source called ``name``; an unknown name is a RankConfigError."""
    if name == "two_tower":
        if two_tower is None:
            raise RankConfigError("source 'two_tower' needs a trained two-tower model")
        return TwoTowerSource(two_tower)
    makers = {
        "als": lambda: ImplicitMF("als", factors=config.als_factors, iterations=config.als_iterations, seed=config.seed, name="als"),
        "item_cf": lambda: ItemCF(config.item_cf_recent),
        "style_knn": lambda: ContentKNN("style", name="style-knn"),
        "text_knn": lambda: ContentKNN("text", name="text-knn"),
        "popular": lambda: Popularity(window_days=config.popular_days, name="popular"),
        "popular_in_category": lambda: PopularInCategory(config.popular_days),
        "new_arrivals": lambda: NewArrivals(config.new_arrival_days),
    }
    if name not in makers:
        raise RankConfigError(f"unknown candidate source {name!r}; known: {list(SOURCE_NAMES)}")
    return makers[name]()


def source_candidates(source, fs: FeatureSet, users: np.ndarray, time: int, n: int, exclude_seen: bool = True, until: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(items (U, n), scores (U, n)) of a fitted source; item -1 / score NaN where it has fewer.
    Items created at or after ``until`` (default ``time``) are not on sale during the list's life."""
    scores = np.asarray(source.scores(users, time), np.float32).copy()
    scores[:, ~(fs.items.created_s < max(int(time), int(until if until is not None else time)))] = -np.inf
    if exclude_seen:
        for row, seen in enumerate(fs.items_before(users, time)):
            scores[row, seen] = -np.inf
    scores[np.isnan(scores)] = -np.inf
    top = top_k(scores, n)
    top_scores = np.take_along_axis(scores, top, axis=1)
    missing = ~np.isfinite(top_scores)
    return np.where(missing, -1, top), np.where(missing, np.nan, top_scores).astype(np.float32)


def candidate_union(users: np.ndarray, per_source: dict[str, tuple[np.ndarray, np.ndarray]]) -> pl.DataFrame:
    """One row per (user row ``u``, item row ``i``) any source returned, with ``<source>_score``
    and ``<source>_rank`` (1 = its best; null where the source did not return the item)."""
    users = np.asarray(users, np.int64)
    union = None
    for name, (items, scores) in per_source.items():
        n = items.shape[1]
        keep = items.ravel() >= 0
        df = pl.DataFrame({
            "u": np.repeat(users, n)[keep],
            "i": items.ravel()[keep].astype(np.int64),
            f"{name}_score": scores.ravel()[keep].astype(np.float32),
            f"{name}_rank": np.tile(np.arange(1, n + 1, dtype=np.float32), len(users))[keep],
        })
        union = df if union is None else union.join(df, on=["u", "i"], how="full", coalesce=True)
    if union is None:
        return pl.DataFrame(schema={"u": pl.Int64, "i": pl.Int64})
    return union.sort(["u", "i"])


def retrieval_recall(union: pl.DataFrame, truth: pl.DataFrame, sources: tuple[str, ...]) -> dict[str, float]:
    """Share of the truth pairs (columns ``u``, ``i``) each source's candidates contain, and
    the union's (``all``). NaN without truth."""
    truth = truth.select("u", "i").unique()
    if truth.height == 0:
        return {**{s: float("nan") for s in sources}, "all": float("nan")}
    hit = truth.join(union, on=["u", "i"], how="left")
    out = {s: float(hit[f"{s}_rank"].is_not_null().sum() / truth.height) for s in sources}
    out["all"] = float(truth.join(union.select("u", "i"), on=["u", "i"], how="semi").height / truth.height)
    return out


def truth_pairs(fs: FeatureSet, start: int, end: int, events: tuple[str, ...], exclude_seen: bool = True) -> pl.DataFrame:
    """(u, i) pairs with an ``events`` event in [start, end); without pairs seen before ``start``
    (``exclude_seen``, as the evaluation's truth)."""
    sel = (fs.ev_ts >= start) & (fs.ev_ts < end) & np.isin(fs.ev_event, [EVENT_CODES[e] for e in events])
    df = pl.DataFrame({"u": fs.ev_user[sel], "i": fs.ev_item[sel]}).unique()
    if exclude_seen:
        before = fs.ev_ts < start
        df = df.join(pl.DataFrame({"u": fs.ev_user[before], "i": fs.ev_item[before]}).unique(), on=["u", "i"], how="anti")
    return df.sort(["u", "i"])


class CandidateGenerator:
    """The configured sources, fitted once per query time, and their union."""

    def __init__(self, fs: FeatureSet, config: RankConfig, two_tower: Recommender | None = None):
        self.fs, self.config = fs, config
        # a catalogue without style vectors (no images) has no style source
        names = [n for n in config.source_names if fs.items.has_style.any() or n not in STYLE_SOURCES]
        if not names:
            raise RankConfigError(f"every configured source needs style vectors, which this dataset lacks: {list(config.source_names)}")
        self.sources = {name: make_source(name, config, two_tower) for name in names}
        self._time: int | None = None

    def at(self, time: int) -> CandidateGenerator:
        """Fit every source on the events before ``time`` (once per time)."""
        if self._time != int(time):
            for source in self.sources.values():
                source.fit(self.fs, int(time))
            self._time = int(time)
        return self

    def per_source(self, users: np.ndarray, time: int, until: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each source's top-N at ``time`` among the items on sale before ``until``."""
        self.at(time)
        return {name: source_candidates(src, self.fs, users, time, self.config.sources[name], self.config.exclude_seen, until) for name, src in self.sources.items()}

    @property
    def source_names(self) -> tuple[str, ...]:
        """The sources in use (the configured ones this dataset supports)."""
        return tuple(self.sources)

    def union(self, users: np.ndarray, time: int, until: int | None = None) -> pl.DataFrame:
        return candidate_union(users, self.per_source(users, time, until))
