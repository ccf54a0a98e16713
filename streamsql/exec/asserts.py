"""ASSERT [NOT EXISTS] TOPIC and ASSERT [NOT EXISTS] SCHEMA (ksqlDB 0.27+'s
``AssertTopicExecutor``, ``AssertSchemaExecutor`` and ``AssertExecutor``).

An assertion is checked again every 100 ms until it holds or its timeout (``TIMEOUT n unit``,
else ``ksql.assert.topic.default.timeout.ms`` / ``ksql.assert.schema.default.timeout.ms``,
1000 ms) has passed; then it fails with the last check's reason (HTTP 417 from the server).
Topics are looked up through the engine's log (embedded or Kafka), schemas in the engine's
schema registry. Nothing goes to the command log: an assertion changes nothing.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from streamsql import ast
from streamsql.errors import AssertionFailedException, KsqlException
from streamsql.results import Result
from streamsql.schemaregistry.client import (SchemaNotFoundError, SchemaRegistryError,
                                             SubjectNotFoundError, VersionNotFoundError)

if TYPE_CHECKING:  # pragma: no cover - imports only for type hints
    from streamsql.engine import Engine, Session

log = logging.getLogger(__name__)

TOPIC_TIMEOUT = "ksql.assert.topic.default.timeout.ms"
SCHEMA_TIMEOUT = "ksql.assert.schema.default.timeout.ms"
DEFAULT_TIMEOUT_MS = 1000
# ksqlDB's AssertExecutor.RETRY_MS: the pause between two checks.
RETRY_MS = 100


async def _until_true(check: Callable[[], Awaitable[None]], timeout_ms: int, entity: dict[str, Any]) -> None:
    """Run ``check`` (raises KsqlException while the assertion fails) until it passes, as
    many times as ksqlDB retries in ``timeout_ms``; the last failure fails the statement."""
    attempts = max(0, timeout_ms) // RETRY_MS + 1
    for attempt in range(attempts):
        try:
            await check()
            return
        except KsqlException as exc:
            if attempt == attempts - 1:
                raise AssertionFailedException(str(exc), entity) from None
        await asyncio.sleep(RETRY_MS / 1000)


def _timeout(stmt: ast.AssertTopic | ast.AssertSchema, props: dict[str, Any], key: str) -> int:
    if stmt.timeout_ms is not None:
        return stmt.timeout_ms
    try:
        return int(props.get(key, DEFAULT_TIMEOUT_MS))
    except (TypeError, ValueError):
        return DEFAULT_TIMEOUT_MS


async def assert_topic(engine: Engine, stmt: ast.AssertTopic, props: dict[str, Any],
                       session: Session, seq: int | None) -> Result:
    entity = {"@type": "assert_topic", "statementText": stmt.text, "topicName": stmt.topic,
              "exists": stmt.exists, "warnings": []}

    async def check() -> None:
        try:
            info = await engine.log.describe_topic(stmt.topic)
        except Exception as exc:  # noqa: BLE001 - the log's failure is the assertion's reason
            raise KsqlException(f"Cannot check topic existence: {exc}") from None
        if not stmt.exists:
            if info is not None:
                raise KsqlException(f"Topic {stmt.topic} exists")
            return
        if info is None:
            raise KsqlException(f"Topic {stmt.topic} does not exist")
        _check_topic_config(stmt.topic, stmt.properties, info.partitions, info.replicas)

    if not stmt.exists and stmt.properties.items:
        log.warning("Will skip topic config check for topic non-existence assertion.")
    await _until_true(check, _timeout(stmt, props, TOPIC_TIMEOUT), entity)
    state = "exists" if stmt.exists else "does not exist"
    return Result(stmt.text, "assert_topic", f"Topic {stmt.topic} {state}.", entity=entity)


def _check_topic_config(topic: str, properties: ast.Properties, partitions: int, replicas: int) -> None:
    """PARTITIONS and REPLICAS must be the topic's (integers: '1' or 1.0 do not match)."""
    errors = []
    for name, value in properties.items:
        actual = {"PARTITIONS": partitions, "REPLICAS": replicas}.get(name.upper())
        if actual is None:
            errors.append(f"Cannot assert unknown topic property: {name}")
        elif not (isinstance(value, int) and not isinstance(value, bool) and value == actual):
            errors.append(f"Mismatched configuration for topic {topic}: For config {name.lower()}, "
                          f"expected {value} got {actual}")
    if errors:
        raise KsqlException("\n".join(errors))


async def assert_schema(engine: Engine, stmt: ast.AssertSchema, props: dict[str, Any],
                        session: Session, seq: int | None) -> Result:
    entity = {"@type": "assert_schema", "statementText": stmt.text, "subject": stmt.subject,
              "id": stmt.schema_id, "exists": stmt.exists, "warnings": []}
    what = "Schema with" + (f" subject {stmt.subject}" if stmt.subject is not None else "") \
        + (f" id {stmt.schema_id}" if stmt.schema_id is not None else "")

    async def check() -> None:
        found = _schema_exists(engine.schema_registry, stmt.subject, stmt.schema_id)
        if stmt.exists and not found:
            raise KsqlException(f"{what} does not exist")
        if not stmt.exists and found:
            raise KsqlException(f"{what} exists")

    await _until_true(check, _timeout(stmt, props, SCHEMA_TIMEOUT), entity)
    return Result(stmt.text, "assert_schema", f"{what} {'exists' if stmt.exists else 'does not exist'}.",
                  entity=entity)


def _schema_exists(registry: Any, subject: str | None, schema_id: int | None) -> bool:
    """Whether the subject has a version (with this id, when both are given), or the id a
    schema."""
    try:
        if subject is not None:
            versions = registry.versions(subject)
            if schema_id is None:
                return bool(versions)
            return any(registry.get_version(subject, v).schema_id == schema_id for v in versions)
        registry.get_by_id(schema_id)
        return True
    except (SubjectNotFoundError, VersionNotFoundError, SchemaNotFoundError):
        return False
    except SchemaRegistryError as exc:
        raise KsqlException(f"Cannot check schema existence: {exc}") from None
