"""Ranker variants on the same windows: several LightGBM rankers per seed and variant, mean ± sd.

Why: on the StyleMart demo one ranker training moves test Recall@10 by about ±0.003 (its
negatives draw, LightGBM's row and feature sampling, the rounds early stopping picks), as
much as most changes one would try. A variant is better only when it is better over several
rankers per seed. Building the windows (sources and pair features at each window's start)
and the test candidates' features is most of a ranking run; this builds them once per seed
and caches them, then trains ``--rankers`` rankers per variant on them.

For each seed, on one dataset (as ``benchmarks/rank_quality.py``: the default two-tower
trained with that seed, or loaded from ``--cache``):

- the default ranker's windows, each seeing a two-tower trained before them (as ``stylerec
  rank train`` builds them), with every candidate (no negatives sampled), and the test
  fold's candidates with their features: cached under ``--cache`` (keyed by the dataset,
  the two-tower, the [rank] settings the windows depend on and the code under recsys/ and data/);
- ALS fitted at the test cutoff, scored by ``recsys.evaluate``: the ratios' baseline;
- per variant, ``--rankers`` rankers: ranker r draws its negatives per window and seeds
  LightGBM with ``seed + 1000 r`` (r = 0: the seed the pipeline's ranker uses; its negatives
  draw differs from the pipeline's, which samples before computing features), then
  ``recsys.rank.ranker.fit_lightgbm`` fits it exactly as ``fit_ranker`` does, and its test
  lists (``RankedRecommender.predict`` on the cached test features) are scored by
  ``recsys.evaluate`` as ``run_ranking`` scores them.

A variant is a name and [rank] settings that only the ranker's training reads (LightGBM's
parameters, ``negatives_per_user``, ``label_gain``) and ``exclude=`` feature names
(``style``: every style feature). Settings that change the windows (sources, windows, the
two-tower) need ``benchmarks/rank_quality.py --set``.

The table: each measure's mean over seeds x rankers ± the sd of the per-seed means, and each
variant's paired difference from the first variant (per-seed means, same windows).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/rank_variants.py demo [--seeds 0,1,2] [--rankers 3] \\
        [--cache workspace/rank-quality-cache] --variant base --variant 'leaves15:num_leaves=15' --variant 'no-style:exclude=style'
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

from pipelines import env

env.setup()  # before numpy loads OpenBLAS: one BLAS thread, offline text model, as the CLI

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

# [rank] settings read only after the windows are built: a variant may set them
TRAINING_SETTINGS = (
    "negatives_per_user", "label_gain", "n_estimators", "learning_rate", "num_leaves", "min_child_samples", "feature_fraction", "bagging_fraction",
    "lambda_l2", "early_stopping_rounds",
)
MEASURES = {  # column -> (slice, metric) of recsys.evaluate
    "Recall@10": ("all", "recall@10"), "NDCG@10": ("all", "ndcg@10"), "Recall@50": ("all", "recall@50"), "cold R@50": ("cold_items", "recall@50"),
}
TEST_CHUNK = 1024  # test users whose candidates' features are computed at once


@dataclass(frozen=True)
class Variant:
    name: str
    settings: dict
    exclude: tuple[str, ...] = ()


def parse_variant(text: str) -> Variant:
    """``NAME[:KEY=VALUE,...]``: values read as TOML; ``exclude=a+b`` (``style``: every style
    feature). A ValueError names what is wrong."""
    import tomllib

    from recsys.rank.config import load_rank_config
    from recsys.rank.features import STYLE_FEATURES

    name, _, rest = text.partition(":")
    if not name.strip():
        raise ValueError("a variant needs a name before ':'")
    settings: dict = {}
    exclude: tuple[str, ...] = ()
    for item in filter(None, (s.strip() for s in top_level_split(rest))):
        key, sep, value = (p.strip() for p in item.partition("="))
        if not sep or not key:
            raise ValueError(f"{item!r}: expected KEY=VALUE")
        if key == "exclude":
            exclude += tuple(f for part in value.split("+") for f in (STYLE_FEATURES if part == "style" else (part,)))
            continue
        if key not in TRAINING_SETTINGS:
            raise ValueError(f"{key!r} is not a setting only the ranker's training reads ({', '.join(TRAINING_SETTINGS)}); windows change with it: use rank_quality.py --set")
        try:
            settings[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{item!r}: not a TOML value ({exc})") from None
    load_rank_config(None, settings)  # a bad value is a RankConfigError (a ValueError) here
    return Variant(name.strip(), settings, exclude)


def top_level_split(text: str, sep: str = ",") -> list[str]:
    """``text`` split at each ``sep`` outside brackets (a TOML array's commas stay)."""
    parts, depth, start = [], 0, 0
    for at, char in enumerate(text):
        depth += (char in "[{") - (char in "]}")
        if char == sep and depth == 0:
            parts.append(text[start:at])
            start = at + 1
    return [*parts, text[start:]]


def code_digest() -> str:
    """sha256 of the code the windows' frames come from (every module under recsys/ and data/)."""
    repo = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for package in ("recsys", "data") for p in (repo / package).rglob("*.py")):
        digest.update(path.relative_to(repo).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def window_settings(config) -> dict:
    """The [rank] settings the windows' frames depend on (every setting but the training ones)."""
    return {f.name: getattr(config, f.name) for f in fields(config) if f.name not in TRAINING_SETTINGS}


def build_windows(seed: int, dataset_name: str, cache: Path | None) -> dict:
    """Seed ``seed``'s windows (every candidate), its test candidates' features and ALS's test
    metrics: built here, or read from ``cache``."""
    from rank_quality import dataset, two_tower_for  # benchmarks/rank_quality.py, next to this script

    from data.validate import load_dataset
    from recsys.baselines import ImplicitMF
    from recsys.config import load_run_config
    from recsys.evaluate import evaluate, load_ground_truth
    from recsys.features import DAY
    from recsys.rank.config import load_rank_config
    from recsys.rank.features import pair_features
    from recsys.rank.ranker import window_frame, window_starts
    from recsys.rank.run import EVAL, ranking_parts, windows_two_tower
    from recsys.training_run import run_key

    root, train_config, overrides = dataset(dataset_name)
    ds = load_dataset(root)
    run_config = load_run_config(train_config, {"train": {"seed": seed}})
    config = load_rank_config(None, {**overrides, "seed": seed})
    key = json.dumps({"data": ds.manifest.fingerprint, "two_tower": run_key(ds, run_config), "seed": seed, "rank": window_settings(config), "code": code_digest()}, sort_keys=True, default=str)
    folder = cache / "rank-variants" / f"{ds.manifest.name}-seed{seed}-{hashlib.sha256(key.encode()).hexdigest()[:12]}" if cache else None
    two_tower, fs = two_tower_for(ds, run_config, seed, cache)
    truth = load_ground_truth(fs, root)
    echo = lambda line: print(f"  seed {seed}: {line.strip()}", flush=True)  # noqa: E731
    parts = {"fs": fs, "truth": truth, "config": config}
    if folder is not None and (folder / "done.json").is_file():
        echo(f"windows and test candidates read from {folder}")
        parts["windows"] = [pl.read_parquet(folder / f"window{k}.parquet") for k in range(config.windows)]
        parts["test"] = pl.read_parquet(folder / "test.parquet")
        parts["als"] = json.loads((folder / "done.json").read_text())["als"]
        return parts
    started = time.perf_counter()
    cutoff = fs.time_of("test")
    window_tt = windows_two_tower(ds, fs, config, two_tower, run_config, cutoff, echo)
    gen, ctx, window_parts = ranking_parts(ds, fs, config, two_tower, window_tt)
    width = int(config.window_days * DAY)
    windows = [window_frame(*(window_parts[k] if window_parts else (gen, ctx)), s, s + width, None, seed + k) for k, s in enumerate(window_starts(cutoff, config))]
    users, _, times = fs.truth("test", mask_seen=True)
    until, at = int(fs.ev_ts.max()) + 1, int(times[0])
    test = pl.concat([pair_features(fs, gen.union(users[s : s + TEST_CHUNK], at, until), at, ctx, until) for s in range(0, len(users), TEST_CHUNK)])
    als = evaluate(ImplicitMF("als", seed=seed).fit(fs, cutoff), fs, EVAL, truth)
    echo(f"windows ({sum(w.height for w in windows):,} rows) and test candidates ({test.height:,} rows) built in {time.perf_counter() - started:.0f} s")
    if folder is not None:
        from data.io import atomic_path, write_parquet

        for k, w in enumerate(windows):
            write_parquet(w, folder / f"window{k}.parquet")
        write_parquet(test, folder / "test.parquet")
        with atomic_path(folder / "done.json") as tmp:  # last: marks the folder complete
            tmp.write_text(json.dumps({"als": als, "key": json.loads(key)}, indent=1, default=str))
    return {**parts, "windows": windows, "test": test, "als": als}


class FrameScores:
    """A recommender over precomputed candidate scores (``u``, ``i``, score); -inf elsewhere."""

    def __init__(self, u: np.ndarray, i: np.ndarray, score: np.ndarray, n_items: int):
        order = np.argsort(u, kind="stable")
        self.u, self.i, self.score, self.n_items = u[order], i[order], np.asarray(score, np.float32)[order], n_items

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        users = np.asarray(users, np.int64)
        lo, hi = np.searchsorted(self.u, users, "left"), np.searchsorted(self.u, users, "right")
        rows = np.repeat(np.arange(len(users)), hi - lo)
        at = np.repeat(lo, hi - lo) + np.arange(int((hi - lo).sum())) - np.repeat(np.cumsum(hi - lo) - (hi - lo), hi - lo)
        out = np.full((len(users), self.n_items), -np.inf, np.float32)
        out[rows, self.i[at]] = self.score[at]
        return out


def sampled(windows: list[pl.DataFrame], config) -> tuple[list[pl.DataFrame], pl.DataFrame]:
    """(training frames, whole validation window) as ``training_frames`` gives them: each
    window's negatives drawn with ``config.seed + k``, the last window also whole."""
    from recsys.rank.ranker import sample_negatives

    return [sample_negatives(w, config.negatives_per_user, config.seed + k) for k, w in enumerate(windows)], windows[-1]


def one_ranker(parts: dict, variant: Variant, seed: int, r: int) -> dict:
    from recsys.evaluate import evaluate
    from recsys.rank.config import load_rank_config
    from recsys.rank.features import STYLE_FEATURES, feature_names
    from recsys.rank.ranker import RankedRecommender, check_features, fit_lightgbm
    from recsys.rank.run import EVAL

    config = replace(load_rank_config(None, {**parts["config"].to_json(), **variant.settings}), seed=seed + 1000 * r)
    frames, val = sampled(parts["windows"], config)
    unknown = sorted(set(variant.exclude) - set(frames[0].columns) - set(STYLE_FEATURES))  # a style feature may be absent (no photos)
    if unknown:
        raise SystemExit(f"--variant {variant.name}: exclude names no feature of the windows: {unknown}")
    names = feature_names(frames[0], variant.exclude)
    check_features(pl.concat([f.select(names) for f in frames[:-1]]), names)
    started = time.perf_counter()
    fit = fit_lightgbm(config, frames, val, names)
    test = parts["test"]
    score = RankedRecommender(None, None, fit).predict(test)
    result = evaluate(FrameScores(test["u"].to_numpy(), test["i"].to_numpy(), score, parts["fs"].items.n), parts["fs"], EVAL, parts["truth"])
    row = {"variant": variant.name, "seed": seed, "ranker": r, "rounds": fit.best_iteration, "val NDCG@10": fit.val_ndcg_10, "seconds": time.perf_counter() - started}
    for column, (sl, metric) in MEASURES.items():
        row[column] = result[sl][metric]
    for column in RATIOS:
        sl, metric = MEASURES[column]
        row[f"{column} / ALS"] = row[column] / parts["als"][sl][metric]
    return row


RATIOS = ("Recall@10", "NDCG@10", "Recall@50")  # measures also given as a ratio to ALS's on the same seed
COLUMNS = ("val NDCG@10", "Recall@10", "NDCG@10", "Recall@50", "cold R@50", *(f"{c} / ALS" for c in RATIOS))


def per_seed(rows: list[dict], variant: str, column: str) -> np.ndarray:
    seeds = sorted({r["seed"] for r in rows})
    return np.array([np.mean([r[column] for r in rows if r["variant"] == variant and r["seed"] == s]) for s in seeds])


def summary(rows: list[dict], variants: list[Variant]) -> str:
    """Markdown: per variant, each column's mean ± sd of the per-seed means, the rounds'
    median and range; then each variant's paired difference from the first."""
    sd = lambda x: float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")  # noqa: E731
    lines = ["| variant | " + " | ".join(COLUMNS) + " | rounds (median, range) |", "| --- |" + " ---: |" * (len(COLUMNS) + 1)]
    for v in variants:
        cells = [f"{per_seed(rows, v.name, c).mean():.4f} ± {sd(per_seed(rows, v.name, c)):.4f}" for c in COLUMNS]
        rounds = [r["rounds"] for r in rows if r["variant"] == v.name]
        lines.append(f"| {v.name} | " + " | ".join(cells) + f" | {int(np.median(rounds))} ({min(rounds)}-{max(rounds)}) |")
    if len(variants) > 1:
        base = variants[0].name
        lines += ["", f"paired difference from {base} (per-seed means, mean ± sd over seeds):", ""]
        lines += ["| variant | " + " | ".join(COLUMNS) + " |", "| --- |" + " ---: |" * len(COLUMNS)]
        for v in variants[1:]:
            diffs = [per_seed(rows, v.name, c) - per_seed(rows, base, c) for c in COLUMNS]
            lines.append(f"| {v.name} | " + " | ".join(f"{d.mean():+.4f} ± {sd(d):.4f}" for d in diffs) + " |")
    seeds = sorted({r["seed"] for r in rows})
    for column in ("Recall@10 / ALS", "NDCG@10 / ALS"):
        lines.append(f"{column} per seed {seeds}: " + "; ".join(f"{v.name} " + ", ".join(f"{x:.3f}" for x in per_seed(rows, v.name, column)) for v in variants))
    lines.insert(len(lines) - 2, "")
    return "\n".join(lines)


def main() -> None:
    from rank_quality import seed_list  # benchmarks/rank_quality.py, next to this script

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="demo", help="demo, movielens or a dataset folder")
    parser.add_argument("--seeds", type=seed_list, default="0,1,2")
    parser.add_argument("--rankers", type=int, default=3, help="rankers per seed and variant")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME[:KEY=VALUE,...]", help="repeatable; default: base (the [rank] defaults)")
    parser.add_argument("--cache", default=None, help="folder of trained two-towers and built windows, re-used by a later run")
    parser.add_argument("--out", default=None, help="every ranker's figures (JSON)")
    parser.add_argument("--report", default=None, metavar="JSON", help="print the tables of the rankers an earlier run wrote (--out), and stop")
    args = parser.parse_args()
    if args.report:
        try:
            rows = json.loads(Path(args.report).read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--report {args.report}: {exc}")
        names = list(dict.fromkeys(r["variant"] for r in rows))
        print(summary(rows, [Variant(n, {}) for n in names]))
        return
    if args.rankers < 1:
        parser.error(f"--rankers must be >= 1, got {args.rankers}")
    try:
        variants = [parse_variant(v) for v in args.variant or ["base"]]
    except ValueError as exc:
        parser.error(f"--variant: {exc}")
    if len({v.name for v in variants}) < len(variants):
        parser.error("--variant: two variants share a name")
    cache = Path(args.cache) if args.cache else None
    rows: list[dict] = []
    from data.dataset import DatasetError

    for seed in args.seeds:
        try:
            parts = build_windows(seed, args.dataset, cache)
        except DatasetError as exc:
            parser.error(str(exc))
        for v in variants:
            for r in range(args.rankers):
                row = one_ranker(parts, v, seed, r)
                rows.append(row)
                print(f"  seed {seed}: {v.name} ranker {r}: " + ", ".join(f"{c} {row[c]:.4f}" for c in COLUMNS) + f", {row['rounds']} rounds ({row['seconds']:.0f} s)", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"\n{args.dataset}: {args.rankers} rankers per seed and variant, seeds {args.seeds}; mean over seeds x rankers ± sd of the per-seed means:\n")
    print(summary(rows, variants))


if __name__ == "__main__":
    main()
