"""``assign``: Kafka Streams' high-availability task assignment (KIP-441) for one group."""
from __future__ import annotations

import random

import pytest

from streamsql.runtime.assignment import Assignment, Client, assign, lags

# A changelog position far beyond the acceptable lag: state that takes long to restore.
END = 1_000_000


def _client(i: int, active=(), standby=(), offsets=None) -> Client:
    return Client(f"m{i}", f"node-{i}", frozenset(active), frozenset(standby), offsets or {})


def _stateless(n: int, previous: Assignment | None = None) -> list[Client]:
    """n members with no local state, reporting what ``previous`` gave them."""
    out = []
    for i in range(n):
        m = f"m{i}"
        active = previous.active.get(m, ()) if previous else ()
        out.append(_client(i, active))
    return out


def _reported(previous: Assignment, members: range, end: int = END) -> list[Client]:
    """The members' reports after ``previous`` ran long enough: each has caught up on the
    tasks it held (active, standby or warm-up) and reports warm-ups as standbys, as the
    Kafka protocol does. A member not in ``previous`` joins with nothing."""
    out = []
    for i in members:
        m = f"m{i}"
        active = previous.active.get(m, frozenset())
        warm = previous.standby.get(m, frozenset()) | previous.warmup.get(m, frozenset())
        out.append(_client(i, active, warm, {t: end for t in active | warm}))
    return out


def _owner(result: Assignment) -> dict[int, str]:
    return {t: m for m, ts in result.active.items() for t in ts}


def _moves(before: Assignment, after: Assignment) -> int:
    """Tasks whose active member changed, among members present both times."""
    old, new = _owner(before), _owner(after)
    return sum(1 for t, m in old.items() if m in after.active and new.get(t) != m)


def _check(result: Assignment, clients: list[Client], tasks: int, standbys: int = 0) -> None:
    """The invariants of every assignment."""
    members = {c.member for c in clients}
    assert set(result.active) == set(result.standby) == set(result.warmup) == members
    owners = [t for ts in result.active.values() for t in ts]
    assert sorted(owners) == list(range(tasks)), "every task has exactly one active"
    copies = min(standbys, len(members) - 1)
    for t in range(tasks):
        holders = [m for m, ts in result.standby.items() if t in ts]
        assert len(holders) == copies
        assert _owner(result)[t] not in holders, "a standby is never on the task's active"
    for m in members:
        assert not result.warmup[m] & (result.active[m] | result.standby[m])
        assert all(0 <= t < tasks for t in result.warmup[m])


def _counts(result: Assignment) -> list[int]:
    return sorted(len(ts) for ts in result.active.values())


def _balanced(result: Assignment, tasks: int) -> bool:
    low, extra = divmod(tasks, len(result.active))
    return _counts(result) == sorted([low] * (len(result.active) - extra) + [low + 1] * extra)


# -- lags ----------------------------------------------------------------------------------

def test_lag_is_measured_against_the_most_advanced_member():
    clients = [_client(0, offsets={0: 500, 1: 10}), _client(1, offsets={0: 800}), _client(2)]
    assert lags(clients, 3) == {
        "m0": {0: 300, 1: 0, 2: 0},
        "m1": {0: 0, 1: 10, 2: 0},
        "m2": {0: 800, 1: 10, 2: 0},  # task 2: nobody has state, nobody lags
    }


def test_a_member_within_the_acceptable_lag_is_caught_up():
    # m0 ran both tasks; m1 is 50 behind on task 1: close enough to take it at once.
    clients = [_client(0, {0, 1}, (), {0: 1000, 1: 1000}), _client(1, (), {1}, {1: 950})]
    result = assign(clients, 2, acceptable_lag=100)
    assert result.active == {"m0": {0}, "m1": {1}}
    assert not result.probing()
    behind = assign(clients, 2, acceptable_lag=10)
    assert behind.active == {"m0": {0, 1}, "m1": frozenset()}
    assert behind.warmup == {"m0": frozenset(), "m1": {1}}
    assert behind.incoming == {"m0": frozenset(), "m1": {1}}
    assert behind.probing()
    # With a standby per task, m1's standby of task 1 is already warming it: no warm-up,
    # but a follow-up rebalance is still due, and m1 knows which of its standbys is to come.
    behind = assign(clients, 2, standbys=1, acceptable_lag=10)
    assert behind.active == {"m0": {0, 1}, "m1": frozenset()}
    assert behind.standby == {"m0": frozenset(), "m1": {0, 1}}
    assert behind.warmup == {"m0": frozenset(), "m1": frozenset()}
    assert behind.incoming == {"m0": frozenset(), "m1": {1}}
    assert behind.probing()


# -- balance and stickiness ----------------------------------------------------------------

@pytest.mark.parametrize("standbys", [0, 1, 2])
def test_stateless_assignment_is_balanced(standbys: int):
    for n in range(1, 7):
        for tasks in range(1, 13):
            clients = _stateless(n)
            result = assign(clients, tasks, standbys=standbys)
            _check(result, clients, tasks, standbys)
            assert _balanced(result, tasks), (n, tasks, _counts(result))
            assert not result.probing()
            assert not any(result.warmup.values())


def test_adding_a_member_moves_only_the_minimal_number_of_tasks():
    two = assign(_stateless(2), 10)
    assert _counts(two) == [5, 5]
    three = assign(_stateless(3, two), 10)
    assert _counts(three) == [3, 3, 4]
    assert _moves(two, three) == 3
    assert not three.probing()


def test_moves_are_minimal_whatever_the_previous_assignment():
    """All caught up: only the tasks above each member's balanced share move (the ceil
    shares going to the members that have the most)."""
    rng = random.Random(7)
    for _ in range(300):
        tasks = rng.randint(1, 20)
        before_n, after_n = rng.randint(1, 6), rng.randint(1, 6)
        previous = {t: f"m{rng.randrange(before_n)}" for t in range(tasks)}
        clients = [_client(i, {t for t, m in previous.items() if m == f"m{i}"})
                   for i in range(after_n)]
        result = assign(clients, tasks)
        _check(result, clients, tasks)
        assert _balanced(result, tasks)
        kept = sorted((len(c.previous_active) for c in clients), reverse=True)
        low, extra = divmod(tasks, after_n)
        minimal = sum(max(0, k - (low + (i < extra))) for i, k in enumerate(kept))
        owner = _owner(result)
        moved = sum(1 for t, m in previous.items()
                    if m in result.active and owner[t] != m)
        assert moved == minimal, (tasks, before_n, after_n)


def test_an_unchanged_group_keeps_its_assignment():
    first = assign(_stateless(3), 8, standbys=1)
    again = assign(_reported(first, range(3)), 8, standbys=1)
    assert again == first
    assert not again.probing()


def test_a_new_member_without_state_warms_up_instead_of_taking_tasks():
    tasks = 6
    start = assign(_stateless(2), tasks)
    clients = _reported(start, range(2)) + [_client(2)]
    # Both old members also kept the other's tasks: everything has a lot of state somewhere.
    result = assign(clients, tasks, max_warmups=2)
    _check(result, clients, tasks)
    assert result.active["m2"] == frozenset()
    assert _moves(start, result) == 0
    assert 0 < len(result.warmup["m2"]) <= 2
    assert result.probing()

    # Caught up on its warm-ups (reported as standbys), it takes them over: balanced.
    warm = result.warmup["m2"]
    caught_up = _reported(result, range(2)) + [_client(2, (), warm, {t: END for t in warm})]
    after = assign(caught_up, tasks, max_warmups=2)
    _check(after, caught_up, tasks)
    assert after.active["m2"] == warm
    assert _balanced(after, tasks)
    assert not after.probing()


def test_warmups_are_capped_for_the_whole_group():
    start = assign(_stateless(2), 12)
    clients = _reported(start, range(2)) + [_client(2), _client(3)]
    for budget in range(0, 6):
        result = assign(clients, 12, max_warmups=budget)
        _check(result, clients, 12)
        warmups = sum(len(ts) for ts in result.warmup.values())
        assert warmups == budget  # 6 tasks to move: the cap binds
        assert result.active["m2"] == result.active["m3"] == frozenset()
        assert result.probing() == (budget > 0)
        if budget >= 2:  # shared between the two newcomers
            assert result.warmup["m2"] and result.warmup["m3"]


def test_warming_up_converges_a_few_tasks_per_round():
    tasks, budget = 12, 1
    current = assign(_stateless(3), tasks)
    clients = _reported(current, range(3)) + [_client(3)]
    for rounds in range(1, 10):
        result = assign(clients, tasks, max_warmups=budget)
        _check(result, clients, tasks)
        assert sum(len(ts) for ts in result.warmup.values()) <= budget
        assert _moves(current, result) <= budget
        current = result
        if not result.probing():
            break
        clients = _reported(result, range(4))
    assert _balanced(current, tasks)
    assert rounds == 4  # m3 takes 3 tasks, one per round, then one round confirms it


def test_tasks_of_a_member_that_left_go_to_their_standbys():
    tasks = 6
    first = assign(_stateless(3), tasks, standbys=1)
    gone = first.active["m1"]
    standby_of = {t: m for m, ts in first.standby.items() for t in ts}
    result = assign([c for c in _reported(first, range(3)) if c.member != "m1"], tasks,
                    standbys=1)
    for t in gone:
        assert t in result.active[standby_of[t]]
    for m in ("m0", "m2"):  # the tasks they had stay
        assert first.active[m] <= result.active[m]
    assert not result.probing()


def test_an_orphan_task_goes_to_the_most_caught_up_member():
    clients = [_client(0, offsets={0: 900}), _client(1, offsets={0: 1000}), _client(2)]
    assert assign(clients, 1).active["m1"] == {0}
    # A tie: the least loaded, then (node, member) order.
    clients = [_client(0, {1}, offsets={0: 1000, 1: 5}), _client(1, offsets={0: 1000}),
               _client(2, offsets={0: 1000})]
    assert assign(clients, 2).active == {"m0": {1}, "m1": {0}, "m2": frozenset()}


def test_a_previous_owner_that_lost_its_state_gives_the_task_up():
    clients = [_client(0, {0}, (), {}), _client(1, (), {0}, {0: END})]
    result = assign(clients, 1, standbys=1)
    assert result.active == {"m0": frozenset(), "m1": {0}}
    assert result.standby == {"m0": {0}, "m1": frozenset()}


def test_moves_prefer_tasks_the_member_kept_as_standby():
    # m0 runs 4 tasks; m1 is caught up on all of them, but kept standbys of 2 and 3.
    clients = [_client(0, {0, 1, 2, 3}, (), dict.fromkeys(range(4), END)),
               _client(1, (), {2, 3}, dict.fromkeys(range(4), END))]
    assert assign(clients, 4).active["m1"] == {2, 3}


def test_a_zombie_owner_is_not_believed():
    # Both claim task 0; m1's state is further: it is the owner and keeps it.
    clients = [_client(0, {0}, (), {0: 100}), _client(1, {0}, (), {0: END})]
    result = assign(clients, 2)
    assert result.active["m1"] == {0}
    assert result.active["m0"] == {1}


# -- standbys ------------------------------------------------------------------------------

def test_standbys_are_balanced():
    for n in range(1, 7):
        for tasks in range(1, 13):
            for standbys in (1, 2, 3):
                clients = _stateless(n)
                result = assign(clients, tasks, standbys=standbys)
                _check(result, clients, tasks, standbys)
                counts = [len(ts) for ts in result.standby.values()]
                assert max(counts) - min(counts) <= 1, (n, tasks, standbys, counts)


def test_standbys_stay_where_they_are_warm():
    first = assign(_stateless(4), 8, standbys=1)
    # A fifth member joins with nothing: the warm standbys do not move to it (the old
    # members are within the cap of ceil(8/5) standbys each), it warms up a task instead.
    clients = _reported(first, range(4)) + [_client(4)]
    result = assign(clients, 8, standbys=1)
    _check(result, clients, 8, 1)
    assert {m: result.active[m] for m in first.active} == first.active
    assert {m: result.standby[m] for m in first.standby} == first.standby
    assert result.standby["m4"] == frozenset()
    assert len(result.warmup["m4"]) == 1
    # More standbys per task: the warm ones stay, the new copies spread (cold) up to the
    # cap of ceil(tasks * standbys / members) each.
    for standbys in (2, 3):
        more = assign(clients, 8, standbys=standbys)
        _check(more, clients, 8, standbys)
        for m in first.standby:
            assert first.standby[m] <= more.standby[m]
        assert max(len(ts) for ts in more.standby.values()) <= -(-8 * standbys // 5)


def test_a_chain_of_moves_between_caught_up_members_balances_at_once():
    # m2 is caught up only on m1's tasks; m1 is caught up on everything, m0 on its own:
    # m1 hands its tasks to m2 and takes two of m0's, rather than m2 waiting to warm up.
    clients = [_client(0, {0, 1, 2, 3}, (), dict.fromkeys(range(4), END)),
               _client(1, {4, 5}, (), dict.fromkeys(range(6), END)),
               _client(2, (), (), {4: END, 5: END})]
    result = assign(clients, 6)
    assert result.active == {"m0": {2, 3}, "m1": {0, 1}, "m2": {4, 5}}
    assert not result.probing()


# -- determinism and edge cases ------------------------------------------------------------

def test_the_order_of_the_reports_does_not_matter():
    rng = random.Random(11)
    for _ in range(200):
        tasks, n = rng.randint(0, 12), rng.randint(1, 6)
        clients = []
        for i in range(n):
            owned = {t for t in range(tasks) if rng.random() < 0.3}
            warm = {t for t in range(tasks) if rng.random() < 0.3}
            offsets = {t: rng.choice([0, 5_000, 20_000, END]) for t in range(tasks)
                       if rng.random() < 0.6}
            clients.append(_client(i, owned, warm, offsets))
        kwargs = dict(standbys=rng.randint(0, 2), max_warmups=rng.randint(0, 3))
        expected = assign(clients, tasks, **kwargs)
        _check(expected, clients, tasks, kwargs["standbys"])
        for _ in range(3):
            shuffled = clients[:]
            rng.shuffle(shuffled)
            assert assign(shuffled, tasks, **kwargs) == expected


def test_empty_groups_and_no_tasks():
    assert assign([], 4) == Assignment({}, {}, {}, {})
    result = assign(_stateless(2), 0, standbys=1)
    assert result.active == result.standby == result.warmup == {"m0": frozenset(),
                                                                  "m1": frozenset()}
    assert not result.probing()
    assert lags([], 3) == {}


def test_one_member_takes_everything():
    result = assign([_client(0)], 5, standbys=2, max_warmups=3)
    assert result == Assignment({"m0": frozenset(range(5))}, {"m0": frozenset()},
                                {"m0": frozenset()}, {"m0": frozenset()})


def test_reports_of_tasks_that_no_longer_exist_are_ignored():
    clients = [_client(0, {0, 7}, {9}, {0: END, 8: END}), _client(1, (), (), {})]
    result = assign(clients, 2, standbys=1)
    _check(result, clients, 2, 1)
    assert result.active["m0"] == {0}


def test_bad_arguments():
    with pytest.raises(ValueError):
        assign([_client(0), Client("m0", "other")], 2)
    with pytest.raises(ValueError):
        assign([_client(0)], -1)
    with pytest.raises(ValueError):
        assign([_client(0)], 1, standbys=-1)


# -- scaling out ---------------------------------------------------------------------------

@pytest.mark.parametrize("tasks", [7, 12, 20])
def test_scaling_out_one_to_five_members_with_standbys(tasks: int):
    """Members join one at a time, each with no state. Every rebalance feeds the previous
    assignment back (the members having caught up on what they held); warm-ups and the
    follow-up rebalances they call for move the tasks bit by bit."""
    current = assign([_client(0)], tasks, standbys=1)
    for n in range(2, 6):
        newcomer = f"m{n - 1}"
        clients = _reported(current, range(n))
        moved = 0
        for rebalance in range(10):
            result = assign(clients, tasks, standbys=1)
            _check(result, clients, tasks, 1)
            step = _moves(current, result)
            if rebalance == 0:
                # The newcomer has no state: nothing moves yet, it warms up.
                assert step == 0
                assert result.active[newcomer] == frozenset()
                assert result.probing()
            moved += step
            current = result
            clients = _reported(current, range(n))
            if not result.probing():
                break
        else:
            pytest.fail(f"{n} members: the assignment did not settle")
        assert _balanced(current, tasks), (n, _counts(current))
        assert rebalance <= 3
        # Only the newcomer's share moved, and only to it: no churn among the others.
        assert moved == len(current.active[newcomer]) == tasks // n
