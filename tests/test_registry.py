"""The one registry type behind methods, samplers, launchers, metrics and evaluators."""

from __future__ import annotations

import pytest

from mixflow_bench.launch import LAUNCHERS
from mixflow_bench.methods import METHODS
from mixflow_bench.metrics.registry import EVALUATORS, METRICS
from mixflow_bench.registry import Registry
from mixflow_bench.samplers import SAMPLERS


def test_registration_order_duplicates_and_unknown_names():
    reg: Registry[int] = Registry("widget")
    assert reg.register("b", 2) == 2 and reg.register("a", 1) == 1
    assert reg.names() == ("b", "a") and reg.lookup("a") == 1
    with pytest.raises(ValueError, match=r"^widget 'a' is already registered$"):
        reg.register("a", 3)
    assert reg["a"] == 1
    with pytest.raises(ValueError, match=r"^unknown widget 'c' \(expected one of: b, a\)$"):
        reg.lookup("c")
    reg.unregister("b")
    reg.unregister("never-there")
    assert reg.names() == ("a",)


@pytest.mark.parametrize(
    ("registry", "kind"),
    [(METHODS, "method"), (SAMPLERS, "sampler"), (LAUNCHERS, "launcher"), (METRICS, "metric"),
     (EVALUATORS, "evaluator")],
)  # fmt: skip
def test_every_kind_uses_it(registry, kind):
    assert isinstance(registry, Registry) and registry.kind == kind and registry.names()
