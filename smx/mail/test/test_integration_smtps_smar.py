# -*- test-case-name: smx.mail.test.test_integration_smtps_smar -*-
"""
Integration tests of SMTPS with the real SMAR (L{AddressResolver} with a
mailertable, an access map and an alias map) and the real CDB
(L{FileContentStore} in a temporary directory), over loopback sockets
with Python's smtplib; QMGR is the fake.
"""

import os
import smtplib

from twisted.internet import reactor, threads
from twisted.trial import unittest

from smx.log import Logger, MemorySink
from smx.mail.testing import defaultServerSettings
from smx.maps.mailertable import Mailertable
from smx.maps.resolver import AddressResolver
from smx.maps.testing import DictMap, defaultResolverSettings
from smx.mail.smtps import SMTPServerFactory
from smx.queue.cdb import FileContentStore
from smx.queue.testing import FakeQueueManager

ACCESS = {
    "to:x@remote.test": "relay",
    "from:@spam.test": "error:551 5.7.1 No spammers",
    "to:root": "error:551 5.7.1 No mail to root",
    "to:abuse": "quick:ok",
}
ALIASES = {"u": "local:", "root": "local:", "abuse": "local:"}


class RealSMARTests(unittest.TestCase):
    """SMTPS deciding with the real address resolver."""

    def setUp(self):
        self.resolver = AddressResolver(
            reactor,
            defaultResolverSettings(hostname="mx.test"),
            Mailertable.fromText("local.test lmtp:\n"),
            access=DictMap("access", ACCESS),
            aliases=DictMap("aliases", ALIASES),
            log=Logger("smar", sink=MemorySink()),
        )
        self.store = FileContentStore(os.path.abspath(self.mktemp()))
        self.qmgr = FakeQueueManager()

    def start(self, **settings):
        factory = SMTPServerFactory(
            defaultServerSettings(hostname="mx.test", **settings),
            self.qmgr,
            self.store,
            self.resolver,
            reactor=reactor,
            log=Logger("smtps", sink=MemorySink()),
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def rcpts(self, port, sender, recipients):
        def client():
            replies = []
            with smtplib.SMTP("127.0.0.1", port, local_hostname="c.test") as s:
                s.ehlo()
                replies.append(s.mail(sender))
                for r in recipients:
                    replies.append(s.rcpt(r))
                if any(code == 250 for code, _ in replies[1:]):
                    replies.append(s.data(b"Subject: t\r\n\r\nbody\r\n"))
            return replies

        return threads.deferToThread(client)

    def test_access(self):
        """
        Local users, unknown users, to: relay, to: error and every relay
        trick, decided by the real SMAR; the message lands in a CDB file.
        """
        port = self.start(access=True)
        recipients = [
            "u@local.test",
            "nobody@local.test",
            "x@remote.test",
            "y@remote.test",
            "root@local.test",
            "y%remote.test@local.test",
            "remote.test!y@local.test",
            '"y@remote.test"@local.test',
            "@local.test:y@remote.test",
        ]
        d = self.rcpts(port, "a@b.test", recipients)

        def check(replies):
            codes = [code for code, _ in replies[1:-1]]
            self.assertEqual(codes[:8], [250, 550, 250, 550, 551, 550, 550, 550])
            # smtplib rewrites the source route; whatever it sends is refused
            self.assertGreaterEqual(codes[8], 500)
            self.assertIn(b"5.1.1", replies[2][1])
            self.assertEqual(replies[-1][0], 250)
            [envelope] = self.qmgr.envelopes
            self.assertEqual(
                [r["address"] for r in envelope["recipients"]],
                ["u@local.test", "x@remote.test"],
            )
            with self.store.open(envelope["id"]) as f:
                content = f.read()
            self.assertTrue(content.startswith(b"Received: from c.test ("))
            self.assertTrue(content.endswith(b"Subject: t\r\n\r\nbody\r\n"))

        return d.addCallback(check)

    def test_delayedSender(self):
        """A from: error with delay_checks rejects at RCPT, but to: quick:ok wins."""
        port = self.start(access=True, delayChecks=True)
        d = self.rcpts(port, "a@spam.test", ["u@local.test", "abuse@local.test"])

        def check(replies):
            self.assertEqual([c for c, _ in replies[:3]], [250, 551, 250])

        return d.addCallback(check)
