"""Candidate post-processing: steering, filtering, explanations (pure numpy)."""

from __future__ import annotations

import numpy as np

from style.space import l2_normalise


def style_direction(item_vectors: np.ndarray, style: np.ndarray, row: int, neighbours: int = 50) -> np.ndarray:
    """The direction in the model's item space that the style of item ``row`` points to.

    The item's own tower vector also carries its category, price and words; averaging the
    tower vectors of its ``neighbours`` nearest items in style space (across categories)
    and subtracting the catalogue mean keeps what they share: the style.
    """
    sims = style @ style[row]
    nearest = np.argsort(-sims, kind="stable")[: max(1, neighbours)]
    direction = item_vectors[nearest].mean(0) - item_vectors.mean(0)
    return l2_normalise(direction).astype(np.float32)


def steer_queries(queries: np.ndarray, direction: np.ndarray, strength: float) -> np.ndarray:
    """Mix a style direction (see :func:`style_direction`) into every user query, re-normalised.

    0 leaves the queries as they are; 1 queries with the direction alone.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"steer strength must lie in [0, 1], got {strength}")
    mixed = (1.0 - strength) * queries + strength * direction[None, :]
    return l2_normalise(mixed).astype(np.float32)


def filter_top_k(rows: np.ndarray, scores: np.ndarray, k: int, banned: np.ndarray, per_user: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Drop globally banned rows (bool mask over the catalogue) and each user's own rows,
    keep the best ``k`` in order. Short lists are padded with row -1 and score -inf."""
    out_rows = np.full((len(rows), k), -1, np.int64)
    out_scores = np.full((len(rows), k), -np.inf, np.float32)
    for u in range(len(rows)):
        r = rows[u]
        keep = (r >= 0) & ~banned[np.maximum(r, 0)]
        if len(per_user[u]):
            keep &= ~np.isin(r, per_user[u])
        kept = r[keep][:k]
        out_rows[u, : len(kept)] = kept
        out_scores[u, : len(kept)] = scores[u][keep][:k]
    return out_rows, out_scores


def explain_by_style(candidates: np.ndarray, history: list[np.ndarray], style: np.ndarray, has_style: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each candidate, the user's history item closest in style (centred cosine).

    Returns (rows (B, k), similarities (B, k)); -1 / NaN where the user has no history item
    with a style vector or the candidate has none.
    """
    because = np.full(candidates.shape, -1, np.int64)
    sims = np.full(candidates.shape, np.nan, np.float32)
    for u in range(len(candidates)):
        h = history[u][has_style[history[u]]] if len(history[u]) else history[u]
        c = candidates[u]
        valid = (c >= 0) & has_style[np.maximum(c, 0)]
        if not len(h) or not valid.any():
            continue
        s = style[c[valid]] @ style[h].T
        best = np.argmax(s, axis=1)
        because[u, valid] = h[best]
        sims[u, valid] = s[np.arange(len(best)), best]
    return because, sims
