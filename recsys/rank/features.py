"""Pair features of (user, candidate item) as of a query time: only events before the time
count, so an event at or after it changes no feature.

Vectorised over the candidate pairs (numpy / polars joins; history similarities by
repeating each pair over its user's history items, in chunks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.evaluate import Recommender
from recsys.features import DAY, EVENT_CODES, FeatureSet
from recsys.features.events import KEY
from recsys.rank.sources import category_share, recent_events

# the features built from style vectors (an ablation leaves them out)
STYLE_FEATURES = ("style_knn_score", "style_knn_rank", "style_cos", "style_max_sim", "user_style_group_share", "user_affinity", "new_arrivals_score", "new_arrivals_rank")
CHUNK = 200_000


@dataclass
class FeatureContext:
    """What the pair features need beyond the feature set."""

    prices: np.ndarray  # (n_items,) catalogue price, NaN where unknown
    two_tower: Recommender | None = None  # with user_matrix / item_matrix (recsys.train.TwoTowerRecommender)
    als: object | None = None  # a fitted recsys.baselines.ImplicitMF (fitted before the query time)
    max_sim_history: int = 20
    smoothing: float = 20.0  # pseudo-views of the smoothed view->purchase rate
    style_clusters: int = 16  # k-means groups of the catalogue's style vectors (the user's style shares)
    _clusters: np.ndarray | None = None

    def style_cluster(self, fs: FeatureSet) -> np.ndarray:
        """Each item's style group (k-means over the items with a style vector; the items
        without one form the last group), computed once: image content only, no events."""
        if self._clusters is None:
            self._clusters = style_groups(fs.items.style, fs.items.has_style, self.style_clusters)
        return self._clusters


def style_groups(style: np.ndarray, has_style: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    import faiss

    vectors = np.ascontiguousarray(style[has_style], np.float32)
    k = max(1, min(k, len(vectors) // 10))
    kmeans = faiss.Kmeans(vectors.shape[1], k, niter=25, nredo=5, seed=seed, spherical=True, min_points_per_centroid=1)
    kmeans.train(vectors)
    groups = np.full(len(style), k, np.int64)
    groups[has_style] = kmeans.index.search(vectors, 1)[1][:, 0]
    return groups


def row_dot(a: np.ndarray, ai: np.ndarray, b: np.ndarray, bi: np.ndarray) -> np.ndarray:
    """``(a[ai] * b[bi]).sum(1)`` in chunks."""
    out = np.empty(len(ai), np.float32)
    for s in range(0, len(ai), CHUNK):
        out[s : s + CHUNK] = np.einsum("ij,ij->i", a[ai[s : s + CHUNK]], b[bi[s : s + CHUNK]])
    return out


def _max_history_similarity(fs: FeatureSet, uniq: np.ndarray, uidx: np.ndarray, items: np.ndarray, time: int, last: int) -> np.ndarray:
    """Each pair's largest style similarity to the user's last ``last`` history items (with style)."""
    row, pos = recent_events(fs, uniq, time, last)
    hist = fs.ev_item[pos]
    keep = fs.items.has_style[hist]
    row, hist = row[keep], hist[keep]
    hcount = np.bincount(row, minlength=len(uniq))
    hstart = np.cumsum(hcount) - hcount
    out = np.full(len(items), np.nan, np.float32)
    style = fs.items.style
    step = max(1, CHUNK // max(last, 1))
    for s in range(0, len(items), step):
        pu, pi = uidx[s : s + step], items[s : s + step]
        counts = hcount[pu]
        if not counts.sum():
            continue
        pair = np.repeat(np.arange(len(pu)), counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        sims = row_dot(style, pi[pair], style, hist[hstart[pu][pair] + within])
        has = counts > 0
        starts = (np.cumsum(counts) - counts)[has]
        block = out[s : s + step]
        block[has] = np.maximum.reduceat(sims, starts)
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
    sel = (fs.ev_ts < time) & np.isin(fs.ev_user, union["u"].unique().to_numpy())
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


def pair_features(fs: FeatureSet, union: pl.DataFrame, time: int, ctx: FeatureContext) -> pl.DataFrame:
    """``union`` (columns u, i and the sources' score/rank) with every pair feature added;
    rows keep their order. Missing values are NaN (a source that did not return the item,
    a user without history, an item without style)."""
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
        dot = row_dot(np.asarray(ctx.als.model.user_factors), uniq[uidx], np.asarray(ctx.als.model.item_factors), i)
        cols["als_dot"] = np.where(ctx.als._unknown[i], np.nan, dot)

    items = fs.items
    with_style = bool(items.has_style.any())  # a catalogue without images has no style features at all
    for name, vectors, has in (("style_cos", items.style, items.has_style), ("text_sim", items.text, np.ones(items.n, bool))):
        if name == "style_cos" and not with_style:
            continue
        profile = fs.history_profile(uniq, time, vectors)
        has_profile = np.abs(profile).sum(1) > 0
        sim = row_dot(profile, uidx, vectors, i)
        cols[name] = np.where(has[i] & has_profile[uidx], sim, np.nan)
    if with_style:
        cols["style_max_sim"] = _max_history_similarity(fs, uniq, uidx, i, time, ctx.max_sim_history)
    cols["user_category_share"] = category_share(fs, uniq, time)[uidx, items.category[i]].astype(np.float32)
    # smoothed shares as a naive-Bayes affinity: log P(category | user) + log P(style group | user)
    affinity = np.log(category_share(fs, uniq, time, prior=1.0)[uidx, items.category[i]])
    if with_style:
        groups = ctx.style_cluster(fs)
        style_share = category_share(fs, uniq, time, groups=groups, prior=0.3)[uidx, groups[i]]
        cols["user_style_group_share"] = np.where(items.has_style[i], style_share, np.nan).astype(np.float32)
        affinity = affinity + np.where(items.has_style[i], np.log(style_share), 0.0)
    cols["user_affinity"] = affinity.astype(np.float32)

    before = fs.ev_ts < time
    bought = before & (fs.ev_event == EVENT_CODES["purchase"])
    # price relative to what the user usually paid (mean price of their purchases before the time)
    if np.isfinite(ctx.prices).any():  # a catalogue without prices has no price features
        paid = ctx.prices[fs.ev_item[bought]]
        ok = np.isfinite(paid)
        spent = np.bincount(fs.ev_user[bought][ok], paid[ok], minlength=fs.n_users)
        n_bought = np.bincount(fs.ev_user[bought][ok], minlength=fs.n_users)
        usual = np.where(n_bought > 0, spent / np.maximum(n_bought, 1), np.nan)
        cols["price"] = ctx.prices[i].astype(np.float32)
        cols["price_vs_usual"] = (ctx.prices[i] / usual[u]).astype(np.float32)
        # price level within the item's category (categories differ in price by orders of
        # magnitude), and the level this user engages with (clicks, carts, purchases before the time)
        level = price_in_category(ctx.prices, items.category, items.created_s < time)
        engaged = before & (fs.ev_event >= EVENT_CODES["click"]) & np.isfinite(level[fs.ev_item])
        n_engaged = np.bincount(fs.ev_user[engaged], minlength=fs.n_users)
        user_level = np.where(n_engaged > 0, np.bincount(fs.ev_user[engaged], level[fs.ev_item[engaged]], minlength=fs.n_users) / np.maximum(n_engaged, 1), np.nan)
        cols["price_in_category"] = level[i].astype(np.float32)
        cols["user_price_in_category"] = user_level[u].astype(np.float32)
        cols["price_in_category_gap"] = (level[i] - user_level[u]).astype(np.float32)

    # item popularity and trend, age, smoothed view->purchase rate
    pop = {d: fs.popularity(before=time, after=time - d * DAY) for d in (1, 7, 30)}
    for d, counts in pop.items():
        cols[f"item_pop_{d}d"] = counts[i].astype(np.float32)
    cols["item_trend"] = ((pop[7][i] / 7.0 + 1e-3) / (pop[30][i] / 30.0 + 1e-3)).astype(np.float32)
    cols["item_age_days"] = (np.maximum(time - items.created_s[i], 0) / DAY).astype(np.float32)  # 0: launched at or after the time
    views = np.bincount(fs.ev_item[before & (fs.ev_event == EVENT_CODES["view"])], minlength=items.n).astype(np.float64)
    clicks = np.bincount(fs.ev_item[before & (fs.ev_event == EVENT_CODES["click"])], minlength=items.n).astype(np.float64)
    buys = np.bincount(fs.ev_item[bought], minlength=items.n).astype(np.float64)
    for name, hits, trials in (("item_view_to_purchase", buys, views), ("item_view_to_click", clicks, views), ("item_click_to_purchase", buys, clicks)):
        cols[name] = smoothed_rate(hits, trials, ctx.smoothing)[i].astype(np.float32)
    # lifetime attention: log of (events + a median item's) per day on sale
    events_all = np.bincount(fs.ev_item[before], minlength=items.n).astype(np.float64)
    days_alive = np.maximum((time - np.minimum(items.created_s, time)) / DAY, 1.0)
    rate = events_all / days_alive
    prior_rate = float(np.median(rate[events_all > 0])) if (events_all > 0).any() else 1.0
    cols["item_events_per_day"] = np.log((events_all + prior_rate) / (days_alive + 1.0))[i].astype(np.float32)
    # attention per day on sale (how often shoppers pick the item when it is shown), last 30 days
    days_on_sale = np.clip((time - items.created_s) / DAY, 1.0, 30.0)
    cols["item_views_per_day"] = (pop_views_30d(fs, time) / days_on_sale)[i].astype(np.float32)

    # user activity and recency
    end = np.searchsorted(fs.ev_key, uniq * KEY + time, side="left")
    start = fs.ev_start[uniq]
    n_events = end - start
    cols["user_events"] = n_events[uidx].astype(np.float32)
    recent = np.bincount(fs.ev_user[before & (fs.ev_ts >= time - 30 * DAY)], minlength=fs.n_users)
    cols["user_events_30d"] = recent[u].astype(np.float32)
    last = np.where(n_events > 0, fs.ev_ts[np.maximum(end - 1, 0)], -1)
    cols["user_days_since_last"] = np.where(n_events > 0, (time - last) / DAY, np.nan)[uidx].astype(np.float32)

    out = union.with_columns(**{k: pl.Series(k, np.asarray(v, np.float32)) for k, v in cols.items()})
    out = out.join(_user_item_counts(fs, union, time), on=["u", "i"], how="left", maintain_order="left")
    return out.with_columns(pl.col("ui_views_unbought", "ui_carts_unbought").fill_null(0.0)).with_columns(pl.exclude("u", "i").cast(pl.Float32))


def feature_names(frame: pl.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    return [c for c in frame.columns if c not in ("u", "i", "label", *exclude)]
