"""Joins: each side re-keyed by its join expression into an internal topic, then one join
stage that keeps both sides' state and emits joined rows.

- stream-stream: both sides buffered for the WITHIN window (plus grace); a record joins the
  other side's records whose time is within range; the result's time is the later of the two.
  Without a GRACE PERIOD, an outer join emits the unmatched record at once (ksqlDB's older,
  eager semantics); with one, unmatched records are emitted when their window closes.
- stream-table: the table side is the latest row per key; a stream record looks it up.
- table-table: both sides are the latest row per key; a change on either side emits the new
  joined row, or a tombstone when the join no longer has a row for the key.

The joined row is projected by a generated function over both sides' columns and ROWKEY.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from streamsql.analyzer import OutputColumn, QueryPlan
from streamsql.catalog import DataSource
from streamsql.codegen import ExpressionCompiler
from streamsql.join_analyzer import JoinPlan, joined_scope
from streamsql.runtime.aggregate import DEFAULT_GRACE_MS, internal_codec
from streamsql.runtime.projection import filter_lines, projection_lines
from streamsql.runtime.log.base import ProducerRecord, RecordBatch
from streamsql.runtime.pipeline import build_pipeline
from streamsql.runtime.query import PipelineStage, Stage
from streamsql.schema import Column, LogicalSchema
from streamsql import expressions as e

if TYPE_CHECKING:
    from streamsql.engine import Engine

log = logging.getLogger(__name__)


@dataclass
class JoinState:
    """Both sides' state of one join (in memory; bounded by the WITHIN window for streams)."""

    left_rows: dict[Any, Any] = field(default_factory=dict)
    right_rows: dict[Any, Any] = field(default_factory=dict)
    # Table-table: keys whose joined row the output table currently shows.
    shown: set = field(default_factory=set)
    stream_time: int = -1
    # Stream-stream outer joins with grace: records not matched yet, by side.
    unmatched: dict[str, list] = field(default_factory=lambda: {"L": [], "R": []})


class JoinStage:
    """The join stage's input from one side (two of these share one JoinState)."""

    def __init__(self, name: str, source_topic: str, sink_topic: str, side: str, plan: JoinPlan,
                 state: JoinState, key_codec: Any, value_codec: Any, sink_key_codec: Any,
                 sink_value_codec: Any, project: Callable[..., Any]) -> None:
        self.name = name
        self.source_topic = source_topic
        self.sink_topic = sink_topic
        self.side = side
        self.plan = plan
        self.state = state
        self.key_codec = key_codec
        self.value_codec = value_codec
        self.sink_key_codec = sink_key_codec
        self.sink_value_codec = sink_value_codec
        self.project = project
        w = plan.within
        self.before = w.before if w else 0
        self.after = w.after if w else 0
        self.grace = w.grace if w and w.grace is not None else None
        self.sink_ts_index: int | None = None

    def _emit(self, out: list[ProducerRecord], jk: Any, left: tuple | None, right: tuple | None, ts: int) -> None:
        projected = self.project(jk, left, right)
        if projected is None:
            return
        key, row = projected
        kb = None if key[0] is None else self.sink_key_codec.encode(key)
        if self.sink_ts_index is not None and row[self.sink_ts_index] is not None:
            ts = row[self.sink_ts_index]  # the sink's TIMESTAMP column
        out.append(ProducerRecord(kb, self.sink_value_codec.encode(row), ts))

    def _tombstone(self, out: list[ProducerRecord], jk: Any, ts: int) -> None:
        out.append(ProducerRecord(self.sink_key_codec.encode((jk,)), None, ts))

    def process(self, batch: RecordBatch) -> list[ProducerRecord]:
        out: list[ProducerRecord] = []
        for kb, vb, ts in zip(batch.keys, batch.values, batch.timestamps):
            jk = self.key_codec.decode(kb)[0] if kb is not None else None
            row = self.value_codec.decode(vb) if vb is not None else None
            kind = self.plan.kind
            if kind == "FOREIGN_KEY":
                self._foreign_key(out, jk, row, ts)
            elif kind == "STREAM_STREAM":
                self._stream_stream(out, jk, row, ts)
            elif kind == "STREAM_TABLE":
                self._stream_table(out, jk, row, ts)
            else:
                self._table_table(out, jk, row, ts)
        return out

    # ---------------------------------------------------------------------- stream-table
    def _stream_table(self, out: list[ProducerRecord], jk: Any, row: tuple | None, ts: int) -> None:
        st = self.state
        if self.side == "R":
            if jk is None:
                return
            if row is None:
                st.right_rows.pop(jk, None)
            else:
                st.right_rows[jk] = row
            return
        if row is None:
            return
        match = st.right_rows.get(jk) if jk is not None else None
        if match is not None or self.plan.join_type == "LEFT":
            self._emit(out, jk, row, match, ts)

    # ---------------------------------------------------------------------- table-table
    def _table_table(self, out: list[ProducerRecord], jk: Any, row: tuple | None, ts: int) -> None:
        if jk is None:
            return
        st = self.state
        mine, other = (st.left_rows, st.right_rows) if self.side == "L" else (st.right_rows, st.left_rows)
        if row is None:
            mine.pop(jk, None)
        else:
            mine[jk] = (row, ts)
        left = st.left_rows.get(jk)
        right = st.right_rows.get(jk)
        jt = self.plan.join_type
        present = {"INNER": left is not None and right is not None,
                   "LEFT": left is not None,
                   "RIGHT": right is not None,
                   "FULL": left is not None or right is not None}[jt]
        if present:
            out_ts = max(x[1] for x in (left, right) if x is not None)
            self._emit(out, jk, left[0] if left else None, right[0] if right else None, out_ts)
            st.shown.add(jk)
        elif jk in st.shown:
            st.shown.discard(jk)
            self._tombstone(out, jk, ts)

    # ---------------------------------------------------------------------- foreign key
    def _foreign_key(self, out: list[ProducerRecord], jk: Any, row: tuple | None, ts: int) -> None:
        """Left rows arrive keyed by their primary key with the foreign key as a last column;
        right rows by their key. An index from foreign key to left keys re-joins on right changes."""
        if jk is None:
            return
        st = self.state
        index: dict[Any, set] = st.unmatched.setdefault("FK", {})  # type: ignore[assignment, arg-type]
        inner = self.plan.join_type == "INNER"
        if self.side == "L":
            old = st.left_rows.pop(jk, None)
            if old is not None:
                index.get(old[0], set()).discard(jk)
            if row is None:
                self._tombstone(out, jk, ts)
                st.shown.discard(jk)
                return
            fk, left = row[-1], row[:-1]
            st.left_rows[jk] = (fk, left)
            if fk is not None:
                index.setdefault(fk, set()).add(jk)
            right = st.right_rows.get(fk) if fk is not None else None
            self._fk_emit(out, jk, left, right, ts, inner)
            return
        if row is None:
            st.right_rows.pop(jk, None)
        else:
            st.right_rows[jk] = row
        for pk in sorted(index.get(jk, ()), key=lambda k: (str(type(k)), k)):
            self._fk_emit(out, pk, st.left_rows[pk][1], row, ts, inner)

    def _fk_emit(self, out: list[ProducerRecord], pk: Any, left: tuple, right: tuple | None, ts: int,
                 inner: bool) -> None:
        st = self.state
        if right is None and inner:
            if pk in st.shown:
                st.shown.discard(pk)
                self._tombstone(out, pk, ts)
            return
        self._emit(out, pk, left, right, ts)
        st.shown.add(pk)

    # --------------------------------------------------------------------- stream-stream
    def _stream_stream(self, out: list[ProducerRecord], jk: Any, row: tuple | None, ts: int) -> None:
        st = self.state
        if row is None:
            return
        if ts > st.stream_time:
            st.stream_time = ts
        jt = self.plan.join_type
        outer_mine = (self.side == "L" and jt in ("LEFT", "FULL")) or (self.side == "R" and jt in ("RIGHT", "FULL"))
        if self.grace is not None:
            self._emit_closed_unmatched(out)
        if jk is None:
            if outer_mine:
                self._emit_side(out, jk, row, None, ts)
            return
        mine, other = (st.left_rows, st.right_rows) if self.side == "L" else (st.right_rows, st.left_rows)
        entry = [ts, row, False]
        mine.setdefault(jk, []).append(entry)
        if self.side == "L":
            lo, hi = ts - self.before, ts + self.after
        else:
            lo, hi = ts - self.after, ts + self.before
        matched = False
        for other_entry in other.get(jk, ()):
            o_ts = other_entry[0]
            if lo <= o_ts <= hi:
                matched = True
                other_entry[2] = True
                self._emit_side(out, jk, row, other_entry[1], max(ts, o_ts))
        if matched:
            entry[2] = True
        elif outer_mine:
            if self.grace is None:
                self._emit_side(out, jk, row, None, ts)
            else:
                st.unmatched[self.side].append((ts, jk, entry))
        self._expire(jk)

    def _emit_side(self, out: list[ProducerRecord], jk: Any, mine: tuple | None, other: tuple | None,
                   ts: int) -> None:
        if self.side == "L":
            self._emit(out, jk, mine, other, ts)
        else:
            self._emit(out, jk, other, mine, ts)

    def _emit_closed_unmatched(self, out: list[ProducerRecord]) -> None:
        st = self.state
        for side in ("L", "R"):
            pending = st.unmatched[side]
            keep = []
            for ts, jk, entry in pending:
                span = self.after if side == "L" else self.before
                if ts + span + (self.grace or 0) < st.stream_time:
                    if not entry[2]:
                        if side == "L":
                            self._emit(out, jk, entry[1], None, ts)
                        else:
                            self._emit(out, jk, None, entry[1], ts)
                else:
                    keep.append((ts, jk, entry))
            st.unmatched[side] = keep

    def _expire(self, jk: Any) -> None:
        st = self.state
        horizon = st.stream_time - (self.before + self.after + (self.grace if self.grace is not None
                                                                  else DEFAULT_GRACE_MS))
        for rows in (st.left_rows, st.right_rows):
            entries = rows.get(jk)
            if entries and entries[0][0] < horizon:
                rows[jk] = [x for x in entries if x[0] >= horizon]


def build_projection(engine: "Engine", plan: JoinPlan, query_id: str) -> Callable[..., Any]:
    """Generate ``project(jk, left_row, right_row)``: (key tuple, value tuple), or None when
    WHERE rejects the joined row."""
    scope = joined_scope(plan.left, plan.right, plan.key_type, plan.source_names)
    plog = engine._processing_logger(query_id)
    env: dict[str, Any] = {"_plog": plog, "_topic": query_id}
    comp = ExpressionCompiler(engine.registry, scope, env, clause="SELECT")
    nl, nr = len(plan.left.row), len(plan.right.row)
    lines = ["def project(jk, lrow, rrow):"]
    lines.append("    if lrow is None:")
    lines.append(f"        {' = '.join(f'l{i}' for i in range(nl))} = None")
    lines.append("    else:")
    lines.append(f"        {''.join(f'l{i}, ' for i in range(nl))}= lrow")
    lines.append("    if rrow is None:")
    lines.append(f"        {' = '.join(f'r{i}' for i in range(nr))} = None")
    lines.append("    else:")
    lines.append(f"        {''.join(f'r{i}, ' for i in range(nr))}= rrow")
    if plan.where is not None:
        lines += filter_lines(comp, plan.where, "WHERE")
    lines += projection_lines(comp, list(plan.key) + list(plan.value), len(plan.key))
    src = "\n".join(lines) + "\n"
    exec(compile(src, f"<join projection {query_id}>", "exec"), env)  # noqa: S102 - generated source
    return env["project"]


def _combined(nl: int, nr: int) -> Callable[..., Any]:
    """``project`` for an intermediate join step: the key and both sides' rows, NULL-padded."""
    left_nulls, right_nulls = (None,) * nl, (None,) * nr

    def project(jk: Any, lrow: tuple | None, rrow: tuple | None) -> tuple:
        return (jk,), (lrow if lrow is not None else left_nulls) + (rrow if rrow is not None else right_nulls)
    return project


async def build_join_stages(engine: "Engine", query_id: str, plan: JoinPlan, sink: DataSource,
                            props: dict[str, Any]) -> list[Stage]:
    """The stages of a join chain ending at ``sink`` (see the module docstring)."""
    return await _build_step(engine, query_id, plan, sink.topic, engine.codec(sink, "key"),
                             engine.codec(sink, "value"), sink.timestamp_column)


async def _build_step(engine: "Engine", query_id: str, plan: JoinPlan, out_topic: str, out_key: Any,
                      out_value: Any, sink_ts_column: str | None) -> list[Stage]:
    stages: list[Stage] = []
    left_input: str | None = None
    if plan.previous is not None:
        # The previous step writes its joined rows, keyed by its join key, to an internal topic.
        prev = plan.previous
        left_input = f"_streamsql_{query_id}-Join-{prev.index}"
        prev_src = plan.left.source
        await engine._ensure_topic(left_input, await _partitions(engine, prev.source))
        stages += await _build_step(engine, query_id, prev, left_input,
                                    internal_codec(prev_src.schema.key), internal_codec(prev_src.schema.value),
                                    None)
    state = JoinState()
    fk = plan.kind == "FOREIGN_KEY"
    final = bool(plan.key)
    project = build_projection(engine, plan, query_id) if final else _combined(len(plan.left.row), len(plan.right.row))
    joins: list[JoinStage] = []
    for side_name, side in (("L", plan.left), ("R", plan.right)):
        src = side.source
        synthetic = side_name == "L" and left_input is not None
        topic = f"_streamsql_{query_id}-Join-{plan.index}-{'Left' if side_name == 'L' else 'Right'}-repartition"
        await engine._ensure_topic(topic, await _partitions(engine, src if not synthetic else plan.source))
        value_columns = tuple(Column(f"C{i}", c.type, "VALUE") for i, (_, c) in enumerate(side.row))
        # The side's whole row (key, value and pseudo columns), keyed by its join expression.
        row_cols = tuple(OutputColumn(f"C{i}", e.ColumnRef(name), c.type)
                         for i, (name, (_, c)) in enumerate(zip(side.row_source_columns, side.row)))
        key_out = OutputColumn("JOINKEY", side.key_expr, plan.key_type)
        if fk:
            # Foreign-key join: the left stays keyed by its primary key and carries the foreign
            # key as a last column; the right is keyed by its own key.
            if side_name == "L":
                pk = src.schema.key[0]
                fk_type = plan.right.source.schema.key[0].type
                row_cols += (OutputColumn("FK", side.key_expr, fk_type),)
                value_columns += (Column("FK", fk_type, "VALUE"),)
                key_out = OutputColumn("JOINKEY", e.ColumnRef(pk.name), pk.type)
            else:
                rk = src.schema.key[0]
                key_out = OutputColumn("JOINKEY", e.ColumnRef(rk.name), rk.type)
        key_columns = (Column("JOINKEY", key_out.type, "KEY"),)
        key_codec = internal_codec(key_columns)
        value_codec = internal_codec(value_columns)
        pre = QueryPlan(src, src.name, None, (key_out,), row_cols, LogicalSchema(key_columns, value_columns),
                        rekeyed=True)
        if synthetic:
            in_key, in_value, ts_parser = internal_codec(src.schema.key), internal_codec(src.schema.value), None
            in_topic = left_input
        else:
            in_key, in_value = engine.codec(src, "key"), engine.codec(src, "value")
            ts_parser, in_topic = engine._timestamp_parser(src), src.topic
        pipeline = build_pipeline(pre, engine.registry, in_key, in_value, key_codec, value_codec,
                                  engine._processing_logger(query_id), timestamp_parser=ts_parser)
        stages.append(PipelineStage(f"{query_id}-{plan.index}-{side_name}-rekey", in_topic, topic, pipeline))
        joins.append(JoinStage(f"{query_id}-join-{plan.index}-{side_name}", topic, out_topic, side_name, plan,
                               state, key_codec, value_codec, out_key, out_value, project))
    if final and sink_ts_column is not None:
        names = [c.name for c in plan.value]
        if sink_ts_column in names:
            for j in joins:
                j.sink_ts_index = names.index(sink_ts_column)
    return stages + joins


async def _partitions(engine: "Engine", source: DataSource) -> int:
    info = await engine.log.describe_topic(source.topic)
    return info.partitions if info else 1
