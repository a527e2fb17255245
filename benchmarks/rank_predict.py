"""The ranker's predict on one chunk of candidates: LightGBM's own predict against the booster
compiled to native code (``recsys.rank.compiled``), in the same process on the same rows.

The rows are one chunk of StyleMart ``small`` users' pair features at the test cutoff, built
with what ``benchmarks/rank.py`` prepared (run it first). Each booster given is timed on
them: its fast ranker by default, and any LightGBM model file trained on the same features
(``--model``, e.g. a registered ranker's ``model.lgb`` from the MLflow store), since the
predict's cost grows with the trees. Best of ``--repeats`` runs each, on every core (as
``RankedRecommender.predict`` scores) and on one (as a torchrun rank does). Usage:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/rank_predict.py --workdir DIR [--model FILE ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipelines import env

env.setup()  # one BLAS thread, offline text model, as the CLI


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="workspace")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", action="append", default=[], help="another LightGBM model file on the same features (repeatable)")
    args = parser.parse_args()
    missing = [path for path in args.model if not Path(path).is_file()]
    if missing:
        parser.error(f"--model: no such file: {', '.join(missing)}")
    import lightgbm
    import numpy as np

    from data.validate import load_dataset
    from rank import RANK
    from recsys.bundle import load_for_dataset
    from recsys.rank.compiled import compile_booster, scoring_threads
    from recsys.rank.config import RankConfig
    from recsys.rank.features import pair_features
    from recsys.rank.run import generator_and_context
    from recsys.train import TwoTowerRecommender

    root = Path(args.workdir) / "datasets" / f"stylemart-{args.preset}"
    folder = Path(args.workdir) / "bench-rank" / args.preset
    metas = sorted(folder.glob("models-*.json"), key=lambda p: p.stat().st_mtime)
    if not metas or not (root / "manifest.json").is_file():
        raise SystemExit(f"nothing prepared under {args.workdir}: run benchmarks/rank.py --workdir {args.workdir} first")
    meta = json.loads(metas[-1].read_text())
    boosters = {}
    for path in [str(folder / meta["ranker_file"]), *args.model]:  # every model read before the minutes of features
        try:
            boosters[path] = lightgbm.Booster(model_file=path)
        except lightgbm.basic.LightGBMError as error:
            raise SystemExit(f"{path}: not a LightGBM model file ({error})") from None
    ds = load_dataset(root)
    model, fs = load_for_dataset(folder / "bundle", ds)
    gen, ctx = generator_and_context(ds, fs, RankConfig(**RANK), TwoTowerRecommender(model, fs))
    cutoff = fs.time_of("test")
    users = np.arange(args.chunk)
    frame = pair_features(fs, gen.union(users, cutoff), cutoff, ctx)
    print(f"StyleMart {args.preset}: {len(users):,} users, {frame.height:,} candidate rows; best of {args.repeats}; {scoring_threads()} cores")
    print(f"{'model':<44}{'trees':>6}{'compile s':>11}{'LightGBM s':>12}{'compiled s':>12}{'ratio':>8}{'1 core: LightGBM s':>20}{'compiled s':>12}{'ratio':>8}{'max |diff|':>12}")
    for path, booster in boosters.items():
        unknown = [name for name in booster.feature_name() if name not in frame.columns]
        if unknown:
            raise SystemExit(f"{path}: features this code does not compute: {unknown[:5]}")
        rows = frame.select(booster.feature_name()).to_numpy().astype(np.float32)
        started = time.perf_counter()
        compiled = compile_booster(booster)
        compile_s = time.perf_counter() - started
        as_double = np.ascontiguousarray(rows, np.float64)
        diff = float(np.abs(compiled.predict(as_double) - booster.predict(rows)).max())
        cells = []
        for threads in (scoring_threads(), 1):
            lgb_s = best_of(args.repeats, lambda b=booster, t=threads: b.predict(rows, num_threads=t))
            ll_s = best_of(args.repeats, lambda c=compiled, t=threads: c.predict(np.ascontiguousarray(rows, np.float64), n_jobs=t))
            cells.append(f"{lgb_s:>12.3f}{ll_s:>12.3f}{lgb_s / ll_s:>7.1f}x" if threads != 1 else f"{lgb_s:>20.3f}{ll_s:>12.3f}{lgb_s / ll_s:>7.1f}x")
        name = path if len(path) <= 42 else "..." + path[-39:]
        print(f"{name:<44}{booster.num_trees():>6}{compile_s:>11.2f}" + "".join(cells) + f"{diff:>12.1e}")


if __name__ == "__main__":
    main()
