"""A/B test statistics: pure functions of counts and moments (in the spirit of gbstats).

Conventions: arm A is control, B the treatment. Per-user variance of a conversion rate is
p(1 - p) (no n/(n-1)); standard errors are unpooled. Relative lift (B - A) / A uses the
delta method. Everything here takes summary statistics, so the report can be rebuilt from
aggregated tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import integrate, stats


@dataclass(frozen=True)
class Lift:
    estimate: float
    ci95: tuple[float, float]
    p_value: float

    def to_json(self) -> dict:
        return {"estimate": self.estimate, "ci95": list(self.ci95), "p_value": self.p_value}


@dataclass(frozen=True)
class Comparison:
    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    abs_lift: Lift
    rel_lift: Lift
    chance_to_win: float
    expected_loss: float
    se_abs: float


def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2))


def _two_sided_p(z: float) -> float:
    return float(2 * stats.norm.sf(abs(z)))


def _rel_lift(mean_a, mean_b, var_a, var_b, n_a, n_b, alpha) -> Lift:
    """(B - A) / A with the delta-method variance Var_b/(A² n_b) + Var_a B²/(A⁴ n_a)."""
    if mean_a == 0:
        return Lift(float("nan"), (float("nan"), float("nan")), float("nan"))
    rel = (mean_b - mean_a) / mean_a
    se = math.sqrt(var_b / (mean_a**2 * n_b) + var_a * mean_b**2 / (mean_a**4 * n_a))
    z = _z(alpha)
    return Lift(rel, (rel - z * se, rel + z * se), _two_sided_p(rel / se) if se > 0 else float("nan"))


def bayes_normal(diff: float, se: float) -> tuple[float, float]:
    """(chance to win, expected loss of shipping B) for a lift ~ N(diff, se²) (flat prior).

    Expected loss = E[max(0, -lift)] = se·φ(diff/se) - diff·Φ(-diff/se).
    """
    if se <= 0:
        return (float(diff > 0), max(0.0, -diff))
    r = diff / se
    return float(stats.norm.cdf(r)), float(se * stats.norm.pdf(r) - diff * stats.norm.cdf(-r))


def compare_proportions(x_a: int, n_a: int, x_b: int, n_b: int, alpha: float = 0.05) -> Comparison:
    """Conversion: absolute lift (unpooled normal CI, z test), relative lift (delta method)."""
    if min(n_a, n_b) <= 0:
        raise ValueError("both arms need at least one user")
    p_a, p_b = x_a / n_a, x_b / n_b
    var_a, var_b = p_a * (1 - p_a), p_b * (1 - p_b)
    se = math.sqrt(var_a / n_a + var_b / n_b)
    diff = p_b - p_a
    z = _z(alpha)
    abs_lift = Lift(diff, (diff - z * se, diff + z * se), _two_sided_p(diff / se) if se > 0 else float("nan"))
    ctw, loss = bayes_normal(diff, se)
    return Comparison(p_a, p_b, n_a, n_b, abs_lift, _rel_lift(p_a, p_b, var_a, var_b, n_a, n_b, alpha), ctw, loss, se)


def compare_means(mean_a: float, var_a: float, n_a: int, mean_b: float, var_b: float, n_b: int, alpha: float = 0.05) -> Comparison:
    """Mean metrics (revenue per user): Welch's t for the absolute lift, delta method for the relative one.

    ``var_*`` are sample variances (ddof=1), as Welch's test uses them.
    """
    if min(n_a, n_b) < 2:
        raise ValueError("Welch's t needs at least two users per arm")
    se2 = var_a / n_a + var_b / n_b
    se = math.sqrt(se2)
    diff = mean_b - mean_a
    if se > 0:
        df = se2**2 / ((var_a / n_a) ** 2 / (n_a - 1) + (var_b / n_b) ** 2 / (n_b - 1))
        t = float(stats.t.ppf(1 - alpha / 2, df))
        p = float(2 * stats.t.sf(abs(diff / se), df))
    else:
        t, p = _z(alpha), float("nan")
    abs_lift = Lift(diff, (diff - t * se, diff + t * se), p)
    ctw, loss = bayes_normal(diff, se)
    return Comparison(mean_a, mean_b, n_a, n_b, abs_lift, _rel_lift(mean_a, mean_b, var_a, var_b, n_a, n_b, alpha), ctw, loss, se)


def beta_binomial_prob_b_beats_a(x_a: int, n_a: int, x_b: int, n_b: int, prior: tuple[float, float] = (1.0, 1.0)) -> float:
    """Exact P(p_B > p_A) under independent Beta(prior) posteriors: ∫ f_B(p) F_A(p) dp."""
    a_a, b_a = prior[0] + x_a, prior[1] + n_a - x_a
    a_b, b_b = prior[0] + x_b, prior[1] + n_b - x_b
    fb = stats.beta(a_b, b_b)
    fa = stats.beta(a_a, b_a)
    lo, hi = min(fa.ppf(1e-10), fb.ppf(1e-10)), max(fa.ppf(1 - 1e-10), fb.ppf(1 - 1e-10))
    value, _ = integrate.quad(lambda p: fb.pdf(p) * fa.cdf(p), lo, hi, points=[fa.mean(), fb.mean()], limit=200, epsabs=1e-10)
    return float(min(1.0, max(0.0, value)))


@dataclass(frozen=True)
class SRM:
    chi2: float
    p_value: float
    flagged: bool
    observed: dict[str, int]
    expected: dict[str, float]

    def to_json(self) -> dict:
        return {"chi2": self.chi2, "p_value": self.p_value, "flagged": self.flagged, "observed": self.observed, "expected": self.expected}


def sample_ratio_mismatch(counts: dict[str, int], weights: dict[str, float], threshold: float = 0.001) -> SRM:
    """Pearson chi-square goodness of fit of arm sizes against expected weights (df = arms - 1)."""
    arms = list(counts)
    observed = np.array([counts[a] for a in arms], float)
    w = np.array([weights[a] for a in arms], float)
    expected = observed.sum() * w / w.sum()
    chi2, p = stats.chisquare(observed, expected)
    return SRM(float(chi2), float(p), bool(p < threshold), {a: int(c) for a, c in counts.items()}, dict(zip(arms, expected.tolist(), strict=True)))


def cuped_theta(y: np.ndarray, x: np.ndarray) -> float:
    """θ = cov(Y, X) / var(X), pooled over arms (y, x of all users)."""
    vx = float(np.var(x))
    return float(np.cov(y, x, bias=True)[0, 1] / vx) if vx > 0 else 0.0


def cuped_adjust(y: np.ndarray, x: np.ndarray, theta: float) -> np.ndarray:
    return y - theta * (x - x.mean())


def holm(p_values: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error)."""
    p = np.asarray(p_values, float)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate)."""
    p = np.asarray(p_values, float)
    m = len(p)
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def minimum_detectable_effect(p: float, n_a: int, n_b: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest absolute lift in a conversion rate p detectable with ``power`` (two-sided)."""
    return float((_z(alpha) + stats.norm.ppf(power)) * math.sqrt(p * (1 - p) * (1 / n_a + 1 / n_b)))


def power_at(effect: float, se: float, alpha: float = 0.05) -> float:
    """Power of the two-sided z test to detect ``effect`` given its standard error."""
    if se <= 0:
        return float("nan")
    z = _z(alpha)
    r = abs(effect) / se
    return float(stats.norm.sf(z - r) + stats.norm.cdf(-z - r))


def confidence_sequence_radius(n: int, sd: float, alpha: float = 0.05, n_star: int = 10_000) -> float:
    """Half-width of an asymptotic confidence sequence for a mean after ``n`` observations.

    Waudby-Smith et al. (2021), normal-mixture boundary: valid at every n at once, so a
    report may be checked daily. ``n_star`` is the sample size where it is tightest:
    ρ² = (-2 log α + log(-2 log α + 1)) / N*.
    """
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / n_star
    return float(sd * math.sqrt((2 * (n * rho2 + 1)) / (n**2 * rho2) * math.log(math.sqrt(n * rho2 + 1) / alpha)))
