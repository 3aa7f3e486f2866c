# -*- test-case-name: smx.test.test_ids -*-
"""
Session and transaction identifiers (seed App. C.1).

SMTPS ids are C{"S"}, a 64-bit counter and an 8-bit process id, in
upper-case hexadecimal: C{S00000000407CE49200}.  SMTPC ids are C{"C"}, an
8-bit process id, a 32-bit counter and a 32-bit thread index:
C{C010000137D00000000}.

Uniqueness across restarts: the SMTPS counter never goes below the current
time in microseconds, so a restarted server continues above every id it
handed out before (no id is issued faster than one per microsecond).  The
SMTPC counter is 32 bits wide, too narrow for that; it starts at the
current time in seconds and, with a state file, above the highest block
reserved by the previous run (blocks of 65536 are reserved ahead, so the
file is written rarely).

Because the SMTPS transaction id names the CDB file (seed §6.10.2), ids
sort by creation time and are valid file names.
"""

from __future__ import annotations

import os
import re
import time
from typing import Callable, Optional

SMTPS_ID = re.compile(r"^S[0-9A-F]{16}[0-9A-F]{2}$")
SMTPC_ID = re.compile(r"^C[0-9A-F]{2}[0-9A-F]{8}[0-9A-F]{8}$")


def isServerId(text: str) -> bool:
    """Is C{text} an SMTPS session or transaction id?"""
    return bool(SMTPS_ID.match(text))


def isClientId(text: str) -> bool:
    """Is C{text} an SMTPC session or transaction id?"""
    return bool(SMTPC_ID.match(text))


class ServerIdGenerator:
    """
    SMTPS session and transaction ids (one counter for both, like
    sendmail X).

    @ivar processId: the 8-bit process id (the C{id} option, seed §5.9).
    """

    def __init__(self, processId: int = 0, clock: Callable[[], float] = time.time):
        if not 0 <= processId <= 0xFF:
            raise ValueError("SMTPS id must be between 0 and 255")
        self.processId = processId
        self._clock = clock
        self._last = 0

    def next(self) -> str:
        """
        @return: a new id, greater than every id this generator (or an
            earlier one with the same process id) returned.
        """
        now = int(self._clock() * 1000000)
        self._last = max(self._last + 1, now) & 0xFFFFFFFFFFFFFFFF
        return "S%016X%02X" % (self._last, self.processId)


class ClientIdGenerator:
    """
    SMTPC session and transaction ids.

    @ivar processId: the 8-bit process id.
    """

    BLOCK = 0x10000

    def __init__(
        self,
        processId: int = 1,
        stateFile: Optional[str] = None,
        clock: Callable[[], float] = time.time,
    ):
        if not 0 <= processId <= 0xFF:
            raise ValueError("SMTPC id must be between 0 and 255")
        self.processId = processId
        self._stateFile = stateFile
        start = int(clock()) & 0xFFFFFFFF
        if stateFile is not None:
            start = max(start, self._readState())
        self._counter = start
        self._reserved = start
        self._reserve()

    def _readState(self) -> int:
        assert self._stateFile is not None
        try:
            with open(self._stateFile) as f:
                return int(f.read().strip(), 16) & 0xFFFFFFFF
        except (OSError, ValueError):
            return 0

    def _reserve(self) -> None:
        self._reserved = (self._counter + self.BLOCK) & 0xFFFFFFFF
        if self._stateFile is None:
            return
        tmp = self._stateFile + ".tmp"
        with open(tmp, "w") as f:
            f.write("%08X\n" % (self._reserved,))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._stateFile)

    def next(self, thread: int = 0) -> str:
        """
        @param thread: the 32-bit thread (connection) index.
        @return: a new id.
        """
        self._counter = (self._counter + 1) & 0xFFFFFFFF
        if self._counter == self._reserved:
            self._reserve()
        return "C%02X%08X%08X" % (self.processId, self._counter, thread & 0xFFFFFFFF)
