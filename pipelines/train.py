"""Distributed training: ``torchrun --nproc_per_node=N -m pipelines.train DATASET [...]``.

Every rank builds the features, wraps the two-tower model in TorchRec's
DistributedModelParallel (recsys/sharding.py) and trains on its share of each global
batch (recsys/distributed_train.py); rank 0 prints the sharding plan, logs to MLflow,
evaluates on the test fold and registers the model, exactly as ``stylerec train`` does.
``stylerec train --nproc N`` launches this on one machine; see the README for several.
"""

from __future__ import annotations

from pipelines import env

env.setup()

import click  # noqa: E402

from pipelines.common import train_overrides, training_options  # noqa: E402
from pipelines.workspace import workdir as resolve_workdir  # noqa: E402


@click.command("pipelines.train")
@training_options
@click.option("--workdir", type=click.Path(file_okay=False), default=None, help="work folder [env STYLEREC_WORKDIR; default ./workspace]")
@click.option("--no-register", is_flag=True, help="log the run but do not register the model")
def main(dataset, config_path, seed, epochs, resume, sharding, workdir, no_register):
    """Train the two-tower model on DATASET across the ranks torchrun started."""
    env.silence_rank_notices()
    from data.dataset import DatasetError
    from data.io import FolderLockError
    from data.validate import load_dataset
    from pipelines import tracking
    from pipelines.workspace import resolve_dataset
    from recsys.config import ConfigError, load_run_config
    from recsys.distributed_train import DistributedTrainer, dumps_plan, format_plan
    from recsys.sharding import init_distributed

    ctx = init_distributed()
    threads = env.set_torch_threads(env.threads_per_rank(ctx.local_world_size))
    root = resolve_workdir(workdir)
    try:
        config = load_run_config(config_path, train_overrides(seed, epochs))
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

        run_params = {"world_size": ctx.world_size, "backend": ctx.backend, "sharding": sharding or "planner", "threads_per_rank": threads}
        out = tracking.train_and_track(ds, config, root, resume=resume, progress=ctx.is_main, register=not no_register, make_trainer=make_trainer, is_main=ctx.is_main, run_params=run_params)
    except (ConfigError, DatasetError, FolderLockError, ValueError) as exc:
        raise click.ClickException(f"rank {ctx.rank}: {exc}") from exc
    finally:
        ctx.close()
    if out is not None:
        click.echo(tracking.format_outcome(out))


if __name__ == "__main__":
    main()
