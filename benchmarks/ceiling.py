"""How high can Recall@50 go on a StyleMart split? Reference rankers that read the ground truth.

StyleMart draws every interaction from a known choice model (``data/stylemart/simulate.py``):
a session picks a category from the user's intents, shows random items of it, and the
user views and clicks by a utility of style affinity, quality, price and novelty. This
script scores, with the project's own evaluation code on the saved split:

- the **oracle**: log intent + utility from the *true* user parameters and item labels;
- **plug-in** estimators that read only each user's behaviour before the cutoff, but
  the *true* item category and style labels: smoothed shares of the history's categories
  and styles (the estimate of intent and of affinity^1.3), then + the item's smoothed
  events per day on sale (quality; a cold item gets the median), then + the user's mean
  within-category price z-score (price sensitivity);
- the same plug-in over the **style groups the ranker learns from the photos**
  (``recsys.rank.features``: k-means of the style vectors, and spectral groups of their
  nearest-neighbour graph) in place of the true styles, and how often a style vector's
  nearest neighbours share its true style, and the groups' normalised mutual information
  with the true styles: how much of the true-label plug-in a model that reads photos can reach;
- the default **two-tower** model with the true labels (one-hot category + style) in place
  of the style and text vectors: what it reaches when the content is perfectly clean;
- implicit ALS, for the ratio.

A model that must learn category and style from photos and text, and quality from
behaviour, is unlikely to beat the plug-in that is handed the labels. Usage:

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/ceiling.py workspace/datasets/stylemart-demo [--fold val] [--no-train]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from pipelines import env  # noqa: E402

env.setup()  # one BLAS thread, offline text model, as the CLI
DAY = 86_400


class GroundTruth:
    """The split's users and items with their true StyleMart parameters, in feature-row order."""

    def __init__(self, fs, root) -> None:
        import polars as pl

        from data.stylemart.render import CATEGORIES
        from data.stylemart.simulate import CATEGORY_PRICE

        from data.dataset import DatasetDir

        gt = DatasetDir(root).ground_truth_dir
        users = pl.DataFrame({"user_id": fs.user_ids}).join(pl.read_parquet(gt / "users.parquet"), on="user_id", how="left")
        items = pl.DataFrame({"item_id": fs.items.ids}).join(pl.read_parquet(gt / "items.parquet"), on="item_id", how="left")
        catalogue = pl.DataFrame({"item_id": fs.items.ids}).join(pl.read_parquet(root / "items.parquet"), on="item_id", how="left")
        self.affinity = np.stack(users["style_affinity"].to_numpy())
        self.intent = np.stack(users["category_intent"].to_numpy())
        self.price_sensitivity = users["price_sensitivity"].to_numpy()
        self.style = items["style_index"].to_numpy()
        self.quality = items["quality"].to_numpy()
        self.category = np.array([CATEGORIES.index(c) for c in items["category"]])
        base = np.array([CATEGORY_PRICE[c] for c in CATEGORIES])[self.category]
        self.price_z = np.log(catalogue["price"].to_numpy() / base) / 0.35  # as simulate.make_catalogue draws it
        self.created_s = catalogue["created_at"].dt.epoch("s").to_numpy()
        self.n_styles, self.n_categories = self.affinity.shape[1], self.intent.shape[1]


@dataclasses.dataclass
class Oracle:
    """log P(category | user) + the choice model's utility, from the true parameters."""

    truth: GroundTruth
    name: str = "oracle"

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        from data.stylemart.simulate import ChoiceModel

        t, ch = self.truth, ChoiceModel()
        age_days = np.maximum(time - t.created_s, 0) / DAY
        utility = (
            ch.style_weight * np.log(ch.style_eps + t.n_styles * t.affinity[users][:, t.style])
            + t.quality[None]
            - ch.price_weight * t.price_sensitivity[users, None] * t.price_z[None]
            + ch.novelty_weight * np.exp(-age_days / ch.novelty_days)[None]
        )
        return np.log(t.intent[users][:, t.category] + 1e-9) + utility


@dataclasses.dataclass
class PlugIn:
    """Smoothed shares of the history's (true) categories and styles; optionally + item
    quality (smoothed events per day on sale) and + price (user's mean price z-score)."""

    fs: object
    truth: GroundTruth
    before: int
    quality: bool = False
    price: bool = False
    category_prior: float = 1.0
    style_prior: float = 0.3
    price_prior: float = 5.0
    name: str = "plug-in"

    def __post_init__(self) -> None:
        fs, t = self.fs, self.truth
        sel = fs.ev_ts < self.before
        users, items = fs.ev_user[sel], fs.ev_item[sel]
        self.category_counts = np.zeros((fs.n_users, t.n_categories))
        np.add.at(self.category_counts, (users, t.category[items]), 1.0)
        self.style_counts = np.zeros((fs.n_users, t.n_styles))
        np.add.at(self.style_counts, (users, t.style[items]), 1.0)
        self.price_sum = np.bincount(users, t.price_z[items], minlength=fs.n_users)
        self.events = np.bincount(users, minlength=fs.n_users)
        counts = np.bincount(items, minlength=fs.items.n).astype(float)
        days = np.maximum((self.before - np.minimum(t.created_s, self.before)) / DAY, 1.0)
        prior = float(np.median((counts / days)[counts > 0]))
        self.log_rate = np.where(counts > 0, np.log((counts + prior) / (days + 1.0)), np.log(prior))

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        t = self.truth
        cc, sc = self.category_counts[users], self.style_counts[users]
        intent = (cc + self.category_prior) / (cc.sum(1, keepdims=True) + t.n_categories * self.category_prior)
        taste = (sc + self.style_prior) / (sc.sum(1, keepdims=True) + t.n_styles * self.style_prior)
        out = np.log(intent[:, t.category]) + np.log(taste[:, t.style])
        if self.quality:
            out = out + 0.5 * self.log_rate[None]
        if self.price:
            out = out + (self.price_sum[users] / (self.events[users] + self.price_prior))[:, None] * t.price_z[None]
        return out


def with_learned_styles(fs, truth: GroundTruth, graph: bool = False) -> GroundTruth:
    """``truth`` with each item's style replaced by its style group learned from the photos
    (the ranker's, recsys.rank.features: k-means, or with ``graph`` the spectral groups of
    the style vectors' neighbour graph)."""
    import copy

    from recsys.rank.features import FeatureContext

    learned = copy.copy(truth)
    context = FeatureContext(np.full(fs.items.n, np.nan))
    learned.style = context.style_graph_cluster(fs) if graph else context.style_cluster(fs)
    learned.n_styles = int(learned.style.max()) + 1
    return learned


def neighbour_purity(vectors: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (10, 50, 200)) -> dict[int, float]:
    """The share of each vector's k nearest neighbours (cosine, FAISS) with its label."""
    import faiss

    x = np.ascontiguousarray(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12), np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, nearest = index.search(x, max(ks) + 1)
    nearest = nearest[:, 1:]  # not itself
    return {k: float((labels[nearest[:, :k]] == labels[:, None]).mean()) for k in ks}


def two_tower_on_true_labels(fs, truth: GroundTruth):
    """The default two-tower with one-hot (style, category) in place of the content vectors."""
    from recsys.model import TwoTowerConfig
    from recsys.train import Trainer, TrainConfig, TwoTowerRecommender

    labels = np.zeros((fs.items.n, truth.n_styles + truth.n_categories), np.float32)
    labels[np.arange(fs.items.n), truth.style] = 1.0
    labels[np.arange(fs.items.n), truth.n_styles + truth.category] = 1.0
    clean = dataclasses.replace(fs, items=dataclasses.replace(fs.items, style=labels, has_style=np.ones(fs.items.n, bool)), style_dim=labels.shape[1])
    config = TwoTowerConfig(item_features=("category", "price", "style"), user_features=("user_style",))
    result = Trainer(clean, config, TrainConfig(), progress=False).fit()
    return TwoTowerRecommender(result.model, result.features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="a StyleMart dataset folder with ground_truth/ and a saved split")
    parser.add_argument("--no-train", action="store_true", help="skip the two-tower on true labels")
    parser.add_argument("--fold", choices=("test", "val"), default="test", help="the fold scored (val: choose between groupings without the test fold)")
    args = parser.parse_args()

    from data.split import load_or_create_split
    from data.validate import load_dataset
    from recsys.baselines import ImplicitMF
    from recsys.evaluate import EvalConfig, evaluate
    from recsys.features import build_features

    ds = load_dataset(args.dataset)
    fs = build_features(ds, load_or_create_split(ds))
    truth = GroundTruth(fs, ds.dir.root)
    before = fs.time_of(args.fold)
    rankers = [
        ("implicit ALS", lambda: ImplicitMF("als").fit(fs, before)),
        ("oracle: true user parameters and item labels", lambda: Oracle(truth)),
        ("plug-in: history shares of true categories x styles", lambda: PlugIn(fs, truth, before)),
        ("plug-in + item quality from popularity", lambda: PlugIn(fs, truth, before, quality=True)),
        ("plug-in + quality + price sensitivity", lambda: PlugIn(fs, truth, before, quality=True, price=True)),
        ("plug-in + quality, style groups learned from the photos (k-means)", lambda: PlugIn(fs, with_learned_styles(fs, truth), before, quality=True)),
        ("plug-in + quality, style groups of the photos' neighbour graph", lambda: PlugIn(fs, with_learned_styles(fs, truth, graph=True), before, quality=True)),
    ]
    if not args.no_train:
        rankers.append(("two-tower, true labels as its only content", lambda: two_tower_on_true_labels(fs, truth)))
    als = None
    print("| ranker | Recall@50 | × ALS | Recall@10 | cold-item Recall@50 |\n| --- | ---: | ---: | ---: | ---: |")
    for name, make in rankers:
        result = evaluate(make(), fs, EvalConfig(fold=args.fold))
        r50 = result["all"]["recall@50"]
        als = als or r50
        cold = result.get("cold_items", {}).get("recall@50", 0.0)
        print(f"| {name} | {r50:.4f} | {r50 / als:.2f} | {result['all']['recall@10']:.4f} | {cold:.4f} |", flush=True)
    has = fs.items.has_style
    purity = neighbour_purity(fs.items.style[has], truth.style[has])
    print("\nstyle vectors' nearest neighbours (cosine) with the same true style: " + ", ".join(f"{k}-NN {v:.3f}" for k, v in purity.items()))
    from sklearn.metrics import normalized_mutual_info_score

    nmi = {name: normalized_mutual_info_score(truth.style[has], with_learned_styles(fs, truth, graph).style[has]) for name, graph in (("k-means", False), ("neighbour graph", True))}
    print("learned style groups' NMI with the true styles: " + ", ".join(f"{name} {v:.2f}" for name, v in nmi.items()))


if __name__ == "__main__":
    main()
