"""Fused stateless pipelines: one generated Python function per query's stateless chain.

``build_pipeline(plan, ...)`` writes the source of a function that, for a whole
``RecordBatch``, decodes each record, extracts its timestamp, applies the WHERE filter, the
table functions (flat map), the projection and the re-keying, and appends the encoded result
to output lists. The source is compiled once with ``compile``; per record there is one loop
iteration of straight-line code: no operator objects, no per-record dicts, no dispatch.

Failures are per record and never stop the query: a record that does not deserialize, whose
timestamp cannot be extracted or whose WHERE fails is skipped; a projected expression that
fails becomes NULL. Each goes to the processing log with topic, partition, offset and reason.
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

from streamsql import expressions as e
from streamsql.analyzer import QueryPlan, source_scope
from streamsql.catalog import DataSource
from streamsql.codegen import ExpressionCompiler
from streamsql.errors import QueryFailedError
from streamsql.formats.base import Codec
from streamsql.functions.registry import FunctionRegistry
from streamsql.results import Tombstone
from streamsql.schema import WINDOW_BOUNDS
from streamsql.types import BaseType

log = logging.getLogger(__name__)
_LONG = struct.Struct(">q")


@dataclass
class Outputs:
    """What one call of a pipeline produced, columnar (one entry per output record).

    In row mode (push queries) ``rows`` holds result tuples (key columns, then value
    columns) instead of encoded keys and values.
    """

    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    headers: list[Any] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    # The input offset of each output record, kept only by pipelines built with
    # ``offsets=True`` (a join re-keying its input in place logs failures by offset).
    offsets: list[int] = field(default_factory=list)

    def clear(self) -> None:
        self.keys.clear()
        self.values.clear()
        self.timestamps.clear()
        self.headers.clear()
        self.rows.clear()
        self.offsets.clear()


ProcessingLogger = Callable[[str, int, int, str], None]


@dataclass
class Pipeline:
    """A compiled pipeline: ``process(batch, outputs)`` and the generated source (for EXPLAIN
    and debugging)."""

    process: Callable[[Any, Outputs], None]
    source: str
    # Bytes of window at the end of each output key (a windowed source's keys written as
    # they came): the sink partitions by the key before them (WindowedStreamPartitioner).
    window_len: int = 0


def _reads_value(expr: e.Expression, source: DataSource) -> bool:
    """Whether ``expr`` reads a column other than ``source``'s key columns."""
    keys = {c.name for c in source.schema.key}
    return any(isinstance(n, e.ColumnRef) and n.name not in keys for n in expr.walk())


def _unpack_long(data: bytes, at: int) -> int:
    return _LONG.unpack_from(data, at)[0]


def build_pipeline(plan: QueryPlan, registry: FunctionRegistry, key_codec: Codec, value_codec: Codec,
                   sink_key_codec: Codec | None, sink_value_codec: Codec | None,
                   plog: ProcessingLogger, sink: DataSource | None = None,
                   rows: bool = False, timestamp_parser: Callable[[Any], int] | None = None,
                   sink_timestamp_parser: Callable[[Any], int] | None = None,
                   offsets: bool = False, push: bool = False) -> Pipeline:
    """Generate and compile the pipeline for ``plan`` (see module docstring).

    ``rows=True`` produces result tuples (push queries) instead of encoded records;
    ``offsets=True`` also keeps each output record's input offset (``Outputs.offsets``);
    ``push=True`` (with ``rows``) gives a push query's rows: in SELECT order
    (``plan.projection``), and, over a table, a deleted (or filtered-out) row as a
    ``Tombstone`` of its key columns and NULLs, as ksqlDB's push queries show them.
    """
    src = plan.source
    scope, names = source_scope(src, plan.alias)
    env: dict[str, Any] = {
        "_kdec": key_codec.decode, "_vdec": value_codec.decode, "_plog": plog,
        "_kenc": sink_key_codec.encode if sink_key_codec else None,
        "_venc": sink_value_codec.encode if sink_value_codec else None,
        "_tsparse": timestamp_parser, "_Fatal": QueryFailedError,
    }
    comp = ExpressionCompiler(registry, scope, env, clause="SELECT")
    nkey = len(src.schema.key)
    value_cols = src.schema.value
    fmt_cols = [i for i, c in enumerate(value_cols) if c.namespace == "VALUE"]
    header_cols = [i for i, c in enumerate(value_cols) if c.namespace != "VALUE"]
    pseudo = len(src.schema.columns)  # index of ROWTIME's local
    rowtime, rowpart, rowoff = names[pseudo], names[pseudo + 1], names[pseudo + 2]

    L: list[str] = []
    w = L.append
    w("def process(batch, out):")
    w("    _topic = batch.topic")
    w(f"    {rowpart} = batch.partition")
    if rows:
        w("    _rows = out.rows")
    else:
        w("    _ok, _ov, _ot, _oh = out.keys, out.values, out.timestamps, out.headers")
        if offsets:
            w("    _oo = out.offsets")
    w("    _hdrs = batch.headers")
    w("    _i = -1")
    w(f"    for _kb, _vb, _ts, {rowoff} in zip(batch.keys, batch.values, batch.timestamps, batch.offsets):")
    w("        _i += 1")
    w("        _h = _hdrs[_i] if _hdrs is not None else ()")
    # ---- decode
    windowed = src.window is not None
    if windowed:
        # A windowed key: the key, then the window (Kafka Streams' layout).
        wlen = 16 if src.window.kind == "SESSION" else 8
        ws_var, we_var = names[pseudo + 3], names[pseudo + 4]
        env["_unpack_long"] = _unpack_long
        w(f"        _wb = _kb[-{wlen}:] if _kb is not None else None")
        w(f"        _kb = (_kb[:-{wlen}] or None) if _kb is not None else None")
        if src.window.kind == "SESSION":
            w(f"        {we_var} = _unpack_long(_wb, 0) if _wb else None")
            w(f"        {ws_var} = _unpack_long(_wb, 8) if _wb else None")
        else:
            w(f"        {ws_var} = _unpack_long(_wb, 0) if _wb else None")
            w(f"        {we_var} = {ws_var} + {src.window.size or 0} if _wb else None")
    w("        try:")
    w("            _k = _kdec(_kb)")
    w("        except Exception as _exc:")
    w(f"            _plog(_topic, {rowpart}, {rowoff}, 'Failed to deserialize key from topic: ' + _topic + '. ' + str(_exc))")
    w("            continue")
    w("        try:")
    w("            _v = _vdec(_vb)")
    w("        except Exception as _exc:")
    w(f"            _plog(_topic, {rowpart}, {rowoff}, 'Failed to deserialize value from topic: ' + _topic + '. ' + str(_exc))")
    w("            continue")
    if nkey:
        klocals = ", ".join(names[:nkey])
        w("        if _k is None:")
        w(f"            {' = '.join(names[:nkey])} = None")
        w("        else:")
        w(f"            {klocals}, = _k")
    vlocals = [names[nkey + i] for i in fmt_cols]
    if vlocals:
        w("        if _v is None:")
        w(f"            {' = '.join(vlocals)} = None")
        w("        else:")
        w(f"            {', '.join(vlocals)}, = _v")
    for i in header_cols:
        col = value_cols[i]
        var = names[nkey + i]
        if col.namespace == "HEADERS":
            w(f"        {var} = [{{'KEY': _hk, 'VALUE': _hv}} for _hk, _hv in _h]")
        else:
            w(f"        {var} = None")
            w("        for _hk, _hv in _h:")
            w(f"            if _hk == {col.header_key!r}:")
            w(f"                {var} = _hv")
    # ---- timestamp
    if src.timestamp_column is not None:
        ts_var = scope.columns[src.timestamp_column].src
        ts_type = scope.columns[src.timestamp_column].type
        if ts_type.base is BaseType.STRING:
            w("        try:")
            w(f"            {rowtime} = None if {ts_var} is None else _tsparse({ts_var})")
            w("        except _Fatal:")  # ksql.timestamp.throw.on.invalid: the query stops
            w("            raise")
            w("        except Exception as _exc:")
            w(f"            _plog(_topic, {rowpart}, {rowoff}, 'Failed to extract timestamp: ' + str(_exc))")
            w("            continue")
        else:
            w(f"        {rowtime} = {ts_var}")
        w(f"        if {rowtime} is None or {rowtime} < 0:")
        w(f"            _plog(_topic, {rowpart}, {rowoff}, 'Timestamp extracted from the record is invalid: ' + str({rowtime}))")
        w("            continue")
    else:
        w(f"        {rowtime} = _ts")
    is_table = src.is_table
    if not is_table:
        # A stream record with a null value has no columns to filter on.
        w("        _nv = _v is None")
    else:
        w("        _nv = _v is None")
    # ---- filter
    if plan.where is not None:
        cond = comp.compile_predicate(plan.where).src
        w("        try:")
        w(f"            _keep = {cond}")
        w("        except Exception as _exc:")
        w(f"            _plog(_topic, {rowpart}, {rowoff}, 'Error evaluating WHERE: ' + str(_exc))")
        w("            _keep = None")
        if is_table and rows and push:
            # A push query over a table shows no row WHERE filters out (it keeps no state
            # to tell a row it showed before); a delete unless WHERE rules its key out.
            w("        if (_keep is False) if _nv else (_keep is not True):")
            w("            continue")
        elif is_table:
            w("        if _keep is not True and not _nv:")
            w("            _nv = True")
        else:
            w("        if _nv or _keep is not True:")
            w("            continue")
    # ---- projection
    out_cols = list(plan.key) + list(plan.value)
    udtf_ids = {id(f) for f in plan.table_functions}
    indent = "        "
    col_vars = []
    udtf_vars = []
    for j, oc in enumerate(out_cols):
        var = f"_o{j}"
        col_vars.append(var)
        if id(oc.expression) in udtf_ids:
            fn_src = comp.compile_call(oc.expression, "table").src  # type: ignore[arg-type]
            lv = f"_u{j}"
            udtf_vars.append((var, lv))
            w(f"{indent}try:")
            w(f"{indent}    {lv} = {fn_src}")
            w(f"{indent}except Exception as _exc:")
            w(f"{indent}    _plog(_topic, {rowpart}, {rowoff}, {'Error in table function ' + oc.name + ': '!r} + str(_exc))")
            w(f"{indent}    {lv} = None")
            w(f"{indent}if {lv} is None:")
            w(f"{indent}    {lv} = ()")
            continue
        expr_src = comp.compile(oc.expression).src
        if j < len(plan.key) and plan.partition_by and not plan.drop_null_key \
                and _reads_value(oc.expression, src):
            # ksqlDB computes a PARTITION BY expression that reads more than the key from the
            # record's value: with no value (a tombstone) it is NULL, ROWTIME included.
            expr_src = f"(None if _nv else {expr_src})"
        if expr_src in names:
            # A plain column cannot fail.
            w(f"{indent}{var} = {expr_src}")
            continue
        w(f"{indent}try:")
        w(f"{indent}    {var} = {expr_src}")
        w(f"{indent}except Exception as _exc:")
        w(f"{indent}    {var} = None")
        w(f"{indent}    _plog(_topic, {rowpart}, {rowoff}, {'Error computing ' + oc.name + ': '!r} + repr(_exc))")
    # Functions that failed on this record returned NULL; log them with the record's position.
    w(f"{indent}if _errs:")
    w(f"{indent}    for _what, _exc in _errs:")
    w(f"{indent}        _plog(_topic, {rowpart}, {rowoff}, 'Error in ' + _what + ': ' + repr(_exc))")
    w(f"{indent}    _errs.clear()")
    nk = len(plan.key)
    key_tuple = "(" + "".join(f"{v}, " for v in col_vars[:nk]) + ")"
    value_tuple = "(" + "".join(f"{v}, " for v in col_vars[nk:]) + ")"
    # Sink timestamp: a TIMESTAMP column of the sink, else the record's ROWTIME.
    out_ts = rowtime
    if sink is not None and sink.timestamp_column is not None and not rows:
        idx = [c.name for c in out_cols].index(sink.timestamp_column)
        if out_cols[idx].type.base is BaseType.STRING:
            env["_sink_tsparse"] = sink_timestamp_parser
            out_ts = f"(_sink_tsparse({col_vars[idx]}) if {col_vars[idx]} is not None else {rowtime})"
        else:
            out_ts = f"({col_vars[idx]} if {col_vars[idx]} is not None else {rowtime})"

    serialize_error = (f"Error serializing message to topic: {sink.topic}. " if sink is not None
                       else "Error serializing record: ")

    def emit(ind: str) -> None:
        if rows and push:
            order = plan.projection if plan.projection is not None else range(len(out_cols))
            row = "(" + "".join(f"{col_vars[i]}, " for i in order) + ")"
            if is_table:
                env["_Tombstone"] = Tombstone
                # A deleted row keeps its key: key columns and its window's bounds.
                kept = {i for i, c in enumerate(out_cols) if i < nk or (
                    isinstance(c.expression, e.ColumnRef) and c.expression.name in WINDOW_BOUNDS)}
                tomb = "_Tombstone((" + "".join(f"{col_vars[i]}, " if i in kept else "None, "
                                                for i in order) + "))"
                w(f"{ind}_rows.append({tomb} if _nv else {row})")
            else:
                w(f"{ind}if not _nv:")
                w(f"{ind}    _rows.append({row})")
            return
        if rows:
            # Result rows: a deleted or filtered-out row is simply not there.
            w(f"{ind}if not _nv:")
            w(f"{ind}    _rows.append({key_tuple[:-1] + value_tuple[1:]})")
            return
        # Encoding can fail on a value the source's format read but the sink's cannot write
        # (a lone surrogate in JSON, an INT beyond 32 bits in AVRO): that record goes to the
        # processing log, the others go on (the key and value are encoded before either is
        # appended, so a failed record leaves no half behind).
        w(f"{ind}try:")
        if windowed and not plan.rekeyed:
            w(f"{ind}    _ekb = (_kenc({key_tuple}) or b'') + _wb if _wb is not None else None")
        elif nk == 0:
            w(f"{ind}    _ekb = None")
        else:
            # A key whose columns are all NULL is a null key (some NULL: written as they are).
            if nk == 1:
                w(f"{ind}    _ekb = None if {col_vars[0]} is None else _kenc({key_tuple})")
            elif plan.rekeyed or plan.drop_null_key:
                # PARTITION BY several expressions writes the key even when all are NULL.
                w(f"{ind}    _ekb = _kenc({key_tuple})")
            else:
                w(f"{ind}    _ekb = None if {key_tuple} == {(None,) * nk!r} else _kenc({key_tuple})")
        w(f"{ind}    _evb = None if _nv else _venc({value_tuple})")
        w(f"{ind}except Exception as _exc:")
        w(f"{ind}    _plog(_topic, {rowpart}, {rowoff}, {serialize_error!r} + str(_exc))")
        w(f"{ind}    continue")
        w(f"{ind}_ok.append(_ekb)")
        w(f"{ind}_ov.append(_evb)")
        w(f"{ind}_ot.append({out_ts})")
        w(f"{ind}_oh.append(_h)")
        if offsets:
            w(f"{ind}_oo.append({rowoff})")

    if plan.drop_null_key:
        w(f"{indent}if _nv:")
        w(f"{indent}    continue")
        # Any grouping expression NULL: ksqlDB's grouper gives no key, the row is left out.
        w(f"{indent}if None in {key_tuple}:")
        w(f"{indent}    _plog(_topic, {rowpart}, {rowoff}, 'Record skipped: a grouping expression is NULL')")
        w(f"{indent}    continue")
    elif is_table and nk:
        w(f"{indent}if {key_tuple} == {(None,) * nk!r}:")
        w(f"{indent}    continue")
    if out_ts != rowtime:
        w(f"{indent}try:")
        w(f"{indent}    _sts = {out_ts}")
        w(f"{indent}except Exception as _exc:")
        w(f"{indent}    _plog(_topic, {rowpart}, {rowoff}, 'Invalid timestamp for the sink: ' + str(_exc))")
        w(f"{indent}    continue")
        w(f"{indent}if _sts < 0:")
        w(f"{indent}    _plog(_topic, {rowpart}, {rowoff}, 'Invalid timestamp for the sink: ' + str(_sts))")
        w(f"{indent}    continue")
        out_ts = "_sts"
    if udtf_vars:
        w(f"{indent}if _nv:")
        w(f"{indent}    continue")
        w(f"{indent}_n = max({', '.join(f'len({lv})' for _, lv in udtf_vars)}{', 0' if len(udtf_vars) == 1 else ''})")
        w(f"{indent}for _j in range(_n):")
        for var, lv in udtf_vars:
            w(f"{indent}    {var} = {lv}[_j] if _j < len({lv}) else None")
        emit(indent + "    ")
    else:
        emit(indent)
    source_text = "\n".join(L) + "\n"
    code = compile(source_text, f"<pipeline {src.name}>", "exec")
    exec(code, env)  # noqa: S102 - our own generated source
    window_len = (16 if src.window.kind == "SESSION" else 8) if windowed and not plan.rekeyed else 0
    return Pipeline(env["process"], source_text, window_len)
