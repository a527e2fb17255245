"""The CLI's entry silences third-party notices a user cannot act on, and only those."""

import logging
import os
import warnings

from pipelines import env


def test_setup_sets_defaults_without_overriding(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    env.setup()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3"  # an explicit setting wins
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    assert MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get() is False  # no download bar when a job loads a model


def test_setup_silences_library_notices_and_keeps_ours(caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env.setup()
        warnings.warn_explicit("module is DEPRECATED", DeprecationWarning, "x.py", 1, module="fbgemm_gpu.split_table_batched_embeddings_ops")
        warnings.warn_explicit("ShardedTensor is deprecated", FutureWarning, "x.py", 1, module="torch.distributed._shard.sharded_tensor")
        warnings.warn_explicit("OpenBLAS is configured to use 2 threads. It is highly recommended ...", RuntimeWarning, "als.py", 96, module="implicit.cpu.als")
        warnings.warn_explicit("a warning of ours", UserWarning, "x.py", 1, module="recsys.train")
    assert [str(w.message) for w in caught] == ["a warning of ours"]

    with caplog.at_level(logging.WARNING):
        env.setup()  # idempotent: one filter per logger
        logging.getLogger("torch.fx._symbolic_trace").warning("is_fx_tracing will return true for both fx.symbolic_trace and torch.export.")
        logging.getLogger("torch.fx._symbolic_trace").warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
    assert len(logging.getLogger("torch.fx._symbolic_trace").filters) == 1


def test_the_pyfunc_signature_is_explicit():
    from pipelines import tracking

    sig = tracking.model_signature()
    assert sig.inputs.input_names() == ["user_id"]
    assert [(c.name, c.type.name) for c in sig.outputs.inputs] == [("user_id", "string"), ("rank", "long"), ("item_id", "string")]
    assert sig.params.params[0].name == "k" and sig.params.params[0].default == tracking.DEFAULT_K
