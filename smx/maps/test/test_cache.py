# -*- test-case-name: smx.maps.test.test_cache -*-
"""
Tests for L{smx.maps.resolver.DecisionCache} and SMAR's use of it: the
answers reused for C{cache_ttl} seconds, and those never reused.
"""

import os

from twisted.internet.task import Clock
from twisted.trial import unittest

from smx.config import parseConfiguration
from smx.log import Logger, MemorySink
from smx.maps.mailertable import Mailertable
from smx.maps.resolver import AddressResolver, DecisionCache
from smx.maps.testing import DictMap, FakeDNSResolver, defaultResolverSettings


class DecisionCacheTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.cache = DecisionCache(self.clock, 5.0, 3)

    def test_keptForTTL(self):
        self.cache.put("k", {"action": "ok"})
        self.clock.advance(4.9)
        self.assertEqual(self.cache.get("k"), {"action": "ok"})
        self.clock.advance(0.1)
        self.assertIsNone(self.cache.get("k"))
        self.assertEqual(len(self.cache), 0)

    def test_oldestGoFirst(self):
        for key in "abcd":
            self.cache.put(key, key)
        self.assertEqual(len(self.cache), 3)
        self.assertIsNone(self.cache.get("a"))
        self.assertEqual([self.cache.get(k) for k in "bcd"], ["b", "c", "d"])

    def test_putAgainRenews(self):
        self.cache.put("a", 1)
        self.cache.put("b", 2)
        self.cache.put("c", 3)
        self.cache.put("a", 4)
        self.cache.put("d", 5)
        self.assertIsNone(self.cache.get("b"))
        self.assertEqual(self.cache.get("a"), 4)

    def test_zeroKeepsNothing(self):
        cache = DecisionCache(self.clock, 0, 10)
        cache.put("a", 1)
        self.assertIsNone(cache.get("a"))

    def test_clear(self):
        self.cache.put("a", 1)
        self.cache.clear()
        self.assertIsNone(self.cache.get("a"))


class CountingMap(DictMap):
    def __init__(self, name, entries):
        DictMap.__init__(self, name, entries)
        self.keys = []

    def lookup(self, key):
        self.keys.append(key)
        return DictMap.lookup(self, key)


def result(d):
    out = []
    d.addBoth(out.append)
    return out[0]


class ResolverCacheTests(unittest.TestCase):
    """
    SMAR answers a client, sender and recipient seen a moment ago from its
    cache, and never a temporary failure or a route found through DNS.
    """

    def setUp(self):
        self.clock = Clock()
        self.access = CountingMap(
            "access",
            {"cltaddr:192.0.2.1": "relay", "from:bad@spam.test": "error:550 no"},
        )
        self.dns = FakeDNSResolver(
            mx={"remote.test": [(10, "mx.remote.test")]},
            addresses={"mx.remote.test": ["192.0.2.25"]},
            temporary={"192.0.2.66", "broken.test"},
        )
        self.resolver = AddressResolver(
            self.clock,
            defaultResolverSettings(),
            Mailertable.fromText("relay.test esmtp:[192.0.2.7]\n"),
            access=self.access,
            dns=self.dns,
            log=Logger("smar", sink=MemorySink()),
        )

    def test_clientReused(self):
        first = result(self.resolver.checkClient("192.0.2.1"))
        lookups = len(self.access.keys)
        queries = len(self.dns.queries)
        second = result(self.resolver.checkClient("192.0.2.1"))
        self.assertEqual(second, first)
        self.assertEqual(second["action"], "relay")
        self.assertEqual(len(self.access.keys), lookups)
        self.assertEqual(len(self.dns.queries), queries)

    def test_mapChangeCountsAfterTTL(self):
        result(self.resolver.checkClient("192.0.2.1"))
        self.access.entries["cltaddr:192.0.2.1"] = "error:550 go away"
        self.assertEqual(
            result(self.resolver.checkClient("192.0.2.1"))["action"], "relay"
        )
        self.clock.advance(defaultResolverSettings().cacheTTL)
        self.assertEqual(
            result(self.resolver.checkClient("192.0.2.1"))["action"], "error"
        )

    def test_reloadEmpties(self):
        result(self.resolver.checkSender("bad@spam.test", None))
        self.access.entries["from:bad@spam.test"] = "ok"
        self.resolver.reload()
        self.assertEqual(
            result(self.resolver.checkSender("bad@spam.test", None))["action"], "ok"
        )

    def test_senderReused(self):
        first = result(self.resolver.checkSender("bad@spam.test", None))
        self.assertEqual(first["action"], "error")
        lookups = len(self.access.keys)
        self.assertEqual(
            result(self.resolver.checkSender("bad@spam.test", None)), first
        )
        self.assertEqual(len(self.access.keys), lookups)

    def test_temporaryClientNameNotKept(self):
        # the PTR lookup of 192.0.2.66 fails temporarily: asked again
        first = result(self.resolver.checkClient("192.0.2.66"))
        self.assertEqual(first["resolve"], "tempptr")
        queries = len(self.dns.queries)
        result(self.resolver.checkClient("192.0.2.66"))
        self.assertGreater(len(self.dns.queries), queries)

    def test_temporaryMapFailureNotKept(self):
        self.access.temporaryFailure = True
        first = result(self.resolver.checkRecipient("u@relay.test", {}))
        self.assertEqual(first["action"], "tempfail")
        self.access.temporaryFailure = False
        second = result(self.resolver.checkRecipient("u@relay.test", {}))
        self.assertNotEqual(second["action"], "tempfail")

    def test_recipientKeyedByClient(self):
        """The same recipient for another client is decided again."""
        relayed = result(
            self.resolver.checkRecipient("u@remote.test", {"address": "192.0.2.1"})
        )
        self.assertTrue(relayed["relayAllowed"])
        other = result(
            self.resolver.checkRecipient("u@remote.test", {"address": "192.0.2.2"})
        )
        self.assertFalse(other["relayAllowed"])
        authenticated = result(
            self.resolver.checkRecipient(
                "u@remote.test", {"address": "192.0.2.2", "relay": True}
            )
        )
        self.assertTrue(authenticated["relayAllowed"])

    def test_resolutionFromMapsReused(self):
        first = result(self.resolver.resolveRecipient("u@relay.test"))
        self.assertEqual(first[0]["routes"][0]["address"], "192.0.2.7")
        first[0]["routes"][0]["address"] = "changed by the caller"
        first[0]["routes"].append({})
        second = result(self.resolver.resolveRecipient("u@relay.test"))
        self.assertEqual(len(second[0]["routes"]), 1)
        self.assertEqual(second[0]["routes"][0]["address"], "192.0.2.7")
        self.assertIsNotNone(self.resolver.cache.get(("resolve", "u@relay.test")))

    def test_resolutionThroughDNSNotKept(self):
        """
        MX routes keep DNS's lifetimes and the shuffle of equal
        preferences: each resolution asks DNS (its own cache) again.
        """
        first = result(self.resolver.resolveRecipient("u@remote.test"))
        self.assertEqual(first[0]["routes"][0]["address"], "192.0.2.25")
        queries = len(self.dns.queries)
        result(self.resolver.resolveRecipient("u@remote.test"))
        self.assertEqual(len(self.dns.queries), queries + 2)

    def test_keptFor(self):
        """
        C{keptFor} says how many more seconds an answer stays in the
        cache (split mode's proxies keep it no longer): the TTL at once,
        less as time passes, 0 for an answer not kept (a route through
        DNS, a call never made) and after a reload.
        """
        ttl = defaultResolverSettings().cacheTTL
        client = {"address": "192.0.2.1", "relay": True}
        result(self.resolver.checkRecipient("u@relay.test", client))
        result(self.resolver.resolveRecipient("u@relay.test"))
        result(self.resolver.resolveRecipient("u@remote.test"))
        self.clock.advance(1)
        kept = self.resolver.keptFor
        self.assertEqual(kept("checkRecipient", "u@relay.test", client), ttl - 1)
        self.assertEqual(kept("resolveRecipient", "u@relay.test"), ttl - 1)
        self.assertEqual(kept("resolveRecipient", "u@remote.test"), 0)
        self.assertEqual(kept("checkSender", "never@asked.test", client), 0)
        self.assertEqual(kept("checkRecipient", "u@relay.test", {"a": "b"}), 0)
        self.resolver.reload()
        self.assertEqual(kept("resolveRecipient", "u@relay.test"), 0)

    def test_temporaryResolutionNotKept(self):
        """
        A resolution from the maps alone that failed temporarily (the
        aliases map did not answer) is asked again.
        """
        aliases = DictMap("aliases", {"u": "v@relay.test"})
        aliases.temporaryFailure = True
        resolver = AddressResolver(
            self.clock,
            defaultResolverSettings(),
            Mailertable.fromText("relay.test esmtp:[192.0.2.7]\nlocal.test lmtp:\n"),
            aliases=aliases,
            log=Logger("smar", sink=MemorySink()),
        )
        first = result(resolver.resolveRecipient("u@local.test"))
        self.assertEqual(first[0]["error"]["code"], 451)
        self.assertEqual(len(resolver.cache), 0)
        aliases.temporaryFailure = False
        second = result(resolver.resolveRecipient("u@local.test"))
        self.assertEqual(second[0]["routes"][0]["address"], "192.0.2.7")

    def test_ttlZero(self):
        self.resolver.cache.ttl = 0
        result(self.resolver.checkClient("192.0.2.1"))
        lookups = len(self.access.keys)
        result(self.resolver.checkClient("192.0.2.1"))
        self.assertGreater(len(self.access.keys), lookups)


class ConfigurationTests(unittest.TestCase):
    def build(self, text):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "mt")
        with open(path, "w") as f:
            f.write("local.test lmtp:\n")
        cfg = parseConfiguration(
            'smar { mailertable { name = "%s"; } %s }\n' % (path, text),
            filename=os.path.join(directory, "smx.conf"),
        )
        resolver = AddressResolver.fromConfiguration(
            cfg, Clock(), log=Logger("smar", sink=MemorySink())
        )
        self.addCleanup(resolver.close)
        return resolver

    def test_default(self):
        self.assertEqual(self.build("").cache.ttl, 5.0)

    def test_set(self):
        self.assertEqual(self.build("cache_ttl = 0;").cache.ttl, 0)
        self.assertEqual(self.build("cache_ttl = 1m;").cache.ttl, 60)
