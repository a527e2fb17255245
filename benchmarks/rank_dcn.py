"""The DCN-v2 ranker beside the LightGBM ranker on StyleMart demo: one run, one seed.

Trains a quick two-tower (``--tt-epochs`` epochs, no refit: a weak retrieval model, to keep
the run short), then ``run_ranking`` with the default ``[rank]`` config (LightGBM) and the
ablation ``multi-source + DCN-v2 ranker`` (the same sources, windows and features ranked by
``recsys/rank/dcn.py``). Prints and writes to JSON: each ranker's validation NDCG@10 (the
last training window, every candidate) and curve, the test Recall@10 / NDCG@10 /
Recall@50 of both rankers, ALS and the two-tower, and the timings.

``--sweep``: instead, the DCN-v2's validation NDCG@10 (early stopping, no refit, no test)
for the default ``[rank]`` keys and a few single changes of them (``SWEEP``), on one set of
training frames: how the defaults were chosen.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/rank_dcn.py [DATASET] [--seed 0] [--tt-epochs 2] [--out rank_dcn.json] [--sweep]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipelines import env

env.setup()  # before numpy loads OpenBLAS: one BLAS thread, offline text model, as the CLI

DEMO = Path("workspace/datasets/stylemart-demo")
DCN = "multi-source + DCN-v2 ranker"
# single changes of the [rank] defaults the sweep tries (dcn_id_buckets = 1: one shared row, i.e. no id information)
SWEEP = (
    {},
    {"dcn_lr": 1e-4},
    {"dcn_lr": 1e-3},
    {"dcn_weight_decay": 0.1},
    {"dcn_embedding_dim": 4},
    {"dcn_id_buckets": 1},
    {"dcn_cross_layers": 2, "dcn_low_rank": 8},
    {"dcn_hidden": 64},
    {"dcn_batch_groups": 256},
)


def sweep(ds, fs, two_tower, seed: int) -> list[dict]:
    """Validation NDCG@10 of the DCN-v2 for each ``SWEEP`` change, on one set of frames."""
    import dataclasses

    from recsys.rank.config import RankConfig
    from recsys.rank.dcn import validation_curve
    from recsys.rank.ranker import training_frames
    from recsys.rank.features import FeatureContext
    from recsys.rank.run import catalogue_prices
    from recsys.rank.sources import CandidateGenerator

    base = RankConfig(seed=seed, model="dcn")
    gen = CandidateGenerator(fs, base, two_tower)
    ctx = FeatureContext(catalogue_prices(ds, fs), two_tower=two_tower, als=gen.sources.get("als"), max_sim_history=base.max_sim_history)
    frames, val, names = training_frames(gen, ctx, fs.time_of("test"))
    rows = []
    for change in SWEEP:
        started = time.perf_counter()
        curve, best, _ = validation_curve(dataclasses.replace(base, **change), frames, val, names, fs.n_users, fs.items.n)
        rows.append({"change": change or "defaults", "ndcg_10": curve[best - 1], "best_epoch": best, "curve": curve, "seconds": time.perf_counter() - started})
        print(f"  {str(change or 'defaults'):<45} validation NDCG@10 {curve[best - 1]:.4f} at epoch {best} of {len(curve)} ({rows[-1]['seconds']:.0f} s)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default=str(DEMO))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tt-epochs", type=int, default=2)
    parser.add_argument("--out", default="rank_dcn.json")
    parser.add_argument("--sweep", action="store_true", help="the DCN-v2's validation NDCG@10 over SWEEP instead of the comparison")
    args = parser.parse_args()

    import torch

    from data.validate import load_dataset
    from recsys.config import load_run_config
    from recsys.evaluate import load_ground_truth
    from recsys.rank.config import RankConfig
    from recsys.rank.run import format_test, run_ranking
    from recsys.train import Trainer, TwoTowerRecommender
    from recsys.training_run import features_for

    torch.set_num_threads(1)
    root = Path(args.dataset)
    ds = load_dataset(root)
    config = load_run_config(None, {"train": {"seed": args.seed, "epochs": args.tt_epochs, "refit": False}})
    started = time.perf_counter()
    result = Trainer(features_for(ds, config), config.model, config.train, progress=False).fit()
    two_tower = TwoTowerRecommender(result.model, result.features)
    fs = result.features
    seconds = {"two-tower": time.perf_counter() - started}
    print(f"two-tower: {args.tt_epochs} epochs, best validation Recall@50 {result.best_val_recall_50:.4f} ({seconds['two-tower']:.0f} s)", flush=True)

    if args.sweep:
        Path(args.out).write_text(json.dumps({"dataset": str(root), "seed": args.seed, "two_tower_epochs": args.tt_epochs, "sweep": sweep(ds, fs, two_tower, args.seed)}, indent=2))
        print(f"wrote {args.out}")
        return
    rank_config = RankConfig(seed=args.seed)
    started = time.perf_counter()
    ranking = run_ranking(ds, fs, rank_config, two_tower, load_ground_truth(fs, root), ablations=(DCN,), echo=lambda s: print(s, flush=True))
    seconds["ranking"] = time.perf_counter() - started
    fits = {"lightgbm": ranking.fit, "dcn": ranking.variants[DCN]}
    print(format_test(ranking.test))
    for name, fit in fits.items():
        print(f"{name}: validation NDCG@10 {fit.val_ndcg_10:.4f} at {fit.best_iteration} ({len(fit.val_curve)} evaluated)")
    out = {
        "dataset": str(root), "seed": args.seed, "two_tower_epochs": args.tt_epochs, "rank_config": rank_config.flat_params(),
        "validation": {name: {"ndcg_10": fit.val_ndcg_10, "best": fit.best_iteration, "curve": fit.val_curve, "train_rows": fit.train_rows, "val_rows": fit.val_rows} for name, fit in fits.items()},
        "test": {model: {m: res["all"][m] for m in ("recall@10", "ndcg@10", "recall@50")} | {"cold_items.recall@50": res.get("cold_items", {}).get("recall@50")} for model, res in ranking.test.items()},
        "seconds": seconds,
    }
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
