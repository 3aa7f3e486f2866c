# -*- test-case-name: smx.mail.test.test_policy -*-
"""
Tests for L{smx.mail.policy}: the access decisions of one session, as a
table of (client entry, sender entry, recipient entry, settings) and the
expected reply to RCPT.
"""

from twisted.trial import unittest

from smx.mail.testing import sessionPolicy
from smx.maps.testing import FakeAddressResolver


def d(action, quick=False, code=None, dsn=None, text=None):
    reply = None
    if code is not None:
        reply = {"code": code, "dsn": dsn, "text": text}
    return {"action": action, "quick": quick, "reply": reply}


ERR = d("error", False, 551, "5.7.1", "No")
QERR = d("error", True, 551, "5.7.1", "Quick no")

# (client, sender, recipient, recipient address, settings) -> RCPT reply code
TABLE = [
    # nothing: local ok, remote denied
    (None, None, None, "u@local.test", {}, None),
    (None, None, None, "u@remote.test", {}, 550),
    # cltaddr relay
    (d("relay"), None, None, "u@remote.test", {}, None),
    (d("relay"), None, ERR, "u@remote.test", {}, 551),
    # quick:relay overrides every other check
    (d("relay", True), ERR, ERR, "u@remote.test", {"delayChecks": True}, None),
    # quick:ok skips rejections but not the relay decision
    (d("ok", True), None, ERR, "u@local.test", {}, None),
    (d("ok", True), None, None, "u@remote.test", {}, 550),
    # delayed sender rejection, overridden by to: quick:ok
    (None, ERR, None, "u@local.test", {"delayChecks": True}, 551),
    (None, ERR, d("ok", True), "u@local.test", {"delayChecks": True}, None),
    (None, ERR, d("relay", True), "u@remote.test", {"delayChecks": True}, None),
    (None, ERR, d("ok"), "u@local.test", {"delayChecks": True}, 551),
    # to: relay
    (None, None, d("relay"), "u@remote.test", {}, None),
    # lmtp_does_not_imply_relaying
    (None, None, None, "u@local.test", {"lmtpImpliesRelaying": False}, 550),
    # tricks are judged by the address they name
    (None, None, None, "u%remote.test@local.test", {}, 550),
    (d("relay"), None, None, "u%remote.test@local.test", {}, None),
    # a recipient error
    (None, None, QERR, "u@local.test", {}, 551),
    # relay_clients (smtps -C): relaying, no other check skipped
    (None, None, None, "u@remote.test", {"relayClients": ["10.0.0.1"]}, None),
    (None, None, None, "u@remote.test", {"relayClients": ["10.0.0.2"]}, 550),
    (None, None, ERR, "u@remote.test", {"relayClients": ["10.0.0.1"]}, 551),
]


class TableTests(unittest.TestCase):
    """The decision table."""

    def test_table(self):
        """Every row gives its reply to RCPT."""
        for client, sender, rcpt, address, settings, expected in TABLE:
            resolver = FakeAddressResolver()
            resolver.localDomains.add("local.test")
            if client:
                resolver.clients["10.0.0.1"] = dict(client)
            if sender:
                resolver.senders["s@x.test"] = dict(sender)
            if rcpt:
                resolver.recipients[address.replace("%remote.test", "")] = dict(rcpt)
                resolver.recipients[address] = dict(rcpt)
            policy = sessionPolicy(
                resolver, "10.0.0.1", "mx.test", access=True, **settings
            )
            row = (client, sender, rcpt, address, settings)
            connect = self.successResultOf(policy.checkConnection())
            self.assertIsNone(connect, row)
            self.assertIsNone(self.successResultOf(policy.checkSender("s@x.test")), row)
            reply, _, _ = self.successResultOf(policy.checkRecipient(address))
            self.assertEqual(reply and reply["code"], expected, row)


class DiscardTests(unittest.TestCase):
    """discard at each stage."""

    def test_recipientQuickDiscard(self):
        """quick:discard for a recipient discards the transaction."""
        resolver = FakeAddressResolver()
        resolver.localDomains.add("local.test")
        resolver.recipients["u@local.test"] = d("discard", True)
        policy = sessionPolicy(resolver, "10.0.0.1", "mx.test", access=True)
        self.successResultOf(policy.checkSender("s@x.test"))
        reply, _, discard = self.successResultOf(policy.checkRecipient("u@local.test"))
        self.assertEqual(
            (reply, discard, policy.discardTransaction), (None, True, True)
        )

    def test_session(self):
        """A client discard discards every transaction."""
        resolver = FakeAddressResolver()
        resolver.clients["10.0.0.1"] = d("discard")
        policy = sessionPolicy(resolver, "10.0.0.1", "mx.test", access=True)
        self.successResultOf(policy.checkConnection())
        self.successResultOf(policy.checkSender("s@x.test"))
        self.assertTrue(policy.discardTransaction)


class CertificateTests(unittest.TestCase):
    """Relaying by client certificate."""

    INFO = {"verify": "OK", "issuer": "/O=CA", "subject": "/CN=me"}

    def test_issuerRelay(self):
        """certissuer: relay allows relaying; unverified never does."""
        resolver = FakeAddressResolver()
        resolver.access[("certissuer", "/O=CA")] = d("relay")
        policy = sessionPolicy(
            resolver, "10.0.0.1", "mx.test", access=True, checkAccessMapForRelaying=True
        )
        self.successResultOf(policy.tlsEstablished(dict(self.INFO, verify="FAIL")))
        self.assertFalse(policy.relayClient)
        self.successResultOf(policy.tlsEstablished(self.INFO))
        self.assertTrue(policy.relayClient)

    def test_subjectNeedsCont(self):
        """certsubject: is consulted only after certissuer: cont."""
        resolver = FakeAddressResolver()
        resolver.access[("certsubject", "/CN=me")] = d("relay")
        policy = sessionPolicy(
            resolver, "10.0.0.1", "mx.test", access=True, checkAccessMapForRelaying=True
        )
        self.successResultOf(policy.tlsEstablished(self.INFO))
        self.assertFalse(policy.relayClient)
        resolver.access[("certissuer", "/O=CA")] = d("cont")
        self.successResultOf(policy.tlsEstablished(self.INFO))
        self.assertTrue(policy.relayClient)


class RelayClientsTests(unittest.TestCase):
    """C{relay_clients} (C{smtps -C address})."""

    def test_withoutAccess(self):
        """The addresses allow relaying without the access map."""
        for client, addresses, code in [
            ("10.2.3.4", ["10.2.3.4"], None),
            ("10.2.3.5", ["10.2.3.4"], 550),
            ("::1", ["0:0::1"], None),
            ("::ffff:10.2.3.4", ["10.2.3.4"], None),
            ("10.2.3.4", [], 550),
        ]:
            resolver = FakeAddressResolver()
            policy = sessionPolicy(resolver, client, "mx.test", relayClients=addresses)
            self.assertIsNone(self.successResultOf(policy.checkConnection()))
            reply, _, _ = self.successResultOf(policy.checkRecipient("u@remote.test"))
            self.assertEqual(reply and reply["code"], code, (client, addresses))
            if code is None:
                self.assertEqual(policy.relayReason, "relay_clients")
