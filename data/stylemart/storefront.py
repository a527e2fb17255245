"""StyleMart's shoppers reacting to a storefront slot: ground truth for simulated A/B tests.

Given the items a policy shows each user, purchases are drawn from the same choice model
that generated the data (utility of style, quality, price and freshness, plus the user's
category intent), so a recommender that knows the shoppers' taste sells more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from data.dataset import DatasetDir, DatasetError
from data.stylemart.render import CATEGORIES
from data.stylemart.simulate import CATEGORY_PRICE, DAY, Catalogue, ChoiceModel, Users, _sigmoid, utility


@dataclass
class StorefrontWorld:
    """Ground truth aligned with sorted item and user ids."""

    item_ids: np.ndarray
    user_ids: np.ndarray
    catalogue: Catalogue
    users: Users
    choice: ChoiceModel


def load_world(root: str | Path) -> StorefrontWorld:
    dd = DatasetDir(root)
    gt = dd.ground_truth_dir
    if not (gt / "choice_model.json").is_file():
        raise DatasetError(f"{gt}: no StyleMart ground truth; simulated experiments need a StyleMart dataset")
    meta = json.loads((gt / "choice_model.json").read_text())
    items = dd.read_raw("items").sort("item_id").join(pl.read_parquet(gt / "items.parquet").select("item_id", "style_index", "quality"), on="item_id")
    users = pl.read_parquet(gt / "users.parquet").sort("user_id")
    cat = np.array([CATEGORIES.index(c) for c in items["category"].to_list()])
    base = np.array([CATEGORY_PRICE[c] for c in CATEGORIES])[cat]
    price = items["price"].to_numpy()
    empty = np.zeros(0, np.int64)
    catalogue = Catalogue(
        style=items["style_index"].to_numpy().astype(np.int64),
        category=cat,
        quality=items["quality"].to_numpy().astype(np.float64),
        price=price,
        price_z=np.log(price / base) / 0.35,
        created_s=items["created_at"].dt.epoch("s").to_numpy(),
        order=empty,
        cat_start=empty,
        cat_created=[],
    )
    people = Users(
        first=0,
        affinity=users["style_affinity"].to_numpy().astype(np.float64),
        intent=users["category_intent"].to_numpy().astype(np.float64),
        price_sensitivity=users["price_sensitivity"].to_numpy().astype(np.float64),
        activity=users["activity"].to_numpy().astype(np.float64),
        signup_s=np.zeros(users.height, np.int64),
    )
    choice = ChoiceModel(**meta["choice_model"])
    return StorefrontWorld(items["item_id"].to_numpy(), users["user_id"].to_numpy(), catalogue, people, choice)


def purchase_probability(world: StorefrontWorld, users: np.ndarray, shown: np.ndarray, t: np.ndarray) -> np.ndarray:
    """P(purchase) of each shown item (users x slots) on one visit.

    Position bias: the item at rank r is examined with probability 1 / (1 + r), about three
    items of a slot of ten, like the ~3.5 views of a StyleMart session; an examined item
    goes through the funnel click -> cart -> purchase.
    """
    ch = world.choice
    u = utility(world.users, users, shown, t[:, None], world.catalogue, ch)
    intent = world.users.intent[users[:, None], world.catalogue.category[shown]]
    u = u + np.log(len(CATEGORIES) * intent + 1e-6)  # the slot mixes categories: intent decides interest
    p = _sigmoid(ch.click_bias + ch.funnel_slope * u) * _sigmoid(ch.cart_bias + ch.funnel_slope * u) * _sigmoid(ch.purchase_bias + ch.funnel_slope * u)
    examined = 1.0 / (1.0 + np.arange(shown.shape[1]))
    return np.where(shown >= 0, p * examined[None, :], 0.0)


def simulate_visits(world: StorefrontWorld, users: np.ndarray, exposure_s: np.ndarray, end_s: int, shown: np.ndarray, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    """Purchase events of ``users`` (rows) over their visits from exposure to ``end_s``.

    Visits per user ~ 1 + Poisson(activity x days / 120) (activity is expected sessions
    over StyleMart's 120-day timeline). Returns (events, expected purchases per user).
    """
    days = np.maximum(end_s - exposure_s, 0) / DAY
    visits = 1 + rng.poisson(world.users.activity[users] * days / 120.0)
    rows = np.repeat(np.arange(len(users)), visits)
    first = np.repeat(np.cumsum(visits) - visits, visits)
    is_first = np.arange(len(rows)) == first
    offset = np.where(is_first, 0, rng.random(len(rows)) * (end_s - exposure_s[rows]))
    ts = (exposure_s[rows] + offset).astype(np.int64)
    p = purchase_probability(world, users[rows], shown[rows], ts)
    bought = rng.random(p.shape) < p
    v, slot = np.nonzero(bought)
    items = shown[rows[v], slot]
    events = pl.DataFrame(
        {
            "user_id": world.user_ids[users[rows[v]]],
            "ts": pl.Series((ts[v] + 60 * slot) * 1_000_000).cast(pl.Datetime("us", "UTC")),
            "event": "purchase",
            "item_id": world.item_ids[items],
            "revenue": world.catalogue.price[items],
        }
    )
    expected = np.bincount(rows, weights=p.sum(1), minlength=len(users))
    return events, expected
