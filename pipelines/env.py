"""The process environment of every stylerec entry point, set up in one place.

``setup()`` runs first in ``pipelines.cli`` and ``pipelines.train`` (the torchrun entry):
thread pools (implicit's ALS is slow with an OpenBLAS thread pool, so one BLAS thread),
an offline text model (it must never reach for a hub), freed memory kept for re-use
(``keep_freed_memory``), and warnings filters for third-party notices a user of the CLI
cannot act on. Everything else stays visible.
"""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
import warnings

ENV_DEFAULTS = {
    # before numpy loads OpenBLAS
    "OPENBLAS_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # the text model's "Loading weights" bar: a file read from site-packages, nothing to wait for
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    # MLflow's "Downloading artifacts" bar when a job loads a registered model or its config:
    # local files of the store, nothing to wait for
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}

# (category, message regex, module regex): notices of libraries about their own internals
_SILENCED = (
    # fbgemm's deprecated modules and optional (SSD) kernels it fails to import on CPU;
    # TorchRec's and ShardedTensor's deprecation notices
    (DeprecationWarning, "", r"(torchrec|fbgemm_gpu|torch\.distributed)(\.|$)"),
    (FutureWarning, "", r"(torchrec|fbgemm_gpu|torch\.distributed)(\.|$)"),
    # implicit counts every OpenBLAS in the process: once faiss is imported that includes
    # faiss-cpu's own OpenMP build (2 threads, used by faiss only); the one implicit calls,
    # scipy's, runs on the single thread OPENBLAS_NUM_THREADS above gives it
    (RuntimeWarning, "OpenBLAS is configured to use", r"implicit(\.|$)"),
)
# (logger, message substring): log records of the same kind
_SILENCED_LOGS = (
    # torch.fx warns once per process when TorchRec's modules ask whether fx is tracing
    ("torch.fx._symbolic_trace", "is_fx_tracing will return true"),
    # MLflow checking the logged model's input example: an internal step of `train`
    ("mlflow.pyfunc", "Validating input example against model signature"),
    # TorchRec's planner on how it was constructed (every rank, every run)
    ("torchrec.distributed.planner.types", "The topology was constructed directly"),
    ("torchrec.distributed.planner.storage_reservations", "dense tensor size calculation in dry run"),
)


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


# glibc's mallopt parameters (malloc.h) and the value keep_freed_memory gives both
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 1 << 30
_MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Keep freed blocks of up to 1 GiB in the process's heap for the next allocation, rather
    than handing each back to the kernel (glibc's ``mallopt``: mmap and trim thresholds).

    A batch job makes and drops arrays of tens of MB per chunk of users (a chunk's scores
    against the catalogue). By default glibc maps each such array afresh and unmaps it when
    freed, so every chunk page-faults its memory in again: on a virtual machine, or with
    transparent huge pages compacting memory, that cost the ranked candidates several times
    the arithmetic (docs/ranking.md, "Throughput, fourth round"). Peak memory does not grow:
    the heap re-uses what was freed. Returns whether it applied: not off glibc, not with
    ``STYLEREC_KEEP_FREED_MEMORY=0``, and not when the user set glibc's malloc tunables or
    ``MALLOC_*_`` variables (an explicit setting wins)."""
    if os.environ.get("STYLEREC_KEEP_FREED_MEMORY") == "0":
        return False
    if "malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(k in os.environ for k in _MALLOC_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to set
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


def setup() -> None:
    """Environment defaults (an explicit setting wins), freed memory kept for re-use, and the
    warnings filters; idempotent. Runs before polars is imported."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from recsys.rank.compiled import omp_threads  # after OPENBLAS_NUM_THREADS: it loads numpy

    # a process given a thread budget (a torchrun rank: 1) keeps polars' pool to it, or every
    # rank's joins start a thread per core and crowd the others' (docs/ranking.md, "Throughput,
    # fifth round"); polars reads it when imported
    if omp_threads() is not None:
        os.environ.setdefault("POLARS_MAX_THREADS", str(omp_threads()))
    keep_freed_memory()
    for category, message, module in _SILENCED:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, text in _SILENCED_LOGS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.text == text for f in logger.filters):
            logger.addFilter(_DropMessage(text))


def silence_rank_notices() -> None:
    """On torchrun ranks: every FutureWarning (TorchRec / ShardedTensor deprecation notices
    that each rank would print once)."""
    warnings.filterwarnings("ignore", category=FutureWarning)


def threads_per_rank(local_world_size: int) -> int:
    """Cores of this machine split between its ranks (STYLEREC_THREADS_PER_RANK overrides)."""
    if os.environ.get("STYLEREC_THREADS_PER_RANK"):
        return int(os.environ["STYLEREC_THREADS_PER_RANK"])
    return max(1, (os.cpu_count() or 1) // max(local_world_size, 1))


def set_torch_threads(n: int) -> int:
    import torch

    torch.set_num_threads(n)
    return torch.get_num_threads()


def torchrun_module(nproc: int, module: str, args: list[str]) -> list[str]:
    """One machine, ``nproc`` ranks: torchrun's standalone rendezvous on a free local port."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", module, *args]


def launch(nproc: int, module: str, args: list[str]) -> int:
    # torchrun sets OMP_NUM_THREADS=1 for its ranks when unset, with a banner saying so;
    # the training entry sets torch's threads per rank itself
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.call(torchrun_module(nproc, module, args), env=env)
