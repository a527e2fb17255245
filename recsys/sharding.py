"""Sharding the two-tower model across processes with TorchRec's DistributedModelParallel.

The embedding tables are sharded by TorchRec's planner (table-wise, row-wise, ... as it
decides, or as ``sharding`` forces) and trained by the fused optimizer that runs inside
the backward pass (exact Adagrad, the optimizer fbgemm's CPU and GPU kernels both have;
Adam is GPU-only there). Everything else (projections, fusion MLPs) is data-parallel
(DDP) and trained by AdamW.

Gradient scale: each rank's loss is the mean over its equal share of the global batch.
DDP averages the dense gradients over ranks and TorchRec averages the sharded tables'
gradients too (checked: the fused Adagrad state of a 2-rank run equals one process's),
so a step on N ranks is the step one process takes on the whole batch.

Tables are never ``data_parallel``: a replicated table would be trained by a different
optimizer implementation than a sharded one, and which tables the planner replicates
changes with the number of ranks, so N ranks would not match one.

Checkpoints gather the full state on rank 0 (see ``gather_full_state``): the files are the
ones a single process writes, so a run resumes on any number of ranks and the
single-process candidate job loads them as they are. The price is that rank 0 holds every
table once in host memory while writing (2.6 GB for 10M users x 64 floats); past tens of
GB, torch.distributed.checkpoint's per-rank files would be the better trade.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import ShardedTensor

# TorchRec offers row_wise, table_row_wise and grid_shard on GPUs only; on CPU a table is
# table_wise, column_wise or table_column_wise (or data_parallel, which we never use).
SHARDED_TYPES = ("table_wise", "column_wise", "table_column_wise", "row_wise", "table_row_wise", "grid_shard")


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_world_size: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def single(cls) -> DistContext:
        """One process, no process group."""
        return cls(0, 1, 1, "none", torch.device("cpu"))

    @classmethod
    def from_env(cls, backend: str | None = None) -> DistContext:
        """The ranks torchrun started (joining their process group), or one process."""
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:
            return cls.single()
        return init_distributed(backend)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def main_first(self, fn):
        """``fn()`` on rank 0, then (after a barrier) on the other ranks: rank 0 makes what
        the others then find (an index, a pinned job file). Returns this rank's result."""
        if self.is_main:
            out = fn()
        self.barrier()
        if not self.is_main:
            out = fn()
        return out

    def total(self, values: list[float], op: str = "sum") -> list[float]:
        """Element-wise sum (or max) of every rank's ``values``."""
        if self.world_size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t.tolist()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(backend: str | None = None) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment.

    gloo on CPU, NCCL when CUDA is present (one GPU per local rank)."""
    if not dist.is_initialized():
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise RuntimeError("no torchrun environment (RANK, WORLD_SIZE): start with torchrun --nproc_per_node=N -m pipelines.train ...")
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = dist.get_backend()
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
    return DistContext(dist.get_rank(), dist.get_world_size(), local_world, backend, device)


def embedding_tables(model: torch.nn.Module) -> list[str]:
    from torchrec import EmbeddingBagCollection

    return [t.name for m in model.modules() if isinstance(m, EmbeddingBagCollection) for t in m.embedding_bag_configs()]


def parse_sharding(spec: str | None, tables: list[str]) -> dict[str, list[str]]:
    """Allowed sharding types per table from ``--sharding``: empty (the planner chooses among
    the sharded types), one type for every table (``row_wise``), or per table
    (``t_user_id=row_wise,t_item_id=column_wise``; tables not named stay the planner's)."""
    allowed = {name: list(SHARDED_TYPES) for name in tables}  # the planner drops the GPU-only ones on CPU
    if not spec:
        return allowed
    if "=" not in spec:
        spec = ",".join(f"{name}={spec}" for name in tables)
    for part in spec.split(","):
        name, _, kind = part.strip().partition("=")
        if name not in allowed:
            raise ValueError(f"--sharding names table {name!r}; the model's tables are {tables}")
        if kind not in SHARDED_TYPES:
            raise ValueError(f"--sharding {name}={kind!r}: the type must be one of {list(SHARDED_TYPES)}")
        allowed[name] = [kind]
    return allowed


def plan_sharding(model: torch.nn.Module, ctx: DistContext, sharding: str | None = None, batch_size: int | None = None):
    """The planner's plan for every embedding table, within the types ``sharding`` allows."""
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
    from torchrec.distributed.sharding_plan import get_default_sharders

    allowed = parse_sharding(sharding, embedding_tables(model))
    constraints = {name: ParameterConstraints(sharding_types=types) for name, types in allowed.items()}
    topology = Topology(world_size=ctx.world_size, local_world_size=ctx.local_world_size, compute_device=ctx.device.type)
    planner = EmbeddingShardingPlanner(topology=topology, batch_size=batch_size, constraints=constraints, debug=False)
    try:
        return planner.collective_plan(model, get_default_sharders(), dist.GroupMember.WORLD)
    except Exception as exc:  # the planner's own message names the table that has no option
        forced = {k: v[0] for k, v in allowed.items() if len(v) == 1}
        raise ValueError(f"no sharding plan with {forced or 'the sharded types'}: {exc}") from exc


def shard_model(model: torch.nn.Module, ctx: DistContext, sparse_lr: float, sharding: str | None = None, batch_size: int | None = None):
    """Wrap ``model`` in DistributedModelParallel; returns (dmp, plan).

    Every rank must build ``model`` with the same seed: the sharded tables are allocated
    afresh by TorchRec, so the unsharded initial values are copied into the shards."""
    from torchrec.distributed import DistributedModelParallel
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tables = [p for n, p in model.named_parameters() if ".embedding_bags." in n]
    if tables:
        apply_optimizer_in_backward(torch.optim.Adagrad, tables, {"lr": sparse_lr, "eps": 1e-8})
    plan = plan_sharding(model, ctx, sharding, batch_size) if tables else None
    dmp = DistributedModelParallel(model, device=ctx.device, plan=plan)
    load_full_state(dmp, initial)
    return dmp, plan


def dense_parameters(dmp) -> list[torch.nn.Parameter]:
    """Parameters the fused in-backward optimizer does not own."""
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    return [p for _, p in in_backward_optimizer_filter(dmp.named_parameters())]


def _region(tensor: torch.Tensor, offsets, sizes) -> torch.Tensor:
    return tensor[tuple(slice(o, o + s) for o, s in zip(offsets, sizes, strict=True))]


def _copy_into(target, full: torch.Tensor) -> None:
    """Copy a full tensor into a (possibly sharded) tensor in place."""
    with torch.no_grad():
        if isinstance(target, ShardedTensor):
            for shard in target.local_shards():
                md = shard.metadata
                shard.tensor.copy_(_region(full, md.shard_offsets, md.shard_sizes))
        else:
            target.copy_(full)


def _local_pieces(values: dict[str, object], rank: int) -> list[tuple]:
    """(key, full size, offsets, tensor) for what this rank holds: its shards of sharded
    tensors, and (on rank 0) the replicated ones."""
    pieces = []
    for key, value in values.items():
        if isinstance(value, ShardedTensor):
            for shard in value.local_shards():
                md = shard.metadata
                pieces.append((key, tuple(value.size()), tuple(md.shard_offsets), shard.tensor.detach().cpu()))
        elif rank == 0:
            pieces.append((key, tuple(value.shape), None, value.detach().cpu()))
    return pieces


def _assemble(per_rank: list[list[tuple]]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for pieces in per_rank:
        for key, size, offsets, tensor in pieces:
            if offsets is None:
                out[key] = tensor.clone()
                continue
            if key not in out:
                out[key] = torch.empty(size, dtype=tensor.dtype)
            _region(out[key], offsets, tensor.shape).copy_(tensor)
    return dict(sorted(out.items()))


def _gather_values(values: dict[str, object], to_all: bool) -> dict[str, torch.Tensor] | None:
    """Full tensors from per-rank shards. Each rank only lists the sharded tensors it holds
    (so the key lists differ between ranks): every rank sends its pieces as objects."""
    rank, world = dist.get_rank(), dist.get_world_size()
    pieces = _local_pieces(values, rank)
    if to_all:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, pieces)
        return _assemble(gathered)
    gathered = [None] * world if rank == 0 else None
    dist.gather_object(pieces, gathered, dst=0)
    return _assemble(gathered) if rank == 0 else None


def gather_full_state(dmp, to_all: bool = False) -> dict[str, torch.Tensor] | None:
    """The model's full (unsharded) state dict on rank 0 (and on every rank with ``to_all``);
    ``None`` elsewhere. A collective: every rank calls it."""
    return _gather_values(dmp.state_dict(), to_all)


def load_full_state(dmp, state: dict[str, torch.Tensor]) -> None:
    """Copy a full state dict (as a single process saves it) into the local shards."""
    current = dmp.state_dict()
    missing = sorted(set(current) - set(state))
    if missing:
        raise KeyError(f"checkpoint lacks {missing[:5]}")
    for key, target in current.items():
        _copy_into(target, state[key])


def _sparse_optimizer_states(dmp) -> dict[str, object]:
    return {f"{param}::{name}": value for param, states in dmp.fused_optimizer.state_dict()["state"].items() for name, value in states.items()}


def gather_sparse_optimizer_state(dmp) -> dict[str, torch.Tensor] | None:
    """The fused optimizer's per-table state (Adagrad's sums of squares), full, on rank 0."""
    return _gather_values(_sparse_optimizer_states(dmp), to_all=False)


def load_sparse_optimizer_state(dmp, state: dict[str, torch.Tensor]) -> None:
    for key, target in _sparse_optimizer_states(dmp).items():
        if key not in state:
            raise KeyError(f"checkpoint lacks the optimizer state {key}")
        _copy_into(target, state[key])
