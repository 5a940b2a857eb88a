"""The method registry: every training method a recipe, the pipeline or the results table can name, in one place.

A method is what a model is trained with: its objective (built from a recipe's ``train.objective`` section and the
model's zoo spec), the network output it needs (``velocity``, or ``gm``: GMFlow's Gaussian-mixture head), and the
distribution sampling starts from (``gaussian``; ``learned``: the κ-FC mixed source's learned source, mixed with
N(0, I) in training). The samplers it allows follow from its output (:mod:`mixflow_bench.samplers`).

A method is one module that calls :func:`register_method` (the built-in ones: ``fm``, ``mixflow``, ``gmflow``,
``mixed_source`` in this package). This module does not import torch: objective builders import what they need
when they run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mixflow_bench.registry import Registry
from mixflow_bench.samplers import sampler_names

# (recipe objective section, model spec) -> a TrainingObjective (mixflow_bench.train.protocols)
ObjectiveBuilder = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Method:
    """One registered method (see the module docstring); ``objective`` builds its training objective."""

    name: str
    objective: ObjectiveBuilder
    description: str = ""
    output: Literal["velocity", "gm"] = "velocity"
    source: Literal["gaussian", "learned"] = "gaussian"

    def samplers(self) -> tuple[str, ...]:
        """The registered samplers that can sample a model trained with this method."""
        return sampler_names(self.output)

    def build_objective(self, section: Any, spec: Any) -> Any:
        """The training objective for recipe objective ``section`` and model ``spec``; a ValueError when the
        model's output is not the one the method trains."""
        output = getattr(spec, "output", "velocity")
        if output != self.output:
            raise ValueError(f"method {self.name} trains a {self.output} model; {spec.name} outputs a {output}")
        return self.objective(section, spec)


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry (a name can be registered once)."""
    return METHODS.register(method.name, method)


def unregister_method(name: str) -> None:
    """Remove a registered method (tests that register their own)."""
    METHODS.unregister(name)


def method_names() -> tuple[str, ...]:
    """The registered method names, in registration order."""
    return METHODS.names()


def get_method(name: str) -> Method:
    """The method registered as ``name``; a ValueError naming the valid ones otherwise."""
    return METHODS.lookup(name)
