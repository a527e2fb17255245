"""A simulated experiment on StyleMart's ground-truth shoppers, read by the A/B report."""

import json

import numpy as np
import polars as pl
from click.testing import CliRunner

from data.stylemart.storefront import load_world, purchase_probability
from pipelines.cli import cli


def test_ground_truth_shoppers_prefer_their_styles(tiny_embedded):
    world = load_world(tiny_embedded)
    users = np.arange(50)
    liked = np.argmax(world.users.affinity[users], axis=1)
    disliked = np.argmin(world.users.affinity[users], axis=1)
    t = np.full(50, int(world.catalogue.created_s.max()))
    pick = lambda styles: np.array([[np.flatnonzero(world.catalogue.style == s)[0]] for s in styles])  # noqa: E731
    assert (purchase_probability(world, users, pick(liked), t) > purchase_probability(world, users, pick(disliked), t)).mean() > 0.9


def test_simulated_experiment_closes_the_loop(tiny_embedded, tmp_path, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    root = tmp_path / "ds"
    shutil.copytree(tiny_embedded, root)
    out = tmp_path / "sim"
    result = CliRunner().invoke(cli, ["ab", "simulate", str(root), "--control", "random", "--treatment", "popularity", "--users", "300", "--days", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "simulation.json").read_text())
    # popular items are well made (high quality): a noise-free expected lift over random slots
    e = summary["expected_purchases_per_user"]
    assert e["treatment"] > e["control"] > 0
    assignments = pl.read_parquet(out / "assignments.parquet")
    events = pl.read_parquet(out / "events.parquet")
    assert assignments.height == 300 and set(assignments["variant"]) == {"control", "treatment"}
    assert events.join(assignments, on="user_id", how="anti").height == 0
    assert (events.join(assignments, on="user_id")["ts"] >= events.join(assignments, on="user_id")["first_exposure"]).all()
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["inputs"]["events_used"] == events.height and report["inputs"]["events_after_attribution_window"] == 0
    assert report["metrics"]["conversion"]["treatment"]["mean"]["treatment"] == assignments.join(events.select("user_id").unique(), on="user_id").filter(pl.col("variant") == "treatment").height / summary["users"]["treatment"]
    assert "report.html" in result.output


def test_aa_simulation_on_the_storefront_rejects_at_about_alpha(tiny_embedded):
    """Same policy in both arms, many seeds: the conversion test rejects in about 5 % of runs."""
    from data.stylemart.storefront import simulate_visits
    from recsys.ab.stats import compare_proportions

    world = load_world(tiny_embedded)
    n_users = len(world.user_ids)
    start = int(world.catalogue.created_s.max())
    shown = np.argsort(-world.catalogue.quality)[:10][None, :].repeat(n_users, axis=0)  # one policy for everyone
    rejections, runs = 0, 400
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        arm = rng.random(n_users) < 0.5
        exposure = start + (rng.random(n_users) * 3 * 86_400).astype(np.int64)
        events, _ = simulate_visits(world, np.arange(n_users), exposure, start + 7 * 86_400, shown, rng)
        converted = np.isin(world.user_ids, events["user_id"].unique().to_numpy())
        c = compare_proportions(int(converted[~arm].sum()), int((~arm).sum()), int(converted[arm].sum()), int(arm.sum()))
        rejections += c.abs_lift.p_value < 0.05
    assert 0.025 <= rejections / runs <= 0.08
