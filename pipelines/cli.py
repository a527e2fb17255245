"""The `stylerec` command line: one entry point, a subcommand per job."""

from __future__ import annotations

from pipelines import env

env.setup()  # before numpy loads OpenBLAS, and before any third-party warning

import click  # noqa: E402

from pipelines.ab_job import ab_group  # noqa: E402
from pipelines.candidates_job import candidates_cmd, index_group  # noqa: E402
from pipelines.data_jobs import data_group  # noqa: E402
from pipelines.demo import demo  # noqa: E402
from pipelines.evaluate_job import evaluate_cmd  # noqa: E402
from pipelines.rank_job import rank_group  # noqa: E402
from pipelines.style_jobs import style_group  # noqa: E402
from pipelines.train_job import train_cmd  # noqa: E402
from pipelines.workspace import ENV_VAR  # noqa: E402
from pipelines.workspace import workdir as resolve_workdir  # noqa: E402


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
cli.add_command(index_group)
cli.add_command(candidates_cmd)
cli.add_command(ab_group)
cli.add_command(rank_group)
cli.add_command(demo)


def main() -> None:
    cli(prog_name="stylerec")


if __name__ == "__main__":
    main()
