"""A short, printable description of a validated dataset (and its split, if any)."""

from __future__ import annotations

from typing import Any

import polars as pl

from data.split import Split, assign_folds
from data.validate import ValidatedDataset


def summarise(ds: ValidatedDataset, split: Split | None = None) -> dict[str, Any]:
    inter = ds.interactions
    per_user = inter.group_by("user_id").len().get_column("len")
    out: dict[str, Any] = {
        "dataset": ds.manifest.name,
        "source": ds.manifest.source,
        "items": ds.items.height,
        "users": ds.users.height,
        "interactions": inter.height,
        "reviews": ds.reviews.height,
        "events": dict(sorted(inter.group_by("event").len().iter_rows())),
        "time_range": [str(inter.get_column("ts").min()), str(inter.get_column("ts").max())],
        "interactions_per_user": {q: float(per_user.quantile(p)) for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))} if per_user.len() else {},
        "density": inter.select(pl.struct("user_id", "item_id").n_unique()).item() / max(1, ds.items.height * ds.users.height),
        "categories": ds.items.get_column("category").n_unique(),
        "items_without_image": int(ds.items.get_column("image_path").null_count()),
    }
    if split is not None:
        folded = assign_folds(inter, split)
        test_items = set(folded.filter(pl.col("fold") == "test").get_column("item_id").unique().to_list())
        out["split"] = {
            **split.to_json(),
            "test_items_cold": len(test_items & split.cold_items),
            "test_items": len(test_items),
        }
    return out


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"dataset {summary['dataset']} ({summary['source']})"]
    for key in ("items", "users", "interactions", "reviews", "categories", "items_without_image"):
        lines.append(f"  {key:<22}{summary[key]:>12,}")
    lines.append(f"  {'events':<22}" + ", ".join(f"{k}={v:,}" for k, v in summary["events"].items()))
    lines.append(f"  {'time range':<22}{summary['time_range'][0]} .. {summary['time_range'][1]}")
    lines.append(f"  {'density':<22}{summary['density']:.5f}")
    if summary["interactions_per_user"]:
        lines.append(f"  {'events per user':<22}" + ", ".join(f"{k}={v:g}" for k, v in summary["interactions_per_user"].items()))
    if "split" in summary:
        sp = summary["split"]
        lines.append(
            f"  split ({sp['config']['strategy']}): test from {sp['test_start']}, val from {sp['val_start']}; "
            + ", ".join(f"{k}={v:,}" for k, v in sp["counts"].items())
        )
        lines.append(
            f"  cold items {sp['n_cold_items']:,} (of the {sp['test_items']:,} items in test: {sp['test_items_cold']:,}); cold users {sp['n_cold_users']:,}"
        )
    return "\n".join(lines)
