"""ksqlDB's function library: scalar functions (UDF), table functions (UDTF) and, later,
aggregates (UDAF), all in one registry that both the analyzer and DESCRIBE FUNCTION read.

Each submodule holds one family of functions; ``default_registry()`` collects them all.
"""
from __future__ import annotations

import importlib
from functools import lru_cache

from streamsql.functions.registry import FunctionRegistry

# One module per family; each declares its functions with @udf / @udtf.
MODULES = (
    "string", "math", "datetime", "collections", "json", "url", "lambdas", "structs",
    "conditional", "bytes", "table", "aggregates", "aggregates_collections",
)


@lru_cache(maxsize=1)
def default_registry() -> FunctionRegistry:
    """The registry of all built-in functions (built once; it is read-only afterwards)."""
    return _registry(MODULES)


@lru_cache(maxsize=1)
def test_registry() -> FunctionRegistry:
    """The built-in functions plus the test-only ones of ksqlDB's functional tests."""
    return _registry(MODULES + ("testing",))


def _registry(names: tuple[str, ...]) -> FunctionRegistry:
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(f"streamsql.functions.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"streamsql.functions.{name}":
                raise
    return FunctionRegistry.from_modules(modules)
