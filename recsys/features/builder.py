"""build_features: a dataset and a split -> the FeatureSet, in named steps."""

from __future__ import annotations

import numpy as np
import polars as pl

from data.split import Split
from data.validate import ValidatedDataset
from recsys.features.config import FEATURES_DIR, FeatureConfig
from recsys.features.events import event_log, review_log, review_table
from recsys.features.featureset import FeatureSet
from recsys.features.items import ItemEncoders, derive_encoders, item_prices, item_style, item_table, item_texts, mix_review_text
from recsys.text import TEXT_DIM, CachedTextEmbedder

NO_START, NO_END = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)  # no review / every review


def build_features(
    ds: ValidatedDataset,
    split: Split,
    config: FeatureConfig | None = None,
    require_style: bool = True,
    encoders: ItemEncoders | None = None,
    through_end: bool = False,
) -> FeatureSet:
    """Compute (or load from cache) every frozen feature of ``ds`` under ``split``.

    ``encoders`` (from a trained model's bundle) fix the category list, price buckets and
    style centre; without them they are derived from this catalogue. Item texts mix in the
    reviews written before the test cutoff, or, ``through_end`` (deploy mode: a model that
    learns from every event), every review up to the end of the data.
    """
    cfg = config or FeatureConfig()
    item_ids = np.sort(ds.items["item_id"].to_numpy()).astype(object)
    user_ids = np.sort(ds.users["user_id"].to_numpy()).astype(object)
    item_row = {i: r for r, i in enumerate(item_ids.tolist())}
    user_row = {u: r for r, u in enumerate(user_ids.tolist())}
    log = event_log(ds, split, cfg, item_row, user_row)

    items_sorted = pl.DataFrame({"item_id": item_ids}).join(ds.items, on="item_id", how="left")
    style = item_style(ds, item_row, require_style, encoders)

    # text: title + description, mixed with the mean of reviews before the cutoff
    embedder = CachedTextEmbedder(ds.dir.root / FEATURES_DIR / "text_cache.parquet")
    text = embedder.embed(item_texts(ds, item_ids))
    text_plain = text.astype(np.float32, copy=True)
    reviews = review_table(ds, item_row, user_row)
    review_vecs = embedder.embed([t or "" for t in reviews["text"].to_list()]) if reviews.height else np.zeros((0, TEXT_DIM), np.float32)
    text_reviews_before = NO_END if through_end else int(split.test_start.timestamp()) if split.test_start is not None else NO_START
    before = (reviews["t"] < text_reviews_before).to_numpy()
    if before.any():
        mix_review_text(text, reviews["i"].to_numpy()[before], review_vecs[before], cfg.review_text_weight)

    encoders = encoders or derive_encoders(items_sorted, item_prices(items_sorted), style.space, cfg)
    items = item_table(item_ids, items_sorted, split, cfg, encoders, style, text, text_plain)
    fs = FeatureSet(
        config=cfg,
        items=items,
        user_ids=user_ids,
        user_index=np.zeros(len(user_ids), np.int64),
        split=split,
        **log,
        **review_log(reviews, review_vecs, len(user_ids)),
        text_reviews_before=text_reviews_before,
        style_dim=style.dim,
        fingerprint=ds.manifest.fingerprint,
        encoders=encoders,
    )
    return fs.with_vocab(("train",))
