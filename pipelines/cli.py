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


DEBUG_HINT = "re-run with `stylerec --debug ...` to see the traceback"


def one_line_error(exc: BaseException) -> click.ClickException:
    """An exception no job turned into a message, as one line (plus the --debug hint).
    Our own errors (a busy folder, a missing model, a broken dataset) say all there is to
    say, so they go without their type or hint."""
    from data.dataset import DatasetError
    from data.io import FolderLockError
    from pipelines.tracking import ModelNotFoundError

    text = " ".join(str(exc).split()) or repr(exc)
    if isinstance(exc, (FolderLockError, ModelNotFoundError, DatasetError)):
        return click.ClickException(text)
    return click.ClickException(f"{type(exc).__name__}: {text}\n{DEBUG_HINT}")


class StylerecGroup(click.Group):
    """The top-level group: uncaught exceptions become a one-line error unless --debug."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            raise one_line_error(exc) from exc


@click.group(cls=StylerecGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--workdir", type=click.Path(file_okay=False), default=None, help=f"work folder for datasets and outputs [env {ENV_VAR}; default ./workspace]")
@click.option("--debug", is_flag=True, help="show the full traceback of an unexpected error")
@click.version_option(package_name="stylerec")
@click.pass_context
def cli(ctx: click.Context, workdir: str | None, debug: bool) -> None:
    """stylerec: style-aware recommendations from product photos, text and behaviour."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
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
