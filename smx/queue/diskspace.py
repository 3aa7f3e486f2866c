# -*- test-case-name: smx.queue.test.test_limits -*-
"""
NAME
    smx.queue.diskspace - refuse new mail while the disk is short

SYNOPSIS
    monitor = DiskSpaceMonitor([cdbDir, ibdbDir], minimum, ok, clock)
    reply = monitor.check()     # None, or 452 4.3.1

DESCRIPTION
    Below C{min_disk_space} free bytes (on any of the file systems of the
    queue), new transactions are refused with C{452 4.3.1} until at least
    C{ok_disk_space} bytes are free again (seed §5.7, §6.10.1).  The free
    space is measured at most once a second.

CONFIGURATION PARAMETERS
    min_disk_space, ok_disk_space (qmgr; KB in smx.conf, bytes here)

SECURITY
    None.

DIAGNOSTICS
    The change into and out of the short state is logged by the caller.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional

SHORT_REPLY = {
    "code": 452,
    "dsn": "4.3.1",
    "text": "insufficient disk space, try again later",
}


class DiskSpaceMonitor:
    """
    @ivar short: is the disk short now?
    """

    def __init__(
        self,
        paths: List[str],
        minimum: int,
        ok: int,
        clock: Any,
        statvfs: Callable[[str], Any] = os.statvfs,
        interval: float = 1.0,
    ) -> None:
        self.paths = paths
        self.minimum = minimum
        self.ok = max(ok, minimum)
        self.clock = clock
        self.statvfs = statvfs
        self.interval = interval
        self.short = False
        self.free = None  # type: Optional[int]
        self._checked = None  # type: Optional[float]

    def freeBytes(self) -> int:
        """@return: the least free space over the queue's file systems."""
        free = []
        for p in self.paths:
            try:
                st = self.statvfs(p)
            except OSError:
                continue
            free.append(st.f_bavail * st.f_frsize)
        return min(free) if free else 1 << 62

    def check(self) -> Optional[Dict[str, Any]]:
        """
        @return: C{None} if new mail may be accepted, else a 452 reply.
        """
        now = self.clock.seconds()
        if self._checked is None or now - self._checked >= self.interval:
            self._checked = now
            self.free = self.freeBytes()
            if self.short:
                if self.free >= self.ok:
                    self.short = False
            elif self.free < self.minimum:
                self.short = True
        return dict(SHORT_REPLY) if self.short else None
