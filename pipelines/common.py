"""Small helpers the CLI's jobs share: loading a dataset argument, the training options."""

from __future__ import annotations

import click

from data.dataset import DatasetError
from data.validate import ValidatedDataset, load_dataset
from pipelines.workspace import resolve_dataset
from recsys.sharding import SHARDED_TYPES


def load_ds(ctx: click.Context, dataset: str) -> ValidatedDataset:
    """DATASET (a path, or a name under the work folder), loaded; a clean error if broken."""
    try:
        return load_dataset(resolve_dataset(dataset, ctx.obj["workdir"]))
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc


def training_options(command):
    """The options `stylerec train` and its torchrun entry (`pipelines.train`) share."""
    for option in reversed([
        click.argument("dataset"),
        click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None, help="TOML with [model], [train], [features]"),
        click.option("--seed", type=int, default=None, help="overrides [train] seed"),
        click.option("--epochs", type=int, default=None, help="overrides [train] epochs"),
        click.option("--resume", is_flag=True, help="continue from the last checkpoint of the same dataset and config (any number of ranks)"),
        click.option(
            "--sharding", default=None, metavar="TYPE|TABLE=TYPE,...",
            help=f"distributed: force a sharding type ({', '.join(SHARDED_TYPES)}) for every table, or per table, e.g. t_user_id=row_wise [default: the planner's choice]",
        ),
    ]):
        command = option(command)
    return command


def train_overrides(seed: int | None, epochs: int | None) -> dict:
    return {"train": {k: v for k, v in (("seed", seed), ("epochs", epochs)) if v is not None}}
