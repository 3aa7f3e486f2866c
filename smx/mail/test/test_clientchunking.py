# -*- test-case-name: smx.mail.test.test_clientchunking -*-
"""
Tests for CHUNKING (RFC 3030) in the sans-I/O client machine
L{smx.mail.client.ClientMachine} and its BDAT content encoding, and in
the adapter L{smx.mail.clientprotocol.ClientProtocol} (a string transport).
"""

from __future__ import annotations

import io
from typing import Any, List

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from smx.mail import clientprotocol
from smx.mail.client import (
    BodyEncoder,
    ClientMachine,
    ReplyParser,
    SendBody,
    TransactionDone,
)
from smx.mail.test.test_client import r, sent

EHLO_CHUNKING = b"250-mx.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SIZE"
EHLO_NO_PIPELINING = b"250-mx.test\r\n250-CHUNKING\r\n250 SIZE"


def ready(ehlo: bytes = EHLO_CHUNKING, lmtp: bool = False) -> ClientMachine:
    """A machine in state C{ready} after C{ehlo}."""
    m = ClientMachine("me.test", lmtp=lmtp)
    m.replyReceived(r(b"220 mx.test ESMTP"))
    m.replyReceived(ReplyParser().feed(ehlo + b"\r\n")[0])
    assert m.state == "ready"
    return m


def replies(m: ClientMachine, *lines: bytes) -> List[Any]:
    """Feed every reply line; return every event."""
    events = []  # type: List[Any]
    for line in lines:
        events.extend(m.replyReceived(r(line)))
    return events


class EncoderTests(SynchronousTestCase):
    """L{BodyEncoder} without dot-stuffing makes BDAT content."""

    def test_noDots(self) -> None:
        """Line ends become CRLF; dots stay as they are; no final dot."""
        e = BodyEncoder(dotStuffing=False)
        out = e.encode(b".a\n\r\n.\r\nb\r") + e.encode(b"c") + e.finish()
        self.assertEqual(out, b".a\r\n\r\n.\r\nb\r\nc\r\n")
        e = BodyEncoder(dotStuffing=False)
        self.assertEqual(e.encode(b"") + e.finish(), b"")


class MachineTests(SynchronousTestCase):
    """The BDAT dialogue of L{ClientMachine}."""

    def test_pipelined(self) -> None:
        """
        MAIL and RCPT go in one write without DATA; after their replies,
        L{SendBody}; the chunks are sent without waiting; the reply to
        LAST is the final reply.
        """
        m = ready()
        events = m.startTransaction("a@b", ["c@d", "e@f"], 10)
        self.assertEqual(
            sent(events),
            b"MAIL FROM:<a@b> SIZE=10\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\n",
        )
        self.assertEqual(replies(m, b"250 ok", b"550 5.1.1 no"), [])
        [body] = replies(m, b"250 ok")
        self.assertIsInstance(body, SendBody)
        self.assertTrue(m.chunking)
        self.assertEqual(sent(m.sendChunk(b"abc", False)), b"BDAT 3\r\nabc")
        self.assertEqual(sent(m.sendChunk(b"d\r\n", True)), b"BDAT 3 LAST\r\nd\r\n")
        self.assertEqual(replies(m, b"250 2.0.0 3 octets received"), [])
        [done] = replies(m, b"250 2.0.0 queued")
        self.assertIsInstance(done, TransactionDone)
        self.assertEqual(
            [(x["status"], x["where"]) for x in done.results],
            [("perm", "rcpt"), ("ok", "final_dot")],
        )
        self.assertTrue(done.reusable)
        self.assertEqual(m.state, "ready")

    def test_notPipelined(self) -> None:
        """Without PIPELINING, each chunk waits for the previous reply."""
        m = ready(EHLO_NO_PIPELINING)
        self.assertEqual(
            sent(m.startTransaction("a@b", ["c@d"])), b"MAIL FROM:<a@b> SIZE=0\r\n"
        )
        self.assertEqual(sent(replies(m, b"250 ok")), b"RCPT TO:<c@d>\r\n")
        [body] = replies(m, b"250 ok")
        self.assertIsInstance(body, SendBody)
        m.sendChunk(b"ab", False)
        [again] = replies(m, b"250 2.0.0 2 octets received")
        self.assertIsInstance(again, SendBody)
        m.sendChunk(b"", True)
        [done] = replies(m, b"250 2.0.0 queued")
        self.assertEqual(done.results[0]["status"], "ok")

    def test_refusedChunk(self) -> None:
        """
        A refused chunk fails every accepted recipient with its reply; the
        replies to chunks already written are read and ignored; the
        session is not reused.
        """
        m = ready()
        m.startTransaction("a@b", ["c@d"])
        replies(m, b"250 ok", b"250 ok")
        m.sendChunk(b"ab", False)
        m.sendChunk(b"cd", False)
        self.assertEqual(replies(m, b"452 4.3.1 disk full"), [])
        self.assertTrue(m.chunkFailed)
        self.assertRaises(RuntimeError, m.sendChunk, b"x", True)
        self.assertEqual(m.bodySent(), [])
        [done] = replies(m, b"503 5.5.1 Need MAIL command")
        self.assertEqual(
            done.results,
            [
                {
                    "status": "temp",
                    "code": 452,
                    "reply": "452 4.3.1 disk full",
                    "where": "data",
                }
            ],
        )
        self.assertFalse(done.reusable)

    def test_refusedAfterLast(self) -> None:
        """A chunk refused after LAST was written: its reply stands."""
        m = ready()
        m.startTransaction("a@b", ["c@d"])
        replies(m, b"250 ok", b"250 ok")
        m.sendChunk(b"ab", False)
        m.sendChunk(b"cd", True)
        [done] = replies(m, b"554 5.6.0 no", b"503 5.5.1 Need MAIL command")
        self.assertEqual(done.results[0]["reply"], "554 5.6.0 no")

    def test_notPipelinedRefused(self) -> None:
        """Without PIPELINING, a refused chunk ends the transaction at once."""
        m = ready(EHLO_NO_PIPELINING)
        m.startTransaction("a@b", ["c@d"])
        replies(m, b"250 ok", b"250 ok")
        m.sendChunk(b"ab", False)
        [done] = replies(m, b"552 5.3.4 too big")
        self.assertEqual(done.results[0]["status"], "perm")

    def test_noRecipient(self) -> None:
        """No recipient accepted: no BDAT at all."""
        m = ready()
        m.startTransaction("a@b", ["c@d"])
        [done] = replies(m, b"250 ok", b"550 5.1.1 no")
        self.assertIsInstance(done, TransactionDone)
        self.assertEqual(done.results[0]["status"], "perm")

    def test_mailRefused(self) -> None:
        """
        MAIL refused (pipelined): the transaction ends with the reply to
        the last RCPT, every recipient failed with the reply to MAIL.
        """
        m = ready()
        m.startTransaction("a@b", ["c@d", "e@f"])
        self.assertEqual(replies(m, b"451 4.3.0 not now", b"503 5.5.1 Need MAIL"), [])
        [done] = replies(m, b"503 5.5.1 Need MAIL")
        self.assertEqual([x["code"] for x in done.results], [451, 451])
        self.assertEqual(m.state, "ready")

    def test_lmtp(self) -> None:
        """LMTP: one reply per accepted recipient to the LAST chunk."""
        m = ready(b"250-lda.test\r\n250-PIPELINING\r\n250 CHUNKING", lmtp=True)
        m.startTransaction("a@b", ["c@d", "e@f", "g@h"])
        [body] = replies(m, b"250 ok", b"250 ok", b"550 5.1.1 no", b"250 ok")
        m.sendChunk(b"x\r\n", True)
        self.assertEqual(replies(m, b"250 2.0.0 delivered"), [])
        [done] = replies(m, b"452 4.2.2 full")
        self.assertEqual([x["status"] for x in done.results], ["ok", "perm", "temp"])

    def test_connectionLost(self) -> None:
        """The connection lost after LAST: every recipient fails temporarily."""
        m = ready()
        m.startTransaction("a@b", ["c@d"])
        replies(m, b"250 ok", b"250 ok")
        m.sendChunk(b"x\r\n", True)
        [done] = m.connectionFailed("connection lost")
        self.assertEqual(done.results[0]["status"], "temp")


class _PausingTransport(StringTransport):
    """A transport that pauses its producer after C{room} writes."""

    room = 1000

    def write(self, data: bytes) -> None:
        StringTransport.write(self, data)
        self.room -= 1
        if self.room == 0 and self.producer is not None:
            self.producer.pauseProducing()


class AdapterTests(SynchronousTestCase):
    """L{clientprotocol.ClientProtocol} sends the content file with BDAT."""

    def transact(
        self, ehlo: bytes, content: bytes, chunkSize: int = 7, room=1000
    ) -> Any:
        self.patch(clientprotocol, "CHUNK_SIZE", chunkSize)
        proto = clientprotocol.ClientProtocol(ClientMachine("me.test"), Clock(), 60)
        transport = _PausingTransport()
        proto.makeConnection(transport)
        proto.dataReceived(b"220 mx.test ESMTP\r\n" + ehlo + b"\r\n")
        transport.clear()
        d = proto.transaction("a@b", ["c@d"], len(content), "7BIT", io.BytesIO(content))
        transport.room = room
        transport.clear()
        proto.dataReceived(b"250 ok\r\n250 ok\r\n")
        return proto, transport, d

    def test_pipelined(self) -> None:
        """
        With PIPELINING every chunk is written at once; the last carries
        LAST; the content is CRLF-normalised, not dot-stuffed.
        """
        content = b"Subject: x\n\n.\nline\r\n.\r\nend"
        proto, transport, d = self.transact(EHLO_CHUNKING, content)
        wire = transport.value()
        expected = b"Subject: x\r\n\r\n.\r\nline\r\n.\r\nend\r\n"
        # reassemble the chunks
        out, rest, count = b"", wire, 0
        while rest:
            line, _, rest = rest.partition(b"\r\n")
            words = line.split()
            self.assertEqual(words[0], b"BDAT")
            n = int(words[1])
            out += rest[:n]
            rest = rest[n:]
            count += 1
            if len(words) == 3:
                self.assertEqual(words[2], b"LAST")
                self.assertEqual(rest, b"")
        self.assertEqual(out, expected)
        self.assertGreater(count, 3)
        proto.dataReceived(b"250 2.0.0 x\r\n" * (count - 1))
        self.assertNoResult(d)
        proto.dataReceived(b"250 2.0.0 queued\r\n")
        done = self.successResultOf(d)
        self.assertEqual(done.results[0]["status"], "ok")

    def test_notPipelined(self) -> None:
        """Without PIPELINING, one chunk per reply."""
        proto, transport, d = self.transact(EHLO_NO_PIPELINING, b"")
        self.assertEqual(transport.value(), b"RCPT TO:<c@d>\r\nBDAT 0 LAST\r\n")
        proto.dataReceived(b"250 2.0.0 queued\r\n")
        self.assertEqual(self.successResultOf(d).results[0]["status"], "ok")

    def test_notPipelinedChunks(self) -> None:
        """Without PIPELINING, each chunk after the previous one's 250."""
        proto, transport, d = self.transact(EHLO_NO_PIPELINING, b"a" * 10 + b"\r\n")
        self.assertEqual(transport.value(), b"RCPT TO:<c@d>\r\nBDAT 7\r\naaaaaaa")
        transport.clear()
        proto.dataReceived(b"250 2.0.0 7 octets received\r\n")
        self.assertEqual(transport.value(), b"BDAT 5 LAST\r\naaa\r\n")
        proto.dataReceived(b"250 2.0.0 queued\r\n")
        self.assertEqual(self.successResultOf(d).results[0]["status"], "ok")

    def test_refusedStopsSending(self) -> None:
        """
        A chunk refused while the transport is paused: no further chunk
        is written.
        """
        proto, transport, d = self.transact(EHLO_CHUNKING, b"x\r\n" * 100, room=2)
        self.assertEqual(transport.value().count(b"BDAT"), 2)
        body = proto._body
        assert body is not None
        proto.dataReceived(b"552 5.3.4 too big\r\n")
        body.resumeProducing()
        self.assertEqual(transport.value().count(b"BDAT"), 2)
        self.assertIsNone(transport.producer)
        self.assertNoResult(d)
        proto.dataReceived(b"250 2.0.0 7 octets received\r\n")
        done = self.successResultOf(d)
        self.assertEqual(done.results[0]["code"], 552)
        self.assertFalse(done.reusable)
