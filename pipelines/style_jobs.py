"""The style jobs behind `stylerec style ...`."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import click
import numpy as np
import polars as pl
from PIL import Image

from data.dataset import DatasetDir, DatasetError
from data.io import atomic_path, write_json
from data.validate import ValidatedDataset
from pipelines.common import load_ds
from style.check import (
    chroma_histogram,
    crop_retrieval,
    histogram_intersection,
    knn_label_accuracy,
    mean_abs_diff,
    style_consistency,
)
from style.embeddings import STYLE_DIR, embed_catalogue, load_style_space
from style.encoder import MagentaStyleEncoder
from style.gallery import gallery
from style.space import HISTORY_LEN, StyleSpace, l2_normalise, profile_weights, style_profile
from style.transfer import MagentaStyleTransfer

CHECK_FILE = "style_check.json"


def _open(ds_root: Path, rel: str) -> Image.Image:
    with Image.open(ds_root / rel) as im:
        return im.convert("RGB")


def style_images(ds: ValidatedDataset, space: StyleSpace, n: int = 12) -> dict[str, Image.Image]:
    """Style images for checks and galleries.

    StyleMart: a full-frame swatch of each of its styles (what a style image is: a
    texture, not a product). Other data: ``n`` catalogue images spread over the style
    space by farthest-point sampling.
    """
    if ds.manifest.source == "stylemart":
        from data.stylemart.styles import STYLES, render_pattern

        rng = np.random.default_rng(7)
        return {s.name: Image.fromarray((render_pattern(s, 256, rng) * 255).astype(np.uint8)) for s in STYLES[:n]}
    chosen = [0]
    dist = 1 - space.unit @ space.unit[0]
    for _ in range(min(n, len(space.ids)) - 1):
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, 1 - space.unit @ space.unit[chosen[-1]])
    paths = dict(zip(ds.items["item_id"], ds.items["image_path"], strict=True))
    return {str(space.ids[i]): _open(ds.dir.root, paths[str(space.ids[i])]) for i in chosen}


def _sample_items(ds: ValidatedDataset, space: StyleSpace, n: int, seed: int) -> pl.DataFrame:
    have = ds.items.filter(pl.col("item_id").is_in(space.ids.tolist()) & pl.col("image_path").is_not_null())
    return have.sample(min(n, have.height), seed=seed).sort("item_id")


def run_style_check(ds: ValidatedDataset, transfer: MagentaStyleTransfer, n_content: int = 8, n_crops: int = 300, seed: int = 0) -> dict:
    space = load_style_space(ds.dir.root)
    root = ds.dir.root
    styles = style_images(ds, space)
    contents = [_open(root, p) for p in _sample_items(ds, space, n_content, seed)["image_path"]]
    consistency = style_consistency(transfer, space, contents, styles, size=256)

    crops = _sample_items(ds, space, n_crops, seed + 1)
    crop_images = {i: _open(root, p) for i, p in zip(crops["item_id"], crops["image_path"], strict=True)}
    labels: dict[str, dict[str, str]] = {"category": dict(zip(ds.items["item_id"], ds.items["category"], strict=True))}
    truth = DatasetDir(root).ground_truth_dir / "items.parquet"
    if truth.is_file():
        gt = pl.read_parquet(truth)
        labels["style"] = dict(zip(gt["item_id"], gt["style"], strict=True))
    crop = crop_retrieval(transfer.encoder, space, crop_images, labels.get("style"), seed=seed)
    knn = {name: knn_label_accuracy(space.unit, [lab[i] for i in space.ids.tolist()], k=10) for name, lab in labels.items()}

    raw = space.vectors[np.random.default_rng(seed).choice(len(space.vectors), min(500, len(space.vectors)), replace=False)]
    raw = l2_normalise(raw)
    raw_cos = raw @ raw.T
    raw_mean_cosine = float(raw_cos[~np.eye(len(raw), dtype=bool)].mean())

    content = contents[0]
    style_vec = transfer.encoder.embed([next(iter(styles.values()))])[0]
    size = 256
    base = content.resize((size, size), Image.Resampling.LANCZOS)
    at_zero = transfer.render(content, style_vec, strength=0.0, size=size)
    full = transfer.render(content, style_vec, strength=1.0, size=size)
    kept = transfer.render(content, style_vec, strength=1.0, keep_colors=True, size=size)
    hist = chroma_histogram(base)
    return {
        "dataset": str(root),
        "encoder": f"{transfer.encoder.name} ({transfer.encoder.version})",
        "style_consistency": {"accuracy": consistency.accuracy, "contents": consistency.n_content, "styles": consistency.n_styles, "chance": 1 / consistency.n_styles, "confusion": consistency.confusion},
        "crop_to_source_precision_at_1": crop["source"],
        "crop_to_same_style_precision_at_1": crop.get("same_label"),
        "crops": len(crop_images),
        "knn10_label_accuracy": knn,
        "raw_mean_cosine": raw_mean_cosine,
        "strength0_mean_abs_diff": mean_abs_diff(base, at_zero),
        "strength1_mean_abs_diff": mean_abs_diff(base, full),
        "keep_colors_chroma_hist_intersection": histogram_intersection(hist, chroma_histogram(kept)),
        "full_style_chroma_hist_intersection": histogram_intersection(hist, chroma_histogram(full)),
    }


def format_check(r: dict) -> str:
    c = r["style_consistency"]
    lines = [
        f"style check of {r['dataset']} with {r['encoder']}",
        f"  style consistency      {c['accuracy']:.3f}  ({c['contents']} contents x {c['styles']} styles; chance {c['chance']:.3f})",
        f"  crop -> source  P@1    {r['crop_to_source_precision_at_1']:.3f}  ({r['crops']} random crops, whole catalogue)",
    ]
    if r["crop_to_same_style_precision_at_1"] is not None:
        lines.append(f"  crop -> same style P@1 {r['crop_to_same_style_precision_at_1']:.3f}")
    for name, acc in r["knn10_label_accuracy"].items():
        lines.append(f"  kNN(10) {name + ' label':<15}{acc:.3f}")
    lines.append(f"  raw vectors, mean pairwise cosine {r['raw_mean_cosine']:.3f} (why they are centred)")
    lines += [
        f"  strength 0: mean |render - content| = {r['strength0_mean_abs_diff']:.4f} (strength 1: {r['strength1_mean_abs_diff']:.4f})",
        f"  keep-colors: chroma histogram intersection with the content {r['keep_colors_chroma_hist_intersection']:.3f} (without: {r['full_style_chroma_hist_intersection']:.3f})",
    ]
    return "\n".join(lines)


@click.group("style")
def style_group() -> None:
    """Style embeddings, style transfer, galleries and quality checks."""


@style_group.command("embed")
@click.argument("dataset")
@click.option("--batch-size", type=int, default=2, show_default=True, help="images per network call (small batches are fastest on CPU)")
@click.option("--workers", type=int, default=2, show_default=True, help="threads decoding images")
@click.pass_context
def embed_cmd(ctx, dataset, batch_size, workers):
    """Embed every item image of DATASET (re-uses vectors of unchanged images)."""
    ds = load_ds(ctx, dataset)
    if ds.items.height == 0 or ds.items["image_path"].null_count() == ds.items.height:
        raise click.ClickException(
            f"{ds.dir.root}: no item has an image (image_path is empty for all {ds.items.height:,} items, as in MovieLens); "
            f"style embeddings need product photos: train without style features instead (e.g. --config recsys/configs/two_tower_id_only.toml)"
        )
    stats = embed_catalogue(ds.dir.root, ds.items, MagentaStyleEncoder(batch_size=batch_size), workers=workers)
    click.echo(
        f"style embeddings: {stats.items:,} items = {stats.embedded:,} embedded + {stats.cached:,} cached + "
        f"{stats.quarantined:,} quarantined in {stats.seconds:.1f}s -> {ds.dir.root / STYLE_DIR}"
    )
    if stats.embedded + stats.cached == 0:
        raise click.ClickException(f"no item image could be embedded ({stats.quarantined:,} quarantined: missing or unreadable files; see {ds.dir.root / STYLE_DIR})")


def _item_image(ds: ValidatedDataset, item_id: str) -> Image.Image:
    row = ds.items.filter(pl.col("item_id") == item_id)
    if row.height == 0:
        raise click.ClickException(f"unknown item id {item_id!r} in {ds.dir.root}")
    if row["image_path"][0] is None:
        raise click.ClickException(f"item {item_id!r} has no image")
    return _open(ds.dir.root, row["image_path"][0])


def user_style_vector(ds: ValidatedDataset, space: StyleSpace, user_id: str) -> np.ndarray:
    """The user's taste in style space, weighted as the model weighs the user's history
    (style.space.profile_weights: the last HISTORY_LEN events, the model's event and
    recency weights), as of the user's last event."""
    history = ds.interactions.filter(pl.col("user_id") == user_id).sort(["ts", "item_id"]).tail(HISTORY_LEN)
    events = history.filter(pl.col("item_id").is_in(space.ids.tolist()))
    if events.height == 0:
        raise click.ClickException(f"user {user_id!r} has no interactions with embedded items")
    now = history["ts"].max()
    ages = ((now - events["ts"]).dt.total_seconds() / 86_400).to_numpy()
    weights = profile_weights(ages, events["event"].to_numpy())
    return style_profile(space.vectors[space.rows(events["item_id"].to_list())], weights)


@style_group.command("transfer")
@click.option("--dataset", default=None, help="dataset for --item / --style-item / --user")
@click.option("--content", "content_path", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--item", "item_id", default=None, help="content = this item's photo")
@click.option("--style", "style_path", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--style-item", default=None, help="style = this item's photo")
@click.option("--user", "user_id", default=None, help="style = this user's style profile")
@click.option("--strength", type=click.FloatRange(0, 1), default=1.0, show_default=True)
@click.option("--keep-colors", is_flag=True, help="transfer luminance only; keep the content's colours")
@click.option("--size", type=int, default=384, show_default=True, help="longer side of the output")
@click.option("--out", type=click.Path(dir_okay=False), required=True)
@click.pass_context
def transfer_cmd(ctx, dataset, content_path, item_id, style_path, style_item, user_id, strength, keep_colors, size, out):
    """Render a product (or any image) in a style: an image, an item's, or a user's."""
    if (content_path is None) == (item_id is None):
        raise click.UsageError("give exactly one of --content or --item")
    if sum(x is not None for x in (style_path, style_item, user_id)) != 1:
        raise click.UsageError("give exactly one of --style, --style-item or --user")
    ds = load_ds(ctx, dataset) if dataset else None
    if ds is None and (item_id or style_item or user_id):
        raise click.UsageError("--item, --style-item and --user need --dataset")
    transfer = MagentaStyleTransfer()
    content = _item_image(ds, item_id) if item_id else _open(Path("."), content_path)
    if user_id:
        style_vec = user_style_vector(ds, load_style_space(ds.dir.root), user_id)
    else:
        style_img = _item_image(ds, style_item) if style_item else _open(Path("."), style_path)
        style_vec = transfer.encoder.embed([style_img])[0]
    image = transfer.render(content, style_vec, strength=strength, keep_colors=keep_colors, size=size)
    with atomic_path(out) as tmp:
        image.save(tmp, format="PNG")
    click.echo(f"wrote {out} ({image.width}x{image.height})")


def write_gallery(ds: ValidatedDataset, transfer: MagentaStyleTransfer, out: Path, products: int, n_styles: int, seed: int) -> tuple[int, int]:
    space = load_style_space(ds.dir.root)
    picked = _sample_items(ds, space, products, seed)
    prods = [(i, _open(ds.dir.root, p)) for i, p in zip(picked["item_id"], picked["image_path"], strict=True)]
    styles = list(style_images(ds, space, n_styles).items())
    sheet = gallery(transfer, prods, styles)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return len(prods), len(styles)


@style_group.command("gallery")
@click.argument("dataset")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="PNG [default: <dataset>/style/gallery.png]")
@click.option("--products", type=int, default=6, show_default=True)
@click.option("--styles", "n_styles", type=int, default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
def gallery_cmd(ctx, dataset, out, products, n_styles, seed):
    """A grid of products (rows) rendered in styles (columns)."""
    ds = load_ds(ctx, dataset)
    out = Path(out) if out else ds.dir.root / STYLE_DIR / "gallery.png"
    try:
        n_prod, n_sty = write_gallery(ds, MagentaStyleTransfer(), out, products, n_styles, seed)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"gallery ({n_prod} products x {n_sty} styles): {out}")


def run_and_save_style_check(ds: ValidatedDataset, transfer: MagentaStyleTransfer, seed: int = 0) -> dict:
    started = time.perf_counter()
    result = run_style_check(ds, transfer, seed=seed)
    result["seconds"] = time.perf_counter() - started
    result["created_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    write_json(result, ds.dir.root / STYLE_DIR / CHECK_FILE)
    return result


@style_group.command("check")
@click.argument("dataset")
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
def check_cmd(ctx, dataset, seed):
    """Print the figures that show the style space works (saved to <dataset>/style/style_check.json)."""
    ds = load_ds(ctx, dataset)
    try:
        result = run_and_save_style_check(ds, MagentaStyleTransfer(), seed)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_check(result))
