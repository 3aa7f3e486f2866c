# -*- test-case-name: smx.queue.test.test_scheduler -*-
"""
NAME
    smx.queue.iqdb - IQDB, the recipients waiting for room in AQ

SYNOPSIS
    waiting = WaitingQueue()
    waiting.add(transaction, recipients)     # state "queued"
    for ta, rcpts in waiting.take(room): ...  # "active", by transaction
    waiting.count()                          # still waiting
    waiting.reaches(limit)                   # count() >= limit, cheaply

DESCRIPTION
    IQDB (seed §10) holds the recipients that are ready for delivery but
    not yet in the active queue (L{smx.queue.active}): new ones from
    SMTPS, and deferred ones whose next-time-to-try has come.  They leave
    it first in, first out, at most as many at a time as AQ has room for,
    grouped by transaction so that the recipients of one transaction that
    leave together are resolved and delivered together.

    A recipient that comes out is C{active}.  An entry whose recipient is
    no longer C{queued} (held, deleted, or queued twice and already taken)
    or whose transaction is finished is dropped when it comes out; it
    does not count against the room.

CONFIGURATION PARAMETERS
    IQDB { max_cache_entries } is QMGR's limit on L{WaitingQueue.count}
    (L{WaitingQueue.reaches})
    (new transactions are refused with 452 above it).

SECURITY
    None.

DIAGNOSTICS
    None.
"""

from __future__ import annotations

import collections
from typing import Deque, Dict, List, Tuple

from smx.queue.envelope import Recipient, Transaction


class WaitingQueue:
    """
    Recipients waiting for AQ, oldest first.

    @ivar entries: the C{(transaction, recipient)} pairs, oldest first
        (with entries that have become stale, see L{take}).
    """

    def __init__(self) -> None:
        self.entries = collections.deque()  # type: Deque[Tuple[Transaction, Recipient]]

    def add(self, ta: Transaction, rcpts: List[Recipient]) -> None:
        """
        Queue recipients of C{ta} (their state becomes C{"queued"}).
        """
        for r in rcpts:
            r.state = "queued"
            self.entries.append((ta, r))

    def take(self, room: int) -> List[Tuple[Transaction, List[Recipient]]]:
        """
        Take at most C{room} recipients that are still C{queued}, oldest
        first, dropping stale entries on the way; the recipients taken
        are C{active}.

        @return: C{(transaction, recipients)} pairs, one per transaction,
            in the order the transactions first came out.
        """
        groups = (
            collections.OrderedDict()
        )  # type: Dict[str, Tuple[Transaction, List[Recipient]]]
        taken = 0
        while self.entries and taken < room:
            ta, r = self.entries.popleft()
            if r.state != "queued" or ta.finished:
                continue
            r.state = "active"
            taken += 1
            groups.setdefault(ta.id, (ta, []))[1].append(r)
        return list(groups.values())

    def count(self) -> int:
        """@return: the number of recipients waiting (state C{queued})."""
        return sum(1 for _, r in self.entries if r.state == "queued")

    def reaches(self, limit: int) -> bool:
        """
        Is L{count} at least C{limit}?  Asked for every new transaction:
        the entries are only counted when there are at least C{limit} of
        them (L{count} walks them all: milliseconds for a full IQDB).
        """
        return len(self.entries) >= limit and self.count() >= limit
