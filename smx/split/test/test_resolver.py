# -*- test-case-name: smx.split.test.test_resolver -*-
"""
Tests for L{smx.split.resolver}: the same behaviour tests of
L{IAddressResolver} run against L{FakeAddressResolver} in the process,
through L{AddressResolverProxy} over a real Unix socket, and against the
real L{AddressResolver} (maps built with smx createmap) behind the proxy;
then what only the proxy does when SMAR cannot be reached.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.interfaces import IAddressResolver
from smx.maps.testing import FakeAddressResolver
from smx.split.resolver import AddressResolverProxy, resolverFactory
from smx.split.testing import running, serve, socketPath

ROUTE = {
    "mailer": "esmtp",
    "host": "mx.example.com",
    "address": "192.0.2.25",
    "port": 25,
    "preference": 10,
}
REJECT = {
    "action": "reject",
    "quick": False,
    "reply": {"code": 550, "dsn": "5.7.1", "text": "go away"},
}


class ResolverBehaviour:
    """
    What every L{IAddressResolver} does, with a L{FakeAddressResolver}
    C{self.backend} behind C{self.resolver}.
    """

    resolver: Any
    backend: FakeAddressResolver

    def test_provides(self) -> None:
        """
        It provides L{IAddressResolver}.
        """
        self.assertTrue(verifyObject(IAddressResolver, self.resolver))  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_checkClient(self) -> Any:
        """
        C{checkClient} gives the decision with C{clientName} and
        C{resolve}.
        """
        decision = yield self.resolver.checkClient("192.0.2.1")
        self.assertEqual(  # type: ignore[attr-defined]
            decision,
            {
                "action": "none",
                "quick": False,
                "reply": None,
                "clientName": None,
                "resolve": "no",
            },
        )

    @defer.inlineCallbacks
    def test_checkSender(self) -> Any:
        """
        A rejection comes back with its reply.
        """
        self.backend.senders["spam@example.net"] = dict(REJECT)
        client = {"address": "192.0.2.1", "name": None}
        decision = yield self.resolver.checkSender("spam@example.net", client)
        self.assertEqual(decision, REJECT)  # type: ignore[attr-defined]
        self.assertIn(("checkSender", "spam@example.net"), self.backend.calls)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_checkRecipient(self) -> Any:
        """
        C{checkRecipient} says whether the recipient is local and may be
        relayed to.
        """
        self.backend.localDomains.add("example.org")
        client = {"address": "192.0.2.1", "name": "c.example.net"}
        local = yield self.resolver.checkRecipient("bob@example.org", client)
        other = yield self.resolver.checkRecipient("bob@example.com", client)
        self.assertEqual((local["local"], local["relayAllowed"]), (True, True))  # type: ignore[attr-defined]
        self.assertEqual((other["local"], other["relayAllowed"]), (False, False))  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_lookupAccess(self) -> Any:
        """
        C{lookupAccess} gives the entry's decision.
        """
        self.backend.access[("certissuer", "CN=ca")] = {
            "action": "relay",
            "quick": False,
            "reply": None,
        }
        decision = yield self.resolver.lookupAccess("certissuer", "CN=ca")
        self.assertEqual(decision["action"], "relay")  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_resolveRecipient(self) -> Any:
        """
        C{resolveRecipient} gives the routes, or the error of an address
        that cannot be delivered.
        """
        self.backend.routes["@example.com"] = [ROUTE]
        [good] = yield self.resolver.resolveRecipient("bob@example.com")
        self.assertEqual(good["routes"], [ROUTE])  # type: ignore[attr-defined]
        self.assertIsNone(good["error"])  # type: ignore[attr-defined]
        [bad] = yield self.resolver.resolveRecipient("bob@nowhere.example")
        self.assertEqual(bad["error"]["code"], 550)  # type: ignore[attr-defined]
        self.assertEqual(bad["routes"], [])  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_reload(self) -> Any:
        """
        C{reload} reaches the resolver.
        """
        yield self.resolver.reload()
        self.assertEqual(self.backend.reloaded, 1)  # type: ignore[attr-defined]


class InProcessTests(ResolverBehaviour, unittest.TestCase):
    """
    The behaviour of L{FakeAddressResolver} itself.
    """

    def setUp(self) -> None:
        self.backend = FakeAddressResolver()
        self.resolver = self.backend


class ProxiedTests(ResolverBehaviour, unittest.TestCase):
    """
    The same behaviour through the proxy, AMP and the server.
    """

    def setUp(self) -> None:
        self.backend = FakeAddressResolver()
        path = socketPath(self)
        serve(self, resolverFactory(self.backend), path)
        self.resolver = AddressResolverProxy(reactor, path, waitForServer=5)
        running(self, self.resolver)


class RealResolverTests(unittest.TestCase):
    """
    The real L{smx.maps.resolver.AddressResolver} of a configuration with
    a mailertable, aliases and an access map answers the same through the
    proxy as in the process.
    """

    def setUp(self) -> None:
        from smx.config import loadConfiguration
        from smx.maps.resolver import AddressResolver
        from smx.test.mta import MTA, configuration

        mta = MTA(self, os.path.abspath(self.mktemp()))
        # DNS only from a loopback server (none answers: no DNS here)
        mta.write(
            configuration(2525, lmtpd=False, smar="nameserver = 127.0.0.1:9;"),
            aliases="postmaster: alice\n",
            access="from:bob@example.org REJECT\n",
        )
        cfg = loadConfiguration(mta.config, queueDirectory=mta.directory)
        cfg.reconcile()
        self.real = AddressResolver.fromConfiguration(cfg, reactor)
        self.addCleanup(self.real.close)
        path = socketPath(self)
        serve(self, resolverFactory(self.real), path)
        self.proxy = AddressResolverProxy(reactor, path, waitForServer=5)
        running(self, self.proxy)

    @defer.inlineCallbacks
    def test_same(self) -> Any:
        """
        Recipient and sender checks (a rejection from the access map) and
        the resolution of local addresses (an alias) are equal.
        """
        client = {"address": "127.0.0.1", "name": "localhost"}
        for call, args in (
            ("checkRecipient", ("alice@localhost", client)),
            ("checkSender", ("bob@example.org", client)),
            ("resolveRecipient", ("alice@localhost",)),
            ("resolveRecipient", ("postmaster@localhost",)),
        ):
            direct = yield getattr(self.real, call)(*args)
            proxied = yield getattr(self.proxy, call)(*args)
            self.assertEqual(proxied, direct, call)


class UnreachableTests(unittest.TestCase):
    """
    Without SMAR, checks are temporary failures and resolution fails.
    """

    def setUp(self) -> None:
        self.resolver = AddressResolverProxy(
            reactor, socketPath(self), waitForServer=0.2
        )
        running(self, self.resolver)

    @defer.inlineCallbacks
    def test_checks(self) -> Any:
        """
        Every check is a C{tempfail} decision with a 451 reply and the
        fields of its method.
        """
        client = {"address": "192.0.2.1", "name": None}
        decision = yield self.resolver.checkClient("192.0.2.1")
        self.assertEqual(decision["action"], "tempfail")
        self.assertEqual(decision["reply"]["code"], 451)
        self.assertIn("clientName", decision)
        decision = yield self.resolver.checkRecipient("a@example.com", client)
        self.assertEqual(
            (decision["action"], decision["local"], decision["relayAllowed"]),
            ("tempfail", False, False),
        )
        decision = yield self.resolver.checkSender("a@example.com", client)
        self.assertEqual(decision["action"], "tempfail")

    @defer.inlineCallbacks
    def test_resolveRecipient(self) -> Any:
        """
        Resolution fails (QMGR tries the recipient again later).
        """
        with self.assertRaises(Exception):
            yield self.resolver.resolveRecipient("a@example.com")
