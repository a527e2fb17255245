"""`stylerec train`: train the two-tower model, evaluate it, track and register it in MLflow."""

from __future__ import annotations

import click

from data.dataset import DatasetError
from data.validate import load_dataset
from pipelines import tracking
from pipelines.common import train_overrides, training_options
from pipelines.env import launch
from pipelines.workspace import resolve_dataset
from recsys.config import ConfigError, load_run_config


def _torchrun_args(ctx, dataset, config_path, seed, epochs, resume, sharding) -> list[str]:
    args = [dataset, "--workdir", str(ctx.obj["workdir"])]
    for flag, value in (("--config", config_path), ("--seed", seed), ("--epochs", epochs), ("--sharding", sharding)):
        if value is not None:
            args += [flag, str(value)]
    return args + (["--resume"] if resume else [])


@click.command("train")
@training_options
@click.option("--nproc", type=click.IntRange(min=1), default=None, help="train on N ranks of this machine (torchrun, TorchRec DistributedModelParallel)")
@click.pass_context
def train_cmd(ctx, dataset, config_path, seed, epochs, resume, sharding, nproc):
    """Train the style-aware two-tower model on DATASET, evaluate it, log and register it.

    With --nproc N it runs `torchrun --standalone --nproc_per_node=N -m pipelines.train`
    with the same arguments."""
    if nproc is not None:
        ctx.exit(launch(nproc, "pipelines.train", _torchrun_args(ctx, dataset, config_path, seed, epochs, resume, sharding)))
    if sharding is not None:
        raise click.UsageError("--sharding needs --nproc")
    try:
        config = load_run_config(config_path, train_overrides(seed, epochs))
        ds = load_dataset(resolve_dataset(dataset, ctx.obj["workdir"]))
        out = tracking.train_and_track(ds, config, ctx.obj["workdir"], resume=resume)
    except (ConfigError, DatasetError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(tracking.format_outcome(out))
