"""Two-tower training throughput on StyleMart `small`, against implicit ALS on the same data.

Sets up what it needs (generates `small`, embeds its photos, caches text vectors; all
re-used on later runs), then times one training epoch of the default two-tower model and
implicit's ALS fit on the same training interactions. Usage:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/train.py [--workdir workspace]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from pipelines import env  # noqa: E402

env.setup()  # one BLAS thread, offline text model, as the CLI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="workspace")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    import torch

    from data.split import SplitConfig, load_or_create_split
    from data.stylemart import generate
    from data.validate import load_dataset
    from recsys.baselines import ImplicitMF
    from recsys.features import build_features
    from recsys.model import TwoTowerConfig
    from recsys.train import Trainer, TrainConfig
    from style.embeddings import embed_catalogue
    from style.encoder import MagentaStyleEncoder

    root = Path(args.workdir) / "datasets" / f"stylemart-{args.preset}"
    t = time.perf_counter()
    generate(root, args.preset, seed=0)
    ds = load_dataset(root)
    embed_catalogue(root, ds.items, MagentaStyleEncoder(), progress=False)
    fs = build_features(ds, load_or_create_split(ds, SplitConfig(test_fraction=0.15, val_days=7)))
    setup = time.perf_counter() - t

    config = TrainConfig(batch_size=args.batch_size)
    trainer = Trainer(fs, TwoTowerConfig(), config, progress=False)
    examples = fs.training_examples("train")
    log_q = torch.from_numpy(fs.item_log_q(examples))
    loss, seen, seconds = trainer.run_epoch(trainer.start(fs), fs, examples, log_q, epoch=0)
    per_s = seen / seconds

    train_interactions = int((fs.ev_fold == "train").sum())
    t = time.perf_counter()
    ImplicitMF("als").fit(fs, fs.time_of("val"))
    als_seconds = time.perf_counter() - t

    print(f"StyleMart {args.preset}: {ds.interactions.height:,} interactions, {fs.items.n:,} items, {fs.n_users:,} users (setup {setup:.0f}s)")
    print(f"  two-tower epoch: {seen:,} examples (first interactions of user-item pairs in {train_interactions:,} training interactions)")
    print(f"    {seconds:.1f} s/epoch, {per_s:,.0f} examples/s, batch {args.batch_size}, torch threads {torch.get_num_threads()}, loss {loss:.3f}")
    print(f"    projected: {1e6 / per_s:.0f} s per 1M examples (goal <= 120 s)")
    print(f"  implicit ALS fit (64 factors, 15 iterations, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}): {als_seconds:.1f} s on the same {train_interactions:,} interactions")
    print(f"  two-tower epoch / ALS fit: {seconds / als_seconds:.2f}x")


if __name__ == "__main__":
    main()
