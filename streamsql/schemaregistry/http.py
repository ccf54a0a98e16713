"""A ``SchemaRegistryClient`` speaking Confluent Schema Registry's REST API over HTTP.

Used when ``ksql.schema.registry.url`` is set (an external Confluent registry, or a streamsql
server's built-in one). Plain ``urllib`` (no extra dependency); calls are synchronous, like
Confluent's Java client. Schemas by id are immutable and cached; registrations and lookups
are cached per (subject, schema). Basic auth comes from ``user:password@`` in the URL.
Several comma-separated URLs may be given; the first that answers is used.

HTTP errors become the ``SchemaRegistryError`` subclass of their Confluent error code.
"""
from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from streamsql.schemaregistry.client import (
    IncompatibleSchemaError,
    InvalidCompatibilityError,
    InvalidSchemaError,
    RegisteredSchema,
    SchemaNotFoundError,
    SchemaReference,
    SchemaRegistryClient,
    SchemaRegistryError,
    SubjectNotFoundError,
    VersionNotFoundError,
    normalize_schema,
)

log = logging.getLogger(__name__)
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_ERRORS: dict[int, type[SchemaRegistryError]] = {
    40401: SubjectNotFoundError, 40402: VersionNotFoundError, 40403: SchemaNotFoundError,
    409: IncompatibleSchemaError, 42201: InvalidSchemaError, 42203: InvalidCompatibilityError,
}


def _refs_json(references: tuple[SchemaReference, ...]) -> list[dict]:
    return [r.to_json() for r in references]


def _schema_from(doc: dict, schema_id: int | None = None) -> RegisteredSchema:
    refs = tuple(SchemaReference(r["name"], r["subject"], int(r["version"])) for r in doc.get("references") or ())
    return RegisteredSchema(int(doc.get("id", schema_id or 0)), doc.get("schemaType") or "AVRO",
                            doc["schema"], refs, doc.get("subject"), doc.get("version"))


class HttpSchemaRegistryClient(SchemaRegistryClient):
    """See the module docstring."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self._bases: list[str] = []
        self._auth: str | None = None
        for u in url.split(","):
            parts = urlsplit(u.strip())
            if parts.username is not None:
                cred = f"{parts.username}:{parts.password or ''}"
                self._auth = "Basic " + base64.b64encode(cred.encode()).decode()
                netloc = parts.hostname or ""
                if parts.port:
                    netloc += f":{parts.port}"
                parts = parts._replace(netloc=netloc)
            self._bases.append(urlunsplit(parts).rstrip("/"))
        self._timeout = timeout
        self._by_id: dict[int, RegisteredSchema] = {}
        self._registered: dict[tuple[str, str, str, tuple], int] = {}

    # ------------------------------------------------------------------------ transport
    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        last: Exception | None = None
        for base in self._bases:
            req = urllib.request.Request(base + path, data=data, method=method)
            req.add_header("Accept", f"{CONTENT_TYPE}, application/json")
            if data is not None:
                req.add_header("Content-Type", CONTENT_TYPE)
            if self._auth:
                req.add_header("Authorization", self._auth)
            try:
                with urllib.request.urlopen(req, timeout=self._timeout) as resp:  # noqa: S310 - configured URL
                    raw = resp.read()
                    return json.loads(raw) if raw else None
            except urllib.error.HTTPError as e:
                try:
                    doc = json.loads(e.read() or b"{}")
                except ValueError:
                    doc = {}
                code = int(doc.get("error_code") or e.code)
                cls = _ERRORS.get(code, SchemaRegistryError)
                raise cls(str(doc.get("message") or e.reason), code, e.code) from None
            except (urllib.error.URLError, OSError) as e:
                last = e
                log.debug("schema registry %s unreachable: %s", base, e)
        raise SchemaRegistryError(f"Schema registry unreachable: {last}")

    @staticmethod
    def _s(subject: str) -> str:
        return quote(subject, safe="")

    # ----------------------------------------------------------------------------- API
    def register(self, subject: str, schema_type: str, schema: str,
                 references: tuple[SchemaReference, ...] = (), schema_id: int | None = None) -> int:
        key = (subject, schema_type, normalize_schema(schema_type, schema), tuple(references))
        if schema_id is None and key in self._registered:
            return self._registered[key]
        body: dict[str, Any] = {"schema": schema}
        if schema_type != "AVRO":
            body["schemaType"] = schema_type
        if references:
            body["references"] = _refs_json(references)
        if schema_id is not None:
            body["id"] = schema_id
        sid = int(self._call("POST", f"/subjects/{self._s(subject)}/versions", body)["id"])
        self._registered[key] = sid
        return sid

    def get_by_id(self, schema_id: int) -> RegisteredSchema:
        found = self._by_id.get(schema_id)
        if found is None:
            found = _schema_from(self._call("GET", f"/schemas/ids/{int(schema_id)}"), schema_id)
            found = RegisteredSchema(int(schema_id), found.schema_type, found.schema, found.references)
            self._by_id[schema_id] = found
        return found

    def get_version(self, subject: str, version: int | str) -> RegisteredSchema:
        v = "latest" if version in (-1, "-1") else version
        return _schema_from(self._call("GET", f"/subjects/{self._s(subject)}/versions/{v}"))

    def versions(self, subject: str) -> list[int]:
        return list(self._call("GET", f"/subjects/{self._s(subject)}/versions"))

    def subjects(self) -> list[str]:
        return sorted(self._call("GET", "/subjects"))

    def lookup(self, subject: str, schema_type: str, schema: str,
               references: tuple[SchemaReference, ...] = ()) -> RegisteredSchema:
        body: dict[str, Any] = {"schema": schema}
        if schema_type != "AVRO":
            body["schemaType"] = schema_type
        if references:
            body["references"] = _refs_json(references)
        return _schema_from(self._call("POST", f"/subjects/{self._s(subject)}", body))

    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        q = "?permanent=true" if permanent else ""
        self._registered = {k: v for k, v in self._registered.items() if k[0] != subject}
        return list(self._call("DELETE", f"/subjects/{self._s(subject)}{q}"))

    def get_compatibility(self, subject: str | None = None) -> str:
        path = "/config" if subject is None else f"/config/{self._s(subject)}?defaultToGlobal=true"
        return str(self._call("GET", path)["compatibilityLevel"])

    def set_compatibility(self, level: str, subject: str | None = None) -> None:
        path = "/config" if subject is None else f"/config/{self._s(subject)}"
        self._call("PUT", path, {"compatibility": level.upper()})

    def test_compatibility(self, subject: str, schema_type: str, schema: str,
                           references: tuple[SchemaReference, ...] = (),
                           version: int | str = "latest") -> list[str]:
        body: dict[str, Any] = {"schema": schema}
        if schema_type != "AVRO":
            body["schemaType"] = schema_type
        if references:
            body["references"] = _refs_json(references)
        try:
            doc = self._call("POST", f"/compatibility/subjects/{self._s(subject)}/versions/{version}?verbose=true",
                             body)
        except (SubjectNotFoundError, VersionNotFoundError):
            return []
        if doc.get("is_compatible"):
            return []
        return list(doc.get("messages") or ["incompatible"])
