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
from pipelines.workspace import datasets_dir


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

    click.secho(f"\ndemo finished in {time.perf_counter() - started:.1f}s; outputs:", bold=True)
    click.echo(f"  dataset            {root}")
    click.echo(f"  validation report  {root / 'validation_report.json'}")
    click.echo(f"  quarantine         {root / 'quarantine'}")
    click.echo(f"  split              {root / 'split'}")
    click.echo(f"  ground truth       {root / 'ground_truth'}")
