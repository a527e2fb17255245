"""The event log and the reviews, sorted by (user row, time), and the time-aware queries
on them: a user's history before a time, the items seen, training examples, popularity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from data.split import Split, assign_folds
from data.validate import ValidatedDataset
from recsys.features.config import DAY, EVENT_CODES, FeatureConfig
from recsys.features.items import mix_review_text
from recsys.text import TEXT_DIM
from style.space import l2_normalise, recency_weight

if TYPE_CHECKING:
    from recsys.features.featureset import FeatureSet

KEY = np.int64(1 << 34)  # user_row * KEY + seconds: one sortable key per (user, time)


@dataclass
class UserBatch:
    """Everything the user tower needs for a batch of (user, time) queries (numpy)."""

    user_index: np.ndarray  # 0 = not in the training vocabulary
    hist_items: np.ndarray  # flat item rows
    hist_lengths: np.ndarray
    hist_weights: np.ndarray  # normalised to sum 1 per query
    text: np.ndarray  # (B, 384)
    has_text: np.ndarray


@dataclass
class Examples:
    user: np.ndarray
    item: np.ndarray
    time: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


def event_log(ds: ValidatedDataset, split: Split, cfg: FeatureConfig, item_row: dict, user_row: dict) -> dict[str, np.ndarray]:
    """The event log sorted by (user row, ts), as the ``ev_*`` fields of a FeatureSet."""
    folded = assign_folds(ds.interactions, split)
    ev = folded.select(
        pl.col("user_id").replace_strict(user_row, return_dtype=pl.Int64).alias("u"),
        pl.col("item_id").replace_strict(item_row, return_dtype=pl.Int64).alias("i"),
        (pl.col("ts").dt.epoch("s")).alias("t"),
        pl.col("event").replace_strict(EVENT_CODES, return_dtype=pl.Int8).alias("e"),
        pl.col("event").replace_strict(cfg.event_weights, default=0.0, return_dtype=pl.Float32).alias("w"),
        pl.col("event").replace_strict(cfg.history_event_weights or cfg.event_weights, default=0.0, return_dtype=pl.Float32).alias("hw"),
        pl.col("fold"),
    ).sort(["u", "t", "e", "i"])
    ev_user = ev["u"].to_numpy()
    ev_ts = ev["t"].to_numpy()
    return {
        "ev_user": ev_user,
        "ev_item": ev["i"].to_numpy(),
        "ev_ts": ev_ts,
        "ev_weight": ev["w"].to_numpy(),
        "ev_hist_weight": ev["hw"].to_numpy(),
        "ev_fold": ev["fold"].to_numpy(),
        "ev_event": ev["e"].to_numpy(),
        "ev_key": ev_user * KEY + ev_ts,
        "ev_start": np.searchsorted(ev_user, np.arange(len(user_row) + 1), side="left"),
    }


def review_table(ds: ValidatedDataset, item_row: dict, user_row: dict) -> pl.DataFrame:
    """Reviews of known users and items as rows (u, i, t), sorted by (user, time)."""
    return ds.reviews.with_columns(
        pl.col("user_id").replace_strict(user_row, default=None, return_dtype=pl.Int64).alias("u"),
        pl.col("item_id").replace_strict(item_row, default=None, return_dtype=pl.Int64).alias("i"),
        pl.col("ts").dt.epoch("s").alias("t"),
    ).drop_nulls(["u", "i"]).sort(["u", "t", "i"])


def review_log(reviews: pl.DataFrame, review_vecs: np.ndarray, n_users: int) -> dict[str, np.ndarray]:
    """Reviews sorted by (user row, ts) with cumulative text sums, as the ``rv_*`` fields of a FeatureSet."""
    rv_user = reviews["u"].to_numpy()
    rv_ts = reviews["t"].to_numpy()
    rv_key = rv_user * KEY + rv_ts
    rv_cumsum = np.zeros((len(rv_key) + 1, TEXT_DIM), np.float64)
    if len(rv_key):
        np.cumsum(review_vecs, axis=0, out=rv_cumsum[1:])
    return {
        "rv_key": rv_key, "rv_start": np.searchsorted(rv_user, np.arange(n_users + 1), side="left"), "rv_cumsum": rv_cumsum,
        "rv_item": reviews["i"].to_numpy().astype(np.int64), "rv_ts": rv_ts.astype(np.int64),
    }  # fmt: skip


def review_vectors(fs: FeatureSet, rows: np.ndarray) -> np.ndarray:
    """The text vectors of the reviews at ``rows`` (of the (user, ts) order): the steps of ``rv_cumsum``."""
    return (fs.rv_cumsum[rows + 1] - fs.rv_cumsum[rows]).astype(np.float32)


# -- queries ---------------------------------------------------------------------------


def item_text(fs: FeatureSet, before: int) -> np.ndarray:
    """Item text vectors as of ``before``: title + description mixed with the reviews written
    before it, and never with those ``fs.items.text`` leaves out (written at or after
    ``fs.text_reviews_before``). ``fs.items.text`` itself when that is the same set of reviews;
    earlier (a ranker's training window), a new array."""
    until = min(int(before), fs.text_reviews_before)
    rows = np.flatnonzero(fs.rv_ts < until)
    if len(rows) == np.count_nonzero(fs.rv_ts < fs.text_reviews_before):
        return fs.items.text
    return mix_review_text(fs.items.text_plain.copy(), fs.rv_item[rows], review_vectors(fs, rows), fs.config.review_text_weight)


def user_batch(fs: FeatureSet, users: np.ndarray, times: np.ndarray) -> UserBatch:
    cfg = fs.config
    users = np.asarray(users, np.int64)
    times = np.asarray(times, np.int64)
    pos = np.searchsorted(fs.ev_key, users * KEY + times, side="left")
    lo = np.maximum(fs.ev_start[users], pos - cfg.history_len)
    lengths = (pos - lo).astype(np.int64)
    row = np.repeat(np.arange(len(users)), lengths)
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    gpos = lo[row] + within
    age_days = (times[row] - fs.ev_ts[gpos]) / DAY
    weights = fs.ev_hist_weight[gpos] * recency_weight(age_days, cfg.half_life_days)
    sums = np.bincount(row, weights, minlength=len(users))
    weights = weights / np.where(sums[row] > 0, sums[row], 1.0)

    rpos = np.searchsorted(fs.rv_key, users * KEY + times, side="left")
    rstart = fs.rv_start[users]
    count = rpos - rstart
    text = (fs.rv_cumsum[rpos] - fs.rv_cumsum[rstart]) / np.maximum(count, 1)[:, None]
    return UserBatch(
        user_index=fs.user_index[users],
        hist_items=fs.ev_item[gpos],
        hist_lengths=lengths,
        hist_weights=weights.astype(np.float32),
        text=l2_normalise(text).astype(np.float32),
        has_text=count > 0,
    )


def history_profile(fs: FeatureSet, users: np.ndarray, time: int, vectors: np.ndarray) -> np.ndarray:
    """L2-normalised weighted mean of ``vectors`` over each user's history at ``time``
    (the weights of :func:`user_batch`); zeros for users without history.

    A sparse (users x items) weight matrix times ``vectors``: several times faster than
    gathering a vector per history event."""
    import scipy.sparse as sp

    ub = user_batch(fs, users, np.full(len(users), time))
    row = np.repeat(np.arange(len(users)), ub.hist_lengths)
    weights = sp.csr_matrix((ub.hist_weights.astype(np.float64), (row, ub.hist_items)), shape=(len(users), len(vectors)))
    return l2_normalise(np.asarray(weights @ vectors, np.float64)).astype(np.float32)


def training_examples(fs: FeatureSet, folds: str | tuple[str, ...] = "train") -> Examples:
    """First interaction of every (user, item) pair in ``folds``, in time order."""
    mask = np.isin(fs.ev_fold, [folds] if isinstance(folds, str) else list(folds))
    df = pl.DataFrame({"u": fs.ev_user[mask], "i": fs.ev_item[mask], "t": fs.ev_ts[mask]})
    first = df.group_by(["u", "i"]).agg(pl.col("t").min()).sort(["t", "u", "i"])
    return Examples(first["u"].to_numpy(), first["i"].to_numpy(), first["t"].to_numpy())


def item_log_q(fs: FeatureSet, examples: Examples) -> np.ndarray:
    """log of each item's share of training examples (the in-batch sampling probability)."""
    counts = np.bincount(examples.item, minlength=fs.items.n).astype(np.float64)
    return np.log(np.maximum(counts, 0.5) / counts.sum()).astype(np.float32)


def items_before(fs: FeatureSet, users: np.ndarray, time: int, event: str | None = None) -> list[np.ndarray]:
    """Items each user interacted with before ``time`` (only ``event`` events if given):
    masked from recommendations, or dropped as already bought."""
    out = []
    for u in users:
        a, b = fs.ev_start[u], fs.ev_start[u + 1]
        sel = fs.ev_ts[a:b] < time
        if event is not None:
            sel &= fs.ev_event[a:b] == EVENT_CODES[event]
        out.append(np.unique(fs.ev_item[a:b][sel]))
    return out


def popularity(fs: FeatureSet, before: int, after: int | None = None) -> np.ndarray:
    sel = fs.ev_ts < before
    if after is not None:
        sel &= fs.ev_ts >= after
    return np.bincount(fs.ev_item[sel], minlength=fs.items.n).astype(np.float64)
