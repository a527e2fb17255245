import dataclasses
import shutil

import numpy as np
import polars as pl
import pytest

from data.dataset import DatasetError
from data.io import write_parquet
from data.split import load_or_create_split
from data.validate import load_dataset
from recsys.baselines import ContentKNN, ImplicitMF, Popularity
from recsys.config import ConfigError, load_run_config
from recsys.evaluate import EvalConfig, evaluate, load_ground_truth
from recsys.features import build_features
from recsys.model import TwoTowerConfig
from recsys.train import Trainer, TrainConfig, TwoTowerRecommender
from style.embeddings import embeddings_path

SMALL = TrainConfig(epochs=3, batch_size=64, patience=5, val_users=None, refit=False)


def test_training_is_deterministic_and_resumable(tiny_features, tmp_path):
    fs = tiny_features
    a = Trainer(fs, TwoTowerConfig(), SMALL, progress=False).fit()
    b = Trainer(fs, TwoTowerConfig(), SMALL, progress=False).fit()
    assert [h.loss for h in a.history] == [h.loss for h in b.history]
    assert [h.val_recall_50 for h in a.history] == [h.val_recall_50 for h in b.history]
    # two epochs, then resume to three: the same as three in one go
    two = dataclasses.replace(SMALL, epochs=2)
    Trainer(fs, TwoTowerConfig(), two, checkpoint_dir=tmp_path, progress=False).fit()
    assert (tmp_path / "epoch-001.safetensors").is_file() and (tmp_path / "state.json").is_file()
    resumed = Trainer(fs, TwoTowerConfig(), SMALL, checkpoint_dir=tmp_path, progress=False).fit(resume=True)
    assert [h.loss for h in resumed.history] == pytest.approx([h.loss for h in a.history], rel=1e-6)


def test_refit_covers_validation_items(tiny_features):
    result = Trainer(tiny_features, TwoTowerConfig(), dataclasses.replace(SMALL, epochs=2, refit=True), progress=False).fit()
    assert result.best_epoch >= 0
    val_items = np.unique(tiny_features.training_examples("val").item)
    new_in_val = val_items[tiny_features.items.id_index[val_items] == 0]
    assert len(new_in_val) > 0  # the fixture has items first seen in validation
    # the refit (on train + validation) gives every one of them an id; without it, none has
    assert (result.features.items.id_index[val_items] > 0).all()


def test_two_tower_beats_popularity_and_reaches_cold_items(tiny_features, tiny_embedded):
    fs = tiny_features
    truth = load_ground_truth(fs, tiny_embedded)
    result = Trainer(fs, TwoTowerConfig(), TrainConfig(epochs=8, batch_size=64, patience=3, val_users=None), progress=False).fit()
    tt = evaluate(TwoTowerRecommender(result.model, result.features), result.features, EvalConfig(), truth)
    pop = evaluate(Popularity().fit(fs, fs.time_of("test")), fs, EvalConfig(), truth)
    assert tt["all"]["recall@50"] > pop["all"]["recall@50"]
    assert tt["cold_items"]["recall@50"] > 0.0 == pop["cold_items"]["recall@50"]
    for key in ("gt_style_affinity@50", "coverage@50", "gini@50", "popularity@50", "style_consistency@50", "ndcg@10", "mrr@100", "hitrate@50", "recall_capped@50"):
        assert key in tt["all"]


def test_baselines_score_the_catalogue(tiny_features):
    fs = tiny_features
    t = fs.time_of("test")
    users = np.arange(5)
    for model in (Popularity(), Popularity(window_days=7), ImplicitMF("als", iterations=3), ImplicitMF("bpr", iterations=3), ContentKNN("style"), ContentKNN("text")):
        scores = model.fit(fs, t).scores(users, t)
        assert scores.shape == (5, fs.items.n) and not np.isnan(scores).any()
        if isinstance(model, ImplicitMF):  # items nobody interacted with cannot be scored by MF
            unseen = fs.popularity(before=t) == 0
            assert np.isneginf(scores[:, unseen]).all() and np.isfinite(scores[:, ~unseen]).all()
    for kind in ("als", "bpr"):
        a = ImplicitMF(kind, iterations=3, seed=1).fit(fs, t).scores(users, t)
        b = ImplicitMF(kind, iterations=3, seed=1).fit(fs, t).scores(users, t)
        np.testing.assert_allclose(a, b)


def test_missing_or_broken_style_embeddings_fail_before_training(tiny_embedded, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(tiny_embedded, root)
    shutil.rmtree(root / "style")
    ds = load_dataset(root)
    with pytest.raises(DatasetError, match="no style embeddings"):
        build_features(ds, load_or_create_split(ds))
    shutil.copytree(tiny_embedded / "style", root / "style")
    table = pl.read_parquet(embeddings_path(root))
    vec = table["style"].to_numpy().copy()
    vec[0, 0] = np.nan
    write_parquet(table.with_columns(pl.Series("style", vec, dtype=pl.Array(pl.Float32, 100))), embeddings_path(root))
    with pytest.raises(DatasetError, match="non-finite style vectors"):
        build_features(ds, load_or_create_split(ds))


def test_config_files_are_checked(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[model]\nitem_features = ["style", "text"]\n[train]\nepochs = 2\n')
    cfg = load_run_config(good, {"train": {"seed": 5}})
    assert cfg.model.item_features == ("style", "text") and cfg.train.epochs == 2 and cfg.train.seed == 5
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text("[train]\nepoch = 2\n")
    with pytest.raises(ConfigError, match=r"bad.toml \[train\]: unknown key\(s\) \['epoch'\]"):
        load_run_config(bad_key)
    bad_feature = tmp_path / "feat.toml"
    bad_feature.write_text('[model]\nuser_features = ["user_id", "zodiac"]\n')
    with pytest.raises(ConfigError, match="unknown feature.*zodiac"):
        load_run_config(bad_feature)
    bad_section = tmp_path / "sec.toml"
    bad_section.write_text("[optimizer]\nlr = 1\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_run_config(bad_section)
