"""``OrderedInputs``: a multi-input task's records in timestamp order (Kafka Streams'
``PartitionGroup`` and ``max.task.idle.ms``)."""
from __future__ import annotations

from streamsql.runtime.log.base import RecordBatch
from streamsql.runtime.ordering import OrderedInputs


def _batch(topic: str, partition: int, first: int, timestamps: list[int]) -> RecordBatch:
    n = len(timestamps)
    return RecordBatch(topic, partition, list(range(first, first + n)), timestamps,
                       [b"k"] * n, [f"{topic}{first + i}".encode() for i in range(n)])


def _order(work: list[list[RecordBatch]]) -> list[list[str]]:
    return [[v.decode() for run in runs for v in run.values] for runs in work]


BOTH = {("s", 0), ("t", 0), ("s", 1), ("t", 1)}


def caught_up(topic: str, partition: int) -> int:
    return 0


def test_records_of_a_task_come_in_timestamp_order_ties_to_the_later_input():
    inputs = OrderedInputs(("s", "t"))
    inputs.add(_batch("s", 0, 0, [1, 5, 5, 9]))
    inputs.add(_batch("t", 0, 0, [0, 5, 6]))
    work, wake = inputs.take(BOTH, caught_up, 0.0)
    assert _order(work) == [["t0", "s0", "t1", "s1", "s2", "t2", "s3"]]
    assert wake is None
    # Each run is a slice of one input, in offset order: what the runner commits follows.
    assert [(r.topic, r.offsets) for r in work[0]] == [
        ("t", [0]), ("s", [0]), ("t", [1]), ("s", [1, 2]), ("t", [2]), ("s", [3])]
    assert inputs.buffered() == 0


def test_tasks_are_ordered_separately():
    inputs = OrderedInputs(("s", "t"))
    inputs.add(_batch("s", 0, 0, [10]))
    inputs.add(_batch("t", 1, 0, [20]))
    inputs.add(_batch("s", 1, 0, [5]))
    inputs.add(_batch("t", 0, 0, [1]))
    work, _ = inputs.take(BOTH, caught_up, 0.0)
    assert _order(work) == [["t0", "s0"], ["s0", "t0"]]


def test_an_input_with_records_on_their_way_is_waited_for():
    inputs = OrderedInputs(("s", "t"))
    inputs.add(_batch("s", 0, 0, [5, 6]))
    lag = {("t", 0): 3}
    work, wake = inputs.take(BOTH, lambda t, p: lag.get((t, p), 0), 0.0)
    assert work == [] and wake is None  # a table row stamped before 5 may be among them
    assert inputs.take(BOTH, lambda t, p: None, 0.0)[0] == []  # lag not known yet: wait too
    inputs.add(_batch("t", 0, 0, [4, 7]))
    lag = {("t", 0): 1}
    work, _ = inputs.take(BOTH, lambda t, p: lag.get((t, p), 0), 0.0)
    # s (caught up) runs dry first; t goes on until it runs dry too.
    assert _order(work) == [["t0", "s0", "s1", "t1"]]
    inputs.add(_batch("s", 0, 2, [8]))
    work, _ = inputs.take(BOTH, lambda t, p: lag.get((t, p), 0), 0.0)
    assert work == [] and inputs.buffered() == 1  # t has one more on its way


def test_a_caught_up_input_is_waited_for_max_task_idle_ms():
    inputs = OrderedInputs(("s", "t"), idle_ms=250)
    inputs.add(_batch("s", 0, 0, [5]))
    work, wake = inputs.take(BOTH, caught_up, 10.0)
    assert work == [] and wake == 10.25
    work, wake = inputs.take(BOTH, caught_up, 10.125)
    assert work == [] and wake == 10.25
    work, wake = inputs.take(BOTH, caught_up, 10.25)
    assert _order(work) == [["s0"]] and wake is None
    # Idle 0 (the default): a caught-up input is not waited for at all.
    inputs = OrderedInputs(("s", "t"))
    inputs.add(_batch("s", 0, 0, [5]))
    assert _order(inputs.take(BOTH, caught_up, 0.0)[0]) == [["s0"]]


def test_inputs_not_assigned_are_not_waited_for():
    inputs = OrderedInputs(("s", "t"))
    inputs.add(_batch("s", 0, 0, [5]))
    work, _ = inputs.take({("s", 0)}, lambda t, p: 100, 0.0)
    assert _order(work) == [["s0"]]


def test_full_partitions_and_dropping():
    inputs = OrderedInputs(("s", "t"), max_buffered=3)
    inputs.add(_batch("s", 0, 0, [1, 2]))
    assert inputs.full() == set()
    inputs.add(_batch("s", 0, 2, [3, 4]))
    assert inputs.full() == {("s", 0)}
    inputs.drop({("s", 0)})
    assert inputs.full() == set() and inputs.buffered() == 0


def test_out_of_order_times_within_an_input_switch_at_the_first_later_record():
    """Records of one partition stay in offset order; the task switches inputs at the first
    record stamped after the other input's head (as Kafka Streams picks by head record)."""
    inputs = OrderedInputs(("s", "t"))
    inputs.add(_batch("s", 0, 0, [1, 100, 5]))
    inputs.add(_batch("t", 0, 0, [50]))
    work, _ = inputs.take(BOTH, caught_up, 0.0)
    assert _order(work) == [["s0", "t0", "s1", "s2"]]
