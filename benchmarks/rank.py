"""Ranking-stage throughput on StyleMart `small`: candidates + pair features + LightGBM, users/s.

Sets up what it needs once (generates `small` and embeds its photos as benchmarks/train.py
does, trains a short two-tower and a fast ranker; all re-used on later runs, under
``WORKDIR/bench-rank``), then scores users at the test cutoff in chunks, the way a batch
job serves the ranker: sources -> union -> pair_features -> RankedRecommender.predict -> top-k
(``RankedRecommender.top_k``). Each scoring run is its own process, so its peak RSS is its
own; RSS is sampled every 5 ms while it scores. Runs:

- the chunked top-k path for half the users and for all of them (RSS must not grow);
- all the users on two processes at once, one thread each, every other chunk each: what
  ``stylerec candidates --rank --nproc 2`` does on a 2-core machine (``--no-two-processes``
  skips it);
- the evaluation path (``RankedRecommender.scores``, a dense (users x items) matrix per
  chunk, then ``recsys.evaluate.top_k``) on the first chunks, whose ranked scores are
  compared with the top-k path's;
- this code with glibc's default allocator behaviour (``STYLEREC_KEEP_FREED_MEMORY=0``:
  each freed array handed back to the kernel), to tell the code's share of the speed-up
  from the allocator setting's (``pipelines.env.keep_freed_memory``);
- the baseline in the same run: the same top-k path with the ranking code as it was before
  the speed-up (``--baseline-rev``, extracted with ``git archive``; its own entry set-up),
  on the same users as the half run, and on all users on two processes (the two-process run's ratio is to
  it); the first chunks' ranked scores are compared too. The baseline must compute every
  feature the ranker uses: an older revision stops the run, naming the missing features.

users/s counts the chunks only. What a process pays once before its first chunk is reported
beside it, as a batch job pays it once however many users it scores: fitting the sources at
the cutoff (once per time), and the catalogue's style groups (once per catalogue: the graph
groups' import of scikit-learn and their eigenvectors; ~1 s in all on `small`) with the log's
statistics at the cutoff. "with once" counts the latter too (the slowest process's).

The two-tower is trained for ``--epochs`` (default 1, no refit): enough to measure speed,
not a model whose quality means anything. Usage:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/rank.py [--workdir workspace] [--chunk 1024] [--k 100]

``--chunk`` defaults to the batch ``stylerec candidates --rank`` scores at once on the
preset's catalogue, within a part (``recsys.rank.serving.score_batch_users``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipelines import env  # noqa: E402

env.setup()  # one BLAS thread, offline text model, as the CLI

from recsys.rank.serving import score_batch_users  # noqa: E402

# ~200 candidates per user in the union on `small` (the default [rank] sources give ~390)
SOURCES = {"two_tower": 50, "als": 50, "item_cf": 50, "style_knn": 25, "text_knn": 25, "popular": 25, "popular_in_category": 25, "new_arrivals": 15}
# a fast ranker: fewer trees and negatives than the default, the same features
RANK = {"sources": SOURCES, "n_estimators": 100, "early_stopping_rounds": 10, "negatives_per_user": 20}


def prepare(workdir: Path, preset: str) -> Path:
    """StyleMart ``preset`` (seed 0, as benchmarks/train.py and scale.py), validated with every
    image decoded when generated here, split, photos embedded."""
    from data.split import SplitConfig, load_or_create_split
    from data.stylemart import generate
    from data.validate import ValidationConfig, load_dataset, validate_dataset
    from style.embeddings import embed_catalogue
    from style.encoder import MagentaStyleEncoder

    root = workdir / "datasets" / f"stylemart-{preset}"
    fresh = not (root / "manifest.json").is_file()
    generate(root, preset, seed=0)
    ds = validate_dataset(root, ValidationConfig(check_images=True)) if fresh else load_dataset(root)
    load_or_create_split(ds, SplitConfig(test_fraction=0.15, val_days=7))
    if not (root / "style" / "style_embeddings.parquet").is_file():
        embed_catalogue(root, ds.items, MagentaStyleEncoder(), progress=False)
    return root


def train_models(root: Path, folder: Path, epochs: int) -> dict:
    """A short two-tower (bundle) and a fast ranker (LightGBM text file) in ``folder``; re-used when there
    (the ranker: for the same ``RANK`` and [rank] defaults, so a new default booster is retrained)."""
    from recsys.rank.config import RankConfig

    tag = RankConfig(**RANK).sha256()[:12]
    meta_path = folder / f"models-{tag}.json"
    if meta_path.is_file():
        return json.loads(meta_path.read_text())
    from data.split import load_or_create_split
    from data.validate import load_dataset
    from recsys.bundle import save_bundle
    from recsys.features import build_features
    from recsys.model import TwoTowerConfig
    from recsys.rank.features import FeatureContext
    from recsys.rank.ranker import fit_ranker
    from recsys.rank.run import catalogue_prices
    from recsys.rank.sources import CandidateGenerator
    from recsys.bundle import load_for_dataset
    from recsys.train import Trainer, TrainConfig, TwoTowerRecommender

    ds = load_dataset(root)
    tt_meta = folder / "two_tower.json"
    if not tt_meta.is_file():
        fs = build_features(ds, load_or_create_split(ds))
        started = time.perf_counter()
        result = Trainer(fs, TwoTowerConfig(), TrainConfig(epochs=epochs, refit=False), progress=False).fit()
        tt_seconds = time.perf_counter() - started
        save_bundle(folder / "bundle", result.model, result.features, ("train",), tables_sha256=ds.manifest.content_sha256)
        tt_meta.write_text(json.dumps({"two_tower_epochs": epochs, "two_tower_val_recall_50": result.best_val_recall_50, "two_tower_seconds": tt_seconds}))
    model, fs = load_for_dataset(folder / "bundle", ds)
    tt = TwoTowerRecommender(model, fs)
    config = RankConfig(**RANK)
    gen = CandidateGenerator(fs, config, tt)
    ctx = FeatureContext(catalogue_prices(ds, fs), two_tower=tt, als=gen.sources.get("als"), max_sim_history=config.max_sim_history)
    started = time.perf_counter()
    fit = fit_ranker(gen, ctx, fs.time_of("test"))
    rank_seconds = time.perf_counter() - started
    fit.model.save_model(str(folder / f"ranker-{tag}.txt"))
    meta = {
        **json.loads(tt_meta.read_text()), "ranker_file": f"ranker-{tag}.txt", "ranker_seconds": rank_seconds, "ranker_best_iteration": fit.best_iteration, "ranker_val_ndcg_10": fit.val_ndcg_10,
        "ranker_train_rows": fit.train_rows, "features": fit.features,
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


CHILD = r"""
import json, os, resource, sys, threading, time
from pathlib import Path
from pipelines import env
env.setup()
import numpy as np
root, folder, n_users, chunk, k, mode, out = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], Path(sys.argv[7])
RANK, ranker_file, rank, world = json.loads(sys.argv[8]), sys.argv[9], int(sys.argv[10]), int(sys.argv[11])

PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE
peak = [0]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.005)

import lightgbm
from data.validate import load_dataset
from recsys.bundle import load_for_dataset
from recsys.evaluate import top_k as dense_top_k
from recsys.rank.config import RankConfig
from recsys.rank.features import FeatureContext, pair_features
from recsys.rank.ranker import RankedRecommender, RankerFit
from recsys.rank.run import catalogue_prices
from recsys.rank.sources import CandidateGenerator, candidate_union
from recsys.train import TwoTowerRecommender

ds = load_dataset(root)
model, fs = load_for_dataset(folder / "bundle", ds)
tt = TwoTowerRecommender(model, fs)
config = RankConfig(**RANK)
gen = CandidateGenerator(fs, config, tt)
ctx = FeatureContext(catalogue_prices(ds, fs), two_tower=tt, als=gen.sources.get("als"), max_sim_history=config.max_sim_history)
booster = lightgbm.Booster(model_file=str(folder / ranker_file))
rec = RankedRecommender(gen, ctx, RankerFit(booster, booster.feature_name(), 0, float("nan"), [], 0, 0))
cutoff = fs.time_of("test")
tt.item_matrix()
t = time.perf_counter()
gen.at(cutoff)  # every source fitted on the events before the cutoff (once per time)
fit_s = time.perf_counter() - t
from recsys.rank.features import time_statistics
t = time.perf_counter()
for grouping in ("style_cluster", "style_graph_cluster"):  # the catalogue's style groups (once per catalogue); an older baseline may lack one
    getattr(ctx, grouping, lambda fs: None)(fs)
time_statistics(fs, cutoff, ctx)  # the log's statistics at the cutoff (once per time)
once_s = time.perf_counter() - t
users = np.arange(min(n_users, fs.n_users))
# this process's chunks: every world-th from the rank-th, as `candidates --nproc` splits the parts
users = np.concatenate([users[s : s + chunk] for s in range(rank * chunk, len(users), world * chunk)] or [users[:0]])
if hasattr(rec, "expect_users"):  # as the candidates job tells it (recsys.serving.write_parts): compile up front when that pays
    rec.expect_users(len(users))
res = {"mode": mode, "users": int(len(users)), "n_items": int(fs.items.n), "fit_sources_s": fit_s, "once_s": once_s, "rss_before_mb": rss() / 2**20}
stages = dict.fromkeys(("sources", "union", "features", "predict", "top-k"), 0.0)
pairs = 0
tops = []
threading.Thread(target=sample, daemon=True).start()
started = time.perf_counter()
for s in range(0, len(users), chunk):
    batch = users[s : s + chunk]
    if mode == "dense":  # the evaluation path: a (users x items) matrix, then top-k over it
        t = time.perf_counter()
        scores = rec.scores(batch, cutoff)
        stages["predict"] += time.perf_counter() - t
        t = time.perf_counter()
        top = dense_top_k(scores, k)
        tops.append(np.take_along_axis(scores, top, 1))
        stages["top-k"] += time.perf_counter() - t
        continue
    t = time.perf_counter(); per = gen.per_source(batch, cutoff); stages["sources"] += time.perf_counter() - t
    t = time.perf_counter(); union = candidate_union(batch, per); stages["union"] += time.perf_counter() - t
    t = time.perf_counter(); frame = pair_features(fs, union, cutoff, ctx); stages["features"] += time.perf_counter() - t
    missing = sorted(set(booster.feature_name()) - set(frame.columns))
    if missing:  # a baseline revision older than one of the ranker's features
        sys.exit(f"the ranking code scored here does not compute the ranker's feature(s) {missing}; compare with a later --baseline-rev")
    t = time.perf_counter(); pred = rec.predict(frame); stages["predict"] += time.perf_counter() - t
    from recsys.rank.ranker import union_top_k
    t = time.perf_counter(); items, best = union_top_k(batch, frame["u"].to_numpy(), frame["i"].to_numpy(), pred, k); stages["top-k"] += time.perf_counter() - t
    pairs += frame.height
    if s < 2 * chunk:
        tops.append(np.where(items >= 0, best, -np.inf))
seconds = time.perf_counter() - started
stop.set()
np.save(out, np.concatenate(tops))
res.update(seconds=seconds, users_per_s=len(users) / seconds, stages=stages, pairs_per_user=pairs / len(users),
           peak_rss_scoring_mb=max(peak[0], rss()) / 2**20, peak_rss_process_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps(res))
"""


def run(root: Path, folder: Path, ranker_file: str, users: int, chunk: int, k: int, mode: str, out: Path, code: Path | None = None, world: int = 1, extra_env: dict | None = None) -> dict:
    """One scoring run in its own process (``code``: a checkout to import the project from);
    with ``world`` > 1, that many processes at once, each one thread (OMP_NUM_THREADS=1, as
    torchrun gives its ranks) and every world-th chunk, as `candidates --rank --nproc`
    splits the users. Their run: all their users over the slowest one's time, RSS summed."""
    env_vars = {**os.environ, **({"PYTHONPATH": str(code)} if code else {}), **({"OMP_NUM_THREADS": "1"} if world > 1 else {}), **(extra_env or {})}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root.resolve()), str(folder.resolve()), str(users), str(chunk), str(k), mode, str(out.with_suffix(f".{r}.npy") if world > 1 else out),
             json.dumps(RANK), ranker_file, str(r), str(world)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=code, env=env_vars,
        )
        for r in range(world)
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{mode} run{' of ' + str(code) if code else ''} failed:\n{stderr[-3000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    if world == 1:
        return {**results[0], "users_per_s_with_once": results[0]["users"] / (results[0]["seconds"] + results[0]["once_s"])}
    seconds = max(r["seconds"] for r in results)
    total = sum(r["users"] for r in results)
    return {
        **results[0], "users": total, "seconds": seconds, "users_per_s": total / seconds, "stages": {n: max(r["stages"][n] for r in results) for n in results[0]["stages"]},
        "once_s": max(r["once_s"] for r in results), "users_per_s_with_once": total / max(r["seconds"] + r["once_s"] for r in results),
        **{key: sum(r[key] for r in results) for key in ("rss_before_mb", "peak_rss_scoring_mb", "peak_rss_process_mb")},
    }


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of users, not {text}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="workspace")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=int, default=1, help="two-tower training epochs (speed measurement only)")
    parser.add_argument("--chunk", type=positive_int, default=None, help="users scored at once (default: as `candidates --rank` scores them on this catalogue)")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--baseline-chunks", type=int, default=2, help="chunks scored by the dense evaluation path (0: skip)")
    parser.add_argument("--no-two-processes", dest="two_processes", action="store_false", help="skip the run of all users on two processes")
    parser.add_argument(
        "--baseline-rev", default="e8087dd",
        help="git revision of the ranking code to compare with; it must compute every feature of the ranker (e8087dd, the graph style groups, or later) ('': skip)",
    )
    args = parser.parse_args()
    import numpy as np

    workdir = Path(args.workdir)
    t = time.perf_counter()
    root = prepare(workdir, args.preset)
    folder = workdir / "bench-rank" / args.preset
    folder.mkdir(parents=True, exist_ok=True)
    meta = train_models(root, folder, args.epochs)
    setup = time.perf_counter() - t
    if args.chunk is None:
        import polars as pl

        from data.dataset import DatasetDir

        args.chunk = score_batch_users(pl.scan_parquet(DatasetDir(root).table_path("items")).select(pl.len()).collect().item())

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ranker = meta["ranker_file"]
        full = run(root, folder, ranker, 10**9, args.chunk, args.k, "top_k", tmp / "full.npy")
        half = run(root, folder, ranker, full["users"] // 2, args.chunk, args.k, "top_k", tmp / "half.npy")
        ranks = run(root, folder, ranker, 10**9, args.chunk, args.k, "top_k", tmp / "ranks.npy", world=2) if args.two_processes else None
        # this code with glibc's default of handing each freed array back (pipelines.env.keep_freed_memory off)
        handed_back = run(root, folder, ranker, 10**9, args.chunk, args.k, "top_k", tmp / "handed.npy", extra_env={"STYLEREC_KEEP_FREED_MEMORY": "0"})
        base = before = before_ranks = None
        if args.baseline_chunks:
            base = run(root, folder, ranker, args.baseline_chunks * args.chunk, args.chunk, args.k, "dense", tmp / "dense.npy")
            fast, dense = np.load(tmp / "full.npy")[: base["users"]], np.load(tmp / "dense.npy")
            same_scores = float(np.mean([np.array_equal(a, b) for a, b in zip(fast, dense, strict=True)]))
            if args.baseline_rev:
                code = tmp / "baseline"
                code.mkdir()
                archive = subprocess.run(["git", "archive", args.baseline_rev], capture_output=True, check=True).stdout
                subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
                before = run(root, folder, ranker, half["users"], args.chunk, args.k, "top_k", tmp / "before.npy", code)
                before_ranks = run(root, folder, ranker, 10**9, args.chunk, args.k, "top_k", tmp / "before-ranks.npy", code, world=2) if args.two_processes else None
                old = np.load(tmp / "before.npy")[: base["users"]]
                same_before = float(np.mean([np.array_equal(a, b) for a, b in zip(fast, old, strict=True)]))

    print(f"StyleMart {args.preset}: {full['users']:,} users, {full['n_items']:,} items; test cutoff; chunks of {args.chunk:,} users, top-{args.k} (setup {setup:.0f} s)")
    print(f"  two-tower: {meta['two_tower_epochs']} epoch(s), no refit (val Recall@50 {meta['two_tower_val_recall_50']:.3f}; speed only)")
    print(f"  ranker: {meta['ranker_best_iteration']} trees, {len(meta['features'])} features, validation NDCG@10 {meta['ranker_val_ndcg_10']:.4f} ({meta['ranker_seconds']:.0f} s to train)")
    print(f"  sources {SOURCES}: {full['pairs_per_user']:.0f} candidates per user in the union")
    print(f"  fitting the sources at the cutoff (once per time): {full['fit_sources_s']:.1f} s (not in users/s)")
    print(f"  the catalogue's style groups and the log's statistics at the cutoff (once per catalogue and time, each process): {full['once_s']:.1f} s "
          "(not in users/s; in 'with once')")
    names = list(full["stages"])
    print(f"{'run':<30}{'users':>8}{'users/s':>10}{'vs before':>10}{'with once':>10}" + "".join(f"{n + ' s':>12}" for n in names) + f"{'RSS before':>12}{'peak scoring':>14}{'peak process':>14}")
    runs = [("top_k, all users", full), ("top_k, half the users", half)]
    runs += [("top_k, all users, 2 processes", ranks)] if ranks else []
    runs += [("top_k, all users, memory handed back", handed_back)]
    runs += [("dense scores + top_k", base)] if base else []
    runs += [(f"before ({args.baseline_rev}), top_k", before)] if before else []
    runs += [(f"before ({args.baseline_rev}), 2 processes", before_ranks)] if before_ranks else []
    for label, r in runs:  # the ratio: to the baseline's users/s on as many processes (one: the half run's users)
        baseline = before_ranks if before_ranks and "2 processes" in label else before
        ratio = r["users_per_s"] / baseline["users_per_s"] if baseline else float("nan")
        print(f"{label:<30}{r['users']:>8,}{r['users_per_s']:>10,.0f}{ratio:>9.2f}x{r['users_per_s_with_once']:>10,.0f}" + "".join(f"{r['stages'][n]:>12.2f}" for n in names)
              + f"{r['rss_before_mb']:>9,.0f} MB{r['peak_rss_scoring_mb']:>11,.0f} MB{r['peak_rss_process_mb']:>11,.0f} MB")
    growth = full["peak_rss_scoring_mb"] - half["peak_rss_scoring_mb"]
    print(f"peak RSS while scoring, all users - half the users: {growth:+,.0f} MB ({full['users']:,} vs {half['users']:,} users)")
    if base:
        print(f"the first {base['users']:,} users' top-{args.k}: the same ranker score at every rank as the dense path for {same_scores:.1%} of users (tied items may swap)")
    if before:
        print(f"  and as before ({args.baseline_rev}) for {same_before:.1%} of users")


if __name__ == "__main__":
    main()
