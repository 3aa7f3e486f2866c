# -*- test-case-name: smx.mail.test.test_policyhooks -*-
"""
Tests for L{smx.mail.policyhooks}: SMTPS asking fake Postfix policy
servers (L{smx.milter.policytesting.FakePolicyClient}) over a
L{StringTransport} with a L{Clock}; the tests against real postgrey and
policyd-spf through a real C{twistd smx} are in
L{smx.mail.test.test_integration_policyservers}.
"""

from twisted.trial import unittest

from smx.mail.test.test_smtps import Harness
from smx.milter.policytesting import FakePolicyClient

HEAD = b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\n"
TRANSACTION = HEAD + b"RCPT TO:<u@local.test>\r\nDATA\r\n"
MESSAGE = b"Subject: x\r\n\r\nx\r\n.\r\n"


class HookTests(unittest.TestCase):
    """
    The decisions of policy servers as SMTPS applies them.
    """

    def harness(self, *servers, stage="RCPT", stages=None, **settings):
        h = Harness(**settings)
        h.factory.policyServers = stages or {stage: list(servers)}
        return h

    def send(self, h, *lines):
        h.connect()
        return h.send(b"".join(lines))

    def test_attributes(self):
        """
        A RCPT request carries the session's and the transaction's
        attributes; the instance is the transaction id, the same for each
        request of a transaction, another one for the next transaction.
        """
        fake = FakePolicyClient("fake")
        h = self.harness(fake)
        out = self.send(
            h,
            HEAD,
            b"RCPT TO:<u@local.test>\r\nRCPT TO:<v@local.test>\r\nRSET\r\n",
            b"MAIL FROM:<>\r\nRCPT TO:<u@local.test>\r\n",
        )
        self.assertEqual(out.count(b"250 2.1.5"), 3, out)
        first, second, third = fake.requests
        self.assertEqual(first["request"], "smtpd_access_policy")
        self.assertEqual(first["protocol_state"], "RCPT")
        self.assertEqual(first["protocol_name"], "ESMTP")
        self.assertEqual(first["helo_name"], "client.test")
        self.assertEqual(first["client_address"], "10.1.2.3")
        self.assertEqual(first["client_port"], "40000")
        self.assertEqual(first["sender"], "a@b.test")
        self.assertEqual(first["recipient"], "u@local.test")
        self.assertEqual(second["recipient"], "v@local.test")
        self.assertIn(
            "ss_ta=%s, mail=<a@b.test>" % first["instance"], "\n".join(h.sink.lines())
        )
        self.assertEqual(first["instance"], second["instance"])
        self.assertEqual(first["queue_id"], first["instance"])
        self.assertNotEqual(third["instance"], first["instance"])
        self.assertEqual(third["sender"], "")

    def test_policyContext(self):
        """
        A policy's C{policy_context} is sent with each of its requests.
        """
        fake = FakePolicyClient("fake")
        other = FakePolicyClient("other")
        h = self.harness(fake, other)
        h.factory.policyContexts = {"fake": "mx-in\nx"}
        self.send(h, HEAD, b"RCPT TO:<u@local.test>\r\n")
        self.assertEqual(fake.requests[0]["policy_context"], "mx-in?x")
        self.assertEqual(other.requests[0]["policy_context"], "")

    def test_reject(self):
        """
        REJECT, DEFER and 5NN answer the recipient as Postfix does; the
        rejection is logged with the policy's name; the session goes on.
        """
        fake = FakePolicyClient("fake")
        answers = {
            "no@local.test": "REJECT Go away",
            "later@local.test": "DEFER",
            "spf@local.test": "550 5.7.23 SPF fail",
        }
        fake.answers["RCPT"] = lambda request: answers.get(request["recipient"], "OK")
        h = self.harness(fake)
        out = self.send(
            h,
            HEAD,
            b"RCPT TO:<no@local.test>\r\nRCPT TO:<later@local.test>\r\n",
            b"RCPT TO:<spf@local.test>\r\nRCPT TO:<u@local.test>\r\n",
        )
        self.assertIn(
            b"554 5.7.1 <no@local.test>: Recipient address rejected: Go away\r\n", out
        )
        self.assertIn(
            b"450 4.7.1 <later@local.test>: Recipient address rejected: "
            b"Access denied\r\n",
            out,
        )
        self.assertIn(b"550 5.7.23 <spf@local.test>: Recipient address rejected", out)
        self.assertTrue(out.endswith(b"<u@local.test>... Recipient ok\r\n"), out)
        log = "\n".join(h.sink.lines())
        self.assertIn("rcpt=<no@local.test>, stat=554", log)
        self.assertIn("policy=fake", log)

    def test_deferIfPermit(self):
        """
        DEFER_IF_PERMIT: 450 when the other policies accept; a REJECT of a
        later one stands.  DEFER_IF_REJECT turns a later 5xx into 450.
        """
        grey = FakePolicyClient("grey", {"RCPT": "DEFER_IF_PERMIT 4.2.0 Greylisted"})
        ok = FakePolicyClient("ok", {"RCPT": "DUNNO"})
        h = self.harness(grey, ok)
        out = self.send(h, HEAD, b"RCPT TO:<u@local.test>\r\n")
        self.assertIn(
            b"450 4.2.0 <u@local.test>: Recipient address rejected: Greylisted", out
        )
        no = FakePolicyClient("no", {"RCPT": "REJECT"})
        out = self.send(self.harness(grey, no), HEAD, b"RCPT TO:<u@local.test>\r\n")
        self.assertIn(b"554 5.7.1 ", out)
        maybe = FakePolicyClient("maybe", {"RCPT": "DEFER_IF_REJECT Not now"})
        out = self.send(self.harness(maybe, no), HEAD, b"RCPT TO:<u@local.test>\r\n")
        self.assertIn(b"450 4.7.1 <u@local.test>: Recipient address rejected: Not", out)

    def test_okStops(self):
        """OK accepts: the policies after it are not asked."""
        ok = FakePolicyClient("ok", {"RCPT": "OK"})
        no = FakePolicyClient("no", {"RCPT": "REJECT"})
        out = self.send(self.harness(ok, no), HEAD, b"RCPT TO:<u@local.test>\r\n")
        self.assertIn(b"250 2.1.5", out)
        self.assertEqual(no.requests, [])

    def test_relayStillDenied(self):
        """
        A policy's OK does not open a relay: smx's own relay check comes
        first, and a recipient it rejects is not asked about.
        """
        ok = FakePolicyClient("ok", {"RCPT": "OK"})
        out = self.send(self.harness(ok), HEAD, b"RCPT TO:<x@remote.test>\r\n")
        self.assertIn(b"550 5.7.1", out)
        self.assertEqual(ok.requests, [])

    def test_defaultAction(self):
        """
        A failed server's default action (tempfail): 451 4.3.5.
        """
        down = FakePolicyClient("down", {"RCPT": "nonsense"})
        out = self.send(self.harness(down), HEAD, b"RCPT TO:<u@local.test>\r\n")
        self.assertIn(b"451 4.3.5 <u@local.test>: Recipient address rejected: ", out)

    def test_prepend(self):
        """
        PREPEND headers (of CONNECT, RCPT and DATA) go into the queued
        message after smx's Received: header, which stays first.
        """
        fake = FakePolicyClient(
            "fake",
            {
                "CONNECT": "PREPEND X-Connect: yes",
                "RCPT": "PREPEND X-Greylist: delayed 1 seconds",
                "DATA": "PREPEND X-Data: 1",
            },
        )
        h = self.harness(stages={"CONNECT": [fake], "RCPT": [fake], "DATA": [fake]})
        self.send(h, TRANSACTION)
        out = h.send(MESSAGE)
        self.assertTrue(out.startswith(b"250 2.0.0 "), out)
        [content] = h.store.contents.values()
        lines = content.split(b"\r\n")
        self.assertTrue(lines[0].startswith(b"Received: "), lines)
        headers = [line for line in lines if line.startswith(b"X-")]
        self.assertEqual(
            headers,
            [b"X-Connect: yes", b"X-Greylist: delayed 1 seconds", b"X-Data: 1"],
        )
        self.assertEqual(
            [r["protocol_state"] for r in fake.requests], ["CONNECT", "RCPT", "DATA"]
        )

    def test_rejectedRecipientPrepends(self):
        """
        The PREPEND of a policy whose recipient a later one rejected is
        not added.
        """
        pre = FakePolicyClient("pre", {"RCPT": "PREPEND X-No: 1"})
        no = FakePolicyClient(
            "no",
            {"RCPT": lambda r: "REJECT" if r["recipient"] == "no@local.test" else "OK"},
        )
        h = self.harness(pre, no)
        self.send(h, HEAD, b"RCPT TO:<no@local.test>\r\nRCPT TO:<u@local.test>\r\n")
        h.send(b"DATA\r\n")
        h.send(MESSAGE)
        [content] = h.store.contents.values()
        self.assertEqual(content.count(b"X-No: 1"), 1)

    def test_discard(self):
        """
        DISCARD at RCPT: 250 to everything, nothing queued.
        """
        fake = FakePolicyClient("fake", {"RCPT": "DISCARD"})
        h = self.harness(fake)
        self.send(h, TRANSACTION)
        out = h.send(MESSAGE)
        self.assertTrue(out.startswith(b"250 2.0.0 "), out)
        self.assertEqual(h.qmgr.envelopes, [])

    def test_hold(self):
        """
        HOLD (here at RCPT): the message is accepted and goes to QMGR held
        (its quarantine names the policy and the text), as Postfix puts it
        on its hold queue; logged.
        """
        fake = FakePolicyClient("fake", {"RCPT": "HOLD spam?"})
        h = self.harness(fake)
        self.send(h, TRANSACTION)
        out = h.send(MESSAGE)
        self.assertTrue(out.startswith(b"250 2.0.0 "), out)
        [envelope] = h.qmgr.envelopes
        self.assertEqual(envelope["quarantine"], "policy fake: HOLD spam?")
        self.assertIn("policy=fake, hold=1", "\n".join(h.sink.lines()))

    def test_redirectAndBcc(self):
        """
        REDIRECT replaces the recipients of the queued message, BCC adds
        one.
        """
        fake = FakePolicyClient(
            "fake",
            {
                "MAIL": "BCC archive@local.test",
                "RCPT": "REDIRECT quarantine@local.test",
            },
        )
        h = self.harness(stages={"MAIL": [fake], "RCPT": [fake]})
        self.send(h, TRANSACTION)
        h.send(MESSAGE)
        [envelope] = h.qmgr.envelopes
        self.assertEqual(
            [r["address"] for r in envelope["recipients"]],
            ["quarantine@local.test", "archive@local.test"],
        )

    def test_stages(self):
        """
        Rejections at HELO, MAIL, DATA and END-OF-MESSAGE name what they
        reject as Postfix does; at CONNECT the session is refused.
        """
        no = FakePolicyClient("no", {"*": "REJECT No"})
        out = self.send(
            self.harness(no, stage="HELO"), b"EHLO client.test\r\nHELO x.test\r\n"
        )
        self.assertIn(b"554 5.7.1 <client.test>: Helo command rejected: No", out)
        self.assertIn(b"554 5.7.1 <x.test>: Helo command rejected: No", out)
        self.assertEqual([r["protocol_state"] for r in no.requests], ["EHLO", "HELO"])
        self.assertEqual(no.requests[0]["helo_name"], "client.test")
        out = self.send(self.harness(no, stage="MAIL"), HEAD)
        self.assertIn(b"554 5.7.1 <a@b.test>: Sender address rejected: No", out)
        out = self.send(self.harness(no, stage="DATA"), TRANSACTION)
        self.assertIn(b"554 5.7.1 <DATA>: Data command rejected: No", out)
        h = self.harness(no, stage="END-OF-MESSAGE")
        self.send(h, TRANSACTION)
        out = h.send(MESSAGE)
        self.assertIn(b"554 5.7.1 <END-OF-MESSAGE>: End-of-data rejected: No", out)
        self.assertEqual(h.qmgr.envelopes, [])
        self.assertEqual(no.requests[-1]["size"], "17")
        self.assertEqual(no.requests[-1]["recipient_count"], "1")
        h = self.harness(no, stage="CONNECT")
        self.assertTrue(
            h.connect().startswith(b"554 5.7.1 mx.test <unknown[10.1.2.3]>")
        )


class AttributeTests(unittest.TestCase):
    """
    What SMTPS tells the policy servers about AUTH and TLS.
    """

    def test_sasl(self):
        """
        After AUTH: C{sasl_method} and C{sasl_username}; C{sasl_sender}
        from MAIL's C{AUTH=}.
        """
        import base64

        from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse

        fake = FakePolicyClient("fake")
        h = Harness(
            authChecker=InMemoryUsernamePasswordDatabaseDontUse(user=b"secret"),
            authMechanisms=("PLAIN",),
            authRequiresTLS=False,
        )
        h.factory.policyServers = {"MAIL": [fake]}
        h.connect()
        h.send(b"EHLO c.test\r\n")
        token = base64.b64encode(b"\0user\0secret")
        self.assertTrue(h.send(b"AUTH PLAIN " + token + b"\r\n").startswith(b"235"))
        out = h.send(b"MAIL FROM:<a@b.test> AUTH=<user@b.test>\r\n")
        self.assertTrue(out.startswith(b"250"), out)
        [request] = fake.requests
        self.assertEqual(
            (request["sasl_method"], request["sasl_username"], request["sasl_sender"]),
            ("PLAIN", "user", "user@b.test"),
        )

    def test_tls(self):
        """
        After STARTTLS: C{encryption_*}; a verified client certificate's
        common names and fingerprints in C{ccert_*}.
        """
        from smx.milter.policy import fingerprint
        from smx.test.certs import makeCertificates

        certs = makeCertificates(self.mktemp())
        from cryptography import x509

        with open(certs.clientCert, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        fake = FakePolicyClient("fake")
        h = Harness()
        h.factory.policyServers = {"RCPT": [fake]}
        h.connect()
        h.protocol.tlsInfo = {"version": "TLSv1.3", "cipher": "X", "bits": 256}
        h.protocol.tlsInfo["verify"] = "OK"

        class Handle:
            def get_peer_certificate(self):
                return cert

        h.transport.getHandle = lambda: Handle()
        h.send(HEAD + b"RCPT TO:<u@local.test>\r\n")
        [request] = fake.requests
        self.assertEqual(request["encryption_protocol"], "TLSv1.3")
        self.assertEqual(request["encryption_keysize"], "256")
        self.assertTrue(request["ccert_subject"], request)
        from cryptography.hazmat.primitives import serialization

        self.assertEqual(
            request["ccert_fingerprint"],
            fingerprint(cert.public_bytes(serialization.Encoding.DER)),
        )


class ConfigurationTests(unittest.TestCase):
    """
    L{policyServers}: the clients of an smtps section from the
    configuration.
    """

    def test_shared(self):
        """
        One client per policy, shared by the stages and sections that ask
        it, in the configured order; C{policy_context} by name.
        """
        from twisted.internet.task import Clock

        from smx.config import configurationFromText
        from smx.log import Logger, MemorySink
        from smx.mail.listener import ServerSettings
        from smx.mail.policyhooks import policyServers

        cfg = configurationFromText(
            'policy a { socket = "unix:/a"; policy_context = "mx"; }\n'
            'policy b { socket = "inet:127.0.0.1:1"; timeout = 2s; }\n'
            "smtps MX { policies = { a, b }; mail_policies = b; }\n"
            "smtps MSA { daemon_address = :587; policies = { B }; }\n"
        )

        class Factory:
            reactor = Clock()
            log = Logger("smtps", sink=MemorySink())

        clients = {}  # type: dict
        first, second = Factory(), Factory()
        mx = policyServers(
            cfg, ServerSettings.fromSection(cfg.section("smtps", "MX")), clients, first
        )
        msa = policyServers(
            cfg,
            ServerSettings.fromSection(cfg.section("smtps", "MSA")),
            clients,
            second,
        )
        self.assertEqual([c.name for c in mx["RCPT"]], ["a", "b"])
        self.assertIs(mx["MAIL"][0], mx["RCPT"][1])
        self.assertIs(msa["RCPT"][0], mx["RCPT"][1])
        self.assertEqual(str(mx["RCPT"][0].socket), "unix:/a")
        self.assertEqual(mx["RCPT"][1].timeout, 2.0)
        self.assertEqual(first.policyContexts, {"a": "mx"})
        self.assertEqual(second.policyContexts, {})
