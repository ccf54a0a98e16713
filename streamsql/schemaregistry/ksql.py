"""How the engine uses the schema registry: which registry, schema inference, registration.

- ``make_registry(log, config)``: the built-in store on the engine's Log, or an HTTP client
  when ``ksql.schema.registry.url`` is configured.
- ``infer_columns``: columns of a key or value from a registered schema (CREATE without
  elements, or with KEY_SCHEMA_ID/VALUE_SCHEMA_ID). Names are upper-cased as ksqlDB's
  statement rewrite does unless an explicit schema id keeps them as written.
- ``register_source_schemas``: at CREATE, register the schema derived from the columns when
  the subject has none, else check the columns against the registered one; at CREATE ... AS
  SELECT, register the sink's schema under the subject's compatibility rules.

Failures raise KsqlException with the registry's reason, as ksqlDB rejects such statements.
"""
from __future__ import annotations

from typing import Any, Sequence

from streamsql.errors import KsqlException
from streamsql.formats.base import Format, FormatOptions
from streamsql.schema import Column
from streamsql.schemaregistry.client import (
    SchemaRegistryClient,
    SchemaRegistryError,
    subject_name,
)

SCHEMA_REGISTRY_URL = "ksql.schema.registry.url"


def make_registry(log: Any, config: dict[str, Any]) -> SchemaRegistryClient:
    """The registry an engine uses: external when configured, else built in on ``log``."""
    url = config.get(SCHEMA_REGISTRY_URL)
    if url:
        from streamsql.schemaregistry.http import HttpSchemaRegistryClient

        return HttpSchemaRegistryClient(str(url))
    from streamsql.schemaregistry.store import SchemaStore

    return SchemaStore(log)


def _missing(topic: str, subject: str, is_key: bool) -> KsqlException:
    what = "keys" if is_key else "values"
    return KsqlException(
        f"Schema for message {what} on topic '{topic}' does not exist in the Schema Registry.\n"
        f"Subject: {subject}\n\n"
        "Possible causes include:\n"
        "- The topic itself does not exist\n\t-> Use SHOW TOPICS; to check\n"
        "- Messages on the topic are not serialized using a format Schema Registry supports\n"
        f"\t-> Use PRINT '{topic}' FROM BEGINNING; to verify\n"
        "- Messages on the topic have not been serialized using a Confluent Schema Registry supported "
        "serializer\n\t-> See https://docs.confluent.io/current/schema-registry/docs/serializer-formatter.html\n"
        "- The schema is registered on a different instance of the Schema Registry\n"
        "\t-> Use the REST API to check if the schema is registered, and check the SR URL to ksqlDB\n"
        "For more information, see https://docs.confluent.io/current/schema-registry/docs/index.html")


def _format(fmt: Format | str) -> Format:
    if isinstance(fmt, str):
        from streamsql.formats.registry import get_format

        return get_format(fmt)
    return fmt


def infer_columns(fmt: Format | str, registry: SchemaRegistryClient | None, subject_or_id: str | int,
                  is_key: bool, options: FormatOptions = FormatOptions(),
                  topic: str | None = None) -> list[Column]:
    """Key or value columns from the latest schema of a subject, or from a schema id."""
    from streamsql.formats.connect import inferred_name, rename_type

    f = _format(fmt)
    if isinstance(subject_or_id, int):
        subject = subject_name(topic or "", is_key)
    else:
        subject = subject_or_id
    topic = topic if topic is not None else subject.rsplit("-", 1)[0]
    if registry is None:
        raise KsqlException(f"Cannot infer the {'key' if is_key else 'value'} columns of topic '{topic}': "
                            f"no schema registry is configured ({SCHEMA_REGISTRY_URL}).")
    try:
        if isinstance(subject_or_id, int):
            schema_id = subject_or_id
            registry.get_by_id(schema_id)
        else:
            latest = registry.latest_or_none(subject)
            if latest is None:
                raise _missing(topic, subject, is_key)
            schema_id = latest.schema_id
        compiled = f.compile_registered(registry, schema_id, options, is_key)  # type: ignore[attr-defined]
    except SchemaRegistryError:
        raise _missing(topic, subject, is_key) from None
    preserve = isinstance(subject_or_id, int)
    ns = "KEY" if is_key else "VALUE"
    unwrapped = getattr(f, "supports_unwrap", False) and (is_key or options.wrap_single_value is False)
    if unwrapped:
        return [Column("ROWKEY" if is_key else "ROWVAL", rename_type(compiled.struct_type(), preserve), ns)]
    if compiled.fields is None:
        raise KsqlException(
            f"The {'key' if is_key else 'value'} schema of topic '{topic}' is not a record: "
            f"{compiled.single}. Use WRAP_SINGLE_VALUE=false to read it as a single column.")
    cols = [Column(inferred_name(n, preserve), rename_type(t, preserve), ns) for n, t in compiled.fields]
    seen: set[str] = set()
    for c in cols:
        if c.name in seen:
            raise KsqlException(f"Duplicate column names: {c.name}")
        seen.add(c.name)
    return cols


def infer_source_columns(topic: str, key_format: str, key_options: FormatOptions, value_format: str,
                         value_options: FormatOptions, key_cols: list[Column], value_cols: list[Column],
                         registry: SchemaRegistryClient | None) -> tuple[list[Column], list[Column]]:
    """The columns of a CREATE statement after inference: a side is inferred when it has a
    schema id, or declares no columns and its format reads schemas from the registry."""
    kf, vf = _format(key_format), _format(value_format)
    has_values = any(c.namespace == "VALUE" for c in value_cols)
    if kf.supports_inference and (key_options.schema_id is not None or not key_cols):
        ref = key_options.schema_id if key_options.schema_id is not None else subject_name(topic, True)
        key_cols = infer_columns(kf, registry, ref, True, key_options, topic)
    if vf.supports_inference and (value_options.schema_id is not None or not has_values):
        ref = value_options.schema_id if value_options.schema_id is not None else subject_name(topic, False)
        value_cols = infer_columns(vf, registry, ref, False, value_options, topic) + \
            [c for c in value_cols if c.namespace != "VALUE"]
    return key_cols, value_cols


def register_source_schemas(source: Any, registry: SchemaRegistryClient | None, is_sink: bool) -> None:
    """Register (or check) the key and value schemas of a new stream or table."""
    from streamsql.formats.connect import AdaptError, adapter, match_name

    if registry is None:
        return
    sides: Sequence[tuple[bool, Any, Sequence[Column]]] = (
        (True, source.key_format, source.schema.key),
        (False, source.value_format, source.schema.value_format_columns))
    for is_key, info, cols in sides:
        f = _format(info.name)
        if not getattr(f, "uses_registry", False) or (is_key and not cols):
            continue
        opts: FormatOptions = info.options
        subject = subject_name(source.topic, is_key)
        unwrapped = f.unwrapped(cols, opts, is_key)  # type: ignore[attr-defined]
        try:
            if opts.schema_id is not None:
                compiled = f.compile_registered(registry, opts.schema_id, opts, is_key)  # type: ignore[attr-defined]
            else:
                derived = f.derive(cols, opts, is_key, unwrapped)  # type: ignore[attr-defined]
                latest = None if is_sink else registry.latest_or_none(subject)
                if latest is None or latest.schema_type != f.schema_type:  # type: ignore[attr-defined]
                    try:
                        registry.register(subject, f.schema_type, derived)  # type: ignore[attr-defined]
                    except SchemaRegistryError as e:
                        if is_sink:
                            raise KsqlException(f"Could not register schema for topic: {e}") from None
                    continue
                compiled = f.compile_registered(registry, latest.schema_id, opts, is_key)  # type: ignore[attr-defined]
        except SchemaRegistryError as e:
            raise KsqlException(str(e)) from None
        # The columns must agree with the registered schema.
        try:
            if unwrapped:
                adapter(compiled.struct_type(), cols[0].type)
            elif compiled.fields is None:
                raise AdaptError(f"the schema is not a record but {compiled.single}")
            else:
                names = [n for n, _ in compiled.fields]
                types = dict(compiled.fields)
                for c in cols:
                    found = match_name(c.name, names)
                    if found is None:
                        continue
                    try:
                        if is_sink:
                            adapter(c.type, types[found])
                        else:
                            adapter(types[found], c.type)
                    except AdaptError as e:
                        raise AdaptError(f"column `{c.name}` {c.type} does not match field `{found}`: {e}") from None
        except AdaptError as e:
            raise KsqlException(
                f"The {'key' if is_key else 'value'} columns do not match the schema registered for "
                f"subject '{subject}' (id {compiled.schema_id}): {e}") from None
