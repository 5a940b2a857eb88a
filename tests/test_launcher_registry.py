"""The launcher registry: a launcher registered here (one class, one ``register_launcher`` call, no other file
edited) is a ``--launcher`` choice of the commands and runs their tasks; an unknown name is refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mixflow_bench.launch import get_launcher, launcher_names, register_launcher, unregister_launcher

torch.set_num_threads(1)


class RecordingLauncher:
    """Runs each task in this process and keeps its kind and name: a launcher the project lacks."""

    ran: list[tuple[str, str]] = []

    def run(self, task):
        self.ran.append((task.kind, task.name))
        return task.run()


@pytest.fixture
def registered():
    RecordingLauncher.ran.clear()
    register_launcher("test-recording", lambda **settings: RecordingLauncher())
    yield "test-recording"
    unregister_launcher("test-recording")


def test_a_registered_launcher_runs_the_commands_tasks(tmp_path, registered) -> None:
    from mixflow_bench.cli.main import cli

    assert registered in launcher_names() and isinstance(get_launcher(registered), RecordingLauncher)
    out = tmp_path / "s.npz"
    args = ["sample", "--model", "toy-mlp", "--random-init", "--num", "2", "--steps", "2", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--launcher", registered])
    assert result.exit_code == 0, result.output
    assert RecordingLauncher.ran == [("sample", "sample-toy-mlp")]
    assert np.load(out)["arr_0"].shape == (2, 8, 8, 3)


def test_unknown_launcher_is_refused() -> None:
    from mixflow_bench.cli.main import cli

    assert set(launcher_names()) >= {"local", "torchrun", "slurm"}
    result = CliRunner().invoke(cli, ["sample", "--model", "toy-mlp", "--launcher", "test-recording"])
    assert result.exit_code == 2 and "--launcher" in result.output and "Traceback" not in result.output
    with pytest.raises(ValueError, match="unknown launcher"):
        get_launcher("test-recording")
