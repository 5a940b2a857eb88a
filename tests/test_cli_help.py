"""Every command's help has examples that name existing options; ``models list``, ``--json PATH``; warnings."""

from __future__ import annotations

import json
import shlex

import click
import pytest
import torch
from click.testing import CliRunner

from mixflow_bench.cli.common import fast_path_warning, weight_warnings
from mixflow_bench.cli.examples import EXAMPLES
from mixflow_bench.cli.main import COMMANDS, cli


def all_commands() -> dict[str, click.Command]:
    """Every command path under ``mixflow-bench`` (groups' subcommands included) -> its command."""
    ctx = click.Context(cli)
    found: dict[str, click.Command] = {}

    def walk(cmd: click.Command, path: str) -> None:
        found[path] = cmd
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), f"{path} {name}".strip())

    for name in COMMANDS:
        walk(cli.get_command(ctx, name), name)
    return found


def test_every_command_shows_examples_in_its_help():
    commands = all_commands()
    leaves = [p for p, c in commands.items() if not isinstance(c, click.Group)]
    missing = [p for p in leaves if p not in EXAMPLES]
    assert not missing, missing
    for path in leaves:
        out = CliRunner().invoke(cli, [*path.split(), "--help"])
        assert out.exit_code == 0 and "Examples:" in out.output, path
        assert f"mixflow-bench {path}" in out.output, path


@pytest.mark.parametrize("path", sorted(EXAMPLES))
def test_examples_use_existing_commands_and_options(path):
    cmd = all_commands()[path]
    options = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    for line in EXAMPLES[path]:
        words = shlex.split(line.split("|")[0])
        assert words[: 1 + len(path.split())] == ["mixflow-bench", *path.split()], line
        used = [w.split("=")[0] for w in words if w.startswith("--")]
        assert set(used) <= options, (line, set(used) - options)


def test_sample_options_all_have_help():
    cmd = all_commands()["sample"]
    assert all(p.help for p in cmd.params if isinstance(p, click.Option)), [
        p.name for p in cmd.params if isinstance(p, click.Option) and not p.help
    ]


def test_models_list_names_every_model_and_writes_json(tmp_path):
    from mixflow_bench.models.zoo import list_models

    out = CliRunner().invoke(cli, ["models", "list", "--json", str(tmp_path / "m.json")], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    rows = json.loads((tmp_path / "m.json").read_text())
    assert [r["name"] for r in rows] == list_models()
    sit = next(r for r in rows if r["name"] == "sit-xl-2")
    assert (sit["family"], sit["resolution"], sit["artifact"], sit["sampler"]) == ("sit", 256, "sit-xl-2-256", "sde")
    printed = CliRunner().invoke(cli, ["models", "list", "--json", "-"], catch_exceptions=False)
    assert json.loads(printed.output) == rows


def test_json_takes_a_path_and_keeps_the_flag_form(tmp_path):
    path = tmp_path / "jobs.json"
    assert CliRunner().invoke(cli, ["jobs", "--run-dir", str(tmp_path), "--json", str(path)]).exit_code == 0
    assert json.loads(path.read_text()) == []
    flag = CliRunner().invoke(cli, ["jobs", "--run-dir", str(tmp_path), "--json"])
    assert json.loads(flag.output) == []


def test_untrained_and_random_weights_are_named():
    (untrained,) = weight_warnings("toy-mlp", None, False, "tiny-digits")
    assert "UNTRAINED" in untrained and "mixflow-bench train tiny-digits" in untrained
    assert weight_warnings("toy-mlp", "model.pt", False) == []
    (rand,) = weight_warnings("rae-dith-xl-256", None, True)
    assert "random" in rand and "image decoder (rae-dinov2-b)" in rand
    assert weight_warnings("sit-xl-2", None, False) == []  # released weights


def test_sampling_an_untrained_recipe_model_warns_and_still_samples(tmp_path):
    out = CliRunner().invoke(cli, ["sample", "tiny-digits", "--num", "2", "--out", str(tmp_path / "x.npz")],
                             catch_exceptions=False)  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "warning: toy-mlp has no released weights" in out.output and "UNTRAINED" in out.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="the warning is for machines without a CUDA device")
def test_fast_on_a_cpu_warns():
    assert "--fast on a CPU" in fast_path_warning(True, "local")
    assert fast_path_warning(False, "local") is None and fast_path_warning(True, "slurm") is None
