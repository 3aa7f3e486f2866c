# -*- test-case-name: smx.test.test_interfaces -*-
"""
In-memory fakes of L{IMap} and L{IAddressResolver} for unit tests of the
components that use them, and the settings of SMAR as users run it
(L{defaultResolverSettings}).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional

from twisted.internet import defer
from zope.interface import implementer

from smx.interfaces import IAddressResolver, IMap
from smx.values import DecisionData, RouteData


from smx.maps.errors import MapTemporaryError  # noqa: E402  (re-exported)


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


def _decision(action="none", quick=False, reply=None, **extra) -> DecisionData:
    d = {"action": action, "quick": quick, "reply": reply}  # type: DecisionData
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
        self.clients = {}  # type: Dict[str, DecisionData]
        self.senders = {}  # type: Dict[str, DecisionData]
        self.recipients = {}  # type: Dict[str, DecisionData]
        self.access = {}  # type: Dict[tuple, DecisionData]
        self.localDomains = set()  # type: set
        self.routes = {}  # type: Dict[str, List[RouteData]]
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


class FakeDNSResolver:
    """
    A stand-in for L{smx.maps.dns.DNSResolver} driven by tables.

    @ivar mx: name -> list of C{(preference, host)}.
    @ivar addresses: name -> list of addresses (A and AAAA).
    @ivar ptr: IP address -> list of names.
    @ivar temporary: names (or IPs for PTR) whose lookups fail temporarily.
    @ivar queries: every lookup, as C{(kind, name)}.

    A name in none of the tables does not exist (NXDOMAIN).
    """

    def __init__(self, mx=None, addresses=None, ptr=None, temporary=()):
        self.mx = dict(mx or {})
        self.addresses = dict(addresses or {})
        self.ptr = dict(ptr or {})
        self.temporary = set(temporary)
        self.queries = []  # type: List[tuple]
        self.cleared = 0

    def _answer(self, kind, name, table, default):
        from smx.maps.errors import DNSPermanentError, DNSTemporaryError

        name = name.lower().rstrip(".")
        self.queries.append((kind, name))
        if name in self.temporary:
            return defer.fail(DNSTemporaryError(name))
        if name in table:
            return defer.succeed(list(table[name]))
        known = name in self.mx or name in self.addresses or name in self.ptr
        if known:
            return defer.succeed(default)
        return defer.fail(DNSPermanentError(name))

    def lookupMX(self, name):
        return self._answer("MX", name, self.mx, [])

    def lookupAddresses(self, name):
        return self._answer("ADDR", name, self.addresses, [])

    def lookupA(self, name):
        d = self._answer("A", name, self.addresses, [])
        d.addCallback(lambda addrs: [a for a in addrs if ":" not in a])
        return d

    def lookupPTR(self, address):
        return self._answer("PTR", address, self.ptr, [])

    def clearCache(self):
        self.cleared += 1

    def close(self):
        pass


def defaultResolverSettings(**changes: Any) -> Any:
    """
    The L{smx.maps.settings.ResolverSettings} of the default
    configuration, with some fields changed (as for
    C{dataclasses.replace}).
    """
    from smx.config import defaultConfiguration
    from smx.maps.settings import ResolverSettings

    cfg = defaultConfiguration(queueDirectory=os.getcwd())
    settings = ResolverSettings.fromConfiguration(cfg)
    return dataclasses.replace(settings, **changes) if changes else settings
