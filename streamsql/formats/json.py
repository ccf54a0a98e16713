"""The JSON format, as ksqlDB's KsqlJsonDeserializer/KsqlJsonSerializer read and write it.

Decoding: a value is a JSON object with one field per column (a single column may be
unwrapped with WRAP_SINGLE_VALUE=false; a single key column is always unwrapped). A field is
found by its exact name, else by the upper-cased JSON field names (so ``{"id": 1}`` fills
column ``ID``); a missing field is NULL, extra fields are ignored. Values are coerced as ksqlDB
does: numbers and numeric strings to INTEGER/BIGINT/DOUBLE (numbers are truncated to
integers), anything to STRING (objects as compact JSON text, arrays as ``[a, b]``), numbers and
strings to DECIMAL (which must fit the type exactly), base64 strings to BYTES, numbers or
numeric strings to DATE/TIME/TIMESTAMP; BOOLEAN accepts only JSON booleans.

ksqlDB parses JSON numbers with a fraction as exact decimals. Here orjson parses them as
floats for speed; when such a float meets a column whose result depends on the exact text
(STRING, DECIMAL) the record is parsed again with exact decimals.

Encoding writes declared column and field names in declared order; DECIMAL as a JSON number
with the type's scale (10.50), BYTES as base64, NaN and infinities as the strings ``"NaN"``,
``"Infinity"``, ``"-Infinity"`` (Jackson's default), a null unwrapped value as a null payload.

Two paths give the same results: ``JsonCodec.decode``/``encode`` are generated per schema
(json_codegen.py: msgspec straight between bytes and the row tuple, for records whose fields
carry their exact names and natural JSON types) and hand anything else to the exact path
here (``decode_exact``/``encode_exact``), which every rule above describes.

Errors: SerdeError("Failed to deserialize value from topic: T. Can't convert type.
sourceType: TextNode, requiredType: BOOLEAN") and the like; the topic is known when the caller
passes ``("KAFKA_TOPIC", name)`` in ``FormatOptions.extra``.
"""
from __future__ import annotations

import json as _stdjson
import math
from decimal import Decimal
from typing import Any, Callable, Sequence

import orjson

from streamsql.errors import KsqlException
from streamsql.formats.base import Codec, Format, FormatOptions, SerdeError
from streamsql.formats.common import (
    INT_MAX,
    INT_MIN,
    LONG_MAX,
    LONG_MIN,
    CoercionError,
    b64decode,
    b64encode,
    check_no_map_keys,
    check_wrapping,
    decimal_fitter,
    deserialize_prefix,
    parse_java_decimal,
    parse_java_double,
    parse_java_int,
    parse_java_long,
    schema_not_supported,
    serialize_prefix,
    topic_of,
    wrap_int32,
    wrap_int64,
)
from streamsql.formats.json_codegen import fast_decoder, fast_encoder
from streamsql.schema import Column
from streamsql.types import (
    ArrayType,
    BaseType,
    DecimalType,
    MapType,
    SqlType,
    StructType,
    any_type,
)

Coercer = Callable[[Any], Any]

_MISSING = object()
_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError
_JSONEncodeError = orjson.JSONEncodeError
# What a per-record conversion may raise on bad data (anything else is a bug and propagates).
_BAD_DATA = (CoercionError, ValueError, TypeError, OverflowError, ArithmeticError)


class _Reparse(Exception):
    """A float met a coercion that needs the number's exact text: parse again exactly."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"Non-standard token '{name}'")


def exact_loads(data: bytes) -> Any:
    """Parse JSON keeping numbers with a fraction exact (Decimal), as ksqlDB's Jackson mapper
    with USE_BIG_DECIMAL_FOR_FLOATS does. Raises CoercionError on invalid JSON."""
    try:
        return _stdjson.loads(data, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise CoercionError(f"Invalid JSON: {e}") from e


def _fast_loads(data: bytes) -> Any:
    try:
        return _loads(data)
    except _JSONDecodeError:
        # orjson refuses some valid documents (numbers out of double range, other
        # encodings); the exact parser decides.
        return exact_loads(data)


def _default(o: Any) -> Any:
    """orjson fallback: DECIMAL as a number with its scale, BYTES as base64."""
    if isinstance(o, Decimal):
        if not o:
            o = abs(o)  # Java has no negative zero decimal
        return orjson.Fragment(format(o, "f"))
    if isinstance(o, (bytes, bytearray, memoryview)):
        return b64encode(bytes(o))
    raise TypeError(f"Type is not JSON serializable: {type(o).__name__}")


def _dumps_any(obj: Any) -> bytes:
    try:
        return _dumps(obj, default=_default)
    except _JSONEncodeError:
        # Integers beyond 64 bits: the standard library writes them.
        return _stdjson.dumps(obj, separators=(",", ":"), ensure_ascii=False,
                              default=_std_default).encode("utf-8")


def _std_default(o: Any) -> Any:
    if isinstance(o, (bytes, bytearray, memoryview)):
        return b64encode(bytes(o))
    raise TypeError(f"Type is not JSON serializable: {type(o).__name__}")


# -- decoding: one coercer per type, built once --------------------------------------------------

def node_type(v: Any) -> str:
    """The Jackson node class ksqlDB names in 'Can't convert type' messages."""
    cls = v.__class__
    if cls is str:
        return "TextNode"
    if cls is bool:
        return "BooleanNode"
    if cls is int:
        if INT_MIN <= v <= INT_MAX:
            return "IntNode"
        if LONG_MIN <= v <= LONG_MAX:
            return "LongNode"
        return "BigIntegerNode"
    if cls is float or cls is Decimal:
        return "DecimalNode"
    if cls is dict:
        return "ObjectNode"
    if cls is list:
        return "ArrayNode"
    return "NullNode" if v is None else cls.__name__


def _cant_convert(v: Any, required: str) -> CoercionError:
    return CoercionError(f"Can't convert type. sourceType: {node_type(v)}, requiredType: {required}")


def _cant_coerce(required: str) -> CoercionError:
    return CoercionError(f"Can't coerce string to type. targetType: {required}")


def _has_decimal(t: SqlType) -> bool:
    return any_type(t, lambda x: isinstance(x, DecimalType))


def _has_float(v: Any) -> bool:
    if v.__class__ is float:
        return True
    if v.__class__ is dict:
        return any(_has_float(x) for x in v.values())
    if v.__class__ is list:
        return any(_has_float(x) for x in v)
    return False


def _as_text(v: Any) -> str:
    """Jackson's ``JsonNode.asText`` of a scalar, and ksqlDB's rendering of containers."""
    cls = v.__class__
    if cls is str:
        return v
    if cls is bool:
        return "true" if v else "false"
    if cls is int or cls is Decimal:
        return str(v)  # Decimal's str is BigDecimal.toString (1.50, 1E+5)
    if v is None:
        return "null"
    if cls is float:
        raise _Reparse()
    if cls is dict:
        if _has_float(v):
            raise _Reparse()
        return _dumps_any(v).decode("utf-8")
    if cls is list:
        return "[" + ", ".join(_as_text(x) for x in v) + "]"
    raise _cant_convert(v, "STRING")


def _coerce_boolean(v: Any) -> bool:
    if v.__class__ is bool:
        return v
    raise _cant_convert(v, "BOOLEAN")


def _coerce_int(v: Any) -> int:
    cls = v.__class__
    if cls is int:
        return v if INT_MIN <= v <= INT_MAX else wrap_int32(v)
    if cls is float or cls is Decimal:
        return wrap_int32(int(v))
    if cls is str:
        try:
            return parse_java_int(v)
        except CoercionError:
            raise _cant_coerce("INTEGER") from None
    raise _cant_convert(v, "INTEGER")


def _long_coercer(required: str) -> Coercer:
    def coerce(v: Any) -> int:
        cls = v.__class__
        if cls is int:
            return v if LONG_MIN <= v <= LONG_MAX else wrap_int64(v)
        if cls is float or cls is Decimal:
            return wrap_int64(int(v))
        if cls is str:
            try:
                return parse_java_long(v)
            except CoercionError:
                raise _cant_coerce(required) from None
        raise _cant_convert(v, required)
    return coerce


def _date_coercer(required: str) -> Coercer:
    """DATE (days) and TIME (ms of day) are ints built from a long, like INTEGER but with
    their own names in messages."""
    as_long = _long_coercer(required)

    def coerce(v: Any) -> int:
        return wrap_int32(as_long(v))
    return coerce


def _coerce_double(v: Any) -> float:
    cls = v.__class__
    if cls is float:
        return v
    if cls is int:
        try:
            return float(v)
        except OverflowError:
            return math.copysign(math.inf, v)
    if cls is Decimal:
        return float(v)
    if cls is str:
        try:
            return parse_java_double(v)
        except CoercionError:
            raise _cant_coerce("DOUBLE") from None
    raise _cant_convert(v, "DOUBLE")


def _decimal_coercer(t: DecimalType) -> Coercer:
    fit = decimal_fitter(t)
    required = str(t)

    def coerce(v: Any) -> Decimal:
        cls = v.__class__
        if cls is Decimal:
            return fit(v)
        if cls is int:
            return fit(Decimal(v))
        if cls is float:
            raise _Reparse()
        if cls is str:
            return fit(parse_java_decimal(v))
        raise _cant_convert(v, required)
    return coerce


def _coerce_bytes(v: Any) -> bytes:
    if v.__class__ is str:
        return b64decode(v)
    raise _cant_convert(v, "BYTES")


def _array_coercer(t: ArrayType) -> Coercer:
    item = coercer(t.item)
    required = str(t)

    def coerce(v: Any) -> list:
        if v.__class__ is not list:
            raise _cant_convert(v, required)
        return [None if x is None else item(x) for x in v]
    return coerce


def _map_coercer(t: MapType) -> Coercer:
    from streamsql.functions.collections import java_hash_order, java_string_hash, table_size_for

    value = coercer(t.value)
    required = str(t)

    def coerce(v: Any) -> dict:
        if v.__class__ is not dict:
            raise _cant_convert(v, required)
        out = {k: (None if x is None else value(x)) for k, x in v.items()}
        if len(out) < 2:
            return out
        # ksqlDB reads a JSON object into ``new HashMap<>(size)``: functions that walk the
        # map (REDUCE, MAP_KEYS...) see that map's iteration order, not the text's.
        return java_hash_order(out, java_string_hash, table_size_for(len(out)))
    return coerce


def _struct_coercer(t: StructType) -> Coercer:
    fields = tuple((f.name, coercer(f.type)) for f in t.fields)
    required = str(t)

    def coerce(v: Any) -> dict:
        if v.__class__ is not dict:
            raise _cant_convert(v, required)
        out = {}
        upper = None
        get = v.get
        for name, c in fields:
            x = get(name, _MISSING)
            if x is _MISSING:
                # ksqlDB matches unquoted (upper-case) field names case-insensitively.
                if upper is None:
                    upper = {k.upper(): y for k, y in v.items()}
                x = upper.get(name)
            out[name] = None if x is None else c(x)
        return out
    return coerce


_PRIMITIVE_COERCERS: dict[BaseType, Coercer] = {
    BaseType.BOOLEAN: _coerce_boolean,
    BaseType.INTEGER: _coerce_int,
    BaseType.BIGINT: _long_coercer("BIGINT"),
    BaseType.DOUBLE: _coerce_double,
    BaseType.STRING: _as_text,
    BaseType.BYTES: _coerce_bytes,
    BaseType.DATE: _date_coercer("DATE"),
    BaseType.TIME: _date_coercer("TIME"),
    BaseType.TIMESTAMP: _long_coercer("TIMESTAMP"),
}


def coercer(t: SqlType) -> Coercer:
    """A function turning a non-null parsed JSON value into the SQL value of type ``t``."""
    if isinstance(t, DecimalType):
        return _decimal_coercer(t)
    if isinstance(t, ArrayType):
        return _array_coercer(t)
    if isinstance(t, MapType):
        return _map_coercer(t)
    if isinstance(t, StructType):
        return _struct_coercer(t)
    try:
        return _PRIMITIVE_COERCERS[t.base]
    except KeyError:
        raise KsqlException(f"The 'JSON' format does not support type '{t.base.value}'") from None


# Values of these Python classes pass through unchanged for the type (inlined fast path).
_PASS_CLASS: dict[BaseType, str] = {
    BaseType.STRING: "str",
    BaseType.BOOLEAN: "bool",
    BaseType.DOUBLE: "float",
}
_INT_RANGE: dict[BaseType, tuple[int, int]] = {
    BaseType.INTEGER: (INT_MIN, INT_MAX),
    BaseType.BIGINT: (LONG_MIN, LONG_MAX),
    BaseType.TIMESTAMP: (LONG_MIN, LONG_MAX),
}


def _inline(var: str, t: SqlType, conv: str) -> str:
    """Source for coercing variable ``var`` of type ``t`` with the fast path inlined."""
    cls = _PASS_CLASS.get(t.base) if t.is_primitive else None
    if cls is not None:
        body = f"({var} if {var}.__class__ is {cls} else {conv}({var}))"
    elif t.base in _INT_RANGE:
        lo, hi = _INT_RANGE[t.base]
        body = f"({var} if {var}.__class__ is int and {lo} <= {var} <= {hi} else {conv}({var}))"
    else:
        body = f"{conv}({var})"
    return f"(None if {var} is None else {body})"


def _object_decoder(columns: Sequence[Column]) -> Callable[[dict], tuple]:
    """Generated code: the fields of a JSON object to a row tuple, one statement per column."""
    ns: dict[str, Any] = {"_M": _MISSING}
    lines = ["def decode_object(obj):", "    get = obj.get"]
    for i, c in enumerate(columns):
        ns[f"n{i}"] = c.name
        ns[f"c{i}"] = coercer(c.type)
        lines.append(f"    v{i} = get(n{i}, _M)")
    if columns:
        missing = " or ".join(f"v{i} is _M" for i in range(len(columns)))
        lines.append(f"    if {missing}:")
        lines.append("        up = {k.upper(): x for k, x in obj.items()}")
        for i in range(len(columns)):
            lines.append(f"        if v{i} is _M: v{i} = up.get(n{i})")
    items = "".join(_inline(f"v{i}", c.type, f"c{i}") + ", " for i, c in enumerate(columns))
    lines.append(f"    return ({items})")
    exec("\n".join(lines), ns)  # noqa: S102 - generated from column names bound as constants
    return ns["decode_object"]


# -- encoding -------------------------------------------------------------------------------------

def _nonfinite(f: float) -> Any:
    if f != f:
        return "NaN"
    return "Infinity" if f > 0 else "-Infinity"


def _encode_double(f: float) -> Any:
    return f if f - f == 0 else _nonfinite(f)


def _needs_conversion(t: SqlType) -> bool:
    """Whether values of ``t`` need a pass before orjson (only doubles, for NaN/Infinity;
    DECIMAL and BYTES go through orjson's default hook)."""
    return any_type(t, lambda x: x.base is BaseType.DOUBLE)


def _identity(v: Any) -> Any:
    return v


def encoder(t: SqlType) -> Callable[[Any], Any]:
    """A function making a non-null SQL value of ``t`` orjson-ready."""
    if not _needs_conversion(t):
        return _identity
    if t.base is BaseType.DOUBLE:
        return _encode_double
    if isinstance(t, ArrayType):
        item = encoder(t.item)
        return lambda v: [None if x is None else item(x) for x in v]
    if isinstance(t, MapType):
        value = encoder(t.value)
        return lambda v: {k: (None if x is None else value(x)) for k, x in v.items()}
    assert isinstance(t, StructType)
    fields = tuple((f.name, encoder(f.type)) for f in t.fields)
    return lambda v: {n: (None if v[n] is None else e(v[n])) for n, e in fields}


def _dumps_null_keys(obj: Any, default: Callable[[Any], Any]) -> bytes:
    """``orjson.dumps`` for a value with a NULL map key, written ``"null"`` as ksqlDB's
    (Jackson's) JSON does; the plain one refuses non-string keys, and is kept for speed."""
    return _dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS)


def _object_encoder(columns: Sequence[Column], dumps: Callable[..., bytes] = _dumps
                    ) -> Callable[[tuple], bytes]:
    """Generated code: a row tuple to JSON object bytes, names bound as constants."""
    ns: dict[str, Any] = {"_dumps": dumps, "_default": _default}
    n = len(columns)
    parts = []
    for i, c in enumerate(columns):
        ns[f"n{i}"] = c.name
        if _needs_conversion(c.type):
            ns[f"e{i}"] = encoder(c.type)
            parts.append(f"n{i}: (None if v{i} is None else e{i}(v{i}))")
        else:
            parts.append(f"n{i}: v{i}")
    unpack = ("    " + "".join(f"v{i}, " for i in range(n)) + "= values") if n else ""
    src = "\n".join([
        "def encode_object(values):",
        unpack,
        "    return _dumps({" + ", ".join(parts) + "}, default=_default)",
    ])
    exec(src, ns)  # noqa: S102 - generated from column names bound as constants
    return ns["encode_object"]


# -- codecs ---------------------------------------------------------------------------------------

class JsonCodec(Codec):
    """JSON codec for one list of columns; ``unwrapped`` for a bare single value."""

    def __init__(self, columns: Sequence[Column], unwrapped: bool, is_key: bool,
                 topic: str | None = None) -> None:
        self.columns = tuple(columns)
        self.unwrapped = unwrapped
        self.is_key = is_key
        self._de_prefix = deserialize_prefix(is_key, topic)
        self._ser_prefix = serialize_prefix(is_key, topic)
        # DECIMAL values need the numbers' exact text: parse exactly at once rather than twice.
        self._loads = exact_loads if any(_has_decimal(c.type) for c in columns) else _fast_loads
        if unwrapped:
            (col,) = self.columns
            self._coerce = coercer(col.type)
            self._encode_one = encoder(col.type)
        else:
            self._decode_object = _object_decoder(self.columns)
            self._encode_object = _object_encoder(self.columns)
            self._row_type = "STRUCT<" + ", ".join(f"`{c.name}` {c.type}" for c in columns) + ">"
        if not (is_key and not self.columns):
            # The hot path: generated per schema, bytes straight to the row tuple and back
            # (json_codegen); anything unusual goes to the exact path below. Instance
            # attributes, so callers that bind ``codec.decode`` call the generated function.
            self.decode = fast_decoder(self.columns, unwrapped, self.decode_exact, coercer,
                                       b64decode, _BAD_DATA + (_Reparse, _JSONDecodeError),
                                       None if unwrapped else self._decode_object)
            self.encode = (fast_encoder(self.columns, unwrapped, self.encode_exact)
                           or self.encode_exact)

    def decode(self, data: bytes | None) -> tuple | None:
        """Decode ``data`` (instances built by ``__init__`` shadow this with the generated
        function; this is the exact path for the ABC and for subclasses)."""
        return self.decode_exact(data)

    def encode(self, values: tuple | None) -> bytes | None:
        """Encode ``values`` (shadowed per instance by the generated function, as decode)."""
        return self.encode_exact(values)

    def decode_exact(self, data: bytes | None) -> tuple | None:
        """The exact path: orjson (or exact decimals) to Python values, then ksqlDB's
        matching and coercions, with its error messages."""
        if data is None:
            return None
        if self.is_key and not self.columns:
            return ()  # a key with no columns: whatever is there is ignored
        try:
            obj = self._loads(data)
            if obj is None:
                return None
            try:
                return self._decode_parsed(obj)
            except _Reparse:
                return self._decode_parsed(exact_loads(data))
        except _BAD_DATA as e:
            raise SerdeError(self._de_prefix + str(e)) from e

    def _decode_parsed(self, obj: Any) -> tuple:
        if self.unwrapped:
            return (self._coerce(obj),)
        if obj.__class__ is not dict:
            raise _cant_convert(obj, self._row_type)
        return self._decode_object(obj)

    def encode_exact(self, values: tuple | None) -> bytes | None:
        """The exact path: orjson with the NaN/DECIMAL/BYTES conversions and NULL map keys."""
        if values is None:
            return None
        try:
            if self.unwrapped:
                (v,) = values
                # A null unwrapped value is written as a null payload, as ksqlDB does.
                return None if v is None else _dumps(self._encode_one(v), default=_default)
            if self.is_key and not self.columns:
                return None
            return self._encode_object(values)
        except (_JSONEncodeError, TypeError, ValueError) as e:
            if "Dict key must be str" in str(e):  # a NULL map key: the rare, slower way
                try:
                    if self.unwrapped:
                        return _dumps_null_keys(self._encode_one(values[0]), _default)
                    return _object_encoder(self.columns, _dumps_null_keys)(values)
                except (_JSONEncodeError, TypeError, ValueError) as again:
                    raise SerdeError(self._ser_prefix + str(again)) from again
            raise SerdeError(self._ser_prefix + str(e)) from e

    def to_json_form(self, data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            return _fast_loads(data)
        except CoercionError:
            # Not JSON at all: show the text, so a reader sees what was written.
            return data.decode("utf-8", "replace")

    def from_json_form(self, obj: Any) -> bytes | None:
        # As written, with no coercion: inputs may be deliberately malformed.
        return None if obj is None else _dumps_any(obj)


def _check_map_keys(t: SqlType) -> None:
    if isinstance(t, MapType):
        if t.key.base is not BaseType.STRING:
            raise KsqlException("JSON only supports MAP types with STRING keys")
        _check_map_keys(t.value)
    elif isinstance(t, ArrayType):
        _check_map_keys(t.item)
    elif isinstance(t, StructType):
        for f in t.fields:
            _check_map_keys(f.type)


class JsonFormat(Format):
    """ksqlDB's JSON format (no schema registry)."""

    name = "JSON"
    supports_wrapping = True

    def unwrapped(self, columns: Sequence[Column], options: FormatOptions, is_key: bool) -> bool:
        """Keys: a single column is always bare. Values: only with WRAP_SINGLE_VALUE=false."""
        if len(columns) != 1:
            return False
        return True if is_key else options.wrap_single_value is False

    def features(self, columns: Sequence[Column], options: FormatOptions,
                 is_key: bool) -> tuple[str, ...]:
        if is_key:
            return ("UNWRAP_SINGLES",) if len(columns) == 1 else ()
        if options.wrap_single_value is None:
            return ()
        return ("WRAP_SINGLES",) if options.wrap_single_value else ("UNWRAP_SINGLES",)

    def validate(self, columns: Sequence[Column], options: FormatOptions, is_key: bool) -> None:
        if is_key:
            check_no_map_keys(columns)
        else:
            check_wrapping(self.name, columns, options.wrap_single_value, True, True)
        for c in columns:
            try:
                _check_map_keys(c.type)
            except KsqlException as e:
                raise schema_not_supported(self.name, columns,
                                           self.features(columns, options, is_key), is_key,
                                           str(e)) from None

    def supports_type(self, type_: SqlType) -> bool:
        try:
            _check_map_keys(type_)
        except KsqlException:
            return False
        return type_.base not in (BaseType.NULL, BaseType.LAMBDA)

    def codec(self, columns: Sequence[Column], options: FormatOptions, is_key: bool) -> Codec:
        return JsonCodec(columns, self.unwrapped(columns, options, is_key), is_key,
                         topic_of(options.extra))
