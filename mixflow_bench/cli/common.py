"""Helpers shared by the CLI commands: the rich console, output-folder checks, the 'not available yet' refusal."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from mixflow_bench.errors import UserError

console = Console()
err_console = Console(stderr=True)


JSON_STDOUT = "-"


def json_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--json PATH``, the one spelling of JSON output across commands; ``--json -`` or a bare ``--json`` (the older
    flag form) prints the JSON to stdout instead of the table."""
    return click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
                        is_flag=False, flag_value=JSON_STDOUT, default=None, metavar="[PATH]",
                        help=help_text)  # fmt: skip


def write_json_output(path: Path | None, data: Any) -> bool:
    """Write ``data`` to ``--json PATH`` atomically, or print it for ``-``; True when it went to stdout."""
    if path is None:
        return False
    if str(path) == JSON_STDOUT:
        click.echo(json.dumps(data, indent=2, default=str))
        return True
    from mixflow_bench.results.records import write_json_atomic

    write_json_atomic(path, data)
    console.print(f"wrote [bold]{path}[/bold]")
    return False


def writable_dir(path: Path, option: str = "--run-dir") -> Path:
    """``path`` created (with its parents) and writable, or a :class:`UserError` naming ``option`` and why."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot create it ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: not writable")
    return path


def warn(message: str) -> None:
    """A warning on stderr, one line: something runs, but likely not as the user expects."""
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def weight_warnings(model_name: str, checkpoint: str | None, random_init: bool, recipe: str | None = None) -> list[str]:
    """What is random in a sampling run: untrained weights (no checkpoint and none released), ``--random-init``
    (the image decoder too, for latent models)."""
    from mixflow_bench.sampling.models import get_spec

    spec = get_spec(model_name)
    if random_init:
        text = f"--random-init: {model_name}'s weights are random"
        if spec.decoder is not None:
            text += f", and so is its image decoder ({spec.decoder}): the images are noise"
        return [text + " (a check of shapes and plumbing, not of the model)"]
    if checkpoint is None and spec.checkpoint is None:
        fix = f"train it first (mixflow-bench train {recipe}) and pass model.checkpoint=PATH" if recipe else \
            "pass --checkpoint PATH"  # fmt: skip
        return [f"{model_name} has no released weights and no checkpoint is given: sampling an UNTRAINED model "
                f"(random weights); {fix}"]  # fmt: skip
    return []


def fast_path_warning(fast: bool, launcher: str) -> str | None:
    """``--fast`` where no CUDA device is visible: torch.compile then takes minutes and bf16 is slow on a CPU."""
    if not fast or launcher != "local":
        return None
    import torch

    if torch.cuda.is_available():
        return None
    return ("--fast on a CPU: torch.compile takes minutes before the first image (296 s measured on a CPU) and "
            "bf16 matmuls are slow on most CPUs; the fast path is meant for CUDA GPUs")  # fmt: skip


def not_available(what: str) -> None:
    """Refuse a capability that this build does not have yet, with a non-zero exit."""
    raise click.ClickException(f"{what} is not available yet in this version of mixflow-bench.")
