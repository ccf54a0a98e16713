"""The connector API: Kafka Connect's Java interfaces, in Python.

A connector written for this API reads like its Connect original: a ``SourceConnector`` splits
its work into task configs, a ``SourceTask`` returns ``SourceRecord``s from ``poll()`` with a
source partition and offset of its own (the worker stores them and hands them back through
``context.offset(partition)`` after a restart), a ``SinkTask`` takes ``SinkRecord``s in
``put()`` and makes them durable in ``flush()``. Records carry Connect's data model (``Schema``
and ``Struct``) so converters can write exactly what Kafka Connect writes.

Tasks are synchronous on purpose, as in Connect: database drivers and file reads block, so the
worker runs each task's calls on a thread of its own and keeps the event loop free.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence


class ConnectException(Exception):
    """A connector or task failed; the message (and trace) goes to the task's status."""


class RetriableException(ConnectException):
    """A failure worth retrying (a database briefly down): the worker backs off and calls
    again instead of failing the task."""


# Connect's schema types (org.apache.kafka.connect.data.Schema.Type), by their JSON names.
INT8, INT16, INT32, INT64 = "int8", "int16", "int32", "int64"
FLOAT32, FLOAT64, BOOLEAN, STRING, BYTES = "float", "double", "boolean", "string", "bytes"
ARRAY, MAP, STRUCT = "array", "map", "struct"

# Logical types, as Connect names them (schema.name with a primitive underneath).
DECIMAL = "org.apache.kafka.connect.data.Decimal"        # bytes, parameter "scale"
DATE = "org.apache.kafka.connect.data.Date"              # int32 days since the epoch
TIME = "org.apache.kafka.connect.data.Time"              # int32 millis of the day
TIMESTAMP = "org.apache.kafka.connect.data.Timestamp"    # int64 millis since the epoch


@dataclass(frozen=True)
class Field:
    """A field of a STRUCT schema."""

    name: str
    index: int
    schema: "Schema"


@dataclass(frozen=True)
class Schema:
    """A Connect schema. ``fields`` for STRUCT, ``key_schema``/``value_schema`` for MAP and
    ``value_schema`` for ARRAY; ``name`` and ``parameters`` carry logical types."""

    type: str
    optional: bool = False
    name: str | None = None
    version: int | None = None
    doc: str | None = None
    default: Any = None
    parameters: tuple[tuple[str, str], ...] = ()
    fields: tuple[Field, ...] = ()
    key_schema: "Schema | None" = None
    value_schema: "Schema | None" = None

    def field(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


@dataclass(frozen=True)
class Struct:
    """A STRUCT value: its schema and the field values in the schema's order."""

    schema: Schema
    values: tuple[Any, ...]

    def get(self, name: str) -> Any:
        f = self.schema.field(name)
        if f is None:
            raise ConnectException(f"{name} is not a valid field name")
        return self.values[f.index]


@dataclass(frozen=True)
class SourceRecord:
    """What a source task produces. ``source_partition``/``source_offset`` are the task's own
    position (for a table: {"table": name} and {"incrementing": 42}); the worker stores the
    offset once the record is written, and only then."""

    source_partition: Mapping[str, Any]
    source_offset: Mapping[str, Any]
    topic: str
    partition: int | None = None
    key_schema: Schema | None = None
    key: Any = None
    value_schema: Schema | None = None
    value: Any = None
    timestamp: int | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()


_new = object.__new__
_set = object.__setattr__


class SourceRecordBatch(Sequence[SourceRecord]):
    """Records of one source partition and topic with one STRUCT value schema and no key,
    held as columns: the field tuples of their values (``rows``) and a function giving a
    row's source offset. A source task may return one from ``poll()`` instead of a list:
    it is a sequence of ordinary SourceRecords (made when read, equal to ones made by the
    constructors), and the worker converts ``rows`` in one go without making them at all
    (``last_offset`` is what it stores). ``more``: the task has more records at once (a
    result being streamed), so the worker may poll again before it writes these."""

    __slots__ = ("source_partition", "topic", "value_schema", "rows", "offset_of", "more")

    def __init__(self, source_partition: Mapping[str, Any], topic: str, value_schema: Schema,
                 rows: Sequence[tuple], offset_of: Callable[[tuple], Mapping[str, Any] | None],
                 more: bool = False) -> None:
        self.source_partition = source_partition
        self.topic = topic
        self.value_schema = value_schema
        self.rows = rows
        self.offset_of = offset_of
        self.more = more

    @property
    def last_offset(self) -> Mapping[str, Any] | None:
        return self.offset_of(self.rows[-1]) if self.rows else None

    def __len__(self) -> int:
        return len(self.rows)

    def _record(self, row: tuple) -> SourceRecord:
        # Filled in without the frozen dataclasses' guarded __init__ (a third of a row's cost).
        value = _new(Struct)
        _set(value, "__dict__", {"schema": self.value_schema, "values": row})
        record = _new(SourceRecord)
        _set(record, "__dict__", {"source_partition": self.source_partition, "source_offset": self.offset_of(row),
                                  "topic": self.topic, "partition": None, "key_schema": None, "key": None,
                                  "value_schema": self.value_schema, "value": value, "timestamp": None,
                                  "headers": ()})
        return record

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._record(r) for r in self.rows[i]]
        return self._record(self.rows[i])

    def __iter__(self) -> Iterator[SourceRecord]:
        return map(self._record, self.rows)


@dataclass(frozen=True)
class SinkRecord:
    """What a sink task is given: a record read from a topic and converted."""

    topic: str
    partition: int
    key_schema: Schema | None
    key: Any
    value_schema: Schema | None
    value: Any
    offset: int
    timestamp: int | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()


@dataclass(frozen=True)
class ConfigKey:
    """One configuration key a connector declares (Connect's ConfigDef.ConfigKey): what
    ``/connector-plugins/{plugin}/config`` and ``.../config/validate`` report, and how
    ``validate_value`` checks a value. ``valid_values``: the values allowed (Connect's
    ``ValidString.in``, reported as the recommended values too); ``order_in_group``, ``width``,
    ``display_name`` and ``dependents`` are ConfigDef's UI hints (-1, NONE, the key's name and
    none by default, as ``ConfigDef.define`` without them)."""

    name: str
    type: str = "STRING"          # STRING, INT, LONG, DOUBLE, BOOLEAN, LIST, PASSWORD, CLASS
    default: Any = None
    required: bool = False
    importance: str = "MEDIUM"    # HIGH, MEDIUM, LOW
    documentation: str = ""
    group: str | None = None
    order_in_group: int = -1
    width: str = "NONE"           # NONE, SHORT, MEDIUM, LONG
    display_name: str | None = None
    dependents: tuple[str, ...] = ()
    valid_values: tuple[str, ...] = ()

    def validate_value(self, raw: Any) -> list[str]:
        """The errors ConfigDef's parsing and validator find in ``raw`` (a config's text, or
        None when the key is not set), in Connect's words."""
        missing = [f'Missing required configuration "{self.name}" which has no default value.']
        if raw is None:
            return missing if self.required else []
        text = str(raw).strip() if self.type != "PASSWORD" else str(raw)
        if not text.strip():
            # (Empty: missing if required, as the worker has always read it; else the default.)
            return missing if self.required else []
        shown = "[hidden]" if self.type == "PASSWORD" else text
        kinds = {"INT": "Not a number of type INT", "LONG": "Not a number of type LONG",
                 "SHORT": "Not a number of type SHORT", "DOUBLE": "Not a number of type DOUBLE"}
        try:
            if self.type in ("INT", "LONG", "SHORT"):
                int(text)
            elif self.type == "DOUBLE":
                float(text)
            elif self.type == "BOOLEAN" and text.lower() not in ("true", "false"):
                return [f"Invalid value {shown} for configuration {self.name}: Expected value to be either "
                        "true or false"]
        except ValueError:
            return [f"Invalid value {shown} for configuration {self.name}: {kinds[self.type]}"]
        if self.valid_values and text not in self.valid_values:
            return [f"Invalid value {shown} for configuration {self.name}: String must be one of: "
                    f"{', '.join(self.valid_values)}"]
        return []


class SourceTaskContext(ABC):
    """What the worker gives a source task: the offsets it stored for the task."""

    @abstractmethod
    def offset(self, source_partition: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The last offset stored for ``source_partition``, or None."""


class ConnectorContext(ABC):
    """What the worker gives a connector: a way to ask for new task configs (a table appeared)
    and to fail the connector."""

    @abstractmethod
    def request_task_reconfiguration(self) -> None: ...

    @abstractmethod
    def raise_error(self, error: Exception) -> None: ...


class Task(ABC):
    """A unit of a connector's work, run on one worker thread."""

    @abstractmethod
    def start(self, props: Mapping[str, str]) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def version(self) -> str:
        return "unknown"


class SourceTask(Task):
    """Reads from outside and returns records; ``context`` is set before ``start``."""

    context: SourceTaskContext

    def initialize(self, context: SourceTaskContext) -> None:
        self.context = context

    @abstractmethod
    def poll(self) -> Sequence[SourceRecord] | None:
        """New records, or None/[] when there are none yet. May block briefly (up to its
        poll interval); ``stop`` may be called from another thread meanwhile."""

    def commit(self) -> None:
        """The records returned so far are written and their offsets stored."""


class SinkTask(Task):
    """Writes records outside. The worker commits the consumer offsets of records only after
    ``flush`` returned: a record is never lost, and is delivered again after a crash."""

    @abstractmethod
    def put(self, records: Sequence[SinkRecord]) -> None: ...

    def flush(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Make every record given so far durable."""


class Connector(ABC):
    """A configured connector: validates its config and splits it into task configs."""

    context: ConnectorContext

    def initialize(self, context: ConnectorContext) -> None:
        self.context = context

    @abstractmethod
    def start(self, props: Mapping[str, str]) -> None: ...

    @abstractmethod
    def task_class(self) -> type[Task]: ...

    @abstractmethod
    def task_configs(self, max_tasks: int) -> list[dict[str, str]]: ...

    def stop(self) -> None:
        pass

    def config(self) -> Sequence[ConfigKey]:
        return ()

    def version(self) -> str:
        return "unknown"


class SourceConnector(Connector):
    """A connector whose tasks are SourceTasks."""

    TYPE = "source"


class SinkConnector(Connector):
    """A connector whose tasks are SinkTasks (config has ``topics`` or ``topics.regex``)."""

    TYPE = "sink"


@dataclass
class Plugin:
    """A connector class the worker can run, under Connect's names for it: the full class
    name, and the aliases Connect accepts (simple name, simple name without "Connector")."""

    class_name: str
    connector: type[Connector]
    version: str = "unknown"
    aliases: tuple[str, ...] = field(default=())

    @property
    def type(self) -> str:
        return "source" if issubclass(self.connector, SourceConnector) else "sink"
