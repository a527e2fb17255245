"""`stylerec ab report`: read assignments and events, analyse, write report.json / report.html."""

from __future__ import annotations

import tomllib
from pathlib import Path

import click
import polars as pl

from data.io import atomic_path, write_json, write_parquet
from pipelines import tracking
from pipelines.ab_html import render
from recsys.ab_analysis import ABConfig, ABInputError, analyse, clean_assignments, from_aggregated, per_user_metrics

AB_EXPERIMENT = "ab-reports"


def read_table(path: Path) -> pl.DataFrame:
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    if path.suffix == ".csv":
        return pl.read_csv(path, try_parse_dates=False, schema_overrides={"user_id": pl.String})
    raise click.ClickException(f"{path}: expected .parquet or .csv")


def load_config(path: Path | None) -> ABConfig:
    if path is None:
        return ABConfig()
    data = tomllib.loads(path.read_text())
    known = set(ABConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ABInputError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return ABConfig(**data)


def build_report(assignments: pl.DataFrame | None, events: pl.DataFrame | None, aggregated: pl.DataFrame | None, cfg: ABConfig) -> tuple[dict, pl.DataFrame]:
    if aggregated is not None:
        return analyse(from_aggregated(aggregated, cfg), cfg), pl.DataFrame()
    assigned, quarantine, counts = clean_assignments(assignments, cfg)
    per_user = per_user_metrics(assigned, events, cfg, counts)
    return analyse(per_user, cfg, counts), quarantine


def write_report(report: dict, quarantine: pl.DataFrame, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_json(report, out / "report.json")
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(render(report))
    if quarantine.height:
        write_parquet(quarantine, out / "quarantine_assignments.parquet")
    return json_path, out / "report.html"


def log_report(report: dict, json_path: Path, html_path: Path) -> str:
    import mlflow

    uri = tracking.setup(AB_EXPERIMENT)
    with mlflow.start_run(run_name="ab-report") as run:
        mlflow.log_params({"control": report["arms"]["control"], "treatments": ",".join(report["arms"]["treatments"]), "alpha": report["alpha"]})
        mlflow.log_metrics({"srm_p_value": report["srm"]["p_value"], "srm_flagged": float(report["srm"]["flagged"])})
        for metric, arms in report["metrics"].items():
            for arm, b in arms.items():
                mlflow.log_metrics({f"{metric}.{arm}.rel_lift": b["rel_lift"]["estimate"], f"{metric}.{arm}.p_value_adjusted": b["p_value_adjusted"], f"{metric}.{arm}.chance_to_win": b["chance_to_win"]})
        mlflow.log_artifact(str(json_path))
        mlflow.log_artifact(str(html_path))
        mlflow.set_tag("verdict", report["verdict"][:250])
    return f"{run.info.run_id} ({uri})"


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
    if report["srm"]["flagged"]:
        click.secho(f"SAMPLE RATIO MISMATCH: p = {report['srm']['p_value']:.2g}", fg="red", bold=True)
    click.echo(report["verdict"])
    click.echo(f"report: {json_path}\nHTML:   {html_path}")
    if not no_mlflow:
        click.echo(f"MLflow run {log_report(report, json_path, html_path)}")


def _register_simulate() -> None:
    from pipelines.ab_simulate import simulate_cmd

    ab_group.add_command(simulate_cmd)


_register_simulate()
