"""The StyleMart world: catalogue, shoppers and their sessions, drawn from a choice model.

Utility of item i for user u at time t::

    U = w_style * log(eps + S * affinity[u, style(i)])   # visual style taste
      + quality[i]                                       # popularity
      - w_price * price_sensitivity[u] * price_z[i]      # price within the category
      + w_new * exp(-age_days(i, t) / novelty_days)      # freshness
      + Gumbel noise                                     # which of the shown items get viewed

A session picks a category from the user's intents, shows random available items of it,
the user views the best few, and each view moves down the funnel view -> click -> cart ->
purchase with probability sigmoid(bias + slope * U). Everything is vectorised per chunk of
users so the ``large`` preset streams in bounded memory.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from data.stylemart.render import CATEGORIES
from data.stylemart.styles import STYLES
from data.stylemart.text import product_text, review_rating, review_text

N_STYLES = len(STYLES)
N_CATEGORIES = len(CATEGORIES)
CATEGORY_PRICE = {"shirt": 30.0, "dress": 65.0, "mug": 14.0, "bag": 80.0, "sofa": 750.0, "lamp": 95.0, "sneaker": 90.0, "poster": 25.0}
DAY = 86_400


@dataclass(frozen=True)
class ChoiceModel:
    style_weight: float = 1.3
    style_eps: float = 0.05
    quality_sd: float = 0.6
    price_weight: float = 0.5
    novelty_weight: float = 0.5
    novelty_days: float = 10.0
    funnel_slope: float = 0.6
    click_bias: float = -2.0
    cart_bias: float = -1.9
    purchase_bias: float = -0.9
    affinity_concentration: float = 0.25  # Dirichlet: small -> a few dominant styles
    intent_concentration: float = 0.6
    candidates_per_session: int = 24
    mean_views_per_session: float = 3.5
    review_rate: float = 0.35


@dataclass(frozen=True)
class WorldConfig:
    n_users: int
    n_items: int
    sessions_per_user: float  # mean of a heavy-tailed (log-normal) activity
    days: int = 120
    start: dt.date = dt.date(2026, 3, 1)
    launch_fraction: float = 0.45  # items already in the catalogue at the start
    choice: ChoiceModel = field(default_factory=ChoiceModel)

    @property
    def start_s(self) -> int:
        return int(dt.datetime.combine(self.start, dt.time(), tzinfo=dt.UTC).timestamp())

    @property
    def end_s(self) -> int:
        return self.start_s + self.days * DAY

    def to_json(self) -> dict:
        d = asdict(self)
        d["start"] = self.start.isoformat()
        return d


@dataclass
class Catalogue:
    style: np.ndarray  # (n,) int
    category: np.ndarray  # (n,) int
    quality: np.ndarray  # (n,) float
    price: np.ndarray  # (n,) float
    price_z: np.ndarray  # (n,) float: log-price standardised within category
    created_s: np.ndarray  # (n,) int64 seconds
    # items ordered by (category, created_at) for availability look-ups
    order: np.ndarray
    cat_start: np.ndarray  # (C,) offsets into order
    cat_created: list[np.ndarray]

    @property
    def n(self) -> int:
        return self.style.shape[0]


def item_ids(idx: np.ndarray) -> pl.Series:
    return ("I" + pl.Series("item_id", idx, dtype=pl.Int64).cast(pl.String).str.zfill(6)).alias("item_id")


def user_ids(idx: np.ndarray) -> pl.Series:
    return ("U" + pl.Series("user_id", idx, dtype=pl.Int64).cast(pl.String).str.zfill(7)).alias("user_id")


def make_catalogue(cfg: WorldConfig, rng: np.random.Generator) -> Catalogue:
    n = cfg.n_items
    style = rng.integers(0, N_STYLES, n)
    category = rng.integers(0, N_CATEGORIES, n)
    quality = rng.normal(0.0, cfg.choice.quality_sd, n)
    base = np.array([CATEGORY_PRICE[c] for c in CATEGORIES])[category]
    log_noise = rng.normal(0.0, 0.35, n)
    price = np.round(base * np.exp(log_noise), 2)
    price_z = log_noise / 0.35
    launched = rng.random(n) < cfg.launch_fraction
    created = np.where(
        launched,
        cfg.start_s - rng.integers(0, 60 * DAY, n),
        cfg.start_s + rng.integers(0, cfg.days * DAY, n),
    ).astype(np.int64)
    order = np.lexsort((created, category))
    counts = np.bincount(category, minlength=N_CATEGORIES)
    cat_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cat_created = [created[order[cat_start[c] : cat_start[c] + counts[c]]] for c in range(N_CATEGORIES)]
    return Catalogue(style, category, quality, price, price_z, created, order, cat_start, cat_created)


def catalogue_tables(cat: Catalogue, cfg: WorldConfig, rng: np.random.Generator, image_ext: str | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(items table, ground-truth item labels)."""
    titles, descriptions = zip(*(product_text(CATEGORIES[c], int(s), rng) for c, s in zip(cat.category, cat.style, strict=True)), strict=True)
    ids = item_ids(np.arange(cat.n))
    items = pl.DataFrame(
        {
            "item_id": ids,
            "title": list(titles),
            "description": list(descriptions),
            "category": [CATEGORIES[c] for c in cat.category],
            "price": cat.price,
            "image_path": (("images/" + ids + f".{image_ext}") if image_ext else pl.Series([None] * cat.n, dtype=pl.String)),
            "created_at": pl.Series(cat.created_s * 1_000_000).cast(pl.Datetime("us", "UTC")),
        }
    )
    truth = pl.DataFrame(
        {
            "item_id": ids,
            "style": [STYLES[s].name for s in cat.style],
            "style_index": cat.style.astype(np.int32),
            "category": [CATEGORIES[c] for c in cat.category],
            "quality": cat.quality.astype(np.float32),
        }
    )
    return items, truth


@dataclass
class Users:
    first: int  # global index of the first user in this chunk
    affinity: np.ndarray  # (n, S)
    intent: np.ndarray  # (n, C)
    price_sensitivity: np.ndarray
    activity: np.ndarray  # expected sessions
    signup_s: np.ndarray

    @property
    def n(self) -> int:
        return self.affinity.shape[0]


def make_users(first: int, n: int, cfg: WorldConfig, rng: np.random.Generator) -> Users:
    ch = cfg.choice
    affinity = rng.dirichlet(np.full(N_STYLES, ch.affinity_concentration), n)
    intent = rng.dirichlet(np.full(N_CATEGORIES, ch.intent_concentration), n)
    price_sensitivity = rng.lognormal(0.0, 0.5, n)
    activity = rng.lognormal(np.log(cfg.sessions_per_user) - 0.5, 1.0, n)
    early = rng.random(n) < 0.3
    signup = np.where(early, cfg.start_s, cfg.start_s + rng.integers(0, int(cfg.days * 0.8) * DAY, n))
    return Users(first, affinity, intent, price_sensitivity, activity, signup.astype(np.int64))


def user_tables(users: Users) -> tuple[pl.DataFrame, pl.DataFrame]:
    ids = user_ids(np.arange(users.first, users.first + users.n))
    table = pl.DataFrame(
        {
            "user_id": ids,
            "signup_at": pl.Series(users.signup_s * 1_000_000).cast(pl.Datetime("us", "UTC")),
        }
    )
    truth = pl.DataFrame(
        {
            "user_id": ids,
            "style_affinity": users.affinity.astype(np.float32),
            "category_intent": users.intent.astype(np.float32),
            "price_sensitivity": users.price_sensitivity.astype(np.float32),
            "activity": users.activity.astype(np.float32),
        }
    )
    return table, truth


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def utility(users: Users, local_user: np.ndarray, items: np.ndarray, t: np.ndarray, cat: Catalogue, ch: ChoiceModel) -> np.ndarray:
    """Deterministic utility of ``items`` (any shape) for users ``local_user`` at times ``t`` (broadcast)."""
    aff = users.affinity[local_user[..., None], cat.style[items]] if items.ndim > local_user.ndim else users.affinity[local_user, cat.style[items]]
    age_days = np.maximum(t - cat.created_s[items], 0) / DAY
    sens = users.price_sensitivity[local_user[..., None]] if items.ndim > local_user.ndim else users.price_sensitivity[local_user]
    return (
        ch.style_weight * np.log(ch.style_eps + N_STYLES * aff)
        + cat.quality[items]
        - ch.price_weight * sens * cat.price_z[items]
        + ch.novelty_weight * np.exp(-age_days / ch.novelty_days)
    )


def simulate_events(users: Users, cat: Catalogue, cfg: WorldConfig, rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(interactions, reviews) of one chunk of users."""
    ch = cfg.choice
    n_sess = np.maximum(1, rng.poisson(users.activity))
    sess_user = np.repeat(np.arange(users.n), n_sess)
    s = sess_user.shape[0]
    signup = users.signup_s[sess_user]
    sess_t = signup + (rng.random(s) * (cfg.end_s - signup - 3600)).astype(np.int64)
    cum_intent = np.cumsum(users.intent[sess_user], axis=1)
    sess_cat = np.minimum((cum_intent < rng.random(s)[:, None]).sum(axis=1), N_CATEGORIES - 1)

    available = np.ones(s, dtype=np.int64)
    for c in range(N_CATEGORIES):
        mask = sess_cat == c
        available[mask] = np.maximum(np.searchsorted(cat.cat_created[c], sess_t[mask], side="right"), 1)
    k = ch.candidates_per_session
    pos = (rng.random((s, k)) * available[:, None]).astype(np.int64)
    cand = cat.order[cat.cat_start[sess_cat][:, None] + pos]  # (s, k) item indices

    u = utility(users, sess_user, cand, sess_t[:, None], cat, ch)
    noisy = u + rng.gumbel(size=u.shape)
    rank = np.argsort(np.argsort(-noisy, axis=1), axis=1)
    n_views = np.minimum(1 + rng.poisson(ch.mean_views_per_session - 1.0, s), k)
    viewed = rank < n_views[:, None]

    vs, vk = np.nonzero(viewed)
    v_item = cand[vs, vk]
    v_u = u[vs, vk]
    v_user = sess_user[vs]
    v_ts = sess_t[vs] + rank[vs, vk] * 45 + rng.integers(0, 30, vs.shape[0])
    p = lambda bias: _sigmoid(bias + ch.funnel_slope * v_u)  # noqa: E731
    click = rng.random(vs.shape[0]) < p(ch.click_bias)
    cart = click & (rng.random(vs.shape[0]) < p(ch.cart_bias))
    buy = cart & (rng.random(vs.shape[0]) < p(ch.purchase_bias))

    stages = [("view", np.ones_like(click), 0), ("click", click, 8), ("cart", cart, 70), ("purchase", buy, 400)]
    users_col, items_col, ts_col, ev_col, qty_col = [], [], [], [], []
    for name, mask, delay in stages:
        users_col.append(v_user[mask])
        items_col.append(v_item[mask])
        ts_col.append(v_ts[mask] + delay)
        ev_col.append(np.full(int(mask.sum()), name, dtype=object))
        qty = np.ones(int(mask.sum()), dtype=np.int64)
        if name == "purchase":
            qty = rng.geometric(0.85, int(mask.sum())).astype(np.int64)
        qty_col.append(qty)
    ev_user = np.concatenate(users_col)
    interactions = pl.DataFrame(
        {
            "user_id": user_ids(ev_user + users.first),
            "item_id": item_ids(np.concatenate(items_col)),
            "ts": pl.Series(np.minimum(np.concatenate(ts_col), cfg.end_s - 1) * 1_000_000).cast(pl.Datetime("us", "UTC")),
            "event": pl.Series(np.concatenate(ev_col), dtype=pl.String),
            "quantity": np.concatenate(qty_col),
        }
    ).sort(["user_id", "ts", "event"])

    b_user, b_item, b_ts = v_user[buy], v_item[buy], v_ts[buy] + 400
    wrote = rng.random(b_user.shape[0]) < ch.review_rate
    r_user, r_item = b_user[wrote], b_item[wrote]
    match = N_STYLES * users.affinity[r_user, cat.style[r_item]]
    rating = review_rating(match, rng)
    texts = [review_text(CATEGORIES[cat.category[i]], int(cat.style[i]), int(r), rng) for i, r in zip(r_item, rating, strict=True)]
    r_ts = np.minimum(b_ts[wrote] + rng.integers(DAY, 10 * DAY, r_user.shape[0]), cfg.end_s - 1)
    reviews = pl.DataFrame(
        {
            "user_id": user_ids(r_user + users.first),
            "item_id": item_ids(r_item),
            "ts": pl.Series(r_ts * 1_000_000, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "rating": rating,
            "text": pl.Series(texts, dtype=pl.String),
        }
    ).sort(["user_id", "ts"])
    return interactions, reviews
