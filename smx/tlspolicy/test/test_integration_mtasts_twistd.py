# -*- test-case-name: smx.tlspolicy.test.test_integration_mtasts_twistd -*-
"""
Integration tests of MTA-STS and TLS reporting as a user runs smx: a real
C{twistd -n smx} relays mail from swaks by MX to an ESMTP receiver with
STARTTLS on 127.0.0.2; a Twisted Names server on 127.0.0.1 serves the MX
and C{_mta-sts} records; the policy comes from a twisted.web HTTPS server
on 127.0.0.1 (C{mta_sts_port}), certificates from a CA made at test time
(trustme); C{smx tlsrpt} prints the report.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import trustme
from twisted.internet import defer, protocol, reactor

from smx.maps.test.dnsserver import startDNSServer
from smx.test.mta import SWAKS, MTATestCase, configuration, swaks, until
from smx.tlspolicy.test.mtastsserver import certificateOptions, startPolicyServer
from smx.tlspolicy.test.test_integration_mtasts_delivery import _Receiver

ENFORCE = "version: STSv1\nmode: enforce\nmx: mx.remote.test\nmax_age: 86400\n"


class MTASTSTwistdTests(MTATestCase):
    """
    MTA-STS enforced by a running smx, counted by C{smx tlsrpt}.
    """

    def setUp(self) -> None:
        MTATestCase.setUp(self)
        self.need(SWAKS)
        self.ca = trustme.CA()
        self.ca.cert_pem.write_to_path(os.path.join(self.root, "ca.pem"))
        self.https = startPolicyServer(self.ca, ["mta-sts.remote.test"])
        self.addCleanup(self.https.stop)
        self.https.policies["mta-sts.remote.test"] = (200, "text/plain", ENFORCE)

    def receiver(self, names: Any) -> Any:
        factory = protocol.Factory.forProtocol(_Receiver)
        factory.connections = []  # type: ignore[attr-defined]
        factory.messages = []  # type: ignore[attr-defined]
        factory.commands = []  # type: ignore[attr-defined]
        factory.tlsOptions = certificateOptions(  # type: ignore[attr-defined]
            self.ca, names
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.2")

        def stop() -> Any:
            for c in factory.connections:  # type: ignore[attr-defined]
                c.transport.abortConnection()
            return port.stopListening()

        self.addCleanup(stop)
        factory.port = port.getHost().port  # type: ignore[attr-defined]
        return factory

    def startMTA(self, receiverPort: int, mt: str = "") -> None:
        dnsPort, stopDNS = startDNSServer(
            {
                "remote.test": [("MX", 10, "mx.remote.test")],
                "mx.remote.test": [("A", "127.0.0.2")],
                "_mta-sts.remote.test": [("TXT", "v=STSv1; id=1")],
                "mta-sts.remote.test": [("A", "127.0.0.1")],
                "smarthost.test": [("A", "127.0.0.2")],
            }
        )
        self.addCleanup(stopDNS)
        self.mta.write(
            configuration(
                self.mta.port,
                smar='nameserver = { "127.0.0.1:%d" };' % (dnsPort,),
                smtpc="remote_port = %d; mta_sts_port = %d; "
                'tls { CAcert_file = "%s"; }'
                % (receiverPort, self.https.port, os.path.join(self.root, "ca.pem")),
            ),
            mt=mt,
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()
        self.addCleanup(self.mta.stop)

    @defer.inlineCallbacks
    def report(self) -> Any:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        out, err, status = yield self.mta.smx(
            "tlsrpt", "--day", day, "--domain", "remote.test"
        )
        self.assertEqual(status, 0, err)
        return json.loads(out)

    @defer.inlineCallbacks
    def test_enforce(self):
        """
        With C{mode: enforce}, mail goes to the MX host with a good
        certificate over TLS; to one whose certificate is for another
        name it is deferred (4.7.5) and nothing is sent, also after a
        restart of smx (killed with SIGKILL) with the policy server down
        (the cached policy); C{smx tlsrpt} counts both.
        """
        good = self.receiver(["mx.remote.test"])
        self.startMTA(good.port)
        out, err, status = yield swaks(
            self.mta.port, "--from", "a@client.test", "--to", "u@remote.test"
        )
        self.assertEqual(status, 0, out)
        yield until(lambda: good.messages, 10)
        self.assertEqual([tls for tls, _ in good.messages], [True])
        self.assertEqual(self.https.requests, ["mta-sts.remote.test"])
        # kill -9: the cache file and the counts were written at once
        self.mta.kill()

        # restarted, the policy server gone: the cached policy holds
        yield self.https.stop()
        log = self.mta.log()
        bad = self.receiver(["other.test"])
        self.startMTA(bad.port)
        out, err, status = yield swaks(
            self.mta.port, "--from", "a@client.test", "--to", "u@remote.test"
        )
        self.assertEqual(status, 0, out)
        yield until(lambda: "4.7.5" in self.mta.log(), 10)
        self.assertEqual(bad.messages, [])
        self.assertFalse([c for c in bad.commands if c[1] == b"MAIL"])
        self.assertIn(
            "result_type=certificate-host-mismatch",
            self.mta.logWith("result_type=certificate-host-mismatch"),
        )
        self.assertIn("mta_sts=remote.test, policy_id=1, mode=enforce", log)
        self.mta.kill()

        report = yield self.report()
        (policy,) = report["policies"]
        self.assertEqual(policy["policy"]["policy-type"], "sts")
        self.assertEqual(policy["policy"]["mx-host"], ["mx.remote.test"])
        self.assertEqual(policy["summary"]["total-successful-session-count"], 1)
        self.assertGreaterEqual(policy["summary"]["total-failure-session-count"], 1)
        self.assertEqual(
            policy["failure-details"][0]["result-type"], "certificate-host-mismatch"
        )

    @defer.inlineCallbacks
    def test_smartHost(self):
        """
        With a smart host in the mailertable (C{. esmtp:smarthost.test}),
        mail for a domain with an enforce policy goes to the smart host:
        MTA-STS is about the domain's MX hosts, and is not even looked
        up.
        """
        relay = self.receiver(["smarthost.test"])
        self.startMTA(relay.port, mt=". esmtp:smarthost.test\n")
        out, err, status = yield swaks(
            self.mta.port, "--from", "a@client.test", "--to", "u@remote.test"
        )
        self.assertEqual(status, 0, out)
        yield until(lambda: relay.messages, 10)
        self.assertEqual([tls for tls, _ in relay.messages], [True])
        self.assertEqual(self.https.requests, [])
        self.assertNotIn("tls_policy_failed", self.mta.log())


class PolicyMapReloadTests(MTATestCase):
    """
    SMTPC's C{tls_policy_map} read again by C{smx qmgrctl reload} in a
    running smx, as by SIGUSR1 (doc/tls.md, README: "reload maps").
    """

    def setUp(self) -> None:
        MTATestCase.setUp(self)
        self.need(SWAKS)
        self.ca = trustme.CA()
        self.ca.cert_pem.write_to_path(os.path.join(self.root, "ca.pem"))

    @defer.inlineCallbacks
    def test_qmgrctlReload(self):
        """
        Mail deferred by the map's C{fingerprint} entry (another
        fingerprint: 4.7.5, nothing sent) is delivered over TLS once the
        entry says C{verify} and C{smx qmgrctl reload} was run.
        """
        good = MTASTSTwistdTests.receiver(self, ["mx.remote.test"])  # type: ignore[arg-type]
        dnsPort, stopDNS = startDNSServer(
            {
                "remote.test": [("MX", 10, "mx.remote.test")],
                "mx.remote.test": [("A", "127.0.0.2")],
            }
        )
        self.addCleanup(stopDNS)
        self.mta.createmap(
            "tls_policy", "remote.test fingerprint match=%s\n" % ("00" * 32)
        )
        self.mta.write(
            configuration(
                self.mta.port,
                smar='nameserver = { "127.0.0.1:%d" };' % (dnsPort,),
                smtpc='remote_port = %d; tls_policy_map = "tls_policy.db"; '
                'mta_sts = no; tls { CAcert_file = "%s"; }'
                % (good.port, os.path.join(self.root, "ca.pem")),
            ),
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()
        self.addCleanup(self.mta.stop)
        out, err, status = yield swaks(
            self.mta.port, "--from", "a@client.test", "--to", "u@remote.test"
        )
        self.assertEqual(status, 0, out)
        yield until(lambda: "451 4.7.5" in self.mta.log(), 10)
        self.assertEqual(good.messages, [])
        self.mta.createmap("tls_policy", "remote.test verify\n")
        out, err, status = yield self.mta.smx("qmgrctl", "reload")
        self.assertEqual(status, 0, err)
        out, err, status = yield self.mta.smx("qmgrctl", "flush")
        yield until(lambda: good.messages, 10)
        self.assertEqual([tls for tls, _ in good.messages], [True])
