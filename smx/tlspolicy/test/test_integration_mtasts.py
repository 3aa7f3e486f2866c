# -*- test-case-name: smx.tlspolicy.test.test_integration_mtasts -*-
"""
Integration tests of L{smx.tlspolicy.mtasts}: the MTA-STS source asks a
real Twisted Names server on 127.0.0.1 for C{_mta-sts} TXT records and
fetches policies over real HTTPS from a twisted.web server on 127.0.0.1
whose certificate comes from a CA made at test time (trustme); the cache
is a real file.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import trustme
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from smx.log import Logger, MemorySink
from smx.maps.dns import DNSResolver
from smx.maps.test.dnsserver import startDNSServerWithLog
from smx.tlspolicy.mtasts import (
    MAX_POLICY_SIZE,
    MTASTSPolicySource,
    MTASTSSettings,
    PolicyCache,
    PolicyFetcher,
    mtastsSource,
    trustRootFromFiles,
)
from smx.tlspolicy.policy import ITLSPolicySource, TLSPolicy
from smx.tlspolicy.test.mtastsserver import startPolicyServer

ENFORCE = (
    "version: STSv1\r\nmode: enforce\r\nmx: mx.remote.test\r\n"
    "mx: *.backup.remote.test\r\nmax_age: 86400\r\n"
)
TESTING = "version: STSv1\nmode: testing\nmx: mx.remote.test\nmax_age: 3600\n"
NONE = "version: STSv1\nmode: none\nmax_age: 3600\n"
MX = ["mx.remote.test"]


class _OffsetClock:
    """The real reactor's time plus C{offset} seconds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def seconds(self) -> float:
        return reactor.seconds() + self.offset


class MTASTSSourceTests(TestCase):
    """
    L{MTASTSPolicySource} with a real DNS server, a real HTTPS server and
    a real cache file.
    """

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.records = {
            "_mta-sts.remote.test": [("TXT", "v=STSv1; id=20260101T000000")],
            "mta-sts.remote.test": [("A", "127.0.0.1")],
            "remote.test": [("MX", 10, "mx.remote.test")],
            "mx.remote.test": [("A", "127.0.0.2")],
        }  # type: Dict[str, List[tuple]]
        self.startDNS()
        self.https = startPolicyServer(
            self.ca, ["mta-sts.remote.test", "mta-sts.other.test"]
        )
        self.addCleanup(self.https.stop)
        self.https.policies["mta-sts.remote.test"] = (200, "text/plain", ENFORCE)
        self.tmp = self.mktemp()
        os.mkdir(self.tmp)
        self.caFile = os.path.join(self.tmp, "ca.pem")
        self.ca.cert_pem.write_to_path(self.caFile)
        self.cacheFile = os.path.join(self.tmp, "mta-sts.json")
        self.sink = MemorySink()
        self.log = Logger("smtpc", 14, self.sink)
        self.clock = _OffsetClock()

    def startDNS(self) -> None:
        port, stop, self.dnsLog = startDNSServerWithLog(self.records)
        self.addCleanup(stop)
        self.dns = DNSResolver(reactor, ["127.0.0.1:%d" % (port,)], 2.0, False)
        self.addCleanup(self.dns.close)

    def source(self, timeout: float = 5.0, caFile: Any = None) -> MTASTSPolicySource:
        settings = MTASTSSettings(
            enabled=True,
            cacheFile=self.cacheFile,
            timeout=timeout,
            caFile=caFile or self.caFile,
            caPath=None,
            port=self.https.port,
            mailertable="",
        )
        source = mtastsSource(settings, reactor, self.dns, self.log)
        assert source is not None
        source.reactor = self.clock
        return source

    def lines(self) -> str:
        return "\n".join(self.sink.lines())

    def test_interface(self) -> None:
        """
        The source provides L{ITLSPolicySource}.
        """
        verifyObject(ITLSPolicySource, self.source())

    def test_disabled(self) -> None:
        """
        C{mta_sts = no}: no source at all.
        """
        settings = MTASTSSettings(False, self.cacheFile, 5.0, None, None, 443, "")
        self.assertIsNone(mtastsSource(settings, reactor, self.dns, self.log))

    @defer.inlineCallbacks
    def test_enforce(self):
        """
        C{mode: enforce} gives level C{verify} with the C{mx:} patterns as
        match names, source C{mta-sts}, the recipient domain as policy
        domain; the policy is fetched over HTTPS from
        C{mta-sts.<domain>} and written to the cache file.
        """
        policy = yield self.source().policyFor("Remote.Test.", ["mx.remote.test"])
        self.assertEqual(
            policy,
            TLSPolicy(
                "verify",
                matchNames=("mx.remote.test", "*.backup.remote.test"),
                source="mta-sts",
                testing=False,
                policyDomain="remote.test",
            ),
        )
        self.assertEqual(self.https.requests, ["mta-sts.remote.test"])
        with open(self.cacheFile) as f:
            cached = json.load(f)["policies"]["remote.test"]
        self.assertEqual(cached["id"], "20260101T000000")
        self.assertEqual(cached["policy"], ENFORCE)
        self.assertIn(
            "mta_sts=remote.test, policy_id=20260101T000000, mode=enforce, "
            "max_age=86400",
            self.lines(),
        )

    @defer.inlineCallbacks
    def test_testing(self):
        """
        C{mode: testing} gives the same policy with C{testing} set.
        """
        self.https.policies["mta-sts.remote.test"] = (200, "text/plain", TESTING)
        policy = yield self.source().policyFor("remote.test", ["mx.remote.test"])
        self.assertTrue(policy.testing)
        self.assertEqual(policy.level, "verify")
        self.assertEqual(policy.matchNames, ("mx.remote.test",))
        self.assertFalse(policy.requiresTLS)

    @defer.inlineCallbacks
    def test_none(self):
        """
        C{mode: none} is honoured: no policy, though it is cached (and so
        replaces an enforce policy cached before).
        """
        source = self.source()
        policy = yield source.policyFor("remote.test", MX)
        self.assertIsNotNone(policy)
        self.records["_mta-sts.remote.test"] = [("TXT", "v=STSv1; id=2")]
        yield self.restartDNS()
        source.dns = self.dns
        self.https.policies["mta-sts.remote.test"] = (200, "text/plain", NONE)
        policy = yield source.policyFor("remote.test", MX)
        self.assertIsNone(policy)
        self.assertEqual(source.cache.get("remote.test").policy.mode, "none")

    @defer.inlineCallbacks
    def restartDNS(self):
        # the zone is copied when the server starts: start another one
        yield self.dns.close()
        self.startDNS()

    @defer.inlineCallbacks
    def test_notMXDelivery(self):
        """
        Routes that are address literals (a mailertable relay) or none
        (local delivery) are not delivery to the domain's MX hosts: no
        policy, no lookup.
        """
        source = self.source()
        for hosts in [[], ["127.0.0.2"], ["[127.0.0.2]", "::1"], ["IPv6:::1"]]:
            self.assertIsNone((yield source.policyFor("remote.test", hosts)))
        self.assertIsNone((yield source.policyFor("[127.0.0.2]", MX)))
        self.assertEqual(self.dnsLog.queries, [])
        self.assertEqual(self.https.requests, [])

    @defer.inlineCallbacks
    def test_internationalDomain(self):
        """
        A domain in U-labels is looked up and fetched in A-labels; one
        that is not valid IDNA has no policy (and no traceback).
        """
        self.records["_mta-sts.xn--bcher-kva.test"] = [("TXT", "v=STSv1; id=1")]
        self.records["mta-sts.xn--bcher-kva.test"] = [("A", "127.0.0.1")]
        yield self.restartDNS()
        yield self.https.stop()
        self.https = startPolicyServer(self.ca, ["mta-sts.xn--bcher-kva.test"])
        self.addCleanup(self.https.stop)
        self.https.policies["mta-sts.xn--bcher-kva.test"] = (200, "text/plain", ENFORCE)
        policy = yield self.source().policyFor("Bücher.test", MX)
        self.assertEqual(policy.policyDomain, "xn--bcher-kva.test")
        self.assertIsNone((yield self.source().policyFor("a..b\u0080.test", MX)))
        self.assertNotIn("Traceback", self.lines())

    @defer.inlineCallbacks
    def test_relayed(self):
        """
        A domain the mailertable relays (a smart host) has no policy and
        causes no lookup.
        """
        source = self.source()
        source.relayed = lambda domain: domain == "remote.test"
        self.assertIsNone((yield source.policyFor("remote.test", MX)))
        self.assertEqual(self.dnsLog.queries, [])
        source.relayed = lambda domain: False
        self.assertIsNotNone((yield source.policyFor("remote.test", MX)))

    @defer.inlineCallbacks
    def test_noRecord(self):
        """
        A domain without C{_mta-sts} TXT record has no policy and no
        HTTPS request is made.
        """
        policy = yield self.source().policyFor("other.test", ["mx.other.test"])
        self.assertIsNone(policy)
        self.assertEqual(self.https.requests, [])
        self.assertFalse(os.path.exists(self.cacheFile))

    @defer.inlineCallbacks
    def test_twoRecords(self):
        """
        Two C{v=STSv1} records: the domain has no usable record (RFC 8461
        §3.1), no fetch.
        """
        self.records["_mta-sts.remote.test"] = [
            ("TXT", "v=STSv1; id=1"),
            ("TXT", "v=STSv1; id=2"),
        ]
        yield self.restartDNS()
        policy = yield self.source().policyFor("remote.test", MX)
        self.assertIsNone(policy)
        self.assertEqual(self.https.requests, [])

    @defer.inlineCallbacks
    def test_sameIdUsesCache(self):
        """
        While the TXT record's id is the cached policy's, the policy is
        not fetched again.
        """
        source = self.source()
        yield source.policyFor("remote.test", MX)
        self.dns.clearCache()
        yield source.policyFor("remote.test", MX)
        self.assertEqual(self.https.requests, ["mta-sts.remote.test"])

    @defer.inlineCallbacks
    def test_newIdRefetches(self):
        """
        A new id in the TXT record fetches the policy again, and the new
        policy replaces the cached one.
        """
        source = self.source()
        yield source.policyFor("remote.test", MX)
        self.records["_mta-sts.remote.test"] = [("TXT", "v=STSv1; id=new1")]
        yield self.restartDNS()
        source.dns = self.dns
        self.https.policies["mta-sts.remote.test"] = (200, "text/plain", TESTING)
        policy = yield source.policyFor("remote.test", MX)
        self.assertTrue(policy.testing)
        self.assertEqual(len(self.https.requests), 2)
        self.assertEqual(source.cache.get("remote.test").id, "new1")

    @defer.inlineCallbacks
    def test_failedFetchKeepsCachedPolicy(self):
        """
        A failed fetch (here: the policy server answers 500 after the id
        changed) never lowers the cached, unexpired enforce policy; the
        failure is logged with a C{tls_policy_failed} record of result
        type C{sts-policy-fetch-error}.
        """
        source = self.source()
        yield source.policyFor("remote.test", MX)
        self.records["_mta-sts.remote.test"] = [("TXT", "v=STSv1; id=new1")]
        yield self.restartDNS()
        source.dns = self.dns
        self.https.policies["mta-sts.remote.test"] = (500, "text/plain", "oops")
        policy = yield source.policyFor("remote.test", MX)
        self.assertEqual(policy.level, "verify")
        self.assertFalse(policy.testing)
        self.assertEqual(source.cache.get("remote.test").id, "20260101T000000")
        self.assertIn("func=tls_policy_failed, domain=remote.test", self.lines())
        self.assertIn("result_type=sts-policy-fetch-error", self.lines())
        self.assertIn("HTTP status 500", self.lines())

    @defer.inlineCallbacks
    def test_failedFetchNotRetriedAtOnce(self):
        """
        After a failed fetch the domain's policy is not fetched again for
        a while: deliveries do not wait for a broken server each time.
        """
        self.https.policies["mta-sts.remote.test"] = (404, "text/plain", "")
        source = self.source()
        self.assertIsNone((yield source.policyFor("remote.test", MX)))
        self.assertIsNone((yield source.policyFor("remote.test", MX)))
        self.assertEqual(len(self.https.requests), 1)
        self.clock.offset = 301
        self.https.policies["mta-sts.remote.test"] = (200, "text/plain", ENFORCE)
        self.assertIsNotNone((yield source.policyFor("remote.test", MX)))

    @defer.inlineCallbacks
    def test_noRecordKeepsCachedPolicy(self):
        """
        A TXT record that disappears (or an attacker who removes it)
        does not remove a cached, unexpired policy.
        """
        source = self.source()
        yield source.policyFor("remote.test", MX)
        del self.records["_mta-sts.remote.test"]
        yield self.restartDNS()
        source.dns = self.dns
        policy = yield source.policyFor("remote.test", MX)
        self.assertEqual(policy.source, "mta-sts")

    @defer.inlineCallbacks
    def test_dnsFailureKeepsCachedPolicy(self):
        """
        A TXT lookup that fails temporarily (SERVFAIL) keeps the cached
        policy.
        """
        source = self.source()
        yield source.policyFor("remote.test", MX)
        yield self.dns.close()
        port, stop, _ = startDNSServerWithLog(
            self.records, servfail=["_mta-sts.remote.test"]
        )
        self.addCleanup(stop)
        source.dns = DNSResolver(reactor, ["127.0.0.1:%d" % (port,)], 2.0, False)
        self.addCleanup(source.dns.close)
        policy = yield source.policyFor("remote.test", MX)
        self.assertEqual(policy.source, "mta-sts")

    @defer.inlineCallbacks
    def test_expiredPolicyNotUsed(self):
        """
        Once its max_age has passed, a cached policy is no longer used
        when it cannot be fetched again.
        """
        source = self.source()
        yield source.policyFor("remote.test", MX)
        self.https.policies["mta-sts.remote.test"] = (404, "text/plain", "")
        self.clock.offset = 86401
        self.dns.clearCache()
        self.assertIsNone((yield source.policyFor("remote.test", MX)))

    @defer.inlineCallbacks
    def test_refreshedAfterHalfMaxAge(self):
        """
        With an unchanged id, a policy older than half its max_age is
        fetched again (RFC 8461 §5.1), which renews its lifetime.
        """
        source = self.source()
        yield source.policyFor("remote.test", MX)
        first = source.cache.get("remote.test").fetched
        self.clock.offset = 43201
        self.dns.clearCache()
        yield source.policyFor("remote.test", MX)
        self.assertEqual(len(self.https.requests), 2)
        self.assertGreater(source.cache.get("remote.test").fetched, first)

    @defer.inlineCallbacks
    def test_cacheSurvivesRestart(self):
        """
        A new source (smx restarted) reads the cache file: with the same
        id in DNS it uses the cached policy without any HTTPS request,
        even with the policy server gone.
        """
        yield self.source().policyFor("remote.test", MX)
        yield self.https.stop()
        self.https.requests = []
        self.dns.clearCache()
        policy = yield self.source().policyFor("remote.test", MX)
        self.assertEqual(policy.matchNames, ("mx.remote.test", "*.backup.remote.test"))
        self.assertEqual(self.https.requests, [])

    @defer.inlineCallbacks
    def test_untrustedCertificate(self):
        """
        A policy server whose certificate does not chain to the CAs is
        not believed: no policy, result type C{sts-webpki-invalid}.
        """
        other = trustme.CA()
        otherFile = os.path.join(self.tmp, "other.pem")
        other.cert_pem.write_to_path(otherFile)
        policy = yield self.source(caFile=otherFile).policyFor("remote.test", MX)
        self.assertIsNone(policy)
        self.assertIn("result_type=sts-webpki-invalid", self.lines())

    @defer.inlineCallbacks
    def test_wrongCertificateName(self):
        """
        A certificate that is not valid for C{mta-sts.<domain>} is not
        believed either.
        """
        self.records["_mta-sts.third.test"] = [("TXT", "v=STSv1; id=1")]
        self.records["mta-sts.third.test"] = [("A", "127.0.0.1")]
        yield self.restartDNS()
        self.https.policies["mta-sts.third.test"] = (200, "text/plain", ENFORCE)
        policy = yield self.source().policyFor("third.test", ["mx.third.test"])
        self.assertIsNone(policy)
        self.assertIn("result_type=sts-webpki-invalid", self.lines())

    @defer.inlineCallbacks
    def test_redirectNotFollowed(self):
        """
        A redirect is not followed (RFC 8461 §3.3).
        """
        self.https.policies["mta-sts.remote.test"] = (
            301,
            "",
            "https://mta-sts.other.test/.well-known/mta-sts.txt",
        )
        self.https.policies["mta-sts.other.test"] = (200, "text/plain", ENFORCE)
        policy = yield self.source().policyFor("remote.test", MX)
        self.assertIsNone(policy)
        self.assertEqual(self.https.requests, ["mta-sts.remote.test"])
        self.assertIn("HTTP status 301", self.lines())

    @defer.inlineCallbacks
    def test_wrongContentType(self):
        """
        A policy served as anything but C{text/plain} is refused.
        """
        self.https.policies["mta-sts.remote.test"] = (200, "text/html", ENFORCE)
        policy = yield self.source().policyFor("remote.test", MX)
        self.assertIsNone(policy)
        self.assertIn("result_type=sts-policy-invalid", self.lines())

    @defer.inlineCallbacks
    def test_contentTypeParameters(self):
        """
        Parameters of the content type do not matter.
        """
        self.https.policies["mta-sts.remote.test"] = (
            200,
            "Text/Plain; charset=utf-8",
            ENFORCE,
        )
        self.assertIsNotNone((yield self.source().policyFor("remote.test", MX)))

    @defer.inlineCallbacks
    def test_tooLarge(self):
        """
        A body larger than 64 KB is refused without reading all of it.
        """
        body = ENFORCE + "x: " + "y" * MAX_POLICY_SIZE + "\n"
        self.https.policies["mta-sts.remote.test"] = (200, "text/plain", body)
        policy = yield self.source().policyFor("remote.test", MX)
        self.assertIsNone(policy)
        self.assertIn("larger than 65536 bytes", self.lines())

    @defer.inlineCallbacks
    def test_invalidPolicy(self):
        """
        A body that is not a valid policy is refused
        (C{sts-policy-invalid}).
        """
        self.https.policies["mta-sts.remote.test"] = (
            200,
            "text/plain",
            "version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n",
        )
        self.assertIsNone((yield self.source().policyFor("remote.test", MX)))
        self.assertIn("result_type=sts-policy-invalid", self.lines())

    @defer.inlineCallbacks
    def test_timeout(self):
        """
        A policy server that does not answer within C{mta_sts_timeout}
        is a fetch error.
        """
        self.https.policies["mta-sts.remote.test"] = "hang"
        policy = yield self.source(timeout=0.5).policyFor("remote.test", MX)
        self.assertIsNone(policy)
        self.assertIn("error=timeout", self.lines())

    @defer.inlineCallbacks
    def test_noPolicyHost(self):
        """
        A TXT record without an address for C{mta-sts.<domain>}: a fetch
        error, no policy.
        """
        del self.records["mta-sts.remote.test"]
        yield self.restartDNS()
        self.assertIsNone((yield self.source().policyFor("remote.test", MX)))
        self.assertIn("result_type=sts-policy-fetch-error", self.lines())

    @defer.inlineCallbacks
    def test_oneFetchForConcurrentRequests(self):
        """
        Deliveries asking for one domain at the same time share one
        fetch.
        """
        source = self.source()
        results = yield defer.gatherResults(
            [source.policyFor("remote.test", MX) for _ in range(3)]
        )
        self.assertEqual(len({r for r in results}), 1)
        self.assertEqual(self.https.requests, ["mta-sts.remote.test"])


class TrustRootTests(TestCase):
    """
    L{trustRootFromFiles}.
    """

    def test_noCertificate(self):
        """
        A CA file without a certificate is a clear error.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("nothing\n")
        e = self.assertRaises(ValueError, trustRootFromFiles, path, None)
        self.assertIn("no CA certificate in %s" % (path,), str(e))

    def test_missing(self):
        """
        A CA file that does not exist is a clear error.
        """
        e = self.assertRaises(ValueError, trustRootFromFiles, "/nonexistent", None)
        self.assertIn("/nonexistent", str(e))
