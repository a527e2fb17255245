"""The style-aware two-tower retrieval model on TorchRec.

Item tower: item id, category and price bucket through an ``EmbeddingBagCollection``;
the frozen, centred style vector and MiniLM text vector through projections.
User tower: user id (EBC), the bag of the last N interacted items (weighted EBC: event
type x recency weights summing to 1, i.e. a weighted mean), the style profile and the
text profile those items imply (weighted means of their frozen vectors), the mean
text vector of the user's own reviews, and optionally the weighted share of each category
and price bucket among those items. Each tower fuses its
modalities (concatenation + MLP, or a learned gate) into an L2-normalised vector.

Cold start: an id missing from the training vocabulary is an *empty bag* (zero vector),
and during training the behaviour-derived item inputs (id, popularity, and the reviews
mixed into the text vector) are dropped at random (``id_dropout``) so the content path
learns to carry the item tower alone, as it must for items nobody has bought or reviewed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from recsys.features import FeatureSet, UserBatch

ITEM_FEATURES = ("item_id", "category", "price", "popularity", "style", "text")
USER_FEATURES = ("user_id", "history", "user_style", "history_text", "user_text", "history_category", "history_price")


# The default feature set is the one that measured best on StyleMart's validation slice:
# content (style, text, category, price) and behaviour summarised through content (the
# style and text profiles of the user's recent items, their review text). Id embeddings
# (item_id, user_id, history, popularity) are available but overfit there; see the README.
DEFAULT_ITEM_FEATURES = ("category", "price", "style", "text")
DEFAULT_USER_FEATURES = ("user_style", "history_text", "user_text")


@dataclass(frozen=True)
class TwoTowerConfig:
    dim: int = 64
    id_dim: int = 16
    side_dim: int = 16
    hidden: int = 128
    item_features: tuple[str, ...] = DEFAULT_ITEM_FEATURES
    user_features: tuple[str, ...] = DEFAULT_USER_FEATURES
    fusion: Literal["concat", "gated"] = "concat"
    id_dropout: float = 0.5  # item id, popularity and review text dropped in training: the content path must carry cold items
    user_id_dropout: float = 0.5  # user id and history bag dropped together, per example
    temperature: float = 0.05

    def __post_init__(self) -> None:
        unknown = sorted((set(self.item_features) - set(ITEM_FEATURES)) | (set(self.user_features) - set(USER_FEATURES)))
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; item features: {list(ITEM_FEATURES)}, user features: {list(USER_FEATURES)}")
        if not self.item_features or not self.user_features:
            raise ValueError("each tower needs at least one feature")
        if self.fusion not in ("concat", "gated"):
            raise ValueError(f"fusion must be 'concat' or 'gated', got {self.fusion!r}")

    @property
    def uses_style(self) -> bool:
        """Whether a tower reads the items' style vectors (a dataset without images cannot serve it)."""
        return bool({"style", "user_style"} & (set(self.item_features) | set(self.user_features)))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Vocab:
    """Table sizes, recorded with the weights so a checkpoint can be rebuilt."""

    n_items: int
    n_item_ids: int
    n_categories: int
    n_price_buckets: int
    n_popularity_buckets: int
    n_user_ids: int
    style_dim: int
    text_dim: int

    @classmethod
    def of(cls, fs: FeatureSet) -> Vocab:
        return cls(
            n_items=fs.items.n,
            n_item_ids=fs.n_item_vocab,
            n_categories=len(fs.items.categories) + 1,
            n_price_buckets=fs.config.price_buckets + 1,
            n_popularity_buckets=fs.config.popularity_buckets + 1,
            n_user_ids=fs.n_user_vocab,
            style_dim=fs.style_dim,
            text_dim=fs.items.text.shape[1],
        )


class Fusion(nn.Module):
    """Per-modality projections, then concatenation + MLP or a softmax gate over modalities."""

    def __init__(self, in_dims: list[int], hidden: int, out_dim: int, kind: str):
        super().__init__()
        self.proj = nn.ModuleList([nn.Sequential(nn.Linear(d, hidden), nn.ReLU()) for d in in_dims])
        self.kind = kind
        if kind == "gated":
            self.gate = nn.Linear(hidden * len(in_dims), len(in_dims))
            self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
        else:
            self.out = nn.Sequential(nn.Linear(hidden * len(in_dims), hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, parts: list[torch.Tensor]) -> torch.Tensor:
        projected = [p(x) for p, x in zip(self.proj, parts, strict=True)]
        if self.kind == "gated":
            stacked = torch.stack(projected, dim=1)
            gates = torch.softmax(self.gate(torch.cat(projected, dim=1)), dim=1)
            return F.normalize(self.out((gates.unsqueeze(-1) * stacked).sum(1)), dim=-1)
        return F.normalize(self.out(torch.cat(projected, dim=1)), dim=-1)


def _kjt(keys: list[str], values: list[torch.Tensor], lengths: list[torch.Tensor], weights: torch.Tensor | None = None) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(keys=keys, values=torch.cat(values).long(), lengths=torch.cat(lengths).int(), weights=weights)


class TwoTower(nn.Module):
    def __init__(self, config: TwoTowerConfig, vocab: Vocab, item_tables: dict[str, torch.Tensor]):
        super().__init__()
        self.config, self.vocab = config, vocab
        c, v = config, vocab
        mean = PoolingType.MEAN
        item_tables_cfg = []
        if "item_id" in c.item_features:
            item_tables_cfg.append(EmbeddingBagConfig(name="t_item_id", embedding_dim=c.id_dim, num_embeddings=v.n_item_ids, feature_names=["item_id"], pooling=mean))
        if "category" in c.item_features:
            item_tables_cfg.append(EmbeddingBagConfig(name="t_category", embedding_dim=c.side_dim, num_embeddings=v.n_categories, feature_names=["category"], pooling=mean))
        if "price" in c.item_features:
            item_tables_cfg.append(EmbeddingBagConfig(name="t_price", embedding_dim=c.side_dim, num_embeddings=v.n_price_buckets, feature_names=["price_bucket"], pooling=mean))
        if "popularity" in c.item_features:
            item_tables_cfg.append(EmbeddingBagConfig(name="t_popularity", embedding_dim=c.side_dim, num_embeddings=v.n_popularity_buckets, feature_names=["popularity_bucket"], pooling=mean))
        self.item_keys = [t.feature_names[0] for t in item_tables_cfg]
        self.item_sparse = EmbeddingBagCollection(tables=item_tables_cfg, device=torch.device("cpu")) if item_tables_cfg else None
        self.user_sparse = (
            EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t_user_id", embedding_dim=c.id_dim, num_embeddings=v.n_user_ids, feature_names=["user_id"], pooling=mean)], device=torch.device("cpu"))
            if "user_id" in c.user_features
            else None
        )
        self.history = (
            EmbeddingBagCollection(tables=[EmbeddingBagConfig(name="t_history", embedding_dim=c.id_dim, num_embeddings=v.n_items, feature_names=["history"], pooling=PoolingType.SUM)], is_weighted=True, device=torch.device("cpu"))
            if "history" in c.user_features
            else None
        )
        for name, tensor in item_tables.items():
            self.register_buffer(name, tensor, persistent=True)

        item_dims = [t.embedding_dim for t in item_tables_cfg]
        if "style" in c.item_features:
            item_dims.append(v.style_dim)
        if "text" in c.item_features:
            item_dims.append(v.text_dim)
        user_dims = [c.id_dim for f in ("user_id", "history") if f in c.user_features]
        if "user_style" in c.user_features:
            user_dims.append(v.style_dim)
        if "history_text" in c.user_features:
            user_dims.append(v.text_dim)
        if "user_text" in c.user_features:
            user_dims.append(v.text_dim + 1)
        if "history_category" in c.user_features:
            user_dims.append(v.n_categories)
        if "history_price" in c.user_features:
            user_dims.append(v.n_price_buckets)
        self.item_fusion = Fusion(item_dims, c.hidden, c.dim, c.fusion)
        self.user_fusion = Fusion(user_dims, c.hidden, c.dim, c.fusion)

    ITEM_TABLES = ("item_id_index", "item_category", "item_price", "item_popularity", "item_style", "item_text", "item_text_plain")

    @staticmethod
    def item_tables(fs: FeatureSet) -> dict[str, torch.Tensor]:
        it = fs.items
        return {
            "item_id_index": torch.from_numpy(it.id_index),
            "item_category": torch.from_numpy(it.category),
            "item_price": torch.from_numpy(it.price_bucket),
            "item_popularity": torch.from_numpy(it.popularity_bucket),
            "item_style": torch.from_numpy(it.style),
            "item_text": torch.from_numpy(it.text),
            "item_text_plain": torch.from_numpy(it.text_plain),
        }

    # -- towers ----------------------------------------------------------------------

    def item_embeddings(self, rows: torch.Tensor, drop_ids: bool = False, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Item vectors; ``keep`` (bool per row) overrides the random id dropout, so that a
        distributed trainer can draw the masks of a global batch once and split them."""
        parts = []
        # behaviour-derived inputs (id, popularity, and the reviews mixed into the text) are
        # dropped together at random in training, so the model learns what an item that
        # nobody has seen yet looks like. Without the reviews' dropout a review-less text
        # vector tells "never bought" and cold items sink (cold/warm Recall@50 0.57x on demo).
        kept = torch.ones_like(rows, dtype=torch.bool)
        if keep is not None:
            kept = keep
        elif drop_ids and self.config.id_dropout > 0:
            kept = torch.rand(rows.shape, device=rows.device) >= self.config.id_dropout
        if self.item_sparse is not None:
            values, lengths = [], []
            for key in self.item_keys:
                if key == "item_id":
                    ids = self.item_id_index[rows]
                    keep = (ids > 0) & kept
                    values.append(ids[keep])
                    lengths.append(keep.long())
                elif key == "popularity_bucket":
                    values.append(torch.where(kept, self.item_popularity[rows], 0))
                    lengths.append(torch.ones_like(rows))
                else:
                    table = self.item_category if key == "category" else self.item_price
                    values.append(table[rows])
                    lengths.append(torch.ones_like(rows))
            pooled = self.item_sparse(_kjt(self.item_keys, values, lengths)).to_dict()
            parts += [pooled[k] for k in self.item_keys]
        if "style" in self.config.item_features:
            parts.append(self.item_style[rows])
        if "text" in self.config.item_features:
            parts.append(torch.where(kept[:, None], self.item_text[rows], self.item_text_plain[rows]))
        return self.item_fusion(parts)

    def user_embeddings(self, batch: dict[str, torch.Tensor], drop_ids: bool = False) -> torch.Tensor:
        parts = []
        uid = batch["user_index"]
        keep_ids = torch.ones_like(uid, dtype=torch.bool)
        if "keep_ids" in batch:  # masks drawn by the caller (see item_embeddings)
            keep_ids = batch["keep_ids"]
        elif drop_ids and self.config.user_id_dropout > 0:
            keep_ids = torch.rand(uid.shape, device=uid.device) >= self.config.user_id_dropout
        if self.user_sparse is not None:
            keep = (uid > 0) & keep_ids
            parts.append(self.user_sparse(_kjt(["user_id"], [uid[keep]], [keep.long()])).to_dict()["user_id"])
        if self.history is not None:
            kjt = _kjt(["history"], [batch["hist_items"]], [batch["hist_lengths"]], weights=batch["hist_weights"])
            parts.append(self.history(kjt).to_dict()["history"] * keep_ids[:, None])
        for feature, table in (("user_style", self.item_style), ("history_text", self.item_text)):
            if feature in self.config.user_features:
                # weighted mean of the history items' frozen content vectors: the style
                # profile, and its text counterpart
                parts.append(self._history_mean(batch, table))
        if "user_text" in self.config.user_features:
            parts.append(torch.cat([batch["text"], batch["has_text"][:, None].float()], dim=1))
        # what share of the user's recent (weighted) interactions fell in each category /
        # price bucket: the shopping intent a session's category is drawn from
        if "history_category" in self.config.user_features:
            parts.append(self._history_histogram(batch, self.item_category, self.vocab.n_categories))
        if "history_price" in self.config.user_features:
            parts.append(self._history_histogram(batch, self.item_price, self.vocab.n_price_buckets))
        return self.user_fusion(parts)

    @staticmethod
    def _history_histogram(batch: dict[str, torch.Tensor], labels: torch.Tensor, n: int) -> torch.Tensor:
        lengths = batch["hist_lengths"]
        rows = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths)
        flat = rows * n + labels[batch["hist_items"]]
        out = torch.zeros(lengths.shape[0] * n, device=lengths.device)
        return out.index_add_(0, flat, batch["hist_weights"]).view(-1, n)

    @staticmethod
    def _history_mean(batch: dict[str, torch.Tensor], table: torch.Tensor) -> torch.Tensor:
        lengths = batch["hist_lengths"]
        rows = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths)
        out = torch.zeros(lengths.shape[0], table.shape[1], device=table.device)
        return out.index_add_(0, rows, table[batch["hist_items"]] * batch["hist_weights"][:, None])

    def forward(self, batch: dict[str, torch.Tensor], item_rows: torch.Tensor, item_keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embeddings(batch, drop_ids=self.training), self.item_embeddings(item_rows, drop_ids=self.training, keep=item_keep)


def user_batch_tensors(ub: UserBatch) -> dict[str, torch.Tensor]:
    return {
        "user_index": torch.from_numpy(np.asarray(ub.user_index, np.int64)),
        "hist_items": torch.from_numpy(np.asarray(ub.hist_items, np.int64)),
        "hist_lengths": torch.from_numpy(np.asarray(ub.hist_lengths, np.int64)),
        "hist_weights": torch.from_numpy(np.asarray(ub.hist_weights, np.float32)),
        "text": torch.from_numpy(ub.text),
        "has_text": torch.from_numpy(np.asarray(ub.has_text, bool)),
    }
