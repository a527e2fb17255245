"""Model quality on StyleMart demo: the README's results table, mean ± sd over training seeds.

A single training run is not a result: the same seed gives different models on different
CPUs (float summation order), and the spread between seeds is as large as many of the
differences one would like to read off a table. This script trains and scores every model
of the README's table once per seed on the dataset `make demo` builds (StyleMart `demo`,
data seed 42, the last 15 % of the timeline as test, the 7 days before as validation):

- the baselines (popularity, last-7-days popularity, ALS and BPR with ``random_state`` =
  seed, style-KNN, text-KNN), the default two-tower and the two-tower variants asked for
  (default: ids only; ``--variants two-tower-id-only,two-tower-full`` adds the slow one), all scored
  by ``recsys.evaluate`` on the test fold;
- the simulated A/B test of the two-tower against ALS on StyleMart's ground-truth shoppers
  (4,000 users, 14 days, a slot of 10; simulation seed = seed), read as the noise-free
  expected purchases per user of each arm.

It prints the table as mean ± sd (sample sd) and writes every run's figures to JSON.
Usage (about 5 minutes per seed on 2 cores):

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/quality.py [DATASET] [--seeds 0,1,2] [--out quality.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipelines import env

env.setup()  # before numpy loads OpenBLAS: one BLAS thread, offline text model, as the CLI

import numpy as np  # noqa: E402

DEMO = Path("workspace/datasets/stylemart-demo")
COLUMNS = {  # README column -> (slice, metric)
    "all": ("all", "recall@50"),
    "warm items": ("warm_items", "recall@50"),
    "cold items": ("cold_items", "recall@50"),
    "warm users": ("warm_users", "recall@50"),
    "cold users": ("cold_users", "recall@50"),
    "Recall@10": ("all", "recall@10"),
    "NDCG@10": ("all", "ndcg@10"),
    "Recall@100": ("all", "recall@100"),
    "coverage@50": ("all", "coverage@50"),
    "style consistency@50": ("all", "style_consistency@50"),
    "true style affinity@50": ("all", "gt_style_affinity@50"),
}
LABELS = {
    "popularity": "popularity",
    "popularity-7d": "popularity, last 7 days",
    "als": "implicit ALS",
    "bpr": "implicit BPR",
    "style-knn": "style-KNN",
    "text-knn": "text-KNN",
    "two-tower": "**two-tower (style + text + behaviour)**",
    "two-tower-id-only": "two-tower, ids only",
    "two-tower-full": "two-tower, content + every id feature (`two_tower_full.toml`)",
}


def demo_dataset(root: Path) -> Path:
    """The dataset `make demo` builds, made here when missing (same steps, same seeds)."""
    from data.split import SplitConfig, load_or_create_split
    from data.stylemart import generate
    from data.validate import ValidationConfig, validate_dataset
    from style.embeddings import embed_catalogue
    from style.encoder import MagentaStyleEncoder

    from data.validate import load_dataset

    if not (root / "manifest.json").is_file():
        generate(root, "demo", 42)
        ds = validate_dataset(root, ValidationConfig(check_images=True))  # decodes every image, once
    else:
        ds = load_dataset(root)  # keeps what an earlier validation quarantined
    load_or_create_split(ds, SplitConfig(test_fraction=0.15, val_days=7))
    if not (root / "style" / "style_embeddings.parquet").is_file():
        embed_catalogue(root, ds.items, MagentaStyleEncoder(), progress=False)
    return root


def one_seed(root: Path, seed: int, variants: tuple[str, ...]) -> dict:
    """Every model's test metrics and the A/B simulation for one training seed."""
    from data.validate import load_dataset
    from recsys.ab.simulate import simulate_experiment
    from recsys.baselines import default_baselines
    from recsys.config import load_run_config, model_variant
    from recsys.evaluate import EvalConfig, evaluate, load_ground_truth
    from recsys.serving import LoadedModel
    from recsys.train import Trainer, TwoTowerRecommender
    from recsys.training_run import features_for

    ds = load_dataset(root)
    config = load_run_config(None, {"train": {"seed": seed}})
    fs = features_for(ds, config)
    truth = load_ground_truth(fs, root)
    test_start = fs.time_of("test")
    results, seconds = {}, {}
    for baseline in default_baselines(seed):
        started = time.perf_counter()
        results[baseline.name] = evaluate(baseline.fit(fs, test_start), fs, EvalConfig(), truth)
        seconds[baseline.name] = time.perf_counter() - started
    trained = None
    for name in ("two-tower", *variants):
        started = time.perf_counter()
        model_config = config.model if name == "two-tower" else model_variant(name, config.model)
        result = Trainer(fs, model_config, config.train, progress=False).fit()
        recommender = TwoTowerRecommender(result.model, result.features)
        results[name] = evaluate(recommender, result.features, EvalConfig(), truth)
        seconds[name] = time.perf_counter() - started
        if name == "two-tower":
            trained = LoadedModel(result.model, result.features, f"seed-{seed}", recommender)
        print(f"  seed {seed}: {name:<18} recall@50 {results[name]['all']['recall@50']:.4f}  ({seconds[name]:.0f} s)", flush=True)
    _, _, sim = simulate_experiment(ds, "als", "two-tower", n_users=4000, days=14, seed=seed, load_model=lambda spec: trained)
    expected = sim["expected_purchases_per_user"]
    ab = {"expected_purchases_per_user": expected, "lift": expected["treatment"] / expected["control"] - 1}
    return {"seed": seed, "results": results, "seconds": seconds, "ab": ab}


def mean_sd(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def table(runs: list[dict]) -> str:
    """The README's table: one row per model, mean ± sd over the seeds in each cell."""
    lines = ["| model | " + " | ".join(COLUMNS) + " |", "| --- |" + " ---: |" * len(COLUMNS)]
    for name, label in LABELS.items():
        cells = []
        for slice_name, metric in COLUMNS.values():
            if name not in runs[0]["results"]:
                break
            values = [r["results"][name].get(slice_name, {}).get(metric) for r in runs]
            if any(v is None for v in values):
                cells.append("–")
                continue
            mean, sd = mean_sd(values)
            digits = 3 if metric.startswith(("coverage", "style", "gt_")) else 4
            cells.append(f"{mean:.{digits}f} ± {sd:.{digits}f}")
        if cells:
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(runs: list[dict]) -> str:
    def per_seed(f) -> str:
        mean, sd = mean_sd([f(r) for r in runs])
        return f"{mean:.3f} ± {sd:.3f}"

    res = lambda r, m, s, k: r["results"][m][s][k]  # noqa: E731
    return "\n".join(
        [
            f"two-tower / ALS, Recall@50: {per_seed(lambda r: res(r, 'two-tower', 'all', 'recall@50') / res(r, 'als', 'all', 'recall@50'))}",
            f"two-tower / ALS, Recall@10: {per_seed(lambda r: res(r, 'two-tower', 'all', 'recall@10') / res(r, 'als', 'all', 'recall@10'))}",
            f"two-tower / ALS, NDCG@10:   {per_seed(lambda r: res(r, 'two-tower', 'all', 'ndcg@10') / res(r, 'als', 'all', 'ndcg@10'))}",
            f"two-tower cold / warm items, Recall@50: {per_seed(lambda r: res(r, 'two-tower', 'cold_items', 'recall@50') / res(r, 'two-tower', 'warm_items', 'recall@50'))}",
            f"simulated A/B, two-tower vs ALS, expected purchases per user: {per_seed(lambda r: 100 * r['ab']['lift'])} % "
            f"(ALS {mean_sd([r['ab']['expected_purchases_per_user']['control'] for r in runs])[0]:.3f}, "
            f"two-tower {mean_sd([r['ab']['expected_purchases_per_user']['treatment'] for r in runs])[0]:.3f} per user)",
        ]
    )


def main() -> None:
    from rank_quality import seed_list  # benchmarks/rank_quality.py, next to this script

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default=str(DEMO))
    parser.add_argument("--seeds", type=seed_list, default="0,1,2")
    parser.add_argument("--variants", default="two-tower-id-only", help="two-tower variants trained beside the default, comma-separated (two-tower-full: ~15 min per seed more)")
    parser.add_argument("--out", default="quality.json", help="every run's figures (JSON)")
    args = parser.parse_args()
    seeds = args.seeds
    root = demo_dataset(Path(args.dataset))
    variants = tuple(v for v in args.variants.split(",") if v)
    runs = [one_seed(root, seed, variants) for seed in seeds]
    Path(args.out).write_text(json.dumps(runs, indent=1))
    print(f"\nStyleMart demo ({root}), test Recall@50 by slice unless named; mean ± sd over training seeds {seeds}:\n")
    print(table(runs))
    print()
    print(ratios(runs))
    print(f"\nevery run's figures: {args.out}")


if __name__ == "__main__":
    main()
