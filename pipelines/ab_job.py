"""`stylerec ab report` and `stylerec ab simulate`: analyse an experiment's tables (or a
simulated one, recsys/ab/) into report.json / report.html, logged to MLflow."""

from __future__ import annotations

from pathlib import Path

import click
import polars as pl

from data.dataset import DatasetError
from pipelines import tracking
from pipelines.common import load_ds
from pipelines.ranker_store import load_ranker
from recsys.ab.analysis import ABConfig, ABInputError
from recsys.ab.report import build_report, load_config, write_report
from recsys.ab.simulate import simulate_experiment, write_simulation


def read_table(path: Path) -> pl.DataFrame:
    if path.suffix not in (".parquet", ".csv"):
        raise click.ClickException(f"{path}: expected .parquet or .csv")
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        return pl.read_csv(path, try_parse_dates=False, schema_overrides={"user_id": pl.String}, infer_schema_length=None)
    except Exception as exc:  # polars raises several error types for broken files
        raise click.ClickException(f"{path}: cannot read {path.suffix[1:]}: {' '.join(str(exc).split())[:300]}") from exc


@click.group("ab")
def ab_group() -> None:
    """A/B evaluation reports on conversion."""


@ab_group.command("report")
@click.option("--assignments", type=click.Path(exists=True, dir_okay=False), default=None, help="user_id, variant, first_exposure[, segments, covariate]")
@click.option("--events", type=click.Path(exists=True, dir_okay=False), default=None, help="user_id, ts, event[, revenue]")
@click.option("--aggregated", type=click.Path(exists=True, dir_okay=False), default=None, help="instead: one row per user with variant and metric columns")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None, help="TOML: control, weights, metrics, alpha, …")
@click.option("--sequential", is_flag=True, help="add asymptotic confidence sequences (safe to peek daily)")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--no-mlflow", is_flag=True, help="do not log the report to MLflow")
def report_cmd(assignments, events, aggregated, config_path, sequential, out, no_mlflow):
    """Analyse an experiment and write report.json and a self-contained report.html."""
    if aggregated is None and (assignments is None or events is None):
        raise click.UsageError("give --assignments and --events, or --aggregated")
    try:
        cfg = load_config(Path(config_path) if config_path else None)
        if sequential:
            cfg = ABConfig(**{**cfg.__dict__, "sequential": True})
        report, quarantine = build_report(
            read_table(Path(assignments)) if assignments else None,
            read_table(Path(events)) if events else None,
            read_table(Path(aggregated)) if aggregated else None,
            cfg,
        )
    except ABInputError as exc:
        raise click.ClickException(str(exc)) from exc
    json_path, html_path = write_report(report, quarantine, Path(out))
    for key, value in report.get("inputs", {}).items():
        if value and key not in ("assignment_rows", "users_assigned", "event_rows", "events_used"):
            click.echo(f"note: {key.replace('_', ' ')}: {value:,}")
    if report["notes"]:
        click.echo(f"note: {len(report['notes'])} undefined number(s) written as null in report.json (see its notes), e.g. {report['notes'][0]}")
    if report["srm"]["flagged"]:
        click.secho(f"SAMPLE RATIO MISMATCH: p = {report['srm']['p_value']:.2g}", fg="red", bold=True)
    click.echo(report["verdict"])
    click.echo(f"report: {json_path}\nHTML:   {html_path}")
    if not no_mlflow:
        click.echo(f"MLflow run {tracking.log_ab_report(report, json_path, html_path)}")


def simulate(ds, control: str, treatment: str, n_users: int, days: float, seed: int, out: Path, k: int = 10) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Simulate the experiment and write its tables to ``out``; (assignments, events, summary)."""
    assignments, events, summary = simulate_experiment(
        ds, control, treatment, n_users, days, seed, lambda spec: tracking.load_served_model(ds, spec), k,
        load_ranker=lambda uri: load_ranker(ds, uri or tracking.RANKER_CHAMPION_URI),
    )
    write_simulation(out, assignments, events, summary)
    return assignments, events, summary


def report_simulation(assignments: pl.DataFrame, events: pl.DataFrame, out: Path, days: float) -> tuple[dict, Path, Path, str]:
    """`ab report` on a simulated experiment (the whole experiment counts), written to
    ``out``/report; (report, report.json, report.html, MLflow run)."""
    cfg = ABConfig(covariate="pre_purchases", attribution_days=days)
    rep, quarantine = build_report(assignments, events, None, cfg)
    json_path, html_path = write_report(rep, quarantine, out / "report")
    return rep, json_path, html_path, tracking.log_ab_report(rep, json_path, html_path)


def _slug(spec: str) -> str:
    return spec.replace(":/", "-").replace("/", "-").replace("@", "-").replace(":", "-")


POLICY_HELP = (
    "popularity | als | random | a two-tower model URI or bundle folder | ranked (the registered ranker "
    f"{tracking.RANKER_CHAMPION_URI} re-ordering its candidate union) | ranked:RANKER_URI (e.g. ranked:models:/{tracking.RANKER_NAME}/3)"
)


@ab_group.command("simulate")
@click.argument("dataset")
@click.option("--control", default="als", show_default=True, help=POLICY_HELP)
@click.option("--treatment", default=tracking.CHAMPION_URI, show_default=True, help="as --control")
@click.option("--users", "n_users", type=int, default=4000, show_default=True)
@click.option("--days", type=float, default=14, show_default=True)
@click.option("--k", type=int, default=10, show_default=True, help="items in the storefront slot")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="[default: <workdir>/ab/<dataset>-<control>-vs-<treatment>]")
@click.option("--report/--no-report", default=True, show_default=True, help="run `ab report` on the result")
@click.pass_context
def simulate_cmd(ctx, dataset, control, treatment, n_users, days, k, seed, out, report):
    """Simulate an A/B test of two policies on StyleMart's ground-truth shoppers."""
    ds = load_ds(ctx, dataset)
    out = Path(out) if out else ctx.obj["workdir"] / "ab" / f"{ds.manifest.name}-{_slug(control)}-vs-{_slug(treatment)}"
    try:
        assignments, events, summary = simulate(ds, control, treatment, n_users, days, seed, out, k)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    e = summary["expected_purchases_per_user"]
    click.echo(f"simulated {sum(summary['users'].values()):,} users over {days:g} days: expected purchases per user control ({control}) {e['control']:.4f}, treatment ({treatment}) {e['treatment']:.4f} ({e['treatment'] / max(e['control'], 1e-12) - 1:+.1%}); drawn purchases {summary['purchases']}")
    click.echo(f"assignments and events in {out}")
    if report:
        rep, json_path, html_path, run = report_simulation(assignments, events, out, days)
        click.echo(rep["verdict"])
        click.echo(f"report: {json_path}\nHTML:   {html_path}\nMLflow run {run}")
