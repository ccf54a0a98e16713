"""Built-in table functions (ksqlDB's UDTFs): EXPLODE and CUBE_EXPLODE. Each returns the list
of values to emit, one output row per element; a NULL input emits no rows."""
from __future__ import annotations

from typing import Any

from streamsql.functions.registry import udtf


@udtf("EXPLODE", "T", [("list", "ARRAY<T>")])
def explode(array: list[Any] | None) -> list[Any]:
    """Explodes an array into one row per element."""
    return [] if array is None else array


# CUBE_EXPLODE's rows double with each column: past this many columns one record would
# emit millions of rows (and keep its query busy for ever): the record's call fails instead
# (no rows, and the processing log says why).
MAX_CUBE_COLUMNS = 16


@udtf("CUBE_EXPLODE", "ARRAY<T>", [("columns", "ARRAY<T>")])
def cube_explode(columns: list[Any] | None) -> list[list[Any]]:
    """Takes an array of columns and outputs all combinations of them, each column either
    kept or replaced by NULL; a NULL column yields no extra combination of its own."""
    if columns is None:
        return []
    n = len(columns)
    if n > MAX_CUBE_COLUMNS:
        raise ValueError(f"CUBE_EXPLODE takes at most {MAX_CUBE_COLUMNS} columns "
                         f"({1 << MAX_CUBE_COLUMNS} combinations), got {n}")
    null_mask = 0
    for i, c in enumerate(columns):
        if c is None:
            null_mask |= 1 << (n - 1 - i)
    # Bit (n-1-j) of the combination number says whether column j is kept, so the rows come
    # in ksqlDB's order: all NULL first, all kept last.
    return [[columns[j] if (i >> (n - 1 - j)) & 1 else None for j in range(n)]
            for i in range(1 << n) if not i & null_mask]
