"""`stylerec demo`: the end-to-end job on the embedded default (StyleMart demo preset).

A re-run re-uses the data, embeddings, text vectors, indexes, the model registered for this
dataset and config, and the ranker registered for them and its config. Each stage is one
function; the demo calls the other jobs' entry points (ab_job, evaluate_job, rank_job,
style_jobs) and the library.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import click
import numpy as np
import polars as pl

from data.io import write_json
from data.split import SplitConfig, load_or_create_split
from data.stylemart import generate
from data.summary import format_summary, summarise
from data.validate import ValidatedDataset, ValidationConfig, validate_dataset
from pipelines import tracking
from pipelines.ab_job import report_simulation, simulate
from pipelines.evaluate_job import run_evaluation
from pipelines.rank_job import train_ranker
from pipelines.ranker_store import find_ranker
from pipelines.style_jobs import format_check, run_and_save_style_check, write_gallery
from pipelines.workspace import datasets_dir, index_dir, version_slug
from recsys.config import load_run_config
from recsys.index import IndexConfig
from recsys.rank.config import RankConfig, load_rank_config
from recsys.rank.run import format_recall, format_test
from recsys.reporting import format_metrics
from recsys.serving import CandidateJob, LoadedModel, build_or_load_index, generate_candidates
from recsys.training_run import run_key, split_identity
from style.embeddings import STYLE_DIR, embed_catalogue
from style.encoder import MagentaStyleEncoder
from style.transfer import MagentaStyleTransfer


@contextmanager
def _stage(title: str):
    click.secho(f"\n== {title}", bold=True)
    t0 = time.perf_counter()
    yield
    click.echo(f"({time.perf_counter() - t0:.1f}s)")


def example_users(ds, lm, cand_dir, n: int = 3, show: int = 5) -> str:
    """A few users with their recent history and their first candidates, in words."""
    titles = dict(zip(ds.items["item_id"], ds.items["title"], strict=True))
    df = pl.read_parquet(cand_dir / "part-00000.parquet")
    lines = []
    for user in df["user_id"].unique(maintain_order=True).head(n):
        hist = ds.interactions.filter(pl.col("user_id") == user).sort("ts", descending=True).head(show)
        lines.append(f"user {user}: recently " + "; ".join(f"{e} '{titles[i]}'" for i, e in zip(hist["item_id"], hist["event"], strict=True)))
        for row in df.filter(pl.col("user_id") == user).head(show).iter_rows(named=True):
            because = f" (matches the style of '{titles[row['because_item_id']]}')" if row.get("because_item_id") else ""
            lines.append(f"   {row['rank']:>3}. {titles[row['item_id']]} [{row['score']:.3f}]{because}")
    return "\n".join(lines)


def prepare_data(root: Path, preset: str, seed: int) -> ValidatedDataset:
    with _stage(f"generate StyleMart '{preset}' (seed {seed})"):
        manifest = generate(root, preset, seed)
        click.echo(f"{root}: " + ", ".join(f"{k}={v:,}" for k, v in manifest.row_counts.items()))
    with _stage("validate (images decoded)"):
        ds = validate_dataset(root, ValidationConfig(check_images=True))
        click.echo(ds.report.format())
    with _stage("split (saved in the dataset; re-used by every later job)"):
        split = load_or_create_split(ds, SplitConfig(test_fraction=0.15, val_days=7))
        click.echo(format_summary(summarise(ds, split)))
    return ds


def style_stages(ds: ValidatedDataset) -> Path:
    """Style embeddings, the gallery and the style check; returns the gallery's path."""
    root = ds.dir.root
    with _stage("style embeddings (cached by image hash)"):
        stats = embed_catalogue(root, ds.items, MagentaStyleEncoder())
        click.echo(f"{stats.items:,} items = {stats.embedded:,} embedded + {stats.cached:,} cached + {stats.quarantined:,} quarantined")
    with _stage("style gallery and style check"):
        transfer = MagentaStyleTransfer()
        gallery_png = root / STYLE_DIR / "gallery.png"
        write_gallery(ds, transfer, gallery_png, products=6, n_styles=8, seed=0)
        click.echo(format_check(run_and_save_style_check(ds, transfer)))
    return gallery_png


def train_or_reuse(ds: ValidatedDataset, config, wd: Path) -> tuple[str, str]:
    """The registered model of this dataset, split, config and encoders, trained if there is none; (model URI, train run)."""
    with _stage("train the two-tower model (MLflow experiment stylerec/offline-eval)"):
        earlier = tracking.find_trained(ds.manifest.fingerprint, run_key(ds, config), split_identity(load_or_create_split(ds)))
        if earlier is not None:
            version, train_run = str(earlier.version), earlier.tags.get("run_id", "?")
            click.echo(f"re-using {tracking.MODEL_NAME} version {version}, trained on this dataset with this config (validation Recall@50 {float(earlier.tags['val_recall_50']):.4f}); `stylerec train` trains anew")
        else:
            trained = tracking.train_and_track(ds, config, wd)
            version, train_run = trained.version, trained.run_id
            r = trained.result
            click.echo(f"best epoch {r.best_epoch}, validation Recall@50 {r.best_val_recall_50:.4f}; refit on train+validation")
            click.echo(f"registered {tracking.MODEL_NAME} version {version}; champion {'moved to it' if trained.promoted else 'unchanged'}")
    return f"models:/{tracking.MODEL_NAME}/{version}", train_run


def ranker_or_reuse(ds: ValidatedDataset, rank_config: RankConfig, model_uri: str) -> tuple[str, str]:
    """The ranker registered for this dataset, config and two-tower version, trained if there is none; (ranker URI, its run)."""
    with _stage("ranker: LightGBM over the candidate sources (MLflow experiment stylerec/ranking)"):
        two_tower_version = model_uri.removeprefix("models:/")
        earlier = find_ranker(ds.manifest.fingerprint, rank_config.sha256(), two_tower_version)
        if earlier is not None:
            version, run = str(earlier.version), earlier.tags.get("run_id", "?")
            click.echo(
                f"re-using {tracking.RANKER_NAME} version {version}, trained on this dataset over {two_tower_version} with this config "
                f"(validation NDCG@10 {float(earlier.tags.get('val_ndcg_10', 'nan')):.4f}); `stylerec rank train` trains anew"
            )
        else:
            trained = train_ranker(ds, rank_config, model_uri)
            version, run = str(trained.version), trained.run_id
            click.echo(format_recall(trained.result.recall))
            click.echo(format_test(trained.result.test))
            click.echo(trained.registered_line)
    return f"models:/{tracking.RANKER_NAME}/{version}", run


SINGLE_RUN_NOTE = (
    "(one training run: another seed, or the same seed on another CPU, lands elsewhere in the spread that "
    "benchmarks/quality.py measures over seeds; the README's table reports that mean ± sd)"
)


def offline_evaluation(ds: ValidatedDataset, config, model_uri: str, wd: Path) -> tuple[Path, str, str]:
    """(report path, MLflow run, tracking URI)."""
    with _stage("offline evaluation against the baselines (same split, same protocol)"):
        results, eval_run, uri = run_evaluation(ds, config, model_uri=model_uri, echo=click.echo)
        report = wd / "reports" / f"offline-eval-{ds.manifest.name}.json"
        write_json({"dataset": ds.manifest.name, "run_id": eval_run, "results": results}, report, strict=True)
        click.echo(format_metrics(results))
        click.echo(SINGLE_RUN_NOTE)
    return report, eval_run, uri


def candidates(ds: ValidatedDataset, model_uri: str, wd: Path) -> Path:
    with _stage("FAISS index and top-100 candidates for every user"):
        lm: LoadedModel = tracking.load_served_model(ds, model_uri)
        index, _ = build_or_load_index(lm, index_dir(wd, ds.manifest.name, lm.version), IndexConfig())
        m = index.manifest
        click.echo(f"{m.kind} index, {m.n_items:,} items, recall@{m.recall_k} vs exact {m.achieved_recall:.3f}")
        cand_dir = wd / "candidates" / ds.manifest.name / version_slug(lm.version)
        summary = generate_candidates(lm, index, cand_dir, CandidateJob(k=100, explain=True), np.zeros(lm.fs.items.n, bool))
        click.echo(
            f"{summary['users']:,} users, {summary['parts']} parts, {summary['seconds']:.1f}s ({summary['users_per_s']:,.0f} users/s), "
            f"catalogue coverage {summary['catalogue_coverage']:.3f}, mean score {summary['mean_score']:.4f}"
        )
        click.echo(example_users(ds, lm, cand_dir, n=3))
    return cand_dir


def conversion_power(report: dict) -> str:
    """The conversion comparison's power, in words (the report has it per treatment arm)."""
    lines = []
    for arm, block in report["metrics"].get("conversion", {}).items():
        base = block["mean"]["control"]
        mde = block.get("mde_at_80_power", float("nan"))
        lines.append(
            f"conversion {block['mean']['control']:.4f} -> {block['mean']['treatment']:.4f} ({arm}, n = {block['n']['control']:,} + {block['n']['treatment']:,}): "
            f"power at the observed lift {block['power_at_observed']:.0%}; detectable at 80 % power: {mde:+.4f} absolute ({mde / base if base else float('nan'):+.1%} relative)"
        )
    return "\n".join(lines)


def ab_test(ds: ValidatedDataset, model_uri: str, ranker_uri: str, wd: Path) -> tuple[dict[str, Path], str]:
    """Two simulated experiments against ALS: the two-tower, and the ranker's lists;
    ({arm: report.html}, MLflow run of the first report)."""
    htmls, runs = {}, []
    with _stage("simulated A/B tests on StyleMart's ground-truth shoppers: two-tower vs ALS, ranked vs ALS"):
        for label, spec in (("two-tower", model_uri), ("ranked", f"ranked:{ranker_uri}")):
            ab_dir = wd / "ab" / f"{ds.manifest.name}-als-vs-{label}"
            assignments, events, sim = simulate(ds, "als", spec, n_users=4000, days=14, seed=0, out=ab_dir)
            e = sim["expected_purchases_per_user"]
            click.echo(f"expected purchases per user: ALS {e['control']:.4f}, {label} {e['treatment']:.4f} ({e['treatment'] / e['control'] - 1:+.1%})")
            report, _, htmls[label], run = report_simulation(assignments, events, ab_dir, days=14)
            runs.append(run)
            click.echo(f"{label} vs ALS: {report['verdict']}")
            click.echo(conversion_power(report))
        click.echo(SINGLE_RUN_NOTE)
    return htmls, runs[0]


@click.command("demo")
@click.option("--preset", default="demo", show_default=True, help="StyleMart preset")
@click.option("--seed", type=int, default=42, show_default=True)
@click.pass_context
def demo(ctx: click.Context, preset: str, seed: int) -> None:
    """Run every stage on synthetic StyleMart data and print where the outputs are."""
    wd = ctx.obj["workdir"]
    root = datasets_dir(wd) / f"stylemart-{preset}"
    started = time.perf_counter()
    ds = prepare_data(root, preset, seed)
    gallery_png = style_stages(ds)
    config = load_run_config(None)
    model_uri, train_run = train_or_reuse(ds, config, wd)
    ranker_uri, rank_run = ranker_or_reuse(ds, load_rank_config(None), model_uri)
    report, eval_run, uri = offline_evaluation(ds, config, model_uri, wd)
    cand_dir = candidates(ds, model_uri, wd)
    ab_htmls, ab_run = ab_test(ds, model_uri, ranker_uri, wd)

    click.secho(f"\ndemo finished in {time.perf_counter() - started:.1f}s; outputs:", bold=True)
    for label, path in (
        ("dataset", root),
        ("validation report", root / "validation_report.json"),
        ("quarantine", root / "quarantine"),
        ("split", root / "split"),
        ("ground truth", root / "ground_truth"),
        ("style embeddings", root / STYLE_DIR / "style_embeddings.parquet"),
        ("style gallery", gallery_png),
        ("style check", root / STYLE_DIR / "style_check.json"),
        ("offline evaluation", report),
        ("candidates", cand_dir),
        *((f"A/B report {arm}", html) for arm, html in ab_htmls.items()),
    ):
        click.echo(f"  {label:<20} {path}")
    click.echo(f"  {'MLflow runs':<20} train {train_run}, ranker {rank_run}, evaluate {eval_run}, A/B report {ab_run.split()[0]} in {uri}")
    click.echo(f"  {'MLflow UI':<20} {tracking.ui_hint(uri)}")
