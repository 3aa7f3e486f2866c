# -*- test-case-name: smx.maps.test.test_routing -*-
"""
Tests for L{smx.maps.routing.Router}: the routes of a recipient from the
mailertable, MX and address lookups and the C{mxbadip:} entries of the
access map, through L{Router.route}, with the DNS and map fakes of
L{smx.maps.testing}.
"""

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.interfaces import IMap
from smx.log import Logger, MemorySink
from smx.maps.access import AccessMap
from smx.maps.mailertable import Mailertable
from smx.maps.routing import LMTP_PORT, Router, localRoute, shuffleEqual
from smx.maps.testing import DictMap, FakeDNSResolver, defaultResolverSettings

MAILERTABLE = """
local.test        lmtp:
literal.test      2525^esmtp:[192.0.2.10]
two.test          esmtp:[192.0.2.11] relay.test
lmtphost.test     lmtp:[192.0.2.12]
lmtpport.test     2724^lmtp:[192.0.2.12]
bymx.test         esmtp:
same.test         a.relay.test b.relay.test
.default.test     esmtp:[192.0.2.13]
"""


class Reverse:
    """An C{rng} whose C{shuffle} reverses, so that tests can see it."""

    def shuffle(self, items):
        items.reverse()


class RouterTests(unittest.TestCase):
    """
    Tests for L{Router.route}.
    """

    def setUp(self):
        self.dns = FakeDNSResolver(
            mx={
                "remote.test": [(20, "mx2.remote.test"), (10, "mx1.remote.test")],
                "equal.test": [(10, "e1.equal.test"), (10, "e2.equal.test")],
                "null.test": [(0, ".")],
                "bad.test": [(10, "bad.mx.test"), (20, "good.mx.test")],
                "half.test": [(10, "down.half.test"), (20, "up.half.test")],
                "bymx.test": [(5, "mx.bymx.test")],
                "norecords.test": [],
            },
            addresses={
                "mx1.remote.test": ["198.51.100.1"],
                "mx2.remote.test": ["198.51.100.2", "2001:db8::2"],
                "e1.equal.test": ["198.51.100.11"],
                "e2.equal.test": ["198.51.100.12"],
                "plain.test": ["198.51.100.3"],
                "bad.mx.test": ["198.51.100.66"],
                "good.mx.test": ["198.51.100.4"],
                "up.half.test": ["198.51.100.5"],
                "relay.test": ["198.51.100.6"],
                "a.relay.test": ["198.51.100.7"],
                "b.relay.test": ["198.51.100.7"],
                "mx.bymx.test": ["198.51.100.8"],
                "norecords.test": ["198.51.100.9"],
            },
            temporary=["down.half.test", "slow.test"],
        )
        self.access = AccessMap(
            DictMap(
                "access",
                {
                    "mxbadip:198.51.100.66": "error:551 5.7.1 Bad IP address in MX list",
                    "mxbadip:192.0.2.11": "error:551 5.7.1 never checked",
                },
            ),
            defaultResolverSettings().delimiter,
        )
        self.sink = MemorySink()
        self.router = Router(
            Mailertable.fromText(MAILERTABLE),
            self.dns,
            self.access,
            port=2500,
            rng=Reverse(),
            log=Logger("smar", sink=self.sink),
        )

    def route(self, address):
        return self.successResultOf(self.router.route(address))

    def summary(self, address):
        routes, error = self.route(address)
        self.assertIsNone(error)
        return [(r["mailer"], r["host"], r["address"], r["port"]) for r in routes]

    def assertError(self, address, code, dsn):
        routes, error = self.route(address)
        self.assertEqual(routes, [])
        self.assertEqual((error["code"], error["dsn"]), (code, dsn))
        return error

    def test_fakes(self):
        """
        The map fake under the access map provides L{IMap}.
        """
        self.assertTrue(verifyObject(IMap, DictMap()))

    def test_localDomain(self):
        """
        A domain whose entry is C{lmtp:} without hosts is local: one route
        to the LMTP socket, no DNS lookup.
        """
        self.assertEqual(self.route("u@Local.Test"), ([localRoute()], None))
        self.assertTrue(self.router.isLocal("local.test"))
        self.assertFalse(self.router.isLocal("remote.test"))
        self.assertEqual(self.dns.queries, [])

    def test_literals(self):
        """
        Address literals in the mailertable are used as they are, with
        the entry's port, without DNS and without C{mxbadip:} checks.
        """
        self.assertEqual(
            self.summary("u@literal.test"),
            [("esmtp", "192.0.2.10", "192.0.2.10", 2525)],
        )
        self.assertEqual(
            self.summary("u@two.test"),
            [
                ("esmtp", "192.0.2.11", "192.0.2.11", 2500),
                ("esmtp", "relay.test", "198.51.100.6", 2500),
            ],
        )
        self.assertEqual(
            self.dns.queries, [("MX", "relay.test"), ("ADDR", "relay.test")]
        )

    def test_addressLiteralDomain(self):
        """
        A recipient domain that is an address literal goes to that address
        on C{remote_port}; a malformed one or no domain is refused (553).
        """
        self.assertEqual(
            self.summary("u@[192.0.2.99]"),
            [("esmtp", "192.0.2.99", "192.0.2.99", 2500)],
        )
        self.assertError("u@[300.1.1.1]", 553, "5.1.2")
        self.assertError("u@", 553, "5.1.2")

    def test_lmtpPorts(self):
        """
        C{lmtp:} with hosts goes to port 24 unless the entry names a port,
        never to C{remote_port}.
        """
        self.assertEqual(
            self.summary("u@lmtphost.test"),
            [("lmtp", "192.0.2.12", "192.0.2.12", LMTP_PORT)],
        )
        self.assertEqual(
            self.summary("u@lmtpport.test"),
            [("lmtp", "192.0.2.12", "192.0.2.12", 2724)],
        )

    def test_mxByPreference(self):
        """
        Without an entry the domain's MX hosts are used by preference,
        each with all its addresses.
        """
        self.assertEqual(
            self.summary("u@remote.test"),
            [
                ("esmtp", "mx1.remote.test", "198.51.100.1", 2500),
                ("esmtp", "mx2.remote.test", "198.51.100.2", 2500),
                ("esmtp", "mx2.remote.test", "2001:db8::2", 2500),
            ],
        )
        routes, _ = self.route("u@remote.test")
        self.assertEqual([r["preference"] for r in routes], [10, 20, 20])

    def test_equalPreferencesShuffled(self):
        """
        MX hosts of equal preference are shuffled with the router's random
        generator.
        """
        self.assertEqual(
            [h for _, h, _, _ in self.summary("u@equal.test")],
            ["e2.equal.test", "e1.equal.test"],
        )
        self.assertEqual(
            shuffleEqual([(20, "c"), (10, "a"), (10, "b")], Reverse()),
            [(10, "b"), (10, "a"), (20, "c")],
        )

    def test_noMX(self):
        """
        A name without MX records is used itself (RFC 5321 5.1).
        """
        self.assertEqual(
            self.summary("u@norecords.test"),
            [("esmtp", "norecords.test", "198.51.100.9", 2500)],
        )
        self.assertEqual(
            self.summary("u@plain.test"),
            [("esmtp", "plain.test", "198.51.100.3", 2500)],
        )

    def test_mailertableByMX(self):
        """
        C{esmtp:} without hosts routes by the MX records of the recipient's
        domain; a C{.domain} entry covers subdomains.
        """
        self.assertEqual(
            self.summary("u@bymx.test"),
            [("esmtp", "mx.bymx.test", "198.51.100.8", 2500)],
        )
        self.assertEqual(
            self.summary("u@sub.default.test"),
            [("esmtp", "192.0.2.13", "192.0.2.13", 2500)],
        )

    def test_duplicatesDropped(self):
        """
        Hosts of one entry that share an address give one route.
        """
        self.assertEqual(
            self.summary("u@same.test"),
            [("esmtp", "a.relay.test", "198.51.100.7", 2500)],
        )

    def test_unknownDomain(self):
        """
        A domain that does not exist fails permanently (550 5.1.2).
        """
        error = self.assertError("u@nowhere.test", 550, "5.1.2")
        self.assertIn("nowhere.test", error["text"])

    def test_nullMX(self):
        """
        A null MX (RFC 7505) fails with 556 5.1.10.
        """
        self.assertError("u@null.test", 556, "5.1.10")

    def test_temporaryFailure(self):
        """
        A temporary DNS failure is 451 4.4.3, unless another host gave an
        address.
        """
        self.assertError("u@slow.test", 451, "4.4.3")
        self.assertEqual(
            self.summary("u@half.test"),
            [("esmtp", "up.half.test", "198.51.100.5", 2500)],
        )

    def test_mxbadip(self):
        """
        An address from DNS that an C{mxbadip:} entry rejects fails the
        recipient with the entry's reply, even if another MX is good; the
        rejection is logged.
        """
        error = self.assertError("u@bad.test", 551, "5.7.1")
        self.assertIn("Bad IP address", error["text"])
        self.assertTrue(
            any("mxbadip=mxbadip:198.51.100.66" in line for line in self.sink.lines())
        )

    def test_noDNS(self):
        """
        Without a DNS resolver only literals route; anything else is a
        temporary failure, and counts as a DNS routing.
        """
        settings = defaultResolverSettings()
        router = Router(
            Mailertable.fromText(MAILERTABLE),
            None,
            AccessMap(None, settings.delimiter),
            settings.remotePort,
        )
        routes, error = self.successResultOf(router.route("u@literal.test"))
        self.assertEqual([r["address"] for r in routes], ["192.0.2.10"])
        self.assertEqual(router.dnsRoutings, 0)
        routes, error = self.successResultOf(router.route("u@remote.test"))
        self.assertEqual((routes, error["code"], error["dsn"]), ([], 451, "4.4.3"))
        self.assertEqual(router.dnsRoutings, 1)
