"""A/B statistics against independent implementations (scipy, statsmodels) and hand cases."""

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from scipy.special import betaln
from statsmodels.stats import proportion as smp

from recsys.ab import stats as ab


def test_proportions_match_statsmodels_unpooled_wald():
    x_a, n_a, x_b, n_b = 480, 10_000, 560, 10_200
    c = ab.compare_proportions(x_a, n_a, x_b, n_b)
    res = smp.test_proportions_2indep(x_b, n_b, x_a, n_a, method="wald", compare="diff", correction=False)
    lo, hi = smp.confint_proportions_2indep(x_b, n_b, x_a, n_a, method="wald", compare="diff", alpha=0.05, correction=False)
    assert c.abs_lift.estimate == pytest.approx(x_b / n_b - x_a / n_a)
    assert c.abs_lift.p_value == pytest.approx(res.pvalue, rel=1e-6)
    assert c.abs_lift.ci95 == pytest.approx((lo, hi), rel=1e-6)


def test_relative_lift_delta_method_by_hand():
    c = ab.compare_proportions(100, 1000, 130, 1000)
    p_a, p_b = 0.1, 0.13
    var = p_b * (1 - p_b) / (p_a**2 * 1000) + p_a * (1 - p_a) * p_b**2 / (p_a**4 * 1000)
    assert c.rel_lift.estimate == pytest.approx(0.3)
    assert c.rel_lift.ci95[1] - c.rel_lift.estimate == pytest.approx(1.959964 * math.sqrt(var), rel=1e-5)
    assert c.rel_lift.p_value == pytest.approx(2 * stats.norm.sf(0.3 / math.sqrt(var)), rel=1e-6)


def test_means_match_scipy_welch():
    rng = np.random.default_rng(0)
    a = rng.exponential(10, 800)
    b = rng.exponential(11, 900)
    c = ab.compare_means(a.mean(), a.var(ddof=1), len(a), b.mean(), b.var(ddof=1), len(b))
    ref = stats.ttest_ind(b, a, equal_var=False)
    assert c.abs_lift.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    ci = ref.confidence_interval(0.95)
    assert c.abs_lift.ci95 == pytest.approx((ci.low, ci.high), rel=1e-6)


def test_bayesian_chance_to_win_and_loss():
    ctw, loss = ab.bayes_normal(0.01, 0.005)
    assert ctw == pytest.approx(stats.norm.cdf(2.0))
    draws = np.random.default_rng(1).normal(0.01, 0.005, 2_000_000)
    assert loss == pytest.approx(np.maximum(0, -draws).mean(), abs=2e-5)
    exact = ab.beta_binomial_prob_b_beats_a(40, 1000, 55, 1000)
    rng = np.random.default_rng(2)
    mc = (rng.beta(56, 946, 1_000_000) > rng.beta(41, 961, 1_000_000)).mean()
    assert exact == pytest.approx(mc, abs=3e-3)


def test_beta_binomial_matches_evan_millers_closed_form():
    """P(p_B > p_A) = sum_{i<a_B} B(a_A+i, b_A+b_B) / ((b_B+i) B(1+i, b_B) B(a_A, b_A))."""
    a_a, b_a, a_b, b_b = 1 + 3, 1 + 7, 1 + 6, 1 + 4  # 3/10 vs 6/10 with uniform priors
    closed = sum(math.exp(betaln(a_a + i, b_a + b_b) - math.log(b_b + i) - betaln(1 + i, b_b) - betaln(a_a, b_a)) for i in range(a_b))
    assert ab.beta_binomial_prob_b_beats_a(3, 10, 6, 10) == pytest.approx(closed, abs=1e-6)


def test_srm_flags_a_planted_mismatch():
    srm = ab.sample_ratio_mismatch({"control": 10_000, "treatment": 10_500}, {"control": 1, "treatment": 1})
    assert srm.chi2 == pytest.approx(2 * 250**2 / 10_250)
    assert srm.p_value == pytest.approx(stats.chi2.sf(srm.chi2, 1)) and srm.flagged
    fine = ab.sample_ratio_mismatch({"a": 10_000, "b": 10_050, "c": 9_980}, {"a": 1, "b": 1, "c": 1})
    assert not fine.flagged and fine.p_value == pytest.approx(stats.chisquare([10_000, 10_050, 9_980]).pvalue)


def test_multiple_comparison_corrections_match_statsmodels():
    p = [0.001, 0.04, 0.03, 0.2, 0.012]
    assert ab.holm(p) == pytest.approx(multipletests(p, method="holm")[1].tolist())
    assert ab.benjamini_hochberg(p) == pytest.approx(multipletests(p, method="fdr_bh")[1].tolist())


def test_cuped_reduces_variance():
    rng = np.random.default_rng(3)
    x = rng.normal(10, 3, 5000)
    y = 2 + 0.8 * x + rng.normal(0, 1, 5000)
    theta = ab.cuped_theta(y, x)
    assert theta == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-6)
    adjusted = ab.cuped_adjust(y, x, theta)
    assert adjusted.mean() == pytest.approx(y.mean())
    assert 1 - adjusted.var() / y.var() > 0.8


def test_power_and_mde_are_consistent():
    mde = ab.minimum_detectable_effect(0.05, 10_000, 10_000)
    se = math.sqrt(2 * 0.05 * 0.95 / 10_000)
    assert ab.power_at(mde, se) == pytest.approx(0.8, abs=1e-3)


def test_confidence_sequence_is_wider_and_time_uniform():
    sd, n = 1.0, 10_000
    assert ab.confidence_sequence_radius(n, sd) > 1.96 * sd / math.sqrt(n)
    assert ab.confidence_sequence_radius(4 * n, sd) < ab.confidence_sequence_radius(n, sd)
    # peeking at 50 points of the same stream: the sequence misses the true mean in < alpha of streams
    rng = np.random.default_rng(4)
    checkpoints = np.linspace(200, 20_000, 50).astype(int)
    radii = np.array([ab.confidence_sequence_radius(int(c), 1.0, 0.05, 5_000) for c in checkpoints])
    misses = fixed_misses = 0
    for _ in range(300):
        path = np.cumsum(rng.normal(0, 1, checkpoints[-1]))[checkpoints - 1] / checkpoints
        misses += bool((np.abs(path) > radii).any())
        fixed_misses += bool((np.abs(path) > 1.96 / np.sqrt(checkpoints)).any())
    assert misses / 300 <= 0.05 < fixed_misses / 300


def test_aa_simulation_rejects_at_about_alpha():
    rng = np.random.default_rng(5)
    rejections = 0
    sims = 600
    for _ in range(sims):
        x_a, x_b = rng.binomial(5000, 0.06), rng.binomial(5000, 0.06)
        rejections += ab.compare_proportions(x_a, 5000, x_b, 5000).abs_lift.p_value < 0.05
    assert 0.03 <= rejections / sims <= 0.075


def test_bad_arms_are_refused():
    with pytest.raises(ValueError, match="at least one user"):
        ab.compare_proportions(0, 0, 1, 10)
    with pytest.raises(ValueError, match="two users"):
        ab.compare_means(1.0, 1.0, 1, 1.0, 1.0, 5)
