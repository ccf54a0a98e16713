"""Confluent's JDBC connectors (kafka-connect-jdbc), in Python, on the connector API.

``JdbcSourceConnector`` copies tables (or a query) of MariaDB/MySQL, PostgreSQL or SQLite into
topics in Confluent's four modes, with its keys, record schemas and stored offsets;
``JdbcSinkConnector`` writes topics into tables (insert/upsert/update, deletes, auto-create and
auto-evolve). One module per concern: ``dialects`` (URLs, drivers, the SQL each database
speaks), ``schema`` (columns <-> Connect schemas and values), ``source``, ``sink``.

``PLUGINS`` is what the worker's plugin registry picks up, under Connect's names and aliases.
"""
from __future__ import annotations

from streamsql.runtime.connect.api import Plugin
from streamsql.runtime.connect.jdbc.sink import JdbcSinkConnector, JdbcSinkTask
from streamsql.runtime.connect.jdbc.source import JdbcSourceConnector, JdbcSourceTask

VERSION = "10.7.4"
"""The kafka-connect-jdbc release whose behaviour this follows (what the plugins report)."""

PLUGINS: tuple[Plugin, ...] = (
    Plugin("io.confluent.connect.jdbc.JdbcSinkConnector", JdbcSinkConnector, VERSION,
           ("JdbcSinkConnector", "JdbcSink")),
    Plugin("io.confluent.connect.jdbc.JdbcSourceConnector", JdbcSourceConnector, VERSION,
           ("JdbcSourceConnector", "JdbcSource")),
)

__all__ = ["PLUGINS", "VERSION", "JdbcSinkConnector", "JdbcSinkTask", "JdbcSourceConnector", "JdbcSourceTask"]
