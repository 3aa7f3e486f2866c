# -*- test-case-name: smx.mail.test.test_serverlmtp -*-
"""
Tests for the LMTP mode (RFC 2033) of L{smx.mail.server.ServerConnection}.
"""

from __future__ import annotations

from twisted.trial import unittest

from smx.mail import server as sm
from smx.mail.serverstates import State
from smx.mail.test.test_server import run
from smx.mail.testing import serverConnection


def lmtp(**kw) -> sm.ServerConnection:
    conn = serverConnection("lda.test", lmtp=True, **kw)
    conn.greet()
    conn.dataToSend()
    return conn


def atFinalDot(conn: sm.ServerConnection, rcpts=(b"a@l.test", b"b@l.test")) -> bytes:
    """
    Run a transaction with C{rcpts} (C{x@...} refused) to its final dot;
    return the replies so far.
    """

    def answer(conn, event):
        if isinstance(event, sm.RcptTo) and event.recipient.startswith("x@"):
            conn.reject(550, "5.1.1", "no such user")
            return True
        return isinstance(event, sm.EndOfData)

    data = b"LHLO c\r\nMAIL FROM:<s@x.test>\r\n"
    data += b"".join(b"RCPT TO:<%s>\r\n" % (r,) for r in rcpts)
    _, out = run(conn, data + b"DATA\r\nhello\r\n.\r\nNOOP\r\n", answer)
    return out


class LHLOTests(unittest.TestCase):
    """The greeting and LHLO."""

    def test_lhlo(self) -> None:
        """
        LHLO is answered with PIPELINING and ENHANCEDSTATUSCODES (RFC 2033
        §5), 8BITMIME when enabled, SIZE last; the event is extended.
        """
        conn = lmtp(maxMessageSize=1000, eightBitMime=True)
        events, out = run(conn, b"LHLO client.test\r\n")
        self.assertEqual((events[0].name, events[0].extended), ("client.test", True))
        self.assertEqual(
            out,
            b"250-lda.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n"
            b"250-CHUNKING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 1000\r\n",
        )
        self.assertEqual(conn.heloName, "client.test")

    def test_heloEhloRefused(self) -> None:
        """HELO and EHLO are refused with 500 in LMTP; LHLO is not SMTP."""
        _, out = run(lmtp(), b"HELO c\r\nEHLO c\r\nMAIL FROM:<>\r\n")
        self.assertEqual(
            out,
            b"500 5.5.1 This is LMTP: use LHLO\r\n" * 2
            + b"503 5.5.1 Polite people say LHLO first\r\n",
        )
        conn = serverConnection("mx.test")
        conn.greet()
        _, out = run(conn, b"LHLO c\r\n")
        self.assertTrue(out.endswith(b"500 5.5.1 Command unrecognized\r\n"))

    def test_lhloSyntax(self) -> None:
        """LHLO needs a name."""
        _, out = run(lmtp(), b"LHLO\r\n")
        self.assertEqual(out, b"501 5.5.4 Syntax: LHLO hostname\r\n")

    def test_dataWithoutRecipient(self) -> None:
        """DATA without an accepted recipient is 503 (RFC 2033 §4.2)."""
        _, out = run(lmtp(), b"LHLO c\r\nMAIL FROM:<>\r\nDATA\r\n")
        self.assertTrue(out.endswith(b"503 5.5.1 No valid recipients\r\n"))


class FinalDotTests(unittest.TestCase):
    """One reply per accepted recipient after the final dot."""

    def test_recipientsInOrder(self) -> None:
        """
        The accepted recipients wait for their replies in RCPT order; each
        reply answers the first; the last ends the transaction and the
        pipelined commands are read again.
        """
        conn = lmtp()
        atFinalDot(conn, (b"a@l.test", b"x@l.test", b"b@l.test"))
        self.assertIs(conn.state, State.END_OF_DATA)
        self.assertEqual(conn.acceptedRecipients, ("a@l.test", "b@l.test"))
        self.assertEqual(conn.unansweredRecipients, ("a@l.test", "b@l.test"))
        self.assertIs(conn.nextEvent(), sm.PAUSED)
        conn.rejectRecipient(452, "4.2.2", "mailbox full")
        self.assertEqual(conn.unansweredRecipients, ("b@l.test",))
        self.assertTrue(conn.awaitingReply)
        conn.acceptRecipient()
        self.assertFalse(conn.awaitingReply)
        self.assertIs(conn.state, State.READY)
        self.assertEqual(conn.unansweredRecipients, ())
        self.assertEqual(conn.acceptedRecipients, ())
        self.assertIs(conn.nextEvent(), sm.NEED_DATA)
        self.assertEqual(
            conn.dataToSend(),
            b"452 4.2.2 mailbox full\r\n"
            b"250 2.0.0 <b@l.test>... Message delivered\r\n"
            b"250 2.0.0 OK\r\n",
        )

    def test_acceptAll(self) -> None:
        """Accepting the final dot answers every recipient with 250."""
        conn = lmtp()
        atFinalDot(conn)
        conn.accept()
        self.assertEqual(
            conn.dataToSend(),
            b"250 2.0.0 <a@l.test>... Message delivered\r\n"
            b"250 2.0.0 <b@l.test>... Message delivered\r\n",
        )
        self.assertIs(conn.state, State.READY)

    def test_rejectAll(self) -> None:
        """
        Rejecting the final dot gives the same reply to every recipient
        still due one, softbounce applied.
        """
        conn = lmtp(softbounce=True)
        atFinalDot(conn)
        conn.acceptRecipient("done")
        conn.reject(554, "5.6.0", "bad content")
        self.assertEqual(
            conn.dataToSend(),
            b"250 2.0.0 done\r\n454 4.6.0 bad content\r\n",
        )
        self.assertIs(conn.state, State.READY)

    def test_noRecipientDue(self) -> None:
        """A recipient reply with nothing due is a loud error."""
        conn = lmtp()
        self.assertRaises(RuntimeError, conn.acceptRecipient)
        run(conn, b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@l.test>\r\n")
        self.assertRaises(RuntimeError, conn.rejectRecipient, 550, "5.1.1", "no")

    def test_smtpOneReply(self) -> None:
        """In SMTP mode the final dot has one reply and no recipients due."""
        conn = serverConnection("mx.test")
        conn.greet()
        run(
            conn,
            b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@l.test>\r\nRCPT TO:<b@l.test>\r\n",
        )
        conn.dataToSend()
        conn.receiveData(b"DATA\r\n")
        conn.nextEvent()
        conn.accept()
        conn.receiveData(b".\r\n")
        self.assertIsInstance(conn.nextEvent(), sm.EndOfData)
        self.assertEqual(conn.unansweredRecipients, ())
        self.assertEqual(conn.acceptedRecipients, ("a@l.test", "b@l.test"))
        conn.accept()
        self.assertTrue(
            conn.dataToSend().endswith(b"250 2.0.0 Message accepted for delivery\r\n")
        )

    def test_strictContent(self) -> None:
        """
        The content rules of SMTP hold in LMTP: bare LF, NUL and long
        lines are reported with the final dot and the content not passed
        on; the reply to each recipient is the caller's.
        """
        for body, flag in [
            (b"a\nb\r\n", "badLineEnd"),
            (b"a\x00b\r\n", "nul"),
            (b"a" * 999 + b"\r\n", "longLine"),
        ]:
            conn = lmtp()
            conn.receiveData(
                b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@l.test>\r\nDATA\r\n"
                + body
                + b".\r\n"
            )
            events = []
            while True:
                event = conn.nextEvent()
                events.append(event)
                if isinstance(event, sm.EndOfData):
                    break
                if event.needsReply:
                    conn.accept()
            self.assertFalse([e for e in events if isinstance(e, sm.DataChunk)])
            self.assertTrue(getattr(events[-1], flag), flag)
            self.assertIsNotNone(events[-1].refusal())
