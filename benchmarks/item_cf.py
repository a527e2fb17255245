"""Item-CF neighbour pruning: speed against retrieval recall, per ``[rank] item_cf_neighbours``.

For each number of neighbours kept per item (``all`` = the full co-occurrence matrix), at the
test cutoff of a dataset: the matrix's stored entries per item, the time to fit it, item-CF's
users/s for the test users' top-N, the share of the test purchases and of the whole test
truth (click / cart / purchase) its lists hold, and the same for the union of every default
source except the two-tower (no trained model needed). Pruning is worth it when the union's
recall stays where the full matrix puts it. Usage:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/item_cf.py demo                  # or movielens, or a folder
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/item_cf.py DIR --neighbours all,1000,400,200
"""

from __future__ import annotations

import argparse
import time

from pipelines import env

env.setup()  # before numpy loads OpenBLAS: one BLAS thread, as the CLI

import numpy as np  # noqa: E402


def main() -> None:
    from rank_quality import dataset  # benchmarks/rank_quality.py, next to this script

    from data.split import load_or_create_split
    from data.validate import load_dataset
    from recsys.features import build_features
    from recsys.rank.config import RankConfig
    from recsys.rank.sources import CandidateGenerator, ItemCF, retrieval_recall, source_candidates, truth_pairs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="demo", help="demo, movielens or a dataset folder")
    parser.add_argument("--neighbours", default="all,1000,400,200,100")
    args = parser.parse_args()
    try:
        kept = [None if k.strip() == "all" else int(k) for k in args.neighbours.split(",")]
    except ValueError:
        parser.error(f"--neighbours: comma-separated integers or 'all', got {args.neighbours!r}")
    if any(k is not None and k < 1 for k in kept):
        parser.error(f"--neighbours: each must be >= 1, got {args.neighbours!r}")
    root, _, overrides = dataset(args.dataset)
    ds = load_dataset(root)
    fs = build_features(ds, load_or_create_split(ds), require_style=False)
    cutoff, end = fs.time_of("test"), int(fs.ev_ts.max()) + 1
    defaults = RankConfig(**overrides)
    config = RankConfig(**{**overrides, "sources": {k: v for k, v in defaults.sources.items() if k != "two_tower"}})
    truths = {"purchases": truth_pairs(fs, cutoff, end, ("purchase",)), "truth": truth_pairs(fs, cutoff, end, fs.config.eval_events)}
    users = np.unique(truths["truth"]["u"].to_numpy())
    n = config.sources["item_cf"]
    print(f"{root}: {fs.items.n:,} items, {len(users):,} test users; item-CF top-{n} from the last {config.item_cf_recent} events; union: {list(config.source_names)}")
    print(f"{'neighbours':>10}{'entries/item':>14}{'fit s':>8}{'users/s':>10}{'item-CF purchases':>19}{'item-CF truth':>15}{'union purchases':>17}{'union truth':>13}")
    gen = CandidateGenerator(fs, config).at(cutoff)  # every source fitted once; item-CF replaced below
    for neighbours in kept:
        started = time.perf_counter()
        gen.sources["item_cf"] = ItemCF(config.item_cf_recent, neighbours).fit(fs, cutoff)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        source_candidates(gen.sources["item_cf"], fs, users, cutoff, n, config.exclude_seen, end)
        per_s = len(users) / (time.perf_counter() - started)
        union = gen.union(users, cutoff, end)
        recall = {name: retrieval_recall(union, truth, gen.source_names) for name, truth in truths.items()}
        entries = gen.sources["item_cf"].co.nnz / fs.items.n
        print(f"{neighbours or 'all':>10}{entries:>14,.0f}{fit_s:>8.1f}{per_s:>10,.0f}{recall['purchases']['item_cf']:>19.4f}{recall['truth']['item_cf']:>15.4f}"
              f"{recall['purchases']['all']:>17.4f}{recall['truth']['all']:>13.4f}")


if __name__ == "__main__":
    main()
