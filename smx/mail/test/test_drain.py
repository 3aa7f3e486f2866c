# -*- test-case-name: smx.mail.test.test_drain -*-
"""
Tests for L{smx.mail.drain}: how SMTPS stops, with fakes, a
L{StringTransport} and a L{Clock} (the end-to-end tests with a real
C{twistd -n smx} are in L{smx.mail.test.test_integration_stop}).
"""

from twisted.internet import defer
from twisted.trial import unittest

from smx.mail import drain
from smx.mail.test.test_smtps import MESSAGE, Harness
from smx.pmilter import CONT
from smx.pmilter.host import PolicyMilterHost
from smx.pmilter.testing import FakePolicyMilter

TRANSACTION = (
    b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\n"
    b"DATA\r\n"
)

SHUTDOWN = b"421 4.3.2 mx.test Service shutting down\r\n"


class StopTests(unittest.TestCase):
    """
    L{SMTPServerFactory.shutdown}: 421 at once, except for a session
    whose final dot was received, which gets its reply first.
    """

    def committing(self, **settings):
        """
        A session whose message is at QMGR (its commit not answered).
        """
        h = Harness(**settings)
        h.qmgr.pending = []
        h.connect()
        h.send(TRANSACTION)
        self.assertEqual(h.send(MESSAGE + b".\r\n"), b"")
        self.assertEqual(len(h.qmgr.pending), 1)
        self.assertTrue(h.protocol.committing())
        return h

    def test_idle(self):
        """
        An idle session and one receiving a message get 421 4.3.2 and are
        closed at once; nothing is stored; the stop is over at once.
        """
        h = Harness()
        h.connect()
        h.send(TRANSACTION + b"Subject: x\r\n\r\npart of it\r\n")
        d = h.factory.shutdown()
        self.successResultOf(d)
        self.assertEqual(h.take(), SHUTDOWN)
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.qmgr.envelopes, [])
        self.assertIn("where=shutdown, stat=421", h.sink.lines()[-1])

    def test_commitGetsItsReply(self):
        """
        A session whose final dot was received gets the 250 of its commit,
        then 421 4.3.2 and is closed; the stop is over only then, and QMGR
        is told the content is stored.
        """
        h = self.committing(ioTimeout=300)
        d = h.factory.shutdown()
        self.assertNoResult(d)
        self.assertEqual(h.take(), b"")
        self.assertFalse(h.transport.disconnecting)
        h.clock.advance(1)
        self.assertNoResult(d)
        h.qmgr.pending[0].callback(None)
        out = h.take()
        self.assertTrue(out.startswith(b"250 2.0.0 "), out)
        self.assertTrue(out.endswith(b"\r\n" + SHUTDOWN), out)
        self.assertTrue(h.transport.disconnecting)
        taId = h.qmgr.envelopes[0]["id"]
        self.assertEqual(h.qmgr.contents, [(taId, True)])
        self.assertIn(taId, h.store.contents)
        h.clock.advance(drain.POLL_INTERVAL)
        self.successResultOf(d)
        self.assertIn("stat=waiting for commits, n=1", "\n".join(h.sink.lines()))

    def test_failedCommitGetsItsReply(self):
        """
        A commit that fails during the stop gets its 451, then 421.
        """
        h = self.committing()
        d = h.factory.shutdown()
        h.qmgr.pending[0].errback(RuntimeError("IBDB"))
        out = h.take()
        self.assertTrue(out.startswith(b"451 4.3.0 "), out)
        self.assertTrue(out.endswith(b"\r\n" + SHUTDOWN), out)
        h.clock.advance(drain.POLL_INTERVAL)
        self.successResultOf(d)
        self.flushLoggedErrors(RuntimeError)

    def test_pipelinedCommand(self):
        """
        A command the client sent after the final dot gets 421, not an
        answer: no new transaction starts; the client is no longer read
        from.
        """
        h = self.committing()
        self.assertEqual(h.send(b"MAIL FROM:<c@d.test>\r\n"), b"")
        d = h.factory.shutdown()
        self.assertEqual(h.transport.producerState, "paused")
        h.qmgr.pending[0].callback(None)
        out = h.take()
        self.assertTrue(out.startswith(b"250 2.0.0 "), out)
        self.assertTrue(out.endswith(b"\r\n" + SHUTDOWN), out)
        self.assertNotIn(b"Sender ok", out)
        h.clock.advance(drain.POLL_INTERVAL)
        self.successResultOf(d)

    def test_clientGone(self):
        """
        The stop waits for the commit of a client that went away after
        its final dot, no longer.
        """
        h = self.committing()
        d = h.factory.shutdown()
        h.transport.loseConnection()
        h.protocol.connectionLost(None)
        h.clock.advance(1)
        self.assertNoResult(d)
        h.qmgr.pending[0].callback(None)
        h.clock.advance(drain.POLL_INTERVAL)
        self.successResultOf(d)

    def test_graceExceeded(self):
        """
        A commit not over after io_timeout (below L{drain.COMMIT_GRACE}):
        421 4.3.2, and the stop is over; when the commit ends after all,
        it is undone (the content removed, QMGR told it is not stored):
        the client, told 421, sends the message again.
        """
        h = self.committing(ioTimeout=2)
        d = h.factory.shutdown()
        h.clock.advance(1.9)
        self.assertNoResult(d)
        h.clock.advance(0.2)
        self.successResultOf(d)
        self.assertEqual(h.take(), SHUTDOWN)
        self.assertTrue(h.transport.disconnecting)
        self.assertIn("commit=unfinished", h.sink.lines()[-1])
        h.qmgr.pending[0].callback(None)
        taId = h.qmgr.envelopes[0]["id"]
        self.assertEqual(h.qmgr.contents, [(taId, False)])
        self.assertNotIn(taId, h.store.contents)
        self.assertEqual(h.take(), b"")
        self.assertIn("stat=421", h.sink.lines()[-1])

    def test_newSessionRefused(self):
        """
        A session that reaches a stopping factory (another address of the
        section) gets 421 4.3.2 and is closed.
        """
        h = self.committing()
        h.factory.shutdown()
        first = h.transport
        self.assertEqual(h.connect(), SHUTDOWN)
        self.assertTrue(h.transport.disconnecting)
        self.assertFalse(first.disconnecting)

    def test_shutdownTwice(self):
        """
        Each listener of a factory calls C{shutdown}: the second waits for
        the same stop.
        """
        h = self.committing()
        first = h.factory.shutdown()
        second = h.factory.shutdown()
        self.assertNoResult(second)
        h.qmgr.pending[0].callback(None)
        h.clock.advance(drain.POLL_INTERVAL)
        self.successResultOf(first)
        self.successResultOf(second)
        self.successResultOf(h.factory.shutdown())

    def test_startAgain(self):
        """
        A factory started again after a stop admits sessions again.
        """
        h = Harness()
        self.successResultOf(h.factory.shutdown())
        h.factory.doStart()
        self.addCleanup(h.factory.doStop)
        self.assertTrue(h.connect().startswith(b"220 "))

    def test_grace(self):
        """
        The wait is L{drain.COMMIT_GRACE}, or io_timeout if shorter.
        """
        h = Harness(ioTimeout=300)
        self.assertEqual(drain.grace(h.settings), drain.COMMIT_GRACE)
        h = Harness(ioTimeout=2)
        self.assertEqual(drain.grace(h.settings), 2)


class CheckedMessageTests(unittest.TestCase):
    """
    A final dot whose pmilter has not answered yet when smx stops.
    """

    def harness(self, **settings):
        h = Harness(**settings)
        self.answers = []
        pmilter = FakePolicyMilter("slow")

        def eom(session):
            d = defer.Deferred()
            self.answers.append(d)
            return d

        pmilter.answers["eom"] = eom
        host = PolicyMilterHost([pmilter], h.clock, 60, log=h.factory.log)
        host.startService()
        self.addCleanup(host.stopService)
        h.factory.pmilterHost = host
        h.connect()
        h.send(TRANSACTION)
        self.assertEqual(h.send(MESSAGE + b".\r\n"), b"")
        self.assertEqual(len(self.answers), 1)
        return h

    def test_answered(self):
        """
        The pmilter answers within the grace time: the message is
        committed and gets 250, then 421.
        """
        h = self.harness(ioTimeout=300)
        d = h.factory.shutdown()
        h.clock.advance(1)
        self.answers[0].callback(CONT)
        out = h.take()
        self.assertTrue(out.startswith(b"250 2.0.0 "), out)
        self.assertTrue(out.endswith(SHUTDOWN), out)
        self.assertEqual(len(h.qmgr.envelopes), 1)
        h.clock.advance(drain.POLL_INTERVAL)
        self.successResultOf(d)

    def test_tooLate(self):
        """
        The pmilter answers after the grace time: the client got 421, the
        content is removed at once, and nothing is committed.
        """
        h = self.harness(ioTimeout=2)
        d = h.factory.shutdown()
        h.clock.advance(2.1)
        self.successResultOf(d)
        self.assertEqual(h.take(), SHUTDOWN)
        # removed at once: smx may exit before the pmilter answers
        self.assertEqual(len(h.store.aborted), 1)
        self.answers[0].callback(CONT)
        self.assertEqual(h.qmgr.envelopes, [])
        self.assertEqual(h.store.contents, {})
        self.assertEqual(h.take(), b"")
