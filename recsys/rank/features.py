"""Pair features of (user, candidate item) as of a query time: only events before the time
count, so an event at or after it changes no feature.

Vectorised over the candidate pairs (numpy / polars joins; history similarities by
repeating each pair over its user's history items, in chunks).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from recsys.evaluate import Recommender
from recsys.features import DAY, EVENT_CODES, FeatureSet
from recsys.features.events import KEY
from recsys.rank.sources import category_share, recent_events

# the features built from style vectors (an ablation leaves them out)
STYLE_FEATURES = (
    "style_knn_score", "style_knn_rank", "style_cos", "style_max_sim", "user_style_group_share", "user_affinity", "user_style_graph_share", "user_graph_affinity",
    "new_arrivals_score", "new_arrivals_rank",
)
# the item's events before the query time: a column of the frame, not a feature (0 marks a new
# item, whose score the ranker boosts: ranker.fit_new_item_boost)
ITEM_EVENTS = "item_events"
CHUNK = 200_000
DENSE_PER_PAIR = 64  # the dense product pays when it has at most this many entries per pair (dense_pays)
SIM_BLOCK = 16_384  # candidate vectors per block of the history similarities (~6 MB of 100-d style)


@dataclass
class FeatureContext:
    """What the pair features need beyond the feature set."""

    prices: np.ndarray  # (n_items,) catalogue price, NaN where unknown
    two_tower: Recommender | None = None  # with user_matrix / item_matrix (recsys.train.TwoTowerRecommender)
    als: object | None = None  # a fitted recsys.baselines.ImplicitMF (fitted before the query time)
    max_sim_history: int = 20
    smoothing: float = 20.0  # pseudo-views of the smoothed view->purchase rate
    style_clusters: int = 32  # k-means groups of the catalogue's style vectors (the user's style shares)
    style_graph_groups: int = 24  # spectral groups of the style vectors' nearest-neighbour graph (style_graph_groups)
    style_graph_neighbours: int = 10
    # per-time statistics of the whole log (item popularity, user paid price...), kept for the
    # last query time: chunks of users at one time compute them once
    _per_time: dict = field(default_factory=dict, repr=False, compare=False)

    def style_cluster(self, fs: FeatureSet) -> np.ndarray:
        """Each item's style group (k-means over the items with a style vector; the items
        without one form the last group): image content only, no events, so computed once
        per catalogue (:func:`kept_for_items`)."""
        return kept_for_items(fs.items, ("k-means", self.style_clusters), lambda: style_groups(fs.items.style, fs.items.has_style, self.style_clusters))

    def style_graph_cluster(self, fs: FeatureSet) -> np.ndarray:
        """Each item's group by :func:`style_graph_groups`, computed once per catalogue."""
        return kept_for_items(
            fs.items, ("graph", self.style_graph_groups, self.style_graph_neighbours),
            lambda: style_graph_groups(fs.items.style, fs.items.has_style, self.style_graph_groups, self.style_graph_neighbours),
        )


# id(item table) -> (grouping, its settings) -> each item's group: see kept_for_items
_KEPT_FOR_ITEMS: dict[int, dict[tuple, np.ndarray]] = {}


def kept_for_items(items, key: tuple, compute) -> np.ndarray:
    """``compute()``, once per item table and ``key`` for as long as the table lives.

    Why: the style groups depend on the catalogue's photos only, and a ranking run builds a
    feature context per two-tower (the served one's, the training windows', each
    ablation's) over the same catalogue; at ~100,000 items the graph groups cost ~25 s each."""
    kept = _KEPT_FOR_ITEMS.get(id(items))
    if kept is None:
        kept = _KEPT_FOR_ITEMS[id(items)] = {}
        weakref.finalize(items, _KEPT_FOR_ITEMS.pop, id(items), None)  # a later table may reuse the id
    if key not in kept:
        kept[key] = compute()
    return kept[key]


def whiten(vectors: np.ndarray, dims: int, min_variance: float = 1e-3) -> np.ndarray:
    """``vectors`` centred and projected onto their top ``dims`` principal components, each
    scaled to unit variance; components with under ``min_variance`` of the largest one's
    variance (noise, dead dimensions) are left out rather than blown up."""
    centred = np.asarray(vectors, np.float64) - np.asarray(vectors, np.float64).mean(0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2 / max(len(centred) - 1, 1)
    keep = (variance >= min_variance * variance[0])[:dims] if len(variance) and variance[0] > 0 else np.zeros(0, bool)
    return (centred @ components[: len(keep)][keep].T / np.sqrt(variance[: len(keep)][keep])).astype(np.float32)


def style_groups(style: np.ndarray, has_style: np.ndarray, k: int, seed: int = 0, dims: int = 32) -> np.ndarray:
    """Each item's style group: k-means over the whitened style vectors (:func:`whiten`,
    top ``dims`` components); the items without a style vector form the last group, ``k``.
    Whitening matters: a few high-variance directions of the raw vectors (photo content such
    as the product's shape) otherwise decide the groups; on the StyleMart demo the
    history-share plug-in over the groups goes from Recall@10 0.040 to 0.052 (docs/ranking.md)."""
    import faiss

    def assign(z: np.ndarray, k: int) -> np.ndarray:
        kmeans = faiss.Kmeans(z.shape[1], k, niter=25, nredo=5, seed=seed, min_points_per_centroid=1)
        kmeans.train(z)
        return kmeans.index.search(z, 1)[1][:, 0]

    return _grouped(style, has_style, k, dims, assign)


def _grouped(style: np.ndarray, has_style: np.ndarray, k: int, dims: int, assign) -> np.ndarray:
    """What every style grouping shares: at most one group per ten items with a style vector,
    the items without one in the last group (``k``), a single group when nothing tells the
    vectors apart; ``assign(z, k)`` labels the whitened vectors ``z`` (:func:`whiten`) 0..k-1."""
    vectors = style[has_style]
    k = max(1, min(k, len(vectors) // 10))
    groups = np.full(len(style), k, np.int64)
    z = whiten(vectors, dims) if len(vectors) > 1 else np.zeros((len(vectors), 0), np.float32)
    if not z.shape[1] or k == 1:  # one item, every vector alike, or one group asked for
        groups[has_style] = 0
        return groups
    groups[has_style] = assign(np.ascontiguousarray(z), k)
    return groups


def style_graph_groups(style: np.ndarray, has_style: np.ndarray, k: int, neighbours: int = 10, seed: int = 0, dims: int = 32) -> np.ndarray:
    """Each item's style group by spectral clustering of the graph that links every item to
    its ``neighbours`` nearest (itself included) in the whitened style space; the items
    without a style vector form the last group, ``k``.

    Why a graph: a style vector's nearest neighbours mostly share its style (on the StyleMart
    demo 89 % of the 10 nearest), but a style is not one round blob at the scale of a
    style, so k-means mixes styles; groups cut along the neighbour graph follow them further.
    On the demo's validation fold the history-share plug-in over these groups had Recall@10
    0.054 against 0.045 over k-means' (docs/ranking.md). The eigenvectors are LOBPCG's:
    on one core ~0.5 s for 10,000 items, ~3 s for 50,000 and ~5 s for 100,000 (plus the
    exact neighbour search, ~18 s at 100,000); ARPACK's shift-invert took 27 s at 50,000."""
    import warnings

    import faiss
    from scipy import sparse
    from sklearn.cluster import SpectralClustering

    def assign(z: np.ndarray, k: int) -> np.ndarray:
        n, m = len(z), min(neighbours, len(z))
        index = faiss.IndexFlatL2(z.shape[1])
        index.add(z)
        _, nearest = index.search(z, m)
        linked = sparse.csr_matrix((np.ones(n * m), (np.repeat(np.arange(n), m), nearest.ravel())), shape=(n, n))
        with warnings.catch_warnings():  # "graph is not fully connected": its parts become groups of their own
            warnings.simplefilter("ignore", UserWarning)
            spectral = SpectralClustering(k, affinity="precomputed", eigen_solver="lobpcg", assign_labels="cluster_qr", random_state=seed)
            return spectral.fit_predict(0.5 * (linked + linked.T))

    return _grouped(style, has_style, k, dims, assign)


def time_statistics(fs: FeatureSet, time: int, ctx: FeatureContext) -> dict[str, np.ndarray]:
    """What the pair features need from every event before ``time`` (not only the pairs'
    users and items): computed once per (feature set, time) and cached in ``ctx``."""
    cached = ctx._per_time.get("stats")
    if cached is not None and cached[0] is fs and cached[1] == time:
        return cached[2]
    before = fs.ev_ts < time
    bought = before & (fs.ev_event == EVENT_CODES["purchase"])
    paid = ctx.prices[fs.ev_item[bought]]
    ok = np.isfinite(paid)
    spent = np.bincount(fs.ev_user[bought][ok], paid[ok], minlength=fs.n_users)
    n_bought = np.bincount(fs.ev_user[bought][ok], minlength=fs.n_users)
    stats = {
        "usual": np.where(n_bought > 0, spent / np.maximum(n_bought, 1), np.nan),
        **{f"pop_{d}": fs.popularity(before=time, after=time - d * DAY) for d in (1, 7, 30)},
        "views": np.bincount(fs.ev_item[before & (fs.ev_event == EVENT_CODES["view"])], minlength=fs.items.n).astype(np.float64),
        "clicks": np.bincount(fs.ev_item[before & (fs.ev_event == EVENT_CODES["click"])], minlength=fs.items.n).astype(np.float64),
        "buys": np.bincount(fs.ev_item[bought], minlength=fs.items.n).astype(np.float64),
        "events": np.bincount(fs.ev_item[before], minlength=fs.items.n).astype(np.float64),
        "views_30d": pop_views_30d(fs, time),
        "recent": np.bincount(fs.ev_user[before & (fs.ev_ts >= time - 30 * DAY)], minlength=fs.n_users),
    }
    if np.isfinite(ctx.prices).any():
        # price level within the item's category, and the level each user engages with (clicks, carts, purchases)
        level = price_in_category(ctx.prices, fs.items.category, fs.items.created_s < time)
        engaged = before & (fs.ev_event >= EVENT_CODES["click"]) & np.isfinite(level[fs.ev_item])
        n_engaged = np.bincount(fs.ev_user[engaged], minlength=fs.n_users)
        stats["price_level"] = level
        stats["user_price_level"] = np.where(n_engaged > 0, np.bincount(fs.ev_user[engaged], level[fs.ev_item[engaged]], minlength=fs.n_users) / np.maximum(n_engaged, 1), np.nan)
    ctx._per_time["stats"] = (fs, time, stats)
    return stats


def dense_pays(n_rows: int, n_cols: int, n_pairs: int) -> bool:
    """Whether the dense (rows x cols) product is cheaper than multiplying the ``n_pairs``
    pairs' rows: a chunk's users x the catalogue, where BLAS beats gathering rows."""
    return n_rows * n_cols <= DENSE_PER_PAIR * n_pairs


def row_dot(a: np.ndarray, ai: np.ndarray, b: np.ndarray, bi: np.ndarray) -> np.ndarray:
    """``(a[ai] * b[bi]).sum(1)`` in chunks; by blocks of the dense product ``a @ b.T`` when
    that is small next to the pairs (a chunk's users x the catalogue: BLAS beats gathering rows)."""
    if dense_pays(len(a), len(b), len(ai)):
        return _row_dot_dense(a, ai, b, bi)
    out = np.empty(len(ai), np.float32)
    for s in range(0, len(ai), CHUNK):
        out[s : s + CHUNK] = np.einsum("ij,ij->i", a[ai[s : s + CHUNK]], b[bi[s : s + CHUNK]])
    return out


def profile_similarity(fs: FeatureSet, uniq: np.ndarray, uidx: np.ndarray, items: np.ndarray, time: int, vectors: np.ndarray) -> np.ndarray:
    """Each pair's dot product of the user's history profile of ``vectors`` with the item's.
    When the batch's users x the catalogue is small next to the pairs, it is read off the
    dense product that the content-KNN source of the same batch made (``fs.profile_scores``,
    kept for this); otherwise the pairs' rows are multiplied (``row_dot``)."""
    if dense_pays(len(uniq), len(vectors), len(items)):
        return fs.profile_scores(uniq, time, vectors)[uidx, items]
    return row_dot(fs.history_profile(uniq, time, vectors), uidx, vectors, items)


def _row_dot_dense(a: np.ndarray, ai: np.ndarray, b: np.ndarray, bi: np.ndarray) -> np.ndarray:
    out = np.empty(len(ai), np.float32)
    order = np.argsort(ai, kind="stable")
    step = max(1, CHUNK * DENSE_PER_PAIR // max(len(b), 1))  # rows of a per block
    bounds = np.searchsorted(ai[order], np.arange(0, len(a) + step, step))
    bt = np.ascontiguousarray(np.asarray(b, np.float32).T)
    for k, lo in enumerate(range(0, len(a), step)):
        sel = order[bounds[k] : bounds[k + 1]]
        if len(sel):
            out[sel] = (np.asarray(a[lo : lo + step], np.float32) @ bt)[ai[sel] - lo, bi[sel]]
    return out


def _max_history_similarity(fs: FeatureSet, uniq: np.ndarray, uidx: np.ndarray, items: np.ndarray, time: int, last: int) -> np.ndarray:
    """Each pair's largest style similarity to the user's last ``last`` history items (with style).

    One small matrix product per user (batched: the user's candidates x their history,
    both padded with a zero vector), instead of gathering a style vector per (pair,
    history item). The padded blocks are gathered by row index (``index_select``) in
    blocks of at most ``SIM_BLOCK`` candidate vectors: a scatter into fresh arrays of
    ~10^5 vectors cost several times the products."""
    import torch

    row, pos = recent_events(fs, uniq, time, last)
    hist = fs.ev_item[pos]
    keep = fs.items.has_style[hist]
    row, hist = row[keep], hist[keep]
    out = np.full(len(items), np.nan, np.float32)
    if not len(row) or not len(items):
        return out
    pad = fs.items.n  # the index of the zero vector appended to the style table
    style = torch.from_numpy(np.vstack([fs.items.style, np.zeros((1, fs.items.style.shape[1]), np.float32)]))
    hcount = np.bincount(row, minlength=len(uniq))
    hslot = np.arange(len(row)) - (np.cumsum(hcount) - hcount)[row]
    history = np.full((len(uniq), int(hcount.max())), pad, np.int64)
    history[row, hslot] = hist
    order = np.argsort(uidx, kind="stable")
    ccount = np.bincount(uidx, minlength=len(uniq))
    cstart = np.cumsum(ccount) - ccount
    cslot = np.empty(len(items), np.int64)
    cslot[order] = np.arange(len(items)) - cstart[uidx[order]]
    width = int(ccount.max())
    step = max(1, SIM_BLOCK // max(width, 1))  # users per block
    for lo in range(0, len(uniq), step):
        hi = min(lo + step, len(uniq))
        sel = order[cstart[lo] : cstart[hi - 1] + ccount[hi - 1]]
        if not len(sel):
            continue
        slot = (uidx[sel] - lo) * width + cslot[sel]
        cands = np.full((hi - lo) * width, pad, np.int64)
        cands[slot] = items[sel]
        h = torch.from_numpy(history[lo:hi])
        vectors = style.index_select(0, torch.from_numpy(cands)).view(hi - lo, width, -1)
        history_vectors = style.index_select(0, h.reshape(-1)).view(hi - lo, h.shape[1], -1)
        sims = torch.bmm(vectors, history_vectors.transpose(1, 2))
        sims.masked_fill_((h == pad)[:, None, :], -np.inf)
        out[sel] = sims.amax(dim=2).numpy().ravel()[slot]
    out[hcount[uidx] == 0] = np.nan
    out[~fs.items.has_style[items]] = np.nan
    return out


def smoothed_rate(hits: np.ndarray, trials: np.ndarray, pseudo: float) -> np.ndarray:
    """(hits + pseudo * prior) / (trials + pseudo), prior = the overall rate: an item with few
    trials sits near the prior."""
    prior = hits.sum() / max(trials.sum(), 1.0)
    return (hits + pseudo * prior) / (trials + pseudo)


def price_in_category(prices: np.ndarray, category: np.ndarray, known: np.ndarray) -> np.ndarray:
    """log(price / the median price of the item's category among the ``known`` items); NaN
    without a price."""
    log_price = np.log(np.where(prices > 0, prices, np.nan))
    frame = pl.DataFrame({"c": category, "p": log_price, "k": known}, nan_to_null=True)
    medians = frame.filter(pl.col("k")).group_by("c").agg(pl.col("p").median())
    median = frame.join(medians, on="c", how="left", maintain_order="left")["p_right"].to_numpy().astype(np.float64)
    return log_price - median


def pop_views_30d(fs: FeatureSet, time: int) -> np.ndarray:
    sel = (fs.ev_ts < time) & (fs.ev_ts >= time - 30 * DAY) & (fs.ev_event == EVENT_CODES["view"])
    return np.bincount(fs.ev_item[sel], minlength=fs.items.n).astype(np.float64)


def _user_item_counts(fs: FeatureSet, union: pl.DataFrame, time: int) -> pl.DataFrame:
    """Views and carts of each candidate pair before ``time`` (0 once the user bought it)."""
    _, sel = recent_events(fs, union["u"].unique().to_numpy(), time, None)  # the pairs' users' events only, not a scan of the log
    ev = pl.DataFrame({"u": fs.ev_user[sel], "i": fs.ev_item[sel], "e": fs.ev_event[sel]})
    counts = ev.group_by(["u", "i"]).agg(
        (pl.col("e") == EVENT_CODES["view"]).sum().alias("views"),
        (pl.col("e") == EVENT_CODES["cart"]).sum().alias("carts"),
        (pl.col("e") == EVENT_CODES["purchase"]).any().alias("bought"),
    )
    counts = counts.select(
        "u", "i",
        pl.when(pl.col("bought")).then(0).otherwise(pl.col("views")).cast(pl.Float32).alias("ui_views_unbought"),
        pl.when(pl.col("bought")).then(0).otherwise(pl.col("carts")).cast(pl.Float32).alias("ui_carts_unbought"),
    )
    return counts


def on_sale_share(created: np.ndarray, time: int, until: int | None) -> np.ndarray:
    """The share of a list's life, [time, until), during which each item is on sale: 1 for
    an item launched before ``time`` (and for every item when the list is not shown past
    ``time``, as in serving), less for one launched while the list is shown."""
    if until is None or until <= time:
        return np.ones(len(created), np.float32)
    return ((until - np.clip(created, time, until)) / (until - time)).astype(np.float32)


def pair_features(fs: FeatureSet, union: pl.DataFrame, time: int, ctx: FeatureContext, until: int | None = None) -> pl.DataFrame:
    """``union`` (columns u, i and the sources' score/rank) with every pair feature added;
    rows keep their order. Missing values are NaN (a source that did not return the item,
    a user without history, an item without style). ``until``: the end of the list's life
    (see ``recsys.rank.sources``), for the items launched while it is shown."""
    time = int(time)
    u = union["u"].to_numpy().astype(np.int64)
    i = union["i"].to_numpy().astype(np.int64)
    uniq, uidx = np.unique(u, return_inverse=True)
    cols: dict[str, np.ndarray] = {}

    if ctx.two_tower is not None:
        users_tt = ctx.two_tower.user_matrix(uniq, time).numpy()
        items_tt = ctx.two_tower.item_matrix().numpy()
        cols["two_tower_dot"] = row_dot(users_tt, uidx, items_tt, i)
    if ctx.als is not None:
        if dense_pays(len(uniq), fs.items.n, len(i)):  # the ALS source's product for this batch, kept
            dot = ctx.als.scores(uniq, time)[uidx, i]
        else:
            dot = row_dot(np.asarray(ctx.als.model.user_factors)[uniq], uidx, np.asarray(ctx.als.model.item_factors), i)
        cols["als_dot"] = np.where(ctx.als._unknown[i], np.nan, dot)

    items = fs.items
    with_style = bool(items.has_style.any())  # a catalogue without images has no style features at all
    for name, vectors, has in (("style_cos", items.style, items.has_style), ("text_sim", fs.item_text(time), np.ones(items.n, bool))):
        if name == "style_cos" and not with_style:
            continue
        profile = fs.history_profile(uniq, time, vectors)
        has_profile = np.abs(profile).sum(1) > 0
        cols[name] = np.where(has[i] & has_profile[uidx], profile_similarity(fs, uniq, uidx, i, time, vectors), np.nan)
    if with_style:
        cols["style_max_sim"] = _max_history_similarity(fs, uniq, uidx, i, time, ctx.max_sim_history)
    cols["user_category_share"] = category_share(fs, uniq, time)[uidx, items.category[i]].astype(np.float32)
    # smoothed shares as a naive-Bayes affinity: log P(category | user) + log P(style group | user),
    # over the k-means groups and over the neighbour graph's
    category_affinity = np.log(category_share(fs, uniq, time, prior=1.0)[uidx, items.category[i]])
    if not with_style:
        cols["user_affinity"] = category_affinity.astype(np.float32)
    else:  # columns in this order: LightGBM samples features by their position
        for share_name, affinity_name, groups in (
            ("user_style_group_share", "user_affinity", ctx.style_cluster(fs)), ("user_style_graph_share", "user_graph_affinity", ctx.style_graph_cluster(fs)),
        ):
            share = category_share(fs, uniq, time, groups=groups, prior=0.3)[uidx, groups[i]]
            cols[share_name] = np.where(items.has_style[i], share, np.nan).astype(np.float32)
            cols[affinity_name] = (category_affinity + np.where(items.has_style[i], np.log(share), 0.0)).astype(np.float32)

    # price relative to what the user usually paid (mean price of their purchases before the time)
    stats = time_statistics(fs, time, ctx)
    if np.isfinite(ctx.prices).any():  # a catalogue without prices has no price features
        cols["price"] = ctx.prices[i].astype(np.float32)
        cols["price_vs_usual"] = (ctx.prices[i] / stats["usual"][u]).astype(np.float32)
        # categories differ in price by orders of magnitude: the level within the category
        level, user_level = stats["price_level"], stats["user_price_level"]
        cols["price_in_category"] = level[i].astype(np.float32)
        cols["user_price_in_category"] = user_level[u].astype(np.float32)
        cols["price_in_category_gap"] = (level[i] - user_level[u]).astype(np.float32)

    # item popularity and trend, age, smoothed view->purchase rate
    pop = {d: stats[f"pop_{d}"] for d in (1, 7, 30)}
    for d, counts in pop.items():
        cols[f"item_pop_{d}d"] = counts[i].astype(np.float32)
    cols["item_trend"] = ((pop[7][i] / 7.0 + 1e-3) / (pop[30][i] / 30.0 + 1e-3)).astype(np.float32)
    cols["item_age_days"] = (np.maximum(time - items.created_s[i], 0) / DAY).astype(np.float32)  # 0: launched at or after the time
    cols["item_on_sale_share"] = on_sale_share(items.created_s, time, until)[i]
    cols[ITEM_EVENTS] = stats["events"][i].astype(np.float32)  # 0: a new item, no history yet
    for name, hits, trials in (("item_view_to_purchase", "buys", "views"), ("item_view_to_click", "clicks", "views"), ("item_click_to_purchase", "buys", "clicks")):
        cols[name] = smoothed_rate(stats[hits], stats[trials], ctx.smoothing)[i].astype(np.float32)
    # lifetime attention: log of (events + a median item's) per day on sale
    events_all = stats["events"]
    days_alive = np.maximum((time - np.minimum(items.created_s, time)) / DAY, 1.0)
    rate = events_all / days_alive
    prior_rate = float(np.median(rate[events_all > 0])) if (events_all > 0).any() else 1.0
    cols["item_events_per_day"] = np.log((events_all + prior_rate) / (days_alive + 1.0))[i].astype(np.float32)
    # attention per day on sale (how often shoppers pick the item when it is shown), last 30 days
    days_on_sale = np.clip((time - items.created_s) / DAY, 1.0, 30.0)
    cols["item_views_per_day"] = (stats["views_30d"] / days_on_sale)[i].astype(np.float32)

    # user activity and recency
    end = np.searchsorted(fs.ev_key, uniq * KEY + time, side="left")
    start = fs.ev_start[uniq]
    n_events = end - start
    cols["user_events"] = n_events[uidx].astype(np.float32)
    cols["user_events_30d"] = stats["recent"][u].astype(np.float32)
    last = np.where(n_events > 0, fs.ev_ts[np.maximum(end - 1, 0)], -1)
    cols["user_days_since_last"] = np.where(n_events > 0, (time - last) / DAY, np.nan)[uidx].astype(np.float32)

    out = union.with_columns(**{k: pl.Series(k, np.asarray(v, np.float32)) for k, v in cols.items()})
    out = out.join(_user_item_counts(fs, union, time), on=["u", "i"], how="left", maintain_order="left")
    return out.with_columns(pl.col("ui_views_unbought", "ui_carts_unbought").fill_null(0.0)).with_columns(pl.exclude("u", "i").cast(pl.Float32))


def feature_names(frame: pl.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    return [c for c in frame.columns if c not in ("u", "i", "label", ITEM_EVENTS, *exclude)]
