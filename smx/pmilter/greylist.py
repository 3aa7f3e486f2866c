# -*- test-case-name: smx.pmilter.test.test_greylist -*-
"""
NAME
    smx.pmilter.greylist - the greylisting pmilter

SYNOPSIS
    smtps { pmilter { plugins = { greylist };
                      greylist { delay = 5m; lifetime = 35d; } } }
    smx pmilter-server --socket pm.sock greylist      (out of process)
    smx greylist list | remove ... | whitelist ENTRY

DESCRIPTION
    Greylisting: the first attempt to deliver from a client network (its
    /24, or /64 for IPv6) with a sender to a recipient is refused at RCPT
    with C{451 4.7.1}; a retry after C{delay} (and within
    C{retry_window}) passes, and the triplet is then accepted at once for
    C{lifetime} after it was last seen.  Most spam software does not
    retry; real MTAs do.

    The triplets and a whitelist of client networks, senders and
    recipients are kept in a Berkeley DB file
    (L{smx.pmilter.greylistdb}), which C{smx greylist} lists and changes,
    also while smx runs.  Clients on loopback addresses are not
    greylisted (unless C{loopback = yes}).  Expired triplets are removed once an hour.

    The database is used in Twisted's thread pool (a write waits for the
    disk); with a reactor that has none (a test's C{Clock}) it is used
    directly.

CONFIGURATION PARAMETERS
    smtps { pmilter { greylist { database; delay; retry_window; lifetime;
                                 ipv4_prefix; ipv6_prefix; loopback } } }

DIAGNOSTICS
    A database that cannot be opened or written makes the callback fail:
    SMTPS applies C{on_failure}, and the error is logged with
    C{pmilter=greylist}.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Dict, Optional

from twisted.internet import defer, threads
from twisted.plugin import IPlugin
from zope.interface import implementer

from smx.interfaces import IPolicyMilter
from smx.pmilter.api import CONT, SMST_CONNECT, SMST_MAIL, SMST_RCPT, TEMP, Negotiation
from smx.pmilter.settings import settingsOf
from smx.pmilter.greylistdb import (
    GreylistDatabase,
    Policy,
    Triplet,
    Verdict,
    clientNetwork,
    normalAddress,
)

#: how often expired triplets are removed (seconds)
EXPIRE_INTERVAL = 3600


class GreylistServer:
    """
    The greylist pmilter's context for one SMTP server (App. B.5).

    @ivar database: the L{GreylistDatabase}.
    @ivar policy: the L{Policy}.
    """

    def __init__(self, settings: Dict[str, Any], reactor: Any, log: Any, run: Any):
        self.database = GreylistDatabase(settings["database"])
        self.policy = Policy(
            float(settings["delay"]),
            float(settings["retry_window"]),
            float(settings["lifetime"]),
        )
        self.ipv4Prefix = int(settings["ipv4_prefix"])
        self.ipv6Prefix = int(settings["ipv6_prefix"])
        self.loopback = bool(settings["loopback"])
        self.reactor = reactor
        self.log = log
        self.run = run
        self.lastExpire = reactor.seconds()


class GreylistSession:
    """
    What the greylist pmilter remembers of one SMTP session.
    """

    def __init__(self, host: Optional[str]) -> None:
        self.host = host
        self.sender = None  # type: Optional[str]


def _runner(reactor: Any) -> Callable[..., defer.Deferred]:
    """
    How database work is run: in the reactor's thread pool, or directly
    for a reactor without one.
    """
    if hasattr(reactor, "getThreadPool"):
        return lambda f, *a: threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), f, *a
        )
    return lambda f, *a: defer.maybeDeferred(f, *a)


@implementer(IPlugin, IPolicyMilter)
class Greylist:
    """
    The greylisting pmilter (see the module docstring).
    """

    name = "greylist"

    def negotiate(self, server: Any) -> Negotiation:
        settings = settingsOf(server, self.name)
        server.context = GreylistServer(
            settings, server.reactor, server.log, _runner(server.reactor)
        )
        return Negotiation(stages={SMST_CONNECT, SMST_MAIL, SMST_RCPT})

    def connect(self, session: Any, hostname: Optional[str], address: Any) -> Any:
        session.context = GreylistSession(getattr(address, "host", None))
        return CONT

    def mail(self, session: Any, address: str, args: Any) -> Any:
        if session.context is None:
            session.context = GreylistSession(None)
        session.context.sender = normalAddress(address)
        return CONT

    def rcpt(self, session: Any, address: str, args: Any) -> Any:
        state = session.context
        server = session.server.context
        if state is None or state.host is None or state.sender is None:
            return CONT
        try:
            ip = ipaddress.ip_address(state.host)
        except ValueError:
            return CONT
        if ip.is_loopback and not server.loopback:
            return CONT
        triplet = Triplet(
            clientNetwork(state.host, server.ipv4Prefix, server.ipv6Prefix),
            state.sender,
            normalAddress(address),
        )
        now = server.reactor.seconds()
        if now - server.lastExpire >= EXPIRE_INTERVAL:
            server.lastExpire = now
            self._expire(server, now)
        d = server.run(server.database.check, triplet, now, server.policy, state.host)
        return d.addCallback(self._cbChecked, session, triplet)

    def _cbChecked(self, verdict: Verdict, session: Any, triplet: Triplet) -> Any:
        server = session.server.context
        server.log.info(
            level=10,
            pmilter=self.name,
            client_net=triplet.network,
            sender="<%s>" % (triplet.sender,),
            rcpt="<%s>" % (triplet.recipient,),
            greylist=verdict.state,
        )
        if not verdict.refused:
            return CONT
        session.setreply(
            "451 4.7.1 Greylisted, please try again in %d seconds"
            % (max(1, int(verdict.wait + 0.999)),)
        )
        return TEMP

    def _expire(self, server: GreylistServer, now: float) -> None:
        d = server.run(server.database.expire, now, server.policy)
        d.addCallbacks(
            lambda n: server.log.info(level=10, pmilter=self.name, expired=n),
            lambda f: server.log.error(
                "Greylist.expire", pmilter=self.name, error=f.getErrorMessage()
            ),
        )
