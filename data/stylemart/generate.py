"""StyleMart generation: presets, image rendering in parallel, streamed table writing."""

from __future__ import annotations

import hashlib
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from data.dataset import DatasetDir, DatasetError, Manifest
from data.io import ParquetStreamWriter, write_bytes, write_json, write_parquet
from data.stylemart.render import CATEGORIES, RenderSpec, encode_image, render_product
from data.stylemart.simulate import ChoiceModel, WorldConfig, catalogue_tables, item_ids, make_catalogue, make_users, simulate_events, user_tables
from data.stylemart.styles import STYLE_NAMES


@dataclass(frozen=True)
class Preset:
    world: WorldConfig
    images: bool
    chunk_users: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset(WorldConfig(n_users=300, n_items=240, sessions_per_user=6.0), images=True, chunk_users=300),
    "demo": Preset(WorldConfig(n_users=5_000, n_items=3_000, sessions_per_user=8.5), images=True, chunk_users=5_000),
    "small": Preset(WorldConfig(n_users=30_000, n_items=10_000, sessions_per_user=8.5), images=True, chunk_users=10_000),
    "large": Preset(WorldConfig(n_users=1_000_000, n_items=100_000, sessions_per_user=4.2), images=False, chunk_users=50_000),
}


def _seed(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def _image_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, 99, index]).generate_state(1)[0])


def _render_one(job: tuple[int, str, int, int, int, str]) -> tuple[int, str]:
    index, category, style, seed, size, path = job
    data = encode_image(render_product(RenderSpec(category, style, seed, size)))
    write_bytes(data, path)
    return index, hashlib.sha256(data).hexdigest()


def render_images(root: Path, style: np.ndarray, category: np.ndarray, seed: int, size: int, workers: int) -> str:
    """Render every item's photo into ``root/images``; returns one hash over all of them."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    ids = item_ids(np.arange(style.shape[0])).to_list()
    jobs = [
        (i, CATEGORIES[int(category[i])], int(style[i]), _image_seed(seed, i), size, str(root / "images" / f"{ids[i]}.jpg"))
        for i in range(style.shape[0])
    ]
    hashes = [""] * len(jobs)
    bar = tqdm(total=len(jobs), desc="render images", unit="img", disable=None)
    if workers <= 1:
        results = map(_render_one, jobs)
        for i, h in results:
            hashes[i] = h
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for i, h in pool.map(_render_one, jobs, chunksize=64):
                hashes[i] = h
                bar.update()
    bar.close()
    return hashlib.sha256("".join(f"{ids[i]}:{h};" for i, h in enumerate(hashes)).encode()).hexdigest()


def generate(
    out: str | os.PathLike[str],
    preset: str = "demo",
    seed: int = 0,
    images: bool | None = None,
    image_size: int = 256,
    workers: int | None = None,
    force: bool = False,
) -> Manifest:
    """Generate the StyleMart dataset ``preset`` into ``out``, deterministic by ``seed``.

    Re-running with the same parameters re-uses an existing complete dataset.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    spec = PRESETS[preset]
    cfg = spec.world
    render = spec.images if images is None else images
    params = {"preset": preset, "seed": seed, "images": render, "image_size": image_size, "world": cfg.to_json()}
    dd = DatasetDir(out)
    if dd.exists() and not force:
        try:
            existing = dd.verified_manifest()
        except DatasetError:  # broken, or a table edited after it was written: generate it again
            existing = None
        if existing is not None and existing.source == "stylemart" and existing.params == params:
            return existing
    with dd.lock(f"stylerec data synth {preset}"):
        return _generate(dd, spec, seed, render, image_size, workers, params, preset)


def _generate(dd: DatasetDir, spec: Preset, seed: int, render: bool, image_size: int, workers: int | None, params: dict, preset: str) -> Manifest:
    cfg = spec.world
    for name in ("images", "quarantine", "split", "ground_truth"):
        shutil.rmtree(dd.root / name, ignore_errors=True)
    dd.manifest_path.unlink(missing_ok=True)
    dd.report_path.unlink(missing_ok=True)

    cat = make_catalogue(cfg, _seed(seed, 1))
    items, item_truth = catalogue_tables(cat, cfg, _seed(seed, 2), "jpg" if render else None)
    images_sha = None
    if render:
        images_sha = render_images(dd.root, cat.style, cat.category, seed, image_size, workers or min(4, os.cpu_count() or 1))
    dd.write_table("items", items)
    write_parquet(item_truth, dd.ground_truth_dir / "items.parquet")

    n_chunks = -(-cfg.n_users // spec.chunk_users)
    with (
        ParquetStreamWriter(dd.table_path("users")) as users_out,
        ParquetStreamWriter(dd.table_path("interactions")) as events_out,
        ParquetStreamWriter(dd.table_path("reviews")) as reviews_out,
        ParquetStreamWriter(dd.ground_truth_dir / "users.parquet") as truth_out,
    ):
        for chunk in tqdm(range(n_chunks), desc="simulate users", unit="chunk", disable=None):
            first = chunk * spec.chunk_users
            n = min(spec.chunk_users, cfg.n_users - first)
            users = make_users(first, n, cfg, _seed(seed, 3, chunk))
            users_table, users_truth = user_tables(users)
            interactions, reviews = simulate_events(users, cat, cfg, _seed(seed, 4, chunk))
            users_out.write(users_table)
            truth_out.write(users_truth)
            events_out.write(interactions)
            reviews_out.write(reviews)

    write_json(
        {
            "styles": list(STYLE_NAMES),
            "categories": list(CATEGORIES),
            "choice_model": cfg.choice.__dict__,
            "world": cfg.to_json(),
            "doc": "users.parquet: style_affinity (per style, in `styles` order), category_intent; items.parquet: style label",
        },
        dd.ground_truth_dir / "choice_model.json",
    )
    extra = {"images_sha256": images_sha} if images_sha else {}
    return dd.write_manifest(f"stylemart-{preset}", "stylemart", params=params, extra=extra)


__all__ = ["PRESETS", "ChoiceModel", "Preset", "generate"]
