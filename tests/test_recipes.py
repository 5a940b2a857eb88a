"""Recipes: validation errors name the file and key path; extends merges; every shipped recipe loads."""

import pytest
from click.testing import CliRunner

from mixflow_bench.cli.main import cli
from mixflow_bench.recipes import RecipeError, list_recipes, load_recipe, parse_override

BASE = """
model: {name: toy-mlp}
train:
  steps: 100
  batch_size: 32
  objective: {kind: mixflow, gamma: 0.8, t_dist: beta21}
"""


def write(tmp_path, name, text):
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text,key,fragment",
    [
        (BASE + "  lr: high\n", "train.lr", "expected a number"),
        (BASE.replace("gamma: 0.8", "gama: 0.8"), "train.objective.gama", "unknown key"),
        (BASE + "bogus: 1\n", "bogus", "unknown key"),
        ("model: {checkpoint: x}\n", "model.name", "missing required field"),
        (BASE.replace("gamma: 0.8", "gamma: 1.5"), "train.objective.gamma", "[0, 1]"),
        (BASE.replace("kind: mixflow", "kind: mixfloww"), "train.objective.kind", "one of"),
        (
            BASE + "sample: {sampler: euler, steps: 8, guidance: {kind: autoguidance}}\n",
            "sample.guidance.guide_model",
            "required",
        ),
        (
            BASE + "sample: {sampler: euler, steps: 8, guidance: {interval: [0.7, 0.1]}}\n",
            "sample.guidance.interval",
            "lower bound",
        ),
        ("- a\n- b\n", "", "a recipe is a mapping"),
        ("model: [\n", "", "invalid YAML"),
    ],
)
def test_errors_name_file_and_key(tmp_path, text, key, fragment):
    path = write(tmp_path, "bad", text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.key_path == key
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_extends_deep_merges_and_overrides(tmp_path):
    write(tmp_path, "_base", BASE + "description: base\n")
    child = write(tmp_path, "child", "extends: _base.yaml\ntrain: {steps: 7, objective: {gamma: 0.4}}\n")
    r = load_recipe(child)
    assert r.name == "child" and r.description == "base"
    assert r.train.steps == 7 and r.train.batch_size == 32
    assert r.train.objective.gamma == 0.4 and r.train.objective.kind == "mixflow"
    r2 = load_recipe(child, parse_override("train.objective.gamma=0.9"))
    assert r2.train.objective.gamma == 0.9


def test_circular_extends_is_refused(tmp_path):
    write(tmp_path, "a", "extends: b.yaml\nmodel: {name: x}\n")
    write(tmp_path, "b", "extends: a.yaml\n")
    with pytest.raises(RecipeError, match="circular"):
        load_recipe(tmp_path / "a.yaml")


def test_every_shipped_recipe_validates():
    names = list_recipes()
    assert names, "no recipes shipped"
    for name in names:
        load_recipe(name)


def test_cli_list_and_show(tmp_path, monkeypatch):
    write(tmp_path, "mine", BASE + "description: my experiment\n")
    monkeypatch.setenv("MIXFLOW_BENCH_RECIPES", str(tmp_path))
    from mixflow_bench.cli.common import console

    monkeypatch.setattr(console, "width", 250)
    runner = CliRunner()
    res = runner.invoke(cli, ["recipes", "list"], terminal_width=200)
    assert res.exit_code == 0 and "mine" in res.output and "mixflow 100 steps" in res.output
    res = runner.invoke(cli, ["recipes", "show", "mine"], terminal_width=200)
    assert res.exit_code == 0 and "gamma: 0.8" in res.output and "ema_decay: 0.9999" in res.output
    res = runner.invoke(cli, ["recipes", "show", "nope"])
    assert res.exit_code != 0 and "no such recipe" in res.output


def test_repa_recipes_say_mixflow_gamma_and_length_are_unknown():
    """The sources give MixFlow's gamma and length for SiT and RAE, not for REPA (mixflow.md §1.7)."""
    from mixflow_bench.recipes.loader import load_recipe

    for name in ("repa-256",):  # the base of the REPA MixFlow recipes
        notes = " ".join(load_recipe(name).notes)
        assert "gamma and post-training length for REPA are not stated (unknown)" in notes, name
