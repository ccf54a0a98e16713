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

# Every STEP[category]-th case: about 130 cases, ~1 minute (topic creation on the broker is
# most of it).
STEP = {"stateless": 12, "stateful": 6, "join": 5}
CONCURRENT_CASES = 4


def _sample() -> list[tuple[str, dict]]:
    if not QTT.is_dir():
        return []
    by_category: dict[str, list[tuple[str, dict]]] = {}
    for file, case in collect(QTT):
        by_category.setdefault(category(file), []).append((file, case))
    return [w for cat, step in STEP.items() for w in by_category.get(cat, [])[::step]]


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
        # A case mostly waits for the broker: a few run at a time.
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
    assert len(SAMPLE) >= 100


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
