"""The users x items interaction matrix the matrix-factorisation baselines fit."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from recsys.features.featureset import FeatureSet


def interaction_matrix(fs: FeatureSet, before: int):
    """Users x items CSR of summed event weights before ``before`` (for ALS / BPR)."""
    from scipy.sparse import csr_matrix

    sel = fs.ev_ts < before
    m = csr_matrix((fs.ev_weight[sel].astype(np.float32), (fs.ev_user[sel], fs.ev_item[sel])), shape=(fs.n_users, fs.items.n))
    m.sum_duplicates()
    return m
