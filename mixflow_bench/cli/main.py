"""The ``mixflow-bench`` entry point: one click group, one module per command."""

from __future__ import annotations

import importlib

import click

from mixflow_bench import __version__

# command name -> module under mixflow_bench.cli that defines ``command``
COMMANDS: dict[str, str] = {
    "recipes": "recipes_cmd",
    "train": "train_cmd",
    "sample": "sample_cmd",
    "eval": "eval_cmd",
    "pack": "pack_cmd",
    "table": "table_cmd",
    "reproduce": "reproduce_cmd",
    "analyze": "analyze_cmd",
    "download": "download_cmd",
    "data": "data_cmd",
    "jobs": "jobs_cmd",
    "models": "models_cmd",
}


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (keeps ``--help`` fast)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        from mixflow_bench.cli.examples import attach

        module = importlib.import_module(f"mixflow_bench.cli.{COMMANDS[name]}")
        attach(module.command, name)
        return module.command

    def invoke(self, ctx: click.Context):
        """Ordinary mistakes (:class:`~mixflow_bench.errors.UserError`) and artifacts that cannot be fetched end
        every command with one clear line and exit status 1, no traceback (see mixflow_bench/errors.py)."""
        from mixflow_bench.errors import UserError, one_line
        from mixflow_bench.hub.fetch import OfflineError
        from mixflow_bench.hub.http import DownloadError

        try:
            return super().invoke(ctx)
        except (UserError, DownloadError, OfflineError) as exc:
            raise click.ClickException(one_line(str(exc))) from exc


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mixflow-bench")
@click.option(
    "--offline",
    is_flag=True,
    help="Use only cached artifacts, never the network (also: MIXFLOW_BENCH_OFFLINE=1); sets HF_HUB_OFFLINE=1.",
)
def cli(offline: bool) -> None:
    """Benchmark and reproduce flow-matching image generators, with MixFlow post-training."""
    from mixflow_bench.cpu_memory import keep_freed_memory
    from mixflow_bench.hub.offline import offline_mode, set_offline

    keep_freed_memory()

    if offline or offline_mode():
        set_offline()


def main() -> None:
    cli()
