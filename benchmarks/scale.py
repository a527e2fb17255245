"""Distributed training throughput: 1 vs 2 ranks of TorchRec DistributedModelParallel.

Launches ``torchrun --standalone --nproc_per_node=N`` on this script's worker for each
setting, trains the full-feature two-tower model (every id table sharded) for a fixed
number of global batches on StyleMart `small` (generated and embedded on first use), and
prints global examples/s. Usage:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py [--workdir workspace] [--batches 150]

On one machine more ranks only help when the cores are not already busy: with 2 cores,
1 rank x 2 threads and 2 ranks x 1 thread use the same hardware, and the ranks add
all-to-all and all-reduce traffic. The figure that matters on a cluster is how close N
ranks on N machines come to N x one rank; this measures the per-step overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pipelines import env  # noqa: E402

env.setup()  # one BLAS thread, offline text model, as the CLI
ROOT = Path(__file__).resolve().parents[1]
FULL_CONFIG = ROOT / "recsys" / "configs" / "two_tower_full.toml"


def prepare(workdir: Path, preset: str) -> Path:
    from data.split import SplitConfig, load_or_create_split
    from data.stylemart import generate
    from data.validate import load_dataset
    from recsys.features import build_features
    from style.embeddings import embed_catalogue
    from style.encoder import MagentaStyleEncoder

    root = workdir / "datasets" / f"stylemart-{preset}"
    generate(root, preset, seed=0)
    ds = load_dataset(root)
    embed_catalogue(root, ds.items, MagentaStyleEncoder(), progress=False)
    build_features(ds, load_or_create_split(ds, SplitConfig(test_fraction=0.15, val_days=7)))  # caches text vectors
    return root


def worker(root: Path, batches: int, batch_size: int, warmup: int) -> None:
    import torch

    from data.split import load_or_create_split
    from data.validate import load_dataset
    from recsys.config import load_run_config
    from recsys.distributed_train import DistributedTrainer, plan_summary
    from recsys.features import build_features
    from recsys.sharding import init_distributed

    ctx = init_distributed()
    torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    ds = load_dataset(root)
    fs = build_features(ds, load_or_create_split(ds))
    config = load_run_config(FULL_CONFIG, {"train": {"batch_size": batch_size, "max_batches_per_epoch": warmup}})
    trainer = DistributedTrainer(fs, config.model, config.train, ctx, progress=False)
    examples = fs.training_examples("train")
    log_q = torch.from_numpy(fs.item_log_q(examples))
    run = trainer.start(fs)
    trainer.run_epoch(run, fs, examples, log_q, epoch=0)  # warm-up: allocations, first all-to-alls
    import dataclasses

    trainer.tcfg = dataclasses.replace(config.train, max_batches_per_epoch=batches)
    loss, seen, seconds = trainer.run_epoch(run, fs, examples, log_q, epoch=1)
    if ctx.is_main:
        print("RESULT " + json.dumps({"ranks": ctx.world_size, "threads_per_rank": torch.get_num_threads(), "examples": seen, "seconds": seconds, "examples_per_s": seen / seconds, "loss": loss, "plan": plan_summary(trainer.plan)}), flush=True)


def launch(nproc: int, threads: int, root: Path, args) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", __file__, "--worker", "--root", str(root), "--batches", str(args.batches), "--batch-size", str(args.batch_size), "--warmup", str(args.warmup)]
    env = {**os.environ, "BENCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{nproc} rank(s) failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="workspace")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batches", type=int, default=150, help="timed global batches")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.root), args.batches, args.batch_size, args.warmup)
        return
    t = time.perf_counter()
    root = prepare(Path(args.workdir), args.preset)
    print(f"StyleMart {args.preset} ready in {time.perf_counter() - t:.0f}s; full-feature two-tower ({FULL_CONFIG.name}), global batch {args.batch_size}, {args.batches} timed batches, {os.cpu_count()} cores")
    cores = os.cpu_count() or 1
    settings = [(1, 1), (1, cores), (2, max(1, cores // 2))]
    results = {}
    for nproc, threads in settings:
        r = launch(nproc, threads, root, args)
        results[(nproc, threads)] = r
        print(f"  {nproc} rank(s) x {threads} thread(s): {r['examples_per_s']:,.0f} examples/s ({r['seconds']:.1f}s for {r['examples']:,} examples, loss {r['loss']:.3f})")
    base = results[(1, cores)]["examples_per_s"]
    two = results[(2, max(1, cores // 2))]["examples_per_s"]
    one_thread = results[(1, 1)]["examples_per_s"]
    print(f"  2 ranks vs 1 rank on the same {cores} cores: {two / base:.2f}x")
    print(f"  2 ranks vs 1 rank x 1 thread (what a second machine would add, less communication): {two / one_thread:.2f}x")
    print(f"  plan (2 ranks): {json.dumps(results[(2, max(1, cores // 2))]['plan'])}")


if __name__ == "__main__":
    main()
