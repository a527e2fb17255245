"""`stylerec index ...` and `stylerec candidates`: the FAISS index and batch candidate generation.

Candidates stream over users in chunks: user tower -> FAISS search (over-fetching to
survive filtering) -> drop already-bought and excluded items -> ``part-NNNNN.parquet``
written atomically. A re-run continues after the last finished part; ``_job.json`` pins
the parameters so parts of two different jobs never mix.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np
import polars as pl
from tqdm.auto import tqdm

from data.dataset import DatasetError
from data.io import write_json, write_parquet
from data.validate import ValidatedDataset, load_dataset
from pipelines import tracking
from pipelines.ranks import Ranks, launch
from pipelines.workspace import resolve_dataset
from recsys.bundle import load_for_dataset
from recsys.candidates import explain_by_style, filter_top_k, steer_queries, style_direction
from recsys.features import FeatureSet
from recsys.index import CandidateIndex, IndexConfig, IndexMismatchError
from recsys.model import TwoTower
from recsys.train import TwoTowerRecommender

JOB_FILE = "_job.json"
SUMMARY_FILE = "_SUMMARY.json"


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


def load_model(ds: ValidatedDataset, model: str, allow_new_items: bool = False) -> LoadedModel:
    folder, version = tracking.fetch_bundle(model)
    net, fs = load_for_dataset(folder, ds, allow_new_items)
    return LoadedModel(net, fs, version, TwoTowerRecommender(net, fs))


def index_dir(workdir: Path, ds: ValidatedDataset, version: str) -> Path:
    return workdir / "indexes" / ds.manifest.name / version.replace("/", "-").replace(":", "-")


def build_or_load_index(lm: LoadedModel, folder: Path, config: IndexConfig, rebuild: bool = False) -> tuple[CandidateIndex, bool]:
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


def read_exclusions(path: Path | None, fs: FeatureSet) -> tuple[np.ndarray, int, str | None]:
    """(bool mask over catalogue rows, unknown ids count, file sha256) of an exclusion list."""
    mask = np.zeros(fs.items.n, bool)
    if path is None:
        return mask, 0, None
    import hashlib

    df = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, schema_overrides={"item_id": pl.String})
    if "item_id" not in df.columns:
        raise DatasetError(f"{path}: exclusion list needs an item_id column (has {df.columns})")
    row = {i: r for r, i in enumerate(fs.items.ids.tolist())}
    ids = df["item_id"].cast(pl.String).drop_nulls().unique().to_list()
    known = [row[i] for i in ids if i in row]
    mask[known] = True
    return mask, len(ids) - len(known), hashlib.sha256(path.read_bytes()).hexdigest()


def generate_candidates(
    lm: LoadedModel,
    index: CandidateIndex,
    out: Path,
    job: CandidateJob,
    excluded: np.ndarray,
    progress: bool = True,
    max_parts: int | None = None,
    ranks: Ranks | None = None,
) -> dict:
    """Write every user's top-k candidates to ``out``; returns the summary. Resumable.

    Under torchrun each rank writes the parts ``rank, rank + world, ...``: the same files,
    with the same users in each, as one process writes. Rank 0 pins the job first and
    writes the summary once every rank is done."""
    fs = lm.fs
    ranks = ranks or Ranks()
    params = {**asdict(job), "model_version": lm.version, "index": asdict(index.manifest), "dataset": fs.fingerprint, "query_time": lm.query_time}
    if ranks.is_main:
        _pin_job(out, params)
    ranks.barrier()
    if not ranks.is_main:
        _pin_job(out, params)

    steer_vec = None
    if job.steer_item is not None:
        rows = np.flatnonzero(fs.items.ids == job.steer_item)
        if not len(rows):
            raise click.ClickException(f"unknown --steer-style-item {job.steer_item!r}")
        steer_vec = style_direction(lm.recommender.item_matrix().numpy(), fs.items.style, int(rows[0]))
    index_row = {i: r for r, i in enumerate(index.ids.tolist())}
    to_fs_row = np.array([index_row.get(i, -1) for i in fs.items.ids.tolist()])
    fs_row_of_index = np.full(len(index.ids), -1, np.int64)
    fs_row_of_index[to_fs_row[to_fs_row >= 0]] = np.flatnonzero(to_fs_row >= 0)
    n_parts = -(-fs.n_users // job.chunk_size)
    started = time.perf_counter()
    written = skipped = users_done = 0
    for part in tqdm(range(ranks.rank, n_parts, ranks.world), desc="candidates", unit="part", disable=not (progress and ranks.is_main) or None):
        path = out / f"part-{part:05d}.parquet"
        if path.is_file():
            skipped += 1
            continue
        if max_parts is not None and written >= max_parts:
            break
        users = np.arange(part * job.chunk_size, min((part + 1) * job.chunk_size, fs.n_users))
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
        df = pl.DataFrame(table).with_columns(pl.lit(lm.version).alias("model_version")).filter(pl.col("item_id").is_not_null())
        write_parquet(df, path)
        written += 1
        users_done += len(users)
    seconds = time.perf_counter() - started
    written, skipped, users_done = (int(v) for v in ranks.total([written, skipped, users_done]))
    (seconds,) = ranks.total([seconds], op="max")
    ranks.barrier()  # every rank's parts are on disk
    complete = all((out / f"part-{p:05d}.parquet").is_file() for p in range(n_parts))
    summary = {"users": int(fs.n_users), "parts": n_parts, "parts_written": written, "parts_reused": skipped, "complete": complete, "seconds": seconds, "users_per_s": users_done / max(seconds, 1e-9)}
    if complete and ranks.is_main:
        all_parts = pl.scan_parquet(str(out / "part-*.parquet"))
        stats = all_parts.select(pl.col("item_id").n_unique().alias("items"), pl.col("score").mean().alias("mean_score"), pl.len().alias("rows")).collect()
        summary.update(catalogue_coverage=stats["items"][0] / fs.items.n, mean_score=float(stats["mean_score"][0]), rows=int(stats["rows"][0]), model_version=lm.version, k=job.k)
        write_json(summary, out / SUMMARY_FILE)
    return summary


def _pin_job(out: Path, params: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    job_file = out / JOB_FILE
    if job_file.is_file():
        previous = json.loads(job_file.read_text())
        if previous != json.loads(json.dumps(params, default=str)):
            raise click.ClickException(f"{out} holds candidates of a different job ({job_file}); choose another --out or delete it")
    else:
        write_json(params, job_file)


@click.group("index")
def index_group() -> None:
    """The FAISS candidate index over item-tower embeddings."""


def _index_config(kind: str, k: int, target: float) -> IndexConfig:
    return IndexConfig(kind=kind, k=k, target_recall=target)


@index_group.command("build")
@click.argument("dataset")
@click.option("--model", "model_uri", default="models:/stylerec@champion", show_default=True)
@click.option("--kind", type=click.Choice(["auto", "flat", "ivf", "hnsw"]), default="auto", show_default=True)
@click.option("--k", type=int, default=100, show_default=True, help="K of the recall target")
@click.option("--target-recall", type=float, default=0.95, show_default=True)
@click.pass_context
def index_build(ctx, dataset, model_uri, kind, k, target_recall):
    """Build (and tune) the index for DATASET's items under MODEL."""
    ds = load_dataset(resolve_dataset(dataset, ctx.obj["workdir"]))
    lm = load_model(ds, model_uri)
    folder = index_dir(ctx.obj["workdir"], ds, lm.version)
    idx, _ = build_or_load_index(lm, folder, _index_config(kind, k, target_recall), rebuild=True)
    m = idx.manifest
    click.echo(f"{m.kind} index of {m.n_items:,} items (dim {m.dim}, inner product) params {m.params}; recall@{m.recall_k} vs exact {m.achieved_recall:.3f} -> {folder}")


@index_group.command("add-items")
@click.argument("dataset")
@click.option("--model", "model_uri", default="models:/stylerec@champion", show_default=True)
@click.pass_context
def index_add_items(ctx, dataset, model_uri):
    """Embed items that arrived after training (content only) and add them to the index."""
    ds = load_dataset(resolve_dataset(dataset, ctx.obj["workdir"]))
    try:
        lm = load_model(ds, model_uri, allow_new_items=True)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    folder = index_dir(ctx.obj["workdir"], ds, lm.version)
    try:
        idx = CandidateIndex.load(folder, model_version=lm.version)
    except FileNotFoundError as exc:
        raise click.ClickException(f"{exc}; run `stylerec index build` first") from exc
    new = np.flatnonzero(~np.isin(lm.fs.items.ids, idx.ids))
    if len(new):
        vecs = lm.recommender.item_matrix().numpy()[new]
        idx.add(vecs, lm.fs.items.ids[new])
        idx.save(folder)
    click.echo(f"added {len(new):,} new items (index now {idx.manifest.n_items:,}) -> {folder}")


@click.command("candidates")
@click.argument("dataset")
@click.option("--model", "model_uri", default="models:/stylerec@champion", show_default=True)
@click.option("--k", type=int, default=100, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="[default: <workdir>/candidates/<dataset>]")
@click.option("--chunk-size", type=int, default=2048, show_default=True, help="users per part (bounds memory)")
@click.option("--keep-bought", is_flag=True, help="do not drop items the user already bought")
@click.option("--exclude", type=click.Path(exists=True, dir_okay=False), default=None, help="parquet/CSV with an item_id column: never recommend these")
@click.option("--steer-style-item", default=None, help="mix this item's style direction into every query")
@click.option("--steer", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option("--explain", is_flag=True, help="add, per candidate, the user's history item closest in style")
@click.option("--index-kind", type=click.Choice(["auto", "flat", "ivf", "hnsw"]), default="auto", show_default=True)
@click.option("--nproc", type=click.IntRange(min=1), default=None, help="split the users between N ranks of this machine (torchrun)")
@click.pass_context
def candidates_cmd(ctx, dataset, model_uri, k, out, chunk_size, keep_bought, exclude, steer_style_item, steer, explain, index_kind, nproc):
    """Top-K candidates for every user of DATASET, in resumable parquet parts.

    Started by torchrun (or with --nproc N), each rank writes its share of the parts."""
    if nproc is not None:
        args = ["--workdir", str(ctx.obj["workdir"]), "candidates", *_forwarded(ctx)]
        ctx.exit(launch(nproc, "pipelines.cli", args))
    ranks = Ranks.from_env()
    try:
        _candidates(ctx, ranks, dataset, model_uri, k, out, chunk_size, keep_bought, exclude, steer_style_item, steer, explain, index_kind)
    finally:
        ranks.close()


def _forwarded(ctx: click.Context) -> list[str]:
    """This command's arguments as given, less --nproc (for the torchrun relaunch)."""
    args, params = [], ctx.params
    args.append(params["dataset"])
    for param in ctx.command.params:
        name, value = param.name, params.get(param.name)
        if name in ("dataset", "nproc") or value is None or value is False:
            continue
        flag = param.opts[0]
        args += [flag] if value is True else [flag, str(value)]
    return args


def _candidates(ctx, ranks: Ranks, dataset, model_uri, k, out, chunk_size, keep_bought, exclude, steer_style_item, steer, explain, index_kind):
    import mlflow

    try:
        ds = load_dataset(resolve_dataset(dataset, ctx.obj["workdir"]))
        lm = load_model(ds, model_uri)
        excluded, unknown, sha = read_exclusions(Path(exclude) if exclude else None, lm.fs)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    if unknown:
        click.echo(f"exclusion list: {unknown:,} item id(s) not in the catalogue (ignored)")
    folder = index_dir(ctx.obj["workdir"], ds, lm.version)
    if ranks.is_main:  # one rank builds (and tunes) the index, the others load it
        idx, built = build_or_load_index(lm, folder, _index_config(index_kind, k, 0.95))
    ranks.barrier()
    if not ranks.is_main:
        idx, built = build_or_load_index(lm, folder, _index_config(index_kind, k, 0.95))
    m = idx.manifest
    if ranks.is_main:
        click.echo(f"index: {'built' if built else 'loaded'} {m.kind}, {m.n_items:,} items, params {m.params}, recall@{m.recall_k} {m.achieved_recall:.3f}")
    out = Path(out) if out else ctx.obj["workdir"] / "candidates" / ds.manifest.name
    job = CandidateJob(k, chunk_size, not keep_bought, steer_style_item, steer if steer_style_item else 0.0, explain, sha)
    summary = generate_candidates(lm, idx, out, job, excluded, ranks=ranks)
    if not ranks.is_main:
        return
    uri = tracking.setup("stylerec/candidates")
    with mlflow.start_run(run_name=f"candidates-{ds.manifest.name}"):
        mlflow.log_params({**{f"job.{k2}": v for k2, v in asdict(job).items()}, "model_version": lm.version, "index_kind": m.kind, "out": str(out)})
        mlflow.log_metrics({k2: float(v) for k2, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    click.echo(
        f"candidates: {summary['users']:,} users in {summary['parts']} parts ({summary['parts_reused']} re-used) "
        f"in {summary['seconds']:.1f}s ({summary['users_per_s']:,.0f} users/s); coverage {summary.get('catalogue_coverage', float('nan')):.3f}, "
        f"mean score {summary.get('mean_score', float('nan')):.4f} -> {out} (MLflow {uri})"
    )
