"""Batch candidate generation: exact vs FAISS Flat / IVF / HNSW vs implicit's `recommend`.

Vectors with the structure real embeddings have (a mixture of ~1,000 Gaussian clusters on
the unit sphere; isotropic noise is the worst case for any ANN index), 100k items, d = 64,
K = 100, every method filtering each user's 20 already-liked items. Each method runs in
its own process, streaming users in chunks, so its peak RSS is its own. Usage:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/candidates.py [--users 200000] [--scale-users 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from pipelines import env  # noqa: E402

env.setup()  # one BLAS thread, offline text model, as the CLI

CHILD = r"""
import json, os, resource, sys, time
import numpy as np
method, n_users, n_items, dim, k, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rng = np.random.default_rng(0)
centres = rng.normal(size=(1000, dim)).astype(np.float32)

def vectors(n, seed):
    r = np.random.default_rng(seed)
    x = centres[r.integers(0, 1000, n)] + 1.0 * r.normal(size=(n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

items = vectors(n_items, 1)
liked_per_user = 20

def liked(users):
    r = np.random.default_rng(users[0] + 7)
    return r.integers(0, n_items, (len(users), liked_per_user))

def user_chunks():
    for start in range(0, n_users, chunk):
        users = np.arange(start, min(start + chunk, n_users))
        yield users, vectors(len(users), 1000 + start // chunk)

sample = vectors(2000, 999)
out = {"method": method, "users": n_users}
from recsys.candidates import filter_top_k
banned = np.zeros(n_items, bool)
t_build = time.perf_counter()
if method == "exact":
    import torch
    item_t = torch.from_numpy(items)
    def search(q, kk):
        s, r = torch.topk(torch.from_numpy(q) @ item_t.T, kk, dim=1)
        return s.numpy(), r.numpy()
elif method in ("flat", "ivf", "hnsw"):
    from recsys.index import CandidateIndex, IndexConfig
    idx = CandidateIndex.build(items, np.arange(n_items).astype(str), sample[:1000], IndexConfig(kind=method, k=k, tune_queries=1000))
    out["params"] = idx.manifest.params
    out["tuned_recall"] = idx.manifest.achieved_recall
    search = idx.search
elif method == "implicit":
    from scipy.sparse import csr_matrix
    from implicit.cpu.als import AlternatingLeastSquares
    model = AlternatingLeastSquares(factors=dim)
    model.item_factors = items
out["build_s"] = time.perf_counter() - t_build
t = time.perf_counter()
last = None
for users, q in user_chunks():
    own = liked(users)
    if method == "implicit":
        model.user_factors = q
        m = csr_matrix((np.ones(own.size, np.float32), (np.repeat(np.arange(len(users)), liked_per_user), own.ravel())), shape=(len(users), n_items))
        rows, scores = model.recommend(np.arange(len(users)), m, N=k, filter_already_liked_items=True)
    else:
        scores, rows = search(q, k + liked_per_user)
        rows, scores = filter_top_k(rows, scores, k, banned, list(own))
    last = rows
out["search_s"] = time.perf_counter() - t
out["users_per_s"] = n_users / out["search_s"]
if method in ("flat", "ivf", "hnsw"):
    from recsys.index import exact_top_k, recall_vs_exact
    held = vectors(2000, 4242)
    out["recall_at_k"] = recall_vs_exact(search(held, k)[1], exact_top_k(items, held, k))
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def run(method: str, users: int, items: int, dim: int, k: int, chunk: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, method, str(users), str(items), str(dim), str(k), str(chunk)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--methods", nargs="+", default=["implicit", "exact", "flat", "ivf", "hnsw"])
    parser.add_argument("--scale-users", type=int, default=1_000_000, help="re-run IVF with this many users to show RSS does not grow (0: skip)")
    args = parser.parse_args()
    results = [run(m, args.users, args.items, args.dim, args.k, args.chunk) for m in args.methods]
    base = next((r for r in results if r["method"] == "implicit"), None)
    print(f"{args.items:,} items, d={args.dim}, K={args.k}, {args.users:,} users in chunks of {args.chunk:,}, 2 cores")
    print(f"{'method':<10}{'build s':>9}{'users/s':>11}{'vs implicit':>13}{'recall@K':>10}{'peak RSS MB':>13}  params")
    for r in results:
        ratio = r["users_per_s"] / base["users_per_s"] if base else float("nan")
        rec = r.get("recall_at_k")
        print(f"{r['method']:<10}{r['build_s']:>9.1f}{r['users_per_s']:>11,.0f}{ratio:>12.2f}x{(f'{rec:.3f}' if rec is not None else '(exact)'):>10}{r['peak_rss_mb']:>13,.0f}  {r.get('params', '')}")
    if args.scale_users:
        big = run("ivf", args.scale_users, args.items, args.dim, args.k, args.chunk)
        small = next((r for r in results if r["method"] == "ivf"), None)
        print(f"IVF with {args.scale_users:,} users: {big['users_per_s']:,.0f} users/s, peak RSS {big['peak_rss_mb']:,.0f} MB"
              + (f" (vs {small['peak_rss_mb']:,.0f} MB for {args.users:,} users)" if small else ""))


if __name__ == "__main__":
    main()
