# -*- test-case-name: smx.mail.test.test_lmtpd -*-
"""
Tests for L{smx.mail.lmtpd} (with L{StringTransport}, files in a temporary
directory) and L{smx.scripts.lmtpd}.
"""

from __future__ import annotations

import os

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from smx.log import Logger, MemorySink
from smx.mail.lmtpd import (
    LMTPDeliveryService,
    LMTPFactory,
    UnsafeLocalPart,
    lmtpdServices,
    mailboxName,
)
from smx.mail.testing import defaultLMTPServerSettings
from smx.scripts import lmtpd as script


class MailboxNameTests(SynchronousTestCase):
    """
    Tests for L{mailboxName}.
    """

    def test_lowerAndDetail(self) -> None:
        """The local part is lower-cased and the detail removed."""
        self.assertEqual(mailboxName("Alice+Lists@Example.TEST"), "alice")
        self.assertEqual(mailboxName("bob"), "bob")

    def test_unsafe(self) -> None:
        """Names that could leave the base directory are refused."""
        for bad in ["../x@a", "a/b@c", ".hidden@x", "a..b@c", "a\x00b@c", "@x", "+x@y"]:
            self.assertRaises(UnsafeLocalPart, mailboxName, bad)


class ServerTests(SynchronousTestCase):
    """
    Tests for L{LMTPServerProtocol} (the LMTP mode of the server core with
    Maildir delivery) through L{LMTPFactory}.
    """

    def setUp(self) -> None:
        self.base = self.mktemp()
        os.makedirs(self.base)
        self.sink = MemorySink()
        factory = LMTPFactory(
            defaultLMTPServerSettings(
                maildirBase=self.base, hostname="lmtp.test", maxMessageSize=1000
            ),
            Logger("lmtpd", sink=self.sink),
            MemoryReactorClock(),
        )
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        self.transport.clear()
        self.proto.dataReceived(data)
        return self.transport.value()

    def messages(self, user: str) -> list:
        new = os.path.join(self.base, user, "Maildir", "new")
        out = []
        for name in sorted(os.listdir(new)):
            with open(os.path.join(new, name), "rb") as f:
                out.append(f.read())
        return out

    def test_greeting(self) -> None:
        """The server greets with 220 and answers LHLO with its extensions."""
        self.assertTrue(self.transport.value().startswith(b"220 lmtp.test"))
        reply = self.send(b"LHLO me\r\n")
        self.assertIn(b"250-PIPELINING", reply)
        self.assertIn(b"250 SIZE 1000", reply)

    def test_heloRefused(self) -> None:
        """HELO and EHLO are not LMTP."""
        self.assertTrue(self.send(b"EHLO me\r\n").startswith(b"500"))

    def test_deliver(self) -> None:
        """
        A pipelined transaction gets one reply per recipient after the dot;
        each message lands in the user's Maildir with Return-Path and
        Delivered-To, dot-stuffing undone and LF line ends.  A mailbox
        name that would leave the base directory is refused with 550
        5.1.3 (unquoted, C{../etc} is no RFC 5321 local part: 501).
        """
        reply = self.send(
            b"LHLO me\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<Alice+x@l.test>\r\n"
            b'RCPT TO:<"../etc"@l.test>\r\nRCPT TO:<../etc@l.test>\r\n'
            b"RCPT TO:<bob@l.test>\r\nDATA\r\n"
        )
        self.assertIn(b"550 5.1.3", reply)
        self.assertIn(b"501 5.5.2", reply)
        self.assertTrue(
            reply.endswith(b"354 send the message, end with <CRLF>.<CRLF>\r\n")
        )
        reply = self.send(b"Subject: t\r\n\r\n..dot\r\nbody\r\n.\r\n")
        self.assertEqual(
            reply,
            b"250 2.0.0 <Alice+x@l.test> delivered\r\n"
            b"250 2.0.0 <bob@l.test> delivered\r\n",
        )
        [message] = self.messages("alice")
        self.assertEqual(
            message,
            b"Return-Path: <s@x.test>\nDelivered-To: Alice+x@l.test\n"
            b"Subject: t\n\n.dot\nbody\n",
        )
        self.assertEqual(len(self.messages("bob")), 1)
        self.assertFalse(os.path.exists(os.path.join(self.base, "etc")))
        self.assertFalse(os.listdir(os.path.join(self.base, "alice", "Maildir", "tmp")))

    def test_endInPieces(self) -> None:
        """The end of data split across reads is found."""
        self.send(b"LHLO me\r\nMAIL FROM:<>\r\nRCPT TO:<u@l>\r\nDATA\r\n")
        self.assertEqual(self.send(b"a\r\n..\r\nb\r\n\r"), b"")
        self.assertEqual(self.send(b"\n.\r"), b"")
        self.assertEqual(
            self.send(b"\nNOOP\r\n"), b"250 2.0.0 <u@l> delivered\r\n250 2.0.0 OK\r\n"
        )
        [message] = self.messages("u")
        self.assertTrue(message.endswith(b"a\n.\nb\n\n"))

    def test_bareLineEnds(self) -> None:
        """
        A bare LF or CR never ends the data (C{<LF>.<LF>} is no end: SMTP
        smuggling) and content with one is refused for every recipient
        (554 5.6.11), as SMTPS refuses it; nothing is stored.
        """
        self.send(
            b"LHLO me\r\nMAIL FROM:<>\r\nRCPT TO:<u@l>\r\nRCPT TO:<v@l>\r\nDATA\r\n"
        )
        self.assertEqual(self.send(b"a\n.\nb\r\n\r"), b"")
        self.assertEqual(self.send(b"\n.\r"), b"")
        refused = b"554 5.6.11 Message contains bare CR or LF, rejected\r\n"
        self.assertEqual(self.send(b"\nNOOP\r\n"), refused * 2 + b"250 2.0.0 OK\r\n")
        self.send(b"MAIL FROM:<>\r\nRCPT TO:<u@l>\r\nDATA\r\n")
        self.assertEqual(self.send(b"a\rb\r\n.\r\n"), refused)
        self.assertFalse(os.path.exists(os.path.join(self.base, "u")))

    def test_emptyMessage(self) -> None:
        """An empty message is delivered."""
        self.send(b"LHLO me\r\nMAIL FROM:<>\r\nRCPT TO:<u@l>\r\nDATA\r\n")
        self.assertEqual(self.send(b".\r\n"), b"250 2.0.0 <u@l> delivered\r\n")

    def test_tooBig(self) -> None:
        """A message over the size limit is refused for every recipient."""
        self.send(b"LHLO me\r\nMAIL FROM:<>\r\nRCPT TO:<u@l>\r\nDATA\r\n")
        self.send(b"x" * 600 + b"\r\n")
        self.send(b"y" * 600 + b"\r\n")
        self.assertEqual(self.send(b".\r\n"), b"552 5.3.4 message too big\r\n")
        self.assertFalse(os.path.exists(os.path.join(self.base, "u")))

    def test_storeError(self) -> None:
        """A Maildir that cannot be written gives 451, not a traceback."""
        with open(os.path.join(self.base, "u"), "w") as f:
            f.write("not a directory")
        self.send(b"LHLO me\r\nMAIL FROM:<>\r\nRCPT TO:<u@l>\r\nDATA\r\n")
        self.assertTrue(self.send(b"x\r\n.\r\n").startswith(b"451 4.3.0"))
        self.assertIn("sev=ERR", self.sink.lines()[-1])

    def test_oneFailingRecipient(self) -> None:
        """
        One reply per recipient in RCPT order: one that cannot be stored
        gets 451 between the others' 250s.
        """
        with open(os.path.join(self.base, "v"), "w") as f:
            f.write("not a directory")
        self.send(
            b"LHLO me\r\nMAIL FROM:<>\r\nRCPT TO:<u@l>\r\nRCPT TO:<v@l>\r\n"
            b"RCPT TO:<w@l>\r\nDATA\r\n"
        )
        self.assertEqual(
            self.send(b"x\r\n.\r\n"),
            b"250 2.0.0 <u@l> delivered\r\n"
            b"451 4.3.0 <v@l> cannot store the message\r\n"
            b"250 2.0.0 <w@l> delivered\r\n",
        )
        self.assertEqual(
            (self.messages("u"), self.messages("w")),
            (
                [b"Return-Path: <>\nDelivered-To: u@l\nx\n"],
                [b"Return-Path: <>\nDelivered-To: w@l\nx\n"],
            ),
        )

    def test_unexpectedFailure(self) -> None:
        """
        An unexpected error while delivering is logged with its traceback
        and every recipient still due a reply gets 451 4.3.0; the session
        goes on.
        """
        calls = []

        def deliver(user: str, headers: bytes, body: bytes) -> str:
            calls.append(user)
            if len(calls) == 2:
                raise RuntimeError("bug")
            return "/dev/null"

        self.patch(self.proto.store, "deliver", deliver)
        self.send(
            b"LHLO me\r\nMAIL FROM:<>\r\nRCPT TO:<u@l>\r\nRCPT TO:<v@l>\r\n"
            b"RCPT TO:<w@l>\r\nDATA\r\n"
        )
        self.assertEqual(
            self.send(b"x\r\n.\r\nNOOP\r\n"),
            b"250 2.0.0 <u@l> delivered\r\n"
            + b"451 4.3.0 Temporary failure, try again later\r\n" * 2
            + b"250 2.0.0 OK\r\n",
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        [line] = [l for l in self.sink.lines() if "RuntimeError" in l]
        self.assertIn("sev=ERR", line)

    def test_strictContent(self) -> None:
        """
        Content with a NUL or a line over 1000 octets is refused for every
        recipient, with the replies of SMTPS; nothing is stored.
        """
        factory = LMTPFactory(
            defaultLMTPServerSettings(maildirBase=self.base, hostname="lmtp.test"),
            Logger("lmtpd", sink=self.sink),
            MemoryReactorClock(),
        )
        self.proto = factory.buildProtocol(None)
        self.proto.makeConnection(self.transport)
        for content, reply in [
            (b"a\x00b\r\n", b"554 5.6.0 "),
            (b"a" * 999 + b"\r\n", b"500 5.5.2 "),
        ]:
            self.send(b"LHLO me\r\nMAIL FROM:<>\r\nRCPT TO:<u@l>\r\n")
            self.send(b"RCPT TO:<w@l>\r\nDATA\r\n")
            out = self.send(content + b".\r\n").split(b"\r\n")
            self.assertEqual(len(out), 3)
            self.assertTrue(out[0].startswith(reply) and out[1].startswith(reply))
        self.assertEqual(os.listdir(self.base), [])

    def test_strictCommands(self) -> None:
        """
        Command lines follow the rules of SMTPS: at most 512 bytes with
        CRLF, CRLF line ends, no NUL; each is refused with 500 5.5.2 (and
        logged), and the session goes on.
        """
        self.assertEqual(
            self.send(b"NOOP " + b"x" * 600 + b"\r\nNOOP\nNOOP\x00\r\nNOOP\r\n"),
            b"500 5.5.2 Line too long\r\n"
            b"500 5.5.2 Syntax error: lines must end in CRLF\r\n"
            b"500 5.5.2 Syntax error: bare CR or NUL\r\n"
            b"250 2.0.0 OK\r\n",
        )
        self.assertTrue(self.transport.connected)
        self.assertIn("stat=500", self.sink.lines()[-1])

    def test_sequence(self) -> None:
        """Commands out of order are refused."""
        self.assertTrue(self.send(b"MAIL FROM:<>\r\n").startswith(b"503"))
        self.send(b"LHLO me\r\n")
        self.assertTrue(self.send(b"RCPT TO:<u@l>\r\n").startswith(b"503"))
        self.assertTrue(self.send(b"MAIL FROM:bad\r\n").startswith(b"501"))
        self.send(b"MAIL FROM:<>\r\n")
        self.assertTrue(self.send(b"DATA\r\n").startswith(b"503"))
        self.assertTrue(self.send(b"FOO\r\n").startswith(b"500"))
        self.assertEqual(self.send(b"QUIT\r\n"), b"221 2.0.0 bye\r\n")


class ServiceTests(SynchronousTestCase):
    """
    Tests for L{LMTPDeliveryService} and C{smx lmtpd}.
    """

    def test_listens(self) -> None:
        """The service listens on the socket while running."""
        reactor = MemoryReactorClock()
        base = self.mktemp()
        svc = LMTPDeliveryService(
            defaultLMTPServerSettings(socketPath="sock", maildirBase=base), reactor
        )
        svc.startService()
        self.assertEqual(reactor.unixServers[0][0], os.path.abspath("sock"))
        self.assertEqual(reactor.unixServers[0][3], 0o666)
        self.assertTrue(os.path.isdir(base))
        svc.stopService()

    def test_notASocket(self) -> None:
        """A file in the way of the socket is not removed."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("x")
        svc = LMTPDeliveryService(
            defaultLMTPServerSettings(socketPath=path, maildirBase=self.mktemp()),
            MemoryReactorClock(),
        )
        self.assertRaises(OSError, svc.startService)
        self.assertTrue(os.path.exists(path))

    def test_fromConfiguration(self) -> None:
        """
        Every lmtpd section, named or not, is one server with its
        C{socket}, C{maildir_base}, C{max_message_size} (64MB by
        default), C{log_level}, and with C{port} and C{address} a TCP
        listener too; the global C{hostname} greets.
        """
        from smx.config import parseConfiguration

        base = os.path.abspath(self.mktemp())
        cfg = parseConfiguration(
            "hostname = lda.test;\n"
            'lmtpd { socket = "%s/a"; maildir_base = "%s/ma"; }\n'
            'lmtpd TCP { socket = "%s/b"; maildir_base = "%s/mb"; port = 2724;\n'
            "  address = 127.0.0.74; log_level = 12; max_message_size = 2MB; }\n"
            % ((base,) * 4),
            filename="smx.conf",
        )
        reactor = MemoryReactorClock()
        first, second = lmtpdServices(cfg, reactor)
        self.assertEqual((first.name, second.name), ("lmtpd", "lmtpd TCP"))
        self.assertEqual(first.socketPath, os.path.join(base, "a"))
        self.assertEqual(second.maildirBase, os.path.join(base, "mb"))
        self.assertEqual(second.factory.hostname, "lda.test")
        self.assertEqual(second.factory.log.level, 12)
        self.assertEqual(first.factory.maxMessageSize, 64 * 1024 * 1024)
        self.assertEqual(second.factory.maxMessageSize, 2 * 1024 * 1024)
        proto = second.factory.buildProtocol(None)
        self.assertEqual(proto.connection.maxMessageSize, 2 * 1024 * 1024)
        self.assertEqual((first.tcpPort, second.tcpPort), (None, 2724))
        for svc in (first, second):
            svc.startService()
        self.assertEqual(len(reactor.unixServers), 2)
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (2724, "127.0.0.74"))
        self.assertIs(factory, second.factory)
        for svc in (first, second):
            svc.stopService()
        self.assertIsNone(second.tcp)

    def test_noSections(self) -> None:
        """Without an lmtpd section there is no LMTP server."""
        from smx.config import parseConfiguration

        cfg = parseConfiguration("", filename="smx.conf")
        self.assertEqual(lmtpdServices(cfg, MemoryReactorClock()), [])

    def test_usage(self) -> None:
        """Missing options are a usage error (status 2), not a traceback."""
        self.assertEqual(script.run([]), 2)
