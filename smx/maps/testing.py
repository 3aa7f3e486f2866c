# -*- test-case-name: smx.test.test_interfaces -*-
"""
In-memory fakes of L{IMap} and L{IAddressResolver} for unit tests of the
components that use them.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from twisted.internet import defer
from zope.interface import implementer

from smx.interfaces import IAddressResolver, IMap


class MapTemporaryError(Exception):
    """
    The fake map's temporary failure (the real maps raise
    C{smx.maps.errors.MapTemporaryError}).
    """


@implementer(IMap)
class DictMap:
    """
    A map backed by a C{dict}.

    @ivar temporaryFailure: if true, every lookup fails temporarily.
    @ivar reopened: how often L{reopen} was called.
    """

    def __init__(self, name: str = "dict", entries: Optional[Dict[str, str]] = None):
        self.name = name
        self.entries = dict(entries or {})
        self.temporaryFailure = False
        self.reopened = 0
        self.closed = False

    def lookup(self, key):
        if self.temporaryFailure:
            return defer.fail(MapTemporaryError(self.name))
        return defer.succeed(self.entries.get(key))

    def reopen(self):
        self.reopened += 1

    def close(self):
        self.closed = True


def _decision(action="none", quick=False, reply=None, **extra) -> Dict[str, Any]:
    d = {"action": action, "quick": quick, "reply": reply}  # type: Dict[str, Any]
    d.update(extra)
    return d


@implementer(IAddressResolver)
class FakeAddressResolver:
    """
    An address resolver driven by small tables.

    @ivar clients: client address -> decision.
    @ivar senders: sender address -> decision.
    @ivar recipients: recipient address -> decision (C{"local"} and
        C{"relayAllowed"} default to C{False}).
    @ivar localDomains: domains whose recipients are local and relayable.
    @ivar routes: recipient address (or C{"@domain"}) -> list of routes.
    @ivar calls: every call, as C{(method, args...)}.
    """

    def __init__(self) -> None:
        self.clients = {}  # type: Dict[str, Dict[str, Any]]
        self.senders = {}  # type: Dict[str, Dict[str, Any]]
        self.recipients = {}  # type: Dict[str, Dict[str, Any]]
        self.access = {}  # type: Dict[tuple, Dict[str, Any]]
        self.localDomains = set()  # type: set
        self.routes = {}  # type: Dict[str, List[Dict[str, Any]]]
        self.calls = []  # type: List[tuple]
        self.reloaded = 0

    def checkClient(self, clientAddress):
        self.calls.append(("checkClient", clientAddress))
        d = self.clients.get(clientAddress) or _decision()
        d.setdefault("clientName", None)
        d.setdefault("resolve", "no")
        return defer.succeed(d)

    def checkSender(self, sender, client):
        self.calls.append(("checkSender", sender))
        return defer.succeed(self.senders.get(sender) or _decision())

    def checkRecipient(self, recipient, client):
        self.calls.append(("checkRecipient", recipient))
        domain = recipient.rpartition("@")[2].lower()
        local = domain in self.localDomains
        d = dict(self.recipients.get(recipient) or _decision())
        d.setdefault("local", local)
        d.setdefault("relayAllowed", local or d["action"] == "relay")
        return defer.succeed(d)

    def lookupAccess(self, tag, key):
        self.calls.append(("lookupAccess", tag, key))
        return defer.succeed(self.access.get((tag, key)) or _decision())

    def resolveRecipient(self, address):
        self.calls.append(("resolveRecipient", address))
        domain = address.rpartition("@")[2].lower()
        routes = self.routes.get(address, self.routes.get("@" + domain))
        if routes is None:
            err = {"code": 550, "dsn": "5.1.2", "text": "no route to " + domain}
            return defer.succeed(
                [{"address": address, "sender": None, "routes": [], "error": err}]
            )
        return defer.succeed(
            [{"address": address, "sender": None, "routes": routes, "error": None}]
        )

    def reload(self):
        self.reloaded += 1
