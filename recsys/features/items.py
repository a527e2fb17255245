"""The item table: catalogue order, categories, price and popularity buckets, style and
text vectors of every item."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from data.dataset import DatasetError
from data.split import Split
from data.validate import ValidatedDataset
from recsys.features.config import FeatureConfig
from style.embeddings import load_style_space
from style.space import StyleSpace, l2_normalise


@dataclass(frozen=True)
class ItemEncoders:
    """How raw item attributes become model inputs; frozen into a trained model's bundle so
    items that arrive later are encoded exactly as the training catalogue was."""

    categories: tuple[str, ...]
    price_edges: tuple[float, ...]
    style_mean: tuple[float, ...] | None


@dataclass
class ItemTable:
    ids: np.ndarray
    id_index: np.ndarray  # 0 = not in the training vocabulary (cold): content only
    category: np.ndarray  # 1..C
    price_bucket: np.ndarray  # 0 = unknown, 1..B
    popularity_bucket: np.ndarray  # 0 = no training interactions, 1..B: training events per day on sale
    style: np.ndarray  # (N, D) centred, L2-normalised; zeros where missing
    has_style: np.ndarray
    text: np.ndarray  # (N, 384) L2-normalised: title + description, mixed with the mean review text
    text_plain: np.ndarray  # (N, 384) title + description only: what an item nobody reviewed has
    cold: np.ndarray  # no interaction before the split's cutoff
    created_s: np.ndarray
    categories: list[str]

    @property
    def n(self) -> int:
        return len(self.ids)


def quantile_edges(values: np.ndarray, n: int) -> np.ndarray:
    known = values[np.isfinite(values)]
    return np.quantile(known, np.linspace(0, 1, n + 1)[1:-1]) if known.size else np.zeros(0)


def quantile_buckets(values: np.ndarray, n: int, edges: np.ndarray | None = None) -> np.ndarray:
    """Quantile buckets 1..n of the finite values (or of given ``edges``); 0 for NaN (unknown)."""
    edges = quantile_edges(values, n) if edges is None else np.asarray(edges)
    known = np.isfinite(values)
    out = np.zeros(len(values), np.int64)
    out[known] = np.searchsorted(edges, values[known], side="right") + 1
    return out


def item_texts(ds: ValidatedDataset, ids: np.ndarray) -> list[str]:
    items = pl.DataFrame({"item_id": ids}).join(ds.items.select("item_id", "title", "description"), on="item_id", how="left")
    return [f"{t or ''}. {d or ''}".strip(" .") for t, d in zip(items["title"].to_list(), items["description"].to_list(), strict=True)]


@dataclass
class ItemStyle:
    vectors: np.ndarray  # (N, D) centred, L2-normalised; zeros where missing
    has_style: np.ndarray
    dim: int
    space: StyleSpace | None  # the dataset's style space (None: no embeddings, not required)


def item_style(ds: ValidatedDataset, item_row: dict[str, int], require_style: bool, encoders: ItemEncoders | None) -> ItemStyle:
    """Style vectors in catalogue order, centred on the encoders' style mean when given."""
    try:
        space = load_style_space(ds.dir.root)
    except DatasetError:
        if require_style:
            raise
        space = None
    dim = space.vectors.shape[1] if space is not None else 100
    style = np.zeros((len(item_row), dim), np.float32)
    has_style = np.zeros(len(item_row), bool)
    if space is not None:
        rows = np.array([item_row[i] for i in space.ids.tolist() if i in item_row], np.int64)
        keep = np.array([i in item_row for i in space.ids.tolist()], bool)
        centred = space
        if encoders is not None and encoders.style_mean is not None:
            centred = StyleSpace(space.ids, space.vectors, np.asarray(encoders.style_mean, np.float32))
        style[rows] = centred.unit[keep]
        has_style[rows] = True
    return ItemStyle(style, has_style, dim, space)


def mix_review_text(text: np.ndarray, review_items: np.ndarray, review_vecs: np.ndarray, weight: float) -> np.ndarray:
    """Item text vectors mixed with the mean text of each item's reviews (``weight`` of it),
    re-normalised; items nobody reviewed keep their own text. In place, and returned."""
    sums = np.zeros_like(text)
    np.add.at(sums, review_items, review_vecs)
    counts = np.bincount(review_items, minlength=len(text))
    has = counts > 0
    mean_reviews = l2_normalise(sums[has] / counts[has, None])
    text[has] = (1 - weight) * text[has] + weight * mean_reviews
    text[:] = l2_normalise(text)
    return text


def derive_encoders(items_sorted: pl.DataFrame, prices: np.ndarray, space: StyleSpace | None, cfg: FeatureConfig) -> ItemEncoders:
    """Encoders of this catalogue: its categories, price quantiles and style mean."""
    return ItemEncoders(
        categories=tuple(sorted(set(items_sorted["category"].drop_nulls().to_list()))),
        price_edges=tuple(float(e) for e in quantile_edges(prices, cfg.price_buckets)),
        style_mean=tuple(float(v) for v in space.mean) if space is not None else None,
    )


def item_table(
    item_ids: np.ndarray, items_sorted: pl.DataFrame, split: Split, cfg: FeatureConfig, encoders: ItemEncoders, style: ItemStyle, text: np.ndarray, text_plain: np.ndarray
) -> ItemTable:
    """The item table before a vocabulary is chosen (ids and popularity: FeatureSet.with_vocab)."""
    prices = item_prices(items_sorted)
    categories = list(encoders.categories)
    cat_index = {c: i + 1 for i, c in enumerate(categories)}
    return ItemTable(
        ids=item_ids,
        id_index=np.zeros(len(item_ids), np.int64),  # set by with_vocab
        category=np.array([cat_index.get(c, 0) for c in items_sorted["category"].to_list()], np.int64),
        price_bucket=quantile_buckets(prices, cfg.price_buckets, np.asarray(encoders.price_edges)),
        popularity_bucket=np.zeros(len(item_ids), np.int64),  # set by with_vocab
        style=style.vectors,
        has_style=style.has_style,
        text=text.astype(np.float32),
        text_plain=text_plain,
        cold=np.isin(item_ids, np.array(sorted(split.cold_items), dtype=object)),
        created_s=items_sorted["created_at"].dt.epoch("s").to_numpy(),
        categories=categories,
    )


def item_prices(items_sorted: pl.DataFrame) -> np.ndarray:
    return items_sorted["price"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
