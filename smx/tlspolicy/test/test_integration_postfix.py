# -*- test-case-name: smx.tlspolicy.test.test_integration_postfix -*-
"""
Integration test of SMTPC's TLS policy as a user runs smx: C{twistd -n
smx} relays mail from swaks by MX to a private Postfix (Debian package
postfix, /work/shared/PEERS.md) whose smtpd listens on three loopback
addresses: 127.0.0.2 with STARTTLS and a certificate for
C{mx.example.com} from a test CA (made at test time with trustme, the CA
in the chain it sends), 127.0.0.3 with a certificate for another name,
127.0.0.4 without STARTTLS.  A Twisted Names server on 127.0.0.1 serves
the MX, A and TLSA records and calls the zone C{example.com} signed (AD
bit).  smx runs with C{tls_security_level = verify} and a
C{tls_policy_map} made with C{smx createmap}.
"""

from __future__ import annotations

import os
from typing import Any, List

from twisted.internet import defer
from twisted.trial.unittest import SkipTest

from smx.maps.test.dnsserver import startDNSServer
from smx.test.mta import (
    SWAKS,
    MTATestCase,
    configuration,
    freePort,
    swaks,
    until,
)
from smx.test.postfix import POSTFIX, VIRTUAL_MAILBOX, PrivatePostfix
from smx.tlspolicy.test.receiver import TestPKI, tlsaHex


def privatePostfix(testCase: Any, root: str, pki: TestPKI) -> PrivatePostfix:
    """
    A private Postfix storing the mail of the test domains in its mailbox,
    with STARTTLS on three listeners of one port: 127.0.0.2 with the good
    certificate, 127.0.0.3 with one for a wrong name, 127.0.0.4 without
    STARTTLS.
    """
    port = freePort("127.0.0.2")
    goodCert, goodKey = pki.files("good", withRoot=True)
    wrongCert, wrongKey = pki.files("wrongname")

    def listeners(fields: List[str]) -> List[List[str]]:
        good = ["127.0.0.2:%d" % (port,)] + fields[1:]
        wrong = ["127.0.0.3:%d" % (port,)] + fields[1:]
        wrong += [
            "-o smtpd_tls_cert_file=" + wrongCert,
            "-o smtpd_tls_key_file=" + wrongKey,
        ]
        plain = ["127.0.0.4:%d" % (port,)] + fields[1:]
        plain += ["-o smtpd_tls_security_level=none"]
        return [good, wrong, plain]

    settings = (
        "virtual_mailbox_domains = good.test, wrong.test, plain.test, "
        "verify.test,\n    dane.test, danebad.test, insecure.test\n"
        + VIRTUAL_MAILBOX % dict(root=root)
        + "smtpd_tls_security_level = may\n"
        "smtpd_tls_cert_file = %s\n"
        "smtpd_tls_key_file = %s\n"
        "smtpd_tls_loglevel = 1\n" % (goodCert, goodKey)
    )
    return PrivatePostfix(testCase, root, port, settings, listeners)


class PostfixTests(MTATestCase):
    """
    Each level against Postfix: delivered where the policy allows, and
    deferred with the right status and record everywhere else, nothing
    sent in clear.
    """

    def setUp(self) -> None:
        MTATestCase.setUp(self)
        if not os.access(POSTFIX, os.X_OK) or os.geteuid() != 0:
            raise SkipTest("needs Postfix (Debian package postfix) and root")
        self.need(SWAKS)
        self.pki = TestPKI(os.path.join(self.root, "certs"))
        self.postfix = privatePostfix(self, os.path.join(self.root, "pf"), self.pki)
        good = self.pki.leaf("good")
        other = self.pki.leaf("untrusted")
        dnsPort, stopDNS = startDNSServer(
            {
                "good.test": [("MX", 10, "mx.example.com")],
                "wrong.test": [("MX", 10, "mx3.example.com")],
                "plain.test": [("MX", 10, "mx4.example.com")],
                "verify.test": [("MX", 10, "mx4.example.com")],
                "dane.test": [("MX", 10, "mx.example.com")],
                "danebad.test": [("MX", 10, "mx5.example.com")],
                "insecure.test": [("MX", 10, "mx.example.com")],
                "mx.example.com": [("A", "127.0.0.2")],
                "mx3.example.com": [("A", "127.0.0.3")],
                "mx4.example.com": [("A", "127.0.0.4")],
                "mx5.example.com": [("A", "127.0.0.2")],
                "_25._tcp.mx.example.com": [
                    ("TLSA", 3, 1, 1, tlsaHex(good)),
                    ("TLSA", 2, 0, 1, tlsaHex(self.pki.root, 0)),
                ],
                "_25._tcp.mx5.example.com": [("TLSA", 3, 1, 1, tlsaHex(other))],
            },
            signed=["example.com", "dane.test", "danebad.test"],
        )
        self.addCleanup(stopDNS)
        self.mta.write(
            configuration(
                self.mta.port,
                smar='nameserver = { "127.0.0.1:%d" };' % (dnsPort,),
                smtpc="remote_port = %d; tls_security_level = verify;\n"
                '    tls_policy_map = "tls_policy.db";\n'
                '    tls { CAcert_file = "%s"; }'
                % (self.postfix.port, self.pki.caFile),
            ),
            mt="",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.createmap(
            "tls_policy",
            "plain.test may\ndane.test dane-only\n.danebad.test dane\n"
            "danebad.test dane\ninsecure.test dane-only\n",
        )

    def smtpcLines(self, text: str) -> List[str]:
        return [line for line in self.mta.records("smtpc") if text in line]

    @defer.inlineCallbacks
    def test_levels(self) -> Any:
        """
        C{verify} to the right certificate, C{may} to a server without
        STARTTLS, C{dane-only} with matching TLSA records: delivered.
        C{verify} to a certificate for another name (4.7.5
        C{certificate-host-mismatch}), C{verify} to a server without
        STARTTLS (4.7.4), C{dane} with TLSA records that do not match
        (4.7.5 C{tlsa-invalid}), C{dane-only} for a domain whose MX
        records are not DNSSEC-validated (4.7.5 C{dane-required}):
        deferred, Postfix gets no MAIL.
        """
        self.postfix.start()
        self.mta.start()
        self.addCleanup(self.mta.stop)
        domains = ["good", "wrong", "plain", "verify", "dane", "danebad", "insecure"]
        for domain in domains:
            out, err, status = yield swaks(
                self.mta.port,
                "--from",
                "a@client.test",
                "--to",
                "u@%s.test" % (domain,),
                "--header",
                "Subject: to %s" % (domain,),
            )
            self.assertEqual(status, 0, out)

        def settled() -> bool:
            return len(self.postfix.mailbox()) >= 3 and all(
                self.smtpcLines("domain=%s.test" % (d,))
                for d in ("wrong", "verify", "danebad", "insecure")
            )

        ok = yield until(settled, 15)
        self.assertTrue(ok, self.mta.log() + self.postfix.report())
        subjects = sorted(
            m.split(b"Subject: to ", 1)[1].split(b"\n", 1)[0].strip()
            for m in self.postfix.mailbox()
        )
        self.assertEqual(subjects, [b"dane", b"good", b"plain"])
        for domain, resultType, status in [
            ("wrong", "certificate-host-mismatch", "4.7.5"),
            ("verify", "starttls-not-supported", "4.7.4"),
            ("danebad", "tlsa-invalid", "4.7.5"),
            ("insecure", "dane-required", "4.7.5"),
        ]:
            [record] = self.smtpcLines("domain=%s.test" % (domain,))[:1]
            self.assertIn("func=tls_policy_failed", record)
            self.assertIn("result_type=" + resultType, record)
            self.assertTrue(self.smtpcLines("reply=451 " + status), status)
        ok = self.smtpcLines("func=tls_policy_ok")
        self.assertTrue(any("policy=dane," in line for line in ok), ok)
        self.assertTrue(any("policy=verify," in line for line in ok), ok)
        log = self.postfix.log()
        for domain in ("wrong", "verify", "danebad", "insecure"):
            self.assertNotIn("RCPT TO:<u@%s.test>" % (domain,), log)
        self.assertIn("RCPT TO:<u@plain.test>", log)
        self.assertIn("TLS connection established from", log)
