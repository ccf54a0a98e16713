"""The NONE format: no columns at all. Whatever the payload holds is ignored; nothing is
written. ksqlDB uses it for keyless streams (KEY_FORMAT='NONE')."""
from __future__ import annotations

from typing import Any, Sequence

from streamsql.formats.base import Codec, Format, FormatOptions
from streamsql.formats.common import check_wrapping, column_list, schema_not_supported
from streamsql.schema import Column
from streamsql.types import SqlType


class NoneCodec(Codec):
    """Decodes any payload to the empty row (a null payload stays null); encodes to null."""

    def decode(self, data: bytes | None) -> tuple | None:
        return None if data is None else ()

    def encode(self, values: tuple | None) -> bytes | None:
        return None

    def to_json_form(self, data: bytes | None) -> Any:
        return None

    def from_json_form(self, obj: Any) -> bytes | None:
        # The runner may give a key to a NONE-keyed topic; the format ignores it.
        return None if obj is None else (obj if isinstance(obj, str) else str(obj)).encode()


_CODEC = NoneCodec()


class NoneFormat(Format):
    """ksqlDB's NONE format."""

    name = "NONE"
    supports_wrapping = False

    def supports_type(self, type_: SqlType) -> bool:
        return False

    def validate(self, columns: Sequence[Column], options: FormatOptions, is_key: bool) -> None:
        if not is_key:
            check_wrapping(self.name, columns, options.wrap_single_value, False, False)
        if columns:
            raise schema_not_supported(
                self.name, columns, (), is_key,
                "The 'NONE' format can only be used when no columns are defined. Got: "
                f"{column_list(columns, is_key)}")

    def codec(self, columns: Sequence[Column], options: FormatOptions, is_key: bool) -> Codec:
        return _CODEC
