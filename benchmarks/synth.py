"""StyleMart generation time and peak memory for the `demo` and `small` presets.

Each preset runs in a fresh subprocess so its peak RSS is its own. Usage:

    .venv/bin/python benchmarks/synth.py [--presets demo small] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile

CHILD = """
import json, sys, time, resource
from data.stylemart import generate
t = time.perf_counter()
m = generate(sys.argv[1], sys.argv[2], seed=0, workers=int(sys.argv[3]), force=True)
secs = time.perf_counter() - t
print(json.dumps({"seconds": secs, "rows": m.row_counts,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(preset: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        out = subprocess.run(
            [sys.executable, "-c", CHILD, f"{tmp}/{preset}", preset, str(workers)],
            check=True, capture_output=True, text=True,
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        # render workers are children of the child: their peak is in RUSAGE_CHILDREN
        result["peak_rss_children_mb"] = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["demo", "small"])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(f"{'preset':<8}{'seconds':>9}{'events':>12}{'events/s':>11}{'peak RSS MB':>13}  vs 60 s budget")
    for preset in args.presets:
        r = run(preset, args.workers)
        events = r["rows"]["interactions"]
        print(f"{preset:<8}{r['seconds']:>9.1f}{events:>12,}{events / r['seconds']:>11,.0f}{max(r['peak_rss_mb'], r['peak_rss_children_mb']):>13,.0f}  {r['seconds'] / 60:.2f}x")


if __name__ == "__main__":
    main()
