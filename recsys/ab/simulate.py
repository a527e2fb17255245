"""`stylerec ab simulate`: serve two policies to a random population of StyleMart shoppers.

Each user is assigned to control or treatment at random, sees that arm's top-k items in a
storefront slot on every visit, and buys according to StyleMart's ground-truth choice
model. The output is in the input format of `stylerec ab report`, which closes the loop
from offline metrics to an experiment read-out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from data.dataset import DatasetError
from data.io import write_json, write_parquet
from data.split import load_or_create_split
from data.stylemart.storefront import load_world, simulate_visits
from data.validate import ValidatedDataset
from recsys.baselines import ImplicitMF, Popularity
from recsys.evaluate import Recommender, recommend
from recsys.features import DAY, FeatureSet, build_features

BUILTIN = ("popularity", "als", "random")
RANKED = "ranked"  # the registered ranker re-ordering its candidate union ("ranked:<ranker URI>" for another one)


@dataclass
class RandomPolicy:
    """Random slots: the floor any recommender should beat."""

    n_items: int
    seed: int = 0
    name: str = "random"

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        return np.random.default_rng([self.seed, int(users[0]) if len(users) else 0]).random((len(users), self.n_items))


class Served(Protocol):
    """What a served model gives a policy: its recommender and the features it serves on
    (recsys.serving.LoadedModel, recsys.rank.serving.ServedRanker)."""

    recommender: Recommender
    fs: FeatureSet


ModelLoader = Callable[[str], Served]  # a model URI or bundle folder -> the served model
RankerLoader = Callable[[str | None], Served]  # a ranker URI (None: the default ranker) -> the served ranker


def ranker_uri(spec: str) -> str | None:
    """The ranker URI of a "ranked[:URI]" policy (None: the loader's default)."""
    return spec.partition(":")[2] or None


def is_ranked(spec: str) -> bool:
    return spec == RANKED or spec.startswith(RANKED + ":")


def _resolver(load_model: ModelLoader, load_ranker: RankerLoader | None) -> ModelLoader:
    """One loader for every spec that is not built in; each is loaded once."""
    cache: dict[str, Served] = {}

    def load(spec: str) -> Served:
        if spec not in cache:
            if is_ranked(spec):
                if load_ranker is None:
                    raise ValueError(f"policy {spec!r} needs a ranker loader")
                cache[spec] = load_ranker(ranker_uri(spec))
            else:
                cache[spec] = load_model(spec)
        return cache[spec]

    return load


def make_policy(spec: str, fs: FeatureSet, time: int, seed: int, load_model: ModelLoader):
    if spec == "popularity":
        return Popularity().fit(fs, time)
    if spec == "als":
        return ImplicitMF("als", seed=seed).fit(fs, time)
    if spec == "random":
        return RandomPolicy(fs.items.n, seed)
    return load_model(spec).recommender


def simulate_experiment(
    ds: ValidatedDataset, control: str, treatment: str, n_users: int, days: float, seed: int, load_model: ModelLoader, k: int = 10,
    load_ranker: RankerLoader | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Assign random users to control / treatment, serve each arm's top-k for ``days`` and
    draw purchases from the ground-truth shoppers. ``load_model`` resolves a policy spec
    that is not built in (a model URI or bundle folder), ``load_ranker`` the ranker of a
    "ranked[:URI]" policy."""
    world = load_world(ds.dir.root)
    load_model = _resolver(load_model, load_ranker)
    model_specs = [s for s in (control, treatment) if s not in BUILTIN]
    fs = load_model(model_specs[0]).fs if model_specs else build_features(ds, load_or_create_split(ds), require_style=False)
    if list(fs.items.ids) != list(world.item_ids) or list(fs.user_ids) != list(world.user_ids):
        raise DatasetError(f"{ds.dir.root}: features and ground truth disagree on the item or user ids")
    start = int(fs.ev_ts.max()) + 1
    end = start + int(days * DAY)
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(fs.n_users, min(n_users, fs.n_users), replace=False))
    arm = np.where(rng.random(len(users)) < 0.5, "control", "treatment")
    exposure = start + (rng.random(len(users)) * days / 2 * DAY).astype(np.int64)
    shown = np.full((len(users), k), -1, np.int64)
    for name, spec in (("control", control), ("treatment", treatment)):
        sel = arm == name
        policy = make_policy(spec, fs, start, seed, load_model)
        shown[sel] = recommend(policy, fs, users[sel], start, k, mask_seen=True)
    events, expected = simulate_visits(world, users, exposure, end, shown, rng)
    before = pl.lit(dt.datetime.fromtimestamp(start, dt.UTC))
    pre = (
        ds.interactions.filter((pl.col("event") == "purchase") & (pl.col("ts") < before) & (pl.col("ts") >= before - dt.timedelta(days=30)))
        .group_by("user_id").len().rename({"len": "pre_purchases"})
    )
    assignments = (
        pl.DataFrame({"user_id": fs.user_ids[users], "variant": arm, "first_exposure": pl.Series(exposure * 1_000_000).cast(pl.Datetime("us", "UTC"))})
        .join(pre, on="user_id", how="left")
        .with_columns(pl.col("pre_purchases").fill_null(0))
    )
    summary = {
        "control": control,
        "treatment": treatment,
        "users": {a: int((arm == a).sum()) for a in ("control", "treatment")},
        "expected_purchases_per_user": {a: float(expected[arm == a].mean()) for a in ("control", "treatment")},
        "purchases": {a: int(events.join(assignments.filter(pl.col("variant") == a).select("user_id"), on="user_id").height) for a in ("control", "treatment")},
        "start": dt.datetime.fromtimestamp(start, dt.UTC).isoformat(),
        "days": days,
        "k": k,
        "seed": seed,
    }
    return assignments, events, summary


def write_simulation(out: Path, assignments: pl.DataFrame, events: pl.DataFrame, summary: dict) -> None:
    """The simulated experiment in the input format of `stylerec ab report`."""
    write_parquet(assignments, out / "assignments.parquet")
    write_parquet(events, out / "events.parquet")
    write_json(summary, out / "simulation.json")
