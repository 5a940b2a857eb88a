"""Turn a YAML mapping into typed dataclasses, naming the file and the key path of every error.

Written here rather than with pydantic to keep recipes plain dataclasses that a notebook can build directly,
with error messages in the form researchers read them: ``recipes/x.yaml: train.objective.gamma: expected a
number, got 'high'``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from mixflow_bench.errors import UserError


class RecipeError(UserError, ValueError):
    """A recipe that cannot be used, with the file and the key path that are wrong."""

    def __init__(self, source: str, key_path: str, message: str):
        self.source, self.key_path, self.message = source, key_path, message
        where = f"{source}: {key_path}" if key_path else source
        super().__init__(f"{where}: {message}")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is str:
        return "a string"
    if tp is bool:
        return "true/false"
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    return str(tp)


def convert(value: Any, tp: Any, source: str, path: str) -> Any:
    """Check ``value`` against the type ``tp`` and build dataclasses; raise :class:`RecipeError` on mismatch."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in get_args(tp):
            try:
                return convert(value, option, source, path)
            except RecipeError as e:
                errors.append(e)
        # a nested dataclass error is more useful than "expected X or null"
        nested = [e for e in errors if e.key_path != path]
        if nested:
            raise nested[0]
        raise RecipeError(source, path, f"expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise RecipeError(source, path, f"expected null, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise RecipeError(source, path, f"expected {_type_name(tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(source, path, f"expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise RecipeError(source, path, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise RecipeError(source, path, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise RecipeError(source, path, f"expected a string, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(source, path, f"expected a list, got {value!r}")
        (item,) = get_args(tp) or (Any,)
        return [convert(v, item, source, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise RecipeError(source, path, f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(v, args[0], source, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise RecipeError(source, path, f"expected a list of {len(args)} items, got {len(value)}")
        return tuple(convert(v, a, source, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(source, path, f"expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, source, path)
    raise TypeError(f"unsupported recipe type {tp!r} at {path}")  # a schema bug, not a user error


def build_dataclass(cls: type, data: Any, source: str, path: str = "") -> Any:
    """Build dataclass ``cls`` from mapping ``data``: unknown keys, wrong types and missing fields are errors."""
    if not isinstance(data, dict):
        raise RecipeError(source, path, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{path}.{unknown[0]}" if path else unknown[0]
        raise RecipeError(source, key, f"unknown key (valid keys here: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = convert(data[name], hints[name], source, key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(source, key, "missing required field")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        problem = check()
        if problem:
            key, message = problem
            raise RecipeError(source, f"{path}.{key}" if path else key, message)
    return obj
