"""Serving a trained two-tower model: load it for a dataset, index its items, and write
every user's candidates.

Candidates stream over users in chunks: user tower -> FAISS search (over-fetching to
survive filtering) -> drop already-bought and excluded items -> ``part-NNNNN.parquet``
written atomically. A re-run continues after the last finished part; ``_job.json`` pins
the parameters so parts of two different jobs never mix.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from data.dataset import DatasetError
from data.io import write_json, write_parquet
from data.validate import ValidatedDataset
from recsys.bundle import load_for_dataset
from recsys.candidates import explain_by_style, filter_top_k, steer_queries, style_direction
from recsys.features import FeatureSet
from recsys.index import CandidateIndex, IndexConfig, IndexMismatchError
from recsys.model import TwoTower
from recsys.sharding import DistContext
from recsys.train import TwoTowerRecommender

JOB_FILE = "_job.json"
SUMMARY_FILE = "_SUMMARY.json"


class CandidateJobError(ValueError):
    """A candidate job that cannot run as asked (unknown steering item, a folder of another job)."""


@dataclass(frozen=True)
class CandidateJob:
    k: int = 100
    chunk_size: int = 2048
    drop_bought: bool = True
    steer_item: str | None = None
    steer: float = 0.0
    explain: bool = False
    exclude_sha256: str | None = None


@dataclass
class LoadedModel:
    model: TwoTower
    fs: FeatureSet
    version: str
    recommender: TwoTowerRecommender

    @property
    def query_time(self) -> int:
        """Serving time: just after the last event in the data."""
        return int(self.fs.ev_ts.max()) + 1


def load_model(folder: Path, version: str, ds: ValidatedDataset, allow_new_items: bool = False) -> LoadedModel:
    """The model bundle in ``folder`` (labelled ``version``) with its features for ``ds``."""
    net, fs = load_for_dataset(folder, ds, allow_new_items)
    return LoadedModel(net, fs, version, TwoTowerRecommender(net, fs))


def build_or_load_index(lm: LoadedModel, folder: Path, config: IndexConfig, rebuild: bool = False, ranks: DistContext | None = None) -> tuple[CandidateIndex, bool]:
    """The index of ``lm``'s items saved in ``folder`` (built and tuned when missing or stale); (index, built).

    Under torchrun rank 0 builds (and tunes) the index first, the others then load it."""
    return (ranks or DistContext.single()).main_first(lambda: _build_or_load_index(lm, folder, config, rebuild))


def _build_or_load_index(lm: LoadedModel, folder: Path, config: IndexConfig, rebuild: bool) -> tuple[CandidateIndex, bool]:
    items = lm.recommender.item_matrix().numpy()
    if not rebuild:
        try:
            idx = CandidateIndex.load(folder, model_version=lm.version, dim=items.shape[1])
            if set(idx.ids.tolist()) >= set(lm.fs.items.ids.tolist()):
                return idx, False
        except (FileNotFoundError, IndexMismatchError):
            pass
    rng = np.random.default_rng(config.seed)
    users = np.sort(rng.choice(lm.fs.n_users, min(config.tune_queries, lm.fs.n_users), replace=False))
    queries = lm.recommender.user_matrix(users, lm.query_time).numpy()
    idx = CandidateIndex.build(items, lm.fs.items.ids, queries, config, model_version=lm.version)
    idx.save(folder)
    return idx, True


def add_new_items(lm: LoadedModel, folder: Path) -> tuple[CandidateIndex, int]:
    """Embed the items the saved index lacks (content only) and add them; (index, items added)."""
    idx = CandidateIndex.load(folder, model_version=lm.version)
    new = np.flatnonzero(~np.isin(lm.fs.items.ids, idx.ids))
    if len(new):
        vecs = lm.recommender.item_matrix().numpy()[new]
        idx.add(vecs, lm.fs.items.ids[new])
        idx.save(folder)
    return idx, len(new)


def read_exclusions(path: Path | None, fs: FeatureSet) -> tuple[np.ndarray, int, str | None]:
    """(bool mask over catalogue rows, unknown ids count, file sha256) of an exclusion list."""
    mask = np.zeros(fs.items.n, bool)
    if path is None:
        return mask, 0, None
    df = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, schema_overrides={"item_id": pl.String})
    if "item_id" not in df.columns:
        raise DatasetError(f"{path}: exclusion list needs an item_id column (has {df.columns})")
    row = {i: r for r, i in enumerate(fs.items.ids.tolist())}
    ids = df["item_id"].cast(pl.String).drop_nulls().unique().to_list()
    known = [row[i] for i in ids if i in row]
    mask[known] = True
    return mask, len(ids) - len(known), hashlib.sha256(path.read_bytes()).hexdigest()


def _pin_job(out: Path, params: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    job_file = out / JOB_FILE
    if job_file.is_file():
        previous = json.loads(job_file.read_text())
        if previous != json.loads(json.dumps(params, default=str)):
            raise CandidateJobError(f"{out} holds candidates of a different job ({job_file}); choose another --out or delete it")
    else:
        write_json(params, job_file)


def _steer_vector(lm: LoadedModel, job: CandidateJob) -> np.ndarray | None:
    if job.steer_item is None:
        return None
    fs = lm.fs
    rows = np.flatnonzero(fs.items.ids == job.steer_item)
    if not len(rows):
        raise CandidateJobError(f"unknown --steer-style-item {job.steer_item!r}")
    return style_direction(lm.recommender.item_matrix().numpy(), fs.items.style, int(rows[0]))


def _feature_rows_of_index(index: CandidateIndex, fs: FeatureSet) -> np.ndarray:
    """Catalogue row of each index row (-1: an item the features lack)."""
    index_row = {i: r for r, i in enumerate(index.ids.tolist())}
    to_fs_row = np.array([index_row.get(i, -1) for i in fs.items.ids.tolist()])
    fs_row_of_index = np.full(len(index.ids), -1, np.int64)
    fs_row_of_index[to_fs_row[to_fs_row >= 0]] = np.flatnonzero(to_fs_row >= 0)
    return fs_row_of_index


def _candidate_part(
    lm: LoadedModel, index: CandidateIndex, fs_row_of_index: np.ndarray, users: np.ndarray, job: CandidateJob, excluded: np.ndarray, steer_vec: np.ndarray | None
) -> pl.DataFrame:
    """The top-k candidates of one chunk of users (rows without an item dropped)."""
    fs = lm.fs
    queries = lm.recommender.user_matrix(users, lm.query_time).numpy()
    if steer_vec is not None:
        queries = steer_queries(queries, steer_vec, job.steer)
    own = fs.items_before(users, lm.query_time, event="purchase") if job.drop_bought else [np.zeros(0, np.int64)] * len(users)
    fetch = min(index.manifest.n_items, job.k + int(excluded.sum()) + max((len(o) for o in own), default=0))
    scores, idx_rows = index.search(queries, fetch)
    rows = np.where(idx_rows >= 0, fs_row_of_index[np.maximum(idx_rows, 0)], -1)
    top, top_scores = filter_top_k(rows, scores, job.k, excluded, own)
    table = {
        "user_id": np.repeat(fs.user_ids[users], job.k),
        "rank": np.tile(np.arange(1, job.k + 1, dtype=np.int32), len(users)),
        "item_id": np.where(top.ravel() >= 0, fs.items.ids[np.maximum(top.ravel(), 0)], None),
        "score": top_scores.ravel(),
    }
    if job.explain:
        ub = fs.user_batch(users, np.full(len(users), lm.query_time))
        splits = np.split(ub.hist_items, np.cumsum(ub.hist_lengths)[:-1])
        because, sims = explain_by_style(top, [np.unique(h) for h in splits], fs.items.style, fs.items.has_style)
        table["because_item_id"] = np.where(because.ravel() >= 0, fs.items.ids[np.maximum(because.ravel(), 0)], None)
        table["because_style_similarity"] = sims.ravel()
    return pl.DataFrame(table).with_columns(pl.lit(lm.version).alias("model_version")).filter(pl.col("item_id").is_not_null())


def _summarise(fs: FeatureSet, model_version: str, out: Path, job: CandidateJob, n_parts: int, counts: list[float], seconds: float, ranks: DistContext) -> dict:
    """Totals over every rank; rank 0 adds the catalogue statistics and writes the summary once all parts exist."""
    written, skipped, users_done = (int(v) for v in ranks.total(counts))
    (seconds,) = ranks.total([seconds], op="max")
    ranks.barrier()  # every rank's parts are on disk
    complete = all((out / f"part-{p:05d}.parquet").is_file() for p in range(n_parts))
    summary = {"users": int(fs.n_users), "parts": n_parts, "parts_written": written, "parts_reused": skipped, "complete": complete, "seconds": seconds, "users_per_s": users_done / max(seconds, 1e-9)}
    if complete and ranks.is_main:
        all_parts = pl.scan_parquet(str(out / "part-*.parquet"))
        stats = all_parts.select(pl.col("item_id").n_unique().alias("items"), pl.col("score").mean().alias("mean_score"), pl.len().alias("rows")).collect()
        summary.update(catalogue_coverage=stats["items"][0] / fs.items.n, mean_score=float(stats["mean_score"][0]), rows=int(stats["rows"][0]), model_version=model_version, k=job.k)
        write_json(summary, out / SUMMARY_FILE)
    return summary


def write_parts(
    fs: FeatureSet,
    model_version: str,
    out: Path,
    job: CandidateJob,
    params: dict,
    make_part: Callable[[np.ndarray], pl.DataFrame],
    progress: bool = True,
    max_parts: int | None = None,
    ranks: DistContext | None = None,
    expect_users: Callable[[int], None] | None = None,
) -> dict:
    """Pin the job (``params``) in ``out``, write ``make_part(users)`` for every chunk of users
    not written yet, and summarise; returns the summary. Any candidate job's loop (two-tower
    retrieval, the ranked lists) runs through here. ``expect_users`` is first told how many
    users this process is about to score."""
    ranks = ranks or DistContext.single()
    ranks.main_first(lambda: _pin_job(out, params))  # rank 0 pins the job, the others check theirs against it
    n_parts = -(-fs.n_users // job.chunk_size)
    if expect_users is not None:
        todo = [p for p in range(ranks.rank, n_parts, ranks.world_size) if not (out / f"part-{p:05d}.parquet").is_file()][:max_parts]
        expect_users(sum(min((p + 1) * job.chunk_size, fs.n_users) - p * job.chunk_size for p in todo))
    started = time.perf_counter()
    written = skipped = users_done = 0
    for part in tqdm(range(ranks.rank, n_parts, ranks.world_size), desc="candidates", unit="part", disable=not (progress and ranks.is_main) or None):
        path = out / f"part-{part:05d}.parquet"
        if path.is_file():
            skipped += 1
            continue
        if max_parts is not None and written >= max_parts:
            break
        users = np.arange(part * job.chunk_size, min((part + 1) * job.chunk_size, fs.n_users))
        write_parquet(make_part(users), path)
        written += 1
        users_done += len(users)
    return _summarise(fs, model_version, out, job, n_parts, [written, skipped, users_done], time.perf_counter() - started, ranks)


def generate_candidates(
    lm: LoadedModel,
    index: CandidateIndex,
    out: Path,
    job: CandidateJob,
    excluded: np.ndarray,
    progress: bool = True,
    max_parts: int | None = None,
    ranks: DistContext | None = None,
) -> dict:
    """Write every user's top-k candidates to ``out``; returns the summary. Resumable.

    Under torchrun each rank writes the parts ``rank, rank + world, ...``: the same files,
    with the same users in each, as one process writes. Rank 0 pins the job first and
    writes the summary once every rank is done."""
    fs = lm.fs
    params = {**asdict(job), "model_version": lm.version, "index": asdict(index.manifest), "dataset": fs.fingerprint, "query_time": lm.query_time}
    steer_vec = _steer_vector(lm, job)
    fs_row_of_index = _feature_rows_of_index(index, fs)
    return write_parts(fs, lm.version, out, job, params, lambda users: _candidate_part(lm, index, fs_row_of_index, users, job, excluded, steer_vec), progress, max_parts, ranks)
