"""Kafka protocol requests aiokafka does not offer, for ``runtime.log.kafka``.

``StableOffsetFetch``: OffsetFetch v7 with ``require_stable`` (KIP-447). aiokafka fetches a
group's offsets with v3 at most, which answers with the last offsets whose transaction has
completed *as far as the offsets partition knows*: right after a transaction commits (its
markers are written after ``commit_transaction`` returns), v3 may still answer the offset
from before it while the same transaction's changelog records are already readable. A task
that restored the new state and read on from the old offset would count that transaction's
input twice. With ``require_stable`` the broker answers UNSTABLE_OFFSET_COMMIT for a
partition while a transaction that commits its offset is pending, and the caller asks again.
"""
from __future__ import annotations

from typing import TypeAlias

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (Boolean, CompactArray, CompactString, Int16, Int32, Int64,
                                     Schema, TaggedFields)

__all__ = ["StableOffsetFetch", "UNSTABLE_OFFSET_COMMIT"]

UNSTABLE_OFFSET_COMMIT = 88


class OffsetFetchResponse_v7(Response):
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("metadata", CompactString("utf-8")),
                ("error_code", Int16),
                ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partition_indexes", CompactArray(Int32)),
            ("tags", TaggedFields))),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


_Struct: TypeAlias = OffsetFetchRequest_v7


class StableOffsetFetch(Request[_Struct]):
    """OffsetFetch of ``group``'s offsets for ``partitions`` (topic, [partition, ...]) with
    ``require_stable``. The response's ``topics`` hold (name, [(partition, offset, epoch,
    metadata, error_code, tags)], tags); offset -1 is "none committed"."""

    API_KEY = 9

    def __init__(self, group: str, partitions: list[tuple[str, list[int]]]) -> None:
        self._group = group
        self._partitions = partitions

    def build(self, request_struct_class: type[_Struct]) -> _Struct:
        return request_struct_class(
            self._group, [(topic, parts, {}) for topic, parts in self._partitions], True, {})
