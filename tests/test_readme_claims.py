"""What the README claims, checked where a command can check it: the names it tells users to type exist, its plan
figures are what ``reproduce --plan`` shows, and the plan does show GPU-hours per GPU type as it says.

A README edit that names a missing artifact, recipe or model, or quotes an estimate the plan no longer gives, fails
here instead of on a user's machine.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mixflow_bench.hub.registry import registry
from mixflow_bench.models.zoo import list_models
from mixflow_bench.pipeline.reproduce import plan, remaining_gpu_hours
from mixflow_bench.recipes import list_recipes

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = " ".join(README.read_text().split())  # commands wrapped over two lines read as one
NAME = r"[a-z0-9][\w.-]*[a-z0-9]"


def test_artifact_names_in_the_readme_exist():
    named = set()
    for args in re.findall(rf"mixflow-bench download ((?:{NAME} ?)+)", TEXT):
        named |= set(args.split())
    named |= set(re.findall(rf"artifacts? `({NAME})`", TEXT))
    assert named, "the README names no artifact: the patterns above no longer match it"
    assert named <= set(registry()), sorted(named - set(registry()))


def test_recipe_and_model_names_in_the_readme_exist():
    recipes = set(re.findall(rf"mixflow-bench (?:reproduce|train|sample|recipes show) ({NAME})", TEXT))
    recipes |= set(re.findall(rf"--recipe ({NAME})", TEXT))
    assert recipes and recipes <= set(list_recipes()), sorted(recipes - set(list_recipes()))
    models = set(re.findall(rf"--model ({NAME})", TEXT)) | set(re.findall(rf"zoo name `({NAME})`", TEXT))
    assert models <= set(list_models()), sorted(models - set(list_models()))


PLAN_CLAIM = re.compile(rf"mixflow-bench reproduce ({NAME}) --plan +#[^#]*?((?:[A-Z]\d{{3,4}} ~[\d.]+(?: · )?)+) GPU-h")


@pytest.mark.timeout(300)
def test_plan_figures_in_the_readme_are_what_the_plan_shows(tmp_path):
    claims = PLAN_CLAIM.findall(TEXT)
    assert claims, "the README quotes no plan estimate: the pattern above no longer matches it"
    for recipe, figures in claims:
        _, _, rows = plan(recipe, run_dir=tmp_path / recipe)
        totals, _ = remaining_gpu_hours(rows)
        quoted = {gpu: float(hours) for gpu, hours in re.findall(r"([A-Z]\d{3,4}) ~([\d.]+)", figures)}
        assert quoted == {gpu: round(h, 1) for gpu, h in totals.items()}, (recipe, quoted, totals)
    for recipe, hours in re.findall(rf"mixflow-bench reproduce ({NAME}) --plan +#[^#]*?~([\d.]+) GPU-h", TEXT):
        _, _, rows = plan(recipe, run_dir=tmp_path / recipe)  # any bare figure: one of the plan's
        assert float(hours) in {round(h, 1) for h in remaining_gpu_hours(rows)[0].values()}, (recipe, hours)


@pytest.mark.timeout(300)
def test_the_plan_estimates_per_gpu_type_as_the_readme_says(tmp_path):
    assert "estimates GPU-hours per GPU type" in TEXT
    _, _, rows = plan("sit-xl-256-cfg", run_dir=tmp_path)
    totals, _ = remaining_gpu_hours(rows)
    assert len(totals) >= 2, totals  # one figure per measured GPU type, not one number
    sampled = [s for s, _ in rows if s.name == "sample-baseline"][0]
    assert set(sampled.gpu_hours_by_type) == set(totals)
