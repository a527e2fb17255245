"""How far 2-rank training drifts from 1 process, per CPU kernel set and thread count.

The bounds in tests/test_distributed.py come from this script. For each
ATEN_CPU_CAPABILITY (default, avx2 and, where the CPU has it, avx512) and threads per rank
(1, 2) it trains the tests' two configs with ``stylerec train --nproc 1`` and
``--nproc 2`` on the tiny StyleMart preset and prints the relative deviations of the
2-rank checkpoint from the 1-process one (recsys.checkpoint_diff): after one and two
steps, which agree to float precision, and after two epochs (~100 steps), by when the
runs have drifted apart. Usage (~10 minutes on 2 cores):

    .venv/bin/python benchmarks/distributed_drift.py [--capabilities default,avx2,avx512] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "tests" / "configs"
# config -> {figure: epoch compared}
RUNS = {"distributed_steps.toml": {"step 1": 0, "step 2": 1}, "distributed_two_epochs.toml": {"two epochs": 1}}


def tiny_dataset(root: Path) -> Path:
    """The tests' tiny_embedded fixture: StyleMart tiny, seed 3, style vectors, saved split."""
    from data.split import SplitConfig, split_dataset
    from data.stylemart import generate
    from data.validate import load_dataset
    from style.embeddings import embed_catalogue
    from style.encoder import MagentaStyleEncoder

    out = root / "tiny"
    generate(out, "tiny", seed=3, workers=2)
    ds = load_dataset(out)
    embed_catalogue(out, ds.items, MagentaStyleEncoder(), progress=False)
    split_dataset(ds, SplitConfig(test_fraction=0.25, val_days=10))
    return out


def train(dataset: Path, config: Path, nproc: int, workdir: Path, capability: str, threads: int) -> Path:
    env = {
        **os.environ,
        "ATEN_CPU_CAPABILITY": capability,
        "STYLEREC_THREADS_PER_RANK": str(threads),
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
    }
    cmd = [sys.executable, "-m", "pipelines.cli", "--workdir", str(workdir), "train", str(dataset), "--config", str(config), "--nproc", str(nproc)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-4000:])
    (ckpt,) = (workdir / "runs").glob("*/*-sharded")
    return ckpt


def main() -> None:
    import torch

    from recsys.checkpoint_diff import checkpoint_deviation

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    has_avx512 = torch.backends.cpu.get_cpu_capability() == "AVX512"
    parser.add_argument("--capabilities", default="default,avx2" + (",avx512" if has_avx512 else ""))
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()

    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}; 2 ranks vs 1 process, relative deviations")
    header = f"{'run':<11} {'kernels':<8} {'threads':>7} {'loss':>9} {'weights':>9} {'tables':>9} {'dense':>9}"
    print(header)
    worst: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = tiny_dataset(Path(tmp))
        for config_name, compared in RUNS.items():
            for capability in args.capabilities.split(","):
                for threads in (int(t) for t in args.threads.split(",")):
                    work = Path(tmp) / "w"
                    ckpts = [train(dataset, CONFIGS / config_name, n, work / str(n), capability, threads) for n in (1, 2)]
                    for run, epoch in compared.items():
                        figures = checkpoint_deviation(*ckpts, epoch=epoch).as_dict()
                        worst[run] = {k: max(v, worst.get(run, {}).get(k, 0.0)) for k, v in figures.items()}
                        print(f"{run:<11} {capability:<8} {threads:>7} " + " ".join(f"{v:9.1e}" for v in figures.values()), flush=True)
                    shutil.rmtree(work)
    print("worst:")
    for run, figures in worst.items():
        print(f"{run:<11} {'':<8} {'':>7} " + " ".join(f"{v:9.1e}" for v in figures.values()))


if __name__ == "__main__":
    main()
