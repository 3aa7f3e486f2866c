# -*- test-case-name: smx.mail.test.test_pmilterhooks -*-
"""
Tests for L{smx.mail.pmilterhooks}: SMTPS with a L{PolicyMilterHost} of
fake pmilters, a L{StringTransport} and a L{Clock} (the end-to-end tests
are in L{smx.mail.test.test_integration_pmilter}).
"""

from twisted.internet import defer
from twisted.trial import unittest

from smx.mail.pmilterhooks import parameterList
from smx.mail.test.test_smtps import Harness
from smx.pmilter import DISCARD, PERM, SSD, TEMP, quick
from smx.pmilter.host import PolicyMilterHost
from smx.pmilter.testing import FakePolicyMilter

TRANSACTION = (
    b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\n"
    b"DATA\r\n"
)


class HookTests(unittest.TestCase):
    """
    Decisions of the pmilters as SMTPS applies them.
    """

    def harness(self, answers=None, timeout=5, **settings):
        h = Harness(**settings)
        self.pmilter = FakePolicyMilter("fake")
        self.pmilter.answers.update(answers or {})
        host = PolicyMilterHost([self.pmilter], h.clock, timeout, log=h.factory.log)
        host.startService()
        h.factory.pmilterHost = host
        return h

    def test_parameters(self):
        """MAIL/RCPT parameters become C{KEYWORD=value} or C{KEYWORD}."""
        self.assertEqual(
            parameterList([("SIZE", "10"), ("SMTPUTF8", None)]), ["SIZE=10", "SMTPUTF8"]
        )

    def test_connectRejected(self):
        """
        A 5xx at connect is a 554 greeting, a 4xx a 421 that closes.
        """
        h = self.harness({"connect": PERM})
        self.assertTrue(h.connect().startswith(b"554 5.7.1 mx.test Rejected"))
        h = self.harness({"connect": TEMP})
        self.assertTrue(h.connect().startswith(b"421 4.7.1 mx.test "))
        self.assertTrue(h.transport.disconnecting)

    def test_connectFails(self):
        """
        A pmilter that raises at connect: 421 4.3.0 (C{on_failure =
        tempfail}), never the greeting.
        """

        def broken(session, hostname, address):
            raise RuntimeError("broken")

        h = self.harness({"connect": broken})
        self.assertTrue(h.connect().startswith(b"421 4.3.0 "))
        self.flushLoggedErrors(RuntimeError)

    def test_connectDiscard(self):
        """
        DISCARD at connect: the message gets 250 but is not queued.
        """
        h = self.harness({"connect": DISCARD})
        h.connect()
        h.send(TRANSACTION)
        out = h.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
        self.assertTrue(out.startswith(b"250 2.0.0 "), out)
        self.assertEqual(h.qmgr.envelopes, [])

    def test_delayChecks(self):
        """
        With C{delay_checks} a 5xx at MAIL is given at RCPT; with quick at
        once.  The pmilter that rejected MAIL is out of the transaction
        (abort) and not asked about its recipients.
        """
        h = self.harness({"mail": PERM}, delayChecks=True)
        h.connect()
        out = h.send(TRANSACTION)
        self.assertIn(b"250 2.1.0", out)
        self.assertIn(b"550 5.7.1 Rejected by policy", out)
        self.assertEqual(
            self.pmilter.callbacks(), ["negotiate", "connect", "helo", "mail", "abort"]
        )
        h = self.harness({"mail": quick(PERM)}, delayChecks=True)
        h.connect()
        out = h.send(b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\n")
        self.assertIn(b"550 5.7.1 Rejected by policy", out)

    def test_ssdAtEom(self):
        """
        SSD at the final dot: 421, nothing queued, the session closes.
        """
        h = self.harness({"eom": SSD})
        h.connect()
        h.send(TRANSACTION)
        out = h.send(b"Subject: x\r\n\r\nx\r\n.\r\nNOOP\r\n")
        self.assertEqual(out, b"421 4.7.0 Closing connection\r\n")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.qmgr.envelopes, [])

    def test_ssdAtUnknown(self):
        """
        SSD for an unknown command: its 500, then 421, and the session
        closes.
        """
        h = self.harness({"unknown": SSD})
        h.connect()
        out = h.send(b"EHLO client.test\r\nXFOO\r\n")
        self.assertIn(b"500 5.5.1 Command unrecognized\r\n421 4.7.0 ", out)
        self.assertTrue(h.transport.disconnecting)

    def test_timeout(self):
        """
        A pmilter that does not answer within the timeout: 451 4.3.0.
        """
        h = self.harness({"rcpt": lambda session, address, args: defer.Deferred()})
        h.connect()
        h.send(
            b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\n"
        )
        h.clock.advance(5)
        self.assertIn(b"451 4.3.0 Temporary failure of a policy check", h.take())
