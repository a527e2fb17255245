"""The baselines a recommender engineer tries first, scored by the same evaluation code.

Every baseline is fit on everything before the evaluated fold (train + validation for the
test fold), which is at least as much behaviour as the two-tower model learns from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.features import DAY, FeatureSet
from recsys.features.featureset import PROFILE_SCORES_KEPT


@dataclass
class Popularity:
    """Most interacted items (event-weighted), over all history or a recent window."""

    window_days: float | None = None
    name: str = "popularity"

    def fit(self, fs: FeatureSet, before: int) -> Popularity:
        after = None if self.window_days is None else before - int(self.window_days * DAY)
        sel = fs.ev_ts < before
        if after is not None:
            sel &= fs.ev_ts >= after
        self._scores = np.bincount(fs.ev_item[sel], weights=fs.ev_weight[sel], minlength=fs.items.n).astype(np.float32)
        return self

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        return np.broadcast_to(self._scores, (len(users), self._scores.size))


@dataclass
class ImplicitMF:
    """implicit's ALS or BPR on the event-weighted user x item matrix (fixed random_state)."""

    kind: str = "als"
    factors: int = 64
    iterations: int = 15
    regularization: float = 0.05
    alpha: float = 10.0
    learning_rate: float = 0.05
    seed: int = 0
    name: str = "als"

    def fit(self, fs: FeatureSet, before: int) -> ImplicitMF:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        matrix = fs.interaction_matrix(before).astype(np.float32)
        if self.kind == "als":
            model = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization, alpha=self.alpha, iterations=self.iterations, random_state=self.seed)
        elif self.kind == "bpr":
            # one thread: implicit's BPR updates are lock-free across threads, hence not repeatable
            model = BayesianPersonalizedRanking(factors=self.factors, learning_rate=self.learning_rate, regularization=self.regularization, iterations=self.iterations * 4, random_state=self.seed, num_threads=1)
        else:
            raise ValueError(f"unknown matrix factorisation {self.kind!r}")
        model.fit(matrix, show_progress=False)
        self.model, self.matrix = model, matrix
        # an item without interactions keeps its random initial factors: it cannot be scored
        self._unknown = np.asarray(matrix.getnnz(axis=0)) == 0
        self._last: tuple[bytes, np.ndarray] | None = None
        return self

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        """Read-only; the last batch's are kept when they have at most ``PROFILE_SCORES_KEPT``
        cells: the ranking stage's ALS source and its ``als_dot`` feature score the same batch."""
        users = np.asarray(users, np.int64)
        if self._last is not None and self._last[0] == users.tobytes():
            return self._last[1]
        self._last = None  # the previous batch's, freed before the next one is made
        scores = np.asarray(self.model.user_factors[users] @ self.model.item_factors.T)
        scores[:, self._unknown] = -np.inf
        scores.flags.writeable = False
        if scores.size <= PROFILE_SCORES_KEPT:
            self._last = (users.tobytes(), scores)
        return scores


@dataclass
class ContentKNN:
    """Items nearest (cosine) to the weighted mean of the user's recent items' content vectors.

    ``content="style"`` is style-KNN (the approach of the article this product grew from),
    ``content="text"`` is text-KNN.
    """

    content: str = "style"
    name: str = "style-knn"

    def fit(self, fs: FeatureSet, before: int) -> ContentKNN:
        self.fs = fs
        self.vectors = fs.items.style if self.content == "style" else fs.item_text(before)  # reviews written before ``before``
        return self

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        return self.fs.profile_scores(users, time, self.vectors)  # read-only, shared with the ranking stage's similarity features


def default_baselines(seed: int = 0) -> list:
    return [
        Popularity(name="popularity"),
        Popularity(window_days=7, name="popularity-7d"),
        ImplicitMF("als", seed=seed, name="als"),
        ImplicitMF("bpr", seed=seed, name="bpr"),
        ContentKNN("style", name="style-knn"),
        ContentKNN("text", name="text-knn"),
    ]
