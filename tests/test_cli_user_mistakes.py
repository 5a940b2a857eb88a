"""Ordinary mistakes through the real CLI: one ``Error:`` line that says what is wrong, no traceback.

Exit status 1 for a mistake found while checking the request (a name, a file, a setting; mixflow_bench/errors.py),
2 for a malformed command line (click's usage errors). ``catch_exceptions=False``: an uncaught exception fails the
test with its traceback instead of being turned into an exit status.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mixflow_bench.cli.main import cli

pytestmark = pytest.mark.timeout(300)

# (arguments, exit status, text the one error line must contain); {tmp} is a fresh folder, {file} a regular file
# (a folder below it cannot be created, whoever runs the test, root included)
MISTAKES: list[tuple[str, int, str]] = [
    ("sample --model foo --random-init", 1, "unknown model 'foo'"),
    ("sample --model sit-xl-2-256 --random-init", 1, "did you mean sit-xl-2"),
    ("sample --model sit-s-8 --checkpoint missing.pt", 1, "checkpoint missing.pt: no such file"),
    ("sample --model sit-s-8 --checkpoint {tmp}/nope/model.pt", 1, "no such file"),
    ("sample --model sit-s-8 --checkpoint sit-xl-2-257", 1, "unknown artifact 'sit-xl-2-257'"),
    ("sample --model sit-s-8 --random-init --out {file}/x.npz", 1, "--out"),
    ("sample --model sit-s-8 --random-init --out x.jpg", 2, "--out must end in .npz or .png"),
    ("sample", 2, "give either a RECIPE or --model NAME"),
    ("sample tiny-digits --num 0 --out {tmp}/a.npz", 1, "num: must be positive"),
    ("sample tiny-digits --steps 0 --out {tmp}/a.npz", 1, "steps: must be positive"),
    ("sample tiny-digits --sampler bogus", 2, "--sampler"),
    ("sample tiny-digits --seed abc", 2, "--seed"),
    ("sample --model sit-s-8 --random-init --batch-size 0 --out {tmp}/a.npz", 1, "batch_size"),
    ("reproduce nope", 1, "nope: no such recipe"),
    ("reproduce tiny-digit --plan", 1, "did you mean tiny-digits"),
    ("reproduce tiny-digits model.name=nope --plan", 1, "model.name: unknown model 'nope'"),
    ("reproduce tiny-digits foo.bar=1 --plan", 1, "foo: unknown key"),
    ("reproduce tiny-digits train.steps=abc --plan", 1, "train.steps: expected an integer"),
    ("reproduce tiny-digits train.steps=[ --plan", 1, "not valid YAML"),
    ("reproduce tiny-digits .steps=3 --plan", 1, "empty key"),
    ("reproduce tiny-digits --launcher torchrun --nproc 0 --run-dir {tmp}/r", 1, "--nproc must be at least 1"),
    ("reproduce tiny-digits --launcher slurm --run-dir {tmp}/r", 1, "--launcher slurm: sinfo failed"),
    ("reproduce tiny-digits --run-dir {file}/run", 1, "--run-dir"),
    ("reproduce tiny-digits --stage nope --run-dir {tmp}/r", 1, "recipe tiny-digits has no stage 'nope'"),
    ("reproduce digits --seeds a,b --plan", 2, "--seeds"),
    ("reproduce toy2d --fast", 2, "--fast applies to full pipelines"),
    ("reproduce toy2d --run-dir {file}/run", 1, "--run-dir"),
    ("train nope", 1, "no such recipe"),
    ("train tiny-digits --run-dir {file}/run", 1, "--run-dir"),
    ("recipes show nope", 1, "no such recipe"),
    ("recipes show {tmp}/missing.yaml", 1, "no such recipe file"),
    ("download sit-xl-2-257", 1, "unknown artifact 'sit-xl-2-257'"),
    ("eval --samples missing.npz --ref {tmp}/missing-ref.npz", 1, "not found"),
    ("eval --samples {file} --ref adm-ref-nope", 1, "neither a file nor a reference batch"),
    ("eval --samples {file} --ref {file} --metrics fid,xyz", 2, "unknown metric"),
    ("table --reported {tmp}/missing.yaml", 1, "no such reported-numbers file"),
    ("pack {tmp}/nope {tmp}/out.npz", 1, "not a directory"),
    ("sample tiny-digits model.checkpoint={file} --out {tmp}/a.npz", 1, "not a readable PyTorch checkpoint"),
    ("analyze curvature --dataset toy2d --checkpoint a={file}", 1, "not a readable PyTorch checkpoint"),
    ("analyze slow-flow --dataset toy2d --checkpoint a={tmp}/missing.pt", 1, "no such checkpoint"),
    ("train toy2d", 1, "toy2d is a study that trains its own models"),
]


@pytest.fixture()
def no_slurm_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sinfo``/``sbatch`` on PATH whose controller cannot be reached (as on a login node with slurmctld down)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sinfo", "sbatch"):
        script = bin_dir / tool
        script.write_text("#!/bin/sh\necho 'slurm_load_partitions: Unable to contact slurm controller' >&2\nexit 1\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


@pytest.mark.parametrize("args,status,text", MISTAKES, ids=[m[0].split(" {")[0][:60] for m in MISTAKES])
def test_mistake_is_one_line_without_traceback(args, status, text, tmp_path, monkeypatch, no_slurm_controller):
    monkeypatch.chdir(tmp_path)
    afile = tmp_path / "afile"
    afile.write_bytes(b"not an npz")
    argv = args.format(tmp=tmp_path / "t", file=afile).split()
    (tmp_path / "t").mkdir()
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    out = result.output
    assert result.exit_code == status, out
    assert "Traceback" not in out
    lines = [line for line in out.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0] == len(lines) - 1, out  # one error line, and the last one
    assert text in lines[-1], out


def test_at_least_25_mistakes_are_covered() -> None:
    assert len(MISTAKES) >= 25


def test_changed_setting_with_the_same_out_is_named(tmp_path):
    """A second run to the same --out with other --steps names ``sample.steps 8 -> 4``, not two fingerprint hashes."""
    out = str(tmp_path / "s.npz")
    first = CliRunner().invoke(cli, ["sample", "tiny-digits", "--num", "2", "--out", out], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, ["sample", "tiny-digits", "--num", "2", "--steps", "4", "--out", out],
                               catch_exceptions=False)  # fmt: skip
    assert again.exit_code == 1 and "Traceback" not in again.output
    error = again.output.strip().splitlines()[-1]
    assert "sample.steps 8 -> 4" in error and "fingerprint" not in error, error


def test_settings_written_before_the_readable_settings_still_compare():
    from mixflow_bench.sampling.shards import settings_changes

    legacy = {"num": 8, "seed": 0, "fingerprint": "abc"}
    now = {"num": 8, "seed": 0, "fingerprint": "abc", "fingerprint_settings": {"sample": {"steps": 8}}}
    assert settings_changes(legacy, now) == []  # an old run resumes
    assert settings_changes({**legacy, "seed": 1}, now) == ["seed 1 -> 0"]
