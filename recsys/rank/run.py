"""One ranking run: fit the ranker before the test cutoff, measure the candidates' retrieval
recall there, and score the ranked lists next to ALS and the two-tower on the test fold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl

from data.validate import ValidatedDataset
from recsys.baselines import ImplicitMF
from recsys.config import RunConfig, load_run_config
from recsys.evaluate import EvalConfig, GroundTruthStyle, Recommender, evaluate
from recsys.features import FeatureSet
from recsys.features.items import item_prices
from recsys.rank.config import RankConfig, RankConfigError
from recsys.rank.features import STYLE_FEATURES, FeatureContext
from recsys.rank.ranker import RankedRecommender, RankerFit, WindowParts, fit_ranker
from recsys.rank.sources import CandidateGenerator, retrieval_recall, truth_pairs

EVAL = EvalConfig(ks=(10, 50))
REPORTED = (("all", "recall@10"), ("all", "ndcg@10"), ("all", "recall@50"), ("cold_items", "recall@50"))


def catalogue_prices(ds: ValidatedDataset, fs: FeatureSet) -> np.ndarray:
    """Item prices in the feature set's catalogue order (NaN where unknown)."""
    return item_prices(pl.DataFrame({"item_id": fs.items.ids}).join(ds.items, on="item_id", how="left", maintain_order="left"))


@dataclass
class RankingResult:
    fit: RankerFit
    recommender: RankedRecommender
    recall: dict[str, dict[str, float]]  # "purchases" / "truth" -> source (and "all") -> share
    test: dict[str, dict]  # model -> evaluate()'s slices
    variants: dict[str, RankerFit] = field(default_factory=dict)  # ablation -> its fit
    window_two_tower: bool = False  # whether the windows saw their own two-tower (trained before them)


def cutoff_retrieval_recall(gen: CandidateGenerator, cutoff: int) -> dict[str, dict[str, float]]:
    """Share of the test fold's purchases and of its truth (click/cart/purchase) that each
    source's candidates at the cutoff contain, and the union's."""
    fs = gen.fs
    end = int(fs.ev_ts.max()) + 1
    truths = {"purchases": truth_pairs(fs, cutoff, end, ("purchase",), gen.config.exclude_seen), "truth": truth_pairs(fs, cutoff, end, fs.config.eval_events, gen.config.exclude_seen)}
    users = np.unique(truths["truth"]["u"].to_numpy())
    union = gen.union(users, cutoff, end) if len(users) else gen.union(np.zeros(0, np.int64), cutoff, end)
    return {name: retrieval_recall(union, truth, gen.source_names) for name, truth in truths.items()}


# variants of the ranker trained beside it (``run_ranking(..., ablations=...)``)
ABLATIONS = (
    "two-tower + ranker", "ranker without style features", "ranker without the two-tower", "multi-source + DCN-v2 ranker",
    "ranker whose windows see the served two-tower", "ranker without the new-item boost",
)
# the row of the main ranker, by ``[rank] model``
MAIN_NAMES = {"lightgbm": "multi-source + ranker", "dcn": "multi-source + DCN-v2 ranker"}


def ablation(name: str, config: RankConfig, two_tower: Recommender | None) -> tuple[RankConfig, Recommender | None, tuple[str, ...]]:
    """(config, two-tower, excluded features) of an ablation: the two-tower source alone;
    every style feature left out; the two-tower neither a source nor a feature; the same
    sources and features ranked by DCN-v2 (recsys/rank/dcn.py); the training windows
    seeing the served two-tower (which has seen their labels). "ranker without the new-item
    boost" is the main ranker itself with its boost at 0 (run_ranking: nothing retrained)."""
    if name == "two-tower + ranker":
        if two_tower is None:
            raise ValueError("the 'two-tower + ranker' ablation needs the two-tower")
        return replace(config, sources={"two_tower": config.sources.get("two_tower", 100)}), two_tower, ()
    if name == "ranker without style features":
        return config, two_tower, STYLE_FEATURES
    if name == "ranker without the two-tower":
        rest = {k: v for k, v in config.sources.items() if k != "two_tower"}
        return replace(config, sources=rest or {"als": 100}), None, ()
    if name == "multi-source + DCN-v2 ranker":
        return replace(config, model="dcn"), two_tower, ()
    if name == "ranker whose windows see the served two-tower":
        return replace(config, window_two_tower=False), two_tower, ()
    raise ValueError(f"unknown ablation {name!r}; choose from {list(ABLATIONS)}")


def generator_and_context(ds: ValidatedDataset, fs: FeatureSet, config: RankConfig, two_tower: Recommender | None) -> tuple[CandidateGenerator, FeatureContext]:
    """The candidate sources over ``two_tower`` and the pair features' context, as training,
    evaluation and serving build them."""
    gen = CandidateGenerator(fs, config, two_tower)
    return gen, FeatureContext(catalogue_prices(ds, fs), two_tower=two_tower, als=gen.sources.get("als"), max_sim_history=config.max_sim_history)


def ranking_parts(
    ds: ValidatedDataset, fs: FeatureSet, config: RankConfig, two_tower: Recommender | None, window_two_tower: list[Recommender] | None = None,
) -> tuple[CandidateGenerator, FeatureContext, WindowParts | None]:
    """:func:`generator_and_context` over ``two_tower`` (the ranked lists'), and over each
    training window's two-tower, one per distinct model (None without ``window_two_tower``:
    the windows use the ranked lists' own)."""
    gen, ctx = generator_and_context(ds, fs, config, two_tower)
    if window_two_tower is None or two_tower is None:
        return gen, ctx, None
    by_model: dict[int, tuple[CandidateGenerator, FeatureContext]] = {}
    for tt in window_two_tower:
        if id(tt) not in by_model:
            by_model[id(tt)] = generator_and_context(ds, fs, config, tt)
    return gen, ctx, [by_model[id(tt)] for tt in window_two_tower]


def _ranked(
    ds: ValidatedDataset, fs: FeatureSet, config: RankConfig, two_tower: Recommender | None, exclude: tuple[str, ...], name: str,
    cutoff: int | None = None, rounds: int | None = None, window_two_tower: list[Recommender] | None = None, new_item_boost: float = 0.0,
) -> RankedRecommender:
    """The ranker fitted on windows before ``cutoff`` (default: the test cutoff; ``rounds``: see
    fit_ranker), its lists shown until the end of the data (items launched after the cutoff
    are candidates, as for every model the evaluation scores on the test fold).

    ``window_two_tower``: the two-tower each training window sees, trained on events before it
    (default ``two_tower``, which, trained up to the cutoff, has seen the windows' labels);
    the ranked lists use ``two_tower``."""
    gen, ctx, window_parts = ranking_parts(ds, fs, config, two_tower, window_two_tower)
    fit_cutoff = fs.time_of("test") if cutoff is None else cutoff
    if config.model == "dcn":
        from recsys.rank.dcn import fit_dcn_ranker

        if rounds is not None:
            raise RankConfigError("deploy mode refits the LightGBM ranker; the DCN-v2 ranker is evaluated only ([rank] model = \"lightgbm\")")
        fit = fit_dcn_ranker(gen, ctx, fit_cutoff, exclude, window_parts)
    else:
        fit = fit_ranker(gen, ctx, fit_cutoff, exclude, rounds, new_item_boost, window_parts)
    return RankedRecommender(gen, ctx, fit, name, until=int(fs.ev_ts.max()) + 1)


def _step(config: RankConfig) -> str:
    return "epoch" if config.model == "dcn" else "round"


def windows_two_tower(
    ds: ValidatedDataset, fs: FeatureSet, config: RankConfig, two_tower: Recommender | None, run_config: RunConfig | None, cutoff: int, echo: Callable[[str], None]
) -> list[Recommender] | None:
    """The two-tower each training window before ``cutoff`` sees, in window order
    (recsys/rank/window_two_tower.py), trained with ``run_config`` (the served model's;
    default: the default config); None without a two-tower or with ``[rank] window_two_tower
    = false`` (the windows see the served one)."""
    if two_tower is None or not config.window_two_tower:
        return None
    from recsys.rank.window_two_tower import train_window_two_towers

    return train_window_two_towers(ds, fs, config, run_config or load_run_config(None, {"train": {"seed": config.seed}}), cutoff, echo)


def run_ranking(
    ds: ValidatedDataset,
    fs: FeatureSet,
    config: RankConfig,
    two_tower: Recommender | None = None,
    truth_style: GroundTruthStyle | None = None,
    compare: bool = True,
    ablations: tuple[str, ...] = (),
    echo: Callable[[str], None] = lambda _: None,
    run_config: RunConfig | None = None,
) -> RankingResult:
    """Fit the ranker on windows before the test cutoff and evaluate it (with ALS and the
    two-tower beside it when ``compare``, and the ``ablations``). ``two_tower`` is needed when a source or feature
    uses it (``recsys.train.TwoTowerRecommender``); ``run_config``: how it was trained (the
    windows see one trained so before them: :func:`windows_two_tower`). The main ranker is
    ``config.model``'s; an ablation that is the main ranker itself is not trained twice."""
    cutoff = fs.time_of("test")
    window_tt = windows_two_tower(ds, fs, config, two_tower, run_config, cutoff, echo)
    echo(f"training the {config.model} ranker on {config.windows} windows of {config.window_days:g} days before the test cutoff")
    recommender = _ranked(ds, fs, config, two_tower, (), MAIN_NAMES[config.model], window_two_tower=window_tt)
    fit = recommender.fit
    echo(f"  {fit.train_rows} training rows, {fit.val_rows} validation rows; best {_step(config)} {fit.best_iteration}, validation NDCG@10 {fit.val_ndcg_10:.4f}; new-item boost {fit.new_item_boost:.4f}")
    recall = cutoff_retrieval_recall(recommender.gen, cutoff)
    test = {recommender.name: evaluate(recommender, fs, EVAL, truth_style)}
    if compare:
        test["als"] = evaluate(ImplicitMF("als", seed=config.seed).fit(fs, cutoff), fs, EVAL, truth_style)
        if two_tower is not None:
            test["two-tower"] = evaluate(two_tower, fs, EVAL, truth_style)
    variants: dict[str, RankerFit] = {}
    for name in ablations:
        if name == recommender.name:
            continue
        if name == "ranker without the new-item boost":
            test[name] = evaluate(RankedRecommender(recommender.gen, recommender.ctx, replace(fit, new_item_boost=0.0), name, recommender.until), fs, EVAL, truth_style)
            continue
        variant_config, variant_two_tower, exclude = ablation(name, config, two_tower)
        variant_window_tt = window_tt if variant_config.window_two_tower else None
        variant = _ranked(ds, fs, variant_config, variant_two_tower, exclude, name, window_two_tower=variant_window_tt)
        echo(f"  {name}: best {_step(variant_config)} {variant.fit.best_iteration}, validation NDCG@10 {variant.fit.val_ndcg_10:.4f}")
        test[name] = evaluate(variant, fs, EVAL, truth_style)
        variants[name] = variant.fit
    return RankingResult(fit, recommender, recall, test, variants, window_tt is not None)


def deploy_ranking(
    ds: ValidatedDataset, fs: FeatureSet, config: RankConfig, rounds: int, two_tower: Recommender | None = None, echo: Callable[[str], None] = lambda _: None,
    new_item_boost: float = 0.0, run_config: RunConfig | None = None,
) -> RankedRecommender:
    """Deploy mode: the ranker fitted on the windows that end at the end of the data (query
    time: just after the last event), every window training, for exactly ``rounds`` trees
    with ``new_item_boost`` (an evaluated run's); nothing is held out, so nothing is scored.
    The windows see a two-tower trained before the first of them, as in the evaluated run."""
    end = int(fs.ev_ts.max()) + 1
    window_tt = windows_two_tower(ds, fs, config, two_tower, run_config, end, echo)
    echo(f"deploy mode: training the ranker on {config.windows} windows of {config.window_days:g} days ending at the end of the data, {rounds} rounds, no validation window")
    recommender = _ranked(ds, fs, config, two_tower, (), "multi-source + ranker", cutoff=end, rounds=rounds, window_two_tower=window_tt, new_item_boost=new_item_boost)
    echo(f"  {recommender.fit.train_rows} training rows")
    return recommender


def format_recall(recall: dict[str, dict[str, float]]) -> str:
    names = list(next(iter(recall.values())))
    lines = [f"{'retrieval recall':<22}" + "".join(f"{n:>12}" for n in recall)]
    lines += [f"  {n:<20}" + "".join(f"{recall[t][n]:>12.4f}" for t in recall) for n in names]
    return "\n".join(lines)


def format_test(test: dict[str, dict]) -> str:
    width = max(24, *(len(m) + 2 for m in test))
    lines = [f"{'model':<{width}}" + "".join(f"{(m if sl == 'all' else 'cold ' + m):>18}" for sl, m in REPORTED)]
    for model, res in test.items():
        lines.append(f"{model:<{width}}" + "".join(f"{res.get(sl, {}).get(m, float('nan')):>18.4f}" for sl, m in REPORTED))
    return "\n".join(lines)


def importance_figure(fit: RankerFit, top: int = 25):
    from recsys.reporting import pyplot

    plt = pyplot()
    pairs = sorted(fit.importance.items(), key=lambda kv: kv[1])[-top:]
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(pairs) + 1))
    ax.barh([p[0] for p in pairs], [p[1] for p in pairs])
    ax.set(title="ranker feature importance (gain)", xlabel="total gain")
    fig.tight_layout()
    return fig
