# -*- test-case-name: smx.tlspolicy.test.test_integration_tlspolicy -*-
"""
Integration tests of SMTPC's TLS policy (L{smx.tlspolicy}, doc/tls.md):
real loopback sockets, real TLS (certificates from a test CA made with
trustme at test time), a Twisted Names server on 127.0.0.1 serving TLSA
records with the AD bit for the zones a test calls signed, and small
Twisted receivers (L{smx.tlspolicy.test.receiver}) that record whether
each command came over TLS.  For every level: the right receiver gets
the message, the others get none and no mail command in clear, and the
recipient is deferred with the right status and C{tls_policy_failed}
record.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from smx.log import Logger, MemorySink
from smx.mail.clienttls import ClientTLSCreator
from smx.mail.smtpc import DeliveryAgent
from smx.mail.testing import defaultDeliverySettings
from smx.maps.createmap import createMap
from smx.maps.dns import DNSResolver
from smx.maps.test.dnsserver import startDNSServerWithLog
from smx.queue.testing import MemoryContentStore
from smx.tlspolicy.destination import TLSPolicies
from smx.tlspolicy.matching import certificateFingerprints
from smx.tlspolicy.policy import TLSPolicy
from smx.tlspolicy.policymap import PolicyMap
from smx.tlspolicy.test.receiver import (
    MX,
    TestPKI,
    clearMail,
    listenReceiver,
    recordsOf,
    tlsaHex,
)
from smx.tlspolicy.test.test_destination import FakeSource

BODY = b"Subject: policy\r\n\r\nsecret\r\n"

_PKI = None  # type: Optional[TestPKI]


def pki(directory: str) -> TestPKI:
    """The certificates, made once per test run."""
    global _PKI
    if _PKI is None:
        _PKI = TestPKI(directory)
    return _PKI


def stsPolicy(testing: bool = False, mx: str = "*.example.com") -> TLSPolicy:
    """An MTA-STS policy of C{example.com} as the MTA-STS source gives it."""
    return TLSPolicy(
        "verify",
        matchNames=(mx,),
        source="mta-sts",
        testing=testing,
        policyDomain="example.com",
    )


class _Base(TestCase):
    def setUp(self) -> None:
        self.pki = pki(os.path.abspath(self.mktemp()))
        self.store = MemoryContentStore()
        self.store.contents["S1"] = BODY
        self.sink = MemorySink()
        self.log = Logger("smtpc", sink=self.sink)

    def agent(self, policies: TLSPolicies, **kw: Any) -> DeliveryAgent:
        creator = ClientTLSCreator(caFile=self.pki.caFile)
        kw.setdefault("ioTimeout", 5)
        return DeliveryAgent(
            self.store,
            defaultDeliverySettings(heloName="client.test", tlsCreator=creator, **kw),
            reactor,
            logger=self.log,
            policies=policies,
        )

    def policies(self, level: str = "may", **kw: Any) -> TLSPolicies:
        return TLSPolicies(level, log=self.log, **kw)

    def transaction(self, *ports: int, **extra: Any) -> Dict[str, Any]:
        t = {
            "id": "C0100000001000000",
            "ss_ta": "S1",
            "sender": "sender@client.test",
            "recipients": [{"address": "user@example.com", "index": 0}],
            "routes": [
                {
                    "mailer": "esmtp",
                    "host": extra.pop("host", MX),
                    "address": "127.0.0.1",
                    "port": port,
                    "preference": 10 + i,
                }
                for i, port in enumerate(ports)
            ],
            "size": len(BODY),
            "bodyType": "7BIT",
        }
        t.update(extra)
        return t

    @defer.inlineCallbacks
    def deliver(self, policies: TLSPolicies, *ports: int, **extra: Any) -> Any:
        agent = self.agent(policies)
        [result] = yield agent.deliver(self.transaction(*ports, **extra))
        return result

    def dane(self, level: str, records: List[tuple], signed: bool = True) -> Any:
        port, stop, server = startDNSServerWithLog(
            {"_25._tcp." + MX: records}, signed=["example.com"] if signed else []
        )
        self.addCleanup(stop)
        self.dnsServer = server
        dns = DNSResolver(reactor, ["127.0.0.1:%d" % (port,)], 5, False)
        self.addCleanup(dns.close)
        return self.policies(level, dns=dns)

    def failed(self) -> List[Dict[str, str]]:
        return recordsOf(self.sink.lines(), "tls_policy_failed")

    def ok(self) -> List[Dict[str, str]]:
        return recordsOf(self.sink.lines(), "tls_policy_ok")

    def assertDelivered(self, result: Dict[str, Any], factory: Any, tls: bool) -> None:
        self.assertEqual(result["status"], "ok", result)
        [(overTLS, mail, lines)] = factory.messages
        self.assertEqual(overTLS, tls)
        self.assertIn(b"secret", lines)

    def assertDeferred(
        self,
        result: Dict[str, Any],
        factory: Any,
        status: str,
        resultType: str,
        policy: str,
    ) -> None:
        """
        Deferred with C{status}, one C{tls_policy_failed} record of
        C{resultType}, no message and no mail command in clear.
        """
        self.assertEqual(result["status"], "temp", result)
        self.assertEqual(result["reply"].split()[1], status, result)
        self.assertEqual(factory.messages, [])
        self.assertEqual(clearMail(factory), [])
        [record] = self.failed()
        self.assertEqual(record["result_type"], resultType, record)
        self.assertEqual(record["policy"], policy)
        self.assertEqual(record["domain"], "example.com")
        self.assertEqual(record["mx"], MX)
        self.assertEqual(record["ip"], "127.0.0.1")
        self.assertEqual(record["sev"], "WARN")


class LevelTests(_Base):
    """
    C{tls_security_level} against a correct receiver, one with a wrong
    name, one with an untrusted or expired certificate, and one that
    offers no STARTTLS.
    """

    @defer.inlineCallbacks
    def test_may(self) -> Any:
        """
        C{may}: TLS when offered, any certificate; clear text when not
        offered; no policy records.
        """
        port, factory = listenReceiver(self, self.pki.context("untrusted"))
        result = yield self.deliver(self.policies("may"), port)
        self.assertDelivered(result, factory, tls=True)
        port, plain = listenReceiver(self, None)
        result = yield self.deliver(self.policies("may"), port)
        self.assertDelivered(result, plain, tls=False)
        self.assertEqual(self.failed() + self.ok(), [])

    @defer.inlineCallbacks
    def test_none(self) -> Any:
        """
        C{none}: no STARTTLS even where offered.
        """
        port, factory = listenReceiver(self, self.pki.context("good"))
        result = yield self.deliver(self.policies("none"), port)
        self.assertDelivered(result, factory, tls=False)
        self.assertNotIn(b"STARTTLS", [line for _, line in factory.commands])

    @defer.inlineCallbacks
    def test_encrypt(self) -> Any:
        """
        C{encrypt}: any certificate will do, but TLS it must be.
        """
        port, factory = listenReceiver(self, self.pki.context("wrongname"))
        result = yield self.deliver(self.policies("encrypt"), port)
        self.assertDelivered(result, factory, tls=True)
        [ok] = self.ok()
        self.assertEqual(ok["policy"], "encrypt")

    @defer.inlineCallbacks
    def test_encryptNoStartTLS(self) -> Any:
        """
        C{encrypt} and a receiver without STARTTLS: 4.7.4, nothing in
        clear.
        """
        port, factory = listenReceiver(self, None)
        result = yield self.deliver(self.policies("encrypt"), port)
        self.assertDeferred(
            result, factory, "4.7.4", "starttls-not-supported", "encrypt"
        )

    @defer.inlineCallbacks
    def test_verify(self) -> Any:
        """
        C{verify}: the receiver with a trusted certificate for the MX host
        name gets the mail; the record names smx's own address of the
        session (C{local_ip}, the TLS report's C{sending-mta-ip}).
        """
        port, factory = listenReceiver(self, self.pki.context("good"))
        result = yield self.deliver(self.policies("verify"), port)
        self.assertDelivered(result, factory, tls=True)
        [ok] = self.ok()
        self.assertEqual((ok["policy"], ok["mx"]), ("verify", MX))
        self.assertEqual(ok["local_ip"], "127.0.0.1")

    @defer.inlineCallbacks
    def test_verifyWrongName(self) -> Any:
        """
        C{verify} and a certificate for another name: 4.7.5
        C{certificate-host-mismatch}, the record naming smx's address of
        the session (C{local_ip}).
        """
        port, factory = listenReceiver(self, self.pki.context("wrongname"))
        result = yield self.deliver(self.policies("verify"), port)
        self.assertDeferred(
            result, factory, "4.7.5", "certificate-host-mismatch", "verify"
        )
        [record] = self.failed()
        self.assertEqual(record["local_ip"], "127.0.0.1")

    @defer.inlineCallbacks
    def test_verifyUntrusted(self) -> Any:
        """
        C{verify} and a certificate of another CA: 4.7.5
        C{certificate-not-trusted}.
        """
        port, factory = listenReceiver(self, self.pki.context("untrusted"))
        result = yield self.deliver(self.policies("verify"), port)
        self.assertDeferred(
            result, factory, "4.7.5", "certificate-not-trusted", "verify"
        )

    @defer.inlineCallbacks
    def test_verifyExpired(self) -> Any:
        """
        C{verify} and an expired certificate: C{certificate-expired}.
        """
        port, factory = listenReceiver(self, self.pki.context("expired"))
        result = yield self.deliver(self.policies("verify"), port)
        self.assertDeferred(result, factory, "4.7.5", "certificate-expired", "verify")

    @defer.inlineCallbacks
    def test_verifyNoStartTLS(self) -> Any:
        """
        C{verify} and no STARTTLS: 4.7.4.
        """
        port, factory = listenReceiver(self, None)
        result = yield self.deliver(self.policies("verify"), port)
        self.assertDeferred(
            result, factory, "4.7.4", "starttls-not-supported", "verify"
        )

    @defer.inlineCallbacks
    def test_nextRoute(self) -> Any:
        """
        A route whose receiver fails the policy is skipped for the next
        one, which gets the mail.
        """
        badPort, bad = listenReceiver(self, self.pki.context("wrongname"))
        goodPort, good = listenReceiver(self, self.pki.context("good"))
        result = yield self.deliver(self.policies("verify"), badPort, goodPort)
        self.assertDelivered(result, good, tls=True)
        self.assertEqual((bad.messages, clearMail(bad)), ([], []))
        self.assertEqual(len(self.failed()), 1)

    @defer.inlineCallbacks
    def test_handshakeFails(self) -> Any:
        """
        A receiver that offers STARTTLS but cannot do TLS 1.2: under
        C{encrypt} a 4.7.5 C{validation-failure}, never clear text.
        """
        from OpenSSL import SSL

        context = self.pki.context("good")
        context.ctx.set_max_proto_version(SSL.TLS1_1_VERSION)
        port, factory = listenReceiver(self, context)
        result = yield self.deliver(self.policies("encrypt"), port)
        self.assertDeferred(result, factory, "4.7.5", "validation-failure", "encrypt")

    @defer.inlineCallbacks
    def test_handshakeFailsMay(self) -> Any:
        """
        Under C{may}, a handshake that fails defers the mail (never clear
        text), with OpenSSL's reason in words (C{TLS error: ...}), not
        the repr of its error list.
        """
        from OpenSSL import SSL

        context = self.pki.context("good")
        context.ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
        port, factory = listenReceiver(self, context)
        agent = DeliveryAgent(
            self.store,
            defaultDeliverySettings(
                heloName="client.test",
                tlsCreator=ClientTLSCreator(
                    caFile=self.pki.caFile, minProtocol="TLSv1.3"
                ),
                ioTimeout=5,
            ),
            reactor,
            logger=self.log,
            policies=self.policies("may"),
        )
        [result] = yield agent.deliver(self.transaction(port))
        self.assertEqual(result["status"], "temp", result)
        self.assertEqual((factory.messages, clearMail(factory)), ([], []))
        self.assertIn("connection lost: TLS error: ", result["reply"])
        self.assertIn("protocol version", result["reply"])
        self.assertNotIn("[(", result["reply"])


class MapTests(_Base):
    """
    The policy map in Postfix syntax: C{secure} with match names,
    C{fingerprint}, per-domain levels by the §5.11.1 lookup order.
    """

    def policies(self, level: str = "may", **kw: Any) -> TLSPolicies:
        path = os.path.abspath(self.mktemp()) + ".db"
        good, key = certificateFingerprints(self.pki.leaf("good"))
        colons = ":".join(good[i : i + 2] for i in range(0, 64, 2)).upper()
        createMap(
            path,
            [
                "example.com secure match=.example.com\n",
                ".example.com fingerprint match=%s\n" % (colons,),
                "example.org fingerprint match=%s\n" % (key,),
                "example.net secure match=nowhere.example.net\n",
            ],
        )
        policyMap = PolicyMap(path, self.log)
        self.addCleanup(policyMap.close)
        return TLSPolicies(level, policyMap, log=self.log, **kw)

    def transactionFor(self, domain: str, port: int) -> Dict[str, Any]:
        t = self.transaction(port)
        t["recipients"] = [{"address": "user@" + domain, "index": 0}]
        return t

    @defer.inlineCallbacks
    def test_secure(self) -> Any:
        """
        C{secure match=.example.com}: a trusted certificate below the
        domain is good.
        """
        port, factory = listenReceiver(self, self.pki.context("good"))
        result = yield self.deliver(self.policies(), port)
        self.assertDelivered(result, factory, tls=True)
        self.assertEqual(self.ok()[0]["policy"], "secure")

    @defer.inlineCallbacks
    def test_secureMismatch(self) -> Any:
        """
        C{secure} whose match names the certificate does not have.
        """
        port, factory = listenReceiver(self, self.pki.context("good"))
        agent = self.agent(self.policies())
        [result] = yield agent.deliver(self.transactionFor("example.net", port))
        self.assertEqual(result["status"], "temp")
        self.assertIn("4.7.5", result["reply"])
        self.assertEqual(factory.messages, [])
        self.assertEqual(self.failed()[0]["result_type"], "certificate-host-mismatch")

    @defer.inlineCallbacks
    def test_fingerprint(self) -> Any:
        """
        C{fingerprint} of the certificate (subdomain entry) or of its
        public key: no CA needed; another certificate is refused.
        """
        port, good = listenReceiver(self, self.pki.context("good"))
        agent = self.agent(self.policies())
        for domain in ("sub.example.com", "example.org"):
            [result] = yield agent.deliver(self.transactionFor(domain, port))
            self.assertEqual(result["status"], "ok", result)
        self.assertEqual(len(good.messages), 2)
        port, other = listenReceiver(self, self.pki.context("untrusted"))
        [result] = yield agent.deliver(self.transactionFor("sub.example.com", port))
        self.assertEqual(result["status"], "temp")
        self.assertIn("4.7.5", result["reply"])
        self.assertEqual((other.messages, clearMail(other)), ([], []))
        self.assertEqual(self.failed()[0]["policy"], "fingerprint")

    @defer.inlineCallbacks
    def test_domains(self) -> Any:
        """
        Recipients of domains with different policies in one delivery
        transaction are delivered under each one's own policy.
        """
        port, factory = listenReceiver(self, None)
        t = self.transaction(port)
        t["recipients"] = [
            {"address": "a@plain.test", "index": 0},
            {"address": "b@example.com", "index": 1},
            {"address": "c@plain.test", "index": 2},
        ]
        results = yield self.agent(self.policies()).deliver(t)
        self.assertEqual(
            [(r["address"], r["status"]) for r in results],
            [("a@plain.test", "ok"), ("b@example.com", "temp"), ("c@plain.test", "ok")],
        )
        [(tls, mail, lines)] = factory.messages
        self.assertFalse(tls)
        rcpts = [line for _, line in factory.commands if line.startswith(b"RCPT")]
        self.assertEqual(rcpts, [b"RCPT TO:<a@plain.test>", b"RCPT TO:<c@plain.test>"])

    @defer.inlineCallbacks
    def test_reload(self) -> Any:
        """
        L{DeliveryAgent.reload} (SIGUSR1) reads a map changed on disk.
        """
        path = os.path.abspath(self.mktemp()) + ".db"
        createMap(path, ["example.com encrypt\n"])
        policyMap = PolicyMap(path, self.log)
        self.addCleanup(policyMap.close)
        agent = self.agent(TLSPolicies("may", policyMap, log=self.log))
        port, factory = listenReceiver(self, None)
        [result] = yield agent.deliver(self.transaction(port))
        self.assertEqual(result["status"], "temp")
        createMap(path, ["example.com may\n"])
        agent.reload()
        [result] = yield agent.deliver(self.transaction(port))
        self.assertDelivered(result, factory, tls=False)

    @defer.inlineCallbacks
    def test_mapMissing(self) -> Any:
        """
        A policy map that cannot be read defers its recipients: nothing
        is sent under a weaker policy.
        """
        port, factory = listenReceiver(self, None)
        policies = TLSPolicies(
            "may", PolicyMap(os.path.abspath(self.mktemp()) + ".db", self.log)
        )
        result = yield self.deliver(policies, port)
        self.assertEqual(result["status"], "temp")
        self.assertIn("4.3.0", result["reply"])
        self.assertEqual(factory.commands, [])


class DANETests(_Base):
    """
    DANE (RFC 7672) with a real DNS server that serves TLSA records and
    says which zones are signed.
    """

    @defer.inlineCallbacks
    def test_daneEE(self) -> Any:
        """
        C{3 1 1} and C{3 0 1} of the receiver's own certificate: delivered,
        whatever its issuer; the query asked for AD and DO.
        """
        for selector in (1, 0):
            leaf = self.pki.leaf("untrusted")
            policies = self.dane(
                "dane", [("TLSA", 3, selector, 1, tlsaHex(leaf, selector))]
            )
            port, factory = listenReceiver(self, self.pki.context("untrusted"))
            result = yield self.deliver(policies, port)
            self.assertDelivered(result, factory, tls=True)
        self.assertTrue(all(ok["policy"] == "dane" for ok in self.ok()))
        self.assertIn(("_25._tcp." + MX, True, True), self.dnsServer.flags)

    @defer.inlineCallbacks
    def test_daneTA(self) -> Any:
        """
        C{2 1 1} and C{2 0 1} of the CA the receiver sends in its chain.
        """
        for selector in (1, 0):
            policies = self.dane(
                "dane-only",
                [("TLSA", 2, selector, 1, tlsaHex(self.pki.root, selector))],
            )
            port, factory = listenReceiver(self, self.pki.context("good", True))
            result = yield self.deliver(policies, port)
            self.assertDelivered(result, factory, tls=True)

    @defer.inlineCallbacks
    def test_daneTAWrongName(self) -> Any:
        """
        C{2 x x} and a certificate for another name: deferred.
        """
        policies = self.dane("dane", [("TLSA", 2, 1, 1, tlsaHex(self.pki.root))])
        port, factory = listenReceiver(self, self.pki.context("wrongname", True))
        result = yield self.deliver(policies, port)
        self.assertDeferred(
            result, factory, "4.7.5", "certificate-host-mismatch", "dane"
        )

    @defer.inlineCallbacks
    def test_tlsaMismatch(self) -> Any:
        """
        TLSA records that do not match the receiver's certificate: 4.7.5
        C{tlsa-invalid}, though the certificate is trusted and has the
        right name.
        """
        other = self.pki.leaf("untrusted")
        policies = self.dane("dane", [("TLSA", 3, 1, 1, tlsaHex(other))])
        port, factory = listenReceiver(self, self.pki.context("good"))
        result = yield self.deliver(policies, port)
        self.assertDeferred(result, factory, "4.7.5", "tlsa-invalid", "dane")

    @defer.inlineCallbacks
    def test_tlsaNoStartTLS(self) -> Any:
        """
        An MX with usable TLSA records that offers no STARTTLS: 4.7.4.
        """
        leaf = self.pki.leaf("good")
        policies = self.dane("dane", [("TLSA", 3, 1, 1, tlsaHex(leaf))])
        port, factory = listenReceiver(self, None)
        result = yield self.deliver(policies, port)
        self.assertDeferred(result, factory, "4.7.4", "starttls-not-supported", "dane")

    @defer.inlineCallbacks
    def test_unsigned(self) -> Any:
        """
        C{dane}: TLSA records in a zone that is not signed (no AD bit)
        do not count: opportunistic TLS, delivered in clear where no
        STARTTLS is offered.
        """
        other = self.pki.leaf("untrusted")
        policies = self.dane("dane", [("TLSA", 3, 1, 1, tlsaHex(other))], signed=False)
        port, factory = listenReceiver(self, None)
        result = yield self.deliver(policies, port)
        self.assertDelivered(result, factory, tls=False)

    @defer.inlineCallbacks
    def test_daneOnlyWithout(self) -> Any:
        """
        C{dane-only} and an MX without TLSA records: not even connected
        to (C{dane-required}).
        """
        policies = self.dane("dane-only", [("A", "127.0.0.1")])
        port, factory = listenReceiver(self, self.pki.context("good"))
        result = yield self.deliver(policies, port)
        self.assertDeferred(result, factory, "4.7.5", "dane-required", "dane-only")
        self.assertEqual(factory.connections, [])


class SourceTests(_Base):
    """
    A policy source (MTA-STS) in enforce and testing mode, and DANE
    winning over it.
    """

    @defer.inlineCallbacks
    def test_enforce(self) -> Any:
        """
        Enforce: verified TLS to the MX; an untrusted certificate is
        deferred with C{policy=mta-sts}.
        """
        source = FakeSource({"example.com": stsPolicy()})
        port, good = listenReceiver(self, self.pki.context("good"))
        result = yield self.deliver(self.policies(sources=[source]), port)
        self.assertDelivered(result, good, tls=True)
        self.assertEqual(self.ok()[0]["policy"], "mta-sts")
        port, bad = listenReceiver(self, self.pki.context("untrusted"))
        result = yield self.deliver(self.policies(sources=[source]), port)
        self.assertDeferred(result, bad, "4.7.5", "certificate-not-trusted", "mta-sts")

    @defer.inlineCallbacks
    def test_daneWins(self) -> Any:
        """
        A domain with an MTA-STS policy and DNSSEC-validated TLSA records
        for its MX host: DANE decides (RFC 8461 section 2), at level
        C{may} too: a certificate of another CA that matches the TLSA
        record is good, a trusted one that does not is not.
        """
        source = FakeSource({"example.com": stsPolicy()})
        leaf = self.pki.leaf("untrusted")
        policies = self.dane("may", [("TLSA", 3, 1, 1, tlsaHex(leaf))])
        policies.sources = [source]
        port, factory = listenReceiver(self, self.pki.context("untrusted"))
        result = yield self.deliver(policies, port)
        self.assertDelivered(result, factory, tls=True)
        self.assertEqual(self.ok()[0]["policy"], "dane")
        port, good = listenReceiver(self, self.pki.context("good"))
        result = yield self.deliver(policies, port)
        self.assertDeferred(result, good, "4.7.5", "tlsa-invalid", "dane")

    @defer.inlineCallbacks
    def test_enforceMXNotListed(self) -> Any:
        """
        Enforce: an MX host the policy does not list is not connected to.
        """
        source = FakeSource({"example.com": stsPolicy(mx="mail.example.org")})
        port, factory = listenReceiver(self, self.pki.context("good"))
        result = yield self.deliver(self.policies(sources=[source]), port)
        self.assertEqual(result["status"], "temp")
        self.assertEqual(factory.connections, [])
        self.assertEqual(self.failed()[0]["result_type"], "validation-failure")

    @defer.inlineCallbacks
    def test_testing(self) -> Any:
        """
        Testing: failures are logged (C{testing=1}) and the mail goes as
        with the configured policy.
        """
        source = FakeSource({"example.com": stsPolicy(testing=True)})
        port, factory = listenReceiver(self, self.pki.context("untrusted"))
        result = yield self.deliver(self.policies(sources=[source]), port)
        self.assertDelivered(result, factory, tls=True)
        [record] = self.failed()
        self.assertEqual(
            (record["testing"], record["result_type"], record["policy"]),
            ("1", "certificate-not-trusted", "mta-sts"),
        )
        self.assertEqual(self.ok(), [])
        port, good = listenReceiver(self, self.pki.context("good"))
        result = yield self.deliver(self.policies(sources=[source]), port)
        self.assertDelivered(result, good, tls=True)
        [ok] = self.ok()
        self.assertEqual((ok["testing"], ok["policy"]), ("1", "mta-sts"))
        port, plain = listenReceiver(self, None)
        result = yield self.deliver(self.policies(sources=[source]), port)
        self.assertDelivered(result, plain, tls=False)
        self.assertEqual(self.failed()[1]["result_type"], "starttls-not-supported")


class TLSRequiredNoTests(_Base):
    """
    C{TLS-Required: No} (RFC 8689 section 4.1): the recipient domain's
    policies are ignored, the configured ones are not.
    """

    @defer.inlineCallbacks
    def test_mtaStsIgnored(self) -> Any:
        """
        An MTA-STS policy in enforce mode does not stop delivery to a
        receiver with an untrusted certificate.
        """
        source = FakeSource({"example.com": stsPolicy()})
        port, factory = listenReceiver(self, self.pki.context("untrusted"))
        result = yield self.deliver(
            self.policies(sources=[source]), port, tlsRequiredNo=True
        )
        self.assertDelivered(result, factory, tls=True)
        self.assertEqual(self.failed(), [])

    @defer.inlineCallbacks
    def test_daneIgnored(self) -> Any:
        """
        TLSA records that do not match do not stop delivery (C{dane-only}
        acts as C{may}).
        """
        other = self.pki.leaf("untrusted")
        policies = self.dane("dane-only", [("TLSA", 3, 1, 1, tlsaHex(other))])
        port, factory = listenReceiver(self, self.pki.context("good"))
        result = yield self.deliver(policies, port, tlsRequiredNo=True)
        self.assertDelivered(result, factory, tls=True)

    @defer.inlineCallbacks
    def test_configuredKept(self) -> Any:
        """
        The configured level still applies.
        """
        port, factory = listenReceiver(self, None)
        result = yield self.deliver(self.policies("encrypt"), port, tlsRequiredNo=True)
        self.assertEqual(result["status"], "temp")
        self.assertEqual(clearMail(factory), [])


class RequireTLSTests(_Base):
    """
    A transaction received with REQUIRETLS (RFC 8689).
    """

    @defer.inlineCallbacks
    def test_delivered(self) -> Any:
        """
        A verified receiver that offers REQUIRETLS gets the message with
        C{MAIL ... REQUIRETLS}, whatever the configured level.
        """
        port, factory = listenReceiver(self, self.pki.context("good"), True)
        result = yield self.deliver(self.policies("may"), port, requiretls=True)
        self.assertDelivered(result, factory, tls=True)
        self.assertTrue(factory.messages[0][1].endswith(b" REQUIRETLS"))

    @defer.inlineCallbacks
    def test_notOffered(self) -> Any:
        """
        A receiver that does not offer REQUIRETLS: a permanent 5.7.30
        failure, no MAIL.
        """
        port, factory = listenReceiver(self, self.pki.context("good"), False)
        result = yield self.deliver(self.policies("may"), port, requiretls=True)
        self.assertEqual(result["status"], "perm")
        self.assertIn("5.7.30", result["reply"])
        self.assertEqual(factory.messages, [])

    @defer.inlineCallbacks
    def test_untrusted(self) -> Any:
        """
        An untrusted certificate: a permanent 5.7.10 failure (bounced),
        nothing sent; so is a receiver without STARTTLS, even with level
        C{none}.
        """
        port, factory = listenReceiver(self, self.pki.context("untrusted"), True)
        result = yield self.deliver(self.policies("may"), port, requiretls=True)
        self.assertEqual(result["status"], "perm")
        self.assertTrue(result["reply"].startswith("550 5.7.10"), result)
        self.assertEqual(factory.messages, [])
        port, plain = listenReceiver(self, None)
        result = yield self.deliver(self.policies("none"), port, requiretls=True)
        self.assertEqual(result["status"], "perm")
        self.assertEqual((plain.messages, clearMail(plain)), ([], []))
