"""How steady is the new-item boost's pick? The plain argmax of validation NDCG@50 against
the bagged pick that ``recsys.rank.ranker.fit_new_item_boost`` makes (the argmax averaged
over bootstrap resamples of the validation users).

For each seed, on the StyleMart demo: the default two-tower trained with that seed (or
loaded from ``--cache``, as ``benchmarks/rank_quality.py`` keeps them), the default ranker's
windows built once (each seeing a two-tower trained before them, as ``stylerec rank train``
builds them), then ``--models`` LightGBM rankers on those windows that differ only in
LightGBM's seed (bagging and feature fractions draw with it). Each ranker's boost is picked
both ways on its own validation scores, and its test lists are scored both ways by
``recsys.evaluate``: Recall@10 and cold-item Recall@50, beside the two-tower's cold-item
Recall@50. A steady pick moves little between rankers that differ by a seed.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/boost_pick.py [--seeds 0,1,2] [--models 5] [--cache workspace/rank-quality-cache]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from pipelines import env

env.setup()  # before numpy loads OpenBLAS: one BLAS thread, offline text model, as the CLI

import numpy as np  # noqa: E402


def one_seed(seed: int, models: int, cache: Path | None) -> list[dict]:
    from rank_quality import dataset, two_tower_for

    from data.validate import load_dataset
    from recsys.config import load_run_config
    from recsys.evaluate import evaluate, load_ground_truth
    from recsys.rank.config import load_rank_config
    from recsys.rank.ranker import BOOSTS, RankedRecommender, fit_lightgbm, training_frames
    from recsys.rank.run import EVAL, ranking_parts, windows_two_tower

    root, train_config, overrides = dataset("demo")
    ds = load_dataset(root)
    run_config = load_run_config(train_config, {"train": {"seed": seed}})
    two_tower, fs = two_tower_for(ds, run_config, seed, cache)
    truth = load_ground_truth(fs, root)
    config = load_rank_config(None, {**overrides, "seed": seed})
    cutoff = fs.time_of("test")

    echo = lambda line: print(f"  seed {seed}: {line.strip()}", flush=True)  # noqa: E731
    window_tt = windows_two_tower(ds, fs, config, two_tower, run_config, cutoff, echo)
    gen, ctx, window_parts = ranking_parts(ds, fs, config, two_tower, window_tt)
    frames, val, names = training_frames(gen, ctx, cutoff, window_parts=window_parts)
    tt_cold = evaluate(two_tower, fs, EVAL, truth)["cold_items"]["recall@50"]
    rows = []
    for k in range(models):
        fit = fit_lightgbm(replace(config, seed=1000 * seed + k), frames, val, names)
        plain = BOOSTS[int(np.argmax(np.round(fit.boost_curve, 12)))] * fit.boost_unit
        row = {"seed": seed, "model": k, "two_tower_cold": tt_cold}
        for pick, boost in (("plain", plain), ("bagged", fit.new_item_boost)):
            result = evaluate(RankedRecommender(gen, ctx, replace(fit, new_item_boost=boost), until=int(fs.ev_ts.max()) + 1), fs, EVAL, truth)
            row[pick] = {"boost_sd": boost / fit.boost_unit, "recall@10": result["all"]["recall@10"], "cold_recall@50": result["cold_items"]["recall@50"]}
        echo(
            f"ranker {k}: plain pick {row['plain']['boost_sd']:.2f} sd (R@10 {row['plain']['recall@10']:.4f}, cold R@50 {row['plain']['cold_recall@50']:.4f}), "
            f"bagged {row['bagged']['boost_sd']:.2f} sd (R@10 {row['bagged']['recall@10']:.4f}, cold R@50 {row['bagged']['cold_recall@50']:.4f}); two-tower cold R@50 {tt_cold:.4f}"
        )
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> str:
    """Per pick: the boost (mean ± sd, range, in validation-score sd), Recall@10 and
    cold-item Recall@50 (mean ± sd, min) over every ranker, and how many rankers' cold-item
    Recall@50 fell under their seed's two-tower's."""
    lines = ["| pick | boost (sd units) | Recall@10 | cold-item Recall@50 | cold items under the two-tower's |", "| --- | --- | --- | --- | --- |"]
    for pick in ("plain", "bagged"):
        boost = np.array([r[pick]["boost_sd"] for r in rows])
        r10 = np.array([r[pick]["recall@10"] for r in rows])
        cold = np.array([r[pick]["cold_recall@50"] for r in rows])
        under = sum(r[pick]["cold_recall@50"] < r["two_tower_cold"] for r in rows)
        sd = lambda x: float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")  # noqa: E731
        lines.append(
            f"| {pick} | {boost.mean():.2f} ± {sd(boost):.2f} ({boost.min():.2f}-{boost.max():.2f}) | {r10.mean():.4f} ± {sd(r10):.4f} "
            f"| {cold.mean():.3f} ± {sd(cold):.3f} (min {cold.min():.3f}) | {under} of {len(rows)} |"
        )
    return "\n".join(lines)


def main() -> None:
    from rank_quality import seed_list  # benchmarks/rank_quality.py, next to this script

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default="0,1,2")
    parser.add_argument("--models", type=int, default=5, help="LightGBM seeds per seed")
    parser.add_argument("--cache", default=None, help="folder of trained two-towers, as benchmarks/rank_quality.py --cache")
    args = parser.parse_args()
    if args.models < 1:
        parser.error(f"--models must be >= 1, got {args.models}")
    rows = []
    for seed in args.seeds:
        rows += one_seed(seed, args.models, Path(args.cache) if args.cache else None)
    print(f"\nStyleMart demo, {len(rows)} rankers (seeds {','.join(map(str, args.seeds))} x {args.models} LightGBM seeds):\n")
    print(summary(rows))


if __name__ == "__main__":
    main()
