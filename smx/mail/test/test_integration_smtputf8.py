# -*- test-case-name: smx.mail.test.test_integration_smtputf8 -*-
"""
Integration tests of SMTPUTF8 (RFC 6531) with C{twistd -n smx} and a
private Postfix (Debian package postfix, see /work/shared/PEERS.md) over
loopback sockets:

  - Python's C{smtplib} sends a message with UTF-8 addresses and header
    (C{MAIL ... SMTPUTF8}) to smx, which relays it to Postfix's smtpd with
    C{smtputf8_enable = yes} (127.0.0.1): Postfix's virtual agent stores it
    in a Maildir as it was sent;
  - the same message for a domain whose Postfix listener (127.0.0.3) does
    not offer SMTPUTF8 (C{smtpd_discard_ehlo_keywords = smtputf8}) is not
    downgraded: smx bounces it with C{5.6.7}, and the DSN reaches the
    sender's mailbox at smx's lmtpd;
  - Postfix relays a message with a UTF-8 sender and recipient to smx
    (C{relayhost}); smx's aliases (built by C{smx createmap} with a UTF-8
    key) send it to a local mailbox; the U-label and the A-label form of
    the domain are both local (the mailertable names the U-label);
  - Dovecot's LMTP (Debian package dovecot-lmtpd; 2.3 does not offer
    SMTPUTF8) gets a message received with SMTPUTF8 that is all ASCII as
    before, and one with UTF-8 addresses is bounced with 5.6.7.
"""

from __future__ import annotations

import os
import smtplib
from typing import List

from twisted.internet import defer, threads
from twisted.trial import unittest

from smx.test.postfix import POSTFIX, VIRTUAL_MAILBOX, PrivatePostfix
from smx.test.mta import (
    MTA,
    Dovecot,
    configuration,
    freePort,
    missing,
    tempDirectory,
    until,
)

#: a message with UTF-8 in its addresses and header (RFC 6532)
MESSAGE = (
    "From: Jörg <jörg@client.test>\r\n"
    "To: <zoë@pf.test>\r\n"
    "Subject: Grüße aus Köln\r\n"
    "Message-Id: <utf8@client.test>\r\n"
    "\r\n"
    "Schöne Grüße\r\nUTF8 MARK\r\n"
).encode("utf-8")


def privatePostfix(testCase, root: str, relayPort: int) -> PrivatePostfix:
    """
    A private Postfix with SMTPUTF8 on: its smtpd listens on
    127.0.0.1:C{port} and, without SMTPUTF8 in its EHLO reply, on
    127.0.0.3:C{port}; mail for C{pf.test} and C{nu.test} is stored in
    its mailbox, everything else goes to C{[127.0.0.1]:relayPort}.
    """
    port = freePort()

    def listeners(fields: List[str]) -> List[List[str]]:
        plain = ["127.0.0.3:%d" % (port,)] + fields[1:]
        plain.append("-o smtpd_discard_ehlo_keywords=smtputf8")
        return [plain, ["127.0.0.1:%d" % (port,)] + fields[1:]]

    settings = (
        "smtputf8_enable = yes\n"
        "relayhost = [127.0.0.1]:%d\n"
        "virtual_mailbox_domains = pf.test, nu.test\n" % (relayPort,)
        + VIRTUAL_MAILBOX % dict(root=root)
    )
    return PrivatePostfix(testCase, root, port, settings, listeners)


def send(port: int, sender: str, recipients: List[str], message: bytes) -> dict:
    """Send with smtplib and SMTPUTF8; the refused recipients."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        return client.sendmail(sender, recipients, message, mail_options=["SMTPUTF8"])


class DovecotTests(unittest.TestCase):
    """
    C{twistd -n smx} delivering over LMTP to Dovecot, which does not offer
    SMTPUTF8.
    """

    def setUp(self):
        if not Dovecot.available():
            raise unittest.SkipTest("dovecot (Debian package dovecot-lmtpd) is missing")
        root = tempDirectory(self)
        port = freePort("127.0.0.73")
        self.dovecot = Dovecot(
            self, os.path.join(root, "dovecot"), ("127.0.0.73", port)
        )
        self.dovecot.start()
        self.mta = MTA(self, os.path.join(root, "smx"))
        self.mta.write(
            configuration(self.mta.port),
            mt="localhost lmtp:\ndove.test %d^lmtp:[127.0.0.73]\n" % (port,),
            aliases="alice: local:\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()

    @defer.inlineCallbacks
    def test_lmtp(self):
        """
        An ASCII message that came with SMTPUTF8 reaches Dovecot; one with
        a UTF-8 recipient and header is not sent: its global DSN with
        5.6.7 reaches the sender at smx's own lmtpd (which offers
        SMTPUTF8).
        """
        ascii = b"Subject: plain\r\n\r\nASCII MARK\r\n"
        yield threads.deferToThread(
            send, self.mta.port, "alice@localhost", ["bob@dove.test"], ascii
        )
        yield threads.deferToThread(
            send, self.mta.port, "alice@localhost", ["zoë@dove.test"], MESSAGE
        )
        ok = yield until(lambda: self.dovecot.maildir("bob"), timeout=10)
        self.assertTrue(ok, self.mta.log())
        self.assertIn(b"ASCII MARK", self.dovecot.maildir("bob")[0])
        ok = yield until(lambda: self.mta.maildir("alice"), timeout=10)
        self.assertTrue(ok, self.mta.log())
        [report] = self.mta.maildir("alice")
        self.assertIn(b"Status: 5.6.7", report)
        self.assertIn("Final-Recipient: utf-8; zoë@dove.test".encode("utf-8"), report)


class PostfixTests(unittest.TestCase):
    """
    C{twistd -n smx} between smtplib and a private Postfix, SMTPUTF8 in
    both directions.
    """

    def setUp(self):
        reason = missing(POSTFIX)
        if reason:
            raise unittest.SkipTest(reason)
        if os.geteuid() != 0:
            raise unittest.SkipTest("a private Postfix needs root")
        root = tempDirectory(self)
        self.mta = MTA(self, os.path.join(root, "smx"))
        self.postfix = privatePostfix(self, os.path.join(root, "pf"), self.mta.port)
        self.mta.write(
            configuration(
                self.mta.port, smtpc="remote_port = %d;" % (self.postfix.port,)
            ),
            mt="localhost lmtp:\nbücher.test lmtp:\npf.test [127.0.0.1]\n"
            "nu.test [127.0.0.3]\n",
            aliases="alice: local:\njörg: alice\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.postfix.start()
        self.mta.start()

    @defer.inlineCallbacks
    def test_toPostfix(self):
        """
        UTF-8 addresses and header go through smx to a Postfix that offers
        SMTPUTF8: smx sends C{MAIL FROM:<...> SMTPUTF8} and the message
        arrives as it was sent.
        """
        refused = yield threads.deferToThread(
            send, self.mta.port, "jörg@client.test", ["zoë@pf.test"], MESSAGE
        )
        self.assertEqual(refused, {})
        ok = yield until(self.postfix.mailbox, timeout=30)
        self.assertTrue(ok, self.mta.log() + self.postfix.report())
        [message] = self.postfix.mailbox()
        self.assertIn("Subject: Grüße aus Köln".encode("utf-8"), message)
        self.assertIn("Schöne Grüße\nUTF8 MARK".encode("utf-8"), message)
        self.assertIn("with UTF8SMTP".encode("utf-8"), message)
        log = self.postfix.log()
        self.assertRegex(log, r"< [^ ]+: MAIL FROM:<jörg@client.test> .*SMTPUTF8")
        self.assertRegex(log, r"to=<zoë@pf.test>.*status=sent")

    @defer.inlineCallbacks
    def test_notOffered(self):
        """
        To a next hop without SMTPUTF8 the message is not downgraded: smx
        sends no MAIL and bounces it with 5.6.7; the DSN, a global one
        (RFC 6533), reaches the sender (a local mailbox of smx).
        """
        refused = yield threads.deferToThread(
            send, self.mta.port, "alice@localhost", ["zoë@nu.test"], MESSAGE
        )
        self.assertEqual(refused, {})
        ok = yield until(lambda: self.mta.maildir("alice"), timeout=10)
        self.assertTrue(ok, self.mta.log())
        [dsn] = self.mta.maildir("alice")
        self.assertIn(b"Status: 5.6.7", dsn)
        self.assertIn(b"SMTPUTF8", dsn)
        self.assertIn(b"Content-Type: message/global-delivery-status", dsn)
        self.assertIn("Final-Recipient: utf-8; zoë@nu.test".encode("utf-8"), dsn)
        self.assertIn("Subject: Grüße aus Köln".encode("utf-8"), dsn)
        self.assertEqual(self.postfix.mailbox(), [])
        self.assertNotIn("MAIL FROM:<alice@localhost>", self.postfix.log())

    @defer.inlineCallbacks
    def test_fromPostfix(self):
        """
        Postfix relays a message with a UTF-8 sender and recipients to smx
        with SMTPUTF8; the aliases key C{jörg} (built by C{smx createmap})
        and the local domain named by its U-label in the mailertable,
        addressed by its A-label, deliver it to alice.
        """
        refused = yield threads.deferToThread(
            send,
            self.postfix.port,
            "zoë@client.test",
            ["jörg@localhost", "jörg@xn--bcher-kva.test"],
            MESSAGE,
        )
        self.assertEqual(refused, {})
        ok = yield until(lambda: len(self.mta.maildir("alice")) >= 1, timeout=30)
        self.assertTrue(ok, self.mta.log() + self.postfix.report())
        messages = self.mta.maildir("alice")
        self.assertIn("Subject: Grüße aus Köln".encode("utf-8"), messages[0])
        log = self.postfix.log()
        self.assertIn("]:%d: 250-SMTPUTF8" % (self.mta.port,), log)
        self.assertRegex(log, r"to=<jörg@localhost>.*status=sent")
        self.assertRegex(log, r"to=<jörg@xn--bcher-kva.test>.*status=sent")
