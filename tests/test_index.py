import numpy as np
import pytest

from recsys.index import CandidateIndex, IndexConfig, IndexMismatchError, exact_top_k, recall_vs_exact


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors drawn around cluster centres, like real embeddings (not isotropic noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    items = clustered(6000, 32, 60, 0)
    queries = clustered(600, 32, 60, 1)
    ids = np.array([f"item{i}" for i in range(len(items))], dtype=object)
    return items, queries, ids


def test_flat_index_equals_brute_force(data):
    items, queries, ids = data
    idx = CandidateIndex.build(items, ids, queries, IndexConfig(kind="flat", k=20))
    scores, rows = idx.search(queries[:50], 20)
    brute = items @ queries[:50].T
    expected = np.argsort(-brute.T, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(brute.T, expected, axis=1), rtol=1e-5)
    assert idx.manifest.metric == "inner_product" and idx.manifest.achieved_recall == 1.0


@pytest.mark.parametrize("kind,param", [("ivf", "nprobe"), ("hnsw", "efSearch")])
def test_ann_reaches_target_recall_on_held_out_queries(data, kind, param):
    items, queries, ids = data
    cfg = IndexConfig(kind=kind, k=50, target_recall=0.95, tune_queries=300)
    idx = CandidateIndex.build(items, ids, queries[:300], cfg)
    assert idx.manifest.achieved_recall >= 0.95 and param in idx.manifest.params
    if kind == "ivf":
        # 4 sqrt(N), but no fewer than 39 training vectors per list (FAISS's minimum)
        assert idx.manifest.params["nlist"] == min(int(round(4 * np.sqrt(len(items)))), len(items) // 39)
    # held-out queries (not used for tuning) also reach the target, give or take
    held_out = queries[300:]
    recall = recall_vs_exact(idx.search(held_out, 50)[1], exact_top_k(items, held_out, 50))
    assert recall >= 0.93


def test_save_load_round_trip_and_mismatches(data, tmp_path):
    items, queries, ids = data
    idx = CandidateIndex.build(items, ids, queries[:200], IndexConfig(kind="ivf", k=10, tune_queries=200), model_version="stylerec/3")
    idx.save(tmp_path)
    loaded = CandidateIndex.load(tmp_path, model_version="stylerec/3", dim=32)
    assert loaded.manifest == idx.manifest and list(loaded.ids) == list(ids)
    np.testing.assert_array_equal(loaded.search(queries[:20], 10)[1], idx.search(queries[:20], 10)[1])
    with pytest.raises(IndexMismatchError, match="model version 'stylerec/3', not 'stylerec/4'"):
        CandidateIndex.load(tmp_path, model_version="stylerec/4")
    with pytest.raises(IndexMismatchError, match="dim 32, the model produces 64"):
        CandidateIndex.load(tmp_path, dim=64)


def test_add_items(data):
    items, queries, ids = data
    idx = CandidateIndex.build(items[:5000], ids[:5000], queries[:100], IndexConfig(kind="flat", k=10))
    idx.add(items[5000:], ids[5000:])
    assert idx.manifest.n_items == 6000 and idx.ids[-1] == "item5999"
    _, rows = idx.search(items[5999:6000], 1)
    assert idx.ids[rows[0, 0]] == "item5999"
    with pytest.raises(ValueError, match="already in the index"):
        idx.add(items[:1], ids[:1])
