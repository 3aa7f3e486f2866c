# -*- test-case-name: smx.split.test.test_cache -*-
"""
Tests for L{smx.split.cache}: SMAR's answers kept by the asking process
(L{smx.split.resolver.AddressResolverProxy}) for the seconds SMAR keeps
them, over a real Unix socket.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from smx.maps.testing import FakeAddressResolver
from smx.split.cache import AnswerCache, keptFor
from smx.split.resolver import AddressResolverProxy, resolverFactory
from smx.split.testing import running, serve, socketPath

ROUTE = {
    "mailer": "esmtp",
    "host": "mx.example.com",
    "address": "192.0.2.25",
    "port": 25,
    "preference": 10,
}


class AnswerCacheTests(unittest.TestCase):
    """
    L{AnswerCache} keeps each answer for its own seconds, and gives
    copies.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.cache = AnswerCache(self.clock, size=3)

    def test_keep(self) -> None:
        """
        An answer is there for C{keep} seconds, then gone.
        """
        self.cache.put("a", {"action": "ok"}, 2.0)
        self.clock.advance(1.9)
        self.assertEqual(self.cache.get("a"), {"action": "ok"})
        self.clock.advance(0.1)
        self.assertIsNone(self.cache.get("a"))
        self.assertEqual(len(self.cache), 0)

    def test_notKept(self) -> None:
        """
        An answer SMAR does not keep (0, or no C{keep} from an older
        SMAR) is not kept.
        """
        self.cache.put("a", {"action": "ok"}, 0.0)
        self.cache.put("b", {"action": "ok"}, None)
        self.assertEqual(len(self.cache), 0)

    def test_copies(self) -> None:
        """
        Changing what was put or what was got does not change the answer
        kept.
        """
        answer = {"action": "ok", "reply": {"code": 250}, "routes": [{"a": 1}]}
        self.cache.put("a", answer, 5)
        answer["reply"]["code"] = 550
        got = self.cache.get("a")
        got["routes"][0]["a"] = 2
        self.assertEqual(
            self.cache.get("a"),
            {"action": "ok", "reply": {"code": 250}, "routes": [{"a": 1}]},
        )

    def test_copiesBeyondMarshal(self) -> None:
        """
        An answer holding data C{marshal} cannot take is kept and copied
        all the same (the dicts and lists of it).
        """
        other = object()
        answer = {"action": "ok", "routes": [{"a": other}]}
        self.cache.put("a", answer, 5)
        answer["routes"].append("changed")
        got = self.cache.get("a")
        self.assertEqual(got, {"action": "ok", "routes": [{"a": other}]})
        got["routes"][0]["a"] = 2
        self.assertIs(self.cache.get("a")["routes"][0]["a"], other)

    def test_size(self) -> None:
        """
        At most C{size} answers: the oldest go first.
        """
        for key in "abcd":
            self.cache.put(key, key, 5)
        self.assertIsNone(self.cache.get("a"))
        self.assertEqual([self.cache.get(k) for k in "bcd"], ["b", "c", "d"])

    def test_keptForWithoutCache(self) -> None:
        """
        A resolver without C{keptFor} (or one that cannot tell) keeps
        nothing.
        """
        self.assertEqual(keptFor(object(), "checkClient", "192.0.2.1"), 0.0)


class KeepingResolver(FakeAddressResolver):
    """
    A resolver that says it keeps every answer C{keep} seconds.
    """

    keep = 5.0

    def keptFor(self, call: str, *args: Any) -> float:
        return self.keep


class ProxyCacheTests(unittest.TestCase):
    """
    The proxy asks SMAR again only when SMAR's answer is no longer kept.
    """

    def setUp(self) -> None:
        self.backend = KeepingResolver()
        self.backend.routes["@example.com"] = [ROUTE]
        path = socketPath(self)
        self.port = serve(self, resolverFactory(self.backend), path)
        self.proxy = AddressResolverProxy(reactor, path, waitForServer=5)
        self.clock = Clock()
        self.proxy.cache = AnswerCache(self.clock)
        running(self, self.proxy)
        self.client = {"address": "192.0.2.1", "name": None, "relay": True}

    @defer.inlineCallbacks
    def askAll(self) -> Any:
        answers = []
        answers.append((yield self.proxy.checkClient("192.0.2.1")))
        answers.append((yield self.proxy.checkSender("a@example.org", self.client)))
        answers.append((yield self.proxy.checkRecipient("b@example.com", self.client)))
        answers.append((yield self.proxy.resolveRecipient("b@example.com")))
        return answers

    @defer.inlineCallbacks
    def test_keptAnswers(self) -> Any:
        """
        The same checks and resolution a second time are answered by the
        proxy with the same answers; SMAR was asked once each.
        """
        first = yield self.askAll()
        second = yield self.askAll()
        self.assertEqual(second, first)
        self.assertEqual(
            [c[0] for c in self.backend.calls],
            ["checkClient", "checkSender", "checkRecipient", "resolveRecipient"],
        )

    @defer.inlineCallbacks
    def test_noLongerThanSMAR(self) -> Any:
        """
        Once the seconds SMAR gave have passed, SMAR is asked again.
        """
        yield self.askAll()
        self.clock.advance(5.0)
        yield self.askAll()
        self.assertEqual(len(self.backend.calls), 8)

    @defer.inlineCallbacks
    def test_notKept(self) -> Any:
        """
        An answer SMAR does not keep (C{keep} 0) is asked for each time.
        """
        self.backend.keep = 0.0
        yield self.askAll()
        yield self.askAll()
        self.assertEqual(len(self.backend.calls), 8)

    @defer.inlineCallbacks
    def test_keyedByClient(self) -> Any:
        """
        A recipient checked for another client is asked for.
        """
        yield self.proxy.checkRecipient("b@example.com", self.client)
        other = dict(self.client, address="192.0.2.2")
        yield self.proxy.checkRecipient("b@example.com", other)
        self.assertEqual(len(self.backend.calls), 2)

    @defer.inlineCallbacks
    def test_forgetAndReload(self) -> Any:
        """
        C{forget} (SIGUSR1 in SMTPS) and C{reload} (QMGR) empty the cache.
        """
        yield self.askAll()
        self.proxy.forget()
        yield self.askAll()
        yield self.proxy.reload()
        yield self.askAll()
        self.assertEqual(len(self.backend.calls), 12)

    @defer.inlineCallbacks
    def test_unavailableNotKept(self) -> Any:
        """
        The C{tempfail} of an unreachable SMAR is not kept.
        """
        proxy = AddressResolverProxy(reactor, socketPath(self), waitForServer=0.1)
        running(self, proxy)
        decision = yield proxy.checkClient("192.0.2.1")
        self.assertEqual(decision["action"], "tempfail")
        self.assertEqual(len(proxy.cache), 0)

    @defer.inlineCallbacks
    def test_notWithoutSMAR(self) -> Any:
        """
        While SMAR is gone the kept answers are not used: a check is a
        temporary failure, as without the cache (SMTPS never answers 250
        without SMAR).
        """
        yield self.askAll()
        yield self.port.stopListening()
        lost = defer.Deferred()  # type: defer.Deferred
        protocol = self.proxy.peer.protocol
        self.proxy.peer.waitForServer = 0.1
        protocol.connectionLost, was = (  # type: ignore[method-assign]
            lambda reason: (was(reason), lost.callback(None)),
            protocol.connectionLost,
        )
        protocol.transport.loseConnection()
        yield lost
        decision = yield self.proxy.checkClient("192.0.2.1")
        self.assertEqual(decision["action"], "tempfail")
