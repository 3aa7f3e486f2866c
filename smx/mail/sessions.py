# -*- test-case-name: smx.mail.test.test_sessions -*-
"""
NAME
    smx.mail.sessions - who may hold the sessions of an SMTPS listener

SYNOPSIS
    table = SessionTable(maxSessions=256, clock=reactor)
    reply = table.admit(session)      # None, or (421, dsn, text)
    table.setIncomplete(session, True)
    table.remove(session)

DESCRIPTION
    Postfix's anvil and postscreen ideas, kept simple: the sessions of a
    listener are counted per client address, and a session that keeps the
    server waiting is told apart from one that behaves.

    A session's I{lag} is how long the server has been waiting for its
    client to send a complete line (or finish the TLS handshake); it is 0
    while the server itself works on the session.  A session is I{slow}
    when its lag is at least L{SLOW_AFTER} seconds and its client has
    sent part of a line (or started STARTTLS) without finishing it.

    With a session limit M (C{processes} x C{max_threads}) and the share
    S = max(1, M / 8), a new session from address A is refused with 421

      1. 4.7.0, when A holds S slow sessions;
      2. 4.7.0, near the limit (3/4 of M taken), when A holds S sessions
         and one of them is slow: the last quarter is kept for clients
         that behave;
      3. 4.3.2, when all M are taken, unless a session of an address
         that holds more sessions than A lags at least L{EVICT_AFTER}
         seconds: then the one that lags most, preferring the address
         that holds the most sessions, is closed to make room (421 4.3.2)
         and A's session is admitted.

    Sessions thus move from the addresses that hold many to those that
    hold few, and never to a client that already holds as many as the
    others.  An address that lost a session this way may not take one
    from others for L{EVICTED_MEMORY} seconds (it waits for a free one):
    clients that reconnect as soon as they are closed cannot take the
    sessions in turns.  Without a session limit every session is
    admitted.

    Sessions that behave are never refused by these rules before the
    limit is reached, however many come from one address; QMGR's C{icr:}
    and C{ios:} limits (seed §5.7.1) still apply after admission.

    An "address" here is an IPv4 address, or the /64 network of an IPv6
    address (L{clientGroup}): one IPv6 host usually has a whole /64.

    The sessions are duck-typed: a C{clientAddress} attribute, a
    C{lag(now)} method and an C{evict()} method that closes the session
    (and removes it from the table).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, Optional, Set, Tuple

#: a session whose client has an unfinished line this long is slow (s)
SLOW_AFTER = 2.0

#: a full listener closes a session that lags at least this long (s)
EVICT_AFTER = 1.0

#: the fraction of the session limit (1/8) an address may hold when it
#: is slow or the listener is nearly full
SHARE_DIVISOR = 8

#: an address whose session was closed to make room may not have another
#: session closed for it for this long (s)
EVICTED_MEMORY = 60.0

#: addresses remembered for EVICTED_MEMORY before old ones are forgotten
EVICTED_ENTRIES = 4096


def clientGroup(address: str) -> str:
    """
    What the limits count sessions by: an IPv4 address itself, the /64
    network of an IPv6 address (C{2001:db8:1:2::/64}).
    """
    if ":" not in address:
        return address
    try:
        return str(ipaddress.IPv6Network(address + "/64", strict=False))
    except ValueError:
        return address


class SessionTable:
    """
    The admitted sessions of one listener, by client address.

    @ivar maxSessions: the session limit (0: none).
    @ivar count: the number of admitted sessions.
    @ivar evicted: sessions closed to make room, since the start.
    @ivar refused: sessions refused by these rules, since the start.
    """

    def __init__(self, maxSessions: int, clock: Any) -> None:
        self.maxSessions = maxSessions
        self.clock = clock
        self.count = 0
        self.evicted = 0
        self.refused = 0
        self._byAddress = {}  # type: Dict[str, Set[Any]]
        self._incomplete = {}  # type: Dict[str, Set[Any]]
        # session -> its clientGroup
        self._groups = {}  # type: Dict[Any, str]
        # address -> when one of its sessions was last closed to make room
        self._evictedAt = {}  # type: Dict[str, float]
        #: the reply to every new session while the listener stops
        #: (L{smx.mail.drain}), else C{None}
        self.closing = None  # type: Optional[Tuple[int, str, str]]

    @property
    def share(self) -> int:
        """The sessions an address may hold before the rules look at it."""
        return max(1, self.maxSessions // SHARE_DIVISOR)

    def held(self, address: str) -> int:
        """@return: the sessions C{address} (its L{clientGroup}) holds."""
        return len(self._byAddress.get(clientGroup(address), ()))

    def slow(self, address: str, now: Optional[float] = None) -> int:
        """@return: the slow sessions of C{address} (its L{clientGroup})."""
        if now is None:
            now = self.clock.seconds()
        incomplete = self._incomplete.get(clientGroup(address), ())
        return sum(1 for s in incomplete if s.lag(now) >= SLOW_AFTER)

    def admit(self, session: Any) -> Optional[Tuple[int, str, str]]:
        """
        Admit C{session} (and count it) or say why not; may close another
        session to make room.

        @return: C{None}, or the C{(code, dsn, text)} to refuse it with.
        """
        if self.closing is not None:
            return self.closing
        group = clientGroup(session.clientAddress)
        limit = self.maxSessions
        if limit:
            reply = self._check(group, limit)
            if reply is not None:
                self.refused += 1
                return reply
        self._byAddress.setdefault(group, set()).add(session)
        self._groups[session] = group
        self.count += 1
        return None

    def _check(self, address: str, limit: int) -> Optional[Tuple[int, str, str]]:
        share = self.share
        held = self.held(address)
        now = self.clock.seconds()
        if held >= share:
            slow = self.slow(address, now)
            if slow >= share:
                return (421, "4.7.0", "Too many slow sessions from %s" % (address,))
            if slow and self.count >= limit - limit // 4:
                return (421, "4.7.0", "Too many sessions from %s" % (address,))
        if self.count < limit:
            return None
        victim = None
        if now - self._evictedAt.get(address, -EVICTED_MEMORY) >= EVICTED_MEMORY:
            victim = self.victim(now, held)
        if victim is None:
            return (421, "4.3.2", "Too many sessions, try again later")
        self.evicted += 1
        self._rememberEviction(self._groups[victim], now)
        victim.evict()
        self.remove(victim)
        return None

    def _rememberEviction(self, address: str, now: float) -> None:
        evictedAt = self._evictedAt
        if len(evictedAt) >= EVICTED_ENTRIES and address not in evictedAt:
            for old, when in list(evictedAt.items()):
                if now - when >= EVICTED_MEMORY:
                    del evictedAt[old]
            if len(evictedAt) >= EVICTED_ENTRIES:
                del evictedAt[next(iter(evictedAt))]
        evictedAt[address] = now

    def victim(self, now: float, held: int = 0) -> Any:
        """
        The session to close for a new one from an address that holds
        C{held} sessions: the one that lags most (at least L{EVICT_AFTER})
        of the addresses holding the most sessions, else of every address
        that holds more than C{held}.

        @return: a session, or C{None}.
        """
        if not self._byAddress:
            return None
        groups = self._byAddress.values()
        most = max(len(sessions) for sessions in groups)
        if most <= held:
            return None
        found = _mostLagging(
            (s for sessions in groups if len(sessions) == most for s in sessions), now
        )
        if found is None:
            found = _mostLagging(
                (
                    s
                    for sessions in groups
                    if held < len(sessions) < most
                    for s in sessions
                ),
                now,
            )
        return found

    def setIncomplete(self, session: Any, incomplete: bool) -> None:
        """
        Say whether the client of C{session} has sent part of a line (or
        started the TLS handshake) that it has not finished.
        """
        group = self._groups.get(session)
        if group is None:
            return
        if incomplete:
            self._incomplete.setdefault(group, set()).add(session)
        else:
            sessions = self._incomplete.get(group)
            if sessions is not None:
                sessions.discard(session)
                if not sessions:
                    del self._incomplete[group]

    def remove(self, session: Any) -> None:
        """Forget C{session} (it ends); no-op if it was not admitted."""
        self.setIncomplete(session, False)
        group = self._groups.pop(session, None)
        if group is None:
            return
        sessions = self._byAddress[group]
        sessions.discard(session)
        if not sessions:
            del self._byAddress[group]
        self.count -= 1


def _mostLagging(sessions: Any, now: float) -> Any:
    best = None
    bestLag = EVICT_AFTER
    for s in sessions:
        lag = s.lag(now)
        if lag >= bestLag:
            best, bestLag = s, lag
    return best
