# -*- test-case-name: smx.queue.test.test_limits -*-
"""
NAME
    smx.queue.connections - slow start for outgoing and limits for incoming
    connections

SYNOPSIS
    out = SlowStart(clock, initial, maximum, conf=confMap,
                    cacheSize=OCC_max_entries)
    if out.mayOpen(ip): out.opened(ip); ...; out.closed(ip, success)
    inc = IncomingControl(clock, maxRate, maxOpen, conf=confMap)
    reply = inc.sessionOpen(sessionId, ip)     # None or a 4xx reply

DESCRIPTION
    Slow start (seed §5.7.1): at most C{initial} (C{oci:}) concurrent
    deliveries go to a new destination IP address; every successful
    delivery raises the limit by one up to C{maximum} (C{ocm:}); a failed
    one halves it (never below one).  The per-destination state lives in
    the open connection cache of at most C{cacheSize} entries
    (C{OCC_max_entries}); an idle entry older than C{octo:} seconds is
    forgotten, and the least recently used idle entries make room.

    Incoming control: a client address may open at most C{icr:} /
    C{smtps_max_connection_rate} sessions per 60 seconds and have at most
    C{ios:} / C{smtps_max_open_connections} open at once.

CONFIGURATION PARAMETERS
    smtpc_initial_connections, smtpc_max_connections,
    smtps_max_connection_rate, smtps_max_open_connections, OCC_max_entries,
    the conf map (oci: ocm: octo: icr: ios:)

SECURITY
    The per-client state is bounded: addresses with no open session and no
    session in the last 60 s are dropped.

DIAGNOSTICS
    Refused sessions get C{421 4.7.0} replies naming the limit.
"""

from __future__ import annotations

import collections
from typing import Any, Deque, Dict, Optional

from twisted.internet.interfaces import IReactorTime

from smx.queue.confmap import ConfigurationMap
from smx.values import ReplyData

RATE_WINDOW = 60.0


class _Destination:
    __slots__ = ("limit", "open", "lastUsed", "successes", "failures")

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.open = 0
        self.lastUsed = now
        self.successes = 0
        self.failures = 0


class SlowStart:
    """
    Concurrency limits per destination IP address.
    """

    def __init__(
        self,
        clock: IReactorTime,
        initial: int,
        maximum: int,
        conf: Optional[ConfigurationMap] = None,
        *,
        cacheSize: int,
        cacheTimeout: float = 600.0,
    ) -> None:
        """
        @param initial: C{smtpc_initial_connections}.
        @param maximum: C{smtpc_max_connections}.
        @param conf: the conf map (L{smx.queue.confmap}), or C{None}.
        @param cacheSize: C{OCC_max_entries}.
        @param cacheTimeout: seconds an idle entry is kept (C{octo:}).
        """
        self.clock = clock
        self.initial = max(1, initial)
        self.maximum = max(self.initial, maximum)
        self.conf = conf
        self.cacheSize = max(1, cacheSize)
        self.cacheTimeout = cacheTimeout
        self._cache = (
            collections.OrderedDict()
        )  # type: collections.OrderedDict[str, _Destination]

    def _confValue(self, tag: str, address: str, default: Any) -> Any:
        if self.conf is None:
            return default
        value = self.conf.lookup(tag, address)
        return default if value is None else value

    def limits(self, address: str) -> tuple:
        """@return: C{(initial, maximum)} in force for C{address}."""
        initial = max(1, self._confValue("oci", address, self.initial))
        maximum = max(initial, self._confValue("ocm", address, self.maximum))
        return initial, maximum

    def _entry(self, address: str) -> _Destination:
        now = self.clock.seconds()
        entry = self._cache.get(address)
        timeout = self._confValue("octo", address, self.cacheTimeout)
        if entry is not None and entry.open == 0 and now - entry.lastUsed > timeout:
            del self._cache[address]
            entry = None
        if entry is None:
            entry = _Destination(self.limits(address)[0], now)
            self._cache[address] = entry
            self._evict()
        else:
            self._cache.move_to_end(address)
        return entry

    def _evict(self) -> None:
        if len(self._cache) <= self.cacheSize:
            return
        for key in list(self._cache):
            if len(self._cache) <= self.cacheSize:
                break
            if self._cache[key].open == 0:
                del self._cache[key]

    def mayOpen(self, address: str) -> bool:
        """May one more delivery to C{address} start now?"""
        entry = self._entry(address)
        return entry.open < entry.limit

    def opened(self, address: str) -> None:
        """A delivery to C{address} started."""
        entry = self._entry(address)
        entry.open += 1
        entry.lastUsed = self.clock.seconds()

    def closed(self, address: str, success: bool) -> None:
        """
        A delivery to C{address} ended; C{success} raises the limit, a
        failure lowers it.
        """
        entry = self._entry(address)
        entry.open = max(0, entry.open - 1)
        entry.lastUsed = self.clock.seconds()
        if success:
            entry.successes += 1
            entry.limit = min(self.limits(address)[1], entry.limit + 1)
        else:
            entry.failures += 1
            entry.limit = max(1, entry.limit // 2)
        self._evict()

    def state(self) -> Dict[str, Dict[str, int]]:
        """@return: address -> C{{"limit", "open"}} of the cached entries."""
        return {a: {"limit": e.limit, "open": e.open} for a, e in self._cache.items()}


class IncomingControl:
    """
    Incoming session limits per client IP address.
    """

    def __init__(
        self,
        clock: IReactorTime,
        maxRate: int,
        maxOpen: int,
        conf: Optional[ConfigurationMap] = None,
    ) -> None:
        """
        @param maxRate: C{smtps_max_connection_rate}.
        @param maxOpen: C{smtps_max_open_connections}.
        @param conf: the conf map (L{smx.queue.confmap}), or C{None}.
        """
        self.clock = clock
        self.maxRate = maxRate
        self.maxOpen = maxOpen
        self.conf = conf
        self._recent = {}  # type: Dict[str, Deque[float]]
        self._open = {}  # type: Dict[str, int]
        self._sessions = {}  # type: Dict[str, str]
        self.refused = 0

    def limits(self, address: str) -> tuple:
        """@return: C{(rate, open)} in force for C{address}."""
        rate, open_ = self.maxRate, self.maxOpen
        if self.conf is not None:
            v = self.conf.lookup("icr", address)
            if v is not None:
                rate = v
            v = self.conf.lookup("ios", address)
            if v is not None:
                open_ = v
        return rate, open_

    def sessionOpen(self, sessionId: str, address: str) -> Optional[ReplyData]:
        """
        @return: C{None} to accept, or a 421 reply to refuse.
        """
        now = self.clock.seconds()
        recent = self._recent.setdefault(address, collections.deque())
        while recent and now - recent[0] >= RATE_WINDOW:
            recent.popleft()
        rate, maxOpen = self.limits(address)
        if len(recent) >= rate:
            self.refused += 1
            return {
                "code": 421,
                "dsn": "4.7.0",
                "text": "connection rate limit exceeded for %s" % (address,),
            }
        if self._open.get(address, 0) >= maxOpen:
            self.refused += 1
            return {
                "code": 421,
                "dsn": "4.7.0",
                "text": "too many open connections from %s" % (address,),
            }
        recent.append(now)
        self._open[address] = self._open.get(address, 0) + 1
        self._sessions[sessionId] = address
        return None

    def sessionClose(self, sessionId: str, address: str) -> None:
        """A session accepted by L{sessionOpen} ended."""
        address = self._sessions.pop(sessionId, "") or address
        if not address:
            return
        n = self._open.get(address, 0) - 1
        if n > 0:
            self._open[address] = n
        else:
            self._open.pop(address, None)
        self._expire()

    def _expire(self) -> None:
        if len(self._recent) < 1024:
            return
        now = self.clock.seconds()
        for address in list(self._recent):
            recent = self._recent[address]
            if address not in self._open and (
                not recent or now - recent[-1] >= RATE_WINDOW
            ):
                del self._recent[address]

    def openSessions(self) -> int:
        """@return: the number of open sessions."""
        return len(self._sessions)
