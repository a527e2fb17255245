"""The `stylerec` command line: one entry point, a subcommand per job."""

from __future__ import annotations

import click

from pipelines.data_jobs import data_group
from pipelines.demo import demo
from pipelines.style_jobs import style_group
from pipelines.evaluate_job import evaluate_cmd
from pipelines.train_job import train_cmd
from pipelines.workspace import ENV_VAR, workdir as resolve_workdir


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--workdir", type=click.Path(file_okay=False), default=None, help=f"work folder for datasets and outputs [env {ENV_VAR}; default ./workspace]")
@click.version_option(package_name="stylerec")
@click.pass_context
def cli(ctx: click.Context, workdir: str | None) -> None:
    """stylerec: style-aware recommendations from product photos, text and behaviour."""
    ctx.ensure_object(dict)
    ctx.obj["workdir"] = resolve_workdir(workdir)


cli.add_command(data_group)
cli.add_command(style_group)
cli.add_command(train_cmd)
cli.add_command(evaluate_cmd)
cli.add_command(demo)


def main() -> None:
    cli(prog_name="stylerec")


if __name__ == "__main__":
    main()
