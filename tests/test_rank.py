"""The ranking stage on the tiny preset, with the real libraries: sources, union, retrieval
recall, pair features (no peeking), graded labels, the LightGBM ranker, the job."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from recsys.features import DAY, EVENT_CODES
from recsys.features.events import KEY
from recsys.features.items import mix_review_text
from recsys.rank.config import RankConfig, RankConfigError, load_rank_config
from recsys.rank.features import FeatureContext, feature_names, pair_features
from recsys.rank.ranker import RankedRecommender, RankerError, check_features, fit_ranker, window_labels
from recsys.rank.sources import CandidateGenerator, TwoTowerSource, candidate_union, make_source, retrieval_recall, seen_pairs, source_candidates, truth_pairs

NO_TWO_TOWER = {"als": 30, "item_cf": 30, "style_knn": 20, "text_knn": 20, "popular": 20, "popular_in_category": 20, "new_arrivals": 10}
FAST = RankConfig(sources=NO_TWO_TOWER, n_estimators=20, early_stopping_rounds=5, negatives_per_user=10, als_factors=8, als_iterations=3, windows=3, window_days=7.0)


def truncated(fs, time: int):
    """``fs`` without any event or review at or after ``time`` (what a model fitted at ``time``
    may know): its item texts mix in only the reviews written before it."""
    keep = fs.ev_ts < time
    fields = {name: getattr(fs, name)[keep] for name in ("ev_user", "ev_item", "ev_ts", "ev_weight", "ev_hist_weight", "ev_fold", "ev_event")}
    fields["ev_key"] = fields["ev_user"] * KEY + fields["ev_ts"]
    fields["ev_start"] = np.searchsorted(fields["ev_user"], np.arange(fs.n_users + 1), side="left")
    written = fs.rv_ts < time
    vectors = np.diff(fs.rv_cumsum, axis=0)[written].astype(np.float32)
    rv_user = fs.rv_key[written] // KEY
    review_fields = {
        "rv_key": fs.rv_key[written], "rv_item": fs.rv_item[written], "rv_ts": fs.rv_ts[written], "rv_start": np.searchsorted(rv_user, np.arange(fs.n_users + 1), side="left"),
        "rv_cumsum": np.concatenate([np.zeros((1, vectors.shape[1])), np.cumsum(vectors, axis=0, dtype=np.float64)]), "text_reviews_before": int(time),
    }  # fmt: skip
    text = mix_review_text(fs.items.text_plain.copy(), fs.rv_item[written], vectors, fs.config.review_text_weight)
    return dataclasses.replace(fs, items=dataclasses.replace(fs.items, text=text), **fields, **review_fields)


def prices_of(fs) -> np.ndarray:
    return np.linspace(5.0, 120.0, fs.items.n)


@pytest.fixture(scope="module")
def query_time(tiny_features):
    return tiny_features.time_of("test") - 7 * DAY


# -- config ------------------------------------------------------------------------------


def test_bad_config_is_a_clear_error(tmp_path):
    with pytest.raises(RankConfigError, match=r"unknown source\(s\) \['bert'\].*known"):
        RankConfig(sources={"als": 10, "bert": 5})
    with pytest.raises(RankConfigError, match="integer >= 1"):
        RankConfig(sources={"als": 0})
    with pytest.raises(RankConfigError, match="unknown candidate source 'bert'"):
        make_source("bert", RankConfig())
    path = tmp_path / "rank.toml"
    path.write_text("[rank]\nwindows = 3\nshuffle = true\n")
    with pytest.raises(RankConfigError, match=r"unknown key\(s\) \['shuffle'\]"):
        load_rank_config(path)
    path.write_text("[train]\nepochs = 1\n")
    with pytest.raises(RankConfigError, match="only \\[rank\\]"):
        load_rank_config(path)
    with pytest.raises(RankConfigError, match="two_tower_index must be one of"):
        RankConfig(two_tower_index="annoy")
    with pytest.raises(RankConfigError, match=r"window_two_tower_per_window must be true or false, got 'yes'"):
        load_rank_config(None, {"window_two_tower_per_window": "yes"})
    with pytest.raises(RankConfigError, match=r"learning_rate must be a number, got '0.05'"):
        load_rank_config(None, {"learning_rate": "0.05"})
    for bad in ({"feature_fraction": 0.0}, {"bagging_fraction": 1.5}, {"lambda_l2": -1.0}, {"learning_rate": 0.0}):
        with pytest.raises(RankConfigError, match=r"feature_fraction and bagging_fraction must be in \(0, 1\]"):
            RankConfig(**bad)
    for bad in ({"item_cf_neighbours": 0}, {"item_cf_recent": 2.5}, {"item_cf_neighbours": True}):
        with pytest.raises(RankConfigError, match=rf"{next(iter(bad))} must be an integer >= 1"):
            RankConfig(**bad)
    path.write_text("[rank]\nwindows = 4\n[rank.sources]\nals = 7\nitem_cf = 3\n")
    cfg = load_rank_config(path)
    assert cfg.windows == 4 and cfg.source_names == ("als", "item_cf")


def test_lightgbm_params_regularise_and_seed_the_sampling():
    from recsys.rank.ranker import lgbm_params

    params = lgbm_params(RankConfig(seed=7))
    assert params["feature_fraction"] == 0.7 and params["bagging_fraction"] == 0.8 and params["bagging_freq"] == 1 and params["lambda_l2"] == 10.0
    assert params["seed"] == 7 and params["deterministic"] and params["min_data_in_leaf"] == 100
    assert lgbm_params(RankConfig(bagging_fraction=1.0))["bagging_freq"] == 0  # no bagging at all


# -- sources, union, retrieval recall --------------------------------------------------------


def test_sources_return_only_items_known_before_the_query_and_ignore_later_events(tiny_features, query_time):
    fs = tiny_features
    users = np.arange(fs.n_users)
    per_source = CandidateGenerator(fs, FAST).per_source(users, query_time)
    later = CandidateGenerator(truncated(fs, query_time), FAST).per_source(users, query_time)
    seen = fs.items_before(users, query_time)
    for name, (items, scores) in per_source.items():
        returned = items[items >= 0]
        assert len(returned), name
        assert (fs.items.created_s[returned] < query_time).all(), name
        assert not any(np.isin(items[r], seen[r]).any() for r in range(len(users))), name
        assert (items.shape[1] == FAST.sources[name]) and np.isnan(scores[items < 0]).all()
        # fitted only on events before the time: the log cut at the time gives the same lists
        np.testing.assert_array_equal(items, later[name][0], err_msg=name)
        np.testing.assert_allclose(scores, later[name][1], rtol=1e-5, atol=1e-6, err_msg=name)
    # new arrivals are the way cold items come in
    arrivals = per_source["new_arrivals"][0]
    created = fs.items.created_s[arrivals[arrivals >= 0]]
    assert (created >= query_time - FAST.new_arrival_days * DAY).all()


def test_a_list_shown_until_later_offers_items_launched_meanwhile_scored_on_earlier_events(tiny_features, query_time):
    fs = tiny_features
    users = np.arange(fs.n_users)
    until = query_time + 7 * DAY
    launched = (fs.items.created_s >= query_time) & (fs.items.created_s < until)
    assert launched.any()  # the fixture launches items every week
    shown = CandidateGenerator(fs, FAST).per_source(users, query_time, until)
    cut = CandidateGenerator(truncated(fs, query_time), FAST).per_source(users, query_time, until)
    arrivals = shown["new_arrivals"][0]
    assert launched[arrivals[arrivals >= 0]].any()  # cold items reach the ranker
    for name, (items, scores) in shown.items():
        assert (fs.items.created_s[items[items >= 0]] < until).all(), name
        np.testing.assert_array_equal(items, cut[name][0], err_msg=name)  # still no event at or after the query time used
    frame = pair_features(fs, CandidateGenerator(fs, FAST).union(users, query_time, until), query_time, FeatureContext(prices_of(fs)))
    new = launched[frame["i"].to_numpy()]
    assert (frame["item_age_days"].to_numpy()[new] == 0).all() and (frame["item_pop_30d"].to_numpy()[new] == 0).all()


def test_vectorised_seen_mask_equals_the_per_user_loop(tiny_features, query_time):
    fs = tiny_features
    users = np.concatenate([np.arange(fs.n_users)[::-1], [0, 0, 5]])  # any order, repeats
    for time in (query_time, fs.time_of("test"), int(fs.ev_ts.min())):
        loop = np.zeros((len(users), fs.items.n), bool)
        for row, seen in enumerate(fs.items_before(users, time)):
            loop[row, seen] = True
        vectorised = np.zeros_like(loop)
        vectorised[seen_pairs(fs, users, time)] = True
        np.testing.assert_array_equal(vectorised, loop)


class DenseOnly:
    """A source answering only dense scores (the exact path of source_candidates)."""

    def __init__(self, source):
        self.source = source

    def scores(self, users, time):
        return self.source.scores(users, time)


@pytest.mark.parametrize("overfetch_quantile", [0.0, 0.9])
def test_two_tower_source_via_faiss_returns_the_exact_top_n(tiny_features, query_time, overfetch_quantile, monkeypatch):
    """The FAISS lists equal the dense top-n; with a first search over-fetching by the least
    any user has seen (quantile 0), most users are searched a second time, and still equal."""
    import recsys.rank.sources as sources
    from recsys.model import TwoTowerConfig
    from recsys.train import TwoTowerRecommender, build_model

    monkeypatch.setattr(sources, "OVERFETCH_QUANTILE", overfetch_quantile)
    fs = tiny_features
    recommender = TwoTowerRecommender(build_model(fs, TwoTowerConfig(), seed=0), fs)
    users = np.arange(fs.n_users)[::-1]
    for time in (query_time, fs.time_of("test")):
        source = make_source("two_tower", RankConfig(), recommender).fit(fs, time)
        assert isinstance(source, TwoTowerSource) and source.index is None  # built at the first query
        for exclude_seen, until in ((True, None), (False, None), (True, time + 7 * DAY)):
            items, scores = source_candidates(source, fs, users, time, 40, exclude_seen, until)
            assert source.index.manifest.kind == "flat" and source._before == (time if until is None else until)
            exact_items, exact_scores = source_candidates(DenseOnly(source), fs, users, time, 40, exclude_seen, until)
            assert (items >= 0).all()
            for r in range(len(users)):
                assert set(items[r]) == set(exact_items[r]), r
            np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=1e-5)
    # an approximate index keeps the rules: nothing seen, nothing created at or after the time
    source = make_source("two_tower", RankConfig(two_tower_index="hnsw"), recommender).fit(fs, query_time)
    items, _ = source_candidates(source, fs, users, query_time, 40)
    seen = fs.items_before(users, query_time)
    assert (fs.items.created_s[items[items >= 0]] < query_time).all()
    assert not any(np.isin(items[r], seen[r]).any() for r in range(len(users)))


def test_union_and_retrieval_recall_by_hand():
    users = np.array([0, 1])
    a = (np.array([[5, 6], [7, -1]]), np.array([[0.9, 0.5], [0.3, np.nan]], np.float32))
    b = (np.array([[6, 8], [9, 7]]), np.array([[2.0, 1.0], [4.0, 3.0]], np.float32))
    union = candidate_union(users, {"a": a, "b": b})
    assert union.select("u", "i").rows() == [(0, 5), (0, 6), (0, 8), (1, 7), (1, 9)]
    assert union["a_rank"].to_list() == [1.0, 2.0, None, 1.0, None]
    assert union["b_rank"].to_list() == [None, 1.0, 2.0, 2.0, 1.0]
    assert union.filter(pl.col("i") == 6)["b_score"].item() == 2.0
    truth = pl.DataFrame({"u": [0, 0, 1, 1], "i": [5, 8, 7, 4]})
    recall = retrieval_recall(union, truth, ("a", "b"))
    assert recall == {"a": 0.5, "b": 0.5, "all": 0.75}
    assert np.isnan(retrieval_recall(union, truth.clear(), ("a",))["all"])


def test_truth_pairs_leave_out_what_was_seen(tiny_features, query_time):
    fs = tiny_features
    end = query_time + 7 * DAY
    pairs = truth_pairs(fs, query_time, end, ("purchase",))
    seen = pl.DataFrame({"u": fs.ev_user[fs.ev_ts < query_time], "i": fs.ev_item[fs.ev_ts < query_time]}).unique()
    assert pairs.height and pairs.join(seen, on=["u", "i"], how="semi").height == 0
    sel = (fs.ev_ts >= query_time) & (fs.ev_ts < end) & (fs.ev_event == EVENT_CODES["purchase"])
    assert set(pairs.rows()) <= set(zip(fs.ev_user[sel].tolist(), fs.ev_item[sel].tolist(), strict=True))


# -- pair features ----------------------------------------------------------------------


def test_pair_features_do_not_peek(tiny_features, query_time):
    """An event at or after the query time changes no feature: features on the full log
    equal those on the log cut at the query time."""
    fs = tiny_features
    users = np.arange(0, fs.n_users, 3)
    gen = CandidateGenerator(fs, FAST)
    union = gen.union(users, query_time)
    full = pair_features(fs, union, query_time, FeatureContext(prices_of(fs), als=gen.sources["als"]))
    cut_fs = truncated(fs, query_time)
    cut_gen = CandidateGenerator(cut_fs, FAST)
    cut_union = cut_gen.union(users, query_time)
    cut = pair_features(cut_fs, cut_union, query_time, FeatureContext(prices_of(fs), als=cut_gen.sources["als"]))
    assert full.height == union.height and full.select("u", "i").equals(union.select("u", "i"))
    names = feature_names(full)
    assert {
        "style_cos", "style_max_sim", "text_sim", "als_dot", "price_vs_usual", "item_pop_7d", "item_trend", "item_view_to_purchase", "user_days_since_last",
        "ui_views_unbought", "user_style_group_share", "user_affinity", "price_in_category_gap", "item_events_per_day", "item_view_to_click",
        "user_style_graph_share", "user_graph_affinity",
    } <= set(names)
    np.testing.assert_allclose(full.select(names).to_numpy(), cut.select(names).to_numpy(), rtol=1e-5, atol=1e-6)
    # and the features see the past: a later time does change them
    later = pair_features(fs, union, query_time + 7 * DAY, FeatureContext(prices_of(fs), als=gen.sources["als"]))
    assert not np.allclose(later["item_pop_7d"].to_numpy(), full["item_pop_7d"].to_numpy())


def test_max_history_similarity_by_hand(tiny_features, query_time, monkeypatch):
    """style_max_sim: each pair's largest style dot product with the user's last 20 history
    items that have style (NaN without such history or without the item's style), the same
    in small blocks of users as in one."""
    import recsys.rank.features as features

    fs = tiny_features
    users = np.arange(0, fs.n_users, 2)
    union = CandidateGenerator(fs, FAST).union(users, query_time)
    u, i = union["u"].to_numpy(), union["i"].to_numpy()
    expected = np.full(len(u), np.nan)
    for row, (user, item) in enumerate(zip(u.tolist(), i.tolist(), strict=True)):
        before = np.flatnonzero((fs.ev_user == user) & (fs.ev_ts < query_time))
        history = fs.ev_item[before[np.argsort(fs.ev_ts[before], kind="stable")]][-20:]
        history = history[fs.items.has_style[history]]
        if len(history) and fs.items.has_style[item]:
            expected[row] = (fs.items.style[history] @ fs.items.style[item]).max()
    ctx = FeatureContext(prices_of(fs))
    assert np.isfinite(expected).sum() > 100 and np.isnan(expected).any()
    whole = pair_features(fs, union, query_time, ctx)["style_max_sim"].to_numpy()
    np.testing.assert_allclose(whole, expected, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(features, "SIM_BLOCK", 50)  # blocks of a few users (a batched product's kernel may differ by batch size)
    np.testing.assert_allclose(pair_features(fs, union, query_time, ctx)["style_max_sim"].to_numpy(), whole, rtol=1e-6, atol=1e-7)


def test_feature_helpers_by_hand():
    from recsys.rank.features import price_in_category, smoothed_rate, style_groups

    # rates shrink towards the overall rate (2 hits / 20 trials = 0.1) by the pseudo-trials
    np.testing.assert_allclose(smoothed_rate(np.array([0.0, 2.0]), np.array([0.0, 20.0]), 10.0), [0.1, (2 + 1) / 30])
    # price level: log ratio to the category's median among the known items; NaN without a price
    level = price_in_category(np.array([10.0, 20.0, 40.0, 100.0, np.nan]), np.array([0, 0, 0, 1, 1]), np.array([True, True, True, True, False]))
    np.testing.assert_allclose(level[:4], [np.log(0.5), 0.0, np.log(2.0), 0.0])
    assert np.isnan(level[4])
    # style groups: well-separated vectors fall into their own groups; items without style get the extra group
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8, dtype=np.float32)
    style = np.repeat(centres, 30, axis=0) + 0.01 * rng.standard_normal((120, 8)).astype(np.float32)
    has = np.ones(120, bool)
    has[-1] = False
    groups = style_groups(style, has, k=4)
    assert groups[-1] == 4 and all(len(set(groups[b * 30 : b * 30 + 29])) == 1 for b in range(4)) and len(set(groups[:-1])) == 4


def test_style_graph_groups_follow_the_neighbour_graph_where_k_means_cannot():
    from sklearn.metrics import adjusted_rand_score

    from recsys.rank.features import style_graph_groups, style_groups

    # two concentric rings: each point's neighbours are on its own ring, but no two round
    # blobs separate them (k-means cuts both rings in half); one item without a style vector
    rng = np.random.default_rng(0)
    angle = rng.uniform(0, 2 * np.pi, 300)
    radius = np.repeat([1.0, 3.0], 150)
    rings = np.c_[radius * np.cos(angle), radius * np.sin(angle)] + 0.05 * rng.standard_normal((300, 2))
    style = np.vstack([np.hstack([rings, 0.01 * rng.standard_normal((300, 6))]), np.zeros((1, 8))]).astype(np.float32)
    has = np.r_[np.ones(300, bool), False]
    truth = np.repeat([0, 1], 150)
    graph = style_graph_groups(style, has, k=2)
    assert graph[-1] == 2 and adjusted_rand_score(truth, graph[:300]) > 0.95
    assert adjusted_rand_score(truth, style_groups(style, has, k=2)[:300]) < 0.2
    # fewer than ten styled items per group asked for: fewer groups; no styled item: all in the last group
    assert len(np.unique(style_graph_groups(style[:40], np.ones(40, bool), k=24))) <= 4
    assert (style_graph_groups(style[:5], np.zeros(5, bool), k=24) == 1).all()


def test_whitened_style_and_list_life_by_hand():
    from recsys.rank.features import on_sale_share, whiten

    rng = np.random.default_rng(1)
    signal = rng.standard_normal((200, 3)) * [5.0, 1.0, 0.2]
    vectors = np.hstack([signal, np.zeros((200, 2))])  # two dead dimensions
    z = whiten(vectors, dims=10)
    assert z.shape == (200, 3)  # the dead dimensions are left out, not blown up
    np.testing.assert_allclose(z.std(0, ddof=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.corrcoef(z.T), np.eye(3), atol=1e-5)
    assert whiten(vectors, dims=2).shape == (200, 2)
    # the share of a list's life [10, 20) an item is on sale; a list not shown past its time: 1
    np.testing.assert_allclose(on_sale_share(np.array([0, 10, 15, 20, 30]), 10, 20), [1.0, 1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(on_sale_share(np.array([0, 15]), 10, None), [1.0, 1.0])


def test_ndcg_at_k_is_lightgbms():
    import lightgbm

    from recsys.rank.ranker import ndcg_at_k

    rng = np.random.default_rng(0)
    groups = rng.integers(5, 40, 60)
    labels = rng.choice(4, groups.sum(), p=[0.8, 0.1, 0.05, 0.05])
    x = rng.standard_normal((groups.sum(), 4)) + labels[:, None] * [0.5, 0.0, 0.2, 0.0]
    gain = (0.0, 1.0, 3.0, 7.0)
    params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "label_gain": list(gain), "verbosity": -1, "num_threads": 1, "deterministic": True}
    train = lightgbm.Dataset(x, labels, group=groups)
    evals: dict = {}
    booster = lightgbm.train(params, train, 5, valid_sets=[lightgbm.Dataset(x, labels, group=groups, reference=train)], valid_names=["v"], callbacks=[lightgbm.record_evaluation(evals)])
    assert ndcg_at_k(groups, labels, booster.predict(x), 10, gain) == pytest.approx(evals["v"]["ndcg@10"][-1], abs=1e-6)
    # by hand: one group, the only positive (gain 7) second of three -> 1 / log2(3)
    assert ndcg_at_k(np.array([3]), np.array([0, 3, 0]), np.array([0.9, 0.5, 0.1]), 10, gain) == pytest.approx(1 / np.log2(3))


def test_new_item_boost_lifts_new_items_only_when_validation_says_so():
    from recsys.rank.ranker import BOOSTS, fit_new_item_boost

    groups = np.full(50, 4)
    gain = (0.0, 1.0, 3.0, 7.0)
    # each group: two old negatives scored high, a new positive scored just below them, an old negative
    scores = np.tile([1.0, 0.9, 0.8, 0.1], 50)
    new = np.tile([False, False, True, False], 50)
    boost, curve, unit = fit_new_item_boost(groups, np.tile([0, 0, 3, 0], 50), scores, new, gain)
    assert unit == pytest.approx(np.std(scores)) and boost > 0.2 and max(curve) == pytest.approx(1.0) and len(curve) == len(BOOSTS)
    # new items the shoppers did not want: no boost (ties go to the smallest)
    boost, _, _ = fit_new_item_boost(groups, np.tile([3, 0, 0, 0], 50), scores, new, gain)
    assert boost == 0.0


def test_style_groups_are_kept_per_catalogue(tiny_features, monkeypatch):
    import recsys.rank.features as features

    fs = tiny_features
    ctx = FeatureContext(np.full(fs.items.n, np.nan))
    groups = ctx.style_cluster(fs)
    assert ctx.style_cluster(fs) is groups and len(np.unique(groups)) > 1  # computed once
    unstyled = dataclasses.replace(fs, items=dataclasses.replace(fs.items, has_style=np.zeros(fs.items.n, bool)))
    assert (ctx.style_cluster(unstyled) == 1).all()  # another item table: its own groups (no style vector: one group)
    assert ctx.style_cluster(fs) is groups
    graph = ctx.style_graph_cluster(fs)
    assert ctx.style_graph_cluster(fs) is graph and len(np.unique(graph)) > 1
    assert (ctx.style_graph_cluster(unstyled) == 1).all()
    # every context over the same catalogue shares them (a run builds one per two-tower); other settings are other groups
    calls = []
    monkeypatch.setattr(features, "style_graph_groups", lambda *a, **k: calls.append(a) or np.zeros(fs.items.n, np.int64))
    other = FeatureContext(np.zeros(fs.items.n), als=object())
    assert other.style_graph_cluster(fs) is graph and other.style_cluster(fs) is groups and not calls
    assert (FeatureContext(other.prices, style_graph_groups=5).style_graph_cluster(unstyled) == 0).all() and len(calls) == 1
    # the table gone, its groups go too
    kept = len(features._KEPT_FOR_ITEMS)
    del unstyled
    import gc

    gc.collect()
    assert len(features._KEPT_FOR_ITEMS) == kept - 1


def test_bagged_argmax_is_steadier_than_the_argmax_it_averages():
    from recsys.rank.ranker import bagged_argmax

    clear = np.tile([0.1, 0.5, 0.2], (30, 1))
    assert bagged_argmax(clear, 50) == 1.0
    assert bagged_argmax(np.ones((30, 3)), 50) == 0.0  # ties: the first column
    assert bagged_argmax(np.ones((0, 3)), 50) == 0.0
    assert bagged_argmax(clear, 50, seed=3) == bagged_argmax(clear, 50, seed=3)
    # a flat true curve over 11 columns (means 0.5 - 0.001 |c - 5|), seen through 300 noisy
    # users at a time: the plain argmax swings across the grid, the bagged one much less
    rng = np.random.default_rng(0)
    truth = 0.5 - 0.001 * np.abs(np.arange(11) - 5)
    plain, bagged = [], []
    for _ in range(30):
        sample = truth + rng.normal(0, 0.05, (300, 11))
        plain.append(float(np.argmax(sample.mean(axis=0))))
        bagged.append(bagged_argmax(sample, 200))
    assert np.std(bagged) < 0.75 * np.std(plain)
    assert abs(np.mean(bagged) - 5) < 1.0


def test_labels_are_graded(tiny_features, query_time):
    fs = tiny_features
    start, end = query_time, query_time + 7 * DAY
    sel = (fs.ev_ts >= start) & (fs.ev_ts < end)
    events = pl.DataFrame({"u": fs.ev_user[sel], "i": fs.ev_item[sel]}).unique()
    extra = pl.DataFrame({"u": [0], "i": [0]}).join(events, on=["u", "i"], how="anti")  # a pair with no event
    union = pl.concat([events, extra]).sort(["u", "i"])
    labels = window_labels(fs, union, start, end)
    expected = {}
    for u, i, e in zip(fs.ev_user[sel], fs.ev_item[sel], fs.ev_event[sel], strict=True):
        grade = {EVENT_CODES["purchase"]: 3, EVENT_CODES["cart"]: 2, EVENT_CODES["click"]: 1}.get(int(e), 0)
        expected[(int(u), int(i))] = max(expected.get((int(u), int(i)), 0), grade)
    assert labels.tolist() == [expected.get(pair, 0) for pair in union.rows()]
    assert set(labels.tolist()) >= {0, 3}


# -- the ranker ---------------------------------------------------------------------------


def test_all_nan_feature_is_an_error():
    frame = pl.DataFrame({"a": [1.0, 2.0], "b": [float("nan"), float("nan")]})
    with pytest.raises(RankerError, match=r"\['b'\] are NaN in every training row"):
        check_features(frame, ["a", "b"])


def test_ranker_is_deterministic_and_scores_only_the_union(tiny_features):
    fs = tiny_features
    cutoff = fs.time_of("test")
    ctx_gen = []
    for _ in range(2):
        gen = CandidateGenerator(fs, FAST)
        ctx = FeatureContext(prices_of(fs), als=gen.sources["als"])
        ctx_gen.append((gen, ctx, fit_ranker(gen, ctx, cutoff)))
    (gen, ctx, fit), (gen2, ctx2, fit2) = ctx_gen
    assert fit.best_iteration >= 1 and 0.0 <= fit.val_ndcg_10 <= 1.0 and len(fit.val_curve) >= fit.best_iteration
    users = np.arange(0, fs.n_users, 2)[::-1]  # any order
    rec = RankedRecommender(gen, ctx, fit)
    scores = rec.scores(users, cutoff)
    np.testing.assert_array_equal(scores, RankedRecommender(gen2, ctx2, fit2).scores(users, cutoff))
    union = gen.union(users, cutoff)
    in_union = np.zeros_like(scores, bool)
    order = np.argsort(users)
    in_union[order[np.searchsorted(users[order], union["u"].to_numpy())], union["i"].to_numpy()] = True
    assert np.isfinite(scores[in_union]).all() and np.isneginf(scores[~in_union]).all()
    # top_k: the dense scores' best items, straight from the union
    from recsys.evaluate import top_k

    items, best = RankedRecommender(gen, ctx, fit).top_k(users, cutoff, 20)
    dense = np.take_along_axis(scores, top_k(scores, 20), axis=1)
    np.testing.assert_array_equal(np.where(items >= 0, best, -np.inf), dense)
    found = items >= 0
    np.testing.assert_array_equal(np.take_along_axis(scores, np.maximum(items, 0), axis=1)[found], best[found])
    assert set(fit.importance) == set(fit.features)
    # an ablation leaves features out
    no_style = fit_ranker(gen, ctx, cutoff, exclude=("style_cos", "style_max_sim"))
    assert "style_cos" not in no_style.features
    # compiled from the first chunk when a job says it will score enough users (the first
    # chunk's rows per user times theirs), the same scores as LightGBM's predict; not for this
    # small evaluation alone
    assert rec._scorer.compiled is None
    compiled_rec = RankedRecommender(gen, ctx, fit)
    compiled_rec.expect_users(10**6)
    np.testing.assert_allclose(compiled_rec.scores(users, cutoff), scores, rtol=1e-6, atol=1e-6)
    assert compiled_rec._scorer.compiled is not None and compiled_rec._scorer.rows_scored == in_union.sum()
    assert compiled_rec._scorer.expected_rows == round(10**6 * in_union.sum() / len(users))


def test_the_compiled_ranker_scores_as_lightgbm():
    """The booster compiled to native code gives LightGBM's scores, missing values included;
    the scorer compiles only past its row threshold, and a compiled forest that scores
    otherwise than LightGBM is not used (a warning; LightGBM's predict stays)."""
    import lightgbm

    from recsys.rank.compiled import BoosterScorer

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 6))
    x[rng.random(x.shape) < 0.2] = np.nan
    label = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) > 0.5).astype(int) + (np.isnan(x[:, 2])).astype(int)
    booster = lightgbm.train(
        {"objective": "lambdarank", "num_leaves": 15, "min_data_in_leaf": 5, "verbose": -1, "deterministic": True, "num_threads": 1},
        lightgbm.Dataset(x, label, group=[30] * 100), num_boost_round=40,
    )
    rows = x.astype(np.float32)
    expected = booster.predict(rows)
    scorer = BoosterScorer(booster, compile_after_rows=2000)
    np.testing.assert_array_equal(scorer.predict(rows[:1500]), expected[:1500])  # below the threshold: LightGBM itself
    assert scorer.compiled is None
    np.testing.assert_allclose(scorer.predict(rows), expected, rtol=1e-9, atol=1e-9)  # past it: compiled
    assert scorer.compiled is not None and scorer.rows_scored == 4500
    # told of a job that pays for compiling: compiled before its first rows; of a small one: not
    from recsys.rank.compiled import COMPILE_PAYS_AFTER_ROWS

    for expected, compiles in ((COMPILE_PAYS_AFTER_ROWS, True), (COMPILE_PAYS_AFTER_ROWS - 1, False)):
        told = BoosterScorer(booster, compile_after_rows=10**9)
        told.expect(expected)
        np.testing.assert_allclose(told.predict(rows[:100]), booster.predict(rows[:100]), rtol=1e-9, atol=1e-9)
        assert (told.compiled is not None) is compiles, expected
    # the threads it scores on: the outer level of OMP_NUM_THREADS, else every core
    import os

    from recsys.rank.compiled import scoring_threads

    for value, threads in (("1", 1), ("4,2", 4), ("", os.cpu_count()), ("abc", os.cpu_count()), ("0", os.cpu_count())):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OMP_NUM_THREADS", value)
            assert scoring_threads() == threads, value
    # the compiler turns linear trees into wrong scores: caught by the check, LightGBM stays
    y = 2 * np.nan_to_num(x[:, 0]) + rng.standard_normal(len(x))
    linear = lightgbm.train({"objective": "regression", "linear_tree": True, "verbose": -1, "num_threads": 1}, lightgbm.Dataset(x, y), num_boost_round=5)
    broken = BoosterScorer(linear, compile_after_rows=0)
    with pytest.warns(RuntimeWarning, match="could not be compiled .*differ from LightGBM's"):
        np.testing.assert_array_equal(broken.predict(rows), linear.predict(rows))
    assert broken.compiled is None and broken._failed


# -- the job ---------------------------------------------------------------------------------




def test_rank_is_a_job_of_the_cli():
    from click.testing import CliRunner

    from pipelines.cli import cli

    out = CliRunner().invoke(cli, ["rank", "train", "--help"]).output
    assert "--ablations" in out and "models:/stylerec@champion" in out


def test_rank_train_without_a_two_tower_says_train_first(tiny_embedded, tmp_path, mlflow_store):
    from click.testing import CliRunner

    from pipelines.cli import cli

    result = CliRunner().invoke(cli, ["--workdir", str(tmp_path / "wd"), "rank", "train", str(tiny_embedded)])
    assert result.exit_code != 0 and "run `stylerec train` on this dataset first" in result.output, result.output


def test_rank_train_refuses_a_bad_config(tiny_embedded, tmp_path, mlflow_store):
    from click.testing import CliRunner

    from pipelines.cli import cli

    config = tmp_path / "rank.toml"
    config.write_text("[rank.sources]\nals = 10\nbert = 5\n")
    result = CliRunner().invoke(cli, ["rank", "train", str(tiny_embedded), "--config", str(config)])
    assert result.exit_code != 0 and "unknown source(s) ['bert']" in result.output, result.output


def test_champion_moves_only_between_rankers_validated_alike():
    from pipelines.rank_job import HONEST_VALIDATION, LEAKY_VALIDATION, promotion

    nan = float("nan")
    # validated alike: the better validation NDCG@10 wins; a NaN never does
    assert promotion(0.08, HONEST_VALIDATION, 0.07, HONEST_VALIDATION) == (True, "")
    assert promotion(0.07, HONEST_VALIDATION, 0.08, HONEST_VALIDATION) == (False, "")
    assert promotion(0.09, LEAKY_VALIDATION, 0.08, LEAKY_VALIDATION) == (True, "")
    assert promotion(nan, HONEST_VALIDATION, 0.08, HONEST_VALIDATION) == (False, "")
    assert promotion(nan, HONEST_VALIDATION, None, None) == (False, "")
    # no champion, or one without a score: any real score takes it
    assert promotion(0.01, LEAKY_VALIDATION, None, None) == (True, "")
    assert promotion(0.01, HONEST_VALIDATION, nan, LEAKY_VALIDATION) == (True, "")
    # a leak-inflated champion (tagged so, or from before the tag) does not hold the alias
    # against an honestly validated ranker with a lower score, and says why
    taken, why = promotion(0.07, HONEST_VALIDATION, 0.09, LEAKY_VALIDATION)
    assert taken and "validated with windows see the served two-tower" in why and "0.0900" in why
    taken, why = promotion(0.07, HONEST_VALIDATION, 0.09, None)
    assert taken and "from before versions recorded how they were validated" in why
    # while a leaky ranker never takes it from an honest one, however high its score
    taken, why = promotion(0.5, LEAKY_VALIDATION, 0.07, HONEST_VALIDATION)
    assert not taken and "does not compare" in why


@pytest.mark.slow
def test_rank_train_end_to_end(tiny_embedded, tmp_path, mlflow_store, fast_configs):
    import shutil

    from click.testing import CliRunner
    from mlflow.tracking import MlflowClient

    from pipelines.cli import cli

    root = tmp_path / "ds"
    shutil.copytree(tiny_embedded, root)
    train_toml, rank_toml = fast_configs.train, fast_configs.rank
    runner = CliRunner()
    wd = ["--workdir", str(tmp_path / "wd")]
    result = runner.invoke(cli, [*wd, "train", str(root), "--config", str(train_toml)])
    assert result.exit_code == 0, result.output

    result = runner.invoke(cli, [*wd, "rank", "train", str(root), "--config", str(rank_toml)])
    assert result.exit_code == 0, result.output
    out = result.output
    for name in ("two_tower", "als", "item_cf", "style_knn", "new_arrivals", "multi-source + ranker", "two-tower", "cold recall@50"):
        assert name in out, out
    assert "registered stylerec-ranker version 1; champion: moved to it" in out

    client = MlflowClient(mlflow_store)
    champion = client.get_model_version_by_alias("stylerec-ranker", "champion")
    run = client.get_run(champion.tags["run_id"])
    assert "two_tower_dot" in run.data.params["features"] and run.data.params["rank.windows"] == "3"
    assert len(client.get_metric_history(run.info.run_id, "val_ndcg_10")) >= 1
    assert "multi-source_plus_ranker.all.ndcg_at_10" in run.data.metrics
    assert {"plots", "ranker.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}  # the model: a logged model (MLflow 3), loaded below
    # the windows saw their own two-tower; the new-item boost fitted on validation is logged and registered
    assert "training the two-tower the ranker's windows see, on the events before" in out
    assert run.data.params["window_two_tower"] == "trained before the first window"
    assert float(champion.tags["new_item_boost"]) == pytest.approx(run.data.metrics["new_item_boost"]) and run.data.metrics["new_item_boost"] >= 0
    assert champion.tags["validation"] == run.data.params["validation"] == "windows see a two-tower trained before them"

    # a second run (with the ablations) that is not better on validation is registered but does not take the alias
    client.set_model_version_tag("stylerec-ranker", "1", "val_ndcg_10", "0.999")
    result = runner.invoke(cli, [*wd, "rank", "train", str(root), "--config", str(rank_toml), "--ablations"])
    assert result.exit_code == 0, result.output
    assert "version 2; champion: unchanged" in result.output
    for name in ("two-tower + ranker", "ranker without style features", "ranker without the two-tower", "ranker whose windows see the served two-tower", "ranker without the new-item boost"):
        assert f"\n{name} " in result.output, result.output
    assert str(client.get_model_version_by_alias("stylerec-ranker", "champion").version) == "1"

    import mlflow.lightgbm

    booster = mlflow.lightgbm.load_model("models:/stylerec-ranker@champion")
    assert booster.num_feature() == len(run.data.params["features"].split(","))


def test_run_ranking_with_an_ablation(tiny_embedded, tiny_features):
    from data.validate import load_dataset
    from recsys.rank.run import ablation, format_recall, format_test, run_ranking

    with pytest.raises(ValueError, match="needs the two-tower"):
        ablation("two-tower + ranker", FAST, None)
    with pytest.raises(ValueError, match="unknown ablation"):
        ablation("no-ids", FAST, None)
    cfg, tt, exclude = ablation("ranker without the two-tower", RankConfig(), object())
    assert "two_tower" not in cfg.sources and tt is None and exclude == ()
    result = run_ranking(load_dataset(tiny_embedded), tiny_features, FAST, ablations=("ranker without style features",))
    assert list(result.test) == ["multi-source + ranker", "als", "ranker without style features"]
    assert set(result.recall) == {"purchases", "truth"} and 0 < result.recall["truth"]["all"] <= 1
    assert result.recall["truth"]["all"] >= max(v for k, v in result.recall["truth"].items() if k != "all")
    assert "style_cos" in result.fit.features
    assert "cold recall@50" in format_test(result.test) and "item_cf" in format_recall(result.recall)
    assert not result.window_two_tower  # no two-tower, none for the windows either


def test_the_windows_two_tower_never_sees_the_windows(tiny_embedded, tiny_features):
    from data.validate import load_dataset
    from recsys.config import load_run_config
    from recsys.rank.ranker import window_starts
    from recsys.rank.window_two_tower import train_window_two_tower

    fs, cfg = tiny_features, dataclasses.replace(FAST, windows=2)
    cutoff = fs.time_of("test")
    run_config = load_run_config(None, {"train": {"epochs": 1, "batch_size": 64, "val_users": 100, "refit": False}})
    tt = train_window_two_tower(load_dataset(tiny_embedded), fs, cfg, run_config, cutoff)
    first = window_starts(cutoff, cfg)[0]
    assert tt.fs.time_of("test") <= first  # trained and validated on events before the first window only
    trained = tt.fs.ev_fold == "train"
    assert trained.any() and (tt.fs.ev_ts[trained] < tt.fs.time_of("val")).all()
    assert list(tt.fs.items.ids) == list(fs.items.ids) and tt.item_matrix().shape[0] == fs.items.n
    # its item tower reads texts mixed only with the reviews written before its own cutoff
    assert tt.fs.text_reviews_before <= first and fs.text_reviews_before > first
    assert np.allclose(tt.model.item_text.numpy(), fs.item_text(tt.fs.text_reviews_before), atol=1e-5)
    assert not np.allclose(tt.model.item_text.numpy(), fs.items.text, atol=1e-5)  # later reviews exist, and are left out
    with pytest.raises(RankConfigError, match="window_two_tower = false"):
        train_window_two_tower(load_dataset(tiny_embedded), fs, dataclasses.replace(FAST, windows=60), run_config, cutoff)


def test_each_window_sees_a_two_tower_trained_before_it(tiny_embedded, tiny_features):
    from data.validate import load_dataset
    from recsys.config import load_run_config
    from recsys.rank.ranker import window_starts
    from recsys.rank.window_two_tower import train_window_two_towers

    fs, cfg = tiny_features, dataclasses.replace(FAST, windows=2)
    cutoff = fs.time_of("test")
    run_config = load_run_config(None, {"train": {"epochs": 1, "batch_size": 64, "val_users": 100, "refit": False}})
    ds = load_dataset(tiny_embedded)
    per_window = train_window_two_towers(ds, fs, dataclasses.replace(cfg, window_two_tower_per_window=True), run_config, cutoff)
    starts = window_starts(cutoff, cfg)
    assert len(per_window) == len(starts) and per_window[0] is not per_window[1]
    for tt, start in zip(per_window, starts, strict=True):
        assert tt.fs.time_of("test") <= start and start - tt.fs.time_of("test") < DAY  # the day of the window's start
    assert per_window[1].fs.time_of("test") > per_window[0].fs.time_of("test")  # the later window's is fresher
    shared = train_window_two_towers(ds, fs, cfg, run_config, cutoff)  # the default: one for all
    assert shared[0] is shared[1] and shared[0].fs.time_of("test") <= starts[0]
    # the training frames: each window's features over its own two-tower
    from recsys.rank.ranker import training_frames

    parts = [(CandidateGenerator(fs, cfg, tt), FeatureContext(np.linspace(5.0, 120.0, fs.items.n), two_tower=tt)) for tt in per_window]
    frames, val, _ = training_frames(*parts[0], cutoff, window_parts=parts)
    first_only, val_first, _ = training_frames(*parts[0], cutoff, window_parts=[parts[0], parts[0]])
    assert frames[0].equals(first_only[0])  # window 0: the same two-tower either way
    # window 1: the same candidates (the two-tower is no source here), scored by its own two-tower
    assert val.select("u", "i").equals(val_first.select("u", "i")) and not val["two_tower_dot"].equals(val_first["two_tower_dot"])
    with pytest.raises(ValueError, match="1 windows' sources for 2 windows"):
        training_frames(*parts[0], cutoff, window_parts=parts[:1])
