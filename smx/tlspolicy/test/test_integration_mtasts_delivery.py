# -*- test-case-name: smx.tlspolicy.test.test_integration_mtasts_delivery -*-
"""
Integration tests of MTA-STS in delivery: SMTPC (L{smx.mail.smtpc}) with
the MTA-STS source (L{smx.tlspolicy.mtasts}) delivers to small ESMTP
receivers with STARTTLS on 127.0.0.1 (certificates of a CA made at test
time with trustme), the policies come from a real twisted.web HTTPS
server and the C{_mta-sts} TXT records from a real Twisted Names server;
the sessions are counted for the TLS report (L{smx.tlspolicy.tlsrpt}).
"""

from __future__ import annotations

import calendar
import os
import time
from typing import Any, Dict, List, Optional

import trustme
from twisted.internet import defer, protocol, reactor
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import TestCase

from smx.log import Logger, MemorySink
from smx.mail.clienttls import ClientTLSCreator
from smx.mail.smtpc import DeliveryAgent, policiesFromSettings
from smx.mail.testing import defaultDeliverySettings
from smx.maps.dns import DNSResolver
from smx.maps.test.dnsserver import startDNSServer
from smx.queue.testing import MemoryContentStore
from smx.tlspolicy.mtasts import MTASTSSettings, mtastsSource
from smx.tlspolicy.test.mtastsserver import certificateOptions, startPolicyServer
from smx.tlspolicy.tlsrpt import (
    ReportService,
    ReportSettings,
    SessionRecorder,
    dailyReports,
    stsPolicyReader,
)

BODY = b"Subject: MTA-STS\r\n\r\nhello\r\n"

ENFORCE = (
    "version: STSv1\nmode: enforce\nmx: mx.remote.test\n"
    "mx: *.backup.remote.test\nmax_age: 86400\n"
)
TESTING = ENFORCE.replace("enforce", "testing")


class _Receiver(LineReceiver):
    """An ESMTP server that offers STARTTLS (unless told not to)."""

    delimiter = b"\r\n"

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        self.data = None  # type: Optional[List[bytes]]
        self.tls = False
        self.sendLine(b"220 receiver ESMTP")

    def lineReceived(self, line: bytes) -> None:
        if self.data is not None:
            if line == b".":
                self.factory.messages.append((self.tls, b"\r\n".join(self.data)))
                self.data = None
                self.sendLine(b"250 2.0.0 accepted")
            else:
                self.data.append(line)
            return
        verb = line.split(b" ", 1)[0].upper()
        self.factory.commands.append((self.tls, verb))
        if verb == b"EHLO":
            if self.factory.tlsOptions is not None and not self.tls:
                self.sendLine(b"250-receiver\r\n250-PIPELINING\r\n250 STARTTLS")
            else:
                self.sendLine(b"250-receiver\r\n250 PIPELINING")
        elif verb == b"STARTTLS" and self.factory.tlsOptions is not None:
            self.sendLine(b"220 2.0.0 go ahead")
            self.transport.startTLS(self.factory.tlsOptions)
            self.tls = True
        elif verb == b"DATA":
            self.data = []
            self.sendLine(b"354 go")
        elif verb == b"QUIT":
            self.sendLine(b"221 bye")
            self.transport.loseConnection()
        else:
            self.sendLine(b"250 ok")


class MTASTSDeliveryTests(TestCase):
    """
    SMTPC delivers under the MTA-STS policy of the recipient domain.
    """

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.dir = os.path.abspath(self.mktemp())
        os.mkdir(self.dir)
        self.caFile = os.path.join(self.dir, "ca.pem")
        self.ca.cert_pem.write_to_path(self.caFile)
        port, stop = startDNSServer(
            {
                "_mta-sts.remote.test": [("TXT", "v=STSv1; id=1")],
                "mta-sts.remote.test": [("A", "127.0.0.1")],
            }
        )
        self.addCleanup(stop)
        self.dns = DNSResolver(reactor, ["127.0.0.1:%d" % (port,)], 2.0, False)
        self.addCleanup(self.dns.close)
        self.https = startPolicyServer(self.ca, ["mta-sts.remote.test"])
        self.addCleanup(self.https.stop)
        self.https.policies["mta-sts.remote.test"] = (200, "text/plain", ENFORCE)
        self.store = MemoryContentStore()
        self.store.contents["S1"] = BODY
        self.sink = MemorySink()
        self.log = Logger("smtpc", 14, self.sink)
        # the TLS report counts what the deliveries log
        self.stsCache = os.path.join(self.dir, "mta-sts.json")
        self.reports = os.path.join(self.dir, "tlsrpt")
        recorder = SessionRecorder(
            self.reports, reactor, Logger("smtpc", 0), stsPolicyReader(self.stsCache)
        )
        service = ReportService(recorder)
        service.startService()
        self.addCleanup(service.stopService)

    def receiver(self, names: Any = ("mx.remote.test",), ca: Any = None) -> Any:
        """
        Listen on 127.0.0.1 with STARTTLS and a certificate for C{names}
        (from C{ca}, default the trusted one); C{names=None}: no STARTTLS.
        """
        factory = protocol.Factory.forProtocol(_Receiver)
        factory.connections = []  # type: ignore[attr-defined]
        factory.messages = []  # type: ignore[attr-defined]
        factory.commands = []  # type: ignore[attr-defined]
        factory.tlsOptions = (  # type: ignore[attr-defined]
            None if names is None else certificateOptions(ca or self.ca, names)
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")

        def stop() -> Any:
            for c in factory.connections:  # type: ignore[attr-defined]
                c.transport.abortConnection()
            return port.stopListening()

        self.addCleanup(stop)
        factory.port = port.getHost().port  # type: ignore[attr-defined]
        return factory

    def agent(self) -> DeliveryAgent:
        settings = defaultDeliverySettings(
            heloName="client.test",
            ioTimeout=5,
            tlsCreator=ClientTLSCreator(caFile=self.caFile),
        )
        source = mtastsSource(
            MTASTSSettings(
                True, self.stsCache, 5.0, self.caFile, None, self.https.port, ""
            ),
            reactor,
            self.dns,
            self.log,
        )
        policies = policiesFromSettings(settings, self.log, sources=[source])
        agent = DeliveryAgent(
            self.store, settings, reactor, logger=self.log, policies=policies
        )
        self.addCleanup(agent.cache.closeAll)
        return agent

    def deliver(self, *receivers: Any, hosts: Any = None) -> defer.Deferred:
        hosts = hosts or ["mx.remote.test"] * len(receivers)
        routes = [
            {
                "mailer": "esmtp",
                "host": host,
                "address": "127.0.0.1",
                "port": r.port,
                "preference": 10 * (i + 1),
            }
            for i, (host, r) in enumerate(zip(hosts, receivers))
        ]
        transaction = {
            "id": "C0100000001000000",
            "ss_ta": "S1",
            "sender": "sender@client.test",
            "recipients": [{"address": "user@remote.test", "index": 0}],
            "routes": routes,
            "size": len(BODY),
            "bodyType": "7BIT",
        }
        return self.agent().deliver(transaction)

    def lines(self) -> str:
        return "\n".join(self.sink.lines())

    def report(self) -> Dict[str, Any]:
        settings = ReportSettings(True, self.reports, "", "", "smx.test", "")
        day = time.strftime("%Y-%m-%d", time.gmtime(reactor.seconds()))
        (report,) = dailyReports(settings, day, "remote.test")
        self.assertEqual(
            calendar.timegm(time.strptime(day, "%Y-%m-%d")) // 86400,
            int(reactor.seconds()) // 86400,
        )
        return report["policies"][0]

    @defer.inlineCallbacks
    def test_enforceDelivered(self):
        """
        C{mode: enforce}, an MX host the policy lists with a certificate
        valid for its name from a trusted CA: delivered over TLS, a
        C{tls_policy_ok} record with C{policy=mta-sts}, counted as a
        successful session of the C{sts} policy of the domain.
        """
        mx = self.receiver()
        [result] = yield self.deliver(mx)
        self.assertEqual(result["status"], "ok", result)
        self.assertEqual([tls for tls, _ in mx.messages], [True])
        self.assertIn("func=tls_policy_ok", self.lines())
        self.assertIn("policy=mta-sts", self.lines())
        policy = self.report()
        self.assertEqual(policy["policy"]["policy-type"], "sts")
        self.assertEqual(policy["policy"]["policy-string"][1], "mode: enforce")
        self.assertEqual(policy["summary"]["total-successful-session-count"], 1)

    @defer.inlineCallbacks
    def test_enforceWrongName(self):
        """
        C{mode: enforce} and a certificate for another name: deferred with
        4.7.5, nothing sent, a C{certificate-host-mismatch} failure
        counted.
        """
        mx = self.receiver(names=["other.test"])
        [result] = yield self.deliver(mx)
        self.assertEqual(result["status"], "temp")
        self.assertIn("4.7.5", result["reply"])
        self.assertEqual(mx.messages, [])
        self.assertNotIn((True, b"MAIL"), mx.commands)
        self.assertNotIn((False, b"MAIL"), mx.commands)
        policy = self.report()
        self.assertEqual(policy["summary"]["total-failure-session-count"], 1)
        self.assertEqual(
            policy["failure-details"][0]["result-type"], "certificate-host-mismatch"
        )
        self.assertEqual(
            policy["failure-details"][0]["receiving-mx-hostname"], "mx.remote.test"
        )

    @defer.inlineCallbacks
    def test_enforceUntrusted(self):
        """
        C{mode: enforce} and a certificate of a CA that is not trusted:
        deferred with 4.7.5 (C{certificate-not-trusted}).
        """
        mx = self.receiver(ca=trustme.CA())
        [result] = yield self.deliver(mx)
        self.assertEqual(result["status"], "temp")
        self.assertIn("4.7.5", result["reply"])
        self.assertEqual(mx.messages, [])
        self.assertIn("result_type=certificate-not-trusted", self.lines())

    @defer.inlineCallbacks
    def test_enforceNoSTARTTLS(self):
        """
        C{mode: enforce} and an MX host that does not offer STARTTLS:
        deferred with 4.7.4, nothing sent in clear.
        """
        mx = self.receiver(names=None)
        [result] = yield self.deliver(mx)
        self.assertEqual(result["status"], "temp")
        self.assertIn("4.7.4", result["reply"])
        self.assertEqual(mx.messages, [])
        self.assertNotIn((False, b"MAIL"), mx.commands)
        self.assertIn("result_type=starttls-not-supported", self.lines())

    @defer.inlineCallbacks
    def test_mxNotInPolicy(self):
        """
        C{mode: enforce}: an MX host the policy does not list is not
        used, even with a good certificate; the next one, listed by a
        wildcard pattern, is.
        """
        evil = self.receiver(names=["mx.evil.test"])
        good = self.receiver(names=["mx1.backup.remote.test"])
        [result] = yield self.deliver(
            evil, good, hosts=["mx.evil.test", "mx1.backup.remote.test"]
        )
        self.assertEqual(result["status"], "ok", result)
        self.assertEqual(evil.connections, [])
        self.assertEqual(len(good.messages), 1)
        self.assertIn("matches no mx of the MTA-STS policy", self.lines())

    @defer.inlineCallbacks
    def test_testingDeliversAndLogs(self):
        """
        C{mode: testing} and a certificate for another name: delivered
        (as C{may} would), the failure logged with C{testing=1} and
        counted for the report.
        """
        self.https.policies["mta-sts.remote.test"] = (200, "text/plain", TESTING)
        mx = self.receiver(names=["other.test"])
        [result] = yield self.deliver(mx)
        self.assertEqual(result["status"], "ok", result)
        self.assertEqual(len(mx.messages), 1)
        self.assertIn("result_type=certificate-host-mismatch", self.lines())
        self.assertIn("testing=1", self.lines())
        policy = self.report()
        self.assertEqual(policy["policy"]["policy-string"][1], "mode: testing")
        self.assertEqual(policy["summary"]["total-failure-session-count"], 1)

    @defer.inlineCallbacks
    def test_fetchFailureKeepsEnforce(self):
        """
        A policy server that fails after the policy was cached does not
        lower it: a receiver with a wrong certificate is still refused.
        """
        good = self.receiver()
        [result] = yield self.deliver(good)
        self.assertEqual(result["status"], "ok")
        self.https.policies["mta-sts.remote.test"] = (503, "text/plain", "down")
        self.dns.clearCache()
        bad = self.receiver(names=["other.test"])
        [result] = yield self.deliver(bad)
        self.assertEqual(result["status"], "temp")
        self.assertEqual(bad.messages, [])
