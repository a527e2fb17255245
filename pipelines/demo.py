"""`stylerec demo`: the end-to-end job on the embedded default (StyleMart demo preset).

A re-run re-uses the data, embeddings, text vectors, indexes, and the model registered
for this dataset and config.
"""

from __future__ import annotations

import time

import click
import numpy as np
import polars as pl

from data.io import write_json, write_parquet
from data.split import SplitConfig, load_or_create_split
from data.stylemart import generate
from data.summary import format_summary, summarise
from data.validate import ValidationConfig, validate_dataset
from pipelines import tracking
from pipelines.ab_job import build_report, log_report, write_report
from pipelines.ab_simulate import simulate_experiment
from pipelines.candidates_job import CandidateJob, build_or_load_index, generate_candidates, index_dir, load_model
from pipelines.evaluate_job import run_evaluation
from pipelines.style_jobs import format_check, run_and_save_style_check, write_gallery
from pipelines.train_job import config_sha256, format_metrics, train_and_track
from pipelines.workspace import datasets_dir
from recsys.ab_analysis import ABConfig
from recsys.config import load_run_config
from recsys.index import IndexConfig
from style.embeddings import STYLE_DIR, embed_catalogue
from style.encoder import MagentaStyleEncoder
from style.transfer import MagentaStyleTransfer


def _stage(title: str) -> float:
    click.secho(f"\n== {title}", bold=True)
    return time.perf_counter()


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


@click.command("demo")
@click.option("--preset", default="demo", show_default=True, help="StyleMart preset")
@click.option("--seed", type=int, default=42, show_default=True)
@click.pass_context
def demo(ctx: click.Context, preset: str, seed: int) -> None:
    """Run every stage on synthetic StyleMart data and print where the outputs are."""
    wd = ctx.obj["workdir"]
    root = datasets_dir(wd) / f"stylemart-{preset}"
    t0 = started = _stage(f"generate StyleMart '{preset}' (seed {seed})")
    manifest = generate(root, preset, seed)
    click.echo(f"{root}: " + ", ".join(f"{k}={v:,}" for k, v in manifest.row_counts.items()) + f" ({time.perf_counter() - t0:.1f}s)")

    t0 = _stage("validate (images decoded)")
    ds = validate_dataset(root, ValidationConfig(check_images=True))
    click.echo(ds.report.format())
    click.echo(f"({time.perf_counter() - t0:.1f}s)")

    t0 = _stage("split (saved in the dataset; re-used by every later job)")
    split = load_or_create_split(ds, SplitConfig(test_fraction=0.15, val_days=7))
    click.echo(format_summary(summarise(ds, split)))
    click.echo(f"({time.perf_counter() - t0:.1f}s)")

    t0 = _stage("style embeddings (cached by image hash)")
    stats = embed_catalogue(root, ds.items, MagentaStyleEncoder())
    click.echo(
        f"{stats.items:,} items = {stats.embedded:,} embedded + {stats.cached:,} cached + {stats.quarantined:,} quarantined "
        f"({time.perf_counter() - t0:.1f}s)"
    )

    t0 = _stage("style gallery and style check")
    transfer = MagentaStyleTransfer()
    gallery_png = root / STYLE_DIR / "gallery.png"
    write_gallery(ds, transfer, gallery_png, products=6, n_styles=8, seed=0)
    check = run_and_save_style_check(ds, transfer)
    click.echo(format_check(check))
    click.echo(f"({time.perf_counter() - t0:.1f}s)")

    t0 = _stage("train the two-tower model (MLflow experiment stylerec/offline-eval)")
    config = load_run_config(None)
    earlier = tracking.find_trained(ds.manifest.fingerprint, config_sha256(config))
    if earlier is not None:
        version, train_run = str(earlier.version), earlier.tags.get("run_id", "?")
        click.echo(f"re-using {tracking.MODEL_NAME} version {version}, trained on this dataset with this config (validation Recall@50 {float(earlier.tags['val_recall_50']):.4f}); `stylerec train` trains anew")
    else:
        trained = train_and_track(ds, config, wd)
        version, train_run = trained.version, trained.run_id
        r = trained.result
        click.echo(f"best epoch {r.best_epoch}, validation Recall@50 {r.best_val_recall_50:.4f}; refit on train+validation")
        click.echo(f"registered {tracking.MODEL_NAME} version {version}; champion {'moved to it' if trained.promoted else 'unchanged'}")
    model_uri = f"models:/{tracking.MODEL_NAME}/{version}"
    click.echo(f"({time.perf_counter() - t0:.1f}s)")

    t0 = _stage("offline evaluation against the baselines (same split, same protocol)")
    results, eval_run, uri = run_evaluation(ds, config, model_uri=model_uri, echo=click.echo)
    report = wd / "reports" / f"offline-eval-{ds.manifest.name}.json"
    write_json({"dataset": ds.manifest.name, "run_id": eval_run, "results": results}, report)
    click.echo(format_metrics(results))
    click.echo(f"({time.perf_counter() - t0:.1f}s)")

    t0 = _stage("FAISS index and top-100 candidates for every user")
    lm = load_model(ds, model_uri)
    index, _ = build_or_load_index(lm, index_dir(wd, ds, lm.version), IndexConfig())
    m = index.manifest
    click.echo(f"{m.kind} index, {m.n_items:,} items, recall@{m.recall_k} vs exact {m.achieved_recall:.3f}")
    cand_dir = wd / "candidates" / ds.manifest.name / lm.version.replace("/", "-")
    summary = generate_candidates(lm, index, cand_dir, CandidateJob(k=100, explain=True), np.zeros(lm.fs.items.n, bool))
    click.echo(
        f"{summary['users']:,} users, {summary['parts']} parts, {summary['seconds']:.1f}s ({summary['users_per_s']:,.0f} users/s), "
        f"catalogue coverage {summary['catalogue_coverage']:.3f}, mean score {summary['mean_score']:.4f}"
    )
    click.echo(example_users(ds, lm, cand_dir, n=3))
    click.echo(f"({time.perf_counter() - t0:.1f}s)")

    t0 = _stage("simulated A/B test on StyleMart's ground-truth shoppers: two-tower vs ALS")
    assignments, events, sim = simulate_experiment(ds, "als", model_uri, n_users=4000, days=14, seed=0)
    ab_dir = wd / "ab" / f"{ds.manifest.name}-als-vs-two-tower"
    write_parquet(assignments, ab_dir / "assignments.parquet")
    write_parquet(events, ab_dir / "events.parquet")
    write_json(sim, ab_dir / "simulation.json")
    e = sim["expected_purchases_per_user"]
    click.echo(f"expected purchases per user: ALS {e['control']:.4f}, two-tower {e['treatment']:.4f} ({e['treatment'] / e['control'] - 1:+.1%})")
    ab_report, quarantine = build_report(assignments, events, None, ABConfig(covariate="pre_purchases", attribution_days=14))
    ab_json, ab_html = write_report(ab_report, quarantine, ab_dir / "report")
    ab_run = log_report(ab_report, ab_json, ab_html)
    click.echo(ab_report["verdict"])
    click.echo(f"({time.perf_counter() - t0:.1f}s)")

    click.secho(f"\ndemo finished in {time.perf_counter() - started:.1f}s; outputs:", bold=True)
    click.echo(f"  dataset            {root}")
    click.echo(f"  validation report  {root / 'validation_report.json'}")
    click.echo(f"  quarantine         {root / 'quarantine'}")
    click.echo(f"  split              {root / 'split'}")
    click.echo(f"  ground truth       {root / 'ground_truth'}")
    click.echo(f"  style embeddings   {root / STYLE_DIR / 'style_embeddings.parquet'}")
    click.echo(f"  style gallery      {gallery_png}")
    click.echo(f"  style check        {root / STYLE_DIR / 'style_check.json'}")
    click.echo(f"  offline evaluation {report}")
    click.echo(f"  candidates         {cand_dir}")
    click.echo(f"  A/B report         {ab_html}")
    click.echo(f"  MLflow runs        train {train_run}, evaluate {eval_run}, A/B report {ab_run.split()[0]} in {uri}")
    click.echo(f"  MLflow UI          {tracking.ui_hint(uri)}")
