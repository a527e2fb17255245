"""Item-CF fit: peak memory and time against the whole-matrix fit it replaced, in one run.

``ItemCF.fit`` builds the co-occurrence matrix a block of items at a time and prunes each
block to the ``[rank] item_cf_neighbours`` most similar items. Before (``--baseline-rev``,
extracted with ``git archive``) it built ``X.T @ X`` over the whole catalogue, then pruned.
Each fit runs in its own process on the same dataset and test cutoff; the figures are the
fit's wall time, its peak resident memory above the loaded feature set (the kernel's
``VmHWM``, reset once the features are loaded and the freed heap is handed back), and the
kept matrix's size. The two kept matrices must be the same to the bit. Usage:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/item_cf_memory.py small [--workdir workspace]   # StyleMart small, as benchmarks/rank.py makes it
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/item_cf_memory.py demo                          # or movielens, or a folder
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pipelines import env

env.setup()  # one BLAS thread, offline text model, as the CLI

BASELINE_REV = "97413de"  # the last commit whose ItemCF.fit built the whole matrix
REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import ctypes, gc, json, sys, time
from pathlib import Path
from pipelines import env
env.setup()
import numpy as np, scipy.sparse as sp
from data.split import load_or_create_split
from data.validate import load_dataset
from recsys.features import build_features
from recsys.rank.config import RankConfig
from recsys.rank.sources import ItemCF


def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB -> MB


root, out = Path(sys.argv[1]), Path(sys.argv[2])
ds = load_dataset(root)
fs = build_features(ds, load_or_create_split(ds), require_style=False)
config = RankConfig()
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, or the fit reuses it unseen by VmRSS
Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here on
loaded = status("VmRSS")
started = time.perf_counter()
cf = ItemCF(config.item_cf_recent, config.item_cf_neighbours).fit(fs, fs.time_of("test"))
seconds = time.perf_counter() - started
peak = status("VmHWM")
co = cf.co.tocsr()
co.sort_indices()
sp.save_npz(out.with_suffix(".npz"), co, compressed=False)
out.write_text(json.dumps({
    "items": int(fs.items.n), "neighbours": config.item_cf_neighbours, "fit_s": seconds, "loaded_mb": loaded, "peak_over_loaded_mb": peak - loaded,
    "kept_mb": (co.data.nbytes + co.indices.nbytes + co.indptr.nbytes) / 2**20, "entries": int(co.nnz),
    "source": str(Path(ItemCF.fit.__code__.co_filename).resolve()),
}))
"""


def fit_in_process(root: Path, out: Path, code: Path | None = None) -> dict:
    """One fit in its own process (``code``: a checkout to import the project from)."""
    env_vars = {**os.environ, **({"PYTHONPATH": str(code)} if code else {})}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root.resolve()), str(out)], capture_output=True, text=True, cwd=code, env=env_vars)
    if proc.returncode != 0:
        raise SystemExit(f"the item-CF fit ({'baseline' if code else 'this code'}) failed:\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    if code is not None and not Path(result["source"]).is_relative_to(code.resolve()):
        raise SystemExit(f"the baseline fit imported {result['source']}, not the checkout in {code}")
    return result


def main() -> None:
    from rank import prepare  # benchmarks/rank.py, next to this script
    from rank_quality import dataset

    from data.stylemart import PRESETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="small", help="a StyleMart preset made as benchmarks/rank.py makes it (e.g. small), demo (the quality scripts' demo), movielens or a dataset folder")
    parser.add_argument("--workdir", default="workspace", help="where a StyleMart preset is made")
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision whose ItemCF.fit built the whole matrix")
    args = parser.parse_args()
    import numpy as np
    import scipy.sparse as sp

    root = prepare(Path(args.workdir), args.dataset) if args.dataset in PRESETS and args.dataset != "demo" else dataset(args.dataset)[0]
    if not (root / "manifest.json").is_file():
        raise SystemExit(f"{root}: not a dataset folder (no manifest.json)")
    archive = subprocess.run(["git", "archive", args.baseline_rev], capture_output=True, cwd=REPO)
    if archive.returncode != 0:
        raise SystemExit(f"--baseline-rev {args.baseline_rev}: git archive failed: {archive.stderr.decode().strip()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        code = tmp / "baseline"
        code.mkdir()
        subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
        now = fit_in_process(root, tmp / "now.json")
        before = fit_in_process(root, tmp / "before.json", code)
        a, b = sp.load_npz(tmp / "now.npz"), sp.load_npz(tmp / "before.npz")
        same = a.shape == b.shape and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices) and np.array_equal(a.data, b.data)
    print(f"{root}: {now['items']:,} items, item-CF keeping {now['neighbours']} neighbours per item ({now['entries']:,} entries); feature set loaded: {now['loaded_mb']:,.0f} MB")
    print(f"{'fit':<28}{'fit s':>8}{'peak over loaded MB':>21}{'kept MB':>9}")
    for name, r in ((f"whole matrix ({args.baseline_rev})", before), ("blocks of items (this code)", now)):
        print(f"{name:<28}{r['fit_s']:>8.1f}{r['peak_over_loaded_mb']:>21,.0f}{r['kept_mb']:>9.1f}")
    print(f"this code / whole matrix: fit time {now['fit_s'] / before['fit_s']:.2f}x, peak memory {now['peak_over_loaded_mb'] / max(before['peak_over_loaded_mb'], 1e-9):.2f}x; "
          f"kept matrices {'the same to the bit' if same else 'DIFFERENT'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
