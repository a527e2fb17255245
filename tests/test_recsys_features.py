import numpy as np
import pytest
import torch

from recsys.features import DAY
from recsys.model import TwoTower, TwoTowerConfig, Vocab, user_batch_tensors


def test_history_only_sees_the_past(tiny_features):
    fs = tiny_features
    ex = fs.training_examples("train")
    assert len(ex) > 100
    idx = np.arange(0, len(ex), 37)
    ub = fs.user_batch(ex.user[idx], ex.time[idx])
    rows = np.repeat(np.arange(len(idx)), ub.hist_lengths)
    # each history event is strictly before its query time and belongs to the same user
    assert (ub.hist_lengths <= fs.config.history_len).all()
    for q in range(len(idx)):
        a, b = fs.ev_start[ex.user[idx[q]]], fs.ev_start[ex.user[idx[q]] + 1]
        before = fs.ev_ts[a:b] < ex.time[idx[q]]
        assert ub.hist_lengths[q] == min(before.sum(), fs.config.history_len)
        # the target of a training example is never in its own history (first interaction)
        assert ex.item[idx[q]] not in ub.hist_items[rows == q]
    sums = np.bincount(rows, ub.hist_weights, minlength=len(idx))
    assert np.allclose(sums[ub.hist_lengths > 0], 1.0, atol=1e-5)


def test_truth_masks_items_seen_before_the_fold(tiny_features):
    fs = tiny_features
    users, truth, times = fs.truth("test", mask_seen=True)
    _, unmasked, _ = fs.truth("test", mask_seen=False)
    seen = fs.items_before(users, int(times[0]))
    for t, s in zip(truth, seen, strict=True):
        assert not np.isin(t, s).any()
    assert sum(map(len, unmasked)) >= sum(map(len, truth))


def test_vocabulary_and_cold_items(tiny_features):
    fs = tiny_features
    train_items = np.unique(fs.ev_item[fs.ev_fold == "train"])
    assert (fs.items.id_index[train_items] > 0).all()
    assert (fs.items.id_index[fs.items.cold] == 0).all()
    both = fs.with_vocab(("train", "val"))
    assert (both.items.id_index > 0).sum() >= (fs.items.id_index > 0).sum()
    assert both.items.popularity_bucket.max() == fs.config.popularity_buckets


def _model(fs, **kw):
    torch.manual_seed(0)
    return TwoTower(TwoTowerConfig(item_features=("item_id", "category", "price", "popularity", "style", "text"), user_features=("user_id", "history", "user_style", "history_text", "user_text"), **kw), Vocab.of(fs), TwoTower.item_tables(fs))


def test_towers_are_normalised_and_cold_items_use_content_only(tiny_features):
    fs = tiny_features
    model = _model(fs).eval()
    rows = torch.arange(fs.items.n)
    with torch.no_grad():
        items = model.item_embeddings(rows)
        users = model.user_embeddings(user_batch_tensors(fs.user_batch(np.arange(10), np.full(10, fs.time_of("test")))))
    assert torch.allclose(items.norm(dim=1), torch.ones(fs.items.n), atol=1e-5)
    assert torch.allclose(users.norm(dim=1), torch.ones(10), atol=1e-5)
    cold = torch.from_numpy(np.flatnonzero(fs.items.id_index == 0))
    warm = torch.from_numpy(np.flatnonzero(fs.items.id_index > 0))
    assert len(cold) and len(warm)
    # scrambling the id table changes warm items, never cold ones: they come from content alone
    with torch.no_grad():
        model.item_sparse.embedding_bags["t_item_id"].weight.normal_()
        after = model.item_embeddings(rows)
    assert torch.allclose(after[cold], items[cold])
    assert not torch.allclose(after[warm], items[warm])


def test_id_dropout_only_in_training(tiny_features):
    fs = tiny_features
    model = _model(fs, id_dropout=0.9)
    warm = torch.from_numpy(np.flatnonzero(fs.items.id_index > 0)[:50])
    with torch.no_grad():
        a = model.item_embeddings(warm, drop_ids=False)
        b = model.item_embeddings(warm, drop_ids=False)
        torch.manual_seed(1)
        c = model.item_embeddings(warm, drop_ids=True)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_unknown_features_are_refused():
    with pytest.raises(ValueError, match="unknown feature"):
        TwoTowerConfig(item_features=("style", "colour"))
    with pytest.raises(ValueError, match="fusion"):
        TwoTowerConfig(fusion="attention")


def test_history_histograms_are_the_weighted_share_of_each_category(tiny_features):
    fs = tiny_features
    users = np.arange(20)
    ub = fs.user_batch(users, np.full(20, fs.time_of("test")))
    batch = user_batch_tensors(ub)
    n = len(fs.items.categories) + 1
    hist = TwoTower._history_histogram(batch, torch.from_numpy(fs.items.category), n).numpy()
    row = np.repeat(np.arange(20), ub.hist_lengths)
    expected = np.zeros((20, n))
    np.add.at(expected, (row, fs.items.category[ub.hist_items]), ub.hist_weights)
    np.testing.assert_allclose(hist, expected, atol=1e-6)
    has_history = ub.hist_lengths > 0
    assert has_history.any()
    np.testing.assert_allclose(hist[has_history].sum(1), 1.0, atol=1e-5)  # weights sum to 1 per user
    model = TwoTower(TwoTowerConfig(user_features=("user_style", "history_category", "history_price")), Vocab.of(fs), TwoTower.item_tables(fs))
    with torch.no_grad():
        assert model.user_embeddings(batch).shape == (20, model.config.dim)


def test_history_weights_have_their_own_table(tiny_embedded, tiny_features):
    """History weights (profiles) follow ``history_event_weights``; the interaction matrix the
    baselines fit keeps ``event_weights``; ``half_life_days = inf`` means no decay."""
    from data.split import load_or_create_split
    from data.validate import load_dataset
    from recsys.features import EVENT_CODES, FeatureConfig, build_features

    history = {"view": 0.0, "click": 1.0, "cart": 3.0, "purchase": 3.0}
    ds = load_dataset(tiny_embedded)
    fs = build_features(ds, load_or_create_split(ds), FeatureConfig(history_len=5, half_life_days=float("inf"), history_event_weights=history))
    names = {code: name for name, code in EVENT_CODES.items()}
    assert np.array_equal(fs.ev_hist_weight, [history[names[e]] for e in fs.ev_event])
    assert np.array_equal(fs.ev_weight, [fs.config.event_weights[names[e]] for e in fs.ev_event])
    before = fs.time_of("test")
    assert fs.config.event_weights == tiny_features.config.event_weights
    assert (fs.interaction_matrix(before) != tiny_features.interaction_matrix(before)).nnz == 0  # baselines unaffected

    users = np.arange(40)
    ub = fs.user_batch(users, np.full(len(users), before))
    rows = np.repeat(np.arange(len(users)), ub.hist_lengths)
    assert ub.hist_lengths.max() == 5
    for q, u in enumerate(users):
        a, b = fs.ev_start[u], fs.ev_start[u + 1]
        last = np.flatnonzero(fs.ev_ts[a:b] < before)[-5:] + a
        raw = fs.ev_hist_weight[last]
        expected = raw / raw.sum() if raw.sum() > 0 else raw
        np.testing.assert_allclose(ub.hist_weights[rows == q], expected, atol=1e-6)


@pytest.mark.parametrize(
    "features, message",
    [({"history_event_weights": {"veiw": 1.0}}, "veiw"), ({"event_weights": {"view": -1.0}}, "finite and >= 0"), ({"half_life_days": 0.0}, "half_life_days")],
)
def test_feature_config_errors_name_the_key(features, message):
    from recsys.config import ConfigError, load_run_config

    with pytest.raises(ConfigError, match=message) as info:
        load_run_config(None, {"features": features})
    assert "[features]" in str(info.value)


def test_dropped_items_are_seen_without_their_reviews(tiny_features):
    """Reviews are behaviour: a dropped item (like a cold one) is its title text, not the
    review-mixed text, so training sees what a never-reviewed item looks like."""
    fs = tiny_features
    reviewed = np.flatnonzero(np.abs(fs.items.text - fs.items.text_plain).sum(1) > 1e-4)
    assert len(reviewed) > 0  # some items have reviews mixed in
    assert np.abs(fs.items.text - fs.items.text_plain)[fs.items.cold].max() < 1e-6  # cold items have none
    model = TwoTower(TwoTowerConfig(), Vocab.of(fs), TwoTower.item_tables(fs)).eval()
    rows = torch.from_numpy(reviewed)
    with torch.no_grad():
        kept = model.item_embeddings(rows, keep=torch.ones(len(rows), dtype=torch.bool))
        dropped = model.item_embeddings(rows, keep=torch.zeros(len(rows), dtype=torch.bool))
        model.item_text.copy_(model.item_text_plain)
        plain = model.item_embeddings(rows)
    torch.testing.assert_close(dropped, plain)
    assert not torch.allclose(kept, dropped)


def test_item_text_as_of_a_time_mixes_only_the_reviews_before_it(tiny_features):
    """The text a ranker's training window sees: title + description mixed with the mean of
    the reviews written before the window, by hand; never a review the cutoff's text leaves out."""
    from style.space import l2_normalise

    fs = tiny_features
    cutoff = fs.time_of("test")
    assert fs.text_reviews_before == cutoff
    assert fs.item_text(cutoff) is fs.items.text and fs.item_text(cutoff + 30 * DAY) is fs.items.text
    vectors = np.diff(fs.rv_cumsum, axis=0)
    for before in (cutoff - 7 * DAY, cutoff - 21 * DAY):
        written = fs.rv_ts < before
        assert 0 < written.sum() < (fs.rv_ts < cutoff).sum()
        expected = fs.items.text_plain.astype(np.float64).copy()
        for item in np.unique(fs.rv_item[written]):
            mean = l2_normalise(vectors[written & (fs.rv_item == item)].mean(0, keepdims=True))[0]
            expected[item] = (1 - fs.config.review_text_weight) * expected[item] + fs.config.review_text_weight * mean
        expected = l2_normalise(expected)
        text = fs.item_text(before)
        np.testing.assert_allclose(text, expected, rtol=1e-5, atol=1e-6)
        assert not text.flags.writeable and fs.item_text(before) is text  # kept for the window's source and feature
        later = np.unique(fs.rv_item[~written & (fs.rv_ts < cutoff)])
        assert np.abs(text[later] - fs.items.text[later]).max() > 1e-3  # the reviews after it are not in


def test_history_profile_is_the_normalised_weighted_mean_of_the_history(tiny_features):
    from recsys.features import events

    fs = tiny_features
    users, time = np.array([3, 0, 3, 1, fs.n_users - 1]), fs.time_of("test")
    for vectors in (fs.items.style, fs.items.text):
        got = events.history_profile(fs, users, time, vectors)
        ub = events.user_batch(fs, users, np.full(len(users), time))
        ends = np.cumsum(ub.hist_lengths)
        for r, (lo, hi) in enumerate(zip(ends - ub.hist_lengths, ends, strict=True)):  # one user at a time, by hand
            mean = (vectors[ub.hist_items[lo:hi]].astype(np.float64) * ub.hist_weights[lo:hi, None]).sum(0)
            norm = np.linalg.norm(mean)
            np.testing.assert_allclose(got[r], mean / norm if norm > 0 else mean, rtol=1e-5, atol=1e-6)
    empty = events.history_profile(fs, users, int(fs.ev_ts.min()), fs.items.style)  # nobody has a history yet
    assert not empty.any()
