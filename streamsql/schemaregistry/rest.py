"""Confluent Schema Registry's REST API over any ``SchemaRegistryClient``, without a server.

``handle(registry, method, path, query, body)`` answers one request with ``(status, json)``:
the dispatch a web server (``streamsql server``, later) mounts under its schema-registry
prefix, and what the tests serve through ``http.server`` to exercise the HTTP client. Errors
are Confluent's ``{"error_code": ..., "message": ...}``.

Endpoints: ``GET /schemas/ids/{id}``, ``GET /schemas/ids/{id}/schema``, ``GET /subjects``,
``GET|POST /subjects/{s}/versions``, ``GET /subjects/{s}/versions/{v}``,
``GET /subjects/{s}/versions/{v}/schema``, ``POST /subjects/{s}`` (lookup),
``DELETE /subjects/{s}``, ``GET|PUT /config``, ``GET|PUT /config/{s}``,
``POST /compatibility/subjects/{s}/versions/{v}``, ``GET /schemas/types``.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from streamsql.schemaregistry.client import (
    SchemaReference,
    SchemaRegistryClient,
    SchemaRegistryError,
    SubjectNotFoundError,
)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def _refs(body: dict) -> tuple[SchemaReference, ...]:
    return tuple(SchemaReference(r["name"], r["subject"], int(r["version"]))
                 for r in body.get("references") or ())


def handle(registry: SchemaRegistryClient, method: str, path: str, query: dict[str, str],
           body: Any) -> tuple[int, Any]:
    """Answer one REST request; see the module docstring."""
    parts = [unquote(p) for p in path.strip("/").split("/") if p]
    try:
        return _dispatch(registry, method.upper(), parts, query, body if isinstance(body, dict) else {})
    except SchemaRegistryError as e:
        return e.status, {"error_code": e.error_code, "message": str(e)}
    except (KeyError, ValueError, TypeError) as e:
        return 422, {"error_code": 422, "message": f"Unprocessable request: {e}"}


def _dispatch(r: SchemaRegistryClient, m: str, p: list[str], q: dict[str, str], body: dict) -> tuple[int, Any]:
    if p == ["schemas", "types"] and m == "GET":
        return 200, ["JSON", "PROTOBUF", "AVRO"]
    if len(p) >= 3 and p[:2] == ["schemas", "ids"] and m == "GET":
        s = r.get_by_id(int(p[2]))
        if p[3:] == ["schema"]:
            return 200, json.loads(s.schema) if s.schema_type != "PROTOBUF" else s.schema
        out = s.to_json()
        out.pop("id", None)
        return 200, out
    if p == ["subjects"] and m == "GET":
        return 200, r.subjects()
    if len(p) >= 2 and p[0] == "subjects":
        subject = p[1]
        if len(p) == 2 and m == "POST":
            found = r.lookup(subject, body.get("schemaType") or "AVRO", body["schema"], _refs(body))
            return 200, found.to_json()
        if len(p) == 2 and m == "DELETE":
            return 200, r.delete_subject(subject, q.get("permanent") == "true")
        if p[2:] == ["versions"] and m == "GET":
            return 200, r.versions(subject)
        if p[2:] == ["versions"] and m == "POST":
            sid = r.register(subject, body.get("schemaType") or "AVRO", body["schema"], _refs(body),
                             body.get("id"))
            return 200, {"id": sid}
        if len(p) >= 4 and p[2] == "versions" and m == "GET":
            s = r.get_version(subject, p[3])
            if p[4:] == ["schema"]:
                return 200, json.loads(s.schema) if s.schema_type != "PROTOBUF" else s.schema
            return 200, s.to_json()
    if p and p[0] == "config":
        subject = p[1] if len(p) > 1 else None
        if m == "GET":
            if subject is not None and q.get("defaultToGlobal") != "true":
                if subject not in r.subjects():
                    raise SubjectNotFoundError(f"Subject '{subject}' not found.")
            return 200, {"compatibilityLevel": r.get_compatibility(subject)}
        if m == "PUT":
            level = str(body["compatibility"]).upper()
            r.set_compatibility(level, subject)
            return 200, {"compatibility": level}
    if len(p) == 5 and p[:2] == ["compatibility", "subjects"] and p[3] == "versions" and m == "POST":
        reasons = r.test_compatibility(p[2], body.get("schemaType") or "AVRO", body["schema"], _refs(body), p[4])
        out: dict[str, Any] = {"is_compatible": not reasons}
        if q.get("verbose") == "true":
            out["messages"] = reasons
        return 200, out
    return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}
