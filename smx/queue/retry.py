# -*- test-case-name: smx.queue.test.test_scheduler -*-
"""
NAME
    smx.queue.retry - when deferred recipients are tried again

SYNOPSIS
    retries = RetrySchedule(clock, store, due, retryMinDelay=300,
                            retryMaxDelay=14400, queuereturnTimeout=5d)
    r.nextTry = now + retries.retryDelay(r.tries)
    retries.retryAt(transaction, recipient)   # due(ta, [r]) at r.nextTry
    retries.expired(transaction, now)         # queuereturn_timeout passed?
    retries.flush()                           # every deferred one now
    retries.stop()

DESCRIPTION
    A recipient that failed temporarily waits in DEFEDB for its
    next-time-to-try (seed §5.7, §10): C{retry_min_delay} after the first
    attempt, doubled after each further one, at most C{retry_max_delay}.
    L{RetrySchedule} keeps the next-times-to-try in a heap with one timer
    for the earliest; when it fires, the recipients that are due and
    still C{deferred} go back to the scheduler (C{due}), grouped by
    transaction.  An entry whose recipient was meanwhile released, held,
    deleted or given a later time is dropped.

    Once C{queuereturn_timeout} has passed since a transaction arrived,
    its recipients are no longer retried: L{expired} says so and the
    scheduler bounces them.

CONFIGURATION PARAMETERS
    retry_min_delay, retry_max_delay, queuereturn_timeout

SECURITY
    None.

DIAGNOSTICS
    None of its own (the scheduler logs each deferral at debug level).
"""

from __future__ import annotations

import collections
import heapq
from typing import Any, Callable, Dict, List, Optional, Tuple

from smx.queue.envelope import Recipient, Transaction

Due = Callable[[Transaction, List[Recipient]], None]


class RetrySchedule:
    """
    The next-times-to-try of deferred recipients.

    @ivar store: what has the queued transactions (C{transactions}: id ->
        L{Transaction}), a L{smx.queue.store.QueueStore}.
    @ivar due: called with C{(transaction, recipients)} when they are due.
    """

    def __init__(
        self,
        clock: Any,
        store: Any,
        due: Due,
        retryMinDelay: float,
        retryMaxDelay: float,
        queuereturnTimeout: float,
    ) -> None:
        self.clock = clock
        self.store = store
        self.due = due
        self.retryMinDelay = retryMinDelay
        self.retryMaxDelay = max(retryMinDelay, retryMaxDelay)
        self.queuereturnTimeout = queuereturnTimeout
        self.running = True
        self._heap = []  # type: List[Tuple[float, str, int]]
        self._timer = None  # type: Any

    def retryDelay(self, tries: int) -> float:
        """
        @return: the delay before the next attempt after C{tries} attempts:
            C{retry_min_delay} doubled per attempt, at most
            C{retry_max_delay}.
        """
        delay = self.retryMinDelay * (2 ** max(0, min(tries - 1, 30)))
        return float(min(self.retryMaxDelay, max(self.retryMinDelay, delay)))

    def expired(self, ta: Transaction, now: float) -> bool:
        """
        @return: has C{queuereturn_timeout} passed since C{ta} arrived (its
            temporary failures are then bounced, not retried)?
        """
        return now - ta.received >= self.queuereturnTimeout

    def retryAt(self, ta: Transaction, r: Recipient) -> None:
        """
        Hand C{r} (deferred) back to the scheduler at its C{nextTry}.
        """
        heapq.heappush(self._heap, (r.nextTry, ta.id, r.index))
        self._arm()

    def pending(self) -> int:
        """@return: how many next-times-to-try are waiting (stale included)."""
        return len(self._heap)

    def _arm(self) -> None:
        if not self._heap or not self.running:
            return
        when = self._heap[0][0]
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= when:
                return
            self._timer.cancel()
        delay = max(0.0, when - self.clock.seconds())
        self._timer = self.clock.callLater(delay, self._runDue)

    def _runDue(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        due = (
            collections.OrderedDict()
        )  # type: Dict[str, Tuple[Transaction, List[Recipient]]]
        while self._heap and self._heap[0][0] <= now:
            _, taId, index = heapq.heappop(self._heap)
            ta = self.store.transactions.get(taId)
            if ta is None:
                continue
            r = ta.recipients.get(index)
            if r is None or r.state != "deferred" or r.nextTry > now:
                continue
            due.setdefault(taId, (ta, []))[1].append(r)
        for ta, rcpts in due.values():
            self.due(ta, rcpts)
        self._arm()

    def flush(self, ta: Optional[Transaction] = None) -> int:
        """
        Retry deferred recipients (of C{ta}, or all) now.

        @return: the number of recipients requeued.
        """
        now = self.clock.seconds()
        tas = [ta] if ta is not None else list(self.store.transactions.values())
        n = 0
        for t in tas:
            for r in t.recipients.values():
                if r.state == "deferred":
                    r.nextTry = now
                    self.retryAt(t, r)
                    n += 1
        return n

    def stop(self) -> None:
        """Cancel the timer; the next-times-to-try stay for a restart."""
        self.running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
