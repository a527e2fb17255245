import numpy as np
import pytest
from scipy.sparse import csr_matrix

from recsys import metrics


def test_hand_computed_case():
    recs = np.array([[5, 1, 2, 9], [3, 4, 0, -1]])
    truth = [np.array([1, 9, 7]), np.array([8])]
    hits = metrics.hits_matrix(recs, truth)
    sizes = metrics.truth_sizes(truth)
    assert hits.tolist() == [[False, True, False, True], [False, False, False, False]]
    assert metrics.recall_at_k(hits, sizes, 2) == pytest.approx((1 / 3 + 0) / 2)
    assert metrics.recall_capped_at_k(hits, sizes, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert metrics.hit_rate_at_k(hits, 4) == 0.5
    assert metrics.mrr_at_k(hits, 4) == pytest.approx((1 / 2) / 2)
    dcg = 1 / np.log2(3) + 1 / np.log2(5)
    idcg = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert metrics.ndcg_at_k(hits, sizes, 4) == pytest.approx((dcg / idcg) / 2)
    assert metrics.coverage_at_k(recs, 10, 4) == pytest.approx(7 / 10)


def test_gini():
    assert metrics.gini(np.ones(10)) == pytest.approx(0.0)
    assert metrics.gini(np.array([0, 0, 0, 10.0])) == pytest.approx(0.75)
    assert metrics.exposure_gini_at_k(np.array([[0, 1], [0, 1]]), 4, 2) == pytest.approx(0.5)


def test_style_and_affinity_metrics():
    styles = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    profiles = np.array([[1.0, 0.0], [0.0, 0.0]])  # the second user has no history
    recs = np.array([[0, 2], [1, 1]])
    assert metrics.style_consistency_at_k(recs, profiles, styles, 2) == pytest.approx(0.0)
    assert metrics.style_consistency_at_k(recs, profiles, styles, 1) == pytest.approx(1.0)
    affinity = np.array([[0.9, 0.1], [0.2, 0.8]])
    labels = np.array([0, 1, 0])
    assert metrics.ground_truth_affinity_at_k(recs, affinity, labels, 2) == pytest.approx((0.9 + 0.9 + 0.8 + 0.8) / 4)


def test_agrees_with_implicit_ranking_metrics():
    """implicit's precision@K is recall_capped@K micro-averaged (total hits / total min(K, |truth|));
    its NDCG is the per-user mean with the same ideal DCG as ours."""
    from implicit.als import AlternatingLeastSquares
    from implicit.evaluation import ranking_metrics_at_k

    rng = np.random.default_rng(0)
    dense = (rng.random((60, 40)) < 0.15).astype(np.float32)
    train = dense * (rng.random(dense.shape) < 0.7)
    test = dense - train
    train_m, test_m = csr_matrix(train), csr_matrix(test)
    model = AlternatingLeastSquares(factors=8, iterations=5, random_state=0)
    model.fit(train_m, show_progress=False)
    k = 5
    theirs = ranking_metrics_at_k(model, train_m, test_m, K=k, show_progress=False)

    users = np.array([u for u in range(60) if test_m[u].nnz > 0])
    ids, _ = model.recommend(users, train_m[users], N=k, filter_already_liked_items=True)
    truth = [test_m[u].indices for u in users]
    hits = metrics.hits_matrix(ids, truth)
    sizes = metrics.truth_sizes(truth)
    micro = hits[:, :k].sum() / np.minimum(sizes, k).sum()
    assert micro == pytest.approx(theirs["precision"], abs=1e-6)
    assert metrics.recall_capped_at_k(hits, sizes, k) != pytest.approx(micro, abs=1e-3)  # macro vs micro differ here
    assert metrics.ndcg_at_k(hits, sizes, k) == pytest.approx(theirs["ndcg"], abs=1e-6)
