"""The CLI keeps freed CPU memory in the process (glibc mallopt); it changes where memory lives, not results."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from mixflow_bench import cpu_memory
from mixflow_bench.cli.main import cli

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="mallopt exists in glibc (Linux) only; elsewhere it does nothing"
)


@glibc
def test_mallopt_is_applied_in_a_fresh_process_and_can_be_switched_off():
    code = "from mixflow_bench.cpu_memory import keep_freed_memory as k; print(k())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    env = {"MIXFLOW_BENCH_KEEP_FREED_MEMORY": "0", "PATH": ""}
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert (on, off.stdout.strip()) == ("True", "False")


def test_every_command_sets_it_before_running(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_memory, "keep_freed_memory", lambda: calls.append(1) or True)
    result = CliRunner().invoke(cli, ["recipes", "list"])
    assert result.exit_code == 0, result.output
    assert calls == [1]


def test_results_do_not_depend_on_it():
    """A digits exact-field trajectory (large temporaries) is bit-identical with and without the setting."""
    code = (
        "import torch\n"
        "from mixflow_bench.cpu_memory import keep_freed_memory as k\n"
        "import sys; sys.argv[1] == '1' and k()\n"
        "from mixflow_bench.recipes.loader import load_recipe\n"
        "from mixflow_bench.toy import study as S\n"
        "r = load_recipe('digits'); d = S.load_study_data(r); f = S.exact_field(d)\n"
        "x, y = S._eval_inputs(d, 300, 0)\n"
        "s = S.euler(lambda z, t: f.mixflow(z, t, y, 0.5), x.double(), S.uniform_grid(4, S.CONVENTION))\n"
        "print(s.sum().item().hex(), s.abs().max().item().hex())\n"
    )
    out = [subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True, check=True).stdout
           for flag in ("0", "1")]  # fmt: skip
    assert out[0] == out[1] and out[0]
