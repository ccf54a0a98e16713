"""Schema compatibility: can a reader schema read what a writer schema wrote?

BACKWARD compatibility of a new schema means the new schema (reader) reads data written with
the old one (writer); FORWARD the other way round; FULL both. ``incompatibilities`` answers
one direction and returns the reasons, in the spirit of Confluent's messages.

- AVRO follows Avro's schema resolution rules (``SchemaCompatibility``): unions, numeric
  promotions (int -> long -> float -> double, string <-> bytes), records matched by unqualified
  name with fields matched by name or alias (a reader field missing from the writer needs a
  default), enums, fixed sizes, arrays and maps.
- JSON schemas are compared structurally: types must agree (integer widens to number),
  properties present on both sides are compared, nullable (``oneOf`` with null) is transparent.
- PROTOBUF messages are compared by field number: a field's wire type must not change, nor
  may a message type be replaced by a scalar.
"""
from __future__ import annotations

import json
from typing import Any

from streamsql.schemaregistry.client import InvalidSchemaError

# ============================================================================== AVRO
_AVRO_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


def parse_avro(text: str | Any) -> Any:
    """An Avro schema (text or parsed JSON) with named references resolved to the very node
    objects they name (so recursive schemas are cyclic graphs)."""
    if isinstance(text, str):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = text.strip()
    else:
        doc = text
    named: dict[str, Any] = {}

    def full(name: str, ns: str | None) -> str:
        return name if "." in name or not ns else f"{ns}.{name}"

    def walk(node: Any, ns: str | None) -> Any:
        if isinstance(node, str):
            if node in _AVRO_PRIMITIVES:
                return {"type": node}
            key = full(node, ns)
            if key in named:
                return named[key]
            if node in named:
                return named[node]
            raise InvalidSchemaError(f"Invalid schema: undefined name {node}")
        if isinstance(node, list):
            return {"type": "union", "branches": [walk(b, ns) for b in node]}
        if not isinstance(node, dict):
            raise InvalidSchemaError(f"Invalid schema: {node!r}")
        t = node.get("type")
        if isinstance(t, (dict, list)):
            return walk(t, ns)
        if t in ("record", "error", "enum", "fixed"):
            name = node.get("name")
            if not isinstance(name, str):
                raise InvalidSchemaError(f"Invalid schema: {t} without a name")
            own_ns = node.get("namespace", ns) if "." not in name else name.rsplit(".", 1)[0]
            fullname = full(name, own_ns)
            out = dict(node)
            out["type"] = "record" if t == "error" else t
            out["fullname"] = fullname
            out["shortname"] = fullname.rsplit(".", 1)[-1]
            named[fullname] = out
            if t in ("record", "error"):
                fields = []
                for f in node.get("fields", []):
                    nf = dict(f)
                    nf["type"] = walk(f["type"], own_ns)
                    fields.append(nf)
                out["fields"] = fields
            return out
        if t == "array":
            out = dict(node)
            out["items"] = walk(node["items"], ns)
            return out
        if t == "map":
            out = dict(node)
            out["values"] = walk(node["values"], ns)
            return out
        if isinstance(t, str):
            if t in _AVRO_PRIMITIVES:
                return dict(node)
            return walk(t, ns)
        raise InvalidSchemaError(f"Invalid schema: {node!r}")

    return walk(doc, None)


def avro_incompatibilities(reader: Any, writer: Any) -> list[str]:
    """Reasons ``reader`` cannot read data written with ``writer`` (parsed with parse_avro)."""
    out: list[str] = []
    _avro_check(reader, writer, "/", out, set())
    return out


def _avro_check(r: dict, w: dict, path: str, out: list[str], seen: set) -> bool:
    key = (id(r), id(w))
    if key in seen:
        return True
    seen.add(key)
    rt, wt = r["type"], w["type"]
    if wt == "union":
        ok = True
        for i, b in enumerate(w["branches"]):
            ok = _avro_check(r, b, f"{path}{i}/", out, seen) and ok
        return ok
    if rt == "union":
        for b in r["branches"]:
            probe: list[str] = []
            if _avro_check(b, w, path, probe, set(seen)):
                return True
        out.append(f"{{errorType:'MISSING_UNION_BRANCH', description:'The new schema is missing a type "
                   f"inside a union field at path '{path}' in the old schema: reader union lacking "
                   f"writer type: {wt.upper()}', additionalInfo:'reader union lacking writer type: {wt.upper()}'}}")
        return False
    if rt != wt:
        if rt in _PROMOTIONS.get(wt, ()):
            return True
        out.append(f"{{errorType:'TYPE_MISMATCH', description:'The type (path '{path}') of a field in the "
                   f"new schema does not match with the old schema', additionalInfo:'reader type: "
                   f"{rt.upper()} not compatible with writer type: {wt.upper()}'}}")
        return False
    if rt in ("record", "enum", "fixed"):
        if r["shortname"] != w["shortname"] and w["fullname"] not in r.get("aliases", ()):
            out.append(f"{{errorType:'NAME_MISMATCH', description:'The name of the schema has changed "
                       f"(path '{path}name')', additionalInfo:'expected: {w['fullname']}'}}")
            return False
    if rt == "record":
        ok = True
        wfields = {f["name"]: f for f in w["fields"]}
        for f in r["fields"]:
            wf = wfields.get(f["name"])
            if wf is None:
                for alias in f.get("aliases", ()):
                    wf = wfields.get(alias)
                    if wf is not None:
                        break
            if wf is None:
                if "default" not in f:
                    out.append(f"{{errorType:'READER_FIELD_MISSING_DEFAULT_VALUE', description:'The field "
                               f"'{f['name']}' at path '{path}fields/{f['name']}' in the new schema has no "
                               f"default value and is missing in the old schema', additionalInfo:'{f['name']}'}}")
                    ok = False
                continue
            ok = _avro_check(f["type"], wf["type"], f"{path}fields/{f['name']}/type/", out, seen) and ok
        return ok
    if rt == "enum":
        missing = [s for s in w.get("symbols", ()) if s not in r.get("symbols", ())]
        if missing and "default" not in r:
            out.append(f"{{errorType:'MISSING_ENUM_SYMBOLS', description:'The new schema is missing enum "
                       f"symbols '{missing}' at path '{path}symbols' in the old schema', additionalInfo:'{missing}'}}")
            return False
        return True
    if rt == "fixed":
        if r.get("size") != w.get("size"):
            out.append(f"{{errorType:'FIXED_SIZE_MISMATCH', description:'The size of FIXED type field at path "
                       f"'{path}size' in the new schema does not match with the old schema', "
                       f"additionalInfo:'expected: {w.get('size')}, found: {r.get('size')}'}}")
            return False
        return True
    if rt == "array":
        return _avro_check(r["items"], w["items"], f"{path}items/", out, seen)
    if rt == "map":
        return _avro_check(r["values"], w["values"], f"{path}values/", out, seen)
    return True


# ============================================================================== JSON
def _json_strip_null(node: Any) -> Any:
    if isinstance(node, dict):
        for k in ("oneOf", "anyOf"):
            branches = node.get(k)
            if isinstance(branches, list):
                rest = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
                if len(rest) == 1:
                    return _json_strip_null(rest[0])
        t = node.get("type")
        if isinstance(t, list):
            rest = [x for x in t if x != "null"]
            if len(rest) == 1:
                node = dict(node)
                node["type"] = rest[0]
    return node


def json_incompatibilities(reader: Any, writer: Any, path: str = "#") -> list[str]:
    """Reasons a reader JSON schema rejects what the writer's schema allows (structural)."""
    r, w = _json_strip_null(reader), _json_strip_null(writer)
    if not isinstance(r, dict) or not isinstance(w, dict):
        return []
    rt, wt = r.get("type"), w.get("type")
    if rt is None or wt is None or rt == wt:
        out: list[str] = []
        if rt == "object" or wt == "object":
            rp, wp = r.get("properties") or {}, w.get("properties") or {}
            for name, sub in rp.items():
                if name in wp:
                    out += json_incompatibilities(sub, wp[name], f"{path}/properties/{name}")
            ra, wa = r.get("additionalProperties"), w.get("additionalProperties")
            if isinstance(ra, dict) and isinstance(wa, dict):
                out += json_incompatibilities(ra, wa, f"{path}/additionalProperties")
        if rt == "array" and isinstance(r.get("items"), dict) and isinstance(w.get("items"), dict):
            out += json_incompatibilities(r["items"], w["items"], f"{path}/items")
        return out
    if rt == "number" and wt == "integer":
        return []
    return [f"{{errorType:'TYPE_CHANGED', description:'A type at path '{path}' is different between the "
            f"new schema and the old schema', additionalInfo:'reader type: {rt}, writer type: {wt}'}}"]


# ============================================================================== PROTOBUF
_WIRE = {
    "int32": "varint", "int64": "varint", "uint32": "varint", "uint64": "varint", "bool": "varint",
    "enum": "varint", "sint32": "zigzag32", "sint64": "zigzag64", "fixed32": "fixed32",
    "sfixed32": "fixed32", "float": "fixed32", "fixed64": "fixed64", "sfixed64": "fixed64",
    "double": "fixed64", "string": "bytes", "bytes": "bytes", "message": "message",
}


def protobuf_incompatibilities(reader: Any, writer: Any) -> list[str]:
    """Reasons two parsed protobuf files (``protoparse.ProtoFile``) are not wire compatible:
    the first message of each is compared by field number."""
    out: list[str] = []
    rm, wm = reader.first_message(), writer.first_message()
    if rm is None or wm is None:
        return out
    _proto_check(rm, wm, rm.name, out, set(), reader, writer)
    return out


def _proto_check(r: Any, w: Any, path: str, out: list[str], seen: set, rfile: Any, wfile: Any) -> None:
    if (id(r), id(w)) in seen:
        return
    seen.add((id(r), id(w)))
    wfields = {f.number: f for f in w.all_fields()}
    for f in r.all_fields():
        wf = wfields.get(f.number)
        if wf is None:
            continue
        rk, wk = rfile.kind_of(r, f), wfile.kind_of(w, wf)
        if _WIRE.get(rk, "message") != _WIRE.get(wk, "message"):
            out.append(f"{{errorType:'FIELD_SCALAR_KIND_CHANGED', description:'The kind of a SCALAR field at "
                       f"path '#/{path}/{f.number}' in the new schema does not match its kind in the old "
                       f"schema'}}")
        elif (f.label == "repeated") != (wf.label == "repeated") and not f.is_map and not wf.is_map:
            out.append(f"{{errorType:'FIELD_LABEL_CHANGED', description:'The label of field at path "
                       f"'#/{path}/{f.number}' changed'}}")
        elif rk == "message" and wk == "message":
            rsub, wsub = rfile.resolve(r, f.type), wfile.resolve(w, wf.type)
            if rsub is not None and wsub is not None:
                _proto_check(rsub, wsub, f"{path}/{f.name}", out, seen, rfile, wfile)


# ============================================================================== dispatch
def incompatibilities(schema_type: str, reader: Any, writer: Any) -> list[str]:
    """Why data written with the parsed ``writer`` schema cannot be read with the parsed
    ``reader`` (see ``parsing.parse_schema``)."""
    if schema_type == "AVRO":
        return avro_incompatibilities(reader, writer)
    if schema_type == "JSON":
        return json_incompatibilities(reader, writer)
    if schema_type == "PROTOBUF":
        return protobuf_incompatibilities(reader, writer)
    return []
