"""Standby tasks (``streamsql.runtime.standby``) and the group protocol that places them
(``streamsql.runtime.log.kafka_assignor``), without a cluster: a standby follows the
changelog an active task writes (on the embedded log), a promoted standby replays nothing,
a node reports the state it has on disk, a warm-up asks for the follow-up assignment once
caught up; members' reports travel through the protocol's bytes to the leader and back.
(The same on real brokers, with nodes killed: ``tests/test_kafka_standby.py``.)"""
from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka.coordinator.protocol import (ConsumerProtocolMemberAssignment,
                                           ConsumerProtocolMemberMetadata)

from streamsql.runtime.log.base import TaskPlacement
from streamsql.runtime.log.embedded import EmbeddedLog
from streamsql.runtime.log.kafka_assignor import TaskAssignor, decode_assignment
from streamsql.runtime.standby import StandbyTasks
from streamsql.state import KeyValueStoreSpec, TaskState, read_positions

KV = KeyValueStoreSpec("agg", changelog="q1-agg-changelog")


async def _one_task() -> int:
    return 1


async def _write(state: TaskState, start: int, n: int) -> None:
    """``n`` committed updates of keys k0..k9."""
    store = state.kv("agg")
    for i in range(start, start + n):
        store.put(b"k%d" % (i % 10), i)
        if i % 7 == 0:
            await state.commit({})
    await state.commit({})


def _rows(state: TaskState) -> list:
    return list(state.kv("agg").all())


def test_a_standby_follows_the_changelog_and_its_promotion_replays_nothing(tmp_path: Path):
    async def main() -> None:
        log = EmbeddedLog(tmp_path / "log")
        active = await TaskState.open(tmp_path / "node-a" / "0", [KV], log=log)
        await _write(active, 0, 100)
        standby = StandbyTasks(log, tmp_path / "node-b", [KV], "stage", _one_task)
        await standby.assign({0}, set())
        assert await standby.catch_up() == 100  # opened: restored from the changelog
        assert _rows(standby.open[0]) == _rows(active)
        await _write(active, 100, 35)
        assert await standby.catch_up() == 35  # only what is new
        assert await standby.catch_up() == 0
        assert _rows(standby.open[0]) == _rows(active)
        assert standby.offsets() == {0: 135}

        # The task moves to node-b: the standby gives its directory to the active task.
        await standby.release({0})
        assert not standby.open and standby.offsets() == {0: 135}
        promoted = await TaskState.open(tmp_path / "node-b" / "0", [KV], log=log,
                                        uncommitted_tail="replay")
        assert promoted.restore_stats["agg"].replayed == 0
        assert _rows(promoted) == _rows(active)
        promoted.close()
        active.close()
        await standby.close()
        await log.close()
    asyncio.run(main())


def test_a_node_reports_the_state_it_has_on_disk(tmp_path: Path):
    async def main() -> None:
        log = EmbeddedLog(tmp_path / "log")
        for p, n in ((0, 12), (3, 40)):
            state = await TaskState.open(tmp_path / "stage" / str(p), [KV], log=log, partition=p,
                                         partitions=4)
            await _write(state, 0, n)
            state.close()
        assert read_positions(tmp_path / "stage" / "3") == {"agg": 40}
        assert read_positions(tmp_path / "stage" / "9") is None
        # A node starting again reports what its directories hold, before opening any.
        standby = StandbyTasks(log, tmp_path / "stage", [KV], "stage", _one_task)
        assert standby.offsets() == {0: 12, 3: 40}
        await log.close()
    asyncio.run(main())


def test_warm_ups_ask_for_the_tasks_once_caught_up(tmp_path: Path):
    async def main() -> None:
        log = EmbeddedLog(tmp_path / "log")
        active = await TaskState.open(tmp_path / "a" / "0", [KV], log=log)
        await _write(active, 0, 50)
        asked: list[int] = []
        standby = StandbyTasks(log, tmp_path / "b", [KV], "stage", _one_task, acceptable_lag=0)
        standby.on_warm = lambda: asked.append(1)
        await standby.assign(set(), {0})
        await standby.catch_up()
        assert asked == [1]
        await _write(active, 50, 10)
        await standby.catch_up()
        assert asked == [1]  # once per assignment
        active.close()
        await standby.close()
        await log.close()
    asyncio.run(main())


class _Cluster:
    """aiokafka's cluster metadata, as much as an assignor reads: partitions per topic."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.counts[topic])) if topic in self.counts else None


def test_reports_and_assignments_travel_through_the_group_protocol():
    """Two members of a join stage (two topics, 4 tasks): member a has state of every task,
    b of none. The leader keeps the tasks with a (b is not caught up), gives b standbys and
    warm-ups; each member reads its share back from the bytes the coordinator relays."""
    offsets = {"a": {p: 50_000 for p in range(4)}, "b": {}}
    members = {m: TaskAssignor(f"node-{m}", TaskPlacement(1, 2, 100, (lambda m=m: offsets[m])))
               for m in ("a", "b")}
    topics = ["left", "right"]
    joined = {m: ConsumerProtocolMemberMetadata.decode(a.metadata(topics).encode())
              for m, a in members.items()}
    assignments = members["a"].assign(_Cluster({"left": 4, "right": 4}), joined)
    for m, assignor in members.items():
        raw = assignments[m].encode()
        assignor.on_assignment(ConsumerProtocolMemberAssignment.decode(raw))
        seen = decode_assignment(raw)
        assert seen.standby == assignor.standby and seen.warmup == assignor.warmup
    a, b = members["a"], members["b"]
    assert a.active == {0, 1, 2, 3} and not b.active
    assert b.standby == {0, 1, 2, 3} and b.warmup  # warming up what it is to get
    assert decode_assignment(assignments["a"].encode()).active == {
        (t, p) for t in topics for p in range(4)}

    # b caught up: the next assignment splits the tasks; each keeps a standby of the others.
    offsets["b"] = dict(offsets["a"])
    joined = {m: ConsumerProtocolMemberMetadata.decode(x.metadata(topics).encode())
              for m, x in members.items()}
    assignments = a.assign(_Cluster({"left": 4, "right": 4}), joined)
    for m, assignor in members.items():
        assignor.on_assignment(ConsumerProtocolMemberAssignment.decode(assignments[m].encode()))
    assert len(a.active) == len(b.active) == 2 and a.active | b.active == {0, 1, 2, 3}
    assert a.standby == b.active and b.standby == a.active and not a.warmup | b.warmup


def test_a_stage_without_state_is_spread_evenly_and_stays_put():
    """No member has state (a stateless stage): an even split, no standbys; a third member
    joining takes tasks from the others without shuffling the rest."""
    assignors = {m: TaskAssignor(f"node-{m}", TaskPlacement(1)) for m in ("a", "b")}

    def rebalance() -> dict[str, frozenset[int]]:
        joined = {m: ConsumerProtocolMemberMetadata.decode(x.metadata(["src"]).encode())
                  for m, x in assignors.items()}
        out = next(iter(assignors.values())).assign(_Cluster({"src": 10}), joined)
        for m, x in assignors.items():
            x.on_assignment(ConsumerProtocolMemberAssignment.decode(out[m].encode()))
        assert not any(x.standby or x.warmup for x in assignors.values())
        return {m: x.active for m, x in assignors.items()}

    before = rebalance()
    assert sorted(map(len, before.values())) == [5, 5]
    assignors["c"] = TaskAssignor("node-c", TaskPlacement(1))
    after = rebalance()
    assert sorted(map(len, after.values())) == [3, 3, 4]
    moved = sum(len(before[m] - after[m]) for m in before)
    assert moved == 3
