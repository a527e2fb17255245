"""The ranking stage's fast paths against straightforward dense references on the tiny
preset: each source's top-N (shared rankings, sparse sources, column subsets), the
two-tower user vectors re-used between the sources and the features."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.features import DAY
from recsys.rank.config import RankConfig
import scipy.sparse as sp

from recsys.rank.sources import CandidateGenerator, ItemCF, on_sale_before, pairs_top_n, seen_pairs, source_candidates, top_k_per_row

ALL_SOURCES = {"als": 30, "item_cf": 30, "style_knn": 20, "text_knn": 20, "popular": 20, "popular_in_category": 20, "new_arrivals": 10}
CONFIG = RankConfig(sources=ALL_SOURCES, als_factors=8, als_iterations=3)


def dense_reference(source, fs, users, time: int, exclude_seen: bool, until: int | None) -> np.ndarray:
    """What the stage first took each top-N from: the source's dense (U, n_items) scores with
    -inf for every item that may not be listed (not on sale, seen, NaN)."""
    scores = np.array(source.scores(users, time), np.float32)
    scores[:, ~(fs.items.created_s < on_sale_before(time, until))] = -np.inf
    if exclude_seen:
        scores[seen_pairs(fs, users, time)] = -np.inf
    scores[np.isnan(scores)] = -np.inf
    return scores


def assert_a_top_n_of(items: np.ndarray, top: np.ndarray, dense: np.ndarray, n: int, name: str) -> None:
    """``items`` / ``top`` are a top-``n`` of the masked ``dense`` scores, up to float ties:
    the same number found, scores as the dense ones best first, every item a listed one with
    its dense score, and every item clearly above the n-th score present."""
    assert items.shape == top.shape == (len(dense), n), name
    ref = -np.sort(-dense, axis=1)[:, :n]
    found = np.isfinite(ref)
    np.testing.assert_array_equal(items >= 0, found, err_msg=name)
    np.testing.assert_allclose(top[found], ref[found], rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.isnan(top[~found]).all(), name
    own = np.take_along_axis(dense, np.maximum(items, 0), axis=1)
    np.testing.assert_allclose(own[found], top[found], rtol=1e-5, atol=1e-6, err_msg=name)
    for r in range(len(dense)):
        assert len(set(items[r][found[r]])) == found[r].sum(), (name, r)  # no item twice
        if found[r].any():
            last = ref[r][found[r]][-1]
            clear = np.flatnonzero(dense[r] > last + 1e-5 * abs(last) + 1e-6)
            assert set(clear) <= set(items[r]), (name, r)


@pytest.fixture(scope="module")
def generator(tiny_features):
    return CandidateGenerator(tiny_features, CONFIG)


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_every_source_gives_the_dense_top_n(tiny_features, generator, exclude_seen):
    fs = tiny_features
    users = np.concatenate([np.arange(fs.n_users)[::-1], [0, 0, 7]])  # any order, repeats
    cutoff = fs.time_of("test")
    for time, until in ((cutoff, None), (cutoff - 7 * DAY, None), (cutoff - 7 * DAY, cutoff), (int(fs.ev_ts.min()), None)):
        generator.at(time)
        for name, source in generator.sources.items():
            for n in (CONFIG.sources[name], 3):
                items, top = source_candidates(source, fs, users, time, n, exclude_seen, until)
                dense = dense_reference(source, fs, users, time, exclude_seen, until)
                assert_a_top_n_of(items, top, dense, n, f"{name} at {time} until {until} n={n}")


def test_pairs_top_n_by_hand():
    rows = np.array([1, 0, 1, 1, 0, 1])
    items = np.array([4, 2, 3, 5, 1, 6])
    scores = np.array([0.5, 1.0, 0.9, 0.5, 2.0, 0.1], np.float32)
    top, best = pairs_top_n(rows, items, scores, 3, 3)
    np.testing.assert_array_equal(top, [[1, 2, -1], [3, 4, 5], [-1, -1, -1]])  # ties: lower item first
    np.testing.assert_array_equal(best[1], np.array([0.9, 0.5, 0.5], np.float32))
    assert np.isnan(best[0, 2]) and np.isnan(best[2]).all()
    # against one sort of every pair by (row, -score, item): shuffled or in union order, tied and -inf scores
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 40 * 300, 3000))
    rows, items = keys // 300, keys % 300
    scores = np.where(rng.random(len(keys)) < 0.05, -np.inf, np.round(rng.standard_normal(len(keys)), 1)).astype(np.float32)
    order = np.lexsort((items, -scores, rows))
    rank = np.arange(len(order)) - np.searchsorted(rows[order], rows[order], side="left")
    for n in (1, 7, 200):
        expected = np.full((45, n), -1, np.int64)
        expected_scores = np.full((45, n), np.nan, np.float32)
        keep = rank < n
        expected[rows[order][keep], rank[keep]] = items[order][keep]
        expected_scores[rows[order][keep], rank[keep]] = scores[order][keep]
        for perm in (np.arange(len(keys)), rng.permutation(len(keys))):
            top, best = pairs_top_n(rows[perm], items[perm], scores[perm], 45, n)
            np.testing.assert_array_equal(top, expected)
            np.testing.assert_array_equal(best, expected_scores)


def test_top_k_per_row_by_hand():
    m = sp.csr_matrix(np.array([[0.0, 0.3, 0.9, 0.1], [0.0, 0.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0], [0.2, 0.8, 0.4, 0.6]], np.float32))
    kept = top_k_per_row(m, 2, block_cells=8).toarray()  # blocks of two rows
    np.testing.assert_array_equal(kept, np.array([[0, 0.3, 0.9, 0], [0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.8, 0, 0.6]], np.float32))
    np.testing.assert_array_equal(top_k_per_row(m, 4).toarray(), m.toarray())


def test_item_cf_keeps_each_items_nearest_neighbours(tiny_features):
    fs, time = tiny_features, tiny_features.time_of("test")
    full, pruned = ItemCF(20, None).fit(fs, time), ItemCF(20, 5).fit(fs, time)
    dense, kept = full.co.toarray(), pruned.co.toarray()
    assert (np.diff(pruned.co.indptr) <= 5).all() and (np.diff(pruned.co.indptr) == np.minimum(np.diff(full.co.indptr), 5)).all()
    np.testing.assert_array_equal(kept[kept != 0], dense[kept != 0])  # kept entries unchanged
    fifth = -np.sort(-dense, axis=1)[:, 4:5]
    assert (dense[(kept == 0)] <= np.broadcast_to(fifth, dense.shape)[kept == 0] + 1e-7).all()  # every dropped entry at most the 5th largest
    users = np.arange(fs.n_users)
    history = sp.csr_matrix(pruned.scores(users, time) != 0)
    assert history.nnz < sp.csr_matrix(full.scores(users, time) != 0).nnz  # fewer items reached


def test_item_cf_built_by_blocks_of_items_is_the_whole_cosine_matrix(tiny_features):
    fs, time = tiny_features, tiny_features.time_of("test")
    sel = fs.ev_ts < time
    x = (sp.csr_matrix((np.ones(int(sel.sum())), (fs.ev_user[sel], fs.ev_item[sel])), shape=(fs.n_users, fs.items.n)) > 0).astype(np.float64)
    co = (x.T @ x).toarray()
    norm = 1.0 / np.sqrt(np.maximum(np.diag(co), 1.0))
    cosine = co * norm[:, None] * norm[None, :]
    np.fill_diagonal(cosine, 0.0)
    step = 7  # items per block: many blocks, the last one short
    for neighbours in (None, 5):
        whole = ItemCF(20, neighbours).fit(fs, time).co
        blocked = ItemCF(20, neighbours, block_cells=step * fs.items.n).fit(fs, time).co
        assert fs.items.n % step and (whole != blocked).nnz == 0 and whole.nnz == blocked.nnz
    np.testing.assert_allclose(ItemCF(20, None, block_cells=step * fs.items.n).fit(fs, time).co.toarray(), cosine, rtol=1e-6, atol=1e-7)


def test_user_vectors_and_profiles_are_kept_for_the_last_batch_only(tiny_features):
    from recsys.features import events
    import torch

    from recsys.model import TwoTowerConfig, user_batch_tensors
    from recsys.train import TwoTowerRecommender, build_model

    fs = tiny_features
    recommender = TwoTowerRecommender(build_model(fs, TwoTowerConfig(), seed=0), fs)
    users, time = np.arange(0, fs.n_users, 2), fs.time_of("test")
    first = recommender.user_matrix(users, time)
    first.zero_()  # a copy: the kept vectors stay as they were
    again = recommender.user_matrix(users, time)
    assert again.abs().sum() > 0
    with torch.no_grad():
        fresh = recommender.model.user_embeddings(user_batch_tensors(fs.user_batch(users, np.full(len(users), time))))
    np.testing.assert_array_equal(again.numpy(), fresh.numpy())
    for other_users, other_time in ((users[::-1], time), (users, time - 7 * DAY)):
        assert not np.array_equal(recommender.user_matrix(other_users, other_time).numpy(), again.numpy())
    for vectors in (fs.items.style, fs.items.text):
        for t in (time, time - 7 * DAY):
            kept = fs.history_profile(users, t, vectors)
            np.testing.assert_array_equal(kept, events.history_profile(fs, users, t, vectors))
            kept[:] = 0
            np.testing.assert_array_equal(fs.history_profile(users, t, vectors), events.history_profile(fs, users, t, vectors))
            # the profile x catalogue product: kept read-only, the same object for the same batch, new for another
            product = fs.profile_scores(users, t, vectors)
            np.testing.assert_array_equal(product, events.history_profile(fs, users, t, vectors) @ vectors.T)
            assert not product.flags.writeable and fs.profile_scores(users, t, vectors) is product
            assert fs.profile_scores(users[::-1], t, vectors) is not product
    # ALS's scores: kept read-only for the same batch (the source and its feature), anew after a fit
    from recsys.baselines import ImplicitMF

    als = ImplicitMF("als", factors=8, iterations=2).fit(fs, time)
    kept = als.scores(users, time)
    expected = als.model.user_factors[users] @ als.model.item_factors.T
    np.testing.assert_array_equal(kept[:, ~als._unknown], expected[:, ~als._unknown])
    assert np.isneginf(kept[:, als._unknown]).all() and not kept.flags.writeable
    assert als.scores(users, time) is kept and als.scores(users[::-1], time) is not kept
    assert als.fit(fs, time - 7 * DAY).scores(users, time) is not kept

