"""ksqlDB's query-validation cases on real Kafka: the same engine code, another Log.

A deterministic sample of the stateless, stateful and join cases (every Nth of each, in the
order the suite collects them) runs twice: on the in-memory embedded log, as the QTT suite
runs it, and on the session's Kafka broker, each case in a namespace of its own
(``PrefixedLog``: cases reuse topic names). Each case must come out the same on both: it
passes on Kafka exactly when it passes on the embedded log, with the same records (or the
same error).
"""
from __future__ import annotations

import asyncio
import os

import pytest

from streamsql.runtime.log.kafka import KafkaLog
from streamsql.testing.qtt import KAFKA_CONFIG, CaseResult, compare, run_case_async, run_case_on_kafka
from streamsql.testing.suite import category, collect
from tests.test_qtt import QTT

pytestmark = pytest.mark.timeout(600)

# Every STEP[category]-th case: about 200 cases, ~50 s on 2 cores (the broker creating
# topics is much of it, so a few cases run at a time).
STEP = {"stateless": 8, "stateful": 4, "join": 3}
CONCURRENT_CASES = 4
# Cases run besides the sample, whatever the step: queries whose topology chains stages
# the sample may not (GROUP BY and PARTITION BY over a join).
PINNED = {("group-by.json", "windowed join"), ("sum.json", "sum int left join of table"),
          ("timestamp-to-string.json", "millis to string in join"),
          ("partition-by.json", "partition by non-Key in join on Key"),
          ("partition-by.json", "only key column - select star - with join on value columns")}


def _sample() -> list[tuple[str, dict]]:
    if not QTT.is_dir():
        return []
    by_category: dict[str, list[tuple[str, dict]]] = {}
    pinned = []
    for file, case in collect(QTT):
        by_category.setdefault(category(file), []).append((file, case))
        if (file, case.get("name")) in PINNED:
            pinned.append((file, case))
    sample = [w for cat, step in STEP.items() for w in by_category.get(cat, [])[::step]]
    return sample + [w for w in pinned if not any(w is s for s in sample)]


SAMPLE = _sample()


def _id(work: tuple[str, dict]) -> str:
    return f"{work[0]}::{work[1]['name']}"


def _require_sample() -> None:
    if not SAMPLE:
        if os.environ.get("CI"):
            pytest.fail(f"QTT cases not found at {QTT}")
        pytest.skip(f"QTT cases not found at {QTT}")


@pytest.fixture(scope="module")
def results(kafka) -> list[tuple[CaseResult, CaseResult]]:
    """(embedded result, Kafka result) of every sampled case, in sample order."""
    _require_sample()

    async def main() -> list[tuple[CaseResult, CaseResult]]:
        shared = KafkaLog(kafka.bootstrap_servers, KAFKA_CONFIG)
        slots = asyncio.Semaphore(CONCURRENT_CASES)

        async def both(case: dict) -> tuple[CaseResult, CaseResult]:
            async with slots:
                return await run_case_async(case), await run_case_on_kafka(case, shared)
        try:
            return list(await asyncio.gather(*(both(case) for _, case in SAMPLE)))
        finally:
            await shared.close()

    return asyncio.run(main())


def test_sample_covers_each_category() -> None:
    _require_sample()
    cats = {category(file) for file, _ in SAMPLE}
    assert cats == set(STEP), cats
    assert len(SAMPLE) >= 150


@pytest.mark.parametrize("index", range(len(SAMPLE)), ids=[_id(w) for w in SAMPLE])
def test_case_has_the_same_outcome_on_kafka(results: list[tuple[CaseResult, CaseResult]],
                                            index: int) -> None:
    case = SAMPLE[index][1]
    embedded, on_kafka = results[index]
    on_embedded = compare(case, embedded)
    kafka_reason = compare(case, on_kafka)
    assert (kafka_reason is None) == (on_embedded is None), (
        f"embedded: {'passes' if on_embedded is None else on_embedded}\n"
        f"kafka: {'passes' if kafka_reason is None else kafka_reason}")
    assert on_kafka.error == embedded.error
    assert on_kafka.outputs == embedded.outputs


# --- the namespace wrapper, on the embedded log ------------------------------------------

def test_prefixed_logs_share_an_inner_log_without_seeing_each_other() -> None:
    from streamsql.runtime.log.base import ProducerRecord
    from streamsql.runtime.log.embedded import EmbeddedLog
    from streamsql.testing.driver import DrivingLog
    from streamsql.testing.prefixed import PrefixedLog

    class Listener:
        def __init__(self) -> None:
            self.owned: set[tuple[str, int]] = set()

        async def assigned(self, partitions: set[tuple[str, int]]) -> None:
            self.owned |= partitions

        async def revoked(self, partitions: set[tuple[str, int]]) -> None:
            pass

    async def main() -> None:
        inner = EmbeddedLog(None)
        a = PrefixedLog(inner, "a-", close_inner=False)
        b = PrefixedLog(inner, "b-", close_inner=False)
        assert (await a.create_topic("t", 2)).name == "t"
        await b.create_topic("t", 1)
        assert sorted(await inner.list_topics()) == ["a-t", "b-t"]
        assert {n: i.partitions for n, i in (await a.list_topics()).items()} == {"t": 2}
        assert (await b.describe_topic("t")).partitions == 1  # type: ignore[union-attr]
        assert await a.describe_topic("u") is None

        await a.produce("t", [ProducerRecord(b"k", b"v1", 1, (), 1), ProducerRecord(b"k", b"v2", 2, (), 1)])
        batch = await a.fetch("t", 1, 0)
        assert (batch.topic, batch.values) == ("t", [b"v1", b"v2"])
        assert await a.end_offsets("t") == [0, 2] and await b.end_offsets("t") == [0]

        listener = Listener()
        consumer = a.consumer("g", ["t"], listener)
        polled = await consumer.poll(timeout=0.1)
        assert [(p.topic, p.partition, p.offsets) for p in polled] == [("t", 1, [0, 1])]
        assert consumer.assignment() == listener.owned == {("t", 0), ("t", 1)}
        await consumer.commit({("t", 1): 2})
        assert await a.committed("g", "t") == {1: 2}
        assert await inner.committed("a-g", "a-t") == {1: 2}
        assert await b.committed("g", "t") == {}
        consumer.seek("t", 1, 1)
        assert [p.offsets for p in await consumer.poll(timeout=0.1)] == [[1]]
        await consumer.close()

        # The embedded log's extras pass through (the engine looks for them with hasattr),
        # and only where the inner log has them.
        assert await a.truncate("t", 1, 1) == 1
        assert await a.end_offsets("t") == [0, 1]
        assert not hasattr(PrefixedLog(DrivingLog(inner), "c-"), "truncate")
        assert a.transactional("x") is None and not a.distributed

        await a.delete_topic("t")
        assert sorted(await inner.list_topics()) == ["b-t"]
        await a.close()
        assert await b.end_offsets("t") == [0]  # the inner log is still open
        await inner.close()

    asyncio.run(main())
