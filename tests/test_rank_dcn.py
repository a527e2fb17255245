"""The DCN-v2 ranker (recsys/rank/dcn.py) on the tiny preset: the metric and the loss by
hand, the config, and a fit that is deterministic and scores only the union."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from recsys.rank.config import RankConfig, RankConfigError
from recsys.rank.dcn import DCNRanker, dense_stats, fit_dcn_ranker, listwise_loss
from recsys.rank.features import FeatureContext
from recsys.rank.ranker import BOOSTS, RankedRecommender, ndcg_at_k
from recsys.rank.sources import CandidateGenerator

NO_TWO_TOWER = {"als": 30, "item_cf": 30, "style_knn": 20, "text_knn": 20, "popular": 20, "popular_in_category": 20, "new_arrivals": 10}
FAST_DCN = RankConfig(
    sources=NO_TWO_TOWER, negatives_per_user=10, als_factors=8, als_iterations=3, windows=3, window_days=7.0,
    model="dcn", dcn_epochs=4, dcn_patience=2, dcn_embedding_dim=4, dcn_cross_layers=2, dcn_low_rank=4, dcn_hidden=16, dcn_batch_groups=16, dcn_lr=3e-3,
)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_validation_ndcg_by_hand():
    # the DCN's early stopping reads recsys.rank.ranker.ndcg_at_k, LightGBM's metric:
    # group 1: labels (0, 3, 1), scores put the click first, the purchase second
    # group 2: no positive label -> 1 (LightGBM's convention); group 3: perfect order
    scores = np.array([0.1, 0.5, 0.9, 0.3, 0.2, 2.0, 1.0])
    labels = np.array([0, 3, 1, 0, 0, 2, 0])
    groups = np.array([3, 2, 2])
    gain = RankConfig().label_gain
    dcg = 1 / np.log2(2) + 7 / np.log2(3)
    idcg = 7 / np.log2(2) + 1 / np.log2(3)
    assert ndcg_at_k(groups, labels, scores, 10, gain) == pytest.approx((dcg / idcg + 2) / 3)
    # only the top k count: with k = 1 the first group scores 1 / 7
    assert ndcg_at_k(groups, labels, scores, 1, gain) == pytest.approx((1 / 7 + 2) / 3)
    # ties keep the row order
    assert ndcg_at_k(np.array([2]), np.array([0, 1]), np.zeros(2), 10, gain) == pytest.approx(1 / np.log2(3))


def test_listwise_loss_is_the_softmax_cross_entropy_per_group():
    logits = torch.tensor([0.2, -1.0, 0.7, 3.0, 0.0, 1.0, 2.0])
    gain = torch.tensor([7.0, 1.0, 0.0, 0.0, 3.0, 0.0, 0.0])  # 2^label - 1 of labels (3, 1, 0), (0, 2), (0, 0)
    group = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    by_hand = []
    for rows in ([0, 1, 2], [3, 4]):
        target = gain[rows] / gain[rows].sum()
        by_hand.append(-(target * torch.log_softmax(logits[rows], 0)).sum())
    # the third group has no positive gain (e.g. label_gain with click = 0 and only clicks): no target, skipped
    assert listwise_loss(logits, gain, group, 3).item() == pytest.approx(torch.stack(by_hand).mean().item(), rel=1e-6)
    assert listwise_loss(logits[5:], gain[5:], torch.tensor([0, 0]), 1).item() == 0.0


def test_dense_stats_ignore_missing_values():
    x = np.array([[1.0, np.nan, 5.0], [3.0, np.nan, 5.0]], np.float32)
    mean, sd = dense_stats(x)
    np.testing.assert_allclose(mean, [(np.log1p(1) + np.log1p(3)) / 2, 0.0, np.log1p(5)], rtol=1e-6)
    assert sd[1] == 1.0 and sd[2] == 1.0  # all-missing and constant columns: sd 1


def test_bad_dcn_config_is_a_clear_error():
    with pytest.raises(RankConfigError, match=r"model must be one of \['lightgbm', 'dcn'\]"):
        RankConfig(model="xgboost")
    with pytest.raises(RankConfigError, match="dcn_cross_layers"):
        RankConfig(dcn_cross_layers=0)
    with pytest.raises(RankConfigError, match="dcn_lr must be > 0"):
        RankConfig(dcn_lr=0.0)


def test_dcn_ranker_is_deterministic_and_scores_only_the_union(tiny_features):
    fs = tiny_features
    cutoff = fs.time_of("test")
    fitted = []
    for _ in range(2):
        gen = CandidateGenerator(fs, FAST_DCN)
        ctx = FeatureContext(np.linspace(5.0, 120.0, fs.items.n), als=gen.sources["als"])
        fitted.append((gen, ctx, fit_dcn_ranker(gen, ctx, cutoff)))
    (gen, ctx, fit), (gen2, ctx2, fit2) = fitted
    assert isinstance(fit.model, DCNRanker) and fit.model.features == fit.features
    assert 1 <= fit.best_iteration <= len(fit.val_curve) <= FAST_DCN.dcn_epochs
    assert fit.val_ndcg_10 == max(fit.val_curve) and all(0.0 <= v <= 1.0 for v in fit.val_curve)
    assert fit.val_curve == fit2.val_curve
    # the new-item boost is fitted on the validation window as the LightGBM ranker's is
    assert len(fit.boost_curve) == len(BOOSTS) and fit.new_item_boost >= 0 and fit.new_item_boost == fit2.new_item_boost
    users = np.arange(0, fs.n_users, 2)[::-1]  # any order
    scores = RankedRecommender(gen, ctx, fit).scores(users, cutoff)
    np.testing.assert_array_equal(scores, RankedRecommender(gen2, ctx2, fit2).scores(users, cutoff))
    union = gen.union(users, cutoff)
    in_union = np.zeros_like(scores, bool)
    order = np.argsort(users)
    in_union[order[np.searchsorted(users[order], union["u"].to_numpy())], union["i"].to_numpy()] = True
    assert np.isfinite(scores[in_union]).all() and np.isneginf(scores[~in_union]).all()
    assert np.unique(scores[in_union]).size > 1  # not a constant
    # a different seed gives a different model
    reseeded = fit_dcn_ranker(CandidateGenerator(fs, dataclasses.replace(FAST_DCN, seed=1)), ctx, cutoff)
    assert reseeded.val_curve != fit.val_curve


def test_run_ranking_trains_the_dcn_variant_beside_lightgbm(tiny_embedded, tiny_features):
    from data.validate import load_dataset
    from recsys.rank.run import ABLATIONS, ablation, run_ranking

    dcn = "multi-source + DCN-v2 ranker"
    assert dcn in ABLATIONS
    cfg, tt, exclude = ablation(dcn, RankConfig(), None)
    assert cfg.model == "dcn" and exclude == ()
    ds = load_dataset(tiny_embedded)
    lightgbm = dataclasses.replace(FAST_DCN, model="lightgbm", n_estimators=20, early_stopping_rounds=5)
    result = run_ranking(ds, tiny_features, lightgbm, compare=False, ablations=(dcn,))
    assert list(result.test) == ["multi-source + ranker", dcn] and list(result.variants) == [dcn]
    assert isinstance(result.variants[dcn].model, DCNRanker) and not isinstance(result.fit.model, DCNRanker)
    assert 0 < result.test[dcn]["all"]["recall@50"] <= 1
    # the DCN as the main model: its own row, and the ablation naming it is not trained again
    main = run_ranking(ds, tiny_features, FAST_DCN, compare=False, ablations=(dcn,))
    assert list(main.test) == [dcn] and not main.variants and isinstance(main.fit.model, DCNRanker)
    np.testing.assert_allclose(main.test[dcn]["all"]["recall@50"], result.test[dcn]["all"]["recall@50"])
