"""The built-in schema registry: Confluent Schema Registry's model kept in a compacted topic.

State lives in the ``_schemas`` topic of a streamsql ``Log`` (embedded or Kafka alike), in
Confluent's own record layout, so the topic reads as Confluent's would:

- key ``{"keytype":"SCHEMA","subject":S,"version":V,"magic":1}`` ->
  value ``{"subject":S,"version":V,"id":N,"schemaType":T,"schema":..., "references":[...],
  "deleted":false}`` (``schemaType`` omitted for AVRO);
- key ``{"keytype":"CONFIG","subject":S|null,"magic":0}`` -> ``{"compatibilityLevel":L}``;
- a null value (tombstone) removes a key (permanent deletes).

``start()`` rebuilds the in-memory cache from the topic; every read is served from the cache.
Writes apply to the cache at once and are queued; ``flush()`` appends them to the topic (the
engine flushes after each statement; a future REST layer flushes before it answers). One
process writes a given ``_schemas`` topic: ids are allocated locally, as Confluent's leader
does.

With ``log=None`` the store is purely in memory (tests, tools).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from streamsql.schemaregistry.client import (
    COMPATIBILITY_LEVELS,
    DEFAULT_COMPATIBILITY,
    IncompatibleSchemaError,
    InvalidCompatibilityError,
    InvalidSchemaError,
    RegisteredSchema,
    SchemaNotFoundError,
    SchemaReference,
    SchemaRegistryClient,
    SubjectNotFoundError,
    VersionNotFoundError,
    normalize_schema,
)

log = logging.getLogger(__name__)

SCHEMAS_TOPIC = "_schemas"


@dataclass
class _Version:
    version: int
    schema_id: int
    deleted: bool = False


@dataclass
class _Subject:
    versions: list[_Version] = field(default_factory=list)

    def live(self) -> list[_Version]:
        return [v for v in self.versions if not v.deleted]


class SchemaStore(SchemaRegistryClient):
    """See the module docstring."""

    def __init__(self, log_: Any | None = None, topic: str = SCHEMAS_TOPIC,
                 parse: Callable[[str, str, dict[str, str]], Any] | None = None) -> None:
        self._log = log_
        self._topic = topic
        self._schemas: dict[int, RegisteredSchema] = {}
        self._by_text: dict[tuple[str, str, tuple], int] = {}
        self._subjects: dict[str, _Subject] = {}
        self._config: dict[str | None, str] = {}
        self._next_id = 1
        self._pending: list[tuple[bytes, bytes | None]] = []
        self._parse = parse

    # ------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._log is None:
            return
        info = await self._log.describe_topic(self._topic)
        if info is None:
            try:
                await self._log.create_topic(self._topic, 1, 1, config={"cleanup.policy": "compact"})
            except Exception:  # created concurrently: read it
                log.debug("schemas topic exists already", exc_info=True)
            return
        offset = 0
        while True:
            batch = await self._log.fetch(self._topic, 0, offset)
            if not len(batch):
                break
            for k, v in zip(batch.keys, batch.values):
                if k is not None:
                    self._apply(json.loads(k), None if v is None else json.loads(v))
            offset = batch.offsets[-1] + 1

    async def flush(self) -> None:
        if not self._pending or self._log is None:
            self._pending.clear()
            return
        from streamsql.runtime.log.base import ProducerRecord

        records = [ProducerRecord(k, v, 0) for k, v in self._pending]
        self._pending.clear()
        if await self._log.describe_topic(self._topic) is None:
            await self._log.create_topic(self._topic, 1, 1, config={"cleanup.policy": "compact"})
        await self._log.produce(self._topic, records)

    # ----------------------------------------------------------------- record handling
    def _apply(self, key: dict, value: dict | None) -> None:
        """Apply one topic record to the cache (at start, and for our own writes)."""
        kind = key.get("keytype")
        if kind == "SCHEMA":
            subject, version = key["subject"], int(key["version"])
            subj = self._subjects.setdefault(subject, _Subject())
            if value is None:  # permanent delete
                subj.versions = [v for v in subj.versions if v.version != version]
                return
            sid = int(value["id"])
            if sid not in self._schemas:
                refs = tuple(SchemaReference(r["name"], r["subject"], int(r["version"]))
                             for r in value.get("references") or ())
                stype = value.get("schemaType") or "AVRO"
                self._schemas[sid] = RegisteredSchema(sid, stype, value["schema"], refs)
                self._by_text[(stype, normalize_schema(stype, value["schema"]), refs)] = sid
            self._next_id = max(self._next_id, sid + 1)
            for v in subj.versions:
                if v.version == version:
                    v.schema_id, v.deleted = sid, bool(value.get("deleted"))
                    break
            else:
                subj.versions.append(_Version(version, sid, bool(value.get("deleted"))))
                subj.versions.sort(key=lambda v: v.version)
        elif kind == "CONFIG":
            subject = key.get("subject")
            if value is None:
                self._config.pop(subject, None)
            else:
                self._config[subject] = value["compatibilityLevel"]

    def _write(self, key: dict, value: dict | None) -> None:
        self._apply(key, value)
        self._pending.append((json.dumps(key, separators=(",", ":")).encode(),
                              None if value is None else json.dumps(value, separators=(",", ":")).encode()))

    # ---------------------------------------------------------------------- reads
    def get_by_id(self, schema_id: int) -> RegisteredSchema:
        found = self._schemas.get(int(schema_id))
        if found is None:
            raise SchemaNotFoundError(f"Schema {schema_id} not found")
        return found

    def _subject(self, subject: str) -> _Subject:
        subj = self._subjects.get(subject)
        if subj is None or not subj.live():
            raise SubjectNotFoundError(f"Subject '{subject}' not found.")
        return subj

    def get_version(self, subject: str, version: int | str) -> RegisteredSchema:
        subj = self._subject(subject)
        live = subj.live()
        if version in ("latest", -1, "-1"):
            v = live[-1]
        else:
            try:
                n = int(version)
            except (TypeError, ValueError):
                raise VersionNotFoundError(f"Version {version} not found.") from None
            match = [x for x in live if x.version == n]
            if not match:
                raise VersionNotFoundError(f"Version {version} not found.")
            v = match[0]
        return replace(self._schemas[v.schema_id], subject=subject, version=v.version)

    def versions(self, subject: str) -> list[int]:
        return [v.version for v in self._subject(subject).live()]

    def subjects(self) -> list[str]:
        return sorted(s for s, subj in self._subjects.items() if subj.live())

    def lookup(self, subject: str, schema_type: str, schema: str,
               references: tuple[SchemaReference, ...] = ()) -> RegisteredSchema:
        subj = self._subject(subject)
        sid = self._by_text.get((schema_type, normalize_schema(schema_type, schema), tuple(references)))
        for v in reversed(subj.live()):
            if v.schema_id == sid:
                return replace(self._schemas[sid], subject=subject, version=v.version)
        raise SchemaNotFoundError("Schema not found")

    def get_compatibility(self, subject: str | None = None) -> str:
        if subject is not None and subject in self._config:
            return self._config[subject]
        return self._config.get(None, DEFAULT_COMPATIBILITY)

    # ---------------------------------------------------------------------- writes
    def set_compatibility(self, level: str, subject: str | None = None) -> None:
        level = level.upper()
        if level not in COMPATIBILITY_LEVELS:
            raise InvalidCompatibilityError("Invalid compatibility level. Valid values are none, backward, "
                                            "forward, full, backward_transitive, forward_transitive, and "
                                            "full_transitive")
        self._write({"keytype": "CONFIG", "subject": subject, "magic": 0}, {"compatibilityLevel": level})

    def register(self, subject: str, schema_type: str, schema: str,
                 references: tuple[SchemaReference, ...] = (), schema_id: int | None = None) -> int:
        schema_type = (schema_type or "AVRO").upper()
        if schema_type not in ("AVRO", "PROTOBUF", "JSON"):
            raise InvalidSchemaError(f"Invalid schema type {schema_type}")
        references = tuple(references)
        norm = normalize_schema(schema_type, schema)
        self._validate(schema_type, schema, references)
        text_key = (schema_type, norm, references)
        existing_id = self._by_text.get(text_key)
        subj = self._subjects.get(subject)
        live = subj.live() if subj is not None else []
        if existing_id is not None and (schema_id is None or schema_id == existing_id):
            for v in live:
                if v.schema_id == existing_id:
                    return existing_id
        if schema_id is not None:
            clash = self._schemas.get(schema_id)
            if clash is not None and schema_id != existing_id:
                raise InvalidSchemaError(
                    f"Overwrite new schema with id {schema_id} is not permitted.", 42207)
        reasons = self._check(subject, schema_type, schema, references, "latest")
        if reasons:
            raise IncompatibleSchemaError(
                f"Schema being registered is incompatible with an earlier schema for subject "
                f"\"{subject}\", details: [{', '.join(reasons)}]")
        if schema_id is not None:
            sid = schema_id
        elif existing_id is not None:
            sid = existing_id
        else:
            sid = self._next_id
        version = (subj.versions[-1].version + 1) if subj is not None and subj.versions else 1
        value: dict[str, Any] = {"subject": subject, "version": version, "id": sid}
        if schema_type != "AVRO":
            value["schemaType"] = schema_type
        if references:
            value["references"] = [r.to_json() for r in references]
        value["schema"] = schema
        value["deleted"] = False
        self._write({"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1}, value)
        return sid

    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        subj = self._subjects.get(subject)
        if subj is None or not subj.versions:
            raise SubjectNotFoundError(f"Subject '{subject}' not found.")
        out = []
        for v in list(subj.versions):
            key = {"keytype": "SCHEMA", "subject": subject, "version": v.version, "magic": 1}
            if permanent:
                self._write(key, None)
            elif not v.deleted:
                s = self._schemas[v.schema_id]
                value = {"subject": subject, "version": v.version, "id": v.schema_id}
                if s.schema_type != "AVRO":
                    value["schemaType"] = s.schema_type
                if s.references:
                    value["references"] = [r.to_json() for r in s.references]
                value["schema"] = s.schema
                value["deleted"] = True
                self._write(key, value)
            else:
                continue
            out.append(v.version)
        return out

    # ------------------------------------------------------------------- compatibility
    def test_compatibility(self, subject: str, schema_type: str, schema: str,
                           references: tuple[SchemaReference, ...] = (),
                           version: int | str = "latest") -> list[str]:
        return self._check(subject, (schema_type or "AVRO").upper(), schema, tuple(references), version)

    def _validate(self, schema_type: str, schema: str, references: tuple[SchemaReference, ...]) -> None:
        if self._parse is None:
            from streamsql.schemaregistry.parsing import parse_schema
            self._parse = parse_schema
        self._parse(schema_type, schema, self._ref_texts(references))

    def _ref_texts(self, references: tuple[SchemaReference, ...]) -> dict[str, str]:
        try:
            return {n: r.schema for n, r in self.resolve_references(references).items()}
        except (SubjectNotFoundError, VersionNotFoundError) as e:
            raise InvalidSchemaError(f"Invalid schema: unresolved reference: {e}") from None

    def _check(self, subject: str, schema_type: str, schema: str,
               references: tuple[SchemaReference, ...], version: int | str) -> list[str]:
        from streamsql.schemaregistry.compat import incompatibilities

        subj = self._subjects.get(subject)
        live = subj.live() if subj is not None else []
        if not live:
            return []
        level = self.get_compatibility(subject)
        if version == "all":
            targets = live
        elif version not in ("latest", -1, "-1"):
            targets = [v for v in live if v.version == int(version)]
            if not targets:
                raise VersionNotFoundError(f"Version {version} not found.")
        elif level == "NONE":
            return []
        elif level.endswith("_TRANSITIVE"):
            targets = live
        else:
            targets = live[-1:]
        if level == "NONE" and version in ("latest", -1, "-1"):
            return []
        if self._parse is None:
            from streamsql.schemaregistry.parsing import parse_schema
            self._parse = parse_schema
        parsed_new = self._parse(schema_type, schema, self._ref_texts(references))
        reasons: list[str] = []
        base = level.replace("_TRANSITIVE", "")
        for v in targets:
            old = self._schemas[v.schema_id]
            if old.schema_type != schema_type:
                reasons.append(f"{{errorType:'SCHEMA_TYPE_CHANGED', description:'schema type changed from "
                               f"{old.schema_type} to {schema_type}'}}")
                continue
            parsed_old = self._parse(schema_type, old.schema, self._ref_texts(old.references))
            if base in ("BACKWARD", "FULL", "NONE"):
                reasons += incompatibilities(schema_type, parsed_new, parsed_old)
            if base in ("FORWARD", "FULL"):
                reasons += incompatibilities(schema_type, parsed_old, parsed_new)
        return reasons
