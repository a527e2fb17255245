"""Batch candidate generation: filters, resume, steering and explanations on real data."""

import shutil

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from data.validate import load_dataset
from pipelines.tracking import load_served_model
from recsys.serving import CandidateJob, build_or_load_index, generate_candidates
from pipelines.cli import cli
from recsys.bundle import save_bundle
from recsys.candidates import explain_by_style, filter_top_k, steer_queries
from recsys.features import EVENT_CODES
from recsys.index import IndexConfig
from recsys.model import TwoTowerConfig
from recsys.train import Trainer, TrainConfig


def test_filter_top_k_never_leaks():
    rows = np.array([[5, 3, 9, 1, 7, -1], [2, 4, 6, 8, 0, 1]])
    scores = np.arange(12, dtype=np.float32).reshape(2, 6)[:, ::-1].copy()
    banned = np.zeros(10, bool)
    banned[[3, 6]] = True
    top, sc = filter_top_k(rows, scores, 3, banned, [np.array([9]), np.array([2, 4])])
    assert top.tolist() == [[5, 1, 7], [8, 0, 1]]
    assert sc[0].tolist() == [scores[0, 0], scores[0, 3], scores[0, 4]]
    short, short_scores = filter_top_k(rows, scores, 6, banned, [np.array([9]), np.array([])])
    assert short[0].tolist() == [5, 1, 7, -1, -1, -1] and np.isneginf(short_scores[0, 3:]).all()


def test_steer_and_explain():
    q = np.array([[1.0, 0.0]], np.float32)
    d = np.array([0.0, 1.0], np.float32)
    np.testing.assert_allclose(steer_queries(q, d, 0.0), q)
    np.testing.assert_allclose(steer_queries(q, d, 1.0), [d])
    np.testing.assert_allclose(np.linalg.norm(steer_queries(q, d, 0.5)), 1.0, rtol=1e-6)
    with pytest.raises(ValueError):
        steer_queries(q, d, 2.0)
    style = np.array([[1, 0], [0, 1], [0.8, 0.6], [0, 0]], np.float32)
    has = np.array([True, True, True, False])
    because, sims = explain_by_style(np.array([[2, 3, -1]]), [np.array([0, 1, 3])], style, has)
    assert because.tolist() == [[0, -1, -1]] and sims[0, 0] == pytest.approx(0.8)


@pytest.fixture(scope="module")
def bundle(tiny_embedded, tmp_path_factory):
    ds = load_dataset(tiny_embedded)
    from data.split import load_or_create_split
    from recsys.features import build_features

    fs = build_features(ds, load_or_create_split(ds))
    result = Trainer(fs, TwoTowerConfig(), TrainConfig(epochs=2, batch_size=64, val_users=None), progress=False).fit()
    folder = tmp_path_factory.mktemp("bundle") / "model"
    return save_bundle(folder, result.model, result.features, ("train", "val"), {"dataset_path": str(tiny_embedded)}, ds.manifest.content_sha256)


def test_candidates_filter_resume_and_explain(tiny_embedded, bundle, tmp_path):
    ds = load_dataset(tiny_embedded)
    lm = load_served_model(ds, str(bundle))
    fs = lm.fs
    idx, built = build_or_load_index(lm, tmp_path / "index", IndexConfig(kind="ivf", k=20, tune_queries=100))
    assert built and idx.manifest.achieved_recall >= 0.95
    again, built_again = build_or_load_index(lm, tmp_path / "index", IndexConfig(kind="ivf", k=20))
    assert not built_again and again.manifest == idx.manifest

    excluded = np.zeros(fs.items.n, bool)
    excluded[fs.items.ids.tolist().index("I000005")] = True
    job = CandidateJob(k=20, chunk_size=64, explain=True)
    full = tmp_path / "full"
    summary = generate_candidates(lm, idx, full, job, excluded, progress=False)
    assert summary["complete"] and summary["users"] == fs.n_users and summary["parts"] == -(-fs.n_users // 64)
    parts = sorted(full.glob("part-*.parquet"))
    df = pl.concat([pl.read_parquet(p) for p in parts])
    assert df.group_by("user_id").len()["len"].max() == 20
    assert "I000005" not in set(df["item_id"])
    # nothing a user already bought comes back
    buys = pl.DataFrame({"user_id": fs.user_ids[fs.ev_user], "item_id": fs.items.ids[fs.ev_item], "e": fs.ev_event}).filter(pl.col("e") == EVENT_CODES["purchase"])
    assert df.join(buys, on=["user_id", "item_id"], how="inner").height == 0
    assert set(df["model_version"]) == {lm.version}
    # explanations point into the user's own history
    hist = pl.DataFrame({"user_id": fs.user_ids[fs.ev_user], "because_item_id": fs.items.ids[fs.ev_item]}).unique()
    explained = df.filter(pl.col("because_item_id").is_not_null())
    assert explained.height > 0 and explained.join(hist, on=["user_id", "because_item_id"], how="anti").height == 0

    # a run killed after two parts, then resumed, gives byte-identical parts
    killed = tmp_path / "killed"
    partial = generate_candidates(lm, idx, killed, job, excluded, progress=False, max_parts=2)
    assert not partial["complete"] and len(list(killed.glob("part-*.parquet"))) == 2
    resumed = generate_candidates(lm, idx, killed, job, excluded, progress=False)
    assert resumed["complete"] and resumed["parts_reused"] == 2
    for p in parts:
        assert (killed / p.name).read_bytes() == p.read_bytes()
    # another job's parameters in the same folder are refused
    with pytest.raises(Exception, match="different job"):
        generate_candidates(lm, idx, killed, CandidateJob(k=10, chunk_size=64), excluded, progress=False)


def test_steering_moves_candidates_toward_the_style_item(tiny_embedded, bundle, tmp_path):
    ds = load_dataset(tiny_embedded)
    lm = load_served_model(ds, str(bundle))
    idx, _ = build_or_load_index(lm, tmp_path / "index", IndexConfig(kind="flat", k=20))
    target = "I000010"
    excluded = np.zeros(lm.fs.items.n, bool)
    plain = generate_candidates(lm, idx, tmp_path / "plain", CandidateJob(k=20, chunk_size=512), excluded, progress=False)
    steered = generate_candidates(lm, idx, tmp_path / "steered", CandidateJob(k=20, chunk_size=512, steer_item=target, steer=0.8), excluded, progress=False)
    assert plain["complete"] and steered["complete"]
    row = lm.fs.items.ids.tolist().index(target)
    style = lm.fs.items.style

    def mean_style_sim(folder):
        df = pl.read_parquet(folder / "part-00000.parquet")
        rows = np.array([lm.fs.items.ids.tolist().index(i) for i in df["item_id"]])
        return float((style[rows] @ style[row]).mean())

    assert mean_style_sim(tmp_path / "steered") > mean_style_sim(tmp_path / "plain") + 0.1


def test_cli_index_and_candidates(tiny_embedded, bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    root = tmp_path / "ds"
    shutil.copytree(tiny_embedded, root)
    runner = CliRunner()
    wd = ["--workdir", str(tmp_path / "wd")]
    result = runner.invoke(cli, [*wd, "index", "build", str(root), "--model", str(bundle), "--kind", "hnsw", "--k", "20"])
    assert result.exit_code == 0, result.output
    assert "hnsw index of 240 items" in result.output and "inner product" in result.output
    result = runner.invoke(cli, [*wd, "index", "add-items", str(root), "--model", str(bundle)])
    assert result.exit_code == 0 and "added 0 new items" in result.output
    excl = tmp_path / "exclude.csv"
    excl.write_text("item_id\nI000001\nNOPE\n")
    result = runner.invoke(cli, [*wd, "candidates", str(root), "--model", str(bundle), "--k", "10", "--exclude", str(excl), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "1 item id(s) not in the catalogue" in result.output and "300 users" in result.output
    df = pl.read_parquet(tmp_path / "out" / "part-00000.parquet")
    assert "I000001" not in set(df["item_id"])


def test_new_items_join_the_index_without_retraining(tiny_embedded, bundle, tmp_path, monkeypatch):
    from data.dataset import DatasetDir, DatasetError
    from style.embeddings import embed_catalogue
    from style.encoder import MagentaStyleEncoder

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "ds"
    shutil.copytree(tiny_embedded, root)
    wd = ["--workdir", str(tmp_path / "wd")]
    runner = CliRunner()
    assert runner.invoke(cli, [*wd, "index", "build", str(root), "--model", str(bundle), "--k", "20"]).exit_code == 0
    before = load_served_model(load_dataset(root), str(bundle))
    old_vectors = before.recommender.item_matrix().numpy()

    # five items arrive after training: new ids, photos, text, and a category never seen
    dd = DatasetDir(root)
    items = dd.read_raw("items")
    new = items.head(5).with_columns(
        (pl.lit("I9") + pl.col("item_id").str.slice(2)).alias("item_id"),
        pl.lit("hat").alias("category"),
        (pl.lit("images/new_") + pl.col("item_id") + pl.lit(".jpg")).alias("image_path"),
    )
    for old_path, new_path in zip(items.head(5)["image_path"], new["image_path"], strict=True):
        shutil.copy(root / old_path, root / new_path)
    dd.write_table("items", pl.concat([items, new]))
    manifest = dd.manifest()
    dd.write_manifest(manifest.name, manifest.source, manifest.params, manifest.linked_dirs, manifest.extra)
    grown = load_dataset(root)
    embed_catalogue(root, grown.items, MagentaStyleEncoder(), progress=False)

    with pytest.raises(DatasetError, match="only a catalogue that grew"):
        load_served_model(grown, str(bundle))
    result = runner.invoke(cli, [*wd, "index", "add-items", str(root), "--model", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "added 5 new items (index now 245)" in result.output

    after = load_served_model(grown, str(bundle), allow_new_items=True)
    rows = [after.fs.items.ids.tolist().index(i) for i in before.fs.items.ids]
    np.testing.assert_allclose(after.recommender.item_matrix().numpy()[rows], old_vectors, atol=1e-6)
    assert (after.fs.items.category[[after.fs.items.ids.tolist().index(i) for i in new["item_id"]]] == 0).all()

    # a dataset whose behaviour changed is refused even with new items allowed
    dd.write_table("interactions", dd.read_raw("interactions").head(100))
    dd.write_manifest(manifest.name, manifest.source, manifest.params)
    with pytest.raises(DatasetError, match="changed tables"):
        load_served_model(load_dataset(root), str(bundle), allow_new_items=True)
