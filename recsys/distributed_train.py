"""Data- and model-parallel training of the two-tower model under torchrun.

The loop, early stopping and refit are ``Trainer``'s; this class changes what a step is:

- every rank draws the same global batch order (seeded) and takes a contiguous share of
  each global batch — its shard of the training data;
- id-dropout masks and extra negatives are drawn once per global batch from a seeded
  generator and split the same way, so N ranks see what one process would;
- item vectors are all-gathered (with gradients), so in-batch negatives span the global
  batch; each rank's loss is the mean over its (equal) share of the batch, and both DDP
  and TorchRec's sharded tables average gradients over ranks, so a step is the global
  batch's step;
- the validation Recall@50 is computed on a share of the validation users per rank and
  all-reduced, as is the training loss.

With one rank the same code runs in one process; tests compare 2 ranks against it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from safetensors.torch import load_file, save_file

from data.io import atomic_path, write_json
from recsys.evaluate import EvalConfig, evaluate
from recsys.features import Examples, FeatureSet
from recsys.losses import sampled_softmax_loss
from recsys.model import TwoTower, TwoTowerConfig, user_batch_tensors
from recsys.sharding import (
    DistContext,
    dense_parameters,
    gather_full_state,
    gather_sparse_optimizer_state,
    load_full_state,
    load_sparse_optimizer_state,
    shard_model,
)
from recsys.train import EpochLog, Trainer, TrainConfig, TrainingRun, TwoTowerRecommender, build_model, save_weights


def _share(n: int, rank: int, world: int) -> slice:
    return slice(rank * n // world, (rank + 1) * n // world)


class DistributedTrainer(Trainer):
    def __init__(
        self,
        fs: FeatureSet,
        model_config: TwoTowerConfig,
        train_config: TrainConfig,
        ctx: DistContext,
        sharding: str | None = None,
        checkpoint_dir: Path | None = None,
        on_epoch: Callable[[EpochLog], None] | None = None,
        on_plan: Callable[[object], None] | None = None,
        progress: bool = True,
    ):
        super().__init__(fs, model_config, train_config, checkpoint_dir, on_epoch, progress)
        for name, size in (("batch_size", train_config.batch_size), ("extra_negatives", train_config.extra_negatives)):
            if size % ctx.world_size:
                raise ValueError(f"[train] {name} = {size} is not divisible by the {ctx.world_size} ranks")
        self.ctx, self.sharding, self.on_plan = ctx, sharding, on_plan
        self.is_main = ctx.is_main
        self.plan = None
        self._generator = torch.Generator()

    # -- model and optimizers --------------------------------------------------------

    def start(self, fs: FeatureSet) -> TrainingRun:
        model = build_model(fs, self.mcfg, self.tcfg.seed)
        dmp, plan = shard_model(model, self.ctx, self.tcfg.sparse_lr, self.sharding, self.tcfg.batch_size)
        if self.plan is None and self.on_plan and self.is_main:
            self.on_plan(plan)
        self.plan = plan
        optimizer = torch.optim.AdamW(dense_parameters(dmp), lr=self.tcfg.lr, weight_decay=self.tcfg.weight_decay)
        return TrainingRun(dmp, dmp.module, optimizer)

    def full_model(self, run: TrainingRun) -> TwoTower:
        """An unsharded copy on every rank (for validation and for the result)."""
        state = gather_full_state(run.module, to_all=True)
        model = TwoTower(self.mcfg, run.model.vocab, {k: state[k] for k in TwoTower.ITEM_TABLES})
        model.load_state_dict(state)
        return model

    # -- one step --------------------------------------------------------------------

    def run_epoch(self, run, fs, examples, log_q, epoch, desc=None):
        self._generator.manual_seed(self.tcfg.seed * 1000 + epoch)
        return super().run_epoch(run, fs, examples, log_q, epoch, desc)

    def _keep(self, n: int, p: float) -> torch.Tensor:
        return torch.rand(n, generator=self._generator) >= p

    def step(self, run: TrainingRun, fs: FeatureSet, examples: Examples, idx: np.ndarray, log_q: torch.Tensor) -> float:
        cfg, ctx, device = self.tcfg, self.ctx, self.ctx.device
        global_batch = len(idx)
        # drawn identically on every rank, for the whole global batch
        item_keep = self._keep(global_batch, self.mcfg.id_dropout)
        user_keep = self._keep(global_batch, self.mcfg.user_id_dropout)
        neg_rows = torch.randint(0, fs.items.n, (cfg.extra_negatives,), generator=self._generator)
        neg_keep = self._keep(cfg.extra_negatives, self.mcfg.id_dropout)

        mine = _share(global_batch, ctx.rank, ctx.world_size)
        mine_neg = _share(cfg.extra_negatives, ctx.rank, ctx.world_size)
        local = idx[mine]
        batch = user_batch_tensors(fs.user_batch(examples.user[local], examples.time[local]))
        batch["keep_ids"] = user_keep[mine]
        batch = {k: v.to(device) for k, v in batch.items()}
        rows = torch.cat([torch.from_numpy(examples.item[local]), neg_rows[mine_neg]]).to(device)
        keep = torch.cat([item_keep[mine], neg_keep[mine_neg]]).to(device)
        user_vec, item_vec = run.module(batch, rows, keep)

        n_local = local.shape[0]
        positives_all = torch.cat(dist_fn.all_gather(item_vec[:n_local]))
        global_rows = torch.from_numpy(examples.item[idx]).to(device)
        neg_vec = neg_q = None
        if cfg.extra_negatives:
            neg_vec = torch.cat(dist_fn.all_gather(item_vec[n_local:]))
            neg_q = torch.full((cfg.extra_negatives,), float(np.log(1.0 / fs.items.n)), device=device)
        log_q = log_q.to(device)
        loss = sampled_softmax_loss(
            user_vec, positives_all, global_rows, log_q[global_rows], self.mcfg.temperature, neg_vec, neg_q,
            positives=torch.arange(mine.start, mine.stop, device=device),
        )
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # the fused optimizer updates the sharded tables here
        run.optimizer.step()
        total = loss.detach().clone()
        dist.all_reduce(total)
        return float(total) / ctx.world_size  # equal shares: the mean is the global batch's loss

    # -- validation ------------------------------------------------------------------

    def validation_recall(self, model: TwoTower) -> float:
        """Each rank scores its share of the validation users; recall is all-reduced."""
        cfg = EvalConfig(fold="val", ks=(50,), max_users=self.tcfg.val_users, seed=self.tcfg.seed, shard=(self.ctx.rank, self.ctx.world_size))
        res = evaluate(TwoTowerRecommender(model, self.fs), self.fs, cfg)
        sums = torch.zeros(2, dtype=torch.float64)
        if res:
            sums[0] = res["all"]["recall@50"] * res["all"]["users"]
            sums[1] = res["all"]["users"]
        dist.all_reduce(sums)
        return float(sums[0] / sums[1]) if sums[1] > 0 else 0.0

    # -- checkpoints: gathered to rank 0, the single-process format plus the fused state --

    def save_checkpoint(self, run: TrainingRun, model: TwoTower, epoch: int, state: dict) -> None:
        if self.checkpoint_dir is None:
            return
        sparse = gather_sparse_optimizer_state(run.module)
        if self.is_main:
            d = self.checkpoint_dir
            d.mkdir(parents=True, exist_ok=True)
            save_weights(model, d / f"epoch-{epoch:03d}.safetensors")
            with atomic_path(d / f"epoch-{epoch:03d}.sparse-optim.safetensors") as tmp:
                save_file({k: v.contiguous() for k, v in sparse.items()}, str(tmp))
            with atomic_path(d / f"epoch-{epoch:03d}.optim.pt") as tmp:
                torch.save(run.optimizer.state_dict(), tmp)
            write_json({**state, "world_size": self.ctx.world_size}, d / "state.json")
            self.prune(state)
        dist.barrier()

    def load_checkpoint(self, run: TrainingRun) -> dict | None:
        state = self._checkpoint_state()
        if state is None:
            return None
        d, epoch = self.checkpoint_dir, state["epoch"]
        sparse_file = d / f"epoch-{epoch:03d}.sparse-optim.safetensors"
        if not sparse_file.is_file():
            raise FileNotFoundError(f"{d}: epoch {epoch} was not written by distributed training (no {sparse_file.name})")
        load_full_state(run.module, load_file(str(d / f"epoch-{epoch:03d}.safetensors")))
        load_sparse_optimizer_state(run.module, load_file(str(sparse_file)))
        run.optimizer.load_state_dict(torch.load(d / f"epoch-{epoch:03d}.optim.pt", weights_only=True))
        return state


def format_plan(plan) -> str:
    return "no sharded tables" if plan is None else str(plan)


def plan_summary(plan) -> dict[str, dict]:
    """{table: {"sharding_type", "ranks"}} from a TorchRec ShardingPlan (for logs and tests)."""
    out: dict[str, dict] = {}
    if plan is None:
        return out
    for module_plan in plan.plan.values():
        for table, ps in module_plan.items():
            out[table] = {"sharding_type": ps.sharding_type, "ranks": list(ps.ranks or [])}
    return out


def dumps_plan(plan) -> str:
    return json.dumps(plan_summary(plan), indent=1, sort_keys=True)
