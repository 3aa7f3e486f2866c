# -*- test-case-name: smx.queue.test.test_limits -*-
"""
NAME
    smx.queue.diskspace - refuse new mail while the disk is short

SYNOPSIS
    monitor = DiskSpaceMonitor([queueDir, cdbDir], minimum, ok)
    reply = monitor.check(size, inFlight, session)   # None, or 452 4.3.1
    monitor.release(session)     # its transaction was stored or ended

DESCRIPTION
    Below C{min_disk_space} free bytes (on any of the file systems of the
    queue), new transactions are refused with C{452 4.3.1} until at least
    C{ok_disk_space} bytes are free again (seed §5.7, §6.10.1).  Below
    L{FLOOR} bytes nothing new is taken whatever C{min_disk_space} says:
    the envelope and the content could not be stored.

    The free space is measured for every transaction (one C{statvfs} per
    file system), and a transaction is refused too when what is free,
    less the sizes in flight, would fall below the minimum: the C{SIZE=}
    each admitted transaction declared (reserved for its session from
    MAIL until its envelope is stored, the session ends or it starts the
    next one) and the content bytes received but not yet written
    (C{inFlight}, from the content store).  A burst of large messages
    thus cannot fill the disk between two measurements.

CONFIGURATION PARAMETERS
    min_disk_space, ok_disk_space (qmgr; KB in smx.conf, bytes here)

SECURITY
    None.

DIAGNOSTICS
    The change into and out of the short state is logged by the caller.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Hashable, Iterable, List, Optional

#: free bytes below which nothing new is accepted in any case
FLOOR = 1024 * 1024


def leastFreeBytes(
    paths: Iterable[Optional[str]], statvfs: Callable[[str], Any] = os.statvfs
) -> int:
    """
    @param paths: directories (C{None} or empty ones are skipped).
    @return: the least space free to unprivileged users on their file
        systems; a path that cannot be measured is left out, and with none
        measured, a practically unlimited number.
    """
    free = []
    for p in paths:
        if not p:
            continue
        try:
            st = statvfs(p)
        except OSError:
            continue
        free.append(st.f_bavail * st.f_frsize)
    return min(free) if free else 1 << 62


SHORT_REPLY = {
    "code": 452,
    "dsn": "4.3.1",
    "text": "insufficient disk space, try again later",
}


class DiskSpaceMonitor:
    """
    @ivar short: is the disk short now?
    @ivar free: the free bytes measured last.
    @ivar reserved: the bytes reserved for admitted transactions.
    """

    def __init__(
        self,
        paths: List[str],
        minimum: int,
        ok: int,
        statvfs: Callable[[str], Any] = os.statvfs,
    ) -> None:
        self.paths = paths
        self.minimum = max(minimum, FLOOR)
        self.ok = max(ok, self.minimum)
        self.statvfs = statvfs
        self.short = False
        self.free = None  # type: Optional[int]
        self.reserved = 0
        self._reservations = {}  # type: Dict[Hashable, int]

    def freeBytes(self) -> int:
        """@return: the least free space over the queue's file systems."""
        return leastFreeBytes(self.paths, self.statvfs)

    def measure(self) -> bool:
        """
        Measure the free space and update L{short}.

        @return: L{short}.
        """
        free = self.free = self.freeBytes()
        if self.short:
            if free >= self.ok:
                self.short = False
        elif free < self.minimum:
            self.short = True
        return self.short

    def check(
        self, size: int = 0, inFlight: int = 0, session: Optional[Hashable] = None
    ) -> Optional[Dict[str, Any]]:
        """
        May a new transaction of C{size} declared bytes be accepted now?
        If so, C{size} is reserved for C{session} (replacing what the
        session had reserved) until L{release}.

        @param inFlight: content bytes received but not yet written.
        @return: C{None} if it may, else a 452 reply.
        """
        if session is not None:
            self.release(session)
        if self.measure():
            return dict(SHORT_REPLY)
        size = max(0, int(size or 0))
        if (self.free or 0) - self.reserved - inFlight - size < self.minimum:
            return dict(SHORT_REPLY)
        if session is not None and size:
            self._reservations[session] = size
            self.reserved += size
        return None

    def release(self, session: Hashable) -> None:
        """
        The transaction of C{session} is stored or over: forget its
        reservation.
        """
        size = self._reservations.pop(session, 0)
        self.reserved -= size
