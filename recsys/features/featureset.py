"""The frozen features of one dataset and split: items, users, the event log and reviews.

Its query methods are the public face of the modules that do the work (events, truth,
interactions)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from data.dataset import DatasetError
from data.split import Split
from recsys.features import events
from recsys.features.config import DAY, FeatureConfig
from recsys.features.events import Examples, UserBatch
from recsys.features.interactions import interaction_matrix
from recsys.features.items import ItemEncoders, ItemTable, quantile_buckets
from recsys.features.truth import truth

PROFILE_SCORES_KEPT = 1 << 24  # cells of the largest profile x catalogue product kept for re-use (64 MB)


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
    rv_item: np.ndarray  # the item row of each review
    rv_ts: np.ndarray  # seconds
    text_reviews_before: int  # items.text mixes in the reviews written before this time (seconds)
    style_dim: int
    fingerprint: str
    encoders: ItemEncoders
    # the last history profile per vectors array: id -> (vectors, (time, users), profile)
    _profiles: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    # the last item_text(before) that is not items.text: (before, vectors)
    _item_text: tuple = field(default=(None, None), init=False, repr=False, compare=False)
    # the last profile x catalogue product per vectors array, when it has at most PROFILE_SCORES_KEPT cells
    _profile_scores: dict = field(default_factory=dict, init=False, repr=False, compare=False)

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
        popularity = quantile_buckets(rate, self.config.popularity_buckets)
        items = replace(self.items, id_index=id_index, popularity_bucket=popularity)
        return replace(self, items=items, user_index=user_index)

    # -- queries (recsys/features/events.py, truth.py, interactions.py) ----------------

    def user_batch(self, users: np.ndarray, times: np.ndarray) -> UserBatch:
        return events.user_batch(self, users, times)

    def item_text(self, before: int) -> np.ndarray:
        """:func:`events.item_text`, read-only, the last one kept: a ranker's training window
        fits its text source and computes its text feature at the same time, and the two
        share ``profile_scores`` only on the same array."""
        if self._item_text[0] != int(before):
            text = events.item_text(self, before)
            if text is self.items.text:
                return text
            text.flags.writeable = False
            self._item_text = (int(before), text)
        return self._item_text[1]

    def history_profile(self, users: np.ndarray, time: int, vectors: np.ndarray) -> np.ndarray:
        """:func:`events.history_profile`, the last one per ``vectors`` kept (a copy returned): the
        ranking stage asks for one batch's style and text profiles several times."""
        users = np.asarray(users, np.int64)
        key = (int(time), users.tobytes())
        last = self._profiles.get(id(vectors))
        if last is None or last[0] is not vectors or last[1] != key:
            last = self._profiles[id(vectors)] = (vectors, key, events.history_profile(self, users, time, vectors))
        return last[2].copy()

    def profile_scores(self, users: np.ndarray, time: int, vectors: np.ndarray) -> np.ndarray:
        """``history_profile(users, time, vectors) @ vectors.T``, read-only: a content-KNN source
        and the ranking stage's similarity feature need the same product for one batch. The
        last one per ``vectors`` is kept when it has at most ``PROFILE_SCORES_KEPT`` cells
        (a batch of ~1,000 users times a catalogue of ~16,000 items); a larger one is not."""
        users = np.asarray(users, np.int64)
        key = (int(time), users.tobytes())
        last = self._profile_scores.get(id(vectors))
        if last is not None and last[0] is vectors and last[1] == key:
            return last[2]
        self._profile_scores.pop(id(vectors), None)  # the previous batch's product, freed before the next one is made
        scores = self.history_profile(users, time, vectors) @ vectors.T
        scores.flags.writeable = False
        if scores.size <= PROFILE_SCORES_KEPT:
            self._profile_scores[id(vectors)] = (vectors, key, scores)
        return scores

    def training_examples(self, folds: str | tuple[str, ...] = "train") -> Examples:
        return events.training_examples(self, folds)

    def item_log_q(self, examples: Examples) -> np.ndarray:
        return events.item_log_q(self, examples)

    def items_before(self, users: np.ndarray, time: int, event: str | None = None) -> list[np.ndarray]:
        return events.items_before(self, users, time, event)

    def popularity(self, before: int, after: int | None = None) -> np.ndarray:
        return events.popularity(self, before, after)

    def truth(self, fold: str, mask_seen: bool = True) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        return truth(self, fold, mask_seen)

    def interaction_matrix(self, before: int):
        return interaction_matrix(self, before)
