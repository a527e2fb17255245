"""From assignment and event tables to an A/B analysis (no I/O: DataFrames in, dicts out).

Input problems never crash the analysis and never silently change a number: duplicate
assignments with conflicting variants, assignment rows without a user, a variant or a
readable first exposure, and purchase events with a NaN, infinite or negative revenue or
an unreadable time are quarantined with a reason; events of users never assigned and
events before a user's first exposure are excluded; every count is reported.
Structural problems (a missing column, a single variant, an unknown variant, an empty
arm) raise :class:`ABInputError` with a clear message.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import polars as pl

from recsys.ab import stats as st

METRICS = ("conversion", "revenue_per_user", "orders_per_user")


class ABInputError(ValueError):
    pass


@dataclass(frozen=True)
class ABConfig:
    control: str = "control"
    weights: dict[str, float] | None = None  # expected traffic shares; default equal
    metrics: tuple[str, ...] = METRICS
    attribution_days: float = 7.0
    alpha: float = 0.05
    srm_threshold: float = 0.001
    covariate: str | None = None  # pre-period column of the assignments table (CUPED)
    segments: tuple[str, ...] = ()
    correction: Literal["holm", "bh"] = "holm"
    sequential: bool = False
    n_star: int = 10_000
    conversion_event: str = "purchase"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise ABInputError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
        if self.correction not in ("holm", "bh"):
            raise ABInputError("correction must be 'holm' or 'bh'")


@dataclass
class InputCounts:
    assignment_rows: int = 0
    users_assigned: int = 0
    conflicting_users_quarantined: int = 0
    assignment_rows_missing_user_id: int = 0
    assignment_rows_missing_variant: int = 0
    assignment_rows_bad_first_exposure: int = 0
    duplicate_rows_merged: int = 0
    event_rows: int = 0
    events_bad_timestamp: int = 0
    events_invalid_revenue: int = 0
    events_unassigned_users: int = 0
    events_before_exposure: int = 0
    events_after_attribution_window: int = 0
    events_other_types: int = 0
    events_used: int = 0


def _require(df: pl.DataFrame, name: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ABInputError(f"{name}: missing column(s) {missing} (has {df.columns})")


def _as_utc_time(df: pl.DataFrame, column: str, table: str) -> tuple[pl.DataFrame, pl.Series]:
    """``column`` as a UTC datetime (strings parsed; unparseable ones become null), and a
    mask of the rows whose value was given but could not be read."""
    dtype = df.schema[column]
    given = pl.col(column).is_not_null()
    if dtype == pl.String:
        parsed = df.with_columns(pl.col(column).str.to_datetime(time_zone="UTC", strict=False))
        bad = df.select(given).to_series() & parsed[column].is_null()
        return parsed, bad
    if dtype == pl.Null:
        return df.with_columns(pl.col(column).cast(pl.Datetime("us", "UTC"))), pl.Series([False] * df.height)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            df = df.with_columns(pl.col(column).dt.replace_time_zone("UTC"))
        return df, pl.Series([False] * df.height)
    if dtype == pl.Date:
        return df.with_columns(pl.col(column).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")), pl.Series([False] * df.height)
    raise ABInputError(f"{table}: column {column!r} must hold timestamps, found {dtype}")


def _with_reason(df: pl.DataFrame, reason: str) -> pl.DataFrame:
    return df.with_columns(pl.lit(reason).alias("reason"))


def clean_assignments(assignments: pl.DataFrame, cfg: ABConfig) -> tuple[pl.DataFrame, pl.DataFrame, InputCounts]:
    """One row per user. Rows without a user id, a variant or a readable first exposure and
    users assigned to two different variants are quarantined, each with a reason."""
    _require(assignments, "assignments", ("user_id", "variant", "first_exposure"))
    counts = InputCounts(assignment_rows=assignments.height)
    df = assignments.with_columns(pl.col("user_id").cast(pl.String), pl.col("variant").cast(pl.String))
    df, bad_time = _as_utc_time(df, "first_exposure", "assignments")
    reason = (
        pl.when(pl.col("user_id").is_null()).then(pl.lit("missing_user_id"))
        .when(pl.col("variant").is_null()).then(pl.lit("missing_variant"))
        .when(pl.lit(bad_time)).then(pl.lit("unparseable_first_exposure"))
        .when(pl.col("first_exposure").is_null()).then(pl.lit("missing_first_exposure"))
    )
    df = df.with_columns(reason.alias("reason"))
    invalid = df.filter(pl.col("reason").is_not_null())
    df = df.filter(pl.col("reason").is_null()).drop("reason")
    counts.assignment_rows_missing_user_id = int((invalid["reason"] == "missing_user_id").sum())
    counts.assignment_rows_missing_variant = int((invalid["reason"] == "missing_variant").sum())
    counts.assignment_rows_bad_first_exposure = invalid.height - counts.assignment_rows_missing_user_id - counts.assignment_rows_missing_variant
    conflicting = df.group_by("user_id").agg(pl.col("variant").n_unique().alias("n")).filter(pl.col("n") > 1)["user_id"]
    quarantine = pl.concat([invalid, _with_reason(df.filter(pl.col("user_id").is_in(conflicting.implode())), "conflicting_variants")], how="diagonal_relaxed")
    kept = df.filter(~pl.col("user_id").is_in(conflicting.implode()))
    merged = kept.sort("first_exposure").group_by("user_id", maintain_order=True).first()
    counts.conflicting_users_quarantined = conflicting.len()
    counts.duplicate_rows_merged = kept.height - merged.height
    counts.users_assigned = merged.height
    variants = sorted(merged["variant"].unique().to_list())
    if len(variants) < 2:
        raise ABInputError(f"assignments: need a control and at least one treatment, found variants {variants}")
    if cfg.control not in variants:
        raise ABInputError(f"assignments: control variant {cfg.control!r} not found (variants: {variants})")
    if cfg.weights is not None:
        unknown = sorted(set(variants) - set(cfg.weights))
        if unknown:
            raise ABInputError(f"assignments: unknown variant(s) {unknown}; the config expects {sorted(cfg.weights)}")
        empty = sorted(set(cfg.weights) - set(variants))
        if empty:
            raise ABInputError(f"assignments: no users in arm(s) {empty}")
    for col in (*cfg.segments, *([cfg.covariate] if cfg.covariate else [])):
        _require(merged, "assignments", (col,))
    return merged, quarantine, counts


def clean_events(events: pl.DataFrame, cfg: ABConfig, counts: InputCounts) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(usable events, quarantined events with a reason): events without a readable time,
    and purchases whose revenue is NaN, infinite, negative or not a number are set aside
    (a missing revenue counts as 0)."""
    _require(events, "events", ("user_id", "ts", "event"))
    counts.event_rows = events.height
    ev = events.with_columns(pl.col("user_id").cast(pl.String), pl.col("event").cast(pl.String))
    ev, bad_time = _as_utc_time(ev, "ts", "events")
    if "revenue" not in ev.columns:
        ev = ev.with_columns(pl.lit(0.0).alias("revenue"))
    given = ev["revenue"].is_not_null()
    ev = ev.with_columns(pl.col("revenue").cast(pl.Float64, strict=False))
    revenue = ev["revenue"]
    bad_revenue = (ev["event"] == cfg.conversion_event).fill_null(False) & (
        (given & revenue.is_null()) | revenue.is_nan().fill_null(False) | revenue.is_infinite().fill_null(False) | (revenue < 0).fill_null(False)
    )
    bad_ts = bad_time | ev["ts"].is_null()
    reason = pl.when(pl.lit(bad_ts)).then(pl.lit("missing_or_unparseable_ts")).when(pl.lit(bad_revenue)).then(pl.lit("invalid_revenue"))
    ev = ev.with_columns(reason.alias("reason"))
    quarantine = ev.filter(pl.col("reason").is_not_null())
    counts.events_bad_timestamp = int((quarantine["reason"] == "missing_or_unparseable_ts").sum())
    counts.events_invalid_revenue = quarantine.height - counts.events_bad_timestamp
    return ev.filter(pl.col("reason").is_null()).drop("reason"), quarantine


def per_user_metrics(assignments: pl.DataFrame, events: pl.DataFrame, cfg: ABConfig, counts: InputCounts, quarantine: list | None = None) -> pl.DataFrame:
    """conversion / revenue / orders of each assigned user within the attribution window;
    the events :func:`clean_events` sets aside are appended to ``quarantine`` if given."""
    ev, bad = clean_events(events, cfg, counts)
    if quarantine is not None:
        quarantine.append(bad)
    joined = ev.join(assignments.select("user_id", "first_exposure"), on="user_id", how="left")
    counts.events_unassigned_users = joined["first_exposure"].null_count()  # null user ids included
    joined = joined.filter(pl.col("first_exposure").is_not_null())
    before = pl.col("ts") < pl.col("first_exposure")
    after = pl.col("ts") > pl.col("first_exposure") + dt.timedelta(days=cfg.attribution_days)
    counts.events_before_exposure = joined.filter(before).height
    counts.events_after_attribution_window = joined.filter(~before & after).height
    in_window = joined.filter(~before & ~after)
    counts.events_other_types = in_window.filter(pl.col("event") != cfg.conversion_event).height
    buys = in_window.filter(pl.col("event") == cfg.conversion_event)
    counts.events_used = buys.height
    agg = buys.group_by("user_id").agg(pl.len().alias("orders_per_user"), pl.col("revenue").fill_null(0.0).sum().alias("revenue_per_user"), pl.col("ts").min().alias("first_conversion"))
    return (
        assignments.join(agg, on="user_id", how="left")
        .with_columns(
            pl.col("orders_per_user").fill_null(0).cast(pl.Float64),
            pl.col("revenue_per_user").fill_null(0.0),
        )
        .with_columns((pl.col("orders_per_user") > 0).cast(pl.Float64).alias("conversion"))
    )


def from_aggregated(per_user: pl.DataFrame, cfg: ABConfig) -> pl.DataFrame:
    """An already aggregated per-user table (user_id, variant, metric columns)."""
    _require(per_user, "aggregated table", ("user_id", "variant", *cfg.metrics))
    dup = per_user["user_id"].is_duplicated()
    if dup.any():
        raise ABInputError(f"aggregated table: duplicate user ids, e.g. {per_user.filter(dup)['user_id'].head(3).to_list()}")
    return per_user.with_columns(pl.col("variant").cast(pl.String), *[pl.col(m).cast(pl.Float64) for m in cfg.metrics])


def _compare(metric: str, a: np.ndarray, b: np.ndarray, alpha: float) -> st.Comparison:
    if metric == "conversion":
        return st.compare_proportions(int(a.sum()), len(a), int(b.sum()), len(b), alpha)
    return st.compare_means(float(a.mean()), float(a.var(ddof=1)), len(a), float(b.mean()), float(b.var(ddof=1)), len(b), alpha)


def _metric_block(metric: str, a: np.ndarray, b: np.ndarray, cfg: ABConfig, cov_a=None, cov_b=None, theta=None) -> dict:
    c = _compare(metric, a, b, cfg.alpha)
    block = {
        "n": {"control": len(a), "treatment": len(b)},
        "mean": {"control": c.mean_a, "treatment": c.mean_b},
        "abs_lift": c.abs_lift.to_json(),
        "rel_lift": c.rel_lift.to_json(),
        "chance_to_win": c.chance_to_win,
        "expected_loss": c.expected_loss,
        "power_at_observed": st.power_at(c.abs_lift.estimate, c.se_abs, cfg.alpha),
    }
    if metric == "conversion":
        block["conversions"] = {"control": int(a.sum()), "treatment": int(b.sum())}
        block["prob_b_beats_a_exact"] = st.beta_binomial_prob_b_beats_a(int(a.sum()), len(a), int(b.sum()), len(b))
        block["mde_at_80_power"] = st.minimum_detectable_effect(c.mean_a, len(a), len(b), cfg.alpha)
    if theta is not None:
        adjusted = st.cuped_adjust(np.concatenate([a, b]), np.concatenate([cov_a, cov_b]), theta)  # pooled covariate mean
        adj_a, adj_b = adjusted[: len(a)], adjusted[len(a) :]
        ca = st.compare_means(float(adj_a.mean()), float(adj_a.var(ddof=1)), len(a), float(adj_b.mean()), float(adj_b.var(ddof=1)), len(b), cfg.alpha)
        raw_var = a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)
        block["cuped"] = {"theta": theta, "abs_lift": ca.abs_lift.to_json(), "variance_reduction": float(1 - ca.se_abs**2 / raw_var) if raw_var > 0 else 0.0}
    if cfg.sequential:
        n = len(a) + len(b)
        radius = st.confidence_sequence_radius(n, c.se_abs * np.sqrt(n), cfg.alpha, cfg.n_star)
        est = c.abs_lift.estimate
        block["sequential"] = {"ci": [est - radius, est + radius], "significant": bool(abs(est) > radius), "n_star": cfg.n_star}
    return block


def cumulative_daily(per_user: pl.DataFrame, control: str, treatment: str, alpha: float) -> list[dict]:
    """Cumulative conversion lift by day of exposure (the novelty check)."""
    if "first_exposure" not in per_user.columns:
        return []
    df = per_user.with_columns(pl.col("first_exposure").dt.date().alias("day"))
    out = []
    for day in sorted(df["day"].unique().to_list()):
        upto = df.filter(pl.col("day") <= day)
        a = upto.filter(pl.col("variant") == control)["conversion"].to_numpy()
        b = upto.filter(pl.col("variant") == treatment)["conversion"].to_numpy()
        if len(a) and len(b):
            c = st.compare_proportions(int(a.sum()), len(a), int(b.sum()), len(b), alpha)
            out.append({"day": str(day), "n": len(a) + len(b), "abs_lift": c.abs_lift.estimate, "ci95": list(c.abs_lift.ci95)})
    return out


def analyse(per_user: pl.DataFrame, cfg: ABConfig, counts: InputCounts | None = None) -> dict:
    """The whole report as a JSON-ready dict (schema in the README)."""
    arms = sorted(per_user["variant"].unique().to_list())
    if cfg.control not in arms or len(arms) < 2:
        raise ABInputError(f"need the control {cfg.control!r} and a treatment; found {arms}")
    treatments = [a for a in arms if a != cfg.control]
    arm_counts = dict(per_user.group_by("variant").len().iter_rows())
    weights = cfg.weights or {a: 1.0 for a in arms}
    srm = st.sample_ratio_mismatch({a: arm_counts.get(a, 0) for a in weights}, weights, cfg.srm_threshold)
    values = {a: per_user.filter(pl.col("variant") == a) for a in arms}
    metrics: dict[str, dict] = {}
    theta = {}
    if cfg.covariate:
        x = per_user[cfg.covariate].cast(pl.Float64).fill_null(0.0).to_numpy()
        theta = {m: st.cuped_theta(per_user[m].to_numpy(), x) for m in cfg.metrics}
    for m in cfg.metrics:
        metrics[m] = {}
        for t in treatments:
            a = values[cfg.control][m].to_numpy()
            b = values[t][m].to_numpy()
            cov = {}
            if cfg.covariate:
                cov = {"cov_a": values[cfg.control][cfg.covariate].cast(pl.Float64).fill_null(0.0).to_numpy(), "cov_b": values[t][cfg.covariate].cast(pl.Float64).fill_null(0.0).to_numpy(), "theta": theta[m]}
            metrics[m][t] = _metric_block(m, a, b, cfg, **cov)
    keys = [(m, t) for m in cfg.metrics for t in treatments]
    raw = [metrics[m][t]["abs_lift"]["p_value"] for m, t in keys]
    adjust = st.holm if cfg.correction == "holm" else st.benjamini_hochberg
    for (m, t), p in zip(keys, adjust(raw), strict=True):
        metrics[m][t]["p_value_adjusted"] = p
    segments = {}
    for seg in cfg.segments:
        segments[seg] = {}
        for value in sorted(per_user[seg].drop_nulls().unique().to_list(), key=str):
            part = per_user.filter(pl.col(seg) == value)
            rows = {}
            for t in treatments:
                a = part.filter(pl.col("variant") == cfg.control)["conversion"].to_numpy()
                b = part.filter(pl.col("variant") == t)["conversion"].to_numpy()
                if len(a) and len(b):
                    c = st.compare_proportions(int(a.sum()), len(a), int(b.sum()), len(b), cfg.alpha)
                    rows[t] = {"n": {"control": len(a), "treatment": len(b)}, "abs_lift": c.abs_lift.to_json()}
            segments[seg][str(value)] = rows
    primary = cfg.metrics[0]
    return {
        "alpha": cfg.alpha,
        "config": {**asdict(cfg), "weights": weights},
        "arms": {"control": cfg.control, "treatments": treatments, "users": {a: int(arm_counts.get(a, 0)) for a in arms}},
        "srm": srm.to_json(),
        "metrics": metrics,
        "segments": segments,
        "cumulative": {t: cumulative_daily(per_user, cfg.control, t, cfg.alpha) for t in treatments} if "conversion" in cfg.metrics else {},
        "inputs": asdict(counts) if counts else {},
        "verdict": verdict(metrics[primary], srm, cfg.alpha, primary),
    }


def verdict(primary: dict, srm: st.SRM, alpha: float, metric: str) -> str:
    if srm.flagged:
        return f"Do not ship: sample ratio mismatch (chi-square p = {srm.p_value:.2g}); the assignment is broken, the lifts cannot be trusted."
    parts = []
    for arm, block in primary.items():
        p = block["p_value_adjusted"]
        lift = block["rel_lift"]["estimate"]
        if p < alpha and block["abs_lift"]["estimate"] > 0:
            parts.append(f"Ship {arm}: {metric} {lift:+.1%} relative (adjusted p = {p:.3g}).")
        elif p < alpha:
            parts.append(f"Do not ship {arm}: {metric} {lift:+.1%} relative (adjusted p = {p:.3g}).")
        else:
            parts.append(f"Inconclusive for {arm}: {metric} {lift:+.1%} relative, adjusted p = {p:.3g} (not significant at {alpha}).")
    return " ".join(parts)


__all__ = ["ABConfig", "ABInputError", "InputCounts", "analyse", "clean_assignments", "clean_events", "from_aggregated", "per_user_metrics"]
