"""The consumer group protocol by which a stage's nodes share its tasks on Kafka.

aiokafka lets a group's leader compute the assignment (a ``partition_assignment_strategy``);
this one is Kafka Streams' (``StreamsPartitionAssignor`` with KIP-441's high-availability
assignor), on top of the plain consumer protocol:

* each member says, in its JoinGroup metadata's user data, which tasks it ran and kept
  warm under the previous assignment and how far its local state of each task goes (the
  changelog positions its RocksDB checkpoints cover, ``TaskPlacement.local_offsets``);
* the leader turns that into active, standby and warm-up tasks per member
  (``streamsql.runtime.assignment.assign``): a task stays where its state is, moves only
  to a member that has caught up on it, and has ``standby_replicas`` warm copies;
* each member's share comes back as ordinary partitions (task p: partition p of every
  topic of the stage) plus, in the assignment's user data, its standby and warm-up tasks
  (``Consumer.standbys``), which ``Log.group_tasks`` can read back for any member.

Every member of a group must speak this protocol: nodes of a version that assigned by
``range`` cannot share a query with nodes of this one (stop them all, then start the new).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import orjson
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (ConsumerProtocolMemberAssignment,
                                           ConsumerProtocolMemberMetadata)

from streamsql.runtime.assignment import Client, assign
from streamsql.runtime.log.base import MemberTasks, TaskPlacement

log = logging.getLogger(__name__)

PROTOCOL = "streamsql-tasks"
_VERSION = 1


def decode_assignment(raw: bytes) -> MemberTasks:
    """A member's assignment bytes (as DescribeGroups returns them) as ``MemberTasks``."""
    decoded = ConsumerProtocolMemberAssignment.decode(raw)
    active = frozenset((topic, p) for topic, ps in decoded.assignment for p in ps)
    extra = _user_data(decoded.user_data)
    return MemberTasks(active, frozenset(extra.get("standby", ())),
                       frozenset(extra.get("warmup", ())))


def _user_data(raw: bytes | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) and data.get("v") == _VERSION else {}


@dataclass
class TaskAssignor(AbstractPartitionAssignor):
    """One group member's side of the protocol (an instance per consumer: it remembers the
    member's last assignment and asks its stage for local offsets)."""

    node: str
    placement: TaskPlacement
    # The latest assignment's tasks of this member.
    active: frozenset[int] = frozenset()
    standby: frozenset[int] = frozenset()
    warmup: frozenset[int] = frozenset()

    name = PROTOCOL  # type: ignore[assignment]

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:  # type: ignore[override]
        local = self.placement.local_offsets
        offsets = local() if local is not None else {}
        data = {"v": _VERSION, "node": self.node, "stateful": local is not None,
                "active": sorted(self.active), "standby": sorted(self.standby | self.warmup),
                "offsets": {str(p): int(o) for p, o in offsets.items()}}
        return ConsumerProtocolMemberMetadata(0, sorted(topics), orjson.dumps(data))

    def assign(self, cluster: Any,  # type: ignore[override]
               members: Mapping[str, ConsumerProtocolMemberMetadata]
               ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics = sorted({t for m in members.values() for t in m.subscription})
        counts = {t: len(cluster.partitions_for_topic(t) or ()) for t in topics}
        tasks = max(counts.values(), default=0)
        clients = []
        stateful = False
        for member_id, meta in members.items():
            data = _user_data(meta.user_data)
            stateful = stateful or bool(data.get("stateful"))
            offsets = {int(p): int(o) for p, o in (data.get("offsets") or {}).items()}
            clients.append(Client(member_id, str(data.get("node") or member_id),
                                  frozenset(data.get("active") or ()),
                                  frozenset(data.get("standby") or ()), offsets))
        placement = self.placement
        result = assign(clients, tasks,
                        standbys=placement.standby_replicas if stateful else 0,
                        max_warmups=placement.max_warmup_replicas if stateful else 0,
                        acceptable_lag=placement.acceptable_recovery_lag)
        out: dict[str, ConsumerProtocolMemberAssignment] = {}
        for client in clients:
            mine = result.active.get(client.member, frozenset())
            parts = [(t, sorted(p for p in mine if p < counts[t])) for t in topics]
            standby = result.standby.get(client.member, frozenset())
            # What the member warms up to take: its warm-ups, and standbys of tasks that are
            # to move to it. It asks for the follow-up assignment once all have caught up
            # (Kafka Streams' leader asks on a timer instead, probing.rebalance.interval.ms).
            warmup = (result.warmup.get(client.member, frozenset())
                      | result.incoming.get(client.member, frozenset()))
            data = {"v": _VERSION, "standby": sorted(standby), "warmup": sorted(warmup)}
            out[client.member] = ConsumerProtocolMemberAssignment(
                0, [(t, ps) for t, ps in parts if ps], orjson.dumps(data))
        log.info("assigned %d tasks of %s to %d members: %s", tasks, ", ".join(topics),
                 len(clients), "; ".join(
                     f"{c.node}: active {sorted(result.active.get(c.member, ()))} standby "
                     f"{sorted(result.standby.get(c.member, ()))} warm-up "
                     f"{sorted(result.warmup.get(c.member, ()))}" for c in clients))
        return out

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:  # type: ignore[override]
        self.active = frozenset(p for _, ps in assignment.assignment for p in ps)
        extra = _user_data(assignment.user_data)
        self.standby = frozenset(extra.get("standby", ()))
        self.warmup = frozenset(extra.get("warmup", ()))
