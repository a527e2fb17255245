"""`stylerec demo`: the end-to-end job on the embedded default (StyleMart demo preset).

Each stage re-uses what an earlier run already built, so a re-run is quick.
"""

from __future__ import annotations

import time

import click

from data.split import SplitConfig, load_or_create_split
from data.stylemart import generate
from data.summary import format_summary, summarise
from data.validate import ValidationConfig, validate_dataset
from data.io import write_json
from pipelines import tracking
from pipelines.evaluate_job import run_evaluation
from pipelines.style_jobs import format_check, run_and_save_style_check, write_gallery
from pipelines.train_job import format_metrics, train_and_track
from pipelines.workspace import datasets_dir
from style.embeddings import STYLE_DIR, embed_catalogue
from style.encoder import MagentaStyleEncoder
from recsys.config import load_run_config
from style.transfer import MagentaStyleTransfer


def _stage(title: str) -> float:
    click.secho(f"\n== {title}", bold=True)
    return time.perf_counter()


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
    trained = train_and_track(ds, config, wd)
    r = trained.result
    click.echo(f"best epoch {r.best_epoch}, validation Recall@50 {r.best_val_recall_50:.4f}; refit on train+validation")
    click.echo(f"registered {tracking.MODEL_NAME} version {trained.version}; champion {'moved to it' if trained.promoted else 'unchanged'}")
    click.echo(f"({time.perf_counter() - t0:.1f}s)")

    t0 = _stage("offline evaluation against the baselines (same split, same protocol)")
    results, eval_run, uri = run_evaluation(ds, config, model_uri=f"models:/{tracking.MODEL_NAME}/{trained.version}", echo=click.echo)
    report = wd / "reports" / f"offline-eval-{ds.manifest.name}.json"
    write_json({"dataset": ds.manifest.name, "run_id": eval_run, "results": results}, report)
    click.echo(format_metrics(results))
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
    click.echo(f"  MLflow runs        train {trained.run_id}, evaluate {eval_run} in {uri}")
    click.echo(f"  MLflow UI          {tracking.ui_hint(uri)}")
