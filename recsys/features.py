"""Frozen features for the two-tower model, computed once per dataset and split.

Items are rows of a fixed catalogue order (sorted item ids). Users are rows of sorted
user ids. Behaviour features are *time-aware*: a query "user u at time t" sees only the
events and reviews before t — the last ``history_len`` events (weighted by event type and
recency), the style profile those imply, and the mean text vector of the user's own
reviews. Training examples are the first interaction of each (user, item) pair in the
training fold, so the target is never in its own history.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl

from data.dataset import DatasetError
from data.split import Split, assign_folds
from data.validate import ValidatedDataset
from style.embeddings import load_style_space
from recsys.text import TEXT_DIM, CachedTextEmbedder
from style.space import DEFAULT_EVENT_WEIGHTS, StyleSpace

DAY = 86_400
_KEY = np.int64(1 << 34)  # user_row * _KEY + seconds: one sortable key per (user, time)
FEATURES_DIR = "features"


@dataclass(frozen=True)
class FeatureConfig:
    # The user's history: the last ``history_len`` events, weighted by event type and by
    # recency (2^(-age / half_life_days); inf = no decay). The defaults won on StyleMart's
    # validation slice, where tastes do not drift: a long, undecayed history in which every
    # event counts the same (validation Recall@50 ~0.177 vs ~0.166 for the last 50 events,
    # event-weighted, 30-day half-life; see the README). Shops whose tastes drift may want
    # a finite half-life.
    history_len: int = 200
    half_life_days: float = float("inf")
    # event-type weights of the interaction matrix and popularity counts (what the
    # baselines fit) ...
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    # ... and inside a user's history (profiles, history bag); None = event_weights
    history_event_weights: dict[str, float] | None = field(default_factory=lambda: dict.fromkeys(DEFAULT_EVENT_WEIGHTS, 1.0))
    price_buckets: int = 10
    popularity_buckets: int = 20
    eval_events: tuple[str, ...] = ("click", "cart", "purchase")
    review_text_weight: float = 0.5  # item text = (1-w) * title/description + w * mean review text

    def __post_init__(self) -> None:
        for name in ("event_weights", "history_event_weights"):
            table = getattr(self, name) or {}
            unknown = sorted(set(table) - set(EVENT_CODES))
            if unknown:
                raise ValueError(f"{name}: unknown event type(s) {unknown}; known: {list(EVENT_CODES)}")
            if any(not np.isfinite(w) or w < 0 for w in table.values()):
                raise ValueError(f"{name}: weights must be finite and >= 0, got {table}")
        if self.history_len < 1 or not self.half_life_days > 0:
            raise ValueError(f"history_len must be >= 1 and half_life_days > 0 (inf: no recency decay), got {self.history_len}, {self.half_life_days}")


@dataclass(frozen=True)
class ItemEncoders:
    """How raw item attributes become model inputs; frozen into a trained model's bundle so
    items that arrive later are encoded exactly as the training catalogue was."""

    categories: tuple[str, ...]
    price_edges: tuple[float, ...]
    style_mean: tuple[float, ...] | None


@dataclass
class ItemTable:
    ids: np.ndarray
    id_index: np.ndarray  # 0 = not in the training vocabulary (cold): content only
    category: np.ndarray  # 1..C
    price_bucket: np.ndarray  # 0 = unknown, 1..B
    popularity_bucket: np.ndarray  # 0 = no training interactions, 1..B: training events per day on sale
    style: np.ndarray  # (N, D) centred, L2-normalised; zeros where missing
    has_style: np.ndarray
    text: np.ndarray  # (N, 384) L2-normalised: title + description, mixed with the mean review text
    text_plain: np.ndarray  # (N, 384) title + description only: what an item nobody reviewed has
    cold: np.ndarray  # no interaction before the split's cutoff
    created_s: np.ndarray
    categories: list[str]

    @property
    def n(self) -> int:
        return len(self.ids)


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


@dataclass
class FeatureSet:
    config: FeatureConfig
    items: ItemTable
    user_ids: np.ndarray
    user_index: np.ndarray
    split: Split
    # event log sorted by (user row, ts)
    ev_user: np.ndarray
    ev_item: np.ndarray
    ev_ts: np.ndarray
    ev_weight: np.ndarray
    ev_hist_weight: np.ndarray  # the weight of each event inside a user's history
    ev_fold: np.ndarray
    ev_event: np.ndarray
    ev_key: np.ndarray
    ev_start: np.ndarray  # (n_users + 1,) offsets
    # reviews sorted by (user row, ts), with cumulative text sums
    rv_key: np.ndarray
    rv_start: np.ndarray
    rv_cumsum: np.ndarray  # (R + 1, 384)
    style_dim: int
    fingerprint: str
    encoders: ItemEncoders

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_user_vocab(self) -> int:
        return int(self.user_index.max()) + 1

    @property
    def n_item_vocab(self) -> int:
        return int(self.items.id_index.max()) + 1

    def time_of(self, name: str) -> int:
        """Seconds of the split's boundary ``test`` or ``val``."""
        value = self.split.test_start if name == "test" else self.split.val_start
        if value is None:
            raise DatasetError("time-aware queries need a temporal split (leave-last-n has no single cutoff)")
        return int(value.timestamp())

    # -- queries -----------------------------------------------------------------------

    def user_batch(self, users: np.ndarray, times: np.ndarray) -> UserBatch:
        cfg = self.config
        users = np.asarray(users, np.int64)
        times = np.asarray(times, np.int64)
        pos = np.searchsorted(self.ev_key, users * _KEY + times, side="left")
        lo = np.maximum(self.ev_start[users], pos - cfg.history_len)
        lengths = (pos - lo).astype(np.int64)
        row = np.repeat(np.arange(len(users)), lengths)
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        gpos = lo[row] + within
        age_days = (times[row] - self.ev_ts[gpos]) / DAY
        weights = self.ev_hist_weight[gpos] * np.exp2(-age_days / cfg.half_life_days)
        sums = np.bincount(row, weights, minlength=len(users))
        weights = weights / np.where(sums[row] > 0, sums[row], 1.0)

        rpos = np.searchsorted(self.rv_key, users * _KEY + times, side="left")
        rstart = self.rv_start[users]
        count = rpos - rstart
        text = (self.rv_cumsum[rpos] - self.rv_cumsum[rstart]) / np.maximum(count, 1)[:, None]
        norm = np.linalg.norm(text, axis=1, keepdims=True)
        text = np.where(norm > 0, text / np.maximum(norm, 1e-12), 0.0).astype(np.float32)
        return UserBatch(
            user_index=self.user_index[users],
            hist_items=self.ev_item[gpos],
            hist_lengths=lengths,
            hist_weights=weights.astype(np.float32),
            text=text,
            has_text=count > 0,
        )

    def with_vocab(self, folds: tuple[str, ...]) -> FeatureSet:
        """A copy whose id vocabularies cover the items and users seen in ``folds``.

        Used to refit on train + validation once early stopping has chosen the epochs.
        """
        sel = np.isin(self.ev_fold, list(folds))
        items = np.unique(self.ev_item[sel])
        users = np.unique(self.ev_user[sel])
        id_index = np.zeros(self.items.n, np.int64)
        id_index[items] = np.arange(1, len(items) + 1)
        user_index = np.zeros(self.n_users, np.int64)
        user_index[users] = np.arange(1, len(users) + 1)
        # popularity: events per day on sale within ``folds`` (a quality estimate that does
        # not punish new items); bucketised, 0 = no interactions (unknown, like a cold item)
        end = int(self.ev_ts[sel].max()) if sel.any() else 0
        counts = np.bincount(self.ev_item[sel], weights=self.ev_weight[sel], minlength=self.items.n)
        days = np.maximum((end - np.minimum(self.items.created_s, end)) / DAY, 1.0)
        rate = np.where(counts > 0, counts / days, np.nan)
        popularity = _price_buckets(rate, self.config.popularity_buckets)
        items = replace(self.items, id_index=id_index, popularity_bucket=popularity)
        return replace(self, items=items, user_index=user_index)

    def training_examples(self, folds: str | tuple[str, ...] = "train") -> Examples:
        """First interaction of every (user, item) pair in ``folds``, in time order."""
        mask = np.isin(self.ev_fold, [folds] if isinstance(folds, str) else list(folds))
        df = pl.DataFrame({"u": self.ev_user[mask], "i": self.ev_item[mask], "t": self.ev_ts[mask]})
        first = df.group_by(["u", "i"]).agg(pl.col("t").min()).sort(["t", "u", "i"])
        return Examples(first["u"].to_numpy(), first["i"].to_numpy(), first["t"].to_numpy())

    def item_log_q(self, examples: Examples) -> np.ndarray:
        """log of each item's share of training examples (the in-batch sampling probability)."""
        counts = np.bincount(examples.item, minlength=self.items.n).astype(np.float64)
        return np.log(np.maximum(counts, 0.5) / counts.sum()).astype(np.float32)

    def truth(self, fold: str, mask_seen: bool = True) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """(user rows, per-user arrays of relevant item rows, query time) for evaluation on ``fold``.

        Relevant = an ``eval_events`` event in the fold. With ``mask_seen``, items the user
        interacted with before the fold are left out of the truth (they are masked from
        recommendations too).
        """
        start = self.time_of(fold)
        codes = [_event_code(e) for e in self.config.eval_events]
        in_fold = (self.ev_fold == fold) & np.isin(self.ev_event, codes)
        df = pl.DataFrame({"u": self.ev_user[in_fold], "i": self.ev_item[in_fold]}).unique()
        if mask_seen:
            seen = pl.DataFrame({"u": self.ev_user[self.ev_ts < start], "i": self.ev_item[self.ev_ts < start]}).unique()
            df = df.join(seen, on=["u", "i"], how="anti")
        grouped = df.group_by("u").agg(pl.col("i")).sort("u")
        users = grouped["u"].to_numpy()
        return users, [np.asarray(x, np.int64) for x in grouped["i"].to_list()], np.full(len(users), start, np.int64)

    def items_before(self, users: np.ndarray, time: int, event: str | None = None) -> list[np.ndarray]:
        """Items each user interacted with before ``time`` (only ``event`` events if given):
        masked from recommendations, or dropped as already bought."""
        out = []
        for u in users:
            a, b = self.ev_start[u], self.ev_start[u + 1]
            sel = self.ev_ts[a:b] < time
            if event is not None:
                sel &= self.ev_event[a:b] == EVENT_CODES[event]
            out.append(np.unique(self.ev_item[a:b][sel]))
        return out

    def history_profile(self, users: np.ndarray, time: int, vectors: np.ndarray) -> np.ndarray:
        """L2-normalised weighted mean of ``vectors`` over each user's history at ``time``
        (the weights of :meth:`user_batch`); zeros for users without history."""
        ub = self.user_batch(users, np.full(len(users), time))
        rows = np.repeat(np.arange(len(users)), ub.hist_lengths)
        profile = np.zeros((len(users), vectors.shape[1]), np.float64)
        np.add.at(profile, rows, vectors[ub.hist_items] * ub.hist_weights[:, None])
        norm = np.linalg.norm(profile, axis=1, keepdims=True)
        return np.where(norm > 0, profile / np.maximum(norm, 1e-12), 0.0).astype(np.float32)

    def popularity(self, before: int, after: int | None = None) -> np.ndarray:
        sel = self.ev_ts < before
        if after is not None:
            sel &= self.ev_ts >= after
        return np.bincount(self.ev_item[sel], minlength=self.items.n).astype(np.float64)

    def interaction_matrix(self, before: int):
        """Users x items CSR of summed event weights before ``before`` (for ALS / BPR)."""
        from scipy.sparse import csr_matrix

        sel = self.ev_ts < before
        m = csr_matrix((self.ev_weight[sel].astype(np.float32), (self.ev_user[sel], self.ev_item[sel])), shape=(self.n_users, self.items.n))
        m.sum_duplicates()
        return m


EVENT_CODES = {"view": 0, "click": 1, "cart": 2, "purchase": 3}


def _event_code(name: str) -> int:
    return EVENT_CODES[name]


def _quantile_edges(values: np.ndarray, n: int) -> np.ndarray:
    known = values[np.isfinite(values)]
    return np.quantile(known, np.linspace(0, 1, n + 1)[1:-1]) if known.size else np.zeros(0)


def _price_buckets(values: np.ndarray, n: int, edges: np.ndarray | None = None) -> np.ndarray:
    """Quantile buckets 1..n of the finite values (or of given ``edges``); 0 for NaN (unknown)."""
    edges = _quantile_edges(values, n) if edges is None else np.asarray(edges)
    known = np.isfinite(values)
    out = np.zeros(len(values), np.int64)
    out[known] = np.searchsorted(edges, values[known], side="right") + 1
    return out


def _item_texts(ds: ValidatedDataset, ids: np.ndarray) -> list[str]:
    items = pl.DataFrame({"item_id": ids}).join(ds.items.select("item_id", "title", "description"), on="item_id", how="left")
    return [f"{t or ''}. {d or ''}".strip(" .") for t, d in zip(items["title"].to_list(), items["description"].to_list(), strict=True)]


def build_features(
    ds: ValidatedDataset,
    split: Split,
    config: FeatureConfig | None = None,
    require_style: bool = True,
    encoders: ItemEncoders | None = None,
) -> FeatureSet:
    """Compute (or load from cache) every frozen feature of ``ds`` under ``split``.

    ``encoders`` (from a trained model's bundle) fix the category list, price buckets and
    style centre; without them they are derived from this catalogue.
    """
    cfg = config or FeatureConfig()
    root = ds.dir.root
    feat_dir = root / FEATURES_DIR
    item_ids = np.sort(ds.items["item_id"].to_numpy()).astype(object)
    user_ids = np.sort(ds.users["user_id"].to_numpy()).astype(object)
    item_row = {i: r for r, i in enumerate(item_ids.tolist())}
    user_row = {u: r for r, u in enumerate(user_ids.tolist())}

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
    ev_start = np.searchsorted(ev_user, np.arange(len(user_ids) + 1), side="left")

    # content: style
    items_sorted = pl.DataFrame({"item_id": item_ids}).join(ds.items, on="item_id", how="left")
    try:
        space = load_style_space(root)
    except DatasetError:
        if require_style:
            raise
        space = None
    style_dim = space.vectors.shape[1] if space is not None else 100
    style = np.zeros((len(item_ids), style_dim), np.float32)
    has_style = np.zeros(len(item_ids), bool)
    if space is not None:
        rows = np.array([item_row[i] for i in space.ids.tolist() if i in item_row], np.int64)
        keep = np.array([i in item_row for i in space.ids.tolist()])
        if encoders is not None and encoders.style_mean is not None:
            space = StyleSpace(space.ids, space.vectors, np.asarray(encoders.style_mean, np.float32))
        style[rows] = space.unit[keep]
        has_style[rows] = True

    # content: text (title + description, mixed with the mean of reviews before the cutoff)
    embedder = CachedTextEmbedder(feat_dir / "text_cache.parquet")
    text = embedder.embed(_item_texts(ds, item_ids))
    text_plain = text.astype(np.float32, copy=True)
    cutoff = split.test_start
    reviews = ds.reviews.with_columns(
        pl.col("user_id").replace_strict(user_row, default=None, return_dtype=pl.Int64).alias("u"),
        pl.col("item_id").replace_strict(item_row, default=None, return_dtype=pl.Int64).alias("i"),
        pl.col("ts").dt.epoch("s").alias("t"),
    ).drop_nulls(["u", "i"]).sort(["u", "t", "i"])
    review_vecs = embedder.embed([t or "" for t in reviews["text"].to_list()]) if reviews.height else np.zeros((0, TEXT_DIM), np.float32)
    if cutoff is not None and reviews.height:
        before = (reviews["ts"] < cutoff).to_numpy()
        ri = reviews["i"].to_numpy()[before]
        sums = np.zeros_like(text)
        np.add.at(sums, ri, review_vecs[before])
        counts = np.bincount(ri, minlength=len(item_ids))
        has = counts > 0
        mean_reviews = sums[has] / counts[has, None]
        mean_reviews /= np.maximum(np.linalg.norm(mean_reviews, axis=1, keepdims=True), 1e-12)
        w = cfg.review_text_weight
        text[has] = (1 - w) * text[has] + w * mean_reviews
        text /= np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)

    prices = items_sorted["price"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    if encoders is None:
        encoders = ItemEncoders(
            categories=tuple(sorted(set(items_sorted["category"].drop_nulls().to_list()))),
            price_edges=tuple(float(e) for e in _quantile_edges(prices, cfg.price_buckets)),
            style_mean=tuple(float(v) for v in space.mean) if space is not None else None,
        )
    categories = list(encoders.categories)
    cat_index = {c: i + 1 for i, c in enumerate(categories)}
    items = ItemTable(
        ids=item_ids,
        id_index=np.zeros(len(item_ids), np.int64),  # set by with_vocab below
        category=np.array([cat_index.get(c, 0) for c in items_sorted["category"].to_list()], np.int64),
        price_bucket=_price_buckets(prices, cfg.price_buckets, np.asarray(encoders.price_edges)),
        popularity_bucket=np.zeros(len(item_ids), np.int64),  # set by with_vocab below
        style=style,
        has_style=has_style,
        text=text.astype(np.float32),
        text_plain=text_plain,
        cold=np.isin(item_ids, np.array(sorted(split.cold_items), dtype=object)),
        created_s=items_sorted["created_at"].dt.epoch("s").to_numpy(),
        categories=categories,
    )
    rv_user = reviews["u"].to_numpy()
    rv_key = rv_user * _KEY + reviews["t"].to_numpy()
    rv_cumsum = np.zeros((len(rv_key) + 1, TEXT_DIM), np.float64)
    if len(rv_key):
        np.cumsum(review_vecs, axis=0, out=rv_cumsum[1:])
    ev_ts = ev["t"].to_numpy()
    fs = FeatureSet(
        config=cfg,
        items=items,
        user_ids=user_ids,
        user_index=np.zeros(len(user_ids), np.int64),
        split=split,
        ev_user=ev_user,
        ev_item=ev["i"].to_numpy(),
        ev_ts=ev_ts,
        ev_weight=ev["w"].to_numpy(),
        ev_hist_weight=ev["hw"].to_numpy(),
        ev_fold=ev["fold"].to_numpy(),
        ev_event=ev["e"].to_numpy(),
        ev_key=ev_user * _KEY + ev_ts,
        ev_start=ev_start,
        rv_key=rv_key,
        rv_start=np.searchsorted(rv_user, np.arange(len(user_ids) + 1), side="left"),
        rv_cumsum=rv_cumsum,
        style_dim=style_dim,
        fingerprint=ds.manifest.fingerprint,
        encoders=encoders,
    )
    return fs.with_vocab(("train",))

