# -*- test-case-name: smx.mail.test.test_serverchunking -*-
"""
Tests for CHUNKING (RFC 3030, C{BDAT}) in the sans-I/O server machine
L{smx.mail.server.ServerConnection}, in SMTP and in LMTP mode.
"""

from __future__ import annotations

import os
from typing import List, Tuple

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from smx.log import Logger, MemorySink
from smx.mail import server as sm
from smx.mail.lmtpd import LMTPFactory
from smx.mail.test.test_server import inTransaction, run, started
from smx.mail.test.test_smtps import Harness
from smx.mail.testing import defaultLMTPServerSettings, serverConnection


def feed(conn: sm.ServerConnection, pieces: List[bytes]) -> Tuple[list, bytes]:
    """
    Feed C{pieces} one after the other (accepting every event); return
    every event and every reply.
    """
    events = []  # type: list
    out = b""
    for piece in pieces:
        more, written = run(conn, piece)
        events.extend(e for e in more if e not in (sm.NEED_DATA, sm.PAUSED))
        out += written
    return events, out


def content(events: list) -> bytes:
    """The content the L{sm.DataChunk} events carried."""
    return b"".join(e.data for e in events if isinstance(e, sm.DataChunk))


def ends(events: list) -> List[sm.EndOfData]:
    """The L{sm.EndOfData} events."""
    return [e for e in events if isinstance(e, sm.EndOfData)]


#: a message whose chunks hold what would end DATA and would be commands
SMUGGLED = (
    b"Subject: x\r\n\r\nline\r\n.\r\nMAIL FROM:<evil@x.test>\r\n"
    b"RCPT TO:<v@y.test>\r\nDATA\r\n..dot\r\n.\r\n"
)


def chunked(message: bytes, sizes: List[int]) -> bytes:
    """C{message} as pipelined BDAT commands of C{sizes} (the rest LAST)."""
    out = []
    pos = 0
    for size in sizes:
        out.append(b"BDAT %d\r\n" % (size,) + message[pos : pos + size])
        pos += size
    out.append(b"BDAT %d LAST\r\n" % (len(message) - pos,) + message[pos:])
    return b"".join(out)


class EhloTests(unittest.TestCase):
    """CHUNKING is offered, BINARYMIME is not."""

    def test_offered(self) -> None:
        """EHLO and LHLO list CHUNKING; BINARYMIME is neither listed nor taken."""
        _, out = run(started(), b"EHLO c\r\n")
        self.assertIn(b"250-CHUNKING\r\n", out)
        self.assertNotIn(b"BINARYMIME", out)
        conn = serverConnection("lda.test", lmtp=True)
        conn.greet()
        _, out = run(conn, b"LHLO c\r\n")
        self.assertIn(b"250-CHUNKING\r\n", out)
        _, out = run(started(), b"EHLO c\r\nMAIL FROM:<a@b.test> BODY=BINARYMIME\r\n")
        self.assertIn(b"555 5.5.4 Unsupported BODY type\r\n", out)


class ChunkTests(unittest.TestCase):
    """BDAT content is taken by count and checked like DATA content."""

    def test_chunks(self) -> None:
        """
        The first BDAT is a L{sm.DataCommand} with its size; a chunk
        without LAST is answered by the machine, the LAST chunk ends with
        L{sm.EndOfData}.
        """
        conn = inTransaction()
        events, out = feed(conn, [b"BDAT 5\r\nhello"])
        self.assertIsInstance(events[0], sm.DataCommand)
        self.assertEqual((events[0].chunk, events[0].last), (5, False))
        self.assertEqual(out, b"250 2.0.0 5 octets received\r\n")
        self.assertIs(conn.state, sm.State.BDAT)
        self.assertTrue(conn.receivingData)
        events2, out = feed(conn, [b"BDAT 8 LAST\r\n", b" world\r\n"])
        self.assertEqual(content(events + events2), b"hello world\r\n")
        self.assertEqual(ends(events2)[0].size, 13)
        self.assertEqual(out, b"250 2.0.0 Message accepted for delivery\r\n")
        self.assertIs(conn.state, sm.State.READY)
        self.assertFalse(conn.receivingData)

    def test_everySplit(self) -> None:
        """
        Pipelined chunks of odd sizes (boundaries inside CRLF and inside
        C{<CRLF>.<CRLF>}) received in two pieces split at every octet give
        the same content, verbatim (nothing unstuffed, no dot ends it, no
        line in it is a command), and the same replies.
        """
        for sizes in ([], [1], [13, 1, 1], [19, 2, 3], [17, 1, 2, 2, 7]):
            wire = chunked(SMUGGLED, sizes) + b"QUIT\r\n"
            expected = None
            for split in range(len(wire) + 1):
                conn = inTransaction()
                events, out = feed(conn, [wire[:split], wire[split:]])
                self.assertEqual(content(events), SMUGGLED, (sizes, split))
                [end] = ends(events)
                self.assertFalse(end.badLineEnd, (sizes, split))
                self.assertEqual(end.size, len(SMUGGLED))
                self.assertNotIn(sm.MailFrom, [type(e) for e in events])
                if expected is None:
                    expected = out
                self.assertEqual(out, expected, (sizes, split))
            assert expected is not None
            self.assertEqual(expected.count(b"octets received"), len(sizes))
            self.assertTrue(
                expected.endswith(b"221 2.0.0 mx.test closing connection\r\n")
            )

    def test_lastEmpty(self) -> None:
        """C{BDAT 0 LAST} ends the message, alone or after chunks."""
        events, out = feed(inTransaction(), [b"BDAT 0 LAST\r\n"])
        self.assertEqual(ends(events)[0].size, 0)
        self.assertEqual(out, b"250 2.0.0 Message accepted for delivery\r\n")
        events, out = feed(inTransaction(), [b"BDAT 3\r\na\r\nBDAT 0 LAST\r\n"])
        self.assertEqual(content(events), b"a\r\n")
        self.assertEqual(len(ends(events)), 1)

    def test_lastCaseInsensitive(self) -> None:
        """C{last} is LAST."""
        events, _ = feed(inTransaction(), [b"BDAT 3 last\r\na\r\n"])
        self.assertEqual(len(ends(events)), 1)

    def test_problems(self) -> None:
        """
        Bare CR or LF (also a CR ending the LAST chunk), NUL, long lines
        and the size limit are reported with L{sm.EndOfData} as for DATA;
        a CRLF split between chunks is a line end.
        """
        cases = [
            (b"BDAT 3\r\na\r\rBDAT 2 LAST\r\n\r\n", "badLineEnd"),
            (b"BDAT 3 LAST\r\na\nb", "badLineEnd"),
            (b"BDAT 3\r\nab\rBDAT 1 LAST\r\nc", "badLineEnd"),
            (b"BDAT 3 LAST\r\nab\r", "badLineEnd"),
            (b"BDAT 4 LAST\r\na\0\r\n", "nul"),
            (b"BDAT 1003 LAST\r\n" + b"x" * 1001 + b"\r\n", "longLine"),
            (
                b"BDAT 1200\r\n"
                + b"x\r\n" * 400
                + b"BDAT 1200 LAST\r\n"
                + b"y\r\n" * 400,
                "tooBig",
            ),
            (b"BDAT 3\r\nab\rBDAT 1 LAST\r\n\n", None),
        ]
        for wire, problem in cases:
            for split in range(0, len(wire) + 1, 1 + len(wire) // 100):
                conn = inTransaction(maxMessageSize=2000)
                events, out = feed(conn, [wire[:split], wire[split:], b"NOOP\r\n"])
                [end] = ends(events)
                found = [
                    name
                    for name in ("badLineEnd", "nul", "longLine", "tooBig")
                    if getattr(end, name)
                ]
                self.assertEqual(found, [problem] if problem else [], (wire, split))
                # every declared octet was read: NOOP is the next command
                self.assertTrue(out.endswith(b"250 2.0.0 OK\r\n"), (wire, split))


class SequenceTests(unittest.TestCase):
    """BDAT out of sequence, refused, malformed."""

    def test_refusedChunkSkipped(self) -> None:
        """
        A BDAT out of sequence is refused with 503 (554 without
        recipients, as DATA) and its octets are read and dropped, never
        taken for commands.
        """
        cases = [
            (started(), b"EHLO c\r\n", b"503 5.5.1 Need MAIL command\r\n"),
            (
                started(),
                b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n",
                b"554 5.5.1 No valid recipients\r\n",
            ),
        ]
        for conn, setup, reply in cases:
            run(conn, setup)
            events, out = feed(
                conn, [b"BDAT 6\r\nRSET\r\n", b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n"]
            )
            self.assertEqual(out, reply * 2 + b"250 2.0.0 OK\r\n")
            self.assertEqual(events, [])

    def test_dataAfterBdat(self) -> None:
        """DATA, MAIL and RCPT between chunks are 503; BDAT goes on."""
        conn = inTransaction()
        feed(conn, [b"BDAT 3\r\nab\n"])
        _, out = feed(conn, [b"DATA\r\nRCPT TO:<x@y.test>\r\nMAIL FROM:<a@b.test>\r\n"])
        self.assertEqual(
            out,
            b"503 5.5.1 DATA not allowed during a BDAT transfer\r\n"
            b"503 5.5.1 RCPT not allowed during a BDAT transfer\r\n"
            b"503 5.5.1 MAIL not allowed during a BDAT transfer\r\n",
        )
        events, out = feed(conn, [b"BDAT 0 LAST\r\n"])
        self.assertEqual(len(ends(events)), 1)

    def test_rsetBetweenChunks(self) -> None:
        """RSET between chunks ends the transaction."""
        conn = inTransaction()
        feed(conn, [b"BDAT 3\r\nab\n"])
        events, out = feed(conn, [b"RSET\r\nBDAT 1 LAST\r\nx"])
        self.assertEqual(
            out, b"250 2.0.0 Reset state\r\n503 5.5.1 Need MAIL command\r\n"
        )
        self.assertIs(conn.state, sm.State.READY)

    def test_rejectedFirstChunk(self) -> None:
        """
        A rejected first BDAT is answered, its octets dropped, and the
        transaction ends: pipelined later chunks get 503.
        """
        conn = inTransaction()

        def answer(conn, event):
            if isinstance(event, sm.DataCommand):
                conn.reject(451, "4.3.0", "not now")
                return True
            return False

        events, out = run(
            conn,
            b"BDAT 10\r\nMAIL FROM:BDAT 4 LAST\r\nRSETNOOP\r\n",
            answer,
        )
        self.assertEqual(
            out,
            b"451 4.3.0 not now\r\n503 5.5.1 Need MAIL command\r\n250 2.0.0 OK\r\n",
        )
        self.assertIs(conn.state, sm.State.READY)
        self.assertEqual(ends(events), [])

    def test_syntax(self) -> None:
        """
        A BDAT without a readable size is 501 and closes the session: the
        octets that follow cannot be told from commands.
        """
        for line in (
            b"BDAT",
            b"BDAT x",
            b"BDAT -1",
            b"BDAT 1 FIRST",
            b"BDAT " + b"9" * 19,
        ):
            conn = inTransaction()
            events, out = run(conn, line + b"\r\nNOOP\r\n")
            self.assertEqual(
                out, b"501 5.5.4 Syntax: BDAT size [LAST]; closing connection\r\n"
            )
            self.assertIs(events[-1], sm.CLOSE)
            self.assertTrue(conn.closed)


class LMTPTests(unittest.TestCase):
    """BDAT in LMTP mode (RFC 2033 with RFC 3030)."""

    def test_oneReplyPerRecipient(self) -> None:
        """After BDAT LAST, one reply per accepted recipient, in RCPT order."""
        conn = serverConnection("lda.test", lmtp=True)
        conn.greet()
        run(
            conn,
            b"LHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@l.test>\r\n"
            b"RCPT TO:<y@l.test>\r\n",
        )
        conn.dataToSend()

        def answer(conn, event):
            if isinstance(event, sm.EndOfData):
                self.assertEqual(conn.unansweredRecipients, ("x@l.test", "y@l.test"))
                conn.acceptRecipient()
                conn.rejectRecipient(550, "5.1.1", "no such user")
                return True
            return False

        events, out = run(conn, b"BDAT 2\r\nabBDAT 2 LAST\r\n\r\n", answer)
        self.assertEqual(
            out,
            b"250 2.0.0 2 octets received\r\n"
            b"250 2.0.0 <x@l.test>... Message delivered\r\n"
            b"550 5.1.1 no such user\r\n",
        )
        self.assertIs(conn.state, sm.State.READY)

    def test_noRecipient(self) -> None:
        """BDAT without a recipient is 503 in LMTP (as DATA)."""
        conn = serverConnection("lda.test", lmtp=True)
        conn.greet()
        _, out = run(
            conn, b"LHLO c\r\nMAIL FROM:<a@b.test>\r\nBDAT 1 LAST\r\nxNOOP\r\n"
        )
        self.assertIn(b"503 5.5.1 No valid recipients\r\n250 2.0.0 OK\r\n", out)


class LMTPDeliveryTests(unittest.TestCase):
    """
    BDAT to smx's Maildir delivery server (L{smx.mail.lmtpd.LMTPFactory},
    the LMTP mode of the machine), through a string transport.
    """

    def setUp(self) -> None:
        self.base = self.mktemp()
        factory = LMTPFactory(
            defaultLMTPServerSettings(
                maildirBase=self.base, hostname="lmtp.test", maxMessageSize=1000
            ),
            Logger("lmtpd", sink=MemorySink()),
            MemoryReactorClock(),
        )
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        """Feed C{data}; return the replies."""
        self.transport.clear()
        self.proto.dataReceived(data)
        return self.transport.value()

    def test_deliver(self) -> None:
        """
        Pipelined chunks: one reply per recipient after LAST; the message
        in each Maildir as sent (no dot removed), with LF line ends.
        """
        self.assertIn(b"250-CHUNKING", self.send(b"LHLO me\r\n"))
        message = b"Subject: t\r\n\r\n.\r\n..dot\r\n"
        reply = self.send(
            b"MAIL FROM:<s@x.test>\r\nRCPT TO:<alice@l.test>\r\n"
            b"RCPT TO:<bob@l.test>\r\n" + chunked(message, [13, 3])
        )
        self.assertTrue(
            reply.endswith(
                b"250 2.0.0 13 octets received\r\n250 2.0.0 3 octets received\r\n"
                b"250 2.0.0 <alice@l.test> delivered\r\n"
                b"250 2.0.0 <bob@l.test> delivered\r\n"
            ),
            reply,
        )
        for user in ("alice", "bob"):
            new = os.path.join(self.base, user, "Maildir", "new")
            [name] = os.listdir(new)
            with open(os.path.join(new, name), "rb") as f:
                self.assertTrue(f.read().endswith(b"Subject: t\n\n.\n..dot\n"))

    def test_tooBig(self) -> None:
        """Over max_message_size: one 552 per recipient, nothing delivered."""
        self.send(b"LHLO me\r\nMAIL FROM:<>\r\nRCPT TO:<u@l>\r\nRCPT TO:<v@l>\r\n")
        reply = self.send(b"BDAT 1002 LAST\r\n" + b"x\r\n" * 334 + b"NOOP\r\n")
        self.assertEqual(reply.count(b"552 5.3.4"), 2)
        self.assertTrue(reply.endswith(b"250 2.0.0 OK\r\n"))
        self.assertFalse(os.path.exists(os.path.join(self.base, "u")))


class SMTPServerProtocolTests(unittest.TestCase):
    """
    BDAT through SMTPS's adapter (L{smx.mail.smtps}, L{smx.mail.commit})
    with the in-memory fakes of QMGR and CDB.
    """

    def start(self, **settings) -> Harness:
        h = Harness(**settings)
        h.connect()
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\n")
        return h

    def test_waitForCommit(self) -> None:
        """
        Chunks without LAST are answered at once; the 250 to LAST only
        once content and envelope are committed; the content is stored
        after a Received header.
        """
        h = self.start()
        h.qmgr.pending = []
        out = h.send(b"BDAT 4\r\nab\r\n")
        self.assertEqual(out, b"250 2.0.0 4 octets received\r\n")
        self.assertEqual(h.send(b"BDAT 3 LAST\r\nc\r\nQUIT\r\n"), b"")
        [envelope] = h.qmgr.envelopes
        h.qmgr.pending[0].callback(None)
        out = h.take()
        self.assertEqual(
            out,
            b"250 2.0.0 %s Message accepted for delivery\r\n"
            b"221 2.0.0 mx.test closing connection\r\n" % (envelope["id"].encode(),),
        )
        content = h.store.contents[envelope["id"]]
        self.assertTrue(content.startswith(b"Received: from c "))
        self.assertTrue(content.endswith(b"\r\nab\r\nc\r\n"))

    def test_refused(self) -> None:
        """Refused content (NUL): the reply to LAST, nothing stored."""
        h = self.start()
        out = h.send(b"BDAT 2\r\na\0BDAT 2 LAST\r\n\r\n")
        self.assertEqual(
            out,
            b"250 2.0.0 2 octets received\r\n"
            b"554 5.6.0 Message contains NUL characters, rejected\r\n",
        )
        self.assertEqual(h.qmgr.envelopes, [])
        self.assertEqual(h.store.contents, {})

    def test_rsetStopsMessageTimer(self) -> None:
        """
        max_message_time runs from the first BDAT to LAST; RSET between
        chunks ends the transaction and the timer.
        """
        h = self.start(ioTimeout=30, maxMessageTime=60)
        h.send(b"BDAT 3\r\nab\n")
        for i in range(5):
            h.clock.advance(10)
            h.send(b"NOOP\r\n")
        h.clock.advance(10)
        self.assertIn(b"421 4.4.2 mx.test Error: message transfer time", h.take())
        h = self.start(ioTimeout=30, maxMessageTime=60)
        h.send(b"BDAT 3\r\nab\nRSET\r\n")
        for i in range(7):
            h.clock.advance(10)
            h.send(b"NOOP\r\n")
        self.assertFalse(h.transport.disconnecting)
        self.assertEqual(h.store.contents, {})
