"""Candidate sources: each returns its top-N items per user at a query time, fitted only on
events before that time; their union per user keeps every source's rank and score.

A source is anything with ``fit(fs, before)`` and ``scores(users, time) -> (U, n_items)``
(the baselines are sources as they are). :func:`source_candidates` turns the scores into a
top-N list of the items on sale while the list is shown: created before ``until`` (the
end of the list's life; default the query time), never (with ``exclude_seen``) items the
user already interacted with. A list built at ``time`` and shown until ``until`` may hold
items launched in between (a storefront refreshes its lists; the offline evaluation
scores one list per user for the whole test fold, for every model alike); every score
and feature still uses only events before ``time``. A source may instead answer
``top_n(users, time, n, exclude_seen, until) -> (items, scores)`` itself, under the same
rules (the two-tower does, through a FAISS index, without a dense (U, n_items) matrix).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.baselines import ContentKNN, ImplicitMF, Popularity
from recsys.evaluate import Recommender
from recsys.features import DAY, EVENT_CODES, FeatureSet
from recsys.features.events import KEY
from recsys.rank.config import SOURCE_NAMES, RankConfig, RankConfigError


def recent_events(fs: FeatureSet, users: np.ndarray, time: int, last: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(query row, event position) of each user's last ``last`` events before ``time``
    (every event before it with ``last=None``)."""
    users = np.asarray(users, np.int64)
    pos = np.searchsorted(fs.ev_key, users * KEY + int(time), side="left")
    lo = fs.ev_start[users] if last is None else np.maximum(fs.ev_start[users], pos - last)
    lengths = pos - lo
    row = np.repeat(np.arange(len(users)), lengths)
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return row, lo[row] + within


def on_sale_before(time: int, until: int | None) -> int:
    """The end of a list's life: items created before it may be on it."""
    return max(int(time), int(until)) if until is not None else int(time)


def fast_top_k(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, columns) of each row's ``n`` largest, best first (torch.topk: several times
    faster than numpy's argpartition on a (users x catalogue) block)."""
    import torch

    values, cols = torch.topk(torch.from_numpy(np.ascontiguousarray(scores, np.float32)), min(n, scores.shape[1]), dim=1)
    return values.numpy(), cols.numpy().astype(np.int64)


def seen_pairs(fs: FeatureSet, users: np.ndarray, time: int) -> tuple[np.ndarray, np.ndarray]:
    """(query row, item row) of every event of each user before ``time`` (repeats kept): the
    items :func:`source_candidates` leaves out, as one scatter instead of a loop over users."""
    row, pos = recent_events(fs, users, time, None)
    return row, fs.ev_item[pos]


OVERFETCH_QUANTILE = 0.9  # the two-tower's first search over-fetches by this quantile of the batch's seen counts
TABLE_SPAN = 1 << 27  # in_keys looks keys up in a table (bytes) when the sorted keys span at most this


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique`` of integer keys by a sort (numpy 2's default hashes them first: several
    times slower on the ~10^5 keys of a batch)."""
    keys = np.sort(keys)
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys


def in_keys(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``np.isin(keys, table)`` for sorted unique integer ``table``: by a lookup table over its
    span when that is small (a batch's keys: ~10x faster than numpy's default, a sort)."""
    if not len(table) or not keys.size:
        return np.zeros(keys.shape, bool)
    return np.isin(keys, table, kind="table" if int(table[-1]) - int(table[0]) <= TABLE_SPAN else "sort")


def seen_keys(fs: FeatureSet, users: np.ndarray, time: int) -> tuple[np.ndarray, int]:
    """Sorted unique keys (query row * n_items + item) of the items each user interacted with
    before ``time``, and the most of them any user of the batch has: what a top-N taken
    from a list the seen items are still in over-fetches by."""
    row, item = seen_pairs(fs, users, time)
    keys = sorted_unique(row * fs.items.n + item)
    return keys, int(np.bincount(keys // fs.items.n, minlength=len(users)).max(initial=0))


def is_seen(items: np.ndarray, keys: np.ndarray, n_items: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Which entries of ``items`` (U, m), row r for query row ``rows[r]`` (default r), are
    among the seen ``keys``."""
    rows = np.arange(len(items)) if rows is None else np.asarray(rows, np.int64)
    return in_keys(rows[:, None] * n_items + items, keys)


def pairs_top_n(rows: np.ndarray, items: np.ndarray, scores: np.ndarray, n_rows: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best-scored items of each row among the pairs (``rows``, ``items``, ``scores``;
    no NaN score): (items (n_rows, n), scores), best first (ties: lower item first), -1 /
    NaN padded.

    The pairs are laid out one row per query row, items ascending (a candidate union
    already is: then no sort at all), and each row sorted by score, stably: several times
    faster than one sort of every pair by (row, score, item)."""
    rows, items = np.asarray(rows, np.int64), np.asarray(items, np.int64)
    scores = np.asarray(scores)
    top = np.full((n_rows, n), -1, np.int64)
    top_scores = np.full((n_rows, n), np.nan, np.float32)
    if not len(rows):
        return top, top_scores
    key = rows * (int(items.max()) + 1) + items
    if not (key[1:] > key[:-1]).all():
        order = np.argsort(key, kind="stable")
        rows, items, scores = rows[order], items[order], scores[order]
    count = np.bincount(rows, minlength=n_rows)
    slot = np.arange(len(rows)) - (np.cumsum(count) - count)[rows]
    width = int(count.max())
    negated = np.full((n_rows, width), np.inf)  # padding sorts after every item, -inf scores included
    negated[rows, slot] = -scores.astype(np.float64)
    laid = np.full((n_rows, width), -1, np.int64)
    laid[rows, slot] = items
    best = np.argsort(negated, axis=1, kind="stable")[:, :n]
    picked = np.take_along_axis(laid, best, 1)
    kept = picked >= 0
    top[:, : best.shape[1]] = picked
    top_scores[:, : best.shape[1]] = np.where(kept, -np.take_along_axis(negated, best, 1), np.nan)
    return top, top_scores


def keep_top_n(rows: np.ndarray, scores: np.ndarray, n: int, drop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` of each row of a search result (best first) that ``drop`` (same shape)
    leaves in: (items (U, n), scores (U, n)), item -1 / score NaN where fewer are left."""
    keep = ~drop
    slot = np.cumsum(keep, axis=1) - 1
    take = keep & (slot < n)
    r, c = np.nonzero(take)
    items = np.full((len(rows), n), -1, np.int64)
    top_scores = np.full((len(rows), n), np.nan, np.float32)
    items[r, slot[r, c]] = rows[r, c]
    top_scores[r, slot[r, c]] = scores[r, c]
    return items, top_scores


def shared_top_n(ranked: np.ndarray, ranked_scores: np.ndarray, fs: FeatureSet, users: np.ndarray, time: int, n: int, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each user's top ``n`` of one ranking every user shares (``ranked`` items, best first,
    only those that may be listed): its first ``n`` plus the most items a user of the batch
    has seen, less each user's seen items. The top-N of the dense path without the
    (U, n_items) matrix."""
    users = np.asarray(users, np.int64)
    seen, extra = seen_keys(fs, users, time) if exclude_seen else (np.zeros(0, np.int64), 0)
    m = min(n + extra, len(ranked))
    items = np.broadcast_to(ranked[:m], (len(users), m))
    return keep_top_n(items, np.broadcast_to(ranked_scores[:m], (len(users), m)), n, is_seen(items, seen, fs.items.n))


def ranking(scores: np.ndarray, listed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(items, scores) of the ``listed`` items with a finite score, best first (ties: lower item first)."""
    order = np.argsort(-scores, kind="stable")
    order = order[listed[order] & np.isfinite(scores[order])]
    return order, scores[order].astype(np.float32)


@dataclass
class PopularSource(Popularity):
    """:class:`Popularity` as a source: every user gets the same scores, so one ranking per
    list life (``until``), filtered per user, instead of a (U, n_items) matrix per batch."""

    def fit(self, fs: FeatureSet, before: int) -> PopularSource:
        super().fit(fs, before)
        self.fs, self._ranked = fs, {}
        return self

    def top_n(self, users: np.ndarray, time: int, n: int, exclude_seen: bool = True, until: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        bound = on_sale_before(time, until)
        if bound not in self._ranked:
            self._ranked = {bound: ranking(self._scores, self.fs.items.created_s < bound)}
        return shared_top_n(*self._ranked[bound], self.fs, users, time, n, exclude_seen)


class TwoTowerSource:
    """A trained two-tower model's items by inner product of its user and item vectors,
    searched in a :class:`recsys.index.CandidateIndex` (``index_kind``: ``flat`` is exact,
    ``ivf`` / ``hnsw`` / ``auto`` as the index chooses and tunes them).

    A query indexes the items on sale by then (once per bound) and over-fetches by
    the most items a user of the batch has seen and filters them out (as serving does), so
    the lists equal the exact top-N of the dense scores (``scores``, kept for the
    ``Recommender`` protocol)."""

    def __init__(self, recommender: Recommender, index_kind: str = "flat", tune_queries: int = 1000, seed: int = 0):
        self.recommender, self.index_kind, self.tune_queries, self.seed = recommender, index_kind, tune_queries, seed
        self.index = None
        self._before: int | None = None

    def fit(self, fs: FeatureSet, before: int) -> TwoTowerSource:
        """Take ``fs``; the index is built at the first query, for the items on sale by then
        (a window's lists include the items launched before its end, not only before ``before``)."""
        self.fs, self.index, self._before = fs, None, None
        return self

    def _build(self, bound: int, tune_time: int) -> None:
        """Index the items created before ``bound`` (once per bound), tuned on user vectors at ``tune_time``."""
        from recsys.index import CandidateIndex, IndexConfig

        if self.index is not None and self._before == bound:
            return
        fs = self.fs
        items = np.asarray(self.recommender.item_matrix().numpy(), np.float32)
        self.rows = np.flatnonzero(fs.items.created_s < bound)  # index row -> catalogue row
        self.index = None
        if len(self.rows):
            rng = np.random.default_rng(self.seed)
            sample = np.sort(rng.choice(fs.n_users, min(self.tune_queries, fs.n_users), replace=False))
            queries = self.recommender.user_matrix(sample, tune_time).numpy()
            config = IndexConfig(kind=self.index_kind, k=min(100, len(self.rows)), tune_queries=self.tune_queries, seed=self.seed)
            self.index = CandidateIndex.build(items[self.rows], fs.items.ids[self.rows], queries, config)
        self._before = bound

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        return np.asarray(self.recommender.scores(users, time), np.float32)

    def top_n(self, users: np.ndarray, time: int, n: int, exclude_seen: bool = True, until: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        users = np.asarray(users, np.int64)
        fs, n_items = self.fs, self.fs.items.n
        bound = on_sale_before(time, until)
        self._build(bound, int(time))
        if self.index is None or not len(users):
            return np.full((len(users), n), -1, np.int64), np.full((len(users), n), np.nan, np.float32)
        seen, _ = seen_keys(fs, users, time) if exclude_seen else (np.zeros(0, np.int64), 0)
        n_seen = np.bincount(seen // n_items, minlength=len(users))
        queries = self.recommender.user_matrix(users, time).numpy()

        def search(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            scores, found = self.index.search(queries[rows], k)
            items = np.where(found >= 0, self.rows[np.maximum(found, 0)], -1)
            drop = (found < 0) | ~np.isfinite(scores) | ~(fs.items.created_s[np.maximum(items, 0)] < bound)
            drop |= is_seen(items, seen, n_items, rows)
            return keep_top_n(items, scores, n, drop)

        # over-fetch by what most users have seen; the few whose seen items crowd out their
        # top-n are searched again, over-fetching by their own count: the same lists as one
        # search over-fetching by the batch's most, at a fraction of its cost (a top-k heap of
        # n + a heavy user's history for every user)
        first = n + int(np.quantile(n_seen, OVERFETCH_QUANTILE)) if len(users) else n
        items, scores = search(np.arange(len(users)), first)
        short = np.flatnonzero((items[:, -1] < 0) & (n_seen > first - n) & (first < len(self.rows)))
        if len(short):
            items[short], scores[short] = search(short, n + int(n_seen[short].max()))
        return items, scores


def top_k_per_row(m: sp.csr_matrix, k: int, block_cells: int = 1 << 24) -> sp.csr_matrix:
    """``m`` with only each row's ``k`` largest stored entries, through
    dense blocks of rows (``block_cells`` cells each) and torch.topk."""
    import torch

    m = sp.csr_matrix(m)
    if k >= m.shape[1]:
        return m
    rows, cols, vals = [], [], []
    step = max(1, block_cells // max(m.shape[1], 1))
    for lo in range(0, m.shape[0], step):
        block = m[lo : lo + step]
        width = min(k, int(np.diff(block.indptr).max(initial=0)))
        if not width:
            continue
        dense = torch.from_numpy(block.toarray())
        dense[dense == 0] = -torch.inf  # only stored entries may be kept
        top, col = torch.topk(dense, width, dim=1, sorted=True)
        keep = torch.isfinite(top).numpy()
        r = np.broadcast_to(np.arange(lo, lo + len(top))[:, None], keep.shape)
        rows.append(r[keep])
        cols.append(col.numpy()[keep])
        vals.append(top.numpy()[keep])
    if not rows:
        return sp.csr_matrix(m.shape, dtype=m.dtype)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=m.shape)


@dataclass
class ItemCF:
    """Item-to-item co-occurrence (cosine over users who touched both) from the user's last
    ``recent`` items, each item keeping its ``neighbours`` most similar items (``None``: all).

    Pruning the neighbours is the usual item-KNN practice: the co-occurrence matrix of a shop
    is dense (a quarter of all item pairs on StyleMart ``small``), and scoring a batch of users
    costs its number of stored entries."""

    recent: int
    neighbours: int | None  # None: every co-occurring item
    block_cells: int = 1 << 24  # items per block of the co-occurrence matrix: this many cells / the catalogue

    def fit(self, fs: FeatureSet, before: int) -> ItemCF:
        """The cosine matrix, built and pruned a block of items (rows) at a time, so that
        memory is bounded by a block's co-occurrences and the kept neighbours rather than by
        every co-occurring pair of the catalogue."""
        sel = fs.ev_ts < before
        x = sp.csr_matrix((np.ones(int(sel.sum()), np.float32), (fs.ev_user[sel], fs.ev_item[sel])), shape=(fs.n_users, fs.items.n))
        x.data[:] = 1.0  # duplicates summed: binarise
        xt = x.T.tocsr()
        counts = np.diff(xt.indptr).astype(np.float64)  # users per item: the diagonal of x.T @ x
        norm = 1.0 / np.sqrt(np.maximum(counts, 1.0))
        n = fs.items.n
        step = max(1, self.block_cells // max(n, 1))
        blocks = []
        for lo in range(0, n, step):
            co = (xt[lo : lo + step] @ x).tocsr()
            rows = np.arange(co.shape[0])
            co = co - sp.csr_matrix((counts[lo : lo + len(rows)].astype(np.float32), (rows, lo + rows)), shape=co.shape)  # not its own neighbour
            co.eliminate_zeros()
            co = (sp.diags(norm[lo : lo + len(rows)]) @ co @ sp.diags(norm)).tocsr().astype(np.float32)
            blocks.append(co if self.neighbours is None else top_k_per_row(co, self.neighbours, self.block_cells))
        self.co = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((n, n), dtype=np.float32)
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
        self._ranked: tuple | None = None  # (list bound, listed items by category then popularity, per-category counts)
        return self

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        share = category_share(self.fs, users, time)[:, self.fs.items.category]
        return np.where(share > 0, share * (1.0 + self.pop[None, :]), -np.inf).astype(np.float32)

    def top_n(self, users: np.ndarray, time: int, n: int, exclude_seen: bool = True, until: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Within a category every user orders the items alike (by popularity): each of the
        user's categories gives its first ``n`` plus the user's seen items there, and the
        best ``n`` of those are the user's top-N, without a (U, n_items) matrix."""
        fs, users = self.fs, np.asarray(users, np.int64)
        bound = on_sale_before(time, until)
        if self._ranked is None or self._ranked[0] != bound:  # listed items by category, then popularity
            listed = np.flatnonzero(fs.items.created_s < bound)
            order = listed[np.lexsort((listed, -self.pop[listed], fs.items.category[listed]))]
            self._ranked = (bound, order, np.bincount(fs.items.category[order], minlength=len(fs.items.categories) + 1))
        _, ranked, count = self._ranked
        start = np.cumsum(count) - count
        share = category_share(fs, users, time)
        n_cat = share.shape[1]
        row, cat = np.nonzero(share > 0)
        seen = np.zeros(0, np.int64)
        take = np.full(len(row), n, np.int64)
        if exclude_seen:
            seen, _ = seen_keys(fs, users, time)
            per_cat = np.bincount((seen // fs.items.n) * n_cat + fs.items.category[seen % fs.items.n], minlength=len(users) * n_cat)
            take += per_cat[row * n_cat + cat]
        take = np.minimum(take, count[cat])
        pair = np.repeat(np.arange(len(row)), take)
        item = ranked[start[cat][pair] + np.arange(len(pair)) - np.repeat(np.cumsum(take) - take, take)]
        row = row[pair]
        score = (share[row, cat[pair]] * (1.0 + self.pop)[item]).astype(np.float32)  # as scores() computes it
        keep = ~in_keys(row * fs.items.n + item, seen)
        return pairs_top_n(row[keep], item[keep], score[keep], len(users), n)


@dataclass
class NewArrivals:
    """Items created in the ``days`` before the query (or later, while the list is shown),
    ordered by the user's style profile: the way cold items reach the ranker."""

    days: float = 14.0

    def fit(self, fs: FeatureSet, before: int) -> NewArrivals:
        self.fs = fs
        items = fs.items
        self.vectors = items.style if items.has_style.any() else fs.item_text(before)  # a catalogue without images: by text
        return self

    def _new(self, time: int) -> np.ndarray:
        return np.flatnonzero(self.fs.items.created_s >= time - self.days * DAY)

    def _similarities(self, users: np.ndarray, time: int, new: np.ndarray) -> np.ndarray:
        """(U, len(new)): the new arrivals' similarity to each user's style profile."""
        return self.fs.history_profile(users, time, self.vectors) @ self.vectors[new].T

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        new = self._new(time)  # source_candidates drops those not yet on sale
        out = np.full((len(users), self.fs.items.n), -np.inf, np.float32)
        if len(new):  # only the new arrivals' similarities
            out[:, new] = self._similarities(users, time, new)
        return out

    def top_n(self, users: np.ndarray, time: int, n: int, exclude_seen: bool = True, until: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Only the new arrivals' columns (a few hundred), not a (U, n_items) matrix of -inf."""
        new = self._new(time)
        listed = self.fs.items.created_s[new] < on_sale_before(time, until)
        scores = self._similarities(users, time, new)[:, listed] if len(new) else np.zeros((len(users), 0), np.float32)  # the product of scores()
        return columns_top_n(scores, new[listed], self.fs, users, time, n, exclude_seen)


STYLE_SOURCES = ("style_knn",)  # sources that need the items' style vectors


def make_source(name: str, config: RankConfig, two_tower: Recommender | None = None):
    """The (unfitted) source called ``name``; an unknown name is a RankConfigError."""
    if name == "two_tower":
        if two_tower is None:
            raise RankConfigError("source 'two_tower' needs a trained two-tower model")
        return TwoTowerSource(two_tower, config.two_tower_index, seed=config.seed)
    makers = {
        "als": lambda: ImplicitMF("als", factors=config.als_factors, iterations=config.als_iterations, seed=config.seed, name="als"),
        "item_cf": lambda: ItemCF(config.item_cf_recent, config.item_cf_neighbours),
        "style_knn": lambda: ContentKNN("style", name="style-knn"),
        "text_knn": lambda: ContentKNN("text", name="text-knn"),
        "popular": lambda: PopularSource(window_days=config.popular_days, name="popular"),
        "popular_in_category": lambda: PopularInCategory(config.popular_days),
        "new_arrivals": lambda: NewArrivals(config.new_arrival_days),
    }
    if name not in makers:
        raise RankConfigError(f"unknown candidate source {name!r}; known: {list(SOURCE_NAMES)}")
    return makers[name]()


def source_candidates(source, fs: FeatureSet, users: np.ndarray, time: int, n: int, exclude_seen: bool = True, until: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(items (U, n), scores (U, n)) of a fitted source; item -1 / score NaN where it has fewer.
    Items created at or after ``until`` (default ``time``) are not on sale during the list's life."""
    if hasattr(source, "top_n"):
        return source.top_n(users, time, n, exclude_seen, until)
    scores = np.array(source.scores(users, time), np.float32)  # a copy: a source may return a view
    scores[:, ~(fs.items.created_s < on_sale_before(time, until))] = -np.inf
    return columns_top_n(scores, np.arange(fs.items.n), fs, users, time, n, exclude_seen)


def columns_top_n(scores: np.ndarray, columns: np.ndarray, fs: FeatureSet, users: np.ndarray, time: int, n: int, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
    """(items (U, n), scores (U, n)) of the best of ``scores`` (U, len(columns)), float32, the
    scores of the catalogue rows ``columns``, less each user's seen items (``exclude_seen``)
    and non-finite scores; -1 / NaN where fewer. Overwrites ``scores``."""
    if exclude_seen:
        row, item = seen_pairs(fs, users, time)
        column = np.full(fs.items.n, -1, np.int64)
        column[columns] = np.arange(len(columns))
        keep = column[item] >= 0
        scores[row[keep], column[item[keep]]] = -np.inf
    scores[np.isnan(scores)] = -np.inf
    top_scores, top = fast_top_k(scores, n)
    missing = ~np.isfinite(top_scores)
    items, top_scores = np.where(missing, -1, columns[top]), np.where(missing, np.nan, top_scores).astype(np.float32)
    pad = n - items.shape[1]  # fewer columns than n
    return np.pad(items, ((0, 0), (0, pad)), constant_values=-1), np.pad(top_scores, ((0, 0), (0, pad)), constant_values=np.nan)


def candidate_union(users: np.ndarray, per_source: dict[str, tuple[np.ndarray, np.ndarray]]) -> pl.DataFrame:
    """One row per (user row ``u``, item row ``i``) any source returned, with ``<source>_score``
    and ``<source>_rank`` (1 = its best; null where the source did not return the item).

    Built with numpy: one sorted array of (user, item) keys, each source's columns scattered
    into it (a source returns an item at most once per user)."""
    users = np.asarray(users, np.int64)
    if not per_source:
        return pl.DataFrame(schema={"u": pl.Int64, "i": pl.Int64})
    span = max(int(items.max(initial=-1)) for items, _ in per_source.values()) + 1
    keyed = {}
    for name, (items, scores) in per_source.items():
        n = items.shape[1]
        keep = items.ravel() >= 0
        keys = np.repeat(users, n)[keep] * span + items.ravel()[keep].astype(np.int64)
        keyed[name] = (keys, scores.ravel()[keep].astype(np.float32), np.tile(np.arange(1, n + 1, dtype=np.float32), len(users))[keep])
    union = sorted_unique(np.concatenate([k for k, _, _ in keyed.values()]))
    columns: dict[str, pl.Series] = {"u": pl.Series("u", union // span, pl.Int64), "i": pl.Series("i", union % span, pl.Int64)}
    for name, (keys, scores, ranks) in keyed.items():
        pos = np.searchsorted(union, keys)
        for column, values in ((f"{name}_score", scores), (f"{name}_rank", ranks)):
            full = np.full(len(union), np.nan, np.float32)
            full[pos] = values
            columns[column] = pl.Series(column, full).fill_nan(None)
    return pl.DataFrame(columns)


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
