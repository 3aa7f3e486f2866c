# -*- test-case-name: smx.maps.test.test_integration_dns -*-
"""
Integration tests of L{smx.maps.dns}: real queries over loopback UDP and
TCP to the Twisted Names server of L{smx.maps.test.dnsserver}.
"""

from twisted.internet import defer, reactor
from twisted.trial import unittest

from smx.log import Logger, MemorySink
from smx.maps.dns import DNSResolver, parseNameserver, reverseName
from smx.maps.errors import DNSPermanentError, DNSTemporaryError
from smx.maps.test.dnsserver import startDNSServerWithLog
from smx.maps.testing import defaultResolverSettings

ZONE = {
    "remote.test": [("MX", 10, "mx1.remote.test"), ("MX", 20, "mx2.remote.test")],
    "mx1.remote.test": [("A", "127.0.0.2"), ("AAAA", "::1")],
    "mx2.remote.test": [("A", "127.0.0.3", 1)],
    "noaddr.test": [("TXT", "only text")],
    "2.0.0.127.in-addr.arpa": [("PTR", "mx1.remote.test")],
    "big.test": [("A", "127.0.0.%d" % i) for i in range(1, 60)],
    "alias.test": [("CNAME", "mx1.remote.test")],
    "xn--bcher-kva.test": [("MX", 10, "mx1.remote.test")],
    "xn--fa-hia.test": [("MX", 20, "mx2.remote.test")],
}


class ParseTests(unittest.TestCase):
    """
    The C{nameserver} entry syntax.
    """

    def test_forms(self):
        """
        C{addr}, C{addr:port}, C{[v6]:port} and a bare IPv6 address.
        """
        self.assertEqual(parseNameserver("127.0.0.1"), ("127.0.0.1", 53))
        self.assertEqual(parseNameserver("127.0.0.1:5353"), ("127.0.0.1", 5353))
        self.assertEqual(parseNameserver("[::1]:5353"), ("::1", 5353))
        self.assertEqual(parseNameserver("::1"), ("::1", 53))

    def test_bad(self):
        """
        Host names and bad ports are refused with C{ValueError}.
        """
        for bad in ("ns.example", "127.0.0.1:0", "127.0.0.1:x", "[::1", "[::1]x"):
            self.assertRaises(ValueError, parseNameserver, bad)

    def test_reverseName(self):
        """
        IPv4 addresses map into C{in-addr.arpa}.
        """
        self.assertEqual(reverseName("127.0.0.2"), "2.0.0.127.in-addr.arpa")


class LookupTests(unittest.TestCase):
    """
    Lookups against a real server on loopback.
    """

    def setUp(self):
        self.port, stop, self.server = startDNSServerWithLog(
            ZONE,
            truncate={"big.test"},
            timeout={"slow.test"},
            garbage={"garbage.test"},
            servfail={"broken.test"},
        )
        self.addCleanup(stop)

    def resolver(self, timeout=1.0, useTCP=None):
        """
        A resolver asking the test's server, with the default
        C{DNS_flags} unless C{useTCP} is given.
        """
        if useTCP is None:
            useTCP = defaultResolverSettings().dnsUseTCP
        r = DNSResolver(
            reactor,
            ["127.0.0.1:%d" % self.port],
            timeout,
            useTCP,
            log=Logger("smar", sink=MemorySink()),
        )
        self.addCleanup(r.close)
        return r

    @defer.inlineCallbacks
    def test_mx(self):
        """
        MX records come sorted by preference with lower-case names.
        """
        mx = yield self.resolver().lookupMX("Remote.TEST")
        self.assertEqual(mx, [(10, "mx1.remote.test"), (20, "mx2.remote.test")])

    @defer.inlineCallbacks
    def test_internationalised(self):
        """
        A domain in U-labels is asked in A-labels of IDNA 2008 (RFC
        6531; C{faß} is C{xn--fa-hia}, not IDNA 2003's C{fass}); one that
        is not valid IDNA is a permanent error.
        """
        r = self.resolver()
        mx = yield r.lookupMX("Bücher.test")
        self.assertEqual(mx, [(10, "mx1.remote.test")])
        mx = yield r.lookupMX("faß.test")
        self.assertEqual(mx, [(20, "mx2.remote.test")])
        yield self.assertFailure(r.lookupMX("a\u200db.test"), DNSPermanentError)

    @defer.inlineCallbacks
    def test_addresses(self):
        """
        A and AAAA together, IPv4 first; a CNAME is followed.
        """
        r = self.resolver()
        self.assertEqual(
            (yield r.lookupAddresses("mx1.remote.test")), ["127.0.0.2", "::1"]
        )
        self.assertEqual((yield r.lookupA("alias.test")), ["127.0.0.2"])

    @defer.inlineCallbacks
    def test_nxdomainAndNodata(self):
        """
        A missing name is a permanent error; a name without the record type
        gives an empty list.
        """
        r = self.resolver()
        yield self.assertFailure(r.lookupMX("nothere.test"), DNSPermanentError)
        self.assertEqual((yield r.lookupMX("noaddr.test")), [])
        self.assertEqual((yield r.lookupTXT("noaddr.test")), ["only text"])

    @defer.inlineCallbacks
    def test_ptr(self):
        """
        PTR lookups of an IP address.
        """
        self.assertEqual(
            (yield self.resolver().lookupPTR("127.0.0.2")), ["mx1.remote.test"]
        )

    @defer.inlineCallbacks
    def test_truncatedRetriedOverTCP(self):
        """
        A truncated UDP answer is asked again over TCP and gives every record.
        """
        addrs = yield self.resolver().lookupA("big.test")
        self.assertEqual(len(addrs), 59)
        self.assertIn(("big.test", "A", "udp"), self.server.queries)
        self.assertIn(("big.test", "A", "tcp"), self.server.queries)

    @defer.inlineCallbacks
    def test_useTCP(self):
        """
        With C{use_TCP} queries go over TCP only.
        """
        yield self.resolver(useTCP=True).lookupMX("remote.test")
        self.assertEqual(self.server.queries, [("remote.test", "MX", "tcp")])

    @defer.inlineCallbacks
    def test_timeout(self):
        """
        A server that does not answer gives a temporary error within
        C{DNS_timeout}.
        """
        r = self.resolver(timeout=0.4)
        start = reactor.seconds()
        yield self.assertFailure(r.lookupMX("slow.test"), DNSTemporaryError)
        self.assertLess(reactor.seconds() - start, 2.0)

    @defer.inlineCallbacks
    def test_garbageAndServfail(self):
        """
        An unparsable answer and SERVFAIL are temporary errors.
        """
        r = self.resolver(timeout=0.4)
        yield self.assertFailure(r.lookupA("garbage.test"), DNSTemporaryError)
        yield self.assertFailure(r.lookupA("broken.test"), DNSTemporaryError)

    @defer.inlineCallbacks
    def test_cache(self):
        """
        A second lookup within the TTL is answered from the cache; an
        expired one asks again.
        """
        r = self.resolver()
        yield r.lookupMX("remote.test")
        yield r.lookupMX("remote.test")
        self.assertEqual(self.server.queries.count(("remote.test", "MX", "udp")), 1)
        yield r.lookupA("mx2.remote.test")
        r._cache[("mx2.remote.test", 1)] = (0, [])
        yield r.lookupA("mx2.remote.test")
        self.assertEqual(self.server.queries.count(("mx2.remote.test", "A", "udp")), 2)


TLSA_ZONE = {
    "_25._tcp.mx.signed.test": [("TLSA", 3, 1, 1, "ab" * 32)],
    "_25._tcp.mx.plain.test": [("TLSA", 3, 1, 1, "cd" * 32)],
    "_25._tcp.many.signed.test": [
        ("TLSA", 2, 0, 0, "%02x" % i * 200) for i in range(8)
    ],
    "mx.signed.test": [("A", "127.0.0.2")],
    "signed.test": [("MX", 10, "MX.signed.test"), ("MX", 20, "mx2.signed.test")],
    "plain.test": [("MX", 10, "mx.plain.test")],
}


class TLSATests(unittest.TestCase):
    """
    L{DNSResolver.lookupTLSA}: asked with AD and DO, the answer's AD bit
    returned, against a real server that calls C{signed.test} signed.
    """

    def setUp(self):
        self.port, stop, self.server = startDNSServerWithLog(
            TLSA_ZONE,
            truncate={"_25._tcp.many.signed.test"},
            timeout={"_25._tcp.slow.signed.test"},
            garbage={"_25._tcp.garbage.signed.test"},
            servfail={"_25._tcp.broken.signed.test"},
            signed={"signed.test"},
        )
        self.addCleanup(stop)

    def resolver(self, timeout=1.0, useTCP=False):
        r = DNSResolver(
            reactor,
            ["127.0.0.1:%d" % self.port],
            timeout,
            useTCP,
            log=Logger("smtpc", sink=MemorySink()),
        )
        self.addCleanup(r.close)
        return r

    @defer.inlineCallbacks
    def test_signed(self):
        """
        Records of a signed zone come with C{True}; the query had AD and
        DO set.
        """
        found = yield self.resolver().lookupTLSA("_25._tcp.MX.signed.test.")
        self.assertEqual(found, ([b"\x03\x01\x01" + b"\xab" * 32], True))
        self.assertEqual(self.server.flags, [("_25._tcp.mx.signed.test", True, True)])

    @defer.inlineCallbacks
    def test_unsigned(self):
        """
        Records of a zone that is not signed come with C{False}.
        """
        found = yield self.resolver().lookupTLSA("_25._tcp.mx.plain.test")
        self.assertEqual(found, ([b"\x03\x01\x01" + b"\xcd" * 32], False))

    @defer.inlineCallbacks
    def test_none(self):
        """
        A name that does not exist, or has no TLSA records: no records,
        with the AD bit of the (authenticated) denial.
        """
        r = self.resolver()
        self.assertEqual((yield r.lookupTLSA("_25._tcp.nx.signed.test")), ([], True))
        self.assertEqual((yield r.lookupTLSA("mx.signed.test")), ([], True))
        self.assertEqual((yield r.lookupTLSA("_25._tcp.nx.plain.test")), ([], False))

    @defer.inlineCallbacks
    def test_truncated(self):
        """
        A truncated answer is asked again over TCP, with AD and DO; with
        C{use_TCP} only over TCP.
        """
        found, secure = yield self.resolver().lookupTLSA("_25._tcp.many.signed.test")
        self.assertEqual((len(found), secure), (8, True))
        self.assertEqual(
            [q[2] for q in self.server.queries], ["udp", "tcp"], self.server.queries
        )
        self.assertEqual(self.server.flags[1][1:], (True, True))
        found, secure = yield self.resolver(useTCP=True).lookupTLSA(
            "_25._tcp.mx.signed.test"
        )
        self.assertEqual(self.server.queries[-1][2], "tcp")
        self.assertTrue(secure)

    @defer.inlineCallbacks
    def test_failures(self):
        """
        No answer, SERVFAIL and garbage are temporary errors.
        """
        r = self.resolver(timeout=0.4)
        for name in ("slow", "broken", "garbage"):
            yield self.assertFailure(
                r.lookupTLSA("_25._tcp.%s.signed.test" % (name,)), DNSTemporaryError
            )

    @defer.inlineCallbacks
    def test_cache(self):
        """
        A second lookup within the TTL is answered from the cache.
        """
        r = self.resolver()
        first = yield r.lookupTLSA("_25._tcp.mx.signed.test")
        second = yield r.lookupTLSA("_25._tcp.mx.signed.test")
        self.assertEqual(first, second)
        self.assertEqual(len(self.server.queries), 1)

    @defer.inlineCallbacks
    def test_mxSecure(self):
        """
        L{DNSResolver.lookupMXSecure}: the MX hosts and the AD bit.
        """
        r = self.resolver()
        hosts, secure = yield r.lookupMXSecure("signed.test")
        self.assertEqual(
            (sorted(hosts), secure), (["mx.signed.test", "mx2.signed.test"], True)
        )
        self.assertEqual(
            (yield r.lookupMXSecure("plain.test")), (["mx.plain.test"], False)
        )
        self.assertEqual((yield r.lookupMXSecure("nx.signed.test")), ([], True))
        self.assertEqual(self.server.flags[0], ("signed.test", True, True))
