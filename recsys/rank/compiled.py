"""A LightGBM booster compiled to native code (lleaves, through LLVM) for batch scoring.

LightGBM's own predict walks every tree node by node and first copies each row into a
per-thread buffer; on the ~200,000 candidate rows of a chunk of 1,000 users that is most
of the time the ranker takes. The compiled forest gives the same scores (double precision,
the same thresholds and missing-value rules; tested to 1e-9) several times faster
(docs/ranking.md, "Throughput, fourth round"). Compiling costs 25-40 ms a tree and pays
for itself after 1.2-2.5 million rows, so a :class:`BoosterScorer` compiles before its
first rows only when the job says it will score at least ``COMPILE_PAYS_AFTER_ROWS``
(:meth:`BoosterScorer.expect`: a batch over the user base), and otherwise once it has
scored ``compile_after_rows`` rows with LightGBM: a small job never pays for it.
The machine code is made for this CPU and kept in memory only, never on disk.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

COMPILE_AFTER_ROWS = 1_000_000  # ~5 chunks of 1,000 users x 200 candidates
COMPILE_PAYS_AFTER_ROWS = 2_000_000  # a job expected to score this many compiles first (break-even: 1.2-2.5M)
PREDICT_BLOCK_ROWS = 1 << 16  # rows the compiled forest scores at a time (45 features: a ~24 MB float64 copy)
CHECK_ROWS = 2_000  # rows the compiled forest must score as LightGBM does before it is used


def omp_threads() -> int | None:
    """The process's thread budget from OMP_NUM_THREADS (torchrun gives each rank 1; of a
    nested list such as "4,2", the outer level); None when unset or not a positive count."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


def scoring_threads() -> int:
    """The threads a rank may score on: its OMP_NUM_THREADS budget, else every core."""
    return omp_threads() or os.cpu_count() or 1


def compile_booster(booster):
    """``booster`` (a lightgbm.Booster) as an lleaves model compiled for this CPU."""
    import lleaves

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ranker.txt"
        booster.save_model(str(path))
        model = lleaves.Model(model_file=str(path))
        model.compile()  # parses the file again; the machine code then lives in memory
    return model


def checked(model, booster, rows: np.ndarray):
    """``model`` if it scores ``rows`` as ``booster`` does, else a ValueError: the compiler
    does not know every kind of tree (it compiles linear trees, for one, into wrong scores)."""
    got = model.predict(np.ascontiguousarray(rows, np.float64), n_jobs=1)
    want = booster.predict(rows, num_threads=0)
    if not np.allclose(got, want, rtol=1e-6, atol=1e-6):
        raise ValueError(f"its scores differ from LightGBM's by up to {np.abs(got - want).max():.3g} on {len(rows)} rows")
    return model


class BoosterScorer:
    """Scores rows with a LightGBM booster: LightGBM's predict until ``compile_after_rows``
    rows have been scored (or from the first rows, once :meth:`expect` was told of at least
    ``COMPILE_PAYS_AFTER_ROWS``), the compiled forest after that, once it has scored the rows
    at hand as LightGBM does (if compiling fails or the scores differ, LightGBM's predict
    stays, with a warning naming why)."""

    def __init__(self, booster, compile_after_rows: int | None = None):
        self.booster = booster
        self.compile_after_rows = COMPILE_AFTER_ROWS if compile_after_rows is None else compile_after_rows
        self.rows_scored = 0
        self.expected_rows = 0
        self.compiled = None
        self._failed = False

    def expect(self, rows: int) -> None:
        """The job is about to score about ``rows`` rows: at ``COMPILE_PAYS_AFTER_ROWS`` or more
        the forest is compiled before the next rows, not after ``compile_after_rows``."""
        self.expected_rows = int(rows)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        due = self.rows_scored + len(rows) > self.compile_after_rows or self.expected_rows >= COMPILE_PAYS_AFTER_ROWS
        if self.compiled is None and not self._failed and due:
            try:
                self.compiled = checked(compile_booster(self.booster), self.booster, rows[:CHECK_ROWS])
            except Exception as error:  # noqa: BLE001 - any compiler failure or mismatch: keep scoring, slower
                self._failed = True
                warnings.warn(f"the ranker could not be compiled ({type(error).__name__}: {error}); scoring with LightGBM's predict", RuntimeWarning, stacklevel=2)
        self.rows_scored += len(rows)
        if self.compiled is not None:  # by blocks: each block's float64 copy stays in cache
            out = np.empty(len(rows), np.float64)
            for lo in range(0, len(rows), PREDICT_BLOCK_ROWS):
                out[lo : lo + PREDICT_BLOCK_ROWS] = self.compiled.predict(np.ascontiguousarray(rows[lo : lo + PREDICT_BLOCK_ROWS], np.float64), n_jobs=scoring_threads())
            return out
        # on every core OpenMP gives (OMP_NUM_THREADS): rows score independently, so the scores do not depend on it
        return self.booster.predict(rows, num_threads=0)
