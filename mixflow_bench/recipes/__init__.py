"""Recipes: YAML files that fix every setting of one experiment."""

from mixflow_bench.recipes.loader import find_recipe, list_recipes, load_recipe, parse_override
from mixflow_bench.recipes.schema import Recipe
from mixflow_bench.recipes.validate import RecipeError

__all__ = ["Recipe", "RecipeError", "find_recipe", "list_recipes", "load_recipe", "parse_override"]
