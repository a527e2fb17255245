"""A trained model (or checkpoint) is re-used only on vectors from the same encoders."""

import dataclasses
import json

from data.validate import load_dataset
from recsys import text, training_run
from recsys.config import RunConfig
from style import networks


def test_training_key_covers_the_encoders(monkeypatch):
    base = training_run.config_sha256(RunConfig())
    assert training_run.config_sha256(RunConfig()) == base

    # another style network (same name, other weights) ...
    info = networks.encoder_info()
    monkeypatch.setattr(training_run, "encoder_info", lambda: dataclasses.replace(info, sha256="0" * 64))
    assert training_run.config_sha256(RunConfig()) != base
    monkeypatch.undo()
    assert training_run.config_sha256(RunConfig()) == base

    # ... or another text model changes the key
    monkeypatch.setattr(text, "MODEL_NAME", "all-mpnet-base-v2")
    assert training_run.config_sha256(RunConfig()) != base
    monkeypatch.undo()
    monkeypatch.setattr(text.metadata, "version", lambda package: "9.9.9")
    assert training_run.config_sha256(RunConfig()) != base


def test_run_key_follows_the_encoder_recorded_with_the_dataset(tiny_embedded, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(tiny_embedded, root)
    ds = load_dataset(root)
    config = RunConfig()
    key = training_run.run_key(ds, config)
    ckpt = training_run.checkpoint_dir(tmp_path, ds, config)
    assert training_run.run_key(ds, config) == key

    # the dataset's style vectors re-embedded by another encoder: nothing trained on the old ones matches
    meta_path = root / "style" / "style_meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "encoder": "another-style-encoder", "encoder_version": "2"}))
    assert training_run.run_key(ds, config) != key
    assert training_run.checkpoint_dir(tmp_path, ds, config) != ckpt


def test_text_cache_is_per_encoder(tmp_path):
    import numpy as np

    calls = []

    def factory(value):
        class Encoder:
            def embed(self, texts):
                calls.append(value)
                return np.full((len(texts), text.TEXT_DIM), value, np.float32)

        return Encoder

    path = tmp_path / "text_cache.parquet"
    first = text.CachedTextEmbedder(path, factory(1.0), identity="model-a 1")
    assert (first.embed(["a red shirt"]) == 1.0).all()
    assert (text.CachedTextEmbedder(path, factory(9.0), identity="model-a 1").embed(["a red shirt"]) == 1.0).all()
    assert calls == [1.0]  # the second embedder re-used the cache
    # another encoder never gets the first one's vectors
    assert (text.CachedTextEmbedder(path, factory(2.0), identity="model-b 1").embed(["a red shirt"]) == 2.0).all()
    assert calls == [1.0, 2.0]
