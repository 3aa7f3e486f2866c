# -*- test-case-name: smx.mail.test.test_smtps_timers -*-
"""
Tests for the timers and limits of L{smx.mail.smtps}: io_timeout as a
deadline per line, the TLS handshake, max_message_time,
max_session_time, sessions closed to make room, and the grace given to a
closing session; with a L{StringTransport} and a L{Clock}.
"""

from twisted.trial import unittest

from smx.log import parseRecord
from smx.mail import deadlines
from smx.mail.test.test_smtps import MESSAGE, CountingTransport, Harness


class TLSTransport(CountingTransport):
    """A transport that records C{startTLS} (the handshake never ends)."""

    tlsContext = None

    def startTLS(self, context):
        self.tlsContext = context


class TLSHarness(Harness):
    def connect(self, address="10.1.2.3"):
        from twisted.internet.address import IPv4Address

        self.protocol = self.factory.buildProtocol(IPv4Address("TCP", "0.0.0.0", 25))
        self.transport = TLSTransport(peerAddress=IPv4Address("TCP", address, 40000))
        self.protocol.makeConnection(self.transport)
        return self.take()


class LineDeadlineTests(unittest.TestCase):
    """io_timeout is the time to send a complete line, not an idle timer."""

    def test_partialLine(self):
        """Part of a command line does not extend io_timeout."""
        h = Harness(ioTimeout=10)
        h.connect()
        h.clock.advance(5)
        h.send(b"NO")
        h.clock.advance(4)
        h.send(b"O")
        h.clock.advance(1)
        self.assertEqual(h.take(), b"421 4.4.2 mx.test Error: timeout exceeded\r\n")
        self.assertTrue(h.transport.disconnecting)

    def test_byteByByte(self):
        """
        A client sending a byte now and then is closed io_timeout after its
        last complete line, not io_timeout after its last byte.
        """
        h = Harness(ioTimeout=10)
        h.connect()
        for byte in b"EHLO slow.test\r\n":
            h.send(bytes([byte]))
            h.clock.advance(0.5)
        self.assertFalse(h.transport.disconnecting)
        for byte in b"NOOP":
            h.clock.advance(2.4)
            h.send(bytes([byte]))
        h.clock.advance(0.5)
        self.assertTrue(h.transport.disconnecting)

    def test_completeLine(self):
        """A complete line (with a part of the next) extends it."""
        h = Harness(ioTimeout=10)
        h.connect()
        h.clock.advance(9)
        h.send(b"NOOP\r\nNO")
        h.clock.advance(9)
        self.assertFalse(h.transport.disconnecting)
        h.send(b"OP\r\n")
        h.clock.advance(9)
        self.assertFalse(h.transport.disconnecting)
        h.clock.advance(1)
        self.assertTrue(h.transport.disconnecting)

    def test_longDataLine(self):
        """
        In DATA, a line longer than RECORD_SIZE counts as a record for every
        RECORD_SIZE bytes: a long line sent steadily is not cut off.
        """
        h = Harness(ioTimeout=10)
        h.connect()
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\n")
        h.send(b"DATA\r\n")
        for i in range(5):
            h.clock.advance(9)
            h.send(b"x" * deadlines.RECORD_SIZE)
        self.assertFalse(h.transport.disconnecting)
        # the final dot is answered (the line may be too long for RFC 5322)
        out = h.send(b"\r\n.\r\n")
        self.assertRegex(out, b"^[25][0-9][0-9] ")
        self.assertFalse(h.transport.disconnecting)

    def test_serverWorkNotCounted(self):
        """
        While the server waits for QMGR or SMAR the client is not on the
        clock; afterwards it has a whole io_timeout again.
        """
        h = Harness(ioTimeout=10)
        h.connect()
        from twisted.internet import defer

        pending = defer.Deferred()
        h.qmgr.checkAcceptance = lambda size, sessionId=None: pending
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n")
        h.clock.advance(30)
        self.assertFalse(h.transport.disconnecting)
        pending.callback(None)
        h.clock.advance(9)
        self.assertFalse(h.transport.disconnecting)
        self.assertEqual(h.protocol.lag(h.clock.seconds()), 9)
        h.clock.advance(1)
        self.assertTrue(h.transport.disconnecting)


class HandshakeTests(unittest.TestCase):
    """A client that sends STARTTLS must finish the handshake in time."""

    def test_silentAfterStartTLS(self):
        """
        A client silent after STARTTLS is dropped (abortConnection: no 421
        can reach it through a handshake that never ends) after io_timeout.
        """
        h = TLSHarness(ioTimeout=10, tlsContextFactory=object())
        h.connect()
        h.send(b"EHLO c\r\n")
        h.clock.advance(5)
        self.assertEqual(h.send(b"STARTTLS\r\n"), b"220 2.0.0 Ready to start TLS\r\n")
        self.assertIsNotNone(h.transport.tlsContext)
        h.clock.advance(9.9)
        self.assertFalse(h.transport.disconnected)
        h.clock.advance(0.1)
        self.assertTrue(h.transport.disconnected)
        self.assertEqual(h.take(), b"")
        self.assertEqual(
            h.records()[-1],
            {
                "ss_sess": h.protocol.sessionId,
                "where": "timeout",
                "tls": "handshake",
                "stat": "421",
            },
        )
        self.assertEqual(h.factory.table.count, 0)

    def test_handshakeIsSlow(self):
        """A session in the TLS handshake counts as slow for its address."""
        h = TLSHarness(ioTimeout=100, tlsContextFactory=object(), maxSessions=64)
        h.connect()
        h.send(b"EHLO c\r\nSTARTTLS\r\n")
        h.clock.advance(3)
        self.assertEqual(h.factory.table.slow("10.1.2.3"), 1)
        h.protocol.handshakeCompleted()
        self.assertEqual(h.factory.table.slow("10.1.2.3"), 0)

    def test_shutdownDuringHandshake(self):
        """Stopping the server drops a session in the handshake."""
        h = TLSHarness(tlsContextFactory=object())
        h.connect()
        h.send(b"EHLO c\r\nSTARTTLS\r\n")
        h.factory.shutdown()
        self.assertTrue(h.transport.disconnected)
        self.assertEqual(h.take(), b"")


class MessageTimeTests(unittest.TestCase):
    """max_message_time bounds DATA, however steadily the lines come."""

    def start(self, **settings):
        h = Harness(ioTimeout=30, **settings)
        h.connect()
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\n")
        self.assertTrue(h.send(b"DATA\r\n").startswith(b"354 "))
        return h

    def test_exceeded(self):
        """
        A message still being received max_message_time after the 354 ends
        the session with 421 4.4.2; nothing is stored.
        """
        h = self.start(maxMessageTime=60)
        for i in range(5):
            h.clock.advance(10)
            h.send(b"line %d\r\n" % (i,))
        self.assertFalse(h.transport.disconnecting)
        h.clock.advance(10)
        self.assertEqual(
            h.take(), b"421 4.4.2 mx.test Error: message transfer time exceeded\r\n"
        )
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.store.contents, {})
        self.assertEqual(h.records()[-1]["limit"], "max_message_time")

    def test_finished(self):
        """A message that ends in time stops the timer."""
        h = self.start(maxMessageTime=60)
        h.clock.advance(25)
        h.send(b"line\r\n")
        h.clock.advance(25)
        self.assertIn(b"250 2.0.0", h.send(MESSAGE + b".\r\n"))
        h.clock.advance(25)
        self.assertFalse(h.transport.disconnecting)

    def test_noLimit(self):
        """0 is no limit."""
        h = self.start(maxMessageTime=0)
        for i in range(10):
            h.clock.advance(25)
            h.send(b"line\r\n")
        self.assertFalse(h.transport.disconnecting)


class SessionTimeTests(unittest.TestCase):
    """max_session_time ends a session at the next command."""

    def test_exceeded(self):
        """A session that keeps sending commands ends after max_session_time."""
        h = Harness(ioTimeout=30, maxSessionTime=100)
        h.connect()
        for i in range(4):
            h.clock.advance(24)
            h.send(b"NOOP\r\n")
        self.assertFalse(h.transport.disconnecting)
        h.clock.advance(4)
        self.assertEqual(
            h.take(), b"421 4.4.2 mx.test Error: session time limit exceeded\r\n"
        )
        self.assertTrue(h.transport.disconnecting)

    def test_messageFinishes(self):
        """
        A message being received when the session's time is up is received
        to its end and accepted; then the session ends.
        """
        h = Harness(ioTimeout=300, maxSessionTime=100, maxMessageTime=3600)
        h.connect()
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\n")
        h.send(b"DATA\r\n")
        h.clock.advance(101)
        self.assertFalse(h.transport.disconnecting)
        out = h.send(MESSAGE + b".\r\n")
        self.assertTrue(out.startswith(b"250 2.0.0 "), out)
        self.assertTrue(
            out.endswith(b"421 4.4.2 mx.test Error: session time limit exceeded\r\n")
        )
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(len(h.store.contents), 1)


class EvictionTests(unittest.TestCase):
    """A full listener closes the session that keeps it waiting longest."""

    def test_evicted(self):
        """
        With every session taken, a client from another address gets its
        greeting and the idlest session 421 4.3.2, both logged.
        """
        h = Harness(maxSessions=2)
        h.connect("10.0.0.1")
        first = h.protocol
        h.clock.advance(0.5)
        h.connect("10.0.0.1")
        second = h.protocol
        h.clock.advance(0.5)
        out = h.connect("10.0.0.1")
        self.assertEqual(out[:10], b"421 4.3.2 ")
        self.assertFalse(first.transport.disconnecting)
        self.assertFalse(second.transport.disconnecting)
        out = h.connect("10.0.0.2")
        self.assertTrue(out.startswith(b"220 "), out)
        self.assertTrue(first.transport.disconnecting)
        self.assertFalse(second.transport.disconnecting)
        self.assertEqual(
            first.transport.value(),
            b"421 4.3.2 mx.test Too many sessions; closing an idle one\r\n",
        )
        self.assertEqual(h.factory.table.count, 2)
        lines = [parseRecord(l) for l in h.sink.lines()]
        self.assertIn(
            {
                "ss_sess": first.sessionId,
                "client_ipv4": "10.0.0.1",
                "where": "connection",
                "stat": "421",
                "reply": "421 4.3.2 Too many sessions; closing an idle one",
            },
            lines,
        )

    def test_refusedLogged(self):
        """A session refused by the limits is logged with its address."""
        h = Harness(maxSessions=1)
        h.connect("10.0.0.1")
        out = h.connect("10.0.0.1")
        self.assertEqual(
            out, b"421 4.3.2 mx.test Too many sessions, try again later\r\n"
        )
        self.assertEqual(
            h.records()[-1],
            {
                "ss_sess": h.protocol.sessionId,
                "client_ipv4": "10.0.0.1",
                "where": "connection",
                "stat": "421",
                "reply": "421 4.3.2 Too many sessions, try again later",
            },
        )
        self.assertEqual(h.factory.table.count, 1)


class CloseTests(unittest.TestCase):
    """A session that ends is dropped if its client does not go."""

    def test_grace(self):
        """
        After the last reply, a client that does not let the connection
        close is dropped CLOSE_GRACE seconds later.
        """
        h = Harness()
        h.connect()
        h.send(b"QUIT\r\n")
        self.assertTrue(h.transport.disconnecting)
        h.clock.advance(deadlines.CLOSE_GRACE - 1)
        self.assertFalse(h.transport.disconnected)
        h.clock.advance(1)
        self.assertTrue(h.transport.disconnected)

    def test_lostInTime(self):
        """A connection that closes in time is not aborted; no timer is left."""
        h = Harness(maxSessionTime=100)
        h.connect()
        h.send(b"QUIT\r\n")
        h.protocol.connectionLost()
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertFalse(h.transport.disconnected)
        self.assertEqual(h.factory.table.count, 0)
