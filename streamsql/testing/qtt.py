"""Runs ksqlDB query-validation test (QTT) cases and reports what actually happened.

A case (see ../shared/qtt/README.md) gives statements, optional properties and topics, and
input records in their JSON form. ``run_case`` executes the statements on a fresh engine over
an in-memory embedded log (``run_case_async``: or over another Log) in test mode, pipes the
inputs through a ``DrivingLog`` one at a time, and returns the records written to the sink
topics of the case's persistent queries, decoded back to JSON form. It never looks at the
expectations; ``compare`` does, for the test suite and the ksql-test-runner mode.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import uuid
from decimal import Decimal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamsql.errors import StreamSqlError

if TYPE_CHECKING:
    from streamsql.runtime.log.base import Log

log = logging.getLogger(__name__)


@dataclass
class CaseResult:
    """What running one case produced."""

    name: str
    error: str | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "error": self.error, "outputs": self.outputs}


def expand_cases(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Cases of a QTT file, one per format where a case lists several (``{FORMAT}``
    replaced, named ``"<name> - <FORMAT>"``)."""
    out = []
    for case in doc.get("tests", []):
        formats = case.get("format")
        if not formats:
            out.append(case)
            continue
        for fmt in formats:
            text = json.dumps(case).replace("{FORMAT}", fmt)
            expanded = json.loads(text)
            expanded.pop("format", None)
            expanded["name"] = f"{case['name']} - {fmt}"
            out.append(expanded)
    return out


# Kafka clients for cases: a case waits for each record's round trip, so no batching delay.
KAFKA_CONFIG: dict[str, Any] = {"linger.ms": 0, "ksql.service.id": "qtt"}


def run_case(case: dict[str, Any], kafka: str | None = None) -> CaseResult:
    """Run one (expanded) case; see the module docstring. ``kafka``: the bootstrap servers of
    a Kafka cluster to run it on instead of the embedded log (see ``run_case_on_kafka``)."""
    if kafka is None:
        return asyncio.run(run_case_async(case))

    async def on_kafka() -> CaseResult:
        from streamsql.runtime.log.kafka import KafkaLog

        shared = KafkaLog(kafka, KAFKA_CONFIG)
        try:
            return await run_case_on_kafka(case, shared)
        finally:
            await shared.close()
    return asyncio.run(on_kafka())


async def run_case_on_kafka(case: dict[str, Any], kafka_log: "Log") -> CaseResult:
    """Run one (expanded) case on a Kafka Log (a ``KafkaLog``, left open: cases can share
    one), in a namespace of its own: its topics are prefixed ``qtt-<random>-`` (cases reuse
    topic names) and are left on the cluster."""
    from streamsql.testing.prefixed import PrefixedLog

    namespace = PrefixedLog(kafka_log, f"qtt-{uuid.uuid4().hex[:12]}-", close_inner=False)
    return await run_case_async(case, namespace)


async def run_case_async(case: dict[str, Any], inner: "Log | None" = None) -> CaseResult:
    """Run one (expanded) case in the running event loop. ``inner`` is the Log the
    ``DrivingLog`` wraps (default: a new in-memory embedded log); another backend must hold
    no topic of another case (give each case its own ``streamsql.testing.prefixed``
    namespace). It is closed with the case."""
    from streamsql.engine import Engine
    from streamsql.functions import test_registry
    from streamsql.parser import parse
    from streamsql.runtime.log.embedded import EmbeddedLog
    from streamsql.testing.driver import DrivingLog

    result = CaseResult(case.get("name", ""))
    driving = DrivingLog(inner if inner is not None else EmbeddedLog(None))
    config = {k: v for k, v in (case.get("properties") or {}).items()}
    engine = Engine(driving, config=config, registry=test_registry(), mode="test",
                    auto_create_topics=True)
    driving.subscribers = engine.subscribers
    try:
        await engine.start()
        for topic in case.get("topics", []) or []:
            # One partition, whatever the case says: ksqlDB's test driver (TopologyTestDriver)
            # reads every topic as partition 0; a case's count only sizes topics for ksqlDB's
            # fake topic client, whose default differs from ours ("table join pipeline" joins a
            # 4-partition table to one it does not size, which ksqlDB accepts, while it refuses
            # a join of sources with different partition counts).
            await driving.create_topic(topic["name"], 1)
        # ksqlDB's test runner uses a mock registry, which enforces no compatibility rules.
        engine.schema_registry.set_compatibility("NONE")
        _register_topic_schemas(engine.schema_registry, case.get("topics", []) or [])
        await engine.schema_registry.flush()
        script = "\n".join(case.get("statements", []))
        try:
            for stmt in parse(script):
                await engine.execute_statement(stmt)
        except StreamSqlError as exc:
            result.error = str(exc)
            return result
        sinks = {q.sink.topic: q.sink for q in engine.queries.values()}
        for record in case.get("inputs", []) or []:
            await _pipe(engine, driving, record)
        result.outputs = _decode_outputs(engine, driving, sinks)
    except StreamSqlError as exc:
        result.error = str(exc)
    except Exception as exc:  # a crash is reported as the case's error, not raised
        log.debug("case %s crashed", result.name, exc_info=True)
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        await engine.close()
        if inner is not None:
            await inner.close()
    return result


def _schema_type(fmt: str | None, schema: Any) -> str:
    """The registry schema type of a case's ``keySchema``/``valueSchema``: by the topic's
    format, else by the schema's shape (proto text, JSON schema keywords, else Avro)."""
    fmt = (fmt or "").upper()
    if fmt == "AVRO":
        return "AVRO"
    if fmt.startswith("PROTOBUF"):
        return "PROTOBUF"
    if fmt in ("JSON", "JSON_SR"):
        return "JSON"
    if isinstance(schema, str):
        return "PROTOBUF" if "message" in schema or "syntax" in schema else "AVRO"
    if isinstance(schema, dict) and (
            any(k in schema for k in ("oneOf", "anyOf", "allOf", "properties", "$schema", "connect.type",
                                      "additionalProperties", "$ref", "title"))
            or schema.get("type") in ("object", "integer", "number")):
        return "JSON"
    return "AVRO"


def _register_topic_schemas(registry, topics: list[dict[str, Any]]) -> None:
    """Register the case's topic schemas under ``<topic>-key``/``<topic>-value`` (key first),
    with the ids the case gives, as ksqlDB's test runner does before running statements."""
    from streamsql.schemaregistry.client import SchemaReference

    for topic in topics:
        for side in ("key", "value"):
            schema = topic.get(f"{side}Schema")
            if side == "value" and schema is None:
                schema = topic.get("schema")
            if schema is None:
                continue
            stype = _schema_type(topic.get(f"{side}Format") or topic.get("format"), schema)
            text = schema if isinstance(schema, str) and stype == "PROTOBUF" else json.dumps(schema)
            refs = []
            for ref in topic.get(f"{side}SchemaReferences") or ():
                ref_type = _schema_type(ref.get("format"), ref.get("schema"))
                ref_text = ref["schema"] if isinstance(ref["schema"], str) else json.dumps(ref["schema"])
                ref_subject = ref.get("subject") or ref["name"]
                registry.register(ref_subject, ref_type, ref_text)
                refs.append(SchemaReference(ref["name"], ref_subject, registry.get_latest(ref_subject).version))
            schema_id = topic.get(f"{side}SchemaId")
            registry.register(f"{topic['name']}-{side}", stype, text, tuple(refs),
                              int(schema_id) if schema_id is not None else None)


def _source_for_topic(engine, topic: str):
    for source in engine.catalog.sources.values():
        if source.topic == topic:
            return source
    return None


def encode_input(engine, record: dict[str, Any]):
    """A case's input record as the ProducerRecord written to its topic: in the format of the
    stream or table over that topic (JSON where there is none)."""
    from streamsql.runtime.log.base import ProducerRecord

    source = _source_for_topic(engine, record["topic"])
    key = record.get("key")
    value = record.get("value")
    if source is not None:
        kb = engine.codec(source, "key").from_json_form(key) if key is not None else None
        vb = engine.codec(source, "value").from_json_form(value) if value is not None else None
    else:
        kb = None if key is None else (key.encode() if isinstance(key, str) else json.dumps(key).encode())
        vb = None if value is None else json.dumps(value).encode()
    kb = _join_window(source, kb, record.get("window"))
    headers = tuple((h.get("KEY"), None if h.get("VALUE") is None else base64.b64decode(h["VALUE"]))
                    for h in record.get("headers") or ())
    return ProducerRecord(kb, vb, int(record.get("timestamp", 0) or 0), headers)


async def _pipe(engine, driving, record: dict[str, Any]) -> None:
    topic = record["topic"]
    encoded = encode_input(engine, record)
    if (await driving.describe_topic(topic)) is None:
        await driving.create_topic(topic, 1)
    await driving.produce(topic, [encoded])


def _decode_outputs(engine, driving, sinks) -> list[dict[str, Any]]:
    outputs = []
    for w in driving.written:
        sink = sinks.get(w.topic)
        if sink is None:
            continue
        rec = w.record
        key_bytes, window = _split_window(sink, rec.key)
        try:
            key = engine.codec(sink, "key").to_json_form(key_bytes) if key_bytes is not None else None
        except Exception as exc:  # undecodable output is shown, not hidden
            key = f"<undecodable key: {exc}>"
        try:
            value = engine.codec(sink, "value").to_json_form(rec.value) if rec.value is not None else None
        except Exception as exc:
            value = f"<undecodable value: {exc}>"
        out: dict[str, Any] = {"topic": w.topic, "key": key, "value": value, "timestamp": rec.timestamp}
        if window is not None:
            out["window"] = window
        if rec.headers:
            out["headers"] = [{"KEY": k, "VALUE": None if v is None else base64.b64encode(v).decode()}
                              for k, v in rec.headers]
        outputs.append(out)
    return outputs


def _split_window(source, key: bytes | None) -> tuple[bytes | None, dict | None]:
    """A windowed key's inner key bytes and its window in the QTT form."""
    if source.window is None or key is None:
        return key, None
    if source.window.kind == "SESSION":
        end, start = struct.unpack(">qq", key[-16:])
        return key[:-16] or None, {"start": start, "end": end, "type": "session"}
    start = struct.unpack(">q", key[-8:])[0]
    size = source.window.size or 0
    return key[:-8] or None, {"start": start, "end": start + size, "type": "time"}


def _join_window(source, key: bytes | None, window: dict | None) -> bytes | None:
    """The windowed key bytes for a QTT input record with a ``window``."""
    if window is None or source is None or source.window is None:
        return key
    key = key or b""
    if source.window.kind == "SESSION" or window.get("type") == "session":
        return key + struct.pack(">qq", window["end"], window["start"])
    return key + struct.pack(">q", window["start"])


# ================================================================================ comparing
def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, (int, float)) and not isinstance(b, bool):
        a, b = b, a
    if isinstance(b, str) and isinstance(a, (int, float)) and not isinstance(a, bool):
        # ksqlDB's runner reads an expected DECIMAL written as "3.40" through the sink's serde.
        try:
            return Decimal(b) == Decimal(repr(a))
        except ArithmeticError:
            return False
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b if isinstance(a, bool) and isinstance(b, bool) else False
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() == b.keys():
            return all(_json_equal(a[k], b[k]) for k in a)
        # ksqlDB's runner reads expected values through the sink's serde, which matches field
        # names case-insensitively: {"json_v": ..} expects the column JSON_V.
        ua = {str(k).upper(): v for k, v in a.items()}
        ub = {str(k).upper(): v for k, v in b.items()}
        return len(ua) == len(a) and len(ub) == len(b) and ua.keys() == ub.keys() and all(
            _json_equal(ua[k], ub[k]) for k in ua)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return a == b


def _row_equal(expected: Any, actual: Any) -> bool:
    """A record value as ksqlDB's runner compares it: it reads the expected row through the
    sink's value serde, which leaves a column the row lacks NULL and ignores a field that is
    no column. Only NULLs are let through that way, so a lost or extra value still fails."""
    if isinstance(expected, dict) and isinstance(actual, dict) and expected.keys() != actual.keys():
        exp = {str(k).upper(): v for k, v in expected.items()}
        act = {str(k).upper(): v for k, v in actual.items()}
        if len(exp) == len(expected) and len(act) == len(actual) \
                and all(exp[k] is None for k in exp.keys() - act.keys()) \
                and all(act[k] is None for k in act.keys() - exp.keys()):
            return all(_json_equal(exp[k], act[k]) for k in exp.keys() & act.keys())
    return _json_equal(expected, actual)


def compare(case: dict[str, Any], result: CaseResult) -> str | None:
    """None when ``result`` is what ``case`` expects, else a readable reason."""
    expected_error = case.get("expectedException")
    if expected_error is not None:
        if result.error is None:
            return "expected the statements to be rejected, but they were accepted"
        message = expected_error.get("message")
        if message and message not in result.error:
            return f"rejected with a different message:\n  expected to contain: {message!r}\n  got: {result.error!r}"
        return None
    if result.error is not None:
        return f"unexpected error: {result.error}"
    expected = case.get("outputs", []) or []
    by_topic: dict[str, list] = {}
    for rec in expected:
        by_topic.setdefault(rec["topic"], []).append(rec)
    actual_by_topic: dict[str, list] = {}
    for rec in result.outputs:
        actual_by_topic.setdefault(rec["topic"], []).append(rec)
    for topic, exp in by_topic.items():
        act = actual_by_topic.get(topic, [])
        if len(act) != len(exp):
            return (f"topic {topic}: expected {len(exp)} records, got {len(act)}\n"
                    f"  expected: {json.dumps(exp)[:1500]}\n  actual:   {json.dumps(act)[:1500]}")
        for i, (x, y) in enumerate(zip(exp, act)):
            if not _json_equal(x.get("key"), y.get("key")):
                return f"topic {topic} record {i}: key {y.get('key')!r} != expected {x.get('key')!r}"
            if not _row_equal(x.get("value"), y.get("value")):
                return f"topic {topic} record {i}: value {json.dumps(y.get('value'))} != expected {json.dumps(x.get('value'))}"
            if "timestamp" in x and x["timestamp"] != y.get("timestamp"):
                return f"topic {topic} record {i}: timestamp {y.get('timestamp')} != expected {x['timestamp']}"
            if "window" in x and not _json_equal(x["window"], y.get("window")):
                return f"topic {topic} record {i}: window {y.get('window')} != expected {x['window']}"
            if "headers" in x and not _json_equal(x["headers"], y.get("headers", [])):
                return f"topic {topic} record {i}: headers {y.get('headers')} != expected {x['headers']}"
    # Like ksqlDB's runner, topics the case does not list are not compared.
    return None


def run_file(path: str) -> list[CaseResult]:
    """Run every case of a QTT file."""
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    return [run_case(c) for c in expand_cases(doc)]
