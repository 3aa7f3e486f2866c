# -*- test-case-name: smx.queue.test.test_scheduler,smx.queue.test.test_suspended -*-
"""
NAME
    smx.queue.destinations - delivery transactions waiting for a
    connection slot of their destination

SYNOPSIS
    queues = DestinationQueues(clock, slowStart, waitForServer=60)
    queues.request(dest, start, expire)  # start() now or when a slot frees
    queues.done(dest, success)           # a delivery to dest ended
    queues.release(dest)                 # it started, but did not go to dest
    queues.waiting(dest)                 # how many wait for dest
    queues.park(dest, entries)           # expired: retry when dest has room
    queues.stop()

DESCRIPTION
    Slow start (seed §5.7.1, L{smx.queue.connections.SlowStart}) bounds
    the concurrent deliveries to each destination address.  A delivery
    transaction for a destination without a free slot waits here, first
    in, first out, in the queue of that destination: it starts as soon as
    a delivery to the destination ends and slow start allows one more,
    and it expires after C{wait_for_server} seconds, when its C{expire}
    is called instead (the scheduler counts that as a temporary failure).

    The slot is taken (C{SlowStart.opened}) just before C{start} is
    called; L{done} gives it back (C{SlowStart.closed}, which adapts the
    destination's limit to the success of the delivery) and starts the
    waiting transactions that now fit.  L{release} gives it back without
    a verdict on the destination: the transaction that had it did not go
    there after all (its route set was suspended meanwhile, see
    L{smx.queue.connections.SlowStart.suspended}).

    The recipients of an expired transaction are deferred, but not for
    C{retry_min_delay}: the scheduler parks them here (L{park}), and
    when a delivery to their destination ends and nobody waits for it,
    as many as the destination has room for are handed to C{onRoom},
    which tries them again at once.  So a destination that was only
    slow, or whose deliveries waited for an SMTPC process that was
    restarting, takes its mail at its own pace, without a wait that
    could expire again; one that takes nothing keeps it deferred.

CONFIGURATION PARAMETERS
    wait_for_server; smtpc_initial_connections, smtpc_max_connections and
    the conf map entries of slow start (C{oci:}, C{ocm:}, C{octo:}).

SECURITY
    None.

DIAGNOSTICS
    None of its own (the scheduler logs the waits and the expiries).
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Deque, Dict, List, Optional, Set

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from smx.queue.connections import SlowStart

Action = Callable[[], None]

#: the most expired entries parked per destination (the oldest go first;
#: they are retried at their next-time-to-try as any deferred recipient)
MAX_PARKED = 100000


class _Waiter:
    __slots__ = ("start", "expire", "timer")

    def __init__(self, start: Action, expire: Action) -> None:
        self.start = start
        self.expire = expire
        self.timer = None  # type: Optional[IDelayedCall]


class DestinationQueues:
    """
    The delivery transactions waiting for a slot, per destination.

    @ivar slowStart: the L{smx.queue.connections.SlowStart}.
    @ivar waitForServer: seconds a transaction waits (C{wait_for_server}).
    @ivar onRoom: called with a list of parked entries (L{park}) when
        their destination has room for them.
    """

    def __init__(self, clock: IReactorTime, slowStart: SlowStart, waitForServer: float):
        self.clock = clock
        self.slowStart = slowStart
        self.waitForServer = waitForServer
        self._queues = {}  # type: Dict[str, Deque[_Waiter]]
        #: the destinations whose waiting transactions are being started
        self._starting = set()  # type: Set[str]
        self._parked = {}  # type: Dict[str, Deque[Any]]
        self.onRoom = None  # type: Optional[Callable[[List[Any]], None]]

    def request(self, dest: str, start: Action, expire: Action) -> bool:
        """
        Call C{start} once a delivery to C{dest} may start: now if slow
        start allows it, else when L{done} frees a slot; or call
        C{expire} if none frees within C{wait_for_server} seconds.

        @return: whether C{start} was called now.
        """
        if self.slowStart.mayOpen(dest):
            self.slowStart.opened(dest)
            start()
            return True
        waiter = _Waiter(start, expire)
        waiter.timer = self.clock.callLater(
            self.waitForServer, self._expired, dest, waiter
        )
        self._queues.setdefault(dest, collections.deque()).append(waiter)
        return False

    def _expired(self, dest: str, waiter: _Waiter) -> None:
        queue = self._queues.get(dest)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._queues[dest]
        waiter.expire()

    def done(self, dest: str, success: bool) -> None:
        """
        A delivery to C{dest} ended (C{success}: the destination was
        reached): give back its slot and start those waiting that fit.
        """
        self.slowStart.closed(dest, success)
        self._startWaiting(dest)

    def release(self, dest: str) -> None:
        """
        A delivery transaction that got a slot of C{dest} did not go
        there after all: give back the slot, with no verdict on C{dest}.
        """
        self.slowStart.closed(dest, None)
        self._startWaiting(dest)

    def _startWaiting(self, dest: str) -> None:
        """
        Start the transactions waiting for C{dest} that fit; one that
        gives back its slot at once (L{release}) does not start the next
        itself but lets this loop go on (no recursion however long the
        queue).
        """
        if dest in self._starting:
            return
        self._starting.add(dest)
        try:
            queue = self._queues.get(dest)
            while queue and self.slowStart.mayOpen(dest):
                waiter = queue.popleft()
                if waiter.timer is not None and waiter.timer.active():
                    waiter.timer.cancel()
                self.slowStart.opened(dest)
                waiter.start()
            if queue is not None and not queue and self._queues.get(dest) is queue:
                # (a delivery started above may have ended and emptied it)
                del self._queues[dest]
            if dest in self._parked and dest not in self._queues:
                self._unpark(dest)
        finally:
            self._starting.discard(dest)

    def park(self, dest: str, entries: List[Any]) -> None:
        """
        Keep C{entries} (the recipients of a transaction whose wait for
        C{dest} expired, in the form C{onRoom} takes) for C{onRoom}, once
        C{dest} has room and nobody waits for it.
        """
        parked = self._parked.get(dest)
        if parked is None:
            parked = self._parked[dest] = collections.deque(maxlen=MAX_PARKED)
        parked.extend(entries)

    def _unpark(self, dest: str) -> None:
        parked = self._parked[dest]
        n = min(self.slowStart.room(dest), len(parked))
        if n <= 0 or self.onRoom is None:
            return
        batch = [parked.popleft() for _ in range(n)]
        if not parked:
            del self._parked[dest]
        self.onRoom(batch)

    def parked(self, dest: str) -> int:
        """@return: how many entries are parked for C{dest}."""
        return len(self._parked.get(dest) or ())

    def waiting(self, dest: Optional[str] = None) -> int:
        """
        @return: how many delivery transactions wait for C{dest} (for any
            destination if C{None}).
        """
        if dest is not None:
            return len(self._queues.get(dest) or ())
        return sum(len(q) for q in self._queues.values())

    def stop(self) -> None:
        """Forget the waiting transactions and cancel their timers."""
        queues = list(self._queues.values())  # type: List[Deque[_Waiter]]
        self._queues = {}
        self._parked = {}
        for queue in queues:
            for waiter in queue:
                if waiter.timer is not None and waiter.timer.active():
                    waiter.timer.cancel()
