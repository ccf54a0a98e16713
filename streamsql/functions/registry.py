"""The function registry: typed signatures for scalar (UDF), table (UDTF) and aggregate
(UDAF) functions, overload resolution, and what DESCRIBE FUNCTION / SHOW FUNCTIONS list.

A function module declares implementations with the ``udf`` / ``udtf`` decorators; the
decorator only attaches a ``Signature`` to the Python function (no registration side effect),
and ``FunctionRegistry`` collects them from the modules it is given. Signatures are written as
type specs, a small language over the SQL type names::

    STRING  INTEGER  BIGINT  DOUBLE  BOOLEAN  BYTES  DATE  TIME  TIMESTAMP
    DECIMAL             any DECIMAL(p, s)
    T, U, K, V, ...     a generic: one capital letter, optionally a digit (T1), bound on first
                        match and the same type everywhere it appears in one signature
    ANY                 anything, binds nothing
    ARRAY<T>  MAP<K, V>  STRUCT (any struct)
    FUNCTION(T)->U      a lambda taking T and returning U (also FUNCTION(K, V)->R)
    INTERVALUNIT        a time unit keyword argument such as SECONDS

The last parameter may be variadic (``variadic=True``): it matches zero or more arguments.

Implementations take and return Python values as described in ``streamsql.types`` and handle
NULL (None) arguments themselves, as ksqlDB's UDFs do. An implementation that needs the
argument types (to format a DECIMAL, say) is declared with ``factory=True``: it is then called
once, at compile time, as ``impl(arg_types, return_type)`` and must return the per-record
callable. Nothing is looked up per record.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping

from streamsql import types as t
from streamsql.errors import KsqlStatementException
from streamsql.types import ArrayType, BaseType, DecimalType, LambdaType, MapType, SqlType, StructType


# ------------------------------------------------------------------------------- type specs
@dataclass(frozen=True)
class Spec:
    """A parsed parameter or return type spec."""

    kind: str  # 'type', 'generic', 'any', 'decimal', 'array', 'map', 'struct', 'lambda', 'unit'
    type: SqlType | None = None
    name: str | None = None
    args: tuple["Spec", ...] = ()

    def __str__(self) -> str:
        if self.kind == "type":
            return str(self.type)
        if self.kind == "generic":
            return str(self.name)
        if self.kind == "any":
            return "ANY"
        if self.kind == "decimal":
            return "DECIMAL"
        if self.kind == "struct":
            return "STRUCT"
        if self.kind == "unit":
            return "INTERVALUNIT"
        if self.kind == "array":
            return f"ARRAY<{self.args[0]}>"
        if self.kind == "map":
            return f"MAP<{self.args[0]}, {self.args[1]}>"
        if self.kind == "lambda":
            *params, result = self.args
            return "LAMBDA (" + ", ".join(map(str, params)) + f") => {result}"
        raise AssertionError(self.kind)


# The most characters or elements a scalar function builds for one record (LPAD to 2^31,
# GENERATE_SERIES over the whole BIGINT range): past it the call fails (NULL and a
# processing-log entry) instead of taking the process's memory.
MAX_RESULT_SIZE = 10_000_000

_TOKEN = re.compile(r"\s*(->|[A-Za-z_][A-Za-z_0-9]*|\d+|[<>(),])")


def parse_spec(text: str) -> Spec:
    """Parse a type spec string (see the module docstring)."""
    tokens = _TOKEN.findall(text)
    if "".join(tokens).replace(" ", "") != text.replace(" ", ""):
        raise ValueError(f"bad type spec: {text!r}")
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal pos
        tok = tokens[pos]
        if expected is not None and tok.upper() != expected:
            raise ValueError(f"bad type spec {text!r}: expected {expected} at {tok!r}")
        pos += 1
        return tok

    def one() -> Spec:
        word = take().upper()
        if word == "ARRAY":
            take("<"); item = one(); take(">")
            return Spec("array", args=(item,))
        if word == "MAP":
            take("<"); key = one(); take(","); value = one(); take(">")
            return Spec("map", args=(key, value))
        if word == "STRUCT":
            return Spec("struct")
        if word == "FUNCTION":
            take("(")
            params = []
            while peek() != ")":
                params.append(one())
                if peek() == ",":
                    take(",")
            take(")"); take("->")
            return Spec("lambda", args=(*params, one()))
        if word == "DECIMAL":
            if peek() == "(":
                take("("); p = int(take()); take(","); s = int(take()); take(")")
                return Spec("type", type=DecimalType(p, s))
            return Spec("decimal")
        if word == "ANY":
            return Spec("any")
        if word == "INTERVALUNIT":
            return Spec("unit")
        if word in t.PRIMITIVES_BY_NAME:
            return Spec("type", type=t.PRIMITIVES_BY_NAME[word])
        if re.fullmatch(r"[A-Z][0-9]?", word):
            return Spec("generic", name=word)
        raise ValueError(f"bad type spec {text!r}: unknown {word!r}")

    spec = one()
    if pos != len(tokens):
        raise ValueError(f"bad type spec {text!r}: trailing {tokens[pos:]}")
    return spec


# ------------------------------------------------------------------------------ signatures
@dataclass(frozen=True)
class Param:
    name: str
    spec: Spec
    description: str = ""


@dataclass(frozen=True)
class Signature:
    """One overload of a function."""

    name: str  # upper-case SQL name
    params: tuple[Param, ...]
    returns: Spec | Callable[[list[SqlType]], SqlType]
    impl: Callable[..., Any]
    kind: str = "scalar"  # 'scalar', 'table' or 'aggregate'
    variadic: bool = False
    factory: bool = False
    description: str = ""
    init_params: int = 0  # aggregates: trailing parameters that must be literals

    @property
    def variadic_index(self) -> int | None:
        """Which parameter is variadic: the last one, except that an aggregate's init
        parameters come after it (``TOPK(col, other..., k)``); None when not variadic."""
        if not self.variadic:
            return None
        return len(self.params) - 1 - (self.init_params if self.kind == "aggregate" else 0)

    def describe_params(self) -> str:
        vi = self.variadic_index
        parts = [str(p.spec) + ("[]" if i == vi else "") for i, p in enumerate(self.params)]
        return "(" + ", ".join(parts) + ")"


def _decorator(kind: str, name: str, returns: str | Callable[[list[SqlType]], SqlType],
               params: Iterable[str | tuple[str, str]], *, variadic: bool, factory: bool,
               description: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    parsed_params = []
    for i, p in enumerate(params):
        pname, ptext = p if isinstance(p, tuple) else (f"arg{i + 1}", p)
        parsed_params.append(Param(pname, parse_spec(ptext)))
    ret = parse_spec(returns) if isinstance(returns, str) else returns

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = Signature(name.upper(), tuple(parsed_params), ret, fn, kind, variadic, factory,
                        description or (fn.__doc__ or "").strip())
        fn.__dict__.setdefault("__signatures__", []).append(sig)
        return fn

    return wrap


def udf(name: str, returns: str | Callable[[list[SqlType]], SqlType],
        params: Iterable[str | tuple[str, str]] = (), *, variadic: bool = False,
        factory: bool = False, description: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare ``fn`` as an overload of scalar function ``name``. Stack to declare several.

    ``params`` are type specs, or (name, spec) pairs to name them for DESCRIBE FUNCTION.
    ``returns`` is a spec, or a callable from the argument types to the return type.
    """
    return _decorator("scalar", name, returns, params, variadic=variadic, factory=factory,
                      description=description)


def udtf(name: str, returns: str | Callable[[list[SqlType]], SqlType],
         params: Iterable[str | tuple[str, str]] = (), *, variadic: bool = False,
         factory: bool = False, description: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a table function: the implementation returns a list (one output row per
    element; None or an empty list gives no rows). ``returns`` is the element type."""
    return _decorator("table", name, returns, params, variadic=variadic, factory=factory,
                      description=description)


def udaf(name: str, returns: str | Callable[[list[SqlType]], SqlType],
         params: Iterable[str | tuple[str, str]] = (), *, init_params: int = 0,
         variadic: bool = False, description: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare an aggregate function overload.

    The decorated function is a factory ``fn(arg_types, return_type, init_args) ->
    Aggregator``, called once per query. The last ``init_params`` parameters are *init
    arguments*: they must be literals, and their values arrive in ``init_args``; the other
    arguments are evaluated per record and passed to ``Aggregator.add`` / ``undo``.
    With ``variadic=True`` the variadic parameter is the last one before the init
    parameters. A factory may also take a keyword ``config``: the query's properties
    (``ksql.functions.collect_list.limit`` ...); ``Resolved.aggregator`` passes it.
    """
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = _decorator("aggregate", name, returns, params, variadic=variadic, factory=True,
                        description=description)(fn)
        sig = fn.__dict__["__signatures__"][-1]
        fn.__dict__["__signatures__"][-1] = _with_init_params(sig, init_params)
        return fn
    return wrap


def _with_init_params(sig: Signature, n: int) -> Signature:
    from dataclasses import replace as _replace
    return _replace(sig, init_params=n)


class Aggregator:
    """One aggregate function instance for one query: how its accumulator starts, takes a
    value, gives one back (table aggregations), merges (session windows) and yields its result.

    Accumulators are plain values the state store can keep: ``to_state`` must turn one into
    JSON-compatible data (None, bool, int, float, str, lists, dicts with str keys) and
    ``from_state`` back; the defaults assume the accumulator already is such data.
    """

    #: Whether ``undo`` is implemented (aggregating a TABLE needs it).
    supports_undo = True

    #: The SQL type of the accumulator as ksqlDB declares it (a STRUCT for AVG, say), for
    #: checking that the value format can hold it; None when it is the return type.
    intermediate_type: SqlType | None = None

    def initialize(self) -> Any:
        raise NotImplementedError

    def add(self, acc: Any, *values: Any) -> Any:
        """The accumulator after taking one record's argument values (may mutate ``acc``)."""
        raise NotImplementedError

    def undo(self, acc: Any, *values: Any) -> Any:
        """The accumulator after removing a value previously added (table aggregations)."""
        raise NotImplementedError

    def merge(self, a: Any, b: Any) -> Any:
        """One accumulator for two merged session windows."""
        raise NotImplementedError

    def result(self, acc: Any) -> Any:
        """The aggregate's value, a Python value of the declared return type."""
        return acc

    def to_state(self, acc: Any) -> Any:
        return acc

    def from_state(self, data: Any) -> Any:
        return data


# ------------------------------------------------------------------------------ resolution
@dataclass
class Resolved:
    """The overload chosen for a call, with the concrete types it was bound to.

    ``param_types`` has one entry per argument (variadic expanded). For a lambda argument it is
    a LambdaType whose ``params`` the analyzer uses to type the lambda body.
    """

    signature: Signature
    param_types: list[SqlType]
    return_type: SqlType

    def implementation(self) -> Callable[..., Any]:
        """The per-record callable."""
        if self.signature.factory:
            return self.signature.impl(self.param_types, self.return_type)
        return self.signature.impl

    def aggregator(self, init_args: tuple[Any, ...] | list[Any] = (),
                   config: Mapping[str, Any] | None = None) -> "Aggregator":
        """A new Aggregator for an aggregate overload: ``init_args`` are the values of the
        trailing literal arguments, ``config`` the query's properties (for factories that
        read one, such as COLLECT_LIST's size limit)."""
        impl = self.signature.impl
        if config is not None and "config" in inspect.signature(impl).parameters:
            return impl(self.param_types, self.return_type, tuple(init_args), config=config)
        return impl(self.param_types, self.return_type, tuple(init_args))


@dataclass
class FunctionRegistry:
    """All functions known to an engine, by upper-case name."""

    scalars: dict[str, list[Signature]] = field(default_factory=dict)
    tables: dict[str, list[Signature]] = field(default_factory=dict)
    aggregates: dict[str, list[Signature]] = field(default_factory=dict)

    @classmethod
    def from_modules(cls, modules: Iterable[ModuleType]) -> "FunctionRegistry":
        reg = cls()
        for module in modules:
            for value in vars(module).values():
                for sig in getattr(value, "__signatures__", ()):
                    target = {"scalar": reg.scalars, "table": reg.tables,
                              "aggregate": reg.aggregates}[sig.kind]
                    target.setdefault(sig.name, []).append(sig)
        return reg

    def is_table_function(self, name: str) -> bool:
        return name.upper() in self.tables

    def is_aggregate(self, name: str) -> bool:
        return name.upper() in self.aggregates

    def exists(self, name: str) -> bool:
        name = name.upper()
        return name in self.scalars or name in self.tables or name in self.aggregates

    def resolve(self, name: str, arg_types: list[SqlType | None],
                lambda_typer: Callable[[int, tuple[SqlType, ...]], SqlType] | None = None,
                kind: str = "scalar") -> Resolved:
        """Choose the overload of ``name`` for arguments of ``arg_types``.

        A lambda argument has type None in ``arg_types``; ``lambda_typer(i, param_types)``
        types the body of argument ``i`` given the types bound to its parameters.
        Raises KsqlStatementException with ksqlDB's wording when nothing matches.
        """
        name = name.upper()
        sigs = {"scalar": self.scalars, "table": self.tables, "aggregate": self.aggregates}[kind].get(name)
        if not sigs:
            raise KsqlStatementException(f"Can't find any functions with the name '{name}'")
        best: tuple[int, Resolved] | None = None
        for sig in sigs:
            got = _try_bind(sig, arg_types, lambda_typer)
            if got is not None and (best is None or got[0] < best[0]):
                best = got
        if best is None:
            shown = ", ".join("LAMBDA" if a is None else str(a) for a in arg_types)
            # ksqlDB names a scalar function in lower case here, an aggregate as declared.
            shown_name = name if kind == "aggregate" else name.lower()
            raise KsqlStatementException(
                f"Function '{shown_name}' does not accept parameters ({shown}).\n"
                f"Valid alternatives are:\n"
                + "\n".join(f"{name}{s.describe_params()}" for s in sigs))
        return best[1]

    def describe(self, name: str) -> list[Signature]:
        name = name.upper()
        return (list(self.scalars.get(name, ())) + list(self.tables.get(name, ()))
                + list(self.aggregates.get(name, ())))


def _try_bind(sig: Signature, arg_types: list[SqlType | None],
              lambda_typer: Callable[[int, tuple[SqlType, ...]], SqlType] | None) -> tuple[int, Resolved] | None:
    """Bind a signature to argument types: (cost, Resolved), or None when it does not match.

    Cost counts implicit conversions, so an exact overload beats a widening one.
    """
    n = len(sig.params)
    if sig.variadic:
        if len(arg_types) < n - 1:
            return None
        vi = sig.variadic_index
        assert vi is not None
        specs = (list(sig.params[:vi]) + [sig.params[vi]] * (len(arg_types) - (n - 1))
                 + list(sig.params[vi + 1:]))
    else:
        if len(arg_types) != n:
            return None
        specs = list(sig.params)
    bindings: dict[str, SqlType] = {}
    cost = 0
    param_types: list[SqlType | None] = [None] * len(arg_types)
    # Non-lambda arguments first: they bind the generics lambda parameters are typed from.
    for i, (param, actual) in enumerate(zip(specs, arg_types)):
        if param.spec.kind == "lambda":
            if actual is not None:
                return None
            continue
        if actual is None:
            return None
        c = _match(param.spec, actual, bindings)
        if c is None:
            return None
        cost += c
        param_types[i] = _substitute(param.spec, bindings) or actual
    for i, (param, actual) in enumerate(zip(specs, arg_types)):
        if param.spec.kind != "lambda":
            continue
        *lparams, lresult = param.spec.args
        bound_params = tuple(_substitute(p, bindings) for p in lparams)
        if any(p is None for p in bound_params) or lambda_typer is None:
            return None
        body_type = lambda_typer(i, bound_params)  # type: ignore[arg-type]
        if _match(lresult, body_type, bindings) is None:
            return None
        param_types[i] = LambdaType(bound_params, body_type)  # type: ignore[arg-type]
    if callable(sig.returns) and not isinstance(sig.returns, Spec):
        ret = sig.returns([p for p in param_types])  # type: ignore[misc]
    else:
        ret = _substitute(sig.returns, bindings)
        if ret is None:
            ret = t.NULL if sig.returns.kind in ("generic", "any") else None
        if ret is None:
            return None
    return cost, Resolved(sig, param_types, ret)  # type: ignore[arg-type]


def _match(spec: Spec, actual: SqlType, bindings: dict[str, SqlType]) -> int | None:
    """How well ``actual`` fits ``spec`` (0 exact, >0 implicit cast), None if it does not."""
    if getattr(actual, "_unit", False) and spec.kind != "unit":
        return None
    if spec.kind == "any":
        return 0
    if spec.kind == "unit":
        return 0 if getattr(actual, "_unit", False) else None
    if actual.is_null:
        # NULL fits any parameter; it binds a generic only if nothing else does.
        return 1
    if spec.kind == "generic":
        bound = bindings.get(spec.name)  # type: ignore[arg-type]
        if bound is None or bound.is_null:
            bindings[spec.name] = actual  # type: ignore[index]
            return 0
        if bound == actual:
            return 0
        if t.can_implicitly_cast(actual, bound):
            return 1
        if t.can_implicitly_cast(bound, actual):
            bindings[spec.name] = actual  # type: ignore[index]
            return 1
        return None
    if spec.kind == "decimal":
        if actual.base is BaseType.DECIMAL:
            return 0
        return 2 if actual.is_integral else None
    if spec.kind == "struct":
        return 0 if isinstance(actual, StructType) else None
    if spec.kind == "array":
        return _match(spec.args[0], actual.item, bindings) if isinstance(actual, ArrayType) else None
    if spec.kind == "map":
        if not isinstance(actual, MapType):
            return None
        a = _match(spec.args[0], actual.key, bindings)
        b = _match(spec.args[1], actual.value, bindings)
        return None if a is None or b is None else a + b
    if spec.kind == "type":
        assert spec.type is not None
        if actual == spec.type:
            return 0
        if spec.type.base is BaseType.DECIMAL and actual.base is BaseType.DECIMAL:
            return 1
        if t.can_implicitly_cast(actual, spec.type):
            return 1 + _distance(actual, spec.type)
        return None
    return None


def _distance(a: SqlType, b: SqlType) -> int:
    order = [BaseType.INTEGER, BaseType.BIGINT, BaseType.DECIMAL, BaseType.DOUBLE]
    if a.base in order and b.base in order:
        return order.index(b.base) - order.index(a.base)
    return 0


def _substitute(spec: Spec, bindings: dict[str, SqlType]) -> SqlType | None:
    """The concrete type of ``spec`` under ``bindings`` (None when something is unbound)."""
    if spec.kind == "type":
        return spec.type
    if spec.kind == "generic":
        return bindings.get(spec.name)  # type: ignore[arg-type]
    if spec.kind == "array":
        item = _substitute(spec.args[0], bindings)
        return ArrayType(item) if item is not None else None
    if spec.kind == "map":
        k = _substitute(spec.args[0], bindings)
        v = _substitute(spec.args[1], bindings)
        return MapType(k, v) if k is not None and v is not None else None
    return None


class UnitType(SqlType):
    """The pseudo type of an IntervalUnit argument; matches only INTERVALUNIT params."""

    _unit = True

    def __init__(self) -> None:
        object.__setattr__(self, "base", BaseType.STRING)

    def __str__(self) -> str:
        return "INTERVALUNIT"


INTERVAL_UNIT = UnitType()
