"""`stylerec index ...` and `stylerec candidates`: the FAISS index and batch candidate
generation (recsys/serving.py), tracked in MLflow; with --nproc, across torchrun ranks."""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from pathlib import Path

import click

from data.dataset import DatasetError
from data.io import FolderLockError, folder_lock
from pipelines import tracking
from pipelines.common import load_ds
from pipelines.env import launch
from pipelines.workspace import index_dir
from recsys.index import IndexConfig
from recsys.serving import CandidateJob, CandidateJobError, add_new_items, build_or_load_index, generate_candidates, read_exclusions
from recsys.sharding import DistContext

model_option = click.option(
    "--model", "model_uri", default=None,
    help=f"a model URI or bundle folder [default: {tracking.PRODUCTION_URI} when registered (`stylerec train --deploy`), else {tracking.CHAMPION_URI}]",
)


def _serving_uri(uri: str | None, model_name: str = tracking.MODEL_NAME, echo: bool = True) -> str:
    """``uri`` as given, or the serving default of the registered ``model_name`` (production
    when registered, else champion), said aloud (``--model``, ``--ranker``)."""
    if uri is not None:
        return uri
    resolved = tracking.serving_alias_uri(model_name)
    if echo:
        what = "ranker" if model_name == tracking.RANKER_NAME else "model"
        click.echo(f"{what}: {resolved} (the default: {tracking.PRODUCTION!r} when registered, else {tracking.CHAMPION!r})")
    return resolved


index_kind_choice = click.Choice(["auto", "flat", "ivf", "hnsw"])


@click.group("index")
def index_group() -> None:
    """The FAISS candidate index over item-tower embeddings."""


def _index_config(kind: str, k: int, target: float) -> IndexConfig:
    return IndexConfig(kind=kind, k=k, target_recall=target)


@index_group.command("build")
@click.argument("dataset")
@model_option
@click.option("--kind", type=index_kind_choice, default="auto", show_default=True)
@click.option("--k", type=click.IntRange(min=1), default=100, show_default=True, help="K of the recall target")
@click.option("--target-recall", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True)
@click.pass_context
def index_build(ctx, dataset, model_uri, kind, k, target_recall):
    """Build (and tune) the index for DATASET's items under MODEL."""
    ds = load_ds(ctx, dataset)
    lm = tracking.load_served_model(ds, _serving_uri(model_uri))
    folder = index_dir(ctx.obj["workdir"], ds.manifest.name, lm.version)
    idx, _ = build_or_load_index(lm, folder, _index_config(kind, k, target_recall), rebuild=True)
    m = idx.manifest
    click.echo(f"{m.kind} index of {m.n_items:,} items (dim {m.dim}, inner product) params {m.params}; recall@{m.recall_k} vs exact {m.achieved_recall:.3f} -> {folder}")


@index_group.command("add-items")
@click.argument("dataset")
@model_option
@click.pass_context
def index_add_items(ctx, dataset, model_uri):
    """Embed items that arrived after training (content only) and add them to the index."""
    ds = load_ds(ctx, dataset)
    try:
        lm = tracking.load_served_model(ds, _serving_uri(model_uri), allow_new_items=True)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    folder = index_dir(ctx.obj["workdir"], ds.manifest.name, lm.version)
    try:
        idx, added = add_new_items(lm, folder)
    except FileNotFoundError as exc:
        raise click.ClickException(f"{exc}; run `stylerec index build` first") from exc
    click.echo(f"added {added:,} new items (index now {idx.manifest.n_items:,}) -> {folder}")


@click.command("candidates")
@click.argument("dataset")
@model_option
@click.option("--k", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="[default: <workdir>/candidates/<dataset>]")
@click.option("--chunk-size", type=click.IntRange(min=1), default=2048, show_default=True, help="users per part (bounds memory)")
@click.option("--keep-bought", is_flag=True, help="do not drop items the user already bought")
@click.option("--exclude", type=click.Path(exists=True, dir_okay=False), default=None, help="parquet/CSV with an item_id column: never recommend these")
@click.option("--steer-style-item", default=None, help="mix this item's style direction into every query")
@click.option("--steer", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option(
    "--explain", is_flag=True,
    help="add, per candidate, the user's history item closest in style (because_item_id, because_style_similarity); "
    "with --rank instead top_contributions: the 3 features that moved the ranker's score most, "
    "a list of {feature, contribution} structs, largest |contribution| first (LightGBM pred_contrib; all contributions plus the bias sum to score)",
)
@click.option("--index-kind", type=index_kind_choice, default="auto", show_default=True)
@click.option("--nproc", type=click.IntRange(min=1), default=None, help="split the users between N ranks of this machine (torchrun)")
@click.option(
    "--rank", "ranked", is_flag=True,
    help="write the ranked lists instead: the union of the ranker's candidate sources re-ordered by the registered ranker "
    "(score = its raw score, sources = the sources that returned the item); the ranker brings its own two-tower, so --model, --index-kind "
    "and --steer-style-item do not apply [default --out: <workdir>/candidates/<dataset>-ranked]",
)
@click.option("--ranker", "ranker_uri", default=None, help=f"the registered ranker --rank serves [default: models:/{tracking.RANKER_NAME}@{tracking.PRODUCTION} when registered, else @{tracking.CHAMPION}]")
@click.pass_context
def candidates_cmd(ctx, dataset, model_uri, k, out, chunk_size, keep_bought, exclude, steer_style_item, steer, explain, index_kind, nproc, ranked, ranker_uri):
    """Top-K candidates for every user of DATASET, in resumable parquet parts
    (user_id, rank, item_id, score, model_version; with --rank also sources).

    Started by torchrun (or with --nproc N), each rank writes its share of the parts."""
    if ranked and steer_style_item is not None:
        raise click.UsageError("--rank serves the ranked lists without steering: drop --steer-style-item")
    if ranked and nproc is not None:
        # every rank must serve the same ranker: the default is resolved once, here
        ctx.params["ranker_uri"] = _serving_uri(ranker_uri, tracking.RANKER_NAME)
    if nproc is not None:
        args = ["--workdir", str(ctx.obj["workdir"]), "candidates", *_forwarded(ctx)]
        ctx.exit(launch(nproc, "pipelines.cli", args))
    ranks = DistContext.from_env(backend="gloo")
    try:
        if ranked:
            _ranked_candidates(ctx, ranks, dataset, ranker_uri, k, out, chunk_size, keep_bought, exclude, explain)
        else:
            _candidates(ctx, ranks, dataset, model_uri, k, out, chunk_size, keep_bought, exclude, steer_style_item, steer, explain, index_kind)
    finally:
        ranks.close()


def _job_lock(out: Path, ranks: DistContext):
    """One job per --out folder: rank 0 (or the lone process) holds the folder's lock from
    before the job is pinned until every rank is done (the summary waits for them all); the
    other ranks of the same job share the folder. Another job's rank 0 then stops with the
    holder's PID, and its other ranks never start writing (they wait for it to pin the job)."""
    return folder_lock(out, what="stylerec candidates") if ranks.is_main else contextlib.nullcontext()


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


def _candidates(ctx, ranks: DistContext, dataset, model_uri, k, out, chunk_size, keep_bought, exclude, steer_style_item, steer, explain, index_kind):
    try:
        ds = load_ds(ctx, dataset)
        lm = tracking.load_served_model(ds, _serving_uri(model_uri, echo=ranks.is_main))
        excluded, unknown, sha = read_exclusions(Path(exclude) if exclude else None, lm.fs)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    if unknown:
        click.echo(f"exclusion list: {unknown:,} item id(s) not in the catalogue (ignored)")
    folder = index_dir(ctx.obj["workdir"], ds.manifest.name, lm.version)
    idx, built = build_or_load_index(lm, folder, _index_config(index_kind, k, 0.95), ranks=ranks)
    m = idx.manifest
    if ranks.is_main:
        click.echo(f"index: {'built' if built else 'loaded'} {m.kind}, {m.n_items:,} items, params {m.params}, recall@{m.recall_k} {m.achieved_recall:.3f}")
    out = Path(out) if out else ctx.obj["workdir"] / "candidates" / ds.manifest.name
    job = CandidateJob(k, chunk_size, not keep_bought, steer_style_item, steer if steer_style_item else 0.0, explain, sha)
    try:
        with _job_lock(out, ranks):
            summary = generate_candidates(lm, idx, out, job, excluded, ranks=ranks)
    except (CandidateJobError, FolderLockError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not ranks.is_main:
        return
    uri = tracking.log_candidates(ds.manifest.name, {**{f"job.{k2}": v for k2, v in asdict(job).items()}, "model_version": lm.version, "index_kind": m.kind, "out": str(out)}, summary)
    click.echo(
        f"candidates: {summary['users']:,} users in {summary['parts']} parts ({summary['parts_reused']} re-used) "
        f"in {summary['seconds']:.1f}s ({summary['users_per_s']:,.0f} users/s); coverage {summary.get('catalogue_coverage', float('nan')):.3f}, "
        f"mean score {summary.get('mean_score', float('nan')):.4f} -> {out} (MLflow {uri})"
    )


def _ranked_candidates(ctx, ranks: DistContext, dataset, ranker_uri, k, out, chunk_size, keep_bought, exclude, explain) -> None:
    """`candidates --rank`: the registered ranker's lists for every user; under torchrun each
    rank loads the ranker and fits its sources, and writes its share of the parts."""
    from pipelines.ranker_store import load_ranker
    from recsys.rank.serving import generate_ranked_candidates

    try:
        ds = load_ds(ctx, dataset)
        served = load_ranker(ds, _serving_uri(ranker_uri, tracking.RANKER_NAME, echo=ranks.is_main))
        excluded, unknown, sha = read_exclusions(Path(exclude) if exclude else None, served.fs)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    if unknown and ranks.is_main:
        click.echo(f"exclusion list: {unknown:,} item id(s) not in the catalogue (ignored)")
    if ranks.is_main:
        click.echo(f"ranker {served.version} over two-tower {served.two_tower.version}; sources {', '.join(served.recommender.gen.source_names)}")
    out = Path(out) if out else ctx.obj["workdir"] / "candidates" / f"{ds.manifest.name}-ranked"
    job = CandidateJob(k, chunk_size, not keep_bought, None, 0.0, explain, sha)
    try:
        with _job_lock(out, ranks):
            summary = generate_ranked_candidates(served, out, job, excluded, ranks=ranks)
    except (CandidateJobError, FolderLockError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not ranks.is_main:
        return
    params = {**{f"job.{key}": v for key, v in asdict(job).items()}, "ranker_version": served.version, "model_version": served.two_tower.version, "out": str(out)}
    uri = tracking.log_candidates(ds.manifest.name, params, summary)
    click.echo(
        f"ranked lists: {summary['users']:,} users in {summary['parts']} parts ({summary['parts_reused']} re-used) "
        f"in {summary['seconds']:.1f}s ({summary['users_per_s']:,.0f} users/s); coverage {summary.get('catalogue_coverage', float('nan')):.3f}, "
        f"mean score {summary.get('mean_score', float('nan')):.4f} -> {out} (MLflow {uri})"
    )
