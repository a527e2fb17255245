"""Offline ranking metrics: pure functions of recommendations and ground truth.

``recs`` is an (n_users, K) array of item indices, best first (-1 pads short lists).
``truth`` is a list of arrays of relevant item indices, one per user (non-empty).
Two recalls are reported because papers disagree: ``recall`` = hits / |truth| and
``recall_capped`` = hits / min(K, |truth|) (implicit's "precision", the RecSys-challenge
recall). NDCG uses binary gains and the ideal ranking of min(K, |truth|) hits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def hits_matrix(recs: np.ndarray, truth: Sequence[np.ndarray]) -> np.ndarray:
    """(n_users, K) bool: is the item at each rank relevant to its user?"""
    out = np.zeros(recs.shape, dtype=bool)
    for u, relevant in enumerate(truth):
        out[u] = np.isin(recs[u], relevant) & (recs[u] >= 0)
    return out


def truth_sizes(truth: Sequence[np.ndarray]) -> np.ndarray:
    return np.array([len(t) for t in truth], dtype=np.float64)


def recall_at_k(hits: np.ndarray, sizes: np.ndarray, k: int) -> float:
    return float(np.mean(hits[:, :k].sum(1) / sizes))


def recall_capped_at_k(hits: np.ndarray, sizes: np.ndarray, k: int) -> float:
    return float(np.mean(hits[:, :k].sum(1) / np.minimum(sizes, k)))


def hit_rate_at_k(hits: np.ndarray, k: int) -> float:
    return float(np.mean(hits[:, :k].any(1)))


def mrr_at_k(hits: np.ndarray, k: int) -> float:
    h = hits[:, :k]
    first = np.argmax(h, axis=1)
    return float(np.mean(np.where(h.any(1), 1.0 / (first + 1), 0.0)))


def ndcg_at_k(hits: np.ndarray, sizes: np.ndarray, k: int) -> float:
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * discounts[: hits[:, :k].shape[1]]).sum(1)
    ideal_len = np.minimum(sizes, k).astype(int)
    idcg = np.cumsum(discounts)[ideal_len - 1]
    return float(np.mean(dcg / idcg))


def coverage_at_k(recs: np.ndarray, n_items: int, k: int) -> float:
    """Share of the catalogue recommended to at least one user."""
    shown = recs[:, :k]
    return float(np.unique(shown[shown >= 0]).size / n_items)


def gini(values: np.ndarray) -> float:
    """Gini coefficient of a non-negative vector (0 = equal exposure, -> 1 = one item gets all)."""
    v = np.sort(np.asarray(values, np.float64))
    n = v.size
    if n == 0 or v.sum() == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2 * (ranks * v).sum()) / (n * v.sum()) - (n + 1) / n)


def exposure_gini_at_k(recs: np.ndarray, n_items: int, k: int) -> float:
    shown = recs[:, :k]
    return gini(np.bincount(shown[shown >= 0], minlength=n_items))


def mean_popularity_at_k(recs: np.ndarray, popularity: np.ndarray, k: int) -> float:
    """Mean training popularity (share of interactions) of the recommended items."""
    shown = recs[:, :k]
    share = popularity / max(popularity.sum(), 1.0)
    return float(share[shown[shown >= 0]].mean())


def style_consistency_at_k(recs: np.ndarray, profiles: np.ndarray, item_style: np.ndarray, k: int) -> float:
    """Mean cosine between each user's style profile and the styles of their recommendations.

    ``profiles`` and ``item_style`` are centred, L2-normalised style vectors; users whose
    profile is all zeros (no history) are skipped.
    """
    has = np.linalg.norm(profiles, axis=1) > 0
    if not has.any():
        return float("nan")
    shown = recs[has, :k]
    sims = np.einsum("ud,ukd->uk", profiles[has], item_style[np.maximum(shown, 0)])
    return float(sims[shown >= 0].mean())


def ground_truth_affinity_at_k(recs: np.ndarray, affinity: np.ndarray, item_style_label: np.ndarray, k: int) -> float:
    """Mean true affinity of each user for the style of the items recommended to them (StyleMart)."""
    shown = recs[:, :k]
    aff = np.take_along_axis(affinity, item_style_label[np.maximum(shown, 0)], axis=1)
    return float(aff[shown >= 0].mean())


def ranking_metrics(recs: np.ndarray, truth: Sequence[np.ndarray], ks: Sequence[int]) -> dict[str, float]:
    hits = hits_matrix(recs, truth)
    sizes = truth_sizes(truth)
    out: dict[str, float] = {"users": float(len(truth))}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(hits, sizes, k)
        out[f"recall_capped@{k}"] = recall_capped_at_k(hits, sizes, k)
        out[f"ndcg@{k}"] = ndcg_at_k(hits, sizes, k)
        out[f"mrr@{k}"] = mrr_at_k(hits, k)
        out[f"hitrate@{k}"] = hit_rate_at_k(hits, k)
    return out
