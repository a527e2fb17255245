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
@click.option(
    "--deploy", is_flag=True,
    help=f"refit on every event up to the end of the data, for the epoch count of the last evaluated run of this dataset and config; registered under the alias {tracking.PRODUCTION!r}, never {tracking.CHAMPION!r}",
)
@click.pass_context
def train_cmd(ctx, dataset, config_path, seed, epochs, resume, sharding, nproc, deploy):
    """Train the style-aware two-tower model on DATASET, evaluate it, log and register it.

    With --nproc N it runs `torchrun --standalone --nproc_per_node=N -m pipelines.train`
    with the same arguments. With --deploy it trains on the whole timeline instead (after
    an evaluated run: `stylerec train DATASET`, then `stylerec train DATASET --deploy`)."""
    if deploy:
        _deploy(ctx, dataset, config_path, seed, epochs=epochs, resume=resume, sharding=sharding, nproc=nproc)
        return
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


def _deploy(ctx, dataset, config_path, seed, **not_with_deploy) -> None:
    given = [f"--{name}" for name, value in not_with_deploy.items() if value not in (None, False)]
    if given:
        raise click.UsageError(f"--deploy takes the epoch count from the evaluated run and trains in one process; it does not go with {', '.join(given)}")
    try:
        config = load_run_config(config_path, train_overrides(seed, None))
        ds = load_dataset(resolve_dataset(dataset, ctx.obj["workdir"]))
        out = tracking.deploy_and_track(ds, config, ctx.obj["workdir"], dataset_arg=dataset)
    except (ConfigError, DatasetError, tracking.DeployError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(tracking.format_deploy_outcome(out))
