"""The ranking stage's configuration: the ``[rank]`` section of a TOML file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from recsys.tomlconf import build_dataclass, read_toml

# every candidate source, in the order their columns appear
SOURCE_NAMES = ("two_tower", "als", "item_cf", "style_knn", "text_knn", "popular", "popular_in_category", "new_arrivals")
# FAISS index kinds of the two-tower source (recsys.index.CandidateIndex); flat is exact
INDEX_KINDS = ("flat", "ivf", "hnsw", "auto")


RANK_MODELS = ("lightgbm", "dcn")


class RankConfigError(ValueError):
    pass


def _default_sources() -> dict[str, int]:
    return {"two_tower": 100, "als": 100, "item_cf": 100, "style_knn": 50, "text_knn": 50, "popular": 50, "popular_in_category": 50, "new_arrivals": 30}


@dataclass(frozen=True)
class RankConfig:
    # candidate source -> items per user it returns (top-N); a source left out is not used
    sources: dict[str, int] = field(default_factory=_default_sources)
    exclude_seen: bool = True  # drop items the user interacted with before the query (as the evaluation masks them)
    two_tower_index: str = "flat"  # the two-tower source's FAISS index: flat (exact), ivf, hnsw or auto
    popular_days: float = 7.0  # window of the recent-popularity sources
    new_arrival_days: float = 14.0  # an item is a new arrival this long after its creation
    item_cf_recent: int = 20  # the user's last events item-CF starts from
    # the most similar items item-CF keeps per item: the co-occurrence matrix of a shop is dense
    # (a quarter of all pairs on StyleMart small) and scoring costs its entries; 400 leaves the
    # union's recall of test purchases where all of them put it on `demo` and `small`
    # (benchmarks/item_cf.py); on MovieLens-100K it costs a little at the top (README)
    item_cf_neighbours: int = 400
    max_sim_history: int = 20  # history items the max-style-similarity feature looks at
    # training windows before the test cutoff: features at each window's start, labels = its events
    windows: int = 5
    window_days: float = 7.0
    # the two-tower the training windows see: one trained (as the served one was) on the events
    # before the first window; false: the served one, which has seen the windows' labels
    window_two_tower: bool = True
    # with window_two_tower: one two-tower per window, each trained on the events before its
    # start (every window's as fresh as the served one is to the test lists), `windows`
    # trainings instead of one; false: one for all, trained before the first window (on the
    # demo's seeds neither won: docs/ranking.md)
    window_two_tower_per_window: bool = False
    # unlabelled candidates sampled per user in the training windows; on the demo, validation
    # NDCG@10 was highest at 20 (10: 0.0781, 20: 0.0790, 50: 0.0777; docs/ranking.md)
    negatives_per_user: int = 20
    # LightGBM
    label_gain: tuple[float, ...] = (0.0, 1.0, 3.0, 7.0)  # NDCG gain of label none / click / cart / purchase (LightGBM's 2^label - 1)
    # (regularised: small steps, bagged rows and features, L2 on leaves; on the demo this was
    # above the unregularised booster on mean test Recall@10 and the simulated A/B: docs/ranking.md)
    n_estimators: int = 1000  # upper bound; early stopping on validation NDCG@10 picks the rounds
    learning_rate: float = 0.02
    num_leaves: int = 31
    min_child_samples: int = 100
    feature_fraction: float = 0.7  # features each tree sees
    bagging_fraction: float = 0.8  # training rows each tree sees (redrawn every tree)
    lambda_l2: float = 10.0
    early_stopping_rounds: int = 100
    num_threads: int = 1
    seed: int = 0
    # the ranking model: "lightgbm" (lambdarank) or "dcn" (DCN-v2 with id embeddings, recsys/rank/dcn.py)
    model: str = "lightgbm"
    dcn_epochs: int = 20  # upper bound; early stopping on validation NDCG@10 picks the epochs
    dcn_patience: int = 3
    dcn_lr: float = 3e-4
    dcn_weight_decay: float = 1e-5
    dcn_embedding_dim: int = 16  # user and item id embeddings
    dcn_id_buckets: int = 100_000  # id tables' rows (ids beyond are hashed: row mod buckets)
    dcn_cross_layers: int = 3
    dcn_low_rank: int = 16
    dcn_hidden: int = 128  # the MLP beside the cross network
    dcn_batch_groups: int = 64  # users (query groups) per batch
    als_factors: int = 64
    als_iterations: int = 15

    def __post_init__(self) -> None:
        # TOML gives each value its own type: a quoted "true" or "0.05" would pass unnoticed
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool" and not isinstance(value, bool):
                raise RankConfigError(f"[rank] {f.name} must be true or false, got {value!r}")
            if f.type == "float" and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise RankConfigError(f"[rank] {f.name} must be a number, got {value!r}")
        unknown = sorted(set(self.sources) - set(SOURCE_NAMES))
        if unknown:
            raise RankConfigError(f"[rank] sources: unknown source(s) {unknown}; known: {list(SOURCE_NAMES)}")
        if not self.sources:
            raise RankConfigError("[rank] sources: at least one source is needed")
        bad = {k: v for k, v in self.sources.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1}
        if bad:
            raise RankConfigError(f"[rank] sources: N must be an integer >= 1, got {bad}")
        if self.two_tower_index not in INDEX_KINDS:
            raise RankConfigError(f"[rank] two_tower_index must be one of {list(INDEX_KINDS)}, got {self.two_tower_index!r}")
        if self.windows < 2:
            raise RankConfigError(f"[rank] windows must be >= 2 (the last one validates), got {self.windows}")
        if len(self.label_gain) < 4 or any(g < 0 for g in self.label_gain):
            raise RankConfigError(f"[rank] label_gain needs a gain >= 0 for each label none / click / cart / purchase, got {list(self.label_gain)}")
        if not self.window_days > 0 or self.negatives_per_user < 1 or self.num_threads < 1:
            raise RankConfigError("[rank] window_days must be > 0, negatives_per_user and num_threads >= 1")
        for name in ("item_cf_recent", "item_cf_neighbours"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RankConfigError(f"[rank] {name} must be an integer >= 1, got {value!r}")
        if not (0 < self.feature_fraction <= 1 and 0 < self.bagging_fraction <= 1) or self.lambda_l2 < 0 or not self.learning_rate > 0:
            raise RankConfigError(
                f"[rank] feature_fraction and bagging_fraction must be in (0, 1], lambda_l2 >= 0 and learning_rate > 0, got "
                f"{self.feature_fraction}, {self.bagging_fraction}, {self.lambda_l2}, {self.learning_rate}"
            )
        if self.model not in RANK_MODELS:
            raise RankConfigError(f"[rank] model must be one of {list(RANK_MODELS)}, got {self.model!r}")
        dcn_ints = ("dcn_epochs", "dcn_patience", "dcn_embedding_dim", "dcn_id_buckets", "dcn_cross_layers", "dcn_low_rank", "dcn_hidden", "dcn_batch_groups")
        bad = {k: getattr(self, k) for k in dcn_ints if not isinstance(getattr(self, k), int) or isinstance(getattr(self, k), bool) or getattr(self, k) < 1}
        if bad or self.dcn_hidden < 2:
            raise RankConfigError(f"[rank] {', '.join(dcn_ints)} must be integers >= 1 (dcn_hidden >= 2), got {bad or {'dcn_hidden': self.dcn_hidden}}")
        if not self.dcn_lr > 0 or not self.dcn_weight_decay >= 0:
            raise RankConfigError(f"[rank] dcn_lr must be > 0 and dcn_weight_decay >= 0, got {self.dcn_lr}, {self.dcn_weight_decay}")

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(s for s in SOURCE_NAMES if s in self.sources)

    def flat_params(self) -> dict[str, str]:
        return {f"rank.{k}": str(v) for k, v in asdict(self).items()}

    def to_json(self) -> dict:
        return asdict(self)

    def sha256(self) -> str:
        """A digest of every setting (a registered ranker is re-used only for the same one)."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()


def load_rank_config(path: str | Path | None, overrides: dict | None = None) -> RankConfig:
    """The ``[rank]`` section of ``path`` (defaults without a file); any other section is an error."""
    data: dict = {}
    where = "config"
    if path is not None:
        where = str(path)
        raw = read_toml(path, RankConfigError)
        unknown = sorted(set(raw) - {"rank"})
        if unknown:
            raise RankConfigError(f"{path}: unknown section(s) {unknown}; a ranking config has only [rank]")
        data = dict(raw.get("rank", {}))
    data.update(overrides or {})
    return build_dataclass(RankConfig, data, f"{where} [rank]", RankConfigError)
