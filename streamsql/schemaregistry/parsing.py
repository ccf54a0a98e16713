"""Parsing schema texts of the three registry types into the forms the registry checks.

``parse_schema(type, text, references)`` validates a schema the way registering it needs:
AVRO into a resolved node graph (``compat.parse_avro``), JSON into its document, PROTOBUF into
a ``protoparse.ProtoFile`` whose imports (schema references by name, Confluent's and Google's
well-known files) resolve, checked by building its descriptors.
"""
from __future__ import annotations

import json
from typing import Any

from streamsql.schemaregistry.client import InvalidSchemaError


def parse_schema(schema_type: str, text: str, references: dict[str, str] | None = None) -> Any:
    """The parsed form of a schema; InvalidSchemaError when it is not a valid schema."""
    refs = references or {}
    if schema_type == "AVRO":
        from streamsql.schemaregistry.compat import parse_avro

        try:
            return parse_avro(text)
        except (KeyError, TypeError, AttributeError) as e:
            raise InvalidSchemaError(f"Invalid schema {text}: {e}") from None
    if schema_type == "JSON":
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise InvalidSchemaError(f"Invalid schema {text}: {e}") from None
        if not isinstance(doc, (dict, bool)):
            raise InvalidSchemaError(f"Invalid schema {text}")
        return doc
    if schema_type == "PROTOBUF":
        from streamsql.schemaregistry.protoparse import build_pool

        try:
            _, parsed = build_pool(text, "schema.proto", refs.get)
        except InvalidSchemaError:
            raise
        except Exception as e:  # the descriptor pool's own complaints
            raise InvalidSchemaError(f"Invalid schema: {e}") from None
        return parsed
    raise InvalidSchemaError(f"Invalid schema type {schema_type}")
