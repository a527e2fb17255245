"""The data jobs behind `stylerec data ...`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from data.adapters.hm import import_hm
from data.dataset import DatasetError
from data.split import SplitConfig, load_or_create_split, load_split, split_dataset
from data.stylemart import PRESETS, generate
from data.summary import format_summary, summarise
from data.validate import ValidationConfig, validate_dataset
from pipelines.workspace import datasets_dir, resolve_dataset


def _wd(ctx: click.Context) -> Path:
    return ctx.obj["workdir"]


@click.group("data")
def data_group() -> None:
    """Datasets: generate, import, validate, split, summarise."""


@data_group.command("synth")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="demo", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="dataset folder [default: <workdir>/datasets/stylemart-<preset>]")
@click.option("--images/--no-images", default=None, help="render product photos (default: on, except for `large`)")
@click.option("--image-size", type=int, default=256, show_default=True)
@click.option("--workers", type=int, default=None, help="processes rendering images")
@click.option("--force", is_flag=True, help="regenerate even if the dataset exists with the same parameters")
@click.pass_context
def synth(ctx, preset, seed, out, images, image_size, workers, force):
    """Generate the StyleMart synthetic marketplace (deterministic by seed)."""
    out = Path(out) if out else datasets_dir(_wd(ctx)) / f"stylemart-{preset}"
    started = dt.datetime.now()
    manifest = generate(out, preset, seed, images=images, image_size=image_size, workers=workers, force=force)
    secs = (dt.datetime.now() - started).total_seconds()
    counts = ", ".join(f"{k}={v:,}" for k, v in manifest.row_counts.items())
    click.echo(f"StyleMart {preset} (seed {seed}) at {out} [{counts}] in {secs:.1f}s")


@data_group.command("import-hm")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--copy-images", is_flag=True, help="copy the image folder instead of linking it")
def import_hm_cmd(src, out, copy_images):
    """Import the Kaggle H&M Personalized Fashion Recommendations layout from SRC into OUT."""
    _, report = import_hm(src, out, copy_images=copy_images)
    click.echo(report.format())
    click.echo(f"dataset written to {out}; run `stylerec data validate {out}` next")


@data_group.command("validate")
@click.argument("dataset")
@click.option("--no-decode", is_flag=True, help="check images exist without decoding them")
@click.pass_context
def validate_cmd(ctx, dataset, no_decode):
    """Validate DATASET: quarantine bad rows with a reason, print and save the report."""
    root = resolve_dataset(dataset, _wd(ctx))
    try:
        ds = validate_dataset(root, ValidationConfig(check_images=not no_decode))
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(ds.report.format())
    click.echo(f"report: {root / 'validation_report.json'}; quarantine: {root / 'quarantine'}")


@data_group.command("split")
@click.argument("dataset")
@click.option("--cutoff", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="test = events on or after this day")
@click.option("--test-fraction", type=float, default=None, help="test = the last F of the timeline's events")
@click.option("--val-days", type=int, default=7, show_default=True, help="days before the cutoff held out for validation")
@click.option("--leave-last-n", type=int, default=None, help="per-user split instead: each user's last N events are test")
@click.pass_context
def split_cmd(ctx, dataset, cutoff, test_fraction, val_days, leave_last_n):
    """Split DATASET by time (or per user) and save the split for every later job."""
    root = resolve_dataset(dataset, _wd(ctx))
    try:
        if leave_last_n is not None:
            config = SplitConfig(strategy="leave_last_n", cutoff=None, test_fraction=None, val_days=val_days, leave_last_n=leave_last_n)
        else:
            if cutoff is None and test_fraction is None:
                test_fraction = 0.2
            config = SplitConfig(cutoff=cutoff.date() if cutoff else None, test_fraction=test_fraction, val_days=val_days)
        ds = validate_dataset(root, ValidationConfig(check_images=False))
        split = split_dataset(ds, config)
    except (DatasetError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_summary(summarise(ds, split)))
    click.echo(f"split saved in {root / 'split'}")


@data_group.command("summary")
@click.argument("dataset")
@click.pass_context
def summary_cmd(ctx, dataset):
    """Print a summary of DATASET (tables, events, split, cold items)."""
    root = resolve_dataset(dataset, _wd(ctx))
    try:
        ds = validate_dataset(root, ValidationConfig(check_images=False), write=False)
        split = load_split(ds.dir)
        if split is not None:
            split = load_or_create_split(ds)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_summary(summarise(ds, split)))


@data_group.command("import-movielens")
@click.argument("src", type=click.Path(exists=True))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--purchase-threshold", type=click.IntRange(1, 5), default=4, show_default=True, help="ratings at or above it are purchases, the rest views")
def import_movielens_cmd(src, out, purchase_threshold):
    """Import MovieLens-100K from SRC (the recbole==1.2.1 wheel, or an ml-100k folder) into OUT."""
    from data.adapters.movielens import import_movielens

    try:
        _, report = import_movielens(src, out, purchase_threshold=purchase_threshold)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{report.format()}\ndataset written to {out}; run `stylerec data validate {out}` next")
