"""Generated Avro binary readers and writers: bytes straight to row tuples and back.

fastavro reads a record into a dict and resolves unions per datum; on the hot path a codec
only needs "these bytes -> this tuple of SQL values" for one fixed writer schema. This module
writes the Python source of exactly that function for a (parsed, resolved) Avro schema:
fields are read in order with inlined varint/zigzag decoding, nullable unions become one
byte test, maps written as ``MapEntry`` arrays come out as dicts, decimals as ``Decimal``,
date/time/timestamp as the ints streamsql uses. Writers are the mirror image, appending to
one ``bytearray``.

Recursive schemas are not generated (``Unsupported``); the caller falls back to fastavro.
"""
from __future__ import annotations

import struct
from decimal import Decimal
from typing import Any, Callable

from streamsql.formats.common import CoercionError


class Unsupported(Exception):
    """The schema needs the generic reader (recursive named types)."""


_F = struct.Struct("<f")
_D = struct.Struct("<d")


def _decimal(unscaled: bytes, scale: int) -> Decimal:
    return Decimal(int.from_bytes(unscaled, "big", signed=True)).scaleb(-scale)


def _unscaled(v: Decimal, scale: int) -> bytes:
    n = int(v.scaleb(scale).to_integral_value())
    if Decimal(n).scaleb(-scale) != v:
        raise CoercionError(f"Cannot write {v} with scale {scale} without rounding")
    return n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True)


class _Gen:
    """Source builder shared by the reader and writer generators."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {"_F": _F, "_D": _D, "_decimal": _decimal, "_unscaled": _unscaled,
                                   "CoercionError": CoercionError}
        self.helpers: list[str] = []
        self.counter = 0
        self.stack: list[int] = []

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def const(self, value: Any, prefix: str = "k") -> str:
        n = self.name(prefix)
        self.ns[n] = value
        return n

    def enter(self, node: dict) -> None:
        if id(node) in self.stack:
            raise Unsupported("recursive schema")
        self.stack.append(id(node))

    def leave(self) -> None:
        self.stack.pop()


# ===================================================================================== reading
def _read_varint(lines: list[str], ind: str, target: str) -> None:
    """Inline: zigzag varint at data[pos] into ``target``."""
    lines += [
        f"{ind}b = data[pos]; pos += 1",
        f"{ind}if b < 128:",
        f"{ind}    {target} = (b >> 1) ^ -(b & 1)",
        f"{ind}else:",
        f"{ind}    n = b & 127; s = 7",
        f"{ind}    while True:",
        f"{ind}        b = data[pos]; pos += 1",
        f"{ind}        n |= (b & 127) << s; s += 7",
        f"{ind}        if b < 128: break",
        f"{ind}    {target} = (n >> 1) ^ -(n & 1)",
    ]


def _is_map_entry(node: dict) -> bool:
    from streamsql.formats.avro import _is_map_entry as check

    return check(node)


def _read_value(g: _Gen, node: dict, lines: list[str], ind: str, target: str) -> None:
    """Inline code reading one value of ``node`` into ``target`` (SQL representation)."""
    t = node["type"]
    logical = node.get("logicalType")
    if t == "null":
        lines.append(f"{ind}{target} = None")
    elif t == "boolean":
        lines.append(f"{ind}{target} = data[pos] == 1; pos += 1")
    elif t in ("int", "long"):
        _read_varint(lines, ind, target)
    elif t == "float":
        lines.append(f"{ind}{target} = _F.unpack_from(data, pos)[0]; pos += 4")
    elif t == "double":
        lines.append(f"{ind}{target} = _D.unpack_from(data, pos)[0]; pos += 8")
    elif t in ("string", "bytes"):
        _read_varint(lines, ind, "ln")
        lines.append(f"{ind}if ln < 0 or pos + ln > len(data): raise ValueError('bad length')")
        if t == "string" and logical != "decimal":
            lines.append(f"{ind}{target} = data[pos:pos + ln].decode(); pos += ln")
        elif logical == "decimal":
            lines.append(f"{ind}{target} = _decimal(data[pos:pos + ln], {int(node.get('scale', 0))}); pos += ln")
        else:
            lines.append(f"{ind}{target} = data[pos:pos + ln]; pos += ln")
    elif t == "fixed":
        size = int(node["size"])
        if logical == "decimal":
            lines.append(f"{ind}{target} = _decimal(data[pos:pos + {size}], {int(node.get('scale', 0))}); pos += {size}")
        else:
            lines.append(f"{ind}{target} = data[pos:pos + {size}]; pos += {size}")
        lines.append(f"{ind}if pos > len(data): raise ValueError('truncated')")
    elif t == "enum":
        symbols = g.const(tuple(node["symbols"]), "sym")
        _read_varint(lines, ind, "ix")
        lines.append(f"{ind}{target} = {symbols}[ix]")
    elif t == "union":
        _read_union(g, node, lines, ind, target)
    else:
        fn = _helper_reader(g, node)
        lines.append(f"{ind}{target}, pos = {fn}(data, pos)")


def _read_union(g: _Gen, node: dict, lines: list[str], ind: str, target: str) -> None:
    branches = node["branches"]
    non_null = [(i, b) for i, b in enumerate(branches) if b["type"] != "null"]
    if len(non_null) == 1 and len(branches) <= 2 and non_null[0][0] < 64:
        i, b = non_null[0]
        # Branch indexes below 64 are one zigzag byte: 2*i.
        lines.append(f"{ind}u = data[pos]; pos += 1")
        lines.append(f"{ind}if u == {2 * i}:")
        _read_value(g, b, lines, ind + "    ", target)
        if len(branches) == 2:
            lines.append(f"{ind}elif u == {2 * (1 - i)}:")
            lines.append(f"{ind}    {target} = None")
        lines.append(f"{ind}else:")
        lines.append(f"{ind}    raise ValueError('invalid union index')")
        return
    if len(non_null) == 1:
        i, b = non_null[0]
        _read_varint(lines, ind, "u")
        lines.append(f"{ind}if u == {i}:")
        _read_value(g, b, lines, ind + "    ", target)
        lines.append(f"{ind}else:")
        lines.append(f"{ind}    {target} = None")
        return
    # Several types: Connect's struct with one field per branch.
    from streamsql.formats.avro import _branch_name

    names = [_branch_name(b) for _, b in non_null]
    empty = g.const(dict.fromkeys(names), "empty")
    _read_varint(lines, ind, "u")
    first = True
    for (i, b), name in zip(non_null, names):
        lines.append(f"{ind}{'if' if first else 'elif'} u == {i}:")
        first = False
        tmp = g.name("x")
        _read_value(g, b, lines, ind + "    ", tmp)
        lines.append(f"{ind}    {target} = dict({empty}); {target}[{name!r}] = {tmp}")
    lines.append(f"{ind}else:")
    lines.append(f"{ind}    {target} = None")


def _helper_reader(g: _Gen, node: dict) -> str:
    """A helper function (data, pos) -> (value, pos) for records, arrays and maps."""
    g.enter(node)
    fn = g.name("r")
    lines = [f"def {fn}(data, pos):"]
    t = node["type"]
    if t == "record":
        names = []
        for f in node["fields"]:
            var = g.name("f")
            _read_value(g, f["type"], lines, "    ", var)
            names.append((f["name"], var))
        lines.append("    return {" + ", ".join(f"{n!r}: {v}" for n, v in names) + "}, pos")
    elif t in ("array", "map"):
        entry = t == "array" and _is_map_entry(node)
        lines.append("    out = {}" if (t == "map" or entry) else "    out = []")
        lines.append("    while True:")
        _read_varint(lines, "        ", "cnt")
        lines.append("        if cnt == 0: break")
        lines.append("        if cnt < 0:")
        lines.append("            cnt = -cnt")
        _read_varint(lines, "            ", "_sz")
        lines.append("        for _ in range(cnt):")
        if entry:
            kf, vf = node["items"]["fields"]
            _read_value(g, kf["type"], lines, "            ", "key")
            _read_value(g, vf["type"], lines, "            ", "val")
            lines.append("            out[key] = val")
        elif t == "map":
            _read_varint(lines, "            ", "ln")
            lines.append("            key = data[pos:pos + ln].decode(); pos += ln")
            _read_value(g, node["values"], lines, "            ", "val")
            lines.append("            out[key] = val")
        else:
            _read_value(g, node["items"], lines, "            ", "val")
            lines.append("            out.append(val)")
        lines.append("    return out, pos")
    else:
        raise Unsupported(t)
    g.leave()
    g.helpers.append("\n".join(lines))
    return fn


def row_reader(node: dict, skip: int) -> Callable[[bytes], Any]:
    """bytes (after ``skip`` header bytes) -> tuple of a record's fields, or the single value
    of a non-record schema. Raises on truncated or malformed input."""
    g = _Gen()
    lines = ["def read(data):", f"    pos = {skip}"]
    if node["type"] == "record":
        g.enter(node)
        names = []
        for f in node["fields"]:
            var = g.name("f")
            _read_value(g, f["type"], lines, "    ", var)
            names.append(var)
        g.leave()
        lines.append("    return (" + "".join(v + ", " for v in names) + ")")
    else:
        _read_value(g, node, lines, "    ", "v")
        lines.append("    return v")
    src = "\n\n".join(g.helpers + ["\n".join(lines)])
    exec(compile(src, "<avro reader>", "exec"), g.ns)  # noqa: S102 - generated from a parsed schema
    return g.ns["read"]


# ===================================================================================== writing
def _write_varint(lines: list[str], ind: str, expr: str, bits: int) -> None:
    lines += [
        f"{ind}n = {expr}",
        f"{ind}n = (n << 1) ^ (n >> {bits - 1})",
        f"{ind}while n > 127:",
        f"{ind}    out.append((n & 127) | 128); n >>= 7",
        f"{ind}out.append(n)",
    ]


def _default_for(node: dict, default: Any) -> Any:
    """A field default (JSON form) as the SQL value the writer takes."""
    t = node["type"]
    if t == "union":
        return _default_for(node["branches"][0], default)
    if default is None:
        return None
    if t in ("bytes", "fixed") and node.get("logicalType") != "decimal" and isinstance(default, str):
        return default.encode("latin-1")
    if t in ("bytes", "fixed") and node.get("logicalType") == "decimal" and isinstance(default, str):
        return _decimal(default.encode("latin-1"), int(node.get("scale", 0)))
    if t == "array" and _is_map_entry(node) and isinstance(default, list):
        return {e.get("key"): e.get("value") for e in default}
    return default


def _write_value(g: _Gen, node: dict, lines: list[str], ind: str, expr: str) -> None:
    """Inline code writing the non-null SQL value ``expr`` as ``node``."""
    t = node["type"]
    logical = node.get("logicalType")
    if t == "null":
        return
    if t == "boolean":
        lines.append(f"{ind}out.append(1 if {expr} else 0)")
    elif t == "int":
        lines.append(f"{ind}if not -2147483648 <= {expr} <= 2147483647: raise CoercionError('int out of range')")
        _write_varint(lines, ind, expr, 32)
    elif t == "long":
        lines.append(f"{ind}if not -9223372036854775808 <= {expr} <= 9223372036854775807: "
                     f"raise CoercionError('long out of range')")
        _write_varint(lines, ind, expr, 64)
    elif t == "float":
        lines.append(f"{ind}out += _F.pack({expr})")
    elif t == "double":
        lines.append(f"{ind}out += _D.pack({expr})")
    elif t in ("string", "bytes") or (t == "fixed" and logical == "decimal"):
        if logical == "decimal":
            lines.append(f"{ind}bb = _unscaled({expr}, {int(node.get('scale', 0))})")
            if t == "fixed":
                size = int(node["size"])
                lines.append(f"{ind}bb = (b'\\xff' if bb[0] & 128 else b'\\x00') * ({size} - len(bb)) + bb")
                lines.append(f"{ind}out += bb")
                return
        elif t == "string":
            lines.append(f"{ind}bb = {expr}.encode()")
        else:
            lines.append(f"{ind}bb = {expr}")
        _write_varint(lines, ind, "len(bb)", 64)
        lines.append(f"{ind}out += bb")
    elif t == "fixed":
        lines.append(f"{ind}if len({expr}) != {int(node['size'])}: raise CoercionError('wrong size for fixed')")
        lines.append(f"{ind}out += {expr}")
    elif t == "enum":
        index = g.const({s: i for i, s in enumerate(node["symbols"])}, "sym")
        lines.append(f"{ind}ix = {index}.get({expr})")
        lines.append(f"{ind}if ix is None: raise CoercionError('not an enum symbol: %r' % ({expr},))")
        _write_varint(lines, ind, "ix", 64)
    elif t == "union":
        _write_union(g, node, lines, ind, expr)
    else:
        fn = _helper_writer(g, node)
        lines.append(f"{ind}{fn}(out, {expr})")


def _write_union(g: _Gen, node: dict, lines: list[str], ind: str, expr: str) -> None:
    branches = node["branches"]
    non_null = [(i, b) for i, b in enumerate(branches) if b["type"] != "null"]
    if len(non_null) == 1:
        i, b = non_null[0]
        _write_varint(lines, ind, str(i), 64)
        _write_value(g, b, lines, ind, expr)
        return
    from streamsql.formats.avro import _branch_name

    first = True
    for i, b in non_null:
        name = _branch_name(b)
        tmp = g.name("x")
        lines.append(f"{ind}{'if' if first else 'elif'} ({tmp} := {expr}.get({name!r})) is not None:")
        first = False
        _write_varint(lines, ind + "    ", str(i), 64)
        _write_value(g, b, lines, ind + "    ", tmp)
    null = [i for i, b in enumerate(branches) if b["type"] == "null"]
    lines.append(f"{ind}else:")
    if null:
        _write_varint(lines, ind + "    ", str(null[0]), 64)
    else:
        lines.append(f"{ind}    raise CoercionError('no union branch set')")


def _write_field(g: _Gen, field_node: dict, has_default: bool, default: Any, lines: list[str], ind: str,
                 expr: str, name: str) -> None:
    """Write a possibly-null value: nullable unions write null, others their default."""
    t = field_node["type"]
    nullable = t == "null" or (t == "union" and any(b["type"] == "null" for b in field_node["branches"]))
    if nullable and t == "union":
        branches = field_node["branches"]
        null_index = next(i for i, b in enumerate(branches) if b["type"] == "null")
        lines.append(f"{ind}if {expr} is None:")
        _write_varint(lines, ind + "    ", str(null_index), 64)
        lines.append(f"{ind}else:")
        _write_value(g, field_node, lines, ind + "    ", expr)
        return
    if t == "null":
        return
    lines.append(f"{ind}if {expr} is None:")
    if has_default and default is not None:
        lines.append(f"{ind}    {expr} = {g.const(_default_for(field_node, default), 'dflt')}")
    else:
        lines.append(f"{ind}    raise CoercionError('null value for non-nullable field {name}')")
    _write_value(g, field_node, lines, ind, expr)


def _helper_writer(g: _Gen, node: dict) -> str:
    g.enter(node)
    fn = g.name("w")
    lines = [f"def {fn}(out, v):"]
    t = node["type"]
    if t == "record":
        for f in node["fields"]:
            var = g.name("f")
            lines.append(f"    {var} = v.get({f['name']!r})")
            _write_field(g, f["type"], "default" in f, f.get("default"), lines, "    ", var, f["name"])
    elif t in ("array", "map"):
        entry = t == "array" and _is_map_entry(node)
        lines.append("    if v:")
        _write_varint(lines, "        ", "len(v)", 64)
        if entry:
            kf, vf = node["items"]["fields"]
            lines.append("        for key, val in v.items():")
            _write_field(g, kf["type"], "default" in kf, kf.get("default"), lines, "            ", "key", "key")
            _write_field(g, vf["type"], "default" in vf, vf.get("default"), lines, "            ", "val", "value")
        elif t == "map":
            lines.append("        for key, val in v.items():")
            _write_value(g, {"type": "string"}, lines, "            ", "key")
            _write_field(g, node["values"], False, None, lines, "            ", "val", "value")
        else:
            lines.append("        for val in v:")
            _write_field(g, node["items"], False, None, lines, "            ", "val", "item")
    else:
        raise Unsupported(t)
    lines.append("    out.append(0)" if t in ("array", "map") else "    return")
    g.leave()
    g.helpers.append("\n".join(lines))
    return fn


def row_writer(node: dict, prefix: bytes) -> Callable[[Any], bytes]:
    """tuple of a record's field values (or the single value of a non-record schema) ->
    ``prefix`` + Avro binary."""
    g = _Gen()
    g.ns["_prefix"] = prefix
    lines = ["def write(values):", "    out = bytearray(_prefix)"]
    if node["type"] == "record":
        g.enter(node)
        fields = node["fields"]
        if fields:
            lines.append("    " + "".join(f"v{i}, " for i in range(len(fields))) + "= values")
        for i, f in enumerate(fields):
            _write_field(g, f["type"], "default" in f, f.get("default"), lines, "    ", f"v{i}", f["name"])
        g.leave()
    else:
        _write_field(g, node, False, None, lines, "    ", "values", "value")
    lines.append("    return bytes(out)")
    src = "\n\n".join(g.helpers + ["\n".join(lines)])
    exec(compile(src, "<avro writer>", "exec"), g.ns)  # noqa: S102 - generated from a parsed schema
    return g.ns["write"]
