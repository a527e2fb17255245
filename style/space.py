"""The style space: centred style vectors, cosine similarity, profiles, interpolation.

Raw style vectors of one catalogue are all close to each other (cosine 0.8-0.95): what
tells styles apart is the offset from the catalogue mean. Every similarity here is the
cosine of *centred* vectors; the mean is stored with the embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# how much an event says about taste: a purchase more than a glance (what the interaction
# matrix and popularity counts of the baselines weigh)
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {"view": 0.25, "click": 0.5, "cart": 1.0, "purchase": 2.0}

# A user's taste, as the model sees it (recsys FeatureConfig's defaults) and as style
# transfer renders it (`stylerec style transfer --user`): the last HISTORY_LEN events, each
# weighted by its event type and by recency, 2^(-age / half-life). These won on
# StyleMart's validation slice, where tastes do not drift: a long, undecayed history in
# which every event counts the same (see the README). Shops whose tastes drift may want a
# finite half-life.
HISTORY_LEN = 200
HISTORY_HALF_LIFE_DAYS = float("inf")
HISTORY_EVENT_WEIGHTS: dict[str, float] = dict.fromkeys(DEFAULT_EVENT_WEIGHTS, 1.0)


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows (the last axis) scaled to unit length; all-zero rows stay zero. Floating
    inputs keep their precision, anything else becomes float32."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


@dataclass
class StyleSpace:
    """Style vectors of a catalogue, centred on its mean and L2-normalised."""

    ids: np.ndarray  # (N,) item ids
    vectors: np.ndarray  # (N, D) raw style vectors
    mean: np.ndarray  # (D,) catalogue mean
    _unit: np.ndarray = field(init=False, repr=False)
    _index: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, np.float32)
        self.mean = np.asarray(self.mean, np.float32)
        self._unit = self.normalise(self.vectors)
        self._index = {item: i for i, item in enumerate(self.ids.tolist())}

    @classmethod
    def fit(cls, ids: np.ndarray, vectors: np.ndarray) -> StyleSpace:
        return cls(np.asarray(ids), vectors, np.asarray(vectors, np.float32).mean(axis=0))

    def normalise(self, vectors: np.ndarray) -> np.ndarray:
        """Centre on the catalogue mean, then L2-normalise."""
        return l2_normalise(np.asarray(vectors, np.float32) - self.mean)

    @property
    def unit(self) -> np.ndarray:
        return self._unit

    def rows(self, item_ids) -> np.ndarray:
        missing = [i for i in item_ids if i not in self._index]
        if missing:
            raise KeyError(f"no style vector for item(s) {missing[:5]}")
        return np.array([self._index[i] for i in item_ids], dtype=np.int64)

    def vector(self, item_id: str) -> np.ndarray:
        return self.vectors[self._index[item_id]]

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity of centred raw vectors (broadcast over leading dims)."""
        return np.sum(self.normalise(a) * self.normalise(b), axis=-1)

    def nearest(self, query: np.ndarray, k: int = 10, exclude: set[str] | None = None) -> list[tuple[str, float]]:
        """The ``k`` items closest in style to a raw style vector ``query``."""
        scores = self._unit @ self.normalise(query.reshape(-1))
        order = np.argsort(-scores, kind="stable")
        out = []
        for i in order:
            item = self.ids[i]
            if exclude and item in exclude:
                continue
            out.append((str(item), float(scores[i])))
            if len(out) == k:
                break
        return out

    def nearest_items(self, item_id: str, k: int = 10) -> list[tuple[str, float]]:
        return self.nearest(self.vector(item_id), k, exclude={item_id})


def interpolate(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """A style ``t`` of the way from ``a`` to ``b`` (raw vectors; linear, as the network expects)."""
    return (1.0 - t) * np.asarray(a, np.float32) + t * np.asarray(b, np.float32)


def recency_weight(ages_days: np.ndarray, half_life_days: float = HISTORY_HALF_LIFE_DAYS) -> np.ndarray:
    """2^(-age / half-life): 1 for an event now, 1/2 one half-life ago (inf: no decay)."""
    return np.exp2(-ages_days / half_life_days)


def profile_weights(
    ages_days: np.ndarray,
    events: np.ndarray,
    half_life_days: float = HISTORY_HALF_LIFE_DAYS,
    event_weights: dict[str, float] | None = None,
    history_len: int | None = HISTORY_LEN,
) -> np.ndarray:
    """Weight of each interaction in a style profile: event weight x recency weight, over the
    ``history_len`` most recent interactions (older ones weigh 0; None: all). The defaults
    are the model's user history (HISTORY_*)."""
    table = HISTORY_EVENT_WEIGHTS if event_weights is None else event_weights
    ages = np.maximum(np.asarray(ages_days, np.float64), 0.0)
    ew = np.array([table.get(str(e), 0.0) for e in events], dtype=np.float64)
    weights = ew * recency_weight(ages, half_life_days)
    if history_len is not None and len(weights) > history_len:
        weights[np.argsort(ages, kind="stable")[history_len:]] = 0.0
    return weights


def style_profile(vectors: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """Weighted mean of raw style vectors (None when the weights sum to zero)."""
    w = np.asarray(weights, np.float64)
    if w.size == 0 or w.sum() <= 0:
        return None
    return (np.asarray(vectors, np.float64) * w[:, None]).sum(0).astype(np.float32) / np.float32(w.sum())


def user_profiles(
    user_index: np.ndarray,
    item_rows: np.ndarray,
    weights: np.ndarray,
    vectors: np.ndarray,
    n_users: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Style profiles of many users at once: a sparse (users x items) weight matrix times vectors.

    Returns (profiles (n_users, D) raw-space weighted means, has_profile (n_users,) bool).
    """
    from scipy.sparse import csr_matrix

    w = csr_matrix((np.asarray(weights, np.float64), (user_index, item_rows)), shape=(n_users, vectors.shape[0]))
    totals = np.asarray(w.sum(axis=1)).ravel()
    sums = w @ np.asarray(vectors, np.float64)
    has = totals > 0
    profiles = np.zeros((n_users, vectors.shape[1]), np.float32)
    profiles[has] = (sums[has] / totals[has, None]).astype(np.float32)
    return profiles, has
