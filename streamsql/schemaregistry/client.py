"""The schema registry seam: one interface for the built-in registry and an external one.

``SchemaRegistryClient`` is what formats, the analyzer and the engine speak to. It mirrors
Confluent Schema Registry's REST API (subjects, versions, global ids, compatibility config)
so the built-in store (``store.SchemaStore``, kept in a compacted ``_schemas`` topic) and a
remote registry (``http.HttpSchemaRegistryClient``) are interchangeable, and a thin HTTP layer
can serve the store later.

Reads are synchronous: codecs resolve writer schemas by id on the hot path (cached by the
codec after the first lookup), as Confluent's Java client does. Writes are synchronous too;
the built-in store applies them at once and persists them on ``await flush()``, which the
engine calls after every statement.

Errors carry Confluent's error codes (40401 subject not found, 40403 schema not found, 409
incompatible, 42201 invalid schema, ...) so an HTTP layer can map them one to one.
"""
from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

SCHEMA_TYPES = ("AVRO", "PROTOBUF", "JSON")
COMPATIBILITY_LEVELS = ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE",
                        "FULL", "FULL_TRANSITIVE")
DEFAULT_COMPATIBILITY = "BACKWARD"


class SchemaRegistryError(Exception):
    """A registry call failed; ``error_code`` is Confluent's (e.g. 40401), ``status`` the HTTP
    status it maps to."""

    status = 500
    error_code = 50001

    def __init__(self, message: str, error_code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        if error_code is not None:
            self.error_code = error_code
        if status is not None:
            self.status = status


class SubjectNotFoundError(SchemaRegistryError):
    """No such subject (or all its versions are deleted)."""

    status, error_code = 404, 40401


class VersionNotFoundError(SchemaRegistryError):
    """The subject has no such version."""

    status, error_code = 404, 40402


class SchemaNotFoundError(SchemaRegistryError):
    """No schema with that id (or the schema is not registered under the subject)."""

    status, error_code = 404, 40403


class IncompatibleSchemaError(SchemaRegistryError):
    """The schema breaks the subject's compatibility level; the message lists why."""

    status, error_code = 409, 409


class InvalidSchemaError(SchemaRegistryError):
    """The schema text does not parse, or an explicit id clashes with another schema."""

    status, error_code = 422, 42201


class InvalidCompatibilityError(SchemaRegistryError):
    """Unknown compatibility level."""

    status, error_code = 422, 42203


@dataclass(frozen=True)
class SchemaReference:
    """A reference from one schema to another (protobuf imports, Avro/JSON named types):
    ``name`` as the referring schema writes it, resolved as ``subject`` at ``version``."""

    name: str
    subject: str
    version: int

    def to_json(self) -> dict:
        return {"name": self.name, "subject": self.subject, "version": self.version}


@dataclass(frozen=True)
class RegisteredSchema:
    """A schema as the registry holds it. ``subject``/``version`` are set when it was read
    through a subject."""

    schema_id: int
    schema_type: str
    schema: str
    references: tuple[SchemaReference, ...] = ()
    subject: str | None = None
    version: int | None = None

    def to_json(self) -> dict:
        """Confluent's REST representation (``schemaType`` omitted for AVRO, as Confluent does)."""
        out: dict = {}
        if self.subject is not None:
            out["subject"] = self.subject
        if self.version is not None:
            out["version"] = self.version
        out["id"] = self.schema_id
        if self.schema_type != "AVRO":
            out["schemaType"] = self.schema_type
        if self.references:
            out["references"] = [r.to_json() for r in self.references]
        out["schema"] = self.schema
        return out


def normalize_schema(schema_type: str, schema: str) -> str:
    """The form two schema texts are compared in (same form, same schema): compact JSON for
    AVRO and JSON schemas (a bare Avro primitive name like ``int`` counts as ``"int"``),
    whitespace-collapsed text for PROTOBUF."""
    if schema_type in ("AVRO", "JSON"):
        try:
            parsed = json.loads(schema)
        except ValueError:
            if schema_type == "AVRO" and re.fullmatch(r"\s*[A-Za-z_][A-Za-z0-9_.]*\s*", schema):
                parsed = schema.strip()
            else:
                raise InvalidSchemaError(f"Invalid schema {schema}") from None
        if isinstance(parsed, dict) and set(parsed) == {"type"} and isinstance(parsed["type"], str):
            parsed = parsed["type"]  # {"type": "int"} is "int"
        return json.dumps(parsed, separators=(",", ":"))
    return " ".join(schema.split())


def subject_name(topic: str, is_key: bool) -> str:
    """Confluent's TopicNameStrategy: ``<topic>-key`` / ``<topic>-value``."""
    return f"{topic}-{'key' if is_key else 'value'}"


class SchemaRegistryClient(ABC):
    """See the module docstring. Versions are 1-based; ids are global and start at 1."""

    @abstractmethod
    def register(self, subject: str, schema_type: str, schema: str,
                 references: tuple[SchemaReference, ...] = (), schema_id: int | None = None) -> int:
        """Register ``schema`` under ``subject``; returns its global id. Registering a schema
        the subject already has returns the existing id and adds no version. Raises
        IncompatibleSchemaError when the subject's compatibility level refuses it.
        ``schema_id`` asks for a specific id (Confluent's import mode; used by tests)."""

    @abstractmethod
    def get_by_id(self, schema_id: int) -> RegisteredSchema:
        """The schema with this id; SchemaNotFoundError if none."""

    @abstractmethod
    def get_version(self, subject: str, version: int | str) -> RegisteredSchema:
        """A version of a subject (``"latest"`` or -1 for the latest)."""

    def get_latest(self, subject: str) -> RegisteredSchema:
        """The latest version of a subject; SubjectNotFoundError if none."""
        return self.get_version(subject, "latest")

    def latest_or_none(self, subject: str) -> RegisteredSchema | None:
        try:
            return self.get_latest(subject)
        except (SubjectNotFoundError, VersionNotFoundError):
            return None

    @abstractmethod
    def versions(self, subject: str) -> list[int]:
        """The live versions of a subject; SubjectNotFoundError if none."""

    @abstractmethod
    def subjects(self) -> list[str]:
        """Subjects with at least one live version, sorted."""

    @abstractmethod
    def lookup(self, subject: str, schema_type: str, schema: str,
               references: tuple[SchemaReference, ...] = ()) -> RegisteredSchema:
        """The version of ``subject`` holding this schema (Confluent's POST /subjects/{s});
        SchemaNotFoundError if the subject does not have it."""

    @abstractmethod
    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        """Delete a subject's versions; returns them."""

    @abstractmethod
    def get_compatibility(self, subject: str | None = None) -> str:
        """The compatibility level of a subject (falling back to the global one), or the
        global level when ``subject`` is None."""

    @abstractmethod
    def set_compatibility(self, level: str, subject: str | None = None) -> None:
        """Set a subject's (or the global) compatibility level."""

    @abstractmethod
    def test_compatibility(self, subject: str, schema_type: str, schema: str,
                           references: tuple[SchemaReference, ...] = (),
                           version: int | str = "latest") -> list[str]:
        """Why ``schema`` may not be registered under ``subject`` (empty: it may). With a
        version, against that version only; with ``"all"`` against every version; with
        ``"latest"`` as the subject's compatibility level prescribes."""

    def resolve_references(self, references: tuple[SchemaReference, ...]) -> dict[str, RegisteredSchema]:
        """Referenced schemas by reference name, transitively."""
        out: dict[str, RegisteredSchema] = {}
        pending = list(references)
        while pending:
            ref = pending.pop()
            if ref.name in out:
                continue
            found = self.get_version(ref.subject, ref.version)
            out[ref.name] = found
            pending.extend(found.references)
        return out

    async def start(self) -> None:
        """Load state (the built-in store reads its topic); no-op for remote registries."""

    async def flush(self) -> None:
        """Persist writes made since the last flush; no-op for remote registries."""

    async def close(self) -> None:
        """Release resources."""
