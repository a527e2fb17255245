"""Distributed training: ``torchrun --nproc_per_node=N -m pipelines.train DATASET [...]``.

Every rank builds the features, wraps the two-tower model in TorchRec's
DistributedModelParallel (recsys/sharding.py) and trains on its share of each global
batch (recsys/distributed_train.py); rank 0 prints the sharding plan, logs to MLflow,
evaluates on the test fold and registers the model, exactly as ``stylerec train`` does.
``stylerec train --nproc N`` launches this on one machine; see the README for several.
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import click  # noqa: E402

from pipelines.workspace import workdir as resolve_workdir  # noqa: E402

from recsys.sharding import SHARDED_TYPES  # noqa: E402


def training_options(command):
    """The options `stylerec train` and this module share."""
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


def threads_per_rank(local_world_size: int) -> int:
    """Cores of this machine split between its ranks (STYLEREC_THREADS_PER_RANK overrides)."""
    if os.environ.get("STYLEREC_THREADS_PER_RANK"):
        return int(os.environ["STYLEREC_THREADS_PER_RANK"])
    return max(1, (os.cpu_count() or 1) // max(local_world_size, 1))


@click.command("pipelines.train")
@training_options
@click.option("--workdir", type=click.Path(file_okay=False), default=None, help="work folder [env STYLEREC_WORKDIR; default ./workspace]")
@click.option("--no-register", is_flag=True, help="log the run but do not register the model")
def main(dataset, config_path, seed, epochs, resume, sharding, workdir, no_register):
    """Train the two-tower model on DATASET across the ranks torchrun started."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # TorchRec/ShardedTensor deprecation notices, once per rank
    import torch
    import torch.distributed as dist

    from data.dataset import DatasetError
    from data.validate import load_dataset
    from pipelines.train_job import report, train_and_track
    from pipelines.workspace import resolve_dataset
    from recsys.config import ConfigError, load_run_config
    from recsys.distributed_train import DistributedTrainer, dumps_plan, format_plan
    from recsys.sharding import init_distributed

    ctx = init_distributed()
    torch.set_num_threads(threads_per_rank(ctx.local_world_size))
    root = resolve_workdir(workdir)
    overrides = {"train": {k: v for k, v in (("seed", seed), ("epochs", epochs)) if v is not None}}
    try:
        config = load_run_config(config_path, overrides)
        ds = load_dataset(resolve_dataset(dataset, root))

        def on_plan(plan):
            click.echo(f"sharding plan ({ctx.world_size} ranks, {ctx.backend}):\n{format_plan(plan)}")
            import mlflow

            if mlflow.active_run():
                mlflow.log_text(dumps_plan(plan), "sharding_plan.json")

        def make_trainer(fs, ckpt, on_epoch):
            return DistributedTrainer(
                fs, config.model, config.train, ctx, sharding=sharding,
                checkpoint_dir=ckpt.with_name(ckpt.name + "-sharded"), on_epoch=on_epoch, on_plan=on_plan, progress=ctx.is_main,
            )

        run_params = {"world_size": ctx.world_size, "backend": ctx.backend, "sharding": sharding or "planner", "threads_per_rank": torch.get_num_threads()}
        out = train_and_track(ds, config, root, resume=resume, progress=ctx.is_main, register=not no_register, make_trainer=make_trainer, is_main=ctx.is_main, run_params=run_params)
    except (ConfigError, DatasetError, ValueError) as exc:
        raise click.ClickException(f"rank {ctx.rank}: {exc}") from exc
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if out is not None:
        report(out)


if __name__ == "__main__":
    main()
