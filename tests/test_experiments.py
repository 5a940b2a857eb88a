"""Studies are registered experiments run by ``reproduce`` with a manifest: a rerun with the same settings skips
finished work, other settings need --force, and launchers or Slurm options a study cannot use are refused in
one line before any work."""

from __future__ import annotations

from click.testing import CliRunner

from mixflow_bench.cli.main import cli
from mixflow_bench.experiments import EXPERIMENTS, experiment_of
from mixflow_bench.recipes.loader import list_recipes, load_recipe

TINY = ["model.overrides.hidden=16", "model.overrides.depth=1", "data.num_train=256", "data.num_heldout=128",
        "study.baseline_steps=3", "study.posttrain_steps=2", "study.batch_size=32", "study.eval_steps=[2]",
        "study.num_eval_samples=64", "study.slow_flow_samples=16", "study.slow_flow_steps=2", "study.gammas=[0.5]",
        "--seeds", "0,1"]  # fmt: skip


def invoke(*argv: str):
    return CliRunner().invoke(cli, list(argv), catch_exceptions=False)


def test_every_study_recipe_selects_one_registered_experiment():
    for name in list_recipes():
        recipe = load_recipe(name)
        matching = [e.name for e in EXPERIMENTS.values() if e.matches(recipe)]
        is_study = any(x is not None for x in (recipe.study, recipe.mixed_source, recipe.regime, recipe.image_study))
        assert len(matching) == (1 if is_study else 0), (name, matching)
    assert experiment_of(load_recipe("regime-digits")).name == "regime"
    assert experiment_of(load_recipe("toy2d")).name == "mixflow-study"


def test_rerun_skips_finished_work_and_changed_settings_need_force(tmp_path):
    first = invoke("reproduce", "toy2d", *TINY, "--run-dir", str(tmp_path))
    assert first.exit_code == 0, first.output
    study = tmp_path / "toy2d" / "study.json"
    stamp = study.stat().st_mtime_ns
    assert (tmp_path / "toy2d" / "manifests" / "experiment.json").exists()
    assert (tmp_path / "toy2d" / "results" / "study-toy2d-fm-beta.json").exists()  # records in the run folder
    again = invoke("reproduce", "toy2d", *TINY, "--run-dir", str(tmp_path))
    assert again.exit_code == 0 and "up to date" in again.output and study.stat().st_mtime_ns == stamp
    changed = invoke("reproduce", "toy2d", *TINY, "study.posttrain_steps=3", "--run-dir", str(tmp_path))
    assert changed.exit_code == 1 and "--force" in changed.output and "posttrain_steps" in changed.output
    assert study.stat().st_mtime_ns == stamp  # nothing overwritten


def test_launchers_and_slurm_options_a_study_cannot_use_are_refused(tmp_path):
    torchrun = invoke("reproduce", "digits", "--launcher", "torchrun", "--run-dir", str(tmp_path))
    assert torchrun.exit_code == 1 and "--launcher torchrun does not apply" in torchrun.output
    slurm = invoke("reproduce", "digits", "--partition", "nowhere", "--run-dir", str(tmp_path))
    assert slurm.exit_code == 1 and "Slurm options (partition)" in slurm.output
    for result in (torchrun, slurm):
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "digits" / "study.json").exists()


def test_plan_names_the_experiment_and_both_controls():
    result = invoke("reproduce", "digits", "regime-digits", "--plan")
    assert result.exit_code == 0, result.output
    assert "fm-control, fm-beta and MixFlow" in result.output and "regime study on the CPU" in result.output
