"""Find, read and validate recipes: YAML files with an optional ``extends:`` chain of base files."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from mixflow_bench.errors import SettingError, close_names, one_line
from mixflow_bench.merge import deep_merge
from mixflow_bench.recipes.schema import Recipe
from mixflow_bench.recipes.validate import RecipeError, build_dataclass

PACKAGE_RECIPES = Path(__file__).resolve().parent / "builtin"  # shipped with the package


def recipe_dirs() -> list[Path]:
    """Where recipes are looked up: ``$MIXFLOW_BENCH_RECIPES`` (os.pathsep-separated), ./recipes, the package's."""
    dirs = [Path(p) for p in os.environ.get("MIXFLOW_BENCH_RECIPES", "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "recipes", PACKAGE_RECIPES]
    seen, unique = set(), []
    for d in dirs:
        key = d.resolve()
        if key not in seen and d.is_dir():
            seen.add(key)
            unique.append(d)
    return unique


def find_recipe(name_or_path: str | Path) -> Path:
    """The file of a recipe given by name (``rae-256-cfg``) or path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    for d in recipe_dirs():
        for suffix in (".yaml", ".yml"):
            candidate = d / f"{name_or_path}{suffix}"
            if candidate.exists():
                return candidate
    if path.suffix in (".yaml", ".yml"):
        raise RecipeError(str(name_or_path), "", "no such recipe file")
    known = list_recipes()
    hint = close_names(str(name_or_path), known)
    raise RecipeError(str(name_or_path), "", f"no such recipe{hint} (known recipes: {', '.join(known) or 'none'})")


def list_recipes() -> list[str]:
    """Names of the recipes that can be run (files starting with '_' are bases, not listed)."""
    names = set()
    for d in recipe_dirs():
        for p in list(d.glob("*.yaml")) + list(d.glob("*.yml")):
            if not p.name.startswith("_"):
                names.add(p.stem)
    return sorted(names)


def read_raw(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of a recipe file with its ``extends:`` bases merged in (not yet validated)."""
    path = Path(path)
    if path.resolve() in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise RecipeError(str(path), "extends", f"circular extends: {cycle}")
    try:
        text = path.read_text()
    except OSError as e:
        raise RecipeError(str(path), "", f"cannot read: {e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RecipeError(str(path), "", f"invalid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(str(path), "", f"a recipe is a mapping, got {type(data).__name__}")
    bases = data.pop("extends", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError(str(path), "extends", f"expected a file name or a list of them, got {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = (path.parent / base) if (path.parent / base).exists() else None
        if base_path is None:
            try:
                base_path = find_recipe(base)
            except RecipeError:
                raise RecipeError(str(path), "extends", f"base recipe {base!r} not found") from None
        merged = deep_merge(merged, read_raw(base_path, (*_chain, path.resolve())))
    return deep_merge(merged, data)


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read, merge and validate a recipe; ``overrides`` (nested mapping) are applied before validation.

    The ``sample:`` section is merged over the sampling rules of the model's family
    (:mod:`mixflow_bench.recipes.families`): whatever the recipe or an override sets explicitly wins.
    """
    path = find_recipe(name_or_path)
    data = read_raw(path)
    data.setdefault("name", path.stem)
    if overrides:
        data = deep_merge(data, overrides)
    model = data.get("model")
    if isinstance(data.get("sample"), dict) and isinstance(model, dict):
        from mixflow_bench.recipes.families import merge_defaults

        data["sample"] = merge_defaults(model.get("name"), data["sample"])  # the model family's sampling rules
    recipe = build_dataclass(Recipe, {k: v for k, v in data.items() if k != "source"}, str(path))
    recipe.source = str(path)
    return recipe


def parse_override(text: str) -> dict[str, Any]:
    """``train.objective.gamma=0.5`` -> ``{"train": {"objective": {"gamma": 0.5}}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise SettingError(f"an override is KEY.PATH=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    if not all(key.strip().split(".")):
        raise SettingError(f"override {text!r}: empty key in {key!r}")
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise SettingError(f"override {text!r}: the value is not valid YAML ({one_line(str(exc))})") from None
    return out


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Several ``KEY.PATH=VALUE`` overrides as one nested mapping; a later one wins where two set the same key."""
    merged: dict[str, Any] = {}
    for item in items:
        merged = deep_merge(merged, parse_override(item))
    return merged
