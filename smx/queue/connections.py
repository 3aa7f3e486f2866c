# -*- test-case-name: smx.queue.test.test_limits,smx.queue.test.test_suspended -*-
"""
NAME
    smx.queue.connections - slow start for outgoing and limits for incoming
    connections

SYNOPSIS
    out = SlowStart(clock, initial, maximum, conf=confMap,
                    cacheSize=OCC_max_entries, deadTime=retry_min_delay)
    if out.mayOpen(ip): out.opened(ip); ...; out.closed(ip, success)
    out.suspended(routes)              # None, or the reply of the failure
    out.probe(routes); out.unreachable(routes, name, reply); out.reachable(routes)
    inc = IncomingControl(clock, maxRate, maxOpen, conf=confMap)
    reply = inc.sessionOpen(sessionId, ip)     # None or a 4xx reply
    d = inc.admit(sessionId, ip)    # the same, a while later if over ios:

DESCRIPTION
    Slow start (seed §5.7.1): at most C{initial} (C{oci:}) concurrent
    deliveries go to a new destination IP address; every successful
    delivery raises the limit by one up to C{maximum} (C{ocm:}); a failed
    one halves it (never below one).  The per-destination state lives in
    the open connection cache of at most C{cacheSize} entries
    (C{OCC_max_entries}); an idle entry older than C{octo:} seconds is
    forgotten, and the least recently used idle entries make room.

    Dead destinations (as Postfix's queue manager): when no route of a
    delivery transaction took the connection (every result a temporary
    failure at C{connect} or C{greeting}), its I{route set} (the routes
    of the transaction: mailer, host, address, port) is suspended for
    C{deadTime} seconds (C{retry_min_delay}, as Postfix's
    C{minimal_backoff_time}): L{suspended} gives the failure's reply and
    the scheduler defers the mail for those routes at once, without a
    connection attempt.  Then the next delivery over them is the probe
    (L{probe}; the others stay suspended until it ends): a route that
    takes the connection ends the suspension (L{reachable}), a failure of
    every route renews it (L{unreachable}).  The key is the whole route
    set, so a down primary MX whose secondary answers is never suspended.

    Incoming control: a client address may open at most C{icr:} /
    C{smtps_max_connection_rate} sessions per 60 seconds and have at most
    C{ios:} / C{smtps_max_open_connections} open at once.  L{admit}
    (QMGR's C{sessionOpen}) does not refuse a session over the open
    limit at once: it waits for a close of that address, at most
    L{OPEN_GRACE} seconds, then looks again (and refuses if the limit
    still holds).  In split mode the close of a session and the open of
    the client's next one come from two SMTPS processes over two
    connections, and the open may arrive first: a client that keeps
    within the limit is not refused for that.  The rate limit is exact:
    a session counts when it is accepted, and the look after the wait
    checks the rate again.

CONFIGURATION PARAMETERS
    smtpc_initial_connections, smtpc_max_connections,
    smtps_max_connection_rate, smtps_max_open_connections, OCC_max_entries,
    the conf map (oci: ocm: octo: icr: ios:), retry_min_delay (how long a
    destination that cannot be reached is suspended)

SECURITY
    The per-client state is bounded: addresses with no open session and no
    session in the last 60 s are dropped; a session waits for a close at
    most L{OPEN_GRACE} seconds (one timer each, at most one per open
    SMTPS connection).

DIAGNOSTICS
    Refused sessions get C{421 4.7.0} replies naming the limit.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Deque, Dict, Hashable, List, Optional, Tuple

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from smx._twistedcompat import succeeded
from smx.queue.confmap import ConfigurationMap
from smx.values import ReplyData

RATE_WINDOW = 60.0
#: how long a session over the open-connections limit waits for a close
#: of its address (from another SMTPS process) before it is refused
OPEN_GRACE = 0.15
#: L{IncomingControl.sessionOpen}'s answer, when asked not to refuse, to
#: a session over the open-connections limit
_OVER_OPEN = {"code": 421, "dsn": "4.7.0", "text": "over the limit"}  # type: ReplyData


class _Destination:
    __slots__ = ("limit", "open", "lastUsed", "successes", "failures")

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.open = 0
        self.lastUsed = now
        self.successes = 0
        self.failures = 0


class _Suspension:
    """A route set that could not be reached (see L{SlowStart.unreachable})."""

    __slots__ = ("name", "reply", "until", "probing")

    def __init__(self, name: str, reply: str, until: float) -> None:
        self.name = name
        self.reply = reply
        self.until = until
        self.probing = False


class SlowStart:
    """
    Concurrency limits per destination IP address, and the route sets
    suspended because none of their routes could be reached.

    @ivar deadTime: seconds a route set stays suspended after a failure
        of all its routes (0: never suspended).
    """

    def __init__(
        self,
        clock: IReactorTime,
        initial: int,
        maximum: int,
        conf: Optional[ConfigurationMap] = None,
        *,
        cacheSize: int,
        deadTime: float,
        cacheTimeout: float = 600.0,
    ) -> None:
        """
        @param initial: C{smtpc_initial_connections}.
        @param maximum: C{smtpc_max_connections}.
        @param conf: the conf map (L{smx.queue.confmap}), or C{None}.
        @param cacheSize: C{OCC_max_entries}.
        @param cacheTimeout: seconds an idle entry is kept (C{octo:}).
        @param deadTime: seconds a route set none of whose routes could be
            reached is suspended (C{retry_min_delay}; 0: none is).
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
        self.deadTime = deadTime
        self._suspensions = (
            collections.OrderedDict()
        )  # type: collections.OrderedDict[Hashable, _Suspension]

    def _confValue(self, tag: str, address: str, default: Any) -> Any:
        conf = self.conf
        if conf is None or not conf.entries:
            # no conf map, or an empty one (the usual case): no lookup
            return default
        value = conf.lookup(tag, address)
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

    def room(self, address: str) -> int:
        """How many more deliveries to C{address} may start now."""
        entry = self._entry(address)
        return max(0, entry.limit - entry.open)

    def opened(self, address: str) -> None:
        """A delivery to C{address} started."""
        entry = self._entry(address)
        entry.open += 1
        entry.lastUsed = self.clock.seconds()

    def closed(self, address: str, success: Optional[bool]) -> None:
        """
        A delivery to C{address} ended; C{success} raises the limit, a
        failure lowers it, C{None} (nothing was sent to C{address}: its
        route set was suspended) leaves it.
        """
        entry = self._entry(address)
        entry.open = max(0, entry.open - 1)
        entry.lastUsed = self.clock.seconds()
        if success is None:
            pass
        elif success:
            entry.successes += 1
            entry.limit = min(self.limits(address)[1], entry.limit + 1)
        else:
            entry.failures += 1
            entry.limit = max(1, entry.limit // 2)
        self._evict()

    # -- dead destinations ----------------------------------------------

    def suspended(self, routes: Hashable) -> Optional[str]:
        """
        @param routes: a route set (hashable: the routes' mailer, host,
            address and port).
        @return: the reply of the failure that suspended deliveries over
            C{routes} while they are suspended (C{deadTime} since the last
            failure has not passed, or the probe after it is under way);
            C{None} when a delivery may go.
        """
        mark = self._suspensions.get(routes)
        if mark is None:
            return None
        if mark.probing or self.clock.seconds() < mark.until:
            return mark.reply
        return None

    def probe(self, routes: Hashable) -> bool:
        """
        A delivery over C{routes} starts: if their suspension has expired
        it is the probe, and the deliveries after it stay suspended until
        its result (L{reachable}, L{unreachable} or L{probeEnded}).

        @return: whether it is the probe.
        """
        mark = self._suspensions.get(routes)
        if mark is None or mark.probing or self.clock.seconds() < mark.until:
            return False
        mark.probing = True
        return True

    def unreachable(self, routes: Hashable, name: str, reply: str) -> bool:
        """
        No route of C{routes} took the connection: deliveries over them
        are suspended for C{deadTime} seconds from now (a suspension is
        renewed).

        @param name: the route set as the status shows it.
        @param reply: the reply of the failure.
        @return: whether C{routes} were not suspended before.
        """
        if self.deadTime <= 0:
            return False
        new = self._suspensions.pop(routes, None) is None
        self._suspensions[routes] = _Suspension(
            name, reply, self.clock.seconds() + self.deadTime
        )
        if len(self._suspensions) > self.cacheSize:
            now = self.clock.seconds()
            for key, mark in list(self._suspensions.items()):
                if len(self._suspensions) <= self.cacheSize:
                    break
                if not mark.probing and mark.until <= now:
                    del self._suspensions[key]
            while len(self._suspensions) > self.cacheSize:
                # the oldest: at worst one more connection attempt
                self._suspensions.popitem(last=False)
        return new

    def reachable(self, routes: Hashable) -> bool:
        """
        A route of C{routes} took the connection: their suspension ends.

        @return: whether they were suspended.
        """
        return self._suspensions.pop(routes, None) is not None

    def probeEnded(self, routes: Hashable) -> None:
        """
        The probe of C{routes} gave no verdict (the delivery agent failed
        or did not answer in time): the next delivery is the probe.
        """
        mark = self._suspensions.get(routes)
        if mark is not None:
            mark.probing = False

    def resume(self) -> int:
        """
        End every suspension (a flush of the whole queue, as Postfix's
        C{postqueue -f}).

        @return: how many there were.
        """
        n = len(self._suspensions)
        self._suspensions.clear()
        return n

    def state(self) -> Dict[str, Dict[str, int]]:
        """
        @return: address -> C{{"limit", "open"}} of the cached entries,
            and route set -> C{{"suspended": seconds left}} of the
            suspended route sets (0: its probe is under way), in the
            entry of its address when it has one route.
        """
        out = {
            a: {"limit": e.limit, "open": e.open} for a, e in self._cache.items()
        }  # type: Dict[str, Dict[str, int]]
        now = self.clock.seconds()
        for mark in self._suspensions.values():
            if mark.probing or now < mark.until:
                left = max(0, int(math.ceil(mark.until - now)))
                entry = out.setdefault(mark.name, {})
                entry["suspended"] = max(left, entry.get("suspended", 0))
        return out


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
        # address -> the sessions waiting for a close (L{admit})
        self._waiting = (
            {}
        )  # type: Dict[str, List[Tuple[str, defer.Deferred[Optional[ReplyData]], Any]]]
        self.refused = 0

    def limits(self, address: str) -> tuple:
        """@return: C{(rate, open)} in force for C{address}."""
        rate, open_ = self.maxRate, self.maxOpen
        if self.conf is not None and self.conf.entries:
            v = self.conf.lookup("icr", address)
            if v is not None:
                rate = v
            v = self.conf.lookup("ios", address)
            if v is not None:
                open_ = v
        return rate, open_

    def sessionOpen(
        self, sessionId: str, address: str, refuse: bool = True
    ) -> Optional[ReplyData]:
        """
        @param refuse: if false, a session over the open-connections limit
            is not refused (nor counted) but answered with C{_OVER_OPEN}.
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
            if not refuse:
                return _OVER_OPEN
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

    def admit(
        self, sessionId: str, address: str
    ) -> defer.Deferred[Optional[ReplyData]]:
        """
        L{sessionOpen}, except that a session over the open-connections
        limit waits for a close of its address, at most L{OPEN_GRACE}
        seconds, before it is looked at again.

        @return: a L{Deferred} firing with C{None} to accept, or a 421
            reply to refuse.
        """
        reply = self.sessionOpen(sessionId, address, refuse=False)
        if reply is not _OVER_OPEN:
            return succeeded(reply)
        d = defer.Deferred()  # type: defer.Deferred[Optional[ReplyData]]
        timer = self.clock.callLater(  # type: ignore[attr-defined]
            OPEN_GRACE, self._lastLook, sessionId, address, d
        )
        self._waiting.setdefault(address, []).append((sessionId, d, timer))
        return d

    def _unwait(self, address: str, d: defer.Deferred) -> None:
        waiting = self._waiting.get(address, [])
        waiting[:] = [w for w in waiting if w[1] is not d]
        if not waiting:
            self._waiting.pop(address, None)

    def _lastLook(self, sessionId: str, address: str, d: defer.Deferred) -> None:
        self._unwait(address, d)
        d.callback(self.sessionOpen(sessionId, address))

    def stop(self) -> None:
        """Answer the sessions still waiting for a close now."""
        for address, waiting in list(self._waiting.items()):
            for sessionId, d, timer in list(waiting):
                timer.cancel()
                self._lastLook(sessionId, address, d)
        self._waiting.clear()

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
        waiting = self._waiting.get(address)
        if waiting:
            # the first session waiting for this close takes its place
            sessionId, d, timer = waiting[0]
            reply = self.sessionOpen(sessionId, address, refuse=False)
            if reply is not _OVER_OPEN:
                timer.cancel()
                self._unwait(address, d)
                d.callback(reply)
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
