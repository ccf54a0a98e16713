"""Which member of a consumer group runs, keeps warm and warms up each task of a stage.

Kafka Streams' high-availability task assignor (KIP-441, ``HighAvailabilityTaskAssignor``),
simplified, for one group: one stage of a query, whose tasks are numbered 0..tasks-1 (task p
reads partition p of each input topic), with one member per server node.

Why not a plain balanced assignment: a stateful task that moves to a node without its state
must replay its changelogs there before it processes anything, which can take minutes. So a
task stays on a member whose local state is *caught up* on it (within ``acceptable_lag`` of
the most advanced member), and moves to an under-loaded member only once that member has
caught up. Until then the under-loaded member gets the task as a *warm-up* (a standby that
is to become the active): a node joining with no state moves nothing at once, warms up, and
a follow-up ("probing") rebalance, the caller's business, moves the tasks. Standby tasks
(``standbys`` copies per task on other members) keep failover cheap: when a member leaves,
its tasks go to the members holding their standbys.

Each member reports at the join what it ran (``previous_active``), kept warm
(``previous_standby``) and how far its local state of each task goes (``offsets``: the sum
of the changelog positions it covers). Nobody here knows the changelogs' end offsets, so a
member's lag on a task is measured against the most advanced member.

Everything is a pure function of the reports: the same reports in any order give the same
assignment (ties go by (node, member) order).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence


@dataclass(frozen=True)
class Client:
    """One member of the group as it reported itself at the join."""

    member: str                      # member id (unique)
    node: str                        # node name (for tie-breaking order and logs)
    previous_active: frozenset[int] = frozenset()
    previous_standby: frozenset[int] = frozenset()
    # task -> sum of the changelog positions its local state covers; absent: no local state
    offsets: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Assignment:
    """The group's tasks per member. Every member is a key of each dict."""

    active: dict[str, frozenset[int]]    # member -> tasks it runs
    standby: dict[str, frozenset[int]]   # member -> standby tasks (num_standbys copies per task)
    warmup: dict[str, frozenset[int]]    # member -> warm-up tasks (on top of standbys)
    # member -> tasks it is to take once caught up on them (balance was held back because
    # it is not yet): its warm-ups, and standbys it has of tasks that are to move to it. A
    # follow-up rebalance once it caught up moves them.
    incoming: dict[str, frozenset[int]] = field(default_factory=dict)

    @property
    def pending_moves(self) -> bool:
        return any(self.incoming.values())

    def probing(self) -> bool:
        """Whether a follow-up rebalance will move tasks (any warm-up was assigned, or a
        standby is warming a task that is to move)."""
        return self.pending_moves or any(self.warmup.values())


def lags(clients: Iterable[Client], tasks: int) -> dict[str, dict[int, int]]:
    """member -> task -> how far its local state of the task is behind the most advanced
    member's (0 for every member when nobody has state of the task)."""
    clients = list(clients)
    ends = _ends(clients, tasks)
    return {c.member: {t: ends[t] - c.offsets.get(t, 0) for t in range(tasks)} for c in clients}


def assign(clients: Sequence[Client], tasks: int, *, standbys: int = 0, max_warmups: int = 2,
           acceptable_lag: int = 10_000) -> Assignment:
    """Active, standby and warm-up tasks per member (see the module docstring).

    - every task has exactly one active member; each member gets floor(tasks/n) or
      ceil(tasks/n) of them, except where that would move a task to a member not caught up
      on it: the task then stays, and the under-loaded member warms it up (at most
      ``max_warmups`` warm-ups in all);
    - a task stays with its previous active member while that one is caught up, unless
      balance moves it; a task whose previous member left goes to the most caught-up one;
    - ``min(standbys, n - 1)`` standbys per task, on members other than its active.
    """
    if tasks < 0 or standbys < 0 or max_warmups < 0:
        raise ValueError("tasks, standbys and max_warmups must not be negative")
    group = _Group.of(clients, tasks, acceptable_lag)
    if not group.members or tasks == 0:
        empty: dict[str, frozenset[int]] = {m: frozenset() for m in group.members}
        return Assignment(dict(empty), dict(empty), dict(empty), dict(empty))
    owner = _place_actives(group)
    _balance(group, owner)
    active = _by_member(group, owner.items())
    standby = _assign_standbys(group, owner, min(standbys, len(group.members) - 1))
    warmup, incoming = _assign_warmups(group, owner, standby, max_warmups)
    return Assignment(_frozen(group, active), _frozen(group, standby), _frozen(group, warmup),
                      _frozen(group, incoming))


# -- the group's reports -------------------------------------------------------------------

def _ends(clients: Sequence[Client], tasks: int) -> list[int]:
    """Per task, the most advanced member's offsets (0 when nobody has state of it)."""
    ends = [0] * tasks
    seen = [False] * tasks
    for c in clients:
        for t, o in c.offsets.items():
            if 0 <= t < tasks and (not seen[t] or o > ends[t]):
                ends[t], seen[t] = o, True
    return ends


@dataclass(frozen=True)
class _Group:
    """The members' reports, in (node, member) order, with what is derived from them."""

    tasks: int
    members: tuple[str, ...]                # in (node, member) order
    clients: dict[str, Client]
    rank: dict[str, int]                    # member -> position in ``members``
    caught_up: dict[str, frozenset[int]]    # member -> tasks within acceptable lag
    previous_owner: dict[int, str]          # task -> the one present member that ran it

    @staticmethod
    def of(clients: Sequence[Client], tasks: int, acceptable_lag: int) -> _Group:
        ordered = sorted(clients, key=lambda c: (c.node, c.member))
        members = tuple(c.member for c in ordered)
        if len(set(members)) != len(members):
            raise ValueError("duplicate member ids")
        by_id = {c.member: c for c in ordered}
        lag = lags(ordered, tasks)
        caught_up = {m: frozenset(t for t, n in lag[m].items() if n <= acceptable_lag)
                     for m in members}
        return _Group(tasks, members, by_id, {m: i for i, m in enumerate(members)},
                      caught_up, _previous_owners(ordered, tasks))

    def offset(self, member: str, task: int) -> int:
        return self.clients[member].offsets.get(task, 0)

    def was_standby(self, member: str, task: int) -> bool:
        return task in self.clients[member].previous_standby


def _previous_owners(ordered: Sequence[Client], tasks: int) -> dict[int, str]:
    """task -> the member that ran it. Two members claiming one task (a zombie after a
    partition) should not happen; the one whose state goes furthest is believed."""
    owners: dict[int, Client] = {}
    for c in ordered:  # in (node, member) order: the first wins a tie
        for t in c.previous_active:
            if 0 <= t < tasks:
                had = owners.get(t)
                if had is None or c.offsets.get(t, 0) > had.offsets.get(t, 0):
                    owners[t] = c
    return {t: c.member for t, c in owners.items()}


def _by_member(group: _Group, pairs: Iterable[tuple[int, str]]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {m: set() for m in group.members}
    for t, m in pairs:
        out[m].add(t)
    return out


def _frozen(group: _Group, sets: Mapping[str, set[int]]) -> dict[str, frozenset[int]]:
    return {m: frozenset(sets.get(m, ())) for m in group.members}


# -- active tasks --------------------------------------------------------------------------

def _place_actives(group: _Group) -> dict[int, str]:
    """task -> member, ignoring balance: where the state is.

    A task stays with its previous owner while that one is caught up; any other task (its
    owner left, or lost its state) goes to the most caught-up member, the least loaded on a
    tie (so that stateless tasks spread evenly)."""
    owner: dict[int, str] = {}
    count = dict.fromkeys(group.members, 0)
    for t in range(group.tasks):
        prev = group.previous_owner.get(t)
        if prev is not None and t in group.caught_up[prev]:
            owner[t] = prev
            count[prev] += 1
    for t in range(group.tasks):
        if t not in owner:
            best = min(group.members,
                       key=lambda m: (-group.offset(m, t), count[m], group.rank[m]))
            owner[t] = best
            count[best] += 1
    return owner


def _imbalance(count: int, low: int, high: int) -> int:
    """How far one member's active count is outside [low, high]."""
    return max(0, count - high) + max(0, low - count)


def _gain(src: int, dst: int, low: int, high: int) -> int:
    """How much moving one task from a member with ``src`` tasks to one with ``dst`` tasks
    reduces the total imbalance (0: the move is useless)."""
    before = _imbalance(src, low, high) + _imbalance(dst, low, high)
    return before - _imbalance(src - 1, low, high) - _imbalance(dst + 1, low, high)


def _balance(group: _Group, owner: dict[int, str]) -> None:
    """Move tasks until each member has floor or ceil(tasks/n), moving a task only to a
    member caught up on it.

    Each round takes the least loaded member still below ceil and looks for the shortest
    chain of moves giving it one task from an over-loaded member: directly, or through
    members that pass one of their own tasks on (each move to a caught-up member). A member
    that no chain reaches stays under-loaded: it warms up instead (``_assign_warmups``).
    Every round reduces the total imbalance, so this ends."""
    low, extra = divmod(group.tasks, len(group.members))
    high = low + (extra > 0)
    held = _by_member(group, owner.items())
    while True:
        for dst in sorted(group.members, key=lambda m: (len(held[m]), group.rank[m])):
            if len(held[dst]) >= high:
                return
            chain = _find_chain(group, held, dst, low, high)
            if chain:
                for task, src, to in chain:
                    held[src].remove(task)
                    held[to].add(task)
                    owner[task] = to
                break
        else:
            return


def _move_preference(group: _Group, task: int, src: str, dst: str) -> tuple[int, ...]:
    """Order of the tasks ``src`` could give ``dst``: first tasks that do not leave their
    previous owner (placed here this time), then tasks ``dst`` kept as standby, then the
    ones its state goes furthest on."""
    return (group.previous_owner.get(task) == src, not group.was_standby(dst, task),
            -group.offset(dst, task), task)


def _find_chain(group: _Group, held: dict[str, set[int]], dst: str, low: int,
                high: int) -> list[tuple[int, str, str]] | None:
    """The moves (task, from, to) of the shortest chain bringing ``dst`` one more task from
    a member for which that is a useful move (breadth-first search backwards from ``dst``
    over "member u holds a task that member v is caught up on"); None if there is none."""
    came: dict[str, tuple[int, str]] = {}  # member -> (task it gives, member receiving it)
    seen = {dst}
    frontier = [dst]
    while frontier:
        reached: list[str] = []
        for to in frontier:
            for src in group.members:
                if src in seen:
                    continue
                movable = [t for t in held[src] if t in group.caught_up[to]]
                if not movable:
                    continue
                task = min(movable, key=lambda t: _move_preference(group, t, src, to))
                came[src] = (task, to)
                seen.add(src)
                reached.append(src)
        sources = [s for s in reached if _gain(len(held[s]), len(held[dst]), low, high) > 0]
        if sources:
            src = min(sources, key=lambda s: (
                -_gain(len(held[s]), len(held[dst]), low, high),
                _move_preference(group, came[s][0], s, came[s][1]),
                -len(held[s]), group.rank[s]))
            chain = []
            while src != dst:
                task, to = came[src]
                chain.append((task, src, to))
                src = to
            return chain
        frontier = reached
    return None


# -- standby tasks -------------------------------------------------------------------------

def _assign_standbys(group: _Group, owner: Mapping[int, str], copies: int
                     ) -> dict[str, set[int]]:
    """``copies`` standbys per task on distinct members other than its active: members
    caught up on it first (previous standbys first: they are warm; then the furthest
    state), then the least loaded. A cap of ceil(tasks*copies/n) standbys per member, waived
    only when every candidate is at it, keeps them spread out."""
    standby: dict[str, set[int]] = {m: set() for m in group.members}
    if copies <= 0:
        return standby
    cap = -(-group.tasks * copies // len(group.members))
    load = {m: sum(1 for o in owner.values() if o == m) for m in group.members}
    for t in range(group.tasks):
        for _ in range(copies):
            candidates = [m for m in group.members if m != owner[t] and t not in standby[m]]
            best = min(candidates, key=lambda m: (
                len(standby[m]) >= cap, t not in group.caught_up[m],
                not group.was_standby(m, t), -group.offset(m, t), load[m], group.rank[m]))
            standby[best].add(t)
            load[best] += 1
    _even_out_standbys(group, owner, standby)
    return standby


def _even_out_standbys(group: _Group, owner: Mapping[int, str],
                       standby: dict[str, set[int]]) -> None:
    """Undo what the task-by-task choice can leave uneven (the last tasks finding only
    members at the cap): move standbys from a member with at least two more than another
    to it. Only to a member caught up on the task: a warm standby is not traded for a cold
    one for the sake of balance. Each move narrows the spread, so this ends."""
    while True:
        by_count = sorted(group.members, key=lambda m: (len(standby[m]), group.rank[m]))
        for poor in by_count:
            rich = [m for m in reversed(by_count) if len(standby[m]) - len(standby[poor]) >= 2]
            movable = [(m, t) for m in rich for t in sorted(standby[m])
                       if owner[t] != poor and t not in standby[poor]
                       and t in group.caught_up[poor]]
            if movable:
                m, t = min(movable, key=lambda mt: (
                    not group.was_standby(poor, mt[1]), -group.offset(poor, mt[1]),
                    -len(standby[mt[0]]), group.rank[mt[0]], mt[1]))
                standby[m].remove(t)
                standby[poor].add(t)
                break
        else:
            return


# -- warm-up tasks -------------------------------------------------------------------------

def _assign_warmups(group: _Group, owner: Mapping[int, str], standby: Mapping[str, set[int]],
                    budget: int) -> tuple[dict[str, set[int]], dict[str, set[int]]]:
    """Warm-ups for the members balance left under-loaded, and per member the tasks now
    warming towards a move to it (through a warm-up or a standby it has anyway).

    The balanced targets give ceil to the most loaded members, so that as few tasks as
    possible move; an under-loaded member warms up as many tasks of over-loaded members as
    it lacks (no more per over-loaded member than it has too many). Its own standbys of
    such tasks count first (they warm anyway, and cost no warm-up); then warm-ups, the ones
    its state goes furthest on first, handed out one per member in turn so that the
    ``budget`` is shared."""
    held = _by_member(group, owner.items())
    low, extra = divmod(group.tasks, len(group.members))
    by_load = sorted(group.members, key=lambda m: (-len(held[m]), group.rank[m]))
    target = {m: low + (i < extra) for i, m in enumerate(by_load)}
    surplus = {m: len(held[m]) - target[m] for m in group.members if len(held[m]) > target[m]}
    needy = [m for m in reversed(by_load) if len(held[m]) < target[m]]
    need = {m: target[m] - len(held[m]) for m in needy}
    warmup: dict[str, set[int]] = {m: set() for m in group.members}
    incoming: dict[str, set[int]] = {m: set() for m in group.members}
    claimed: set[int] = set()

    def candidates(m: str, pool: Iterable[int]) -> list[int]:
        return sorted((t for t in pool if surplus.get(owner[t], 0) > 0 and t not in claimed
                       and t not in group.caught_up[m]),
                      key=lambda t: (-group.offset(m, t), not group.was_standby(m, t),
                                     -surplus[owner[t]], group.rank[owner[t]], t))

    def claim(m: str, t: int) -> None:
        claimed.add(t)
        incoming[m].add(t)
        surplus[owner[t]] -= 1
        need[m] -= 1

    for m in needy:
        for t in candidates(m, standby[m]):
            if need[m] == 0:
                break
            if surplus[owner[t]] > 0 and t not in claimed:
                claim(m, t)
    progress = True
    while budget > 0 and progress:
        progress = False
        for m in needy:
            if budget == 0:
                break
            if need[m] == 0:
                continue
            pool = (t for t in range(group.tasks) if t not in standby[m])
            found = candidates(m, pool)
            if found:
                warmup[m].add(found[0])
                claim(m, found[0])
                budget -= 1
                progress = True
    return warmup, incoming
