"""Kafka protocol requests aiokafka does not offer, for ``runtime.log.kafka``.

``StableOffsetFetch``: OffsetFetch v7 with ``require_stable`` (KIP-447). aiokafka fetches a
group's offsets with v3 at most, which answers with the last offsets whose transaction has
completed *as far as the offsets partition knows*: right after a transaction commits (its
markers are written after ``commit_transaction`` returns), v3 may still answer the offset
from before it while the same transaction's changelog records are already readable. A task
that restored the new state and read on from the old offset would count that transaction's
input twice. With ``require_stable`` the broker answers UNSTABLE_OFFSET_COMMIT for a
partition while a transaction that commits its offset is pending, and the caller asks again.

``DeleteGroups``: aiokafka has DeleteGroups' wire structs but no request of its own to send
them with; a finished transient query deletes its consumer groups with it.

``MemberTxnOffsetCommit``: TxnOffsetCommit v3 (KIP-447). aiokafka commits a transaction's
offsets with v0, which does not say which group member commits them: the group coordinator
cannot tell a node that lost its partitions in a rebalance (a "zombie") from their new
owner, and takes its offsets. v3 carries the member's generation and member id (and group
instance id); the coordinator answers ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID or
FENCED_INSTANCE_ID to a member that is no longer the current one, and the zombie's
transaction can only be aborted. Field order as in Apache Kafka's
``TxnOffsetCommitRequest.json`` / ``TxnOffsetCommitResponse.json``.
"""
from __future__ import annotations

from typing import TypeAlias

from aiokafka.protocol.admin import DeleteGroupsRequestStruct
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (Boolean, CompactArray, CompactString, Int16, Int32, Int64,
                                     Schema, TaggedFields)

__all__ = ["DeleteGroups", "MemberTxnOffsetCommit", "StableOffsetFetch", "UNSTABLE_OFFSET_COMMIT"]

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


class TxnOffsetCommitResponse_v3(Response):
    API_KEY = 28
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("error_code", Int16),
                ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class TxnOffsetCommitRequest_v3(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 28
    API_VERSION = 3
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),  # nullable
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("committed_metadata", CompactString("utf-8")),  # nullable
                ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class MemberTxnOffsetCommit(Request[TxnOffsetCommitRequest_v3]):
    """TxnOffsetCommit v3 of ``offsets`` ({topic: [(partition, offset, metadata), ...]}) for
    ``group`` inside the transaction of (``transactional_id``, ``producer_id``,
    ``producer_epoch``), as group member ``member_id`` of ``generation_id`` (-1 and "": no
    member, the coordinator checks nothing, as with v0-v2). Sent to the group's coordinator.
    The response's ``topics`` hold (name, [(partition, error_code, tags)], tags)."""

    API_KEY = 28

    def __init__(self, transactional_id: str, group: str, producer_id: int, producer_epoch: int,
                 generation_id: int, member_id: str, group_instance_id: str | None,
                 offsets: dict[str, list[tuple[int, int, str]]]) -> None:
        self._args = (transactional_id, group, producer_id, producer_epoch, generation_id,
                      member_id, group_instance_id)
        self._offsets = offsets

    def build(self, request_struct_class: type[TxnOffsetCommitRequest_v3]
              ) -> TxnOffsetCommitRequest_v3:
        # Leader epoch -1: unknown (the broker then skips its fencing by leader epoch).
        topics = [(topic, [(p, offset, -1, meta, {}) for p, offset, meta in parts], {})
                  for topic, parts in self._offsets.items()]
        return request_struct_class(*self._args, topics, {})


class DeleteGroups(Request[DeleteGroupsRequestStruct]):
    """DeleteGroups of ``groups``; the response's ``results`` hold (group_id, error_code)."""

    API_KEY = 42

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(self, request_struct_class: type[DeleteGroupsRequestStruct]) -> DeleteGroupsRequestStruct:
        return request_struct_class(self._groups)
