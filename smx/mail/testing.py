# -*- test-case-name: smx.test.test_interfaces -*-
"""
An in-memory fake of L{IDeliveryAgent} for unit tests of QMGR, and the
settings of SMTPS, SMTPC and lmtpd as users run them: those of the default
configuration with some fields changed (L{defaultServerSettings},
L{serverConnection}, L{sessionPolicy}, L{defaultDeliverySettings},
L{defaultLMTPServerSettings}).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional

from twisted.internet import defer
from zope.interface import implementer

from smx.interfaces import IDeliveryAgent
from smx.values import DeliveryData, RecipientData, ResultData


@implementer(IDeliveryAgent)
class FakeDeliveryAgent:
    """
    A delivery agent that answers every recipient from a rule.

    @ivar transactions: every transaction handed to L{deliver}.
    @ivar outcome: a function of a recipient C{dict} returning C{(status,
        code, reply)}; by default every recipient is delivered.
    @ivar pending: if set to a list, L{deliver} returns unfired Deferreds
        appended here as C{(transaction, deferred)}.
    """

    def __init__(self, outcome: Optional[Callable[[RecipientData], tuple]] = None):
        self.transactions = []  # type: List[DeliveryData]
        self.outcome = outcome or (lambda rcpt: ("ok", 250, "250 2.0.0 ok"))
        self.pending = None  # type: Optional[List[tuple]]

    def results(self, transaction: DeliveryData) -> List[ResultData]:
        """The results L{outcome} gives for every recipient."""
        out = []
        for rcpt in transaction["recipients"]:
            status, code, reply = self.outcome(rcpt)
            out.append(
                {
                    "index": rcpt["index"],
                    "address": rcpt["address"],
                    "status": status,
                    "code": code,
                    "reply": reply,
                    "remoteMTA": "127.0.0.1",
                    "where": "final_dot" if status == "ok" else "rcpt",
                }
            )
        return out

    def deliver(self, transaction):
        self.transactions.append(transaction)
        if self.pending is not None:
            d = defer.Deferred()  # type: defer.Deferred
            self.pending.append((transaction, d))
            return d
        return defer.succeed(self.results(transaction))


def _defaultConfiguration(queueDirectory: Optional[str] = None) -> Any:
    from smx.config import defaultConfiguration

    return defaultConfiguration(
        queueDirectory=os.path.abspath(queueDirectory or os.getcwd())
    )


def defaultServerSettings(
    authChecker: Any = None, authMechanisms: Any = (), **changes: Any
) -> Any:
    """
    The L{smx.mail.listener.ServerSettings} of the default C{smtps}
    section, with some fields changed.

    @param authChecker: a Twisted credentials checker: AUTH with
        C{authMechanisms} against it (a
        L{smx.mail.auth.CheckerAuthenticator}).
    @param changes: fields to change, as for C{dataclasses.replace}.
    """
    from smx.mail.listener import ServerSettings

    settings = ServerSettings.fromSection(_defaultConfiguration().section("smtps"))
    if authChecker is not None:
        from smx.mail.auth import CheckerAuthenticator

        hostname = changes.get("hostname", settings.hostname)
        changes["authenticator"] = CheckerAuthenticator(
            authChecker, tuple(authMechanisms), hostname
        )
    return dataclasses.replace(settings, **changes) if changes else settings


def serverConnection(hostname: str = "mx.test", **changes: Any) -> Any:
    """
    A L{smx.mail.server.ServerConnection} with the limits of the default
    C{smtps} section, some of them changed.

    @param changes: limits (C{maxMessageSize}, C{softbounce}, ...) and the
        other arguments of C{ServerConnection} (C{tlsAvailable},
        C{authMechanisms}, C{greeting}, C{lmtp}).
    """
    from smx.mail.server import ServerConnection

    s = defaultServerSettings()
    limits = dict(
        maxMessageSize=s.maxMessageSize,
        maxRecipientsPerTransaction=s.maxRecipientsPerTransaction,
        maxRecipientsPerSession=s.maxRecipientsPerSession,
        maxTransactions=s.maxTransactions,
        maxBadCommands=s.maxBadCommands,
        eightBitMime=s.eightBitMime,
        authRequiresTLS=s.authRequiresTLS,
        softbounce=s.softbounce,
    )
    limits.update(changes)
    return ServerConnection(hostname, **limits)


def sessionPolicy(
    resolver: Any, clientAddress: str, hostname: str = "mx.test", **changes: Any
) -> Any:
    """
    A L{smx.mail.policy.SessionPolicy} with the settings of the default
    C{smtps} section, some of them changed (C{access=True}, ...).
    """
    from smx.mail.policy import SessionPolicy

    s = defaultServerSettings()
    settings = dict(
        access=s.access,
        delayChecks=s.delayChecks,
        lmtpImpliesRelaying=s.lmtpImpliesRelaying,
        allowRelayingIfVerified=s.allowRelayingIfVerified,
        checkAccessMapForRelaying=s.checkAccessMapForRelaying,
        trustedMechanisms=s.trustedMechanisms or (),
        relayClients=s.relayClients,
    )
    settings.update(changes)
    return SessionPolicy(resolver, clientAddress, hostname, **settings)


def defaultDeliverySettings(**changes: Any) -> Any:
    """
    The L{smx.mail.deliverysettings.DeliverySettings} of a default
    C{smtpc} section, with some fields changed (C{tlsCreator=None}: no
    STARTTLS).
    """
    from smx.mail.deliverysettings import DeliverySettings

    settings = DeliverySettings.fromSection(_defaultConfiguration().section("smtpc"))
    return dataclasses.replace(settings, **changes) if changes else settings


def defaultLMTPServerSettings(**changes: Any) -> Any:
    """
    The L{smx.mail.lmtpd.LMTPServerSettings} of a default C{lmtpd}
    section (paths under the current directory), with some fields
    changed.
    """
    from smx.mail.lmtpd import LMTPServerSettings

    settings = LMTPServerSettings.fromSection(_defaultConfiguration().section("lmtpd"))
    return dataclasses.replace(settings, **changes) if changes else settings
