"""A parser for .proto schema text (proto2 and proto3), as schema registries store it.

The protobuf runtime has no parser for .proto text; this one reads the declarations that carry
data (``syntax``, ``package``, ``import``, messages with fields, ``map<K, V>``, ``oneof``,
proto3 ``optional``, nested messages and enums) and skips what does not (services,
``extend``, ``reserved``, ``extensions``, file and message options). Field options are kept as
parsed values: Confluent's decimal parameters (``(confluent.field_meta) = { params: [...] }``)
live there.

``ProtoFile.to_descriptor_proto(name, resolve_import)`` builds the ``FileDescriptorProto`` that
a ``DescriptorPool`` turns into message classes at run time.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from streamsql.schemaregistry.client import InvalidSchemaError

SCALARS = frozenset({"double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64",
                     "fixed32", "fixed64", "sfixed32", "sfixed64", "bool", "string", "bytes"})

_TOKEN = re.compile(r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<num>[-+]?(?:0[xX][0-9a-fA-F]+|[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?|inf|nan)(?![A-Za-z0-9_]))
  | (?P<id>\.?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<sym>[{}\[\]()<>=;,:.\-+/])
""", re.X | re.S)


@dataclass
class ProtoField:
    """A field as declared. ``type`` is a scalar name or a (possibly qualified) type name;
    map fields have ``is_map`` with ``key_type``/``type`` the value type."""

    name: str
    number: int
    type: str
    label: str = ""  # '', 'optional', 'repeated', 'required'
    is_map: bool = False
    key_type: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    oneof: str | None = None


@dataclass
class ProtoEnum:
    """An enum: value names and numbers in declared order."""

    name: str
    full_name: str
    values: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class ProtoMessage:
    """A message with its fields (oneof members included, in declared order) and nested
    types."""

    name: str
    full_name: str
    fields: list[ProtoField] = field(default_factory=list)
    messages: list["ProtoMessage"] = field(default_factory=list)
    enums: list[ProtoEnum] = field(default_factory=list)
    oneofs: list[str] = field(default_factory=list)
    parent: "ProtoMessage | None" = None

    def all_fields(self) -> list[ProtoField]:
        return self.fields


@dataclass
class ProtoFile:
    """A parsed .proto file."""

    syntax: str = "proto2"
    package: str = ""
    imports: list[str] = field(default_factory=list)
    messages: list[ProtoMessage] = field(default_factory=list)
    enums: list[ProtoEnum] = field(default_factory=list)
    # Types of imported files by full name ('message' or 'enum'), filled by the caller.
    external: dict[str, str] = field(default_factory=dict)

    def first_message(self) -> ProtoMessage | None:
        return self.messages[0] if self.messages else None

    def all_messages(self) -> list[ProtoMessage]:
        out: list[ProtoMessage] = []

        def walk(ms: list[ProtoMessage]) -> None:
            for m in ms:
                out.append(m)
                walk(m.messages)
        walk(self.messages)
        return out

    def local_types(self) -> dict[str, str]:
        """Full names (no leading dot) of the types this file declares -> kind."""
        out: dict[str, str] = {}

        def walk(ms: list[ProtoMessage], es: list[ProtoEnum]) -> None:
            for e in es:
                out[e.full_name] = "enum"
            for m in ms:
                out[m.full_name] = "message"
                walk(m.messages, m.enums)
        walk(self.messages, self.enums)
        return out

    def find_message(self, full_name: str) -> ProtoMessage | None:
        name = full_name.lstrip(".")
        for m in self.all_messages():
            if m.full_name == name:
                return m
        return None

    def message_path(self, full_name: str) -> list[int] | None:
        """Confluent's message indexes of a message (top-level index, then nested ones)."""
        name = full_name.lstrip(".")

        def walk(ms: list[ProtoMessage], prefix: list[int]) -> list[int] | None:
            for i, m in enumerate(ms):
                if m.full_name == name:
                    return prefix + [i]
                found = walk(m.messages, prefix + [i])
                if found is not None:
                    return found
            return None
        return walk(self.messages, [])

    def message_at(self, indexes: list[int]) -> ProtoMessage | None:
        ms = self.messages
        m = None
        for i in indexes:
            if i < 0 or i >= len(ms):
                return None
            m = ms[i]
            ms = m.messages
        return m

    # ------------------------------------------------------------------ name resolution
    def resolve_name(self, scope: ProtoMessage | None, name: str) -> tuple[str, str] | None:
        """(full name, kind) of a type name used inside ``scope``, by protobuf's scoping
        rules (innermost scope outwards, then the package, then imports)."""
        types = {**self.external, **self.local_types()}
        if name.startswith("."):
            n = name[1:]
            return (n, types[n]) if n in types else None
        scopes: list[str] = []
        m = scope
        while m is not None:
            scopes.append(m.full_name)
            m = m.parent
        pkg = self.package
        while True:
            scopes.append(pkg)
            if not pkg:
                break
            pkg = pkg.rsplit(".", 1)[0] if "." in pkg else ""
        first = name.split(".", 1)[0]
        for s in scopes:
            # The first component is looked up first (protobuf resolves partially qualified
            # names by their first part).
            cand_first = f"{s}.{first}" if s else first
            if cand_first in types or any(t.startswith(cand_first + ".") for t in types):
                cand = f"{s}.{name}" if s else name
                if cand in types:
                    return cand, types[cand]
        return None

    def resolve(self, scope: ProtoMessage, name: str) -> ProtoMessage | None:
        found = self.resolve_name(scope, name)
        if found is None or found[1] != "message":
            return None
        return self.find_message(found[0])

    def kind_of(self, scope: ProtoMessage, f: ProtoField) -> str:
        """'message', 'enum' or the scalar name of a field (map fields count as messages)."""
        if f.is_map:
            return "message"
        if f.type in SCALARS:
            return f.type
        found = self.resolve_name(scope, f.type)
        return found[1] if found else "message"

    # ------------------------------------------------------------------ descriptor
    def to_descriptor_proto(self, file_name: str) -> Any:
        """A ``FileDescriptorProto`` for this file (``external`` must list imported types)."""
        from google.protobuf import descriptor_pb2

        fdp = descriptor_pb2.FileDescriptorProto()
        fdp.name = file_name
        if self.package:
            fdp.package = self.package
        fdp.dependency.extend(self.imports)
        fdp.syntax = self.syntax if self.syntax in ("proto2", "proto3") else "proto2"
        for e in self.enums:
            _enum_proto(fdp.enum_type.add(), e)
        for m in self.messages:
            self._message_proto(fdp.message_type.add(), m)
        return fdp

    def _message_proto(self, dp: Any, m: ProtoMessage) -> None:
        from google.protobuf import descriptor_pb2

        FD = descriptor_pb2.FieldDescriptorProto
        dp.name = m.name
        for e in m.enums:
            _enum_proto(dp.enum_type.add(), e)
        for nested in m.messages:
            self._message_proto(dp.nested_type.add(), nested)
        oneof_index: dict[str, int] = {}
        for o in m.oneofs:
            oneof_index[o] = len(dp.oneof_decl)
            dp.oneof_decl.add().name = o
        synthetic: list[tuple[Any, str]] = []
        for f in m.fields:
            fp = dp.field.add()
            fp.name = f.name
            fp.number = f.number
            fp.json_name = _json_name(f.name)
            if f.is_map:
                entry_name = "".join(p[:1].upper() + p[1:] for p in f.name.split("_")) + "Entry"
                entry = dp.nested_type.add()
                entry.name = entry_name
                entry.options.map_entry = True
                for num, fname, ftype in ((1, "key", f.key_type), (2, "value", f.type)):
                    ef = entry.field.add()
                    ef.name, ef.number, ef.json_name = fname, num, fname
                    ef.label = FD.LABEL_OPTIONAL
                    self._set_type(ef, m, ftype)
                fp.label = FD.LABEL_REPEATED
                fp.type = FD.TYPE_MESSAGE
                fp.type_name = f".{m.full_name}.{entry_name}"
                continue
            fp.label = {"repeated": FD.LABEL_REPEATED, "required": FD.LABEL_REQUIRED}.get(
                f.label, FD.LABEL_OPTIONAL)
            self._set_type(fp, m, f.type)
            if f.oneof is not None:
                fp.oneof_index = oneof_index[f.oneof]
            elif f.label == "optional" and self.syntax == "proto3":
                fp.proto3_optional = True
                synthetic.append((fp, "_" + f.name))
            if f.label == "repeated" and self.syntax == "proto2" and f.options.get("packed") is True:
                fp.options.packed = True
        for fp, oname in synthetic:
            fp.oneof_index = len(dp.oneof_decl)
            dp.oneof_decl.add().name = oname

    def _set_type(self, fp: Any, scope: ProtoMessage, type_name: str) -> None:
        from google.protobuf import descriptor_pb2

        FD = descriptor_pb2.FieldDescriptorProto
        if type_name in SCALARS:
            fp.type = getattr(FD, "TYPE_" + type_name.upper())
            return
        found = self.resolve_name(scope, type_name)
        if found is None:
            raise InvalidSchemaError(f"Invalid schema: unknown type {type_name}")
        full, kind = found
        fp.type = FD.TYPE_ENUM if kind == "enum" else FD.TYPE_MESSAGE
        fp.type_name = "." + full


def _enum_proto(ep: Any, e: ProtoEnum) -> None:
    ep.name = e.name
    for name, number in e.values:
        v = ep.value.add()
        v.name, v.number = name, number


def _json_name(name: str) -> str:
    parts = name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


# ==================================================================================== parser
class _Parser:
    def __init__(self, text: str) -> None:
        self.toks: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise InvalidSchemaError(f"Invalid schema: unexpected character {text[pos]!r} at {pos}")
            pos = m.end()
            kind = m.lastgroup
            if kind != "ws":
                self.toks.append((kind, m.group()))
        self.i = 0

    def peek(self, off: int = 0) -> str | None:
        j = self.i + off
        return self.toks[j][1] if j < len(self.toks) else None

    def kind(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def next(self) -> str:
        if self.i >= len(self.toks):
            raise InvalidSchemaError("Invalid schema: unexpected end of schema")
        t = self.toks[self.i][1]
        self.i += 1
        return t

    def expect(self, tok: str) -> None:
        t = self.next()
        if t != tok:
            raise InvalidSchemaError(f"Invalid schema: expected {tok!r}, got {t!r}")

    def accept(self, tok: str) -> bool:
        if self.peek() == tok:
            self.i += 1
            return True
        return False

    def string(self) -> str:
        parts = []
        while self.kind() == "str":
            raw = self.next()
            parts.append(bytes(raw[1:-1], "utf-8").decode("unicode_escape"))
        if not parts:
            raise InvalidSchemaError(f"Invalid schema: expected a string, got {self.peek()!r}")
        return "".join(parts)

    def skip_statement(self) -> None:
        """Skip to the end of a statement or block."""
        depth = 0
        while True:
            t = self.next()
            if t == "{":
                depth += 1
            elif t == "}":
                depth -= 1
                if depth <= 0:
                    self.accept(";")
                    return
            elif t == ";" and depth == 0:
                return

    def value(self) -> Any:
        """An option value: constant, string, identifier or a text-format aggregate."""
        if self.peek() == "{":
            return self.aggregate()
        if self.peek() == "[":
            self.next()
            items = []
            while not self.accept("]"):
                items.append(self.value())
                self.accept(",")
            return items
        if self.kind() == "str":
            return self.string()
        if self.peek() == "-" :
            self.next()
            return -_number(self.next())
        t = self.next()
        if self.toks[self.i - 1][0] == "num":
            return _number(t)
        if t in ("true", "false"):
            return t == "true"
        return t

    def aggregate(self) -> dict[str, Any]:
        self.expect("{")
        out: dict[str, Any] = {}
        while not self.accept("}"):
            key = self.next()
            if key == "[":  # extension name in brackets
                key = self.next()
                self.expect("]")
            self.accept(":")
            v = self.value()
            if key in out:
                prev = out[key]
                out[key] = (prev if isinstance(prev, list) else [prev]) + [v]
            else:
                out[key] = v
            if not self.accept(","):
                self.accept(";")
        return out

    def option_name(self) -> str:
        parts = []
        while True:
            if self.accept("("):
                parts.append("(" + self.next() + ")")
                self.expect(")")
            else:
                parts.append(self.next())
            if not self.accept("."):
                t = self.peek()
                if t is not None and t.startswith(".") and self.kind() == "id":
                    parts.append(self.next()[1:])
                    continue
                break
        return ".".join(parts)

    def field_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.accept("["):
            while not self.accept("]"):
                name = self.option_name()
                self.expect("=")
                opts[name] = self.value()
                self.accept(",")
        return opts


def _number(t: str) -> Any:
    if t in ("inf", "nan"):
        return float(t)
    try:
        return int(t, 0)
    except ValueError:
        return float(t)


def parse_proto(text: str) -> ProtoFile:
    """Parse .proto text; InvalidSchemaError with a reason when it is not valid."""
    p = _Parser(text)
    pf = ProtoFile()
    while p.peek() is not None:
        t = p.next()
        if t == ";":
            continue
        if t == "syntax" or t == "edition":
            p.expect("=")
            pf.syntax = p.string()
            p.expect(";")
        elif t == "package":
            pf.package = p.next()
            p.expect(";")
        elif t == "import":
            if p.peek() in ("public", "weak"):
                p.next()
            pf.imports.append(p.string())
            p.expect(";")
        elif t == "option":
            p.skip_statement()
        elif t == "message":
            pf.messages.append(_parse_message(p, pf, None))
        elif t == "enum":
            pf.enums.append(_parse_enum(p, pf.package))
        elif t in ("service", "extend"):
            p.next()
            p.skip_statement()
        else:
            raise InvalidSchemaError(f"Invalid schema: unexpected {t!r}")
    return pf


def _parse_enum(p: _Parser, prefix: str) -> ProtoEnum:
    name = p.next()
    e = ProtoEnum(name, f"{prefix}.{name}" if prefix else name)
    p.expect("{")
    while not p.accept("}"):
        t = p.peek()
        if t == ";":
            p.next()
        elif t in ("option", "reserved"):
            p.skip_statement()
        else:
            vname = p.next()
            p.expect("=")
            neg = p.accept("-")
            num = _number(p.next())
            p.field_options()
            p.expect(";")
            e.values.append((vname, -num if neg else num))
    return e


def _parse_message(p: _Parser, pf: ProtoFile, parent: ProtoMessage | None) -> ProtoMessage:
    name = p.next()
    prefix = parent.full_name if parent is not None else pf.package
    m = ProtoMessage(name, f"{prefix}.{name}" if prefix else name, parent=parent)
    p.expect("{")
    _parse_body(p, pf, m, None)
    return m


def _parse_body(p: _Parser, pf: ProtoFile, m: ProtoMessage, oneof: str | None) -> None:
    while not p.accept("}"):
        t = p.peek()
        if t == ";":
            p.next()
        elif t == "message" and p.kind() == "id" and p.peek(2) == "{":
            p.next()
            m.messages.append(_parse_message(p, pf, m))
        elif t == "enum" and p.peek(2) == "{":
            p.next()
            m.enums.append(_parse_enum(p, m.full_name))
        elif t == "oneof" and p.peek(2) == "{":
            p.next()
            oname = p.next()
            m.oneofs.append(oname)
            p.expect("{")
            _parse_body(p, pf, m, oname)
        elif t in ("option", "reserved", "extensions") and p.peek(1) not in ("=",):
            p.skip_statement()
        elif t in ("extend",) and p.peek(2) == "{":
            p.next()
            p.next()
            p.skip_statement()
        elif t == "map" and p.peek(1) == "<":
            p.next()
            p.expect("<")
            ktype = p.next()
            p.expect(",")
            vtype = p.next()
            p.expect(">")
            fname = p.next()
            p.expect("=")
            num = _number(p.next())
            opts = p.field_options()
            p.expect(";")
            m.fields.append(ProtoField(fname, num, vtype, "repeated", True, ktype, opts, oneof))
        else:
            label = ""
            if t in ("repeated", "optional", "required") and p.peek(2) != "=":
                label = p.next()
            ftype = p.next()
            if ftype == "group":
                raise InvalidSchemaError("Invalid schema: groups are not supported")
            fname = p.next()
            p.expect("=")
            num = _number(p.next())
            opts = p.field_options()
            p.expect(";")
            m.fields.append(ProtoField(fname, num, ftype, label, False, "", opts, oneof))


# =============================================================================== well known
# Files the registry formats import without references: Confluent's and Google's types.
BUILTIN_FILES: dict[str, str] = {
    "confluent/meta.proto": """
        syntax = "proto3"; package confluent;
        message Meta { string doc = 1; map<string, string> params = 2; repeated string tags = 3; }
    """,
    "confluent/type/decimal.proto": """
        syntax = "proto3"; package confluent.type;
        message Decimal { bytes value = 1; uint32 precision = 2; int32 scale = 3; }
    """,
    "google/type/date.proto": """
        syntax = "proto3"; package google.type;
        message Date { int32 year = 1; int32 month = 2; int32 day = 3; }
    """,
    "google/type/timeofday.proto": """
        syntax = "proto3"; package google.type;
        message TimeOfDay { int32 hours = 1; int32 minutes = 2; int32 seconds = 3; int32 nanos = 4; }
    """,
}


def google_file(name: str) -> Any | None:
    """The FileDescriptorProto of a file the protobuf runtime ships (wrappers, timestamp, ...)."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    try:
        desc = descriptor_pool.Default().FindFileByName(name)
    except KeyError:
        mod = {
            "google/protobuf/wrappers.proto": "wrappers_pb2",
            "google/protobuf/timestamp.proto": "timestamp_pb2",
            "google/protobuf/duration.proto": "duration_pb2",
            "google/protobuf/struct.proto": "struct_pb2",
            "google/protobuf/empty.proto": "empty_pb2",
            "google/protobuf/any.proto": "any_pb2",
            "google/protobuf/descriptor.proto": "descriptor_pb2",
            "google/protobuf/field_mask.proto": "field_mask_pb2",
        }.get(name)
        if mod is None:
            return None
        import importlib

        importlib.import_module(f"google.protobuf.{mod}")
        desc = descriptor_pool.Default().FindFileByName(name)
    fdp = descriptor_pb2.FileDescriptorProto()
    desc.CopyToProto(fdp)
    return fdp


def types_of_descriptor_proto(fdp: Any) -> dict[str, str]:
    """Full names -> kind of the types a FileDescriptorProto declares."""
    out: dict[str, str] = {}
    pkg = fdp.package

    def walk(prefix: str, messages: Any, enums: Any) -> None:
        for e in enums:
            out[f"{prefix}.{e.name}" if prefix else e.name] = "enum"
        for m in messages:
            full = f"{prefix}.{m.name}" if prefix else m.name
            out[full] = "message"
            walk(full, m.nested_type, m.enum_type)
    walk(pkg, fdp.message_type, fdp.enum_type)
    return out


def build_pool(text: str, file_name: str, resolve_import: Callable[[str], str | None]) -> tuple[Any, ProtoFile]:
    """A fresh DescriptorPool holding ``text`` (as ``file_name``) and everything it imports;
    ``resolve_import(name)`` gives the text of an imported file (schema references), None
    for unknown names. Returns the pool and the parsed file."""
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.DescriptorPool()
    added: dict[str, dict[str, str]] = {}

    def add(name: str, source: str | None) -> dict[str, str]:
        if name in added:
            return added[name]
        fdp = None
        if source is None:
            if name in BUILTIN_FILES:
                source = BUILTIN_FILES[name]
            else:
                fdp = google_file(name)
                if fdp is None:
                    source = resolve_import(name)
                    if source is None:
                        raise InvalidSchemaError(f"Invalid schema: cannot resolve import {name!r}")
        if fdp is None:
            pf = parse_proto(source)
            ext: dict[str, str] = {}
            for imp in pf.imports:
                ext.update(add(imp, None))
            pf.external = ext
            fdp = pf.to_descriptor_proto(name)
        else:
            for dep in fdp.dependency:
                add(dep, None)
        pool.Add(fdp)
        types = types_of_descriptor_proto(fdp)
        added[name] = types
        return types

    main = parse_proto(text)
    ext: dict[str, str] = {}
    for imp in main.imports:
        ext.update(add(imp, None))
    main.external = ext
    pool.Add(main.to_descriptor_proto(file_name))
    added[file_name] = main.local_types()
    return pool, main
