# -*- test-case-name: smx.mail.test.test_integration_chunking -*-
"""
Integration tests of CHUNKING (RFC 3030, BDAT) over real loopback
sockets:

  - a raw socket client sending pipelined BDAT chunks of odd sizes (chunk
    boundaries inside CRLF and inside C{<CRLF>.<CRLF>}) to an SMTPS
    listener with the in-memory fakes of QMGR, CDB and SMAR (swaks has no
    BDAT);
  - a private Postfix (Debian package postfix; its smtpd offers CHUNKING
    since 3.4, its smtp client never sends BDAT, not even in 3.7) and
    C{twistd -n smx}: a raw client sends BDAT to smx, whose SMTPC sends
    BDAT to Postfix's smtpd, which relays to smtp-sink (the content is
    checked there); Postfix's smtp client relays to smx (DATA, smx offers
    CHUNKING), which delivers over LMTP (with BDAT) to its own lmtpd.
    Postfix's C{debug_peer_list} log shows the commands on the wire.
"""

from __future__ import annotations

import os
import socket
import time
from typing import List

from twisted.internet import defer, threads
from twisted.trial import unittest

from smx.mail.test.test_integration_smtps import ServerMixin
from smx.test.postfix import POSTFIX, PrivatePostfix
from smx.test.mta import (
    MTA,
    SMTP_SINK,
    SmtpSink,
    configuration,
    freePort,
    missing,
    swaks,
    tempDirectory,
    until,
)

OPEN = b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\n"

#: a message whose chunks hold what would end DATA and would be commands
SMUGGLED = (
    b"Subject: chunks\r\nMessage-Id: <c@b.test>\r\n\r\nline\r\n.\r\n"
    b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@local.test>\r\nDATA\r\n"
    b"..dot\r\n.\r\nend\r\n"
)


def chunked(message: bytes, sizes: List[int]) -> List[bytes]:
    """
    C{message} as BDAT commands with chunks of C{sizes} (the rest LAST),
    in pieces split inside the commands and the chunks.
    """
    wire = b""
    pos = 0
    for size in sizes:
        wire += b"BDAT %d\r\n" % (size,) + message[pos : pos + size]
        pos += size
    wire += b"BDAT %d LAST\r\n" % (len(message) - pos,) + message[pos:]
    return [wire[i : i + 11] for i in range(0, len(wire), 11)]


def session(port: int, pieces: List[bytes]) -> bytes:
    """
    Send every piece (one write each, no delay between them), then QUIT;
    return everything the server said until it closed.
    """
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for piece in pieces:
            s.sendall(piece)
            time.sleep(0.001)
        s.sendall(b"QUIT\r\n")
        out = b""
        while True:
            more = s.recv(65536)
            if not more:
                return out
            out += more
    finally:
        s.close()


class ListenerTests(ServerMixin, unittest.TestCase):
    """A real SMTPS listener with the fakes behind it, a raw socket client."""

    @defer.inlineCallbacks
    def test_pipelinedChunks(self):
        """
        Pipelined BDAT chunks of odd sizes, sent in small pieces: one
        message, stored verbatim after the Received header smx adds (no
        dot removed, nothing in it taken for a command), one envelope.
        """
        port = self.startServer()
        pieces = [OPEN] + chunked(SMUGGLED, [17, 1, 5, 2, 30])
        out = yield threads.deferToThread(session, port, pieces)
        self.assertIn(b"250 2.0.0 1 octets received\r\n", out)
        self.assertEqual(out.count(b"octets received"), 5)
        self.assertIn(b"Message accepted for delivery\r\n221 ", out)
        self.assertEqual(len(self.qmgr.envelopes), 1)
        [content] = self.store.contents.values()
        self.assertTrue(content.startswith(b"Received: from client.test"))
        self.assertTrue(content.endswith(b"\r\n" + SMUGGLED))
        self.assertEqual(
            [r["address"] for r in self.qmgr.envelopes[0]["recipients"]],
            ["u@local.test"],
        )

    @defer.inlineCallbacks
    def test_tooBig(self):
        """
        BDAT content over max_message_size: 552 to LAST, after every
        declared octet was read (the next message on the session is taken).
        """
        port = self.startServer(maxMessageSize=1000)
        big = b"Subject: big\r\n\r\n" + (b"x" * 98 + b"\r\n") * 12
        pieces = [OPEN, b"BDAT %d\r\n" % (len(big),) + big]
        pieces.append(b"BDAT 2 LAST\r\n\r\n" + OPEN[18:])
        pieces.append(b"BDAT 13 LAST\r\nSubject: ok\r\n")
        out = yield threads.deferToThread(session, port, pieces)
        self.assertIn(b"552 5.3.4 Message size exceeds fixed maximum", out)
        self.assertEqual(out.count(b"Message accepted for delivery"), 1)
        self.assertEqual(len(self.qmgr.envelopes), 1)
        [content] = self.store.contents.values()
        self.assertTrue(content.endswith(b"\r\nSubject: ok\r\n"))

    @defer.inlineCallbacks
    def test_bareLF(self):
        """A bare LF in BDAT content (no BINARYMIME): 554 5.6.11, nothing kept."""
        port = self.startServer()
        pieces = [OPEN, b"BDAT 12 LAST\r\nSubject: x\n\n"]
        out = yield threads.deferToThread(session, port, pieces)
        self.assertIn(b"554 5.6.11 Message contains bare CR or LF", out)
        self.assertEqual(self.qmgr.envelopes, [])
        self.assertEqual(self.store.contents, {})


def privatePostfix(
    testCase, root: str, relayPort: int, sinkPort: int
) -> PrivatePostfix:
    """
    A private Postfix listening on 127.0.0.1: mail for C{pf.test} goes to
    C{[127.0.0.2]:sinkPort}, everything else to C{[127.0.0.1]:relayPort}.
    """
    port = freePort()

    def listeners(fields: List[str]) -> List[List[str]]:
        return [["127.0.0.1:%d" % (port,)] + fields[1:]]

    settings = (
        "relayhost = [127.0.0.1]:%d\n"
        "transport_maps = inline:{pf.test=smtp:[127.0.0.2]:%d}\n"
        % (relayPort, sinkPort)
    )
    return PrivatePostfix(testCase, root, port, settings, listeners)


class PostfixTests(unittest.TestCase):
    """
    C{twistd -n smx} between swaks and a private Postfix: BDAT in both
    directions, seen on the wire in Postfix's log.
    """

    def setUp(self):
        reason = missing(POSTFIX, SMTP_SINK, "/usr/bin/swaks")
        if reason:
            raise unittest.SkipTest(reason)
        if os.geteuid() != 0:
            raise unittest.SkipTest("a private Postfix needs root")
        root = tempDirectory(self)
        self.mta = MTA(self, os.path.join(root, "smx"))
        self.sink = SmtpSink(self, root)
        self.sink.start()
        self.postfix = privatePostfix(
            self, os.path.join(root, "pf"), self.mta.port, self.sink.port
        )
        self.mta.write(
            configuration(
                self.mta.port, smtpc="remote_port = %d;" % (self.postfix.port,)
            ),
            mt="localhost lmtp:\npf.test [127.0.0.1]\n",
            aliases="alice: local:\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.postfix.start()
        self.mta.start()

    @defer.inlineCallbacks
    def test_postfixToSmx(self):
        """
        Postfix's smtp client relays to smx (with DATA: it has no BDAT,
        CHUNKING offered or not); smx delivers to its lmtpd (with BDAT);
        the message arrives once, dots and smuggling-like lines intact.
        """
        body = "line\n.\nMAIL FROM:<evil@x.test>\n..dots\nPF TO SMX MARK"
        out, err, status = yield swaks(
            self.postfix.port,
            "--from",
            "carol@client.test",
            "--to",
            "alice@localhost",
            "--body",
            body,
        )
        self.assertEqual(status, 0, out)
        ok = yield until(lambda: self.mta.maildir("alice"), timeout=30)
        self.assertTrue(ok, self.mta.log() + self.postfix.report())
        [message] = self.mta.maildir("alice")
        self.assertIn(
            b"line\n.\nMAIL FROM:<evil@x.test>\n..dots\nPF TO SMX MARK", message
        )
        log = self.postfix.log()
        self.assertIn("]:%d: 250-CHUNKING" % (self.mta.port,), log)
        self.assertRegex(log, r"to=<alice@localhost>.*status=sent")

    @defer.inlineCallbacks
    def test_bdatThroughSmx(self):
        """
        A raw client sends pipelined BDAT chunks of odd sizes to
        C{twistd -n smx}; smx's SMTPC relays with BDAT to Postfix's smtpd,
        which relays to smtp-sink: the content arrives there as sent, with
        smx's Received header, the chunk boundaries and dots invisible.
        """
        message = SMUGGLED.replace(b"end\r\n", b"BDAT MARK\r\n")
        pieces = [OPEN.replace(b"u@local.test", b"bob@pf.test")]
        pieces += chunked(message, [17, 1, 5, 2, 30])
        out = yield threads.deferToThread(session, self.mta.port, pieces)
        self.assertEqual(out.count(b"octets received"), 5, out)
        self.assertIn(b"Message accepted for delivery\r\n221 ", out)
        ok = yield until(lambda: self.sink.containing(b"BDAT MARK"), timeout=30)
        self.assertTrue(ok, self.mta.log() + self.postfix.report())
        [received] = self.sink.containing(b"BDAT MARK")
        # Postfix's cleanup adds Date: and From:, the body is as it was sent
        body = message.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
        lines = received.replace(b"\r\n", b"\n")
        self.assertTrue(lines.endswith(b"\n\n" + body + b"\n"), received)
        self.assertIn(b"Message-Id: <c@b.test>", received)
        self.assertIn(b"by smx.test", received)
        log = self.postfix.log()
        self.assertRegex(log, r"< [^ ]+\[127\.0\.0\.1\]: BDAT \d+ LAST")
        self.assertNotRegex(log, r"< [^ ]+\[127\.0\.0\.1\]: DATA")
        self.assertNotIn(b"evil", b"".join(self.sink.messages()).split(b"BDAT MARK")[1])
