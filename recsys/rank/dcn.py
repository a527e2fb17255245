"""An alternative ranker over the same training frames: DCN-v2 (TorchRec's
``LowRankCrossNet``) with user and item id embeddings.

Inputs per (user, candidate) row: the dense pair features of ``recsys.rank.features``
(signed log1p, then standardised with the training frames' mean and sd of the present
values; NaN -> 0 plus one missing-indicator per feature), concatenated with a user and an
item id embedding (one ``EmbeddingBagCollection``, two tables; ids are the user row ``u``
and the catalogue row ``i``, taken modulo ``dcn_id_buckets``). The normaliser is part of
the model (buffers), so ``predict_frame`` takes the raw feature frame.

Architecture (the parallel DCN-v2): ``x0`` -> ``LowRankCrossNet`` (``dcn_cross_layers``
layers of rank ``dcn_low_rank``) beside an MLP (``dcn_hidden``, two ReLU layers); both
outputs concatenated -> a linear logit.

Loss: listwise softmax cross-entropy over each user's candidates in a window (a query
group, as LightGBM's lambdarank sees it), with the target distribution
``gain / sum(gain)`` over the group, ``gain`` = ``[rank] label_gain`` of the row's label
(default 0 / 1 / 3 / 7 for none / click / cart / purchase, LightGBM's ``2^label - 1``):
ListNet's top-one probability with graded gains, the same gains NDCG uses. Groups are the
users of a window with at least one labelled candidate; a group whose gains are all 0 (a
zero gain for its labels) has no target and is skipped. Batches hold ``dcn_batch_groups`` whole groups.

Training mirrors the LightGBM path: the earlier windows train, the last window validates
on every candidate (NDCG@10 per group after each epoch; early stopping with
``dcn_patience``), then a fresh model (same seed) is refit on all windows for the best
number of epochs. Seeded and deterministic on CPU: the seed fixes the initial weights and
the group order per epoch, and torch runs on ``num_threads`` threads while it trains and
predicts.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType
from torchrec.modules.crossnet import LowRankCrossNet

from recsys.rank.config import RankConfig
from recsys.rank.features import FeatureContext
from recsys.rank.ranker import RankerFit, WindowParts, boost_from_validation, ndcg_at_k, training_frames
from recsys.rank.sources import CandidateGenerator


# -- the model ------------------------------------------------------------------------------


@contextmanager
def torch_threads(n: int):
    """Run torch on ``n`` threads inside the block (deterministic float sums), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def dense_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd of each column's present values after the signed log1p (sd 1 for a
    constant column, 0 / 1 for an all-NaN one)."""
    z = np.sign(x) * np.log1p(np.abs(x))
    present = ~np.isnan(z)
    n = present.sum(0)
    mean = np.where(n > 0, np.nansum(z, 0) / np.maximum(n, 1), 0.0)
    var = np.where(n > 0, np.nansum((z - mean) ** 2, 0) / np.maximum(n, 1), 1.0)
    sd = np.sqrt(var)
    return mean.astype(np.float32), np.where(sd > 1e-6, sd, 1.0).astype(np.float32)


class DCNv2(nn.Module):
    """Id embeddings ++ normalised dense features -> LowRankCrossNet || MLP -> a logit."""

    def __init__(self, n_dense: int, user_buckets: int, item_buckets: int, config: RankConfig, mean: np.ndarray, sd: np.ndarray):
        super().__init__()
        dim = config.dcn_embedding_dim
        self.user_buckets, self.item_buckets = user_buckets, item_buckets
        self.register_buffer("mean", torch.from_numpy(np.asarray(mean, np.float32)))
        self.register_buffer("sd", torch.from_numpy(np.asarray(sd, np.float32)))
        self.ids = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(name="t_user", embedding_dim=dim, num_embeddings=user_buckets, feature_names=["user"], pooling=PoolingType.SUM),
                EmbeddingBagConfig(name="t_item", embedding_dim=dim, num_embeddings=item_buckets, feature_names=["item"], pooling=PoolingType.SUM),
            ],
            device=torch.device("cpu"),
        )
        width = 2 * dim + 2 * n_dense
        self.cross = LowRankCrossNet(in_features=width, num_layers=config.dcn_cross_layers, low_rank=config.dcn_low_rank)
        h = config.dcn_hidden
        self.deep = nn.Sequential(nn.Linear(width, h), nn.ReLU(), nn.Linear(h, h // 2), nn.ReLU())
        self.head = nn.Linear(width + h // 2, 1)

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """Raw features (NaN = missing) -> standardised values (0 where missing) ++ missing indicators."""
        missing = torch.isnan(x)
        z = (torch.sign(x) * torch.log1p(torch.abs(x)) - self.mean) / self.sd
        z = torch.where(missing, torch.zeros_like(z), z.clamp(-8.0, 8.0))
        return torch.cat([z, missing.float()], dim=1)

    def forward(self, x: torch.Tensor, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        ones = torch.ones(n, dtype=torch.int32)
        kjt = KeyedJaggedTensor(keys=["user", "item"], values=torch.cat([u % self.user_buckets, i % self.item_buckets]).long(), lengths=torch.cat([ones, ones]))
        pooled = self.ids(kjt).to_dict()
        x0 = torch.cat([pooled["user"], pooled["item"], self.dense(x)], dim=1)
        return self.head(torch.cat([self.cross(x0), self.deep(x0)], dim=1)).squeeze(1)


class DCNRanker:
    """A trained DCN-v2 and the feature order it was trained with. ``RankedRecommender``
    calls ``predict_frame`` (it needs the ids beside the features)."""

    def __init__(self, net: DCNv2, features: list[str], threads: int = 1):
        self.net, self.features, self.threads = net, list(features), threads

    def predict(self, x: np.ndarray, u: np.ndarray, i: np.ndarray, batch: int = 65536) -> np.ndarray:
        """Scores of rows ``x`` (features in ``self.features`` order, NaN = missing) of users ``u``, items ``i``."""
        self.net.eval()
        out = np.empty(len(x), np.float32)
        with torch_threads(self.threads), torch.no_grad():
            for s in range(0, len(x), batch):
                xb = torch.as_tensor(np.array(x[s : s + batch], np.float32))
                ub = torch.as_tensor(np.array(u[s : s + batch], np.int64))  # a copy: polars hands out read-only arrays
                ib = torch.as_tensor(np.array(i[s : s + batch], np.int64))
                out[s : s + batch] = self.net(xb, ub, ib).numpy()
        return out

    def predict_frame(self, frame: pl.DataFrame) -> np.ndarray:
        return self.predict(frame.select(self.features).to_numpy().astype(np.float32), frame["u"].to_numpy(), frame["i"].to_numpy())


# -- training -------------------------------------------------------------------------------


@dataclass
class _Rows:
    """Training or validation rows as arrays, grouped by user (consecutive)."""

    x: np.ndarray
    u: np.ndarray
    i: np.ndarray
    label: np.ndarray
    groups: np.ndarray

    @classmethod
    def of(cls, frames: list[pl.DataFrame], names: list[str]) -> _Rows:
        frames = [f for f in frames if f.height]
        return cls(
            np.concatenate([f.select(names).to_numpy().astype(np.float32) for f in frames]),
            np.concatenate([f["u"].to_numpy().astype(np.int64) for f in frames]),
            np.concatenate([f["i"].to_numpy().astype(np.int64) for f in frames]),
            np.concatenate([f["label"].to_numpy().astype(np.float32) for f in frames]),
            np.concatenate([f.group_by("u", maintain_order=True).len()["len"].to_numpy().astype(np.int64) for f in frames]),
        )


def listwise_loss(logits: torch.Tensor, gain: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Mean over groups of the softmax cross-entropy against targets ``gain`` (each row's
    label gain) normalised within the group (rows of group ``group[r]``); groups without a
    positive gain have no target and are left out (0 when none has one)."""
    gmax = torch.zeros(n_groups).scatter_reduce(0, group, logits.detach(), reduce="amax", include_self=False)
    lse = torch.log(torch.zeros(n_groups).index_add(0, group, torch.exp(logits - gmax[group]))) + gmax
    total = torch.zeros(n_groups).index_add(0, group, gain)
    ce = torch.zeros(n_groups).index_add(0, group, gain * (lse[group] - logits))
    keep = total > 0
    return (ce[keep] / total[keep]).mean() if bool(keep.any()) else logits.sum() * 0.0


def _train(config: RankConfig, rows: _Rows, n_users: int, n_items: int, epochs: int, val: _Rows | None = None) -> tuple[DCNRanker, list[float], int]:
    """Train a fresh model for up to ``epochs`` epochs; with ``val``: NDCG@10 after each
    epoch, early stopping, the best epoch's weights. Returns (model, curve, best epoch count)."""
    torch.manual_seed(config.seed)
    mean, sd = dense_stats(rows.x)
    cap = config.dcn_id_buckets
    net = DCNv2(rows.x.shape[1], max(1, min(n_users, cap)), max(1, min(n_items, cap)), config, mean, sd)
    ranker = DCNRanker(net, [], config.num_threads)
    opt = torch.optim.AdamW(net.parameters(), lr=config.dcn_lr, weight_decay=config.dcn_weight_decay)
    starts = np.cumsum(rows.groups) - rows.groups
    x, u, i = (torch.from_numpy(a) for a in (rows.x, rows.u, rows.i))
    label_gain = np.asarray(config.label_gain, np.float32)
    y = torch.from_numpy(label_gain[rows.label.astype(np.int64)])
    curve: list[float] = []
    best, best_state, bad = 0, None, 0
    for epoch in range(epochs):
        net.train()
        order = np.random.default_rng([config.seed, epoch]).permutation(len(rows.groups))
        for b in range(0, len(order), config.dcn_batch_groups):
            gs = order[b : b + config.dcn_batch_groups]
            sizes = rows.groups[gs]
            idx = torch.from_numpy(np.concatenate([np.arange(starts[g], starts[g] + n) for g, n in zip(gs, sizes, strict=True)]))
            group = torch.from_numpy(np.repeat(np.arange(len(gs)), sizes))
            loss = listwise_loss(net(x[idx], u[idx], i[idx]), y[idx], group, len(gs))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if val is None:
            continue
        score = ndcg_at_k(val.groups, val.label.astype(np.int64), ranker.predict(val.x, val.u, val.i), 10, config.label_gain)
        curve.append(score)
        if best_state is None or score > curve[best - 1]:
            best, bad = epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            bad += 1
            if bad >= config.dcn_patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return ranker, curve, best or epochs


def validation_curve(config: RankConfig, frames: list[pl.DataFrame], val: pl.DataFrame, names: list[str], n_users: int, n_items: int) -> tuple[list[float], int, np.ndarray]:
    """Train on ``frames[:-1]`` with early stopping on ``val``: (NDCG@10 per epoch, best
    epoch count, the best epoch's scores of ``val``'s rows)."""
    rows = _Rows.of([val], names)
    with torch_threads(config.num_threads):
        model, curve, best = _train(config, _Rows.of(frames[:-1], names), n_users, n_items, config.dcn_epochs, rows)
        scores = model.predict(rows.x, rows.u, rows.i)
    return curve, best, scores


def fit_dcn_ranker(gen: CandidateGenerator, ctx: FeatureContext, cutoff: int, exclude: tuple[str, ...] = (), window_parts: WindowParts | None = None) -> RankerFit:
    """The DCN-v2 ranker on the LightGBM ranker's windows: train on the earlier ones,
    validate (NDCG@10 per epoch, early stopping) on the last, fit the new-item boost there
    (``recsys.rank.ranker.fit_new_item_boost``, on the best epoch's scores), refit on all
    for the best number of epochs. ``best_iteration`` / ``val_curve`` are in epochs."""
    cfg, fs = gen.config, gen.fs
    frames, val, names = training_frames(gen, ctx, cutoff, exclude, window_parts=window_parts)
    curve, best, val_scores = validation_curve(cfg, frames, val, names, fs.n_users, fs.items.n)
    boost, boost_curve, unit = boost_from_validation(val, val_scores, cfg.label_gain)
    with torch_threads(cfg.num_threads):
        final, _, _ = _train(cfg, _Rows.of(frames, names), fs.n_users, fs.items.n, best)
    final.features = names
    return RankerFit(final, names, best, curve[best - 1], curve, sum(f.height for f in frames[:-1]), val.height, {}, boost, boost_curve, unit)
