"""Training methods by name (:mod:`mixflow_bench.methods.registry`); importing this package registers the built-in
ones: flow matching (``fm``), MixFlow (``mixflow``), GMFlow (``gmflow``) and the κ-FC mixed source
(``mixed-source``)."""

from mixflow_bench.methods import fm, gmflow, mixed_source, mixflow  # noqa: F401  (each registers its method)
from mixflow_bench.methods.registry import (
    METHODS,
    Method,
    get_method,
    method_names,
    register_method,
    unregister_method,
)

__all__ = ["METHODS", "Method", "get_method", "method_names", "register_method", "unregister_method"]
