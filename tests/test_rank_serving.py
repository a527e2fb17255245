"""Serving the ranker on the tiny preset: the ranked lists, their parts, their explanations."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys.features import EVENT_CODES
from recsys.rank.config import RankConfig
from recsys.rank.features import FeatureContext
from recsys.rank.ranker import fit_ranker
from recsys.rank.run import catalogue_prices
from recsys.rank.serving import format_contributions, generate_ranked_candidates, ranked_part, served_ranker, top_contributions
from recsys.rank.sources import CandidateGenerator
from recsys.serving import CandidateJob, CandidateJobError

SOURCES = {"two_tower": 30, "als": 30, "item_cf": 30, "style_knn": 20, "new_arrivals": 10}
FAST = RankConfig(sources=SOURCES, n_estimators=20, early_stopping_rounds=5, negatives_per_user=10, als_factors=8, als_iterations=3)


@pytest.fixture(scope="module")
def served(tiny_embedded, tmp_path_factory):
    """A two-tower bundle (2 epochs) and a ranker trained over it, rebuilt as served."""
    from data.validate import load_dataset
    from pipelines.tracking import load_served_model
    from recsys.bundle import save_bundle
    from recsys.model import TwoTowerConfig
    from recsys.config import RunConfig
    from recsys.train import Trainer, TrainConfig
    from recsys.training_run import features_for

    ds = load_dataset(tiny_embedded)
    fs = features_for(ds, RunConfig())
    result = Trainer(fs, TwoTowerConfig(), TrainConfig(epochs=2, batch_size=64, val_users=None), progress=False).fit()
    folder = save_bundle(tmp_path_factory.mktemp("bundle") / "model", result.model, result.features, ("train", "val"), {"dataset_path": str(tiny_embedded)}, ds.manifest.content_sha256)
    lm = load_served_model(ds, str(folder))
    gen = CandidateGenerator(lm.fs, FAST, lm.recommender)
    ctx = FeatureContext(catalogue_prices(ds, lm.fs), two_tower=lm.recommender, als=gen.sources["als"])
    fit = fit_ranker(gen, ctx, lm.fs.time_of("test"))
    return served_ranker(ds, FAST, fit.model, fit.features, lm, "stylerec-ranker/1")


def test_an_explained_new_item_shows_its_boost(served):
    """With a new-item boost, an item without history carries it as a contribution: the
    explanation still adds up to the listed score."""
    import dataclasses

    from recsys.rank.features import ITEM_EVENTS, pair_features
    from recsys.rank.ranker import NEW_ITEM_BOOST, RankedRecommender

    rec = served.recommender
    boosted = dataclasses.replace(served, recommender=RankedRecommender(rec.gen, rec.ctx, dataclasses.replace(rec.fit, new_item_boost=50.0), rec.name))
    users = np.arange(served.fs.n_users)
    frame = pair_features(served.fs, rec.gen.union(users, served.query_time), served.query_time, rec.ctx)
    new_items = set(served.fs.items.ids[frame.filter(pl.col(ITEM_EVENTS) == 0)["i"].unique().to_numpy()].astype(str))
    assert new_items, "the tiny preset has items without history among the candidates"
    part = ranked_part(boosted, users, CandidateJob(k=3, explain=True), np.zeros(served.fs.items.n, bool))
    shown = part.filter(pl.col("item_id").is_in(list(new_items)))
    assert shown.height and all(t[0] == {"feature": NEW_ITEM_BOOST, "contribution": 50.0} for t in shown["top_contributions"].to_list())
    assert not any(c["feature"] == NEW_ITEM_BOOST for t in part.filter(~pl.col("item_id").is_in(list(new_items)))["top_contributions"].to_list() for c in t)


def test_a_part_is_scored_in_batches_as_it_would_be_whole(served, monkeypatch):
    """A part larger than SCORE_BATCH_USERS is scored a batch at a time: the same rows,
    explanations included, as one batch of all its users."""
    import recsys.rank.serving as serving

    users = np.arange(0, served.fs.n_users, 3)[:50]
    job, excluded = CandidateJob(k=5, explain=True), np.zeros(served.fs.items.n, bool)
    whole = ranked_part(served, users, job, excluded)
    monkeypatch.setattr(serving, "SCORE_BATCH_USERS", 16)
    monkeypatch.setattr(serving, "MIN_SCORE_BATCH_USERS", 1)
    assert serving.score_batch_users(served.fs.items.n) == 16
    batched = ranked_part(served, users, job, excluded)
    assert whole.height == 5 * len(users)
    from polars.testing import assert_frame_equal

    assert_frame_equal(batched, whole, check_exact=False, rel_tol=1e-6, abs_tol=1e-6)


def test_a_large_catalogue_is_scored_in_smaller_batches():
    from recsys.features.featureset import PROFILE_SCORES_KEPT
    from recsys.rank.serving import MIN_SCORE_BATCH_USERS, SCORE_BATCH_USERS, score_batch_users

    assert score_batch_users(10_000) == SCORE_BATCH_USERS
    assert score_batch_users(105_000) == PROFILE_SCORES_KEPT // 105_000 < SCORE_BATCH_USERS  # H&M's articles: ~159 users
    assert score_batch_users(10**7) == MIN_SCORE_BATCH_USERS


def test_top_contributions_by_hand():
    contrib = np.array([[0.1, -0.5, 0.3, 2.0], [0.0, 0.2, -0.1, 1.0]])
    top = top_contributions(contrib, ["a", "b", "c"], n=2)
    assert top == [[{"feature": "b", "contribution": -0.5}, {"feature": "c", "contribution": pytest.approx(0.3)}], [{"feature": "b", "contribution": pytest.approx(0.2)}, {"feature": "c", "contribution": pytest.approx(-0.1)}]]
    assert format_contributions(top[0]) == "b:-0.50,c:+0.30"


def test_contributions_sum_to_the_score(served):
    """LightGBM's pred_contrib rows (features + bias) sum to the raw score the lists carry."""
    rec = served.recommender
    users = np.arange(0, served.fs.n_users, 7)
    part = ranked_part(served, users, CandidateJob(k=5, explain=True), np.zeros(served.fs.items.n, bool))
    from recsys.rank.features import pair_features

    union = rec.gen.union(users, served.query_time)
    x = pair_features(served.fs, union, served.query_time, rec.ctx).select(rec.fit.features).to_numpy().astype(np.float32)
    contrib = rec.fit.model.predict(x, pred_contrib=True)
    assert contrib.shape == (union.height, len(rec.fit.features) + 1)
    np.testing.assert_allclose(contrib.sum(1), rec.fit.model.predict(x), rtol=1e-5, atol=1e-5)
    # the parts' scores are those predictions, and each row's top 3 are the largest |contribution|
    tops = part["top_contributions"].to_list()
    assert all(len(t) == 3 for t in tops)
    assert all(abs(t[0]["contribution"]) >= abs(t[1]["contribution"]) >= abs(t[2]["contribution"]) for t in tops)
    assert all(c["feature"] in rec.fit.features for t in tops for c in t)


def test_ranked_lists_are_the_ranked_union_without_bought_or_excluded(served, tmp_path):
    fs = served.fs
    excluded = np.zeros(fs.items.n, bool)
    excluded[:5] = True
    job = CandidateJob(k=10, chunk_size=64)
    # a job stopped after one part, then resumed: each time the ranker is told how many users
    # are left to score (whether compiling it pays)
    assert not generate_ranked_candidates(served, tmp_path / "ranked", job, excluded, progress=False, max_parts=1)["complete"]
    assert served.recommender.expected_users == 64
    summary = generate_ranked_candidates(served, tmp_path / "ranked", job, excluded, progress=False)
    assert served.recommender.expected_users == fs.n_users - 64
    assert summary["complete"] and summary["model_version"] == "stylerec-ranker/1" and summary["parts_reused"] == 1
    df = pl.read_parquet(tmp_path / "ranked" / "part-*.parquet")
    assert df.columns == ["user_id", "rank", "item_id", "score", "model_version", "sources"]
    per_user = df.group_by("user_id").len()["len"]
    assert per_user.max() == 10 and (per_user == 10).mean() > 0.9
    # rank 1..n in descending score
    by_user = df.group_by("user_id", maintain_order=True).agg(pl.col("score").diff().max().fill_null(0).alias("rise"), (pl.col("rank") == pl.int_range(1, pl.len() + 1)).all().alias("ranks"))
    assert by_user["ranks"].all() and (by_user["rise"] <= 0).all()
    assert not set(df["item_id"]) & set(fs.items.ids[:5].tolist())
    buys = pl.DataFrame({"user_id": fs.user_ids[fs.ev_user], "item_id": fs.items.ids[fs.ev_item], "e": fs.ev_event}).filter(pl.col("e") == EVENT_CODES["purchase"])
    assert df.join(buys, on=["user_id", "item_id"], how="inner").height == 0
    sources = set(s for row in df["sources"].to_list() for s in row)
    assert sources <= set(SOURCES) and "two_tower" in sources and df["sources"].list.len().min() >= 1
    # the same lists as the recommender's scores: the ranked union
    u = int(np.flatnonzero(fs.user_ids == df["user_id"][0])[0])
    scores = served.recommender.scores(np.array([u]), served.query_time)[0]
    first = df.filter(pl.col("user_id") == df["user_id"][0])
    rows = [fs.items.ids.tolist().index(i) for i in first["item_id"]]
    np.testing.assert_allclose(first["score"].to_numpy(), scores[rows], rtol=1e-5)
    # a ranked and an unranked job never share a folder
    from recsys.serving import _pin_job

    with pytest.raises(CandidateJobError, match="different job"):
        _pin_job(tmp_path / "ranked", {**job.__dict__, "model_version": served.two_tower.version})
    with pytest.raises(CandidateJobError, match="different job"):
        generate_ranked_candidates(served, tmp_path / "ranked", CandidateJob(k=5, chunk_size=64), excluded, progress=False)


# -- the jobs: candidates --rank, ab simulate with a ranked arm, evaluate's ranker rows --------


def test_candidates_rank_without_a_ranker_says_train_first(tiny_embedded, tmp_path, mlflow_store):
    from click.testing import CliRunner

    from pipelines.cli import cli

    result = CliRunner().invoke(cli, ["--workdir", str(tmp_path / "wd"), "candidates", str(tiny_embedded), "--rank"])
    assert result.exit_code != 0 and "no ranker registered at models:/stylerec-ranker@champion" in result.output, result.output
    assert "run `stylerec rank train DATASET` first" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["candidates", str(tiny_embedded), "--rank", "--steer-style-item", "I000001"])
    assert result.exit_code != 0 and "drop --steer-style-item" in result.output


def test_a_ranker_names_its_two_tower():
    from pipelines.ranker_store import two_tower_uri

    assert two_tower_uri("stylerec/3") == "models:/stylerec/3"
    assert two_tower_uri("runs:/abc/model") == "runs:/abc/model"
    assert two_tower_uri("bundle-0123456789ab") is None and two_tower_uri("") is None


def _registered(name: str, tags: dict[str, str]) -> str:
    """A version of ``name`` (a two-split LightGBM model: what it holds does not matter) with ``tags``."""
    import lightgbm
    import mlflow
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import setup

    setup("stand-ins")  # this test's store (MLFLOW_TRACKING_URI) and an experiment of its own, not an earlier test's
    x = np.random.default_rng(0).normal(size=(40, 3))
    booster = lightgbm.train({"objective": "regression", "verbosity": -1, "num_threads": 1}, lightgbm.Dataset(x, x[:, 0]), 2)
    with mlflow.start_run():
        uri = mlflow.lightgbm.log_model(booster, name="model").model_uri
    version = mlflow.register_model(uri, name).version
    for key, value in tags.items():
        MlflowClient().set_model_version_tag(name, version, key, value)
    return version


def test_the_demo_reuses_a_ranker_only_of_this_code(mlflow_store):
    from mlflow.tracking import MlflowClient

    from pipelines.ranker_store import CODE_TAG, find_ranker
    from pipelines.tracking import RANKER_NAME
    from recsys.training_run import ranking_code_sha256

    version = _registered(RANKER_NAME, {"dataset_fingerprint": "fp", "config_sha256": "cfg", "two_tower": "stylerec/1", CODE_TAG: ranking_code_sha256()})
    assert find_ranker("fp", "cfg", "stylerec/1").version == version
    assert find_ranker("fp", "other config", "stylerec/1") is None
    MlflowClient().set_model_version_tag(RANKER_NAME, version, CODE_TAG, "0" * 64)  # registered by other code
    assert find_ranker("fp", "cfg", "stylerec/1") is None


def test_the_demo_reuses_a_two_tower_only_of_this_split(mlflow_store):
    from pipelines.tracking import MODEL_NAME, SPLIT_TAG, find_trained

    version = _registered(MODEL_NAME, {"dataset_fingerprint": "fp", "config_sha256": "key", SPLIT_TAG: "split-a"})
    assert find_trained("fp", "key", "split-a").version == version
    assert find_trained("fp", "key", "split-b") is None  # the dataset split again: trained anew
    assert find_trained("fp", "key").version == version  # any split


def test_a_ranker_logged_before_item_cf_was_pruned_is_served_unpruned(tiny_features):
    from pipelines.ranker_store import logged_config
    from recsys.rank.config import RankConfig
    from recsys.rank.sources import ItemCF

    fs = tiny_features
    current = RankConfig().to_json()
    assert logged_config(current) == RankConfig()
    old = logged_config({k: v for k, v in current.items() if k != "item_cf_neighbours"})
    assert old.item_cf_neighbours > RankConfig().item_cf_neighbours  # not today's default
    time = fs.time_of("test")
    served = ItemCF(old.item_cf_recent, old.item_cf_neighbours).fit(fs, time).co
    trained = ItemCF(old.item_cf_recent, None).fit(fs, time).co
    assert (served != trained).nnz == 0 and served.nnz == trained.nnz


@pytest.mark.slow
def test_ranked_lists_served_simulated_and_evaluated(tiny_embedded, tmp_path, mlflow_store, fast_configs):
    import json
    import shutil

    from click.testing import CliRunner

    from pipelines.cli import cli

    root = tmp_path / "ds"
    shutil.copytree(tiny_embedded, root)
    train_toml, rank_toml = fast_configs.train, fast_configs.rank
    runner = CliRunner()
    wd = ["--workdir", str(tmp_path / "wd")]
    for args in (["train", str(root), "--config", str(train_toml)], ["rank", "train", str(root), "--config", str(rank_toml)]):
        result = runner.invoke(cli, [*wd, *args])
        assert result.exit_code == 0, result.output

    # candidates --rank --explain
    out = tmp_path / "ranked"
    result = runner.invoke(cli, [*wd, "candidates", str(root), "--rank", "--k", "10", "--explain", "--chunk-size", "128", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "ranker stylerec-ranker/1 over two-tower stylerec/1" in result.output and "ranked lists: 300 users in 3 parts" in result.output
    df = pl.read_parquet(out / "part-*.parquet")
    assert df.columns == ["user_id", "rank", "item_id", "score", "model_version", "sources", "top_contributions"]
    assert set(df["model_version"]) == {"stylerec-ranker/1"} and df.group_by("user_id").len()["len"].max() == 10
    by_user = df.group_by("user_id").agg(pl.col("score").diff().max().fill_null(0).alias("rise"))
    assert (by_user["rise"] <= 0).all()
    ds_buys = pl.read_parquet(root / "interactions.parquet").filter(pl.col("event") == "purchase").select("user_id", "item_id")
    assert df.join(ds_buys, on=["user_id", "item_id"]).height == 0
    assert df["sources"].list.len().min() >= 1 and df["top_contributions"].list.len().min() == 3
    assert json.loads((out / "_job.json").read_text())["ranker_version"] == "stylerec-ranker/1"
    # two ranks (torchrun) write the same lists as one process, each its share of the parts
    out2 = tmp_path / "ranked-2"
    from data.io import folder_lock

    with folder_lock(out2, what="another job"):  # not while another job holds the folder
        result = runner.invoke(cli, [*wd, "candidates", str(root), "--rank", "--k", "10", "--chunk-size", "128", "--out", str(out2), "--nproc", "2"])
    assert result.exit_code != 0 and not list(out2.glob("part-*.parquet"))
    result = runner.invoke(cli, [*wd, "candidates", str(root), "--rank", "--k", "10", "--explain", "--chunk-size", "128", "--out", str(out2), "--nproc", "2"])
    assert result.exit_code == 0, result.output
    df2 = pl.read_parquet(out2 / "part-*.parquet")
    key = ["user_id", "rank"]
    assert len(list(out2.glob("part-*.parquet"))) == 3 and df2.sort(key)["item_id"].equals(df.sort(key)["item_id"])
    np.testing.assert_allclose(df2.sort(key)["score"].to_numpy(), df.sort(key)["score"].to_numpy(), rtol=1e-5, atol=1e-6)
    assert json.loads((out2 / "_job.json").read_text())["ranker_version"] == "stylerec-ranker/1"
    # served with the new-item boost it was registered with
    from mlflow.tracking import MlflowClient

    from data.validate import load_dataset
    from pipelines.ranker_store import load_ranker

    tag = float(MlflowClient(mlflow_store).get_model_version("stylerec-ranker", "1").tags["new_item_boost"])
    assert load_ranker(load_dataset(root), "models:/stylerec-ranker/1").recommender.fit.new_item_boost == tag
    # the unranked job refuses the ranked job's folder
    result = runner.invoke(cli, [*wd, "candidates", str(root), "--k", "10", "--out", str(out)])
    assert result.exit_code != 0 and "different job" in result.output

    # the ranked lists as an arm of a simulated experiment
    sim = tmp_path / "sim"
    result = runner.invoke(cli, [*wd, "ab", "simulate", str(root), "--control", "als", "--treatment", "ranked", "--users", "300", "--days", "10", "--out", str(sim), "--no-report"])
    assert result.exit_code == 0, result.output
    assert "treatment (ranked)" in result.output
    summary = json.loads((sim / "simulation.json").read_text())
    assert summary["treatment"] == "ranked" and summary["expected_purchases_per_user"]["treatment"] > 0
    result = runner.invoke(cli, [*wd, "ab", "simulate", str(root), "--control", "ranked:models:/stylerec-ranker/1", "--treatment", "als", "--users", "200", "--days", "5", "--no-report"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "wd" / "ab" / "stylemart-tiny-ranked-models-stylerec-ranker-1-vs-als" / "simulation.json").is_file()

    # evaluate: the ranker rows beside every other
    result = runner.invoke(cli, [*wd, "evaluate", str(root), "--config", str(train_toml), "--model-uri", "models:/stylerec@champion", "--variants", "none", "--rank-config", str(rank_toml)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "wd" / "reports" / "offline-eval-stylemart-tiny.json").read_text())["results"]
    for name in ("als", "two-tower", "multi-source + ranker", "two-tower + ranker"):
        assert f"\n{name} " in result.output, name
        assert set(report[name]) == set(report["als"]), name
