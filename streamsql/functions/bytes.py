"""BYTES functions: TO_BYTES / FROM_BYTES (hex, utf8, ascii, base64) and the fixed-width
numeric decoders INT_FROM_BYTES, BIGINT_FROM_BYTES and DOUBLE_FROM_BYTES.

The codecs follow Java's: ASCII encoding replaces unmappable characters with ``?``, ASCII and
UTF-8 decoding replace bad bytes with U+FFFD, hex is written upper-case and read in either case,
base64 is the standard alphabet with optional padding. Other BYTES overloads (LEN, CONCAT,
SUBSTRING, SPLIT, LPAD, RPAD) live with their STRING twins in ``string.py``.
"""
from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Callable

from streamsql.functions.registry import udf

_ENCODINGS = "hex, utf8, ascii and base64"


_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def _hex_decode(text: str) -> bytes:
    # bytes.fromhex tolerates whitespace; Java's decoders do not.
    if not _HEX.fullmatch(text):
        raise ValueError(f"Invalid hex string: {text}")
    return bytes.fromhex(text)


def _base64_decode(text: str) -> bytes:
    # java.util.Base64's basic decoder accepts missing padding but no stray characters.
    missing = -len(text) % 4
    if missing == 3:
        raise ValueError(f"Invalid base64 string: {text}")
    try:
        return base64.b64decode(text + "=" * missing, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"Invalid base64 string: {text}") from exc


def _ascii_decode(data: bytes) -> str:
    return data.decode("ascii", "replace")


# str -> bytes, by encoding name.
STRING_DECODERS: dict[str, Callable[[str], bytes]] = {
    "hex": _hex_decode,
    "utf8": lambda s: s.encode("utf-8", "surrogatepass"),
    "ascii": lambda s: s.encode("ascii", "replace"),
    "base64": _base64_decode,
}

# bytes -> str, by encoding name.
BYTES_ENCODERS: dict[str, Callable[[bytes], str]] = {
    "hex": lambda b: b.hex().upper(),
    "utf8": lambda b: b.decode("utf-8", "replace"),
    "ascii": _ascii_decode,
    "base64": lambda b: base64.b64encode(b).decode("ascii"),
}


def _codec(table: dict[str, Callable], encoding: str) -> Callable:
    try:
        return table[encoding.lower()]
    except KeyError:
        raise ValueError(f"Supported encoding types are: {_ENCODINGS}") from None


@udf("TO_BYTES", "BYTES", [("str", "STRING"), ("encoding", "STRING")])
def to_bytes(value: str | None, encoding: str | None) -> bytes | None:
    """Converts a STRING value in the given encoding (hex, utf8, ascii or base64) to BYTES."""
    if value is None or encoding is None:
        return None
    return _codec(STRING_DECODERS, encoding)(value)


@udf("FROM_BYTES", "STRING", [("bytes", "BYTES"), ("encoding", "STRING")])
def from_bytes(value: bytes | None, encoding: str | None) -> str | None:
    """Converts a BYTES value to a STRING in the given encoding (hex, utf8, ascii or base64)."""
    if value is None or encoding is None:
        return None
    return _codec(BYTES_ENCODERS, encoding)(value)


_ORDERS = {"BIG_ENDIAN": ">", "LITTLE_ENDIAN": "<"}


def _unpacker(fmt: str, size: int) -> Callable[[bytes | None, str | None], object]:
    packers = {order: struct.Struct(prefix + fmt) for order, prefix in _ORDERS.items()}

    def unpack(value: bytes | None, byte_order: str | None = "BIG_ENDIAN") -> object:
        if value is None or byte_order is None:
            return None
        if len(value) != size:
            raise ValueError(f"Number of bytes must be equal to {size}, but found {len(value)}")
        packer = packers.get(byte_order)
        if packer is None:
            raise ValueError(f"Byte order must be BIG_ENDIAN or LITTLE_ENDIAN, but was {byte_order}")
        return packer.unpack(value)[0]

    return unpack


_int_unpack = _unpacker("i", 4)
_bigint_unpack = _unpacker("q", 8)
_double_unpack = _unpacker("d", 8)


@udf("INT_FROM_BYTES", "INTEGER", [("bytes", "BYTES")])
@udf("INT_FROM_BYTES", "INTEGER", [("bytes", "BYTES"), ("byteOrder", "STRING")])
def int_from_bytes(value: bytes | None, byte_order: str | None = "BIG_ENDIAN") -> int | None:
    """Converts a 4-byte BYTES value to an INTEGER; byteOrder is BIG_ENDIAN (default) or
    LITTLE_ENDIAN."""
    return _int_unpack(value, byte_order)  # type: ignore[return-value]


@udf("BIGINT_FROM_BYTES", "BIGINT", [("bytes", "BYTES")])
@udf("BIGINT_FROM_BYTES", "BIGINT", [("bytes", "BYTES"), ("byteOrder", "STRING")])
def bigint_from_bytes(value: bytes | None, byte_order: str | None = "BIG_ENDIAN") -> int | None:
    """Converts an 8-byte BYTES value to a BIGINT; byteOrder is BIG_ENDIAN (default) or
    LITTLE_ENDIAN."""
    return _bigint_unpack(value, byte_order)  # type: ignore[return-value]


@udf("DOUBLE_FROM_BYTES", "DOUBLE", [("bytes", "BYTES")])
@udf("DOUBLE_FROM_BYTES", "DOUBLE", [("bytes", "BYTES"), ("byteOrder", "STRING")])
def double_from_bytes(value: bytes | None, byte_order: str | None = "BIG_ENDIAN") -> float | None:
    """Converts an 8-byte BYTES value (IEEE 754) to a DOUBLE; byteOrder is BIG_ENDIAN (default)
    or LITTLE_ENDIAN."""
    return _double_unpack(value, byte_order)  # type: ignore[return-value]
