"""The ranker: LightGBM lambdarank over the candidate union, trained on windows before the
test cutoff.

Window k (of ``windows``, each ``window_days`` long, the last one ending at the cutoff):
sources fitted and features computed at the window's start, labels = the graded events in
the window (purchase 3 > cart 2 > click 1 > none 0, the event codes), for the users with
at least one labelled candidate. Earlier windows train (negatives sampled per user), the
last validates (every candidate; NDCG@10, early stopping), then the model is refit on all
windows with the chosen number of trees. Deploy mode (``rounds`` given, the windows ending at
the end of the data) skips the validation: every window trains, for that many trees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from recsys.features import DAY, EVENT_CODES, FeatureSet
from recsys.rank.compiled import BoosterScorer
from recsys.rank.config import RankConfig
from recsys.rank.features import ITEM_EVENTS, FeatureContext, feature_names, pair_features
from recsys.rank.sources import CandidateGenerator, pairs_top_n

LABEL_EVENTS = ("click", "cart", "purchase")


class RankerError(ValueError):
    """Training data the ranker cannot learn from (no labelled users, an all-NaN feature)."""


def window_labels(fs: FeatureSet, union: pl.DataFrame, start: int, end: int) -> np.ndarray:
    """Graded label of each union row: its strongest event in [start, end) (purchase 3,
    cart 2, click 1; none or only views 0)."""
    sel = (fs.ev_ts >= start) & (fs.ev_ts < end) & np.isin(fs.ev_event, [EVENT_CODES[e] for e in LABEL_EVENTS])
    ev = pl.DataFrame({"u": fs.ev_user[sel], "i": fs.ev_item[sel], "label": fs.ev_event[sel].astype(np.int32)})
    best = ev.group_by(["u", "i"]).agg(pl.col("label").max())
    joined = union.select("u", "i").join(best, on=["u", "i"], how="left", maintain_order="left")
    return joined["label"].fill_null(0).to_numpy().astype(np.int32)


def window_starts(cutoff: int, config: RankConfig) -> list[int]:
    width = int(config.window_days * DAY)
    return [cutoff - (config.windows - k) * width for k in range(config.windows)]


def window_frame(gen: CandidateGenerator, ctx: FeatureContext, start: int, end: int, negatives: int | None, seed: int) -> pl.DataFrame:
    """Features at ``start`` and labels in [start, end) for the users with a label event in
    the window and a labelled candidate; ``negatives`` unlabelled rows sampled per user
    (None: all). Sorted by user (LightGBM's query groups)."""
    fs = gen.fs
    sel = (fs.ev_ts >= start) & (fs.ev_ts < end) & np.isin(fs.ev_event, [EVENT_CODES[e] for e in LABEL_EVENTS])
    users = np.unique(fs.ev_user[sel])
    if not len(users):
        return pl.DataFrame()
    union = gen.union(users, start, until=end)  # items launched inside the window are candidates too
    frame = union.with_columns(pl.Series("label", window_labels(fs, union, start, end)))
    frame = sample_negatives(frame.filter(pl.col("label").max().over("u") > 0), negatives, seed)
    frame = pair_features(fs, frame.drop("label"), start, ctx, until=end).with_columns(frame["label"])
    return frame.sort(["u", "i"], maintain_order=True)


def sample_negatives(frame: pl.DataFrame, negatives: int | None, seed: int) -> pl.DataFrame:
    """Every labelled row and at most ``negatives`` unlabelled rows per user (seeded); order kept."""
    if negatives is None or not frame.height:
        return frame
    key = pl.Series("_r", np.random.default_rng(seed).random(frame.height))
    return frame.with_columns(key).filter((pl.col("label") > 0) | (pl.col("_r").rank("ordinal").over("u") <= negatives)).drop("_r")


def _groups(frame: pl.DataFrame) -> np.ndarray:
    return frame.group_by("u", maintain_order=True).len()["len"].to_numpy()


def check_features(frame: pl.DataFrame, names: list[str]) -> None:
    """A feature that is NaN in every row cannot be learned from: a clear error."""
    x = frame.select(names).to_numpy().astype(np.float64)
    empty = [n for n, col in zip(names, np.isnan(x).all(0), strict=True) if col]
    if empty:
        raise RankerError(f"feature(s) {empty} are NaN in every training row; drop them or the source behind them")


@dataclass
class RankerFit:
    model: object  # lightgbm.Booster, refit on every window
    features: list[str]
    best_iteration: int
    val_ndcg_10: float
    val_curve: list[float]  # validation NDCG@10 per boosting round
    train_rows: int
    val_rows: int
    importance: dict[str, float] = field(default_factory=dict)  # gain
    new_item_boost: float = 0.0  # added to the score of an item without history (fit_new_item_boost)
    boost_curve: list[float] = field(default_factory=list)  # validation NDCG@BOOST_NDCG_AT per BOOSTS entry
    boost_unit: float = 1.0  # the validation scores' standard deviation: BOOSTS' unit


def lgbm_params(config: RankConfig) -> dict:
    """LightGBM's parameters: lambdarank, NDCG@10, deterministic on a fixed number of threads
    (``seed`` also seeds the row and feature sampling)."""
    return {
        "objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "label_gain": list(config.label_gain), "learning_rate": config.learning_rate, "num_leaves": config.num_leaves,
        "min_data_in_leaf": config.min_child_samples, "feature_fraction": config.feature_fraction, "bagging_fraction": config.bagging_fraction,
        "bagging_freq": 1 if config.bagging_fraction < 1 else 0, "lambda_l2": config.lambda_l2,
        "seed": config.seed, "num_threads": config.num_threads, "deterministic": True, "force_row_wise": True, "verbosity": -1,
    }


def ndcg_per_group(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int, label_gain: tuple[float, ...]) -> np.ndarray:
    """NDCG@k of each query group (consecutive rows, ``groups`` their sizes) with gain
    ``label_gain[label]``, as LightGBM's ``ndcg`` metric (ties: the earlier row first; a
    group without a positive label counts 1)."""
    gid = np.repeat(np.arange(len(groups)), groups)
    start = np.repeat(np.cumsum(groups) - groups, groups)
    gain = np.asarray(label_gain, np.float64)[labels]
    rows = np.arange(len(gid))

    def dcg(order: np.ndarray) -> np.ndarray:
        rank = rows - start  # position of order's rows within their group (order keeps groups in place)
        top = rank < k
        return np.bincount(gid[top], gain[order][top] / np.log2(rank[top] + 2.0), minlength=len(groups))

    actual = dcg(np.lexsort((rows, -np.asarray(scores, np.float64), gid)))
    ideal = dcg(np.lexsort((rows, -gain, gid)))
    return np.where(ideal > 0, actual / np.where(ideal > 0, ideal, 1.0), 1.0)


def ndcg_at_k(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int, label_gain: tuple[float, ...]) -> float:
    """Mean :func:`ndcg_per_group` over the query groups (NaN without any)."""
    return float(ndcg_per_group(groups, labels, scores, k, label_gain).mean()) if len(groups) else float("nan")


def bagged_argmax(per_group: np.ndarray, resamples: int, seed: int = 0) -> float:
    """The column index with the highest mean over the rows (query groups) of ``per_group``,
    averaged over ``resamples`` bootstrap resamples of the rows (ties: the first column).

    Why: over a flat, noisy curve the plain argmax jumps between distant columns with the
    validation users drawn; averaging it over resamples (bagging) gives a pick that moves
    little with them."""
    n = per_group.shape[0]
    if not n:
        return 0.0
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    means = weights @ per_group / n
    return float(np.argmax(np.round(means, 12), axis=1).mean())


NEW_ITEM_BOOST = "new_item_boost"  # the boost's name in the registry, a run's metrics and an explained row

# candidate boosts of a new item's score, in units of the validation scores' standard deviation
BOOSTS = tuple(round(0.02 * b, 2) for b in range(51))
# the depth of the list whose validation NDCG picks the boost: new items compete for the
# whole list the storefront draws from, and NDCG@10 of ~1,000 validation users is too noisy
# a guide to it (on the demo the boost it picked swung from 0 to 0.9 sd between seeds)
BOOST_NDCG_AT = 50
BOOST_RESAMPLES = 200  # bootstrap resamples of the validation users the boost's pick is averaged over


def fit_new_item_boost(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, new: np.ndarray, label_gain: tuple[float, ...]) -> tuple[float, list[float], float]:
    """The score boost of items without history (``new``), the validation
    NDCG@``BOOST_NDCG_AT`` of every boost tried, and their unit (``BOOSTS`` times the
    scores' standard deviation). The boost is the one that maximises that NDCG, averaged over bootstrap
    resamples of the validation users (:func:`bagged_argmax`; ties: the smallest).

    Why: features of a new item (no popularity, default rates) look like those of an item
    nobody wanted, so a ranker trained on every item ranks new ones below where shoppers
    put them; the validation window, whose lists hold the items launched while they are
    shown, measures how far."""
    scale = float(np.std(scores)) or 1.0
    per_group = np.stack([ndcg_per_group(groups, labels, scores + b * scale * new, BOOST_NDCG_AT, label_gain) for b in BOOSTS], axis=1)
    step = BOOSTS[1] - BOOSTS[0]  # BOOSTS is an even grid from 0, so the mean pick is a boost
    return bagged_argmax(per_group, BOOST_RESAMPLES) * step * scale, [float(v) for v in per_group.mean(axis=0)], scale


def boost_from_validation(val: pl.DataFrame, scores: np.ndarray, label_gain: tuple[float, ...]) -> tuple[float, list[float], float]:
    """:func:`fit_new_item_boost` on a validation frame (query groups by user, ``label``,
    ``ITEM_EVENTS``) scored ``scores`` by a ranker trained on the earlier windows."""
    return fit_new_item_boost(_groups(val), val["label"].to_numpy(), scores, (val[ITEM_EVENTS] == 0).to_numpy(), label_gain)


def _dataset(frames: list[pl.DataFrame], names: list[str]):
    """One LightGBM dataset of several windows (query groups: each window's users, in order)."""
    import lightgbm

    frames = [f for f in frames if f.height]
    x = np.concatenate([f.select(names).to_numpy().astype(np.float32) for f in frames])
    y = np.concatenate([f["label"].to_numpy() for f in frames])
    groups = np.concatenate([_groups(f) for f in frames])
    return lightgbm.Dataset(x, y, group=groups, feature_name=names, free_raw_data=False)


WindowParts = list[tuple[CandidateGenerator, FeatureContext]]  # per training window: its sources and feature context


def training_frames(
    gen: CandidateGenerator, ctx: FeatureContext, cutoff: int, exclude: tuple[str, ...] = (), validate: bool = True, window_parts: WindowParts | None = None,
) -> tuple[list[pl.DataFrame], pl.DataFrame, list[str]]:
    """Every ranker's data on the windows before ``cutoff``: (each window's frame with
    ``negatives_per_user`` sampled per user, the last window with every candidate, the
    feature names). With ``validate`` the last window validates: it is the last of the
    frames (sampled) and the second value (whole), and the earlier frames train; without
    (deploy mode) every frame trains and the second value is empty. An error when no user
    has a labelled candidate, or when a feature is NaN in every training row.

    ``window_parts``: window k's candidate generator and feature context (e.g. over a
    two-tower trained before it); default ``gen`` and ``ctx`` for every window."""
    cfg = gen.config
    width = int(cfg.window_days * DAY)
    starts = window_starts(cutoff, cfg)
    parts = window_parts if window_parts is not None else [(gen, ctx)] * len(starts)
    if len(parts) != len(starts):
        raise ValueError(f"{len(parts)} windows' sources for {len(starts)} windows")
    n_train = len(starts) - 1 if validate else len(starts)  # the windows built as training ones
    frames = [window_frame(*parts[k], s, s + width, cfg.negatives_per_user, cfg.seed + k) for k, s in enumerate(starts[:n_train])]
    val = pl.DataFrame()
    if validate:
        val = window_frame(*parts[-1], starts[-1], starts[-1] + width, None, cfg.seed)  # every candidate
        frames.append(sample_negatives(val, cfg.negatives_per_user, cfg.seed + len(starts) - 1))
    training = frames[:n_train]
    train_rows = sum(f.height for f in training)
    if not train_rows or (validate and not val.height):
        where = f"training ({train_rows} rows) or validation ({val.height} rows) windows" if validate else f"windows ({train_rows} rows)"
        raise RankerError(f"no user has a labelled candidate in the {where}; use more or longer windows")
    names = feature_names(next(f for f in frames if f.height), exclude)
    check_features(pl.concat([f.select(names) for f in training if f.height]), names)
    return frames, val, names


def fit_ranker(
    gen: CandidateGenerator, ctx: FeatureContext, cutoff: int, exclude: tuple[str, ...] = (), rounds: int | None = None, new_item_boost: float = 0.0,
    window_parts: WindowParts | None = None,
) -> RankerFit:
    """Train on the windows before ``cutoff``; validate on the last (the rounds, then the new
    items' boost: :func:`fit_new_item_boost`); refit on all.

    ``exclude``: features left out (ablations). ``rounds`` (deploy mode, with ``cutoff`` the
    end of the data): no validation window; every window trains and the model gets exactly
    ``rounds`` trees and ``new_item_boost`` (an evaluated run's); its validation fields are
    NaN / empty / 0. ``window_parts``: see :func:`training_frames`."""
    if rounds is not None and rounds < 1:
        raise RankerError(f"a fixed number of boosting rounds must be >= 1, got {rounds}")
    frames, val, names = training_frames(gen, ctx, cutoff, exclude, validate=rounds is None, window_parts=window_parts)
    return fit_lightgbm(gen.config, frames, val, names, rounds, new_item_boost)


def fit_lightgbm(cfg: RankConfig, frames: list[pl.DataFrame], val: pl.DataFrame, names: list[str], rounds: int | None = None, new_item_boost: float = 0.0) -> RankerFit:
    """:func:`fit_ranker` on windows already built (:func:`training_frames`, whose
    ``validate`` is ``rounds is None``)."""
    import lightgbm

    training = frames[:-1] if rounds is None else frames
    train_rows = sum(f.height for f in training)
    params = lgbm_params(cfg)
    curve: list[float] = []
    unit = 1.0
    if rounds is None:  # early stopping on the validation window picks the rounds
        train_set = _dataset(training, names)
        val_set = lightgbm.Dataset(
            val.select(names).to_numpy().astype(np.float32), val["label"].to_numpy(), group=_groups(val), feature_name=names, reference=train_set
        )
        evals: dict = {}
        booster = lightgbm.train(
            params, train_set, num_boost_round=cfg.n_estimators, valid_sets=[val_set], valid_names=["val"],
            callbacks=[lightgbm.early_stopping(cfg.early_stopping_rounds, verbose=False), lightgbm.record_evaluation(evals)],
        )
        curve = [float(v) for v in evals["val"]["ndcg@10"]]
        rounds = int(booster.best_iteration or len(curve))
        pred = booster.predict(val.select(names).to_numpy().astype(np.float32), num_iteration=rounds)
        boost, boost_curve, unit = boost_from_validation(val, pred, cfg.label_gain)
    else:
        boost, boost_curve = new_item_boost, []
    final = lightgbm.train(params, _dataset(frames, names), num_boost_round=rounds)
    importance = dict(zip(names, (float(v) for v in final.feature_importance("gain")), strict=True))
    return RankerFit(final, names, rounds, curve[rounds - 1] if curve else float("nan"), curve, train_rows, val.height, importance, boost, boost_curve, unit)


class RankedRecommender:
    """The candidate union re-ordered by the ranker; items outside the union score -inf.

    ``until``: the end of the lists' life (items launched before it are candidates, as in the
    training windows); None = the query time (serving: nothing newer exists)."""

    def __init__(self, gen: CandidateGenerator, ctx: FeatureContext, fit: RankerFit, name: str = "multi-source + ranker", until: int | None = None):
        self.gen, self.ctx, self.fit, self.name, self.until = gen, ctx, fit, name, until
        self._scorer: BoosterScorer | None = None
        self.expected_users = 0

    def expect_users(self, n: int) -> None:
        """A job is about to score ``n`` users: a LightGBM ranker is compiled from the first
        chunk when their rows (the first chunk's rows per user times ``n``) pay for it."""
        self.expected_users = int(n)

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """The ranker's score of every row of a pair-feature frame (a LightGBM ranker: compiled
        once this recommender has scored enough rows, or will, ``recsys.rank.compiled``)."""
        model = self.fit.model
        if hasattr(model, "predict_frame"):  # a model that needs the ids too (recsys/rank/dcn.py)
            score = model.predict_frame(frame)
        else:
            if self._scorer is None or self._scorer.booster is not model:
                self._scorer = BoosterScorer(model)
            if self.expected_users and not self._scorer.rows_scored and frame.height:
                self._scorer.expect(round(self.expected_users * frame.height / frame["u"].n_unique()))
            score = self._scorer.predict(frame.select(self.fit.features).to_numpy().astype(np.float32, copy=False))
        if self.fit.new_item_boost:
            score = score + self.fit.new_item_boost * (frame[ITEM_EVENTS] == 0).to_numpy()
        return score

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        users = np.asarray(users, np.int64)
        out = np.full((len(users), self.gen.fs.items.n), -np.inf, np.float32)
        union = self.gen.union(users, time, self.until)
        if not union.height:
            return out
        frame = pair_features(self.gen.fs, union, time, self.ctx, self.until)
        pred = self.predict(frame)
        order = np.argsort(users, kind="stable")
        rows = order[np.searchsorted(users[order], frame["u"].to_numpy())]
        out[rows, frame["i"].to_numpy()] = pred
        return out


    def top_k(self, users: np.ndarray, time: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each user's ``k`` best candidates at ``time`` by the ranker, best first: (items
        (U, k) catalogue rows, scores (U, k) ranker outputs), rows in the order of ``users``;
        item -1 / score NaN where the union has fewer than ``k``. The lists of
        ``recsys.evaluate.top_k(self.scores(users, time), k)`` (ties: lower item row first)
        without the dense (U, n_items) matrix; call it on chunks of users."""
        users = np.asarray(users, np.int64)
        union = self.gen.union(users, time, self.until)
        if not union.height:
            return np.full((len(users), k), -1, np.int64), np.full((len(users), k), np.nan, np.float32)
        frame = pair_features(self.gen.fs, union, time, self.ctx, self.until)
        pred = self.predict(frame)
        return union_top_k(users, frame["u"].to_numpy(), frame["i"].to_numpy(), pred, k)


def union_top_k(users: np.ndarray, u: np.ndarray, i: np.ndarray, score: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best-scored items of each user among the pairs (``u``, ``i``, ``score``):
    (items (len(users), k), scores), best first (ties: lower item first), -1 / NaN padded."""
    uniq, inverse = np.unique(np.asarray(users, np.int64), return_inverse=True)
    items, scores = pairs_top_n(np.searchsorted(uniq, u), i, score, len(uniq), k)
    return items[inverse], scores[inverse]
