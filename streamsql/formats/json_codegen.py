"""The JSON format's hot path: bytes straight to a row tuple and back, generated per schema.

For one list of columns this module builds a msgspec ``Struct`` type whose fields are the
columns (renamed to their exact names) and compiles two small functions around it:

* decode: ``msgspec.json.Decoder(Optional[Row])`` parses the bytes directly into the typed
  struct, and ``msgspec.structs.astuple`` hands it over as the row tuple; only BYTES, DECIMAL
  and container columns get one generated conversion each (the exact path's own coercers).
  No intermediate dict, no per-field function chain.
* encode: the row tuple becomes a ``Row`` instance (no dict) and msgspec writes it in one call.

The fast path covers the common case only, and hands everything else, unchanged, to the
codec's exact path (``JsonCodec.decode_exact``/``encode_exact``), so semantics and error
messages stay exactly ksqlDB's:

* decode falls back when a field is missing under its exact name (ksqlDB then matches
  upper-cased names), when a value has another JSON type than the column's natural one (the
  coercions: ``"12"`` for an INTEGER, ``1.5`` for a BIGINT, a number for a STRING ...), when an
  integer is out of the column's range, on any malformed JSON and for non-object payloads;
* encode falls back for a DOUBLE that is not finite or whose magnitude is 1e16 or more
  (orjson writes ``1e+16``, msgspec ``1e16``: bytes must not change, a JSON key's bytes pick its
  partition and state), an integer beyond 64 bits, a NULL map key, a lone surrogate; and a
  schema with a container of numbers (ARRAY<DOUBLE>, a STRUCT with a BIGINT ...) is written by
  the exact path for every record.

Each fallback re-does the record from its bytes (or tuple), so a record costs at most one
failed fast attempt more than before. Numbers with a fraction in ``Any`` columns are parsed
exactly (``float_hook=Decimal``) when the schema holds a DECIMAL, as the exact path does.
"""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Callable, Optional, Sequence, Union

import msgspec
import orjson

from streamsql.formats.common import INT_MAX, INT_MIN, LONG_MAX, LONG_MIN
from streamsql.schema import Column
from streamsql.types import BaseType, DecimalType, SqlType, any_type

Decode = Callable[[Any], "tuple | None"]
Encode = Callable[["tuple | None"], "bytes | None"]

_INT32 = Annotated[int, msgspec.Meta(ge=INT_MIN, le=INT_MAX)]
_INT64 = Annotated[int, msgspec.Meta(ge=LONG_MIN, le=LONG_MAX)]

# The JSON type each primitive column takes as-is (no coercion, same value as the exact path).
_FAST_TYPES: dict[BaseType, Any] = {
    BaseType.STRING: str,
    BaseType.BOOLEAN: bool,
    BaseType.INTEGER: _INT32,
    # DATE (days) and TIME (ms of day) are wrapped to 32 bits by the exact path.
    BaseType.DATE: _INT32,
    BaseType.TIME: _INT32,
    BaseType.BIGINT: _INT64,
    BaseType.TIMESTAMP: _INT64,
    # msgspec turns a JSON integer into the nearest double, as float(int) does.
    BaseType.DOUBLE: float,
    # Base64 text: decoded by the generated code.
    BaseType.BYTES: str,
}

# What the msgspec call may raise on data it does not take (the exact path then decides).
_DECODE_MISS = (msgspec.MsgspecError, ValueError, TypeError, RecursionError)
_ENCODE_MISS = (msgspec.MsgspecError, ValueError, TypeError, OverflowError,
                orjson.JSONEncodeError)
# Below this magnitude orjson and msgspec write a double's digits the same way.
_DOUBLE_LIMIT = 1e16


def _row_struct(columns: Sequence[Column], types: Sequence[Any] | None) -> type:
    """A msgspec Struct with one nullable field per column, named as the column.

    Fields are ``f0``, ``f1`` ... renamed to the column names, which need not be identifiers.
    With ``types`` (decoding) a field missing from the JSON is left UNSET rather than failing
    (an exception per record would make a case-insensitive match three times as dear).
    Instances hold no reference cycles, so they stay out of the garbage collector.
    """
    if types is None:
        fields: list[Any] = [(f"f{i}", Any) for i in range(len(columns))]
    else:
        fields = [(f"f{i}", t if t is Any else Union[t, None, msgspec.UnsetType],  # noqa: UP007
                   msgspec.UNSET) for i, t in enumerate(types)]
    rename = {f"f{i}": c.name for i, c in enumerate(columns)}
    return msgspec.defstruct("JsonRow", fields, rename=rename, gc=False)


def _distinct(columns: Sequence[Column]) -> bool:
    """Whether the columns can be a struct's fields: distinct names (a struct cannot have two
    fields of one name) that msgspec takes as renamed fields (no backslash, double quote or
    control character). The exact path copes with whatever it is given."""
    names = [c.name for c in columns]
    return len(set(names)) == len(names) and not any(_UNFIT_NAME.search(n) for n in names)


_UNFIT_NAME = re.compile(r'[\\"\x00-\x1f]')


def _compile(lines: list[str], ns: dict[str, Any], name: str) -> Callable[..., Any]:
    exec(compile("\n".join(lines) + "\n", f"<json {name}>", "exec"), ns)  # noqa: S102 - ours
    return ns[name]


def fast_decoder(columns: Sequence[Column], unwrapped: bool, slow: Decode,
                 coercer: Callable[[SqlType], Callable[[Any], Any]],
                 b64decode: Callable[[str], bytes], bad_data: tuple[type[BaseException], ...],
                 object_decoder: Callable[[dict], tuple] | None = None) -> Decode:
    """The generated decode for ``columns`` (see the module docstring). ``slow`` is the exact
    path; ``coercer`` gives the exact path's conversion of a parsed value of a SQL type, used
    for container columns; ``bad_data`` is what a conversion raises on bad data (then
    ``slow`` decides and words the error). ``object_decoder``, the exact path's own
    matching of an orjson-parsed object, serves a field missing under its exact name (field
    names in lower case: common) without the rest of the exact path's calls."""
    if not _distinct(columns):
        return slow
    exact = any(any_type(c.type, lambda x: isinstance(x, DecimalType)) for c in columns)
    ns: dict[str, Any] = {"_slow": slow, "_MISS": _DECODE_MISS, "_BAD": bad_data,
                          "_astuple": msgspec.structs.astuple, "_b64": b64decode}
    types = []
    convs: list[str | None] = []
    for i, c in enumerate(columns):
        fast = _FAST_TYPES.get(c.type.base) if c.type.is_primitive else None
        if fast is None:
            # DECIMAL and containers: parsed generically, converted by the exact path's coercer.
            types.append(Any)
            ns[f"_c{i}"] = coercer(c.type)
            convs.append(f"_c{i}")
        else:
            types.append(fast)
            convs.append("_b64" if c.type.base is BaseType.BYTES else None)
    if unwrapped:
        dec_type: Any = Optional[types[0]]  # noqa: UP007
    else:
        dec_type = Optional[_row_struct(columns, types)]  # noqa: UP007
    ns["_dec"] = (msgspec.json.Decoder(dec_type, float_hook=Decimal) if exact
                  else msgspec.json.Decoder(dec_type)).decode

    L = ["def decode(data):",
         "    if data is None:",
         "        return None",
         "    try:",
         "        o = _dec(data)",
         "    except _MISS:",
         "        return _slow(data)",
         "    if o is None:",
         "        return None"]
    if unwrapped:
        if convs[0] is None:
            L.append("    return (o,)")
        else:
            L += ["    try:",
                  f"        return ({convs[0]}(o),)",
                  "    except _BAD:",
                  "        return _slow(data)"]
    else:
        if columns:
            # A field not there under its exact name: the exact path matches upper-cased names.
            ns["_U"] = msgspec.UNSET
            L.append("    if " + " or ".join(f"o.f{i} is _U" for i in range(len(columns))) + ":")
            if object_decoder is not None and not exact:
                # What the exact path does when orjson parses and nothing raises.
                ns["_oloads"], ns["_dobj"] = orjson.loads, object_decoder
                L += ["        try:",
                      "            return _dobj(_oloads(data))",
                      "        except _BAD:",
                      "            pass"]
            L.append("        return _slow(data)")
        if all(cv is None for cv in convs):
            L.append("    return _astuple(o)")
            return _compile(L, ns, "decode")
        names = [f"v{i}" for i in range(len(columns))]
        L.append("    " + "".join(f"{n}, " for n in names) + "= _astuple(o)")
        items = "".join((f"{n}, " if cv is None else f"None if {n} is None else {cv}({n}), ")
                        for n, cv in zip(names, convs))
        L += ["    try:",
              f"        return ({items})",
              "    except _BAD:",
              "        return _slow(data)"]
    return _compile(L, ns, "decode")


def _draw(d: Any) -> Any:
    """DECIMAL as the exact path writes it: a number with the type's scale, no exponent, no
    negative zero (Java has none)."""
    if d.__class__ is not Decimal:
        return d
    if not d:
        d = abs(d)
    return msgspec.Raw(format(d, "f").encode("ascii"))


_INTEGRAL = (BaseType.INTEGER, BaseType.BIGINT, BaseType.DATE, BaseType.TIME, BaseType.TIMESTAMP)
# Inside a container msgspec would write these differently from the exact path (no guard
# there): a double as 1e16 or NaN as null, a DECIMAL as a string, an integer beyond 64 bits.
_NOT_IN_CONTAINERS = frozenset(_INTEGRAL + (BaseType.DOUBLE, BaseType.DECIMAL))


def fast_encoder(columns: Sequence[Column], unwrapped: bool, slow: Encode) -> Encode | None:
    """The generated encode for ``columns`` (see the module docstring), or None when a
    container column holds numbers: the exact path (one orjson call, itself generated) is then
    both exact and faster than splicing each container in separately."""
    if not _distinct(columns) or any(
            not c.type.is_primitive and any_type(c.type, lambda x: x.base in _NOT_IN_CONTAINERS)
            for c in columns):
        return None
    ns: dict[str, Any] = {"_slow": slow, "_MISS": _ENCODE_MISS, "_draw": _draw,
                          "_enc": msgspec.json.Encoder().encode}
    names = [f"v{i}" for i in range(len(columns))]
    guards = []
    args = []
    for n, c in zip(names, columns):
        base = c.type.base
        if base is BaseType.DOUBLE:
            # Also false for NaN and the infinities, which the exact path writes as strings.
            guards.append(f"({n} is None or {-_DOUBLE_LIMIT!r} < {n} < {_DOUBLE_LIMIT!r})")
        elif base in _INTEGRAL:
            # msgspec writes any integer; orjson, hence the exact path, refuses beyond 64 bits.
            guards.append(f"({n} is None or {LONG_MIN} <= {n} <= {LONG_MAX})")
        args.append(f"None if {n} is None else _draw({n})" if base is BaseType.DECIMAL else n)
    L = ["def encode(values):",
         "    if values is None:",
         "        return None",
         "    try:"]
    if unwrapped:
        L += ["        (v0,) = values",
              # A null unwrapped value is written as a null payload, as ksqlDB does.
              "        if v0 is None:",
              "            return None"]
        if guards:
            L += [f"        if not {guards[0]}:", "            return _slow(values)"]
        L.append(f"        return _enc({args[0]})")
    else:
        ns["_Row"] = _row_struct(columns, None)
        if not guards and args == names:
            L.append("        return _enc(_Row(*values))")
        else:
            L.append("        " + "".join(f"{n}, " for n in names) + "= values")
            if guards:
                L += [f"        if not ({' and '.join(guards)}):",
                      "            return _slow(values)"]
            L.append(f"        return _enc(_Row({', '.join(args)}))")
    L += ["    except _MISS:",
          "        return _slow(values)"]
    return _compile(L, ns, "encode")
