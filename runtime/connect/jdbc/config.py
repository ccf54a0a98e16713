"""The JDBC connectors' configuration keys (Confluent's JdbcSourceConnectorConfig and
JdbcSinkConfig): names, types, defaults, documentation, and Connect's ConfigDef parsing with
its error messages (``Missing required configuration "x" which has no default value.``,
``Invalid value y for configuration x: ...``)."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from streamsql.runtime.connect.api import ConfigKey, ConnectException
from streamsql.runtime.connect.jdbc.dialects import ConnectionConfig


class ConfigException(ConnectException):
    """Connect's ConfigException: a configuration that does not validate."""


_CONNECTION_KEYS = (
    ConfigKey("connection.url", "STRING", None, True, "HIGH",
              "JDBC connection URL: jdbc:mysql://, jdbc:mariadb://, jdbc:postgresql:// or jdbc:sqlite:.",
              "Database"),
    ConfigKey("connection.user", "STRING", None, False, "HIGH", "JDBC connection user.", "Database"),
    ConfigKey("connection.password", "PASSWORD", None, False, "HIGH", "JDBC connection password.", "Database"),
    ConfigKey("connection.attempts", "INT", 3, False, "LOW",
              "Maximum number of attempts to retrieve a valid JDBC connection.", "Database"),
    ConfigKey("connection.backoff.ms", "LONG", 10000, False, "LOW",
              "Backoff time in milliseconds between connection attempts.", "Database"),
    ConfigKey("dialect.name", "STRING", "", False, "LOW",
              "The name of the database dialect that should be used for this connector.", "Database"),
    ConfigKey("db.timezone", "STRING", "UTC", False, "MEDIUM",
              "Name of the JDBC timezone used in the connector when querying with time-based criteria.",
              "Database"),
)

SOURCE_KEYS: tuple[ConfigKey, ...] = _CONNECTION_KEYS + (
    ConfigKey("table.whitelist", "LIST", "", False, "MEDIUM",
              "List of tables to include in copying. If specified, table.blacklist may not be set.", "Database"),
    ConfigKey("table.blacklist", "LIST", "", False, "MEDIUM",
              "List of tables to exclude from copying. If specified, table.whitelist may not be set.", "Database"),
    ConfigKey("catalog.pattern", "STRING", None, False, "MEDIUM", "Catalog pattern to fetch table metadata.",
              "Database"),
    ConfigKey("schema.pattern", "STRING", None, False, "HIGH", "Schema pattern to fetch table metadata.",
              "Database"),
    ConfigKey("numeric.mapping", "STRING", "none", False, "LOW",
              "Map NUMERIC values by precision and optionally scale to integral or decimal types: none, "
              "precision_only, best_fit, best_fit_eager_double.", "Database"),
    ConfigKey("mode", "STRING", "", False, "HIGH",
              "The mode for updating a table each time it is polled: bulk, timestamp, incrementing, "
              "timestamp+incrementing.", "Mode"),
    ConfigKey("incrementing.column.name", "STRING", "", False, "MEDIUM",
              "The name of the strictly incrementing column to use to detect new rows.", "Mode"),
    ConfigKey("timestamp.column.name", "LIST", "", False, "MEDIUM",
              "Comma separated list of one or more timestamp columns to detect new or modified rows using "
              "the COALESCE SQL function.", "Mode"),
    ConfigKey("timestamp.initial", "LONG", None, False, "LOW",
              "The epoch timestamp used for initial queries that use timestamp criteria; -1 for the "
              "current time.", "Mode"),
    ConfigKey("validate.non.null", "BOOLEAN", True, False, "LOW",
              "By default, the JDBC connector will validate that all incrementing and timestamp tables "
              "have NOT NULL set for the columns being used as their ID/timestamp.", "Mode"),
    ConfigKey("query", "STRING", "", False, "MEDIUM",
              "If specified, the query to perform to select new or updated rows.", "Mode"),
    ConfigKey("query.suffix", "STRING", "", False, "LOW", "Suffix to append at the end of the generated query.",
              "Mode"),
    ConfigKey("table.types", "LIST", "TABLE", False, "LOW",
              "By default, the JDBC connector will only detect tables with type TABLE from the source "
              "database.", "Connector"),
    ConfigKey("poll.interval.ms", "INT", 5000, False, "HIGH",
              "Frequency in ms to poll for new data in each table.", "Connector"),
    ConfigKey("batch.max.rows", "INT", 100, False, "LOW",
              "Maximum number of rows to include in a single batch when polling for new data.", "Connector"),
    ConfigKey("table.poll.interval.ms", "LONG", 60000, False, "LOW",
              "Frequency in ms to poll for new or removed tables.", "Connector"),
    ConfigKey("topic.prefix", "STRING", None, True, "HIGH",
              "Prefix to prepend to table names to generate the name of the Kafka topic to publish data "
              "to, or in the case of a custom query, the full name of the topic to publish to.", "Connector"),
    ConfigKey("timestamp.delay.interval.ms", "LONG", 0, False, "HIGH",
              "How long to wait after a row with certain timestamp appears before we include it in the "
              "result.", "Connector"),
)

SINK_KEYS: tuple[ConfigKey, ...] = _CONNECTION_KEYS + (
    ConfigKey("insert.mode", "STRING", "insert", False, "HIGH", "The insertion mode to use: insert, upsert, "
              "update.", "Writes"),
    ConfigKey("batch.size", "INT", 3000, False, "MEDIUM",
              "Specifies how many records to attempt to batch together for insertion into the destination "
              "table, when possible.", "Writes"),
    ConfigKey("delete.enabled", "BOOLEAN", False, False, "MEDIUM",
              "Whether to treat null record values as deletes. Requires pk.mode to be record_key.", "Writes"),
    ConfigKey("table.name.format", "STRING", "${topic}", False, "MEDIUM",
              "A format string for the destination table name, which may contain '${topic}' as a "
              "placeholder for the originating topic name.", "Data Mapping"),
    ConfigKey("pk.mode", "STRING", "none", False, "HIGH",
              "The primary key mode: none, kafka, record_key, record_value.", "Data Mapping"),
    ConfigKey("pk.fields", "LIST", "", False, "MEDIUM", "List of comma-separated primary key field names.",
              "Data Mapping"),
    ConfigKey("fields.whitelist", "LIST", "", False, "MEDIUM",
              "List of comma-separated record value field names. If empty, all fields from the record "
              "value are utilized.", "Data Mapping"),
    ConfigKey("auto.create", "BOOLEAN", False, False, "MEDIUM",
              "Whether to automatically create the destination table based on record schema if it is "
              "found to be missing by issuing CREATE.", "DDL Support"),
    ConfigKey("auto.evolve", "BOOLEAN", False, False, "MEDIUM",
              "Whether to automatically add columns in the table schema when found to be missing relative "
              "to the record schema by issuing ALTER.", "DDL Support"),
    ConfigKey("max.retries", "INT", 10, False, "MEDIUM",
              "The maximum number of times to retry on errors before failing the task.", "Retries"),
    ConfigKey("retry.backoff.ms", "INT", 3000, False, "MEDIUM",
              "The time in milliseconds to wait following an error before a retry attempt is made.", "Retries"),
)


# Confluent's ConfigDef UI hints and validators (display names, widths, allowed values, the
# keys a key's value decides on); the order in each group is the order above.
_HINTS: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {
    # key: (display name, width, valid values, dependents)
    "connection.url": ("JDBC URL", "LONG", (), ()),
    "connection.user": ("JDBC User", "LONG", (), ()),
    "connection.password": ("JDBC Password", "SHORT", (), ()),
    "connection.attempts": ("JDBC connection attempts", "SHORT", (), ()),
    "connection.backoff.ms": ("JDBC connection backoff in milliseconds", "SHORT", (), ()),
    "dialect.name": ("Database Dialect", "LONG", (), ()),
    "db.timezone": ("DB time zone", "MEDIUM", (), ()),
    "table.whitelist": ("Table Whitelist", "LONG", (), ("table.blacklist",)),
    "table.blacklist": ("Table Blacklist", "LONG", (), ("table.whitelist",)),
    "catalog.pattern": ("Catalog pattern", "SHORT", (), ()),
    "schema.pattern": ("Schema pattern", "SHORT", (), ()),
    "numeric.mapping": ("Map Numeric Values By Precision and Scale", "SHORT",
                        ("none", "precision_only", "best_fit", "best_fit_eager_double"), ()),
    "mode": ("Table Loading Mode", "MEDIUM", ("", "bulk", "timestamp", "incrementing", "timestamp+incrementing"),
             ("incrementing.column.name", "timestamp.column.name", "validate.non.null")),
    "incrementing.column.name": ("Incrementing Column Name", "MEDIUM", (), ()),
    "timestamp.column.name": ("Timestamp Column Name", "MEDIUM", (), ()),
    "timestamp.initial": ("Unix time value of initial timestamp", "MEDIUM", (), ()),
    "validate.non.null": ("Validate Non Null", "SHORT", (), ()),
    "query": ("Query", "SHORT", (), ()),
    "query.suffix": ("Suffix for Query", "MEDIUM", (), ()),
    "table.types": ("Table Types", "LONG", (), ()),
    "poll.interval.ms": ("Poll Interval (ms)", "SHORT", (), ()),
    "batch.max.rows": ("Max Rows Per Batch", "SHORT", (), ()),
    "table.poll.interval.ms": ("Metadata Change Monitoring Interval (ms)", "SHORT", (), ()),
    "topic.prefix": ("Topic Prefix", "MEDIUM", (), ()),
    "timestamp.delay.interval.ms": ("Delay Interval (ms)", "MEDIUM", (), ()),
    "insert.mode": ("Insert Mode", "MEDIUM", ("insert", "upsert", "update"), ()),
    "batch.size": ("Batch Size", "SHORT", (), ()),
    "delete.enabled": ("Enable deletes", "SHORT", (), ()),
    "table.name.format": ("Table Name Format", "LONG", (), ()),
    "pk.mode": ("Primary Key Mode", "MEDIUM", ("none", "kafka", "record_key", "record_value"), ("pk.fields",)),
    "pk.fields": ("Primary Key Fields", "LONG", (), ()),
    "fields.whitelist": ("Fields Whitelist", "LONG", (), ()),
    "auto.create": ("Auto-Create", "SHORT", (), ()),
    "auto.evolve": ("Auto-Evolve", "SHORT", (), ()),
    "max.retries": ("Maximum Retries", "SHORT", (), ()),
    "retry.backoff.ms": ("Retry Backoff (millis)", "SHORT", (), ()),
}


def _hinted(keys: tuple[ConfigKey, ...]) -> tuple[ConfigKey, ...]:
    orders: dict[str | None, int] = {}
    out = []
    for key in keys:
        orders[key.group] = orders.get(key.group, 0) + 1
        display, width, valid, dependents = _HINTS.get(key.name, (key.name, "NONE", (), ()))
        out.append(dataclasses.replace(key, order_in_group=orders[key.group], display_name=display, width=width,
                                       valid_values=valid, dependents=dependents))
    return tuple(out)


SOURCE_KEYS = _hinted(SOURCE_KEYS)
SINK_KEYS = _hinted(SINK_KEYS)


class Config:
    """Typed access to a connector's properties, validated against its keys as ConfigDef."""

    def __init__(self, keys: Sequence[ConfigKey], props: Mapping[str, Any]) -> None:
        self._keys = {k.name: k for k in keys}
        self.props = {str(k): v for k, v in props.items()}
        for key in keys:
            if key.required and self.props.get(key.name) in (None, ""):
                raise ConfigException(f'Missing required configuration "{key.name}" which has no default value.')
        self._values = {k.name: self._parse(k) for k in keys}

    def _parse(self, key: ConfigKey) -> Any:
        raw = self.props.get(key.name)
        if raw is None:
            raw = key.default
            if raw is None:
                return None
        text = str(raw).strip() if key.type != "PASSWORD" else str(raw)
        try:
            if key.type in ("INT", "LONG"):
                return int(text)
            if key.type == "BOOLEAN":
                if text.lower() not in ("true", "false"):
                    raise ValueError
                return text.lower() == "true"
            if key.type == "LIST":
                return [p.strip() for p in text.split(",") if p.strip()]
        except ValueError:
            kind = {"INT": "Not a number of type INT", "LONG": "Not a number of type LONG",
                    "BOOLEAN": "Expected value to be either true or false"}[key.type]
            raise ConfigException(f"Invalid value {text} for configuration {key.name}: {kind}") from None
        return text

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        v = self._values.get(name, self.props.get(name))
        return default if v is None else v

    def choice(self, name: str, allowed: Sequence[str]) -> str:
        value = str(self[name] or "")
        if value not in allowed:
            raise ConfigException(f"Invalid value {value} for configuration {name}: String must be one of: "
                                  f"{', '.join(allowed)}")
        return value

    def connection(self) -> ConnectionConfig:
        return ConnectionConfig(self["connection.url"], self["connection.user"], self["connection.password"],
                                self["dialect.name"] or None, self["db.timezone"] or "UTC",
                                max(1, int(self["connection.attempts"])), int(self["connection.backoff.ms"]))
