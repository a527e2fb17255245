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


_FREED = """
import sys
import numpy as np
from pipelines import env
kept = env.keep_freed_memory() if sys.argv[1] == "keep" else False
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
block = np.ones(64 << 20, np.uint8)
during = rss()
del block
print(int(kept), during - rss())
"""


def test_freed_memory_stays_in_the_heap_for_the_next_chunk(tmp_path):
    """With keep_freed_memory, a freed 64 MB array stays in the process (the next one re-uses
    it instead of page-faulting fresh memory); by default glibc hands it back at once. An
    explicit malloc setting of the user's wins."""
    import subprocess
    import sys

    import pytest

    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs Linux's /proc")
    script = tmp_path / "freed.py"
    script.write_text(_FREED)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "STYLEREC_KEEP_FREED_MEMORY")}

    def run(mode: str, **extra: str) -> tuple[int, int]:
        out = subprocess.run([sys.executable, str(script), mode], env={**clean, **extra}, capture_output=True, text=True, check=True).stdout.split()
        return int(out[0]), int(out[1])

    kept, returned = run("keep")
    if not kept:
        pytest.skip("not glibc: mallopt is not there")
    assert returned < 8 << 20
    assert run("default")[1] > 48 << 20
    for setting in ({"MALLOC_TRIM_THRESHOLD_": "131072"}, {"STYLEREC_KEEP_FREED_MEMORY": "0"}):
        applied, returned = run("keep", **setting)
        assert not applied and returned > 48 << 20, setting


def test_a_rank_with_a_thread_budget_keeps_polars_to_it():
    """OMP_NUM_THREADS (torchrun gives each rank 1; "4,2": the outer level) sets polars' pool
    too, unless POLARS_MAX_THREADS is set; without a budget polars keeps its default."""
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "POLARS_MAX_THREADS")}
    with_setup = "from pipelines import env; env.setup(); import polars; print(polars.thread_pool_size())"

    def pool(script: str = with_setup, **extra: str) -> int:
        return int(subprocess.run([sys.executable, "-c", script], env={**clean, **extra}, capture_output=True, text=True, check=True).stdout)

    assert pool(OMP_NUM_THREADS="1") == 1
    assert pool(OMP_NUM_THREADS="1,2", POLARS_MAX_THREADS="2") == 2  # an explicit setting wins
    polars_default = pool("import polars; print(polars.thread_pool_size())")
    assert pool() == polars_default and pool(OMP_NUM_THREADS="abc") == polars_default  # no budget, or not a count
