# -*- test-case-name: smx.mail.test.test_integration_smtps_input -*-
"""
Integration tests of what SMTPS takes as input (NUL bytes, line lengths):
real loopback sockets and real clients (Python's smtplib and raw sockets)
against an SMTPS listener with the in-memory fakes of QMGR, CDB and SMAR,
and end to end against C{twistd -n smx} relaying to Postfix's smtp-sink,
which must receive nothing of a refused message.
"""

from __future__ import annotations

import os
import smtplib
import socket
from typing import Any, List

from twisted.internet import defer, threads
from twisted.trial import unittest

from smx.mail.test.test_integration_smtps import ServerMixin, rawSession
from smx.test.mta import (
    MTA,
    SMTP_SINK,
    SmtpSink,
    configuration,
    missing,
    tempDirectory,
    until,
)

OPEN = b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\n"


def smtplibSend(port: int, recipient: str, message: bytes) -> Any:
    """
    Send C{message} with smtplib; return the exception it raised (or
    C{None}) and the reply to a NOOP afterwards on the same session.
    """
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test") as s:
        try:
            s.sendmail("a@b.test", [recipient], message)
            raised = None  # type: Any
        except smtplib.SMTPDataError as e:
            raised = e
        return raised, s.noop()


class ListenerTests(ServerMixin, unittest.TestCase):
    """A real SMTPS listener with the fakes behind it."""

    def test_nulInData(self):
        """
        smtplib sends a message with C{<CRLF><NUL>.<CRLF>} in it: 554
        5.6.0, nothing queued or stored; the session goes on.
        """
        port = self.startServer()
        body = b"Subject: x\r\n\r\nhello\r\n\x00.\r\nMAIL FROM:<evil@x.test>\r\n"
        d = threads.deferToThread(smtplibSend, port, "u@local.test", body)

        def check(result):
            raised, noop = result
            self.assertEqual(raised.smtp_code, 554)
            self.assertEqual(
                raised.smtp_error, b"5.6.0 Message contains NUL characters, rejected"
            )
            self.assertEqual(noop[0], 250)
            self.assertEqual(self.qmgr.envelopes, [])
            self.assertEqual(self.store.contents, {})

        return d.addCallback(check)

    def test_longDataLine(self):
        """
        smtplib sends a message with a line of a megabyte: 500 5.5.2,
        nothing queued or stored.
        """
        port = self.startServer()
        body = b"Subject: x\r\n\r\n" + b"y" * (1024 * 1024) + b"\r\nend\r\n"
        d = threads.deferToThread(smtplibSend, port, "u@local.test", body)

        def check(result):
            raised, noop = result
            self.assertEqual(raised.smtp_code, 500)
            self.assertTrue(raised.smtp_error.startswith(b"5.5.2 Line too long"))
            self.assertEqual(noop[0], 250)
            self.assertEqual(self.qmgr.envelopes, [])
            self.assertEqual(self.store.contents, {})

        return d.addCallback(check)

    def test_longestDataLine(self):
        """A line of 1000 octets with its CRLF is accepted as it is."""
        port = self.startServer()
        line = b"x" * 998 + b"\r\n"
        d = threads.deferToThread(
            smtplibSend, port, "u@local.test", b"Subject: x\r\n\r\n" + line
        )

        def check(result):
            self.assertEqual(result[0], None)
            [envelope] = self.qmgr.envelopes
            self.assertTrue(self.store.contents[envelope["id"]].endswith(line))

        return d.addCallback(check)

    def test_megabyteCommand(self):
        """
        A command line of a megabyte sent over a socket is answered once
        with 500 5.5.2 Line too long; the session goes on; a NUL in a
        command line is 500 5.5.2 as well.
        """
        port = self.startServer()
        chunks = [
            b"EHLO client.test\r\n",
            b"MAIL FROM:<" + b"a" * (1024 * 1024) + b"@b.test>\r\n",
            b"NOOP\r\n",
            b"MAIL FROM:<a@b.test>\x00\r\n",
        ]
        d = threads.deferToThread(rawSession, port, chunks)

        def check(answers: List[bytes]):
            self.assertEqual(answers[2], b"500 5.5.2 Line too long\r\n")
            self.assertEqual(answers[3], b"250 2.0.0 OK\r\n")
            self.assertTrue(answers[4].startswith(b"500 5.5.2 "), answers[4])
            self.assertEqual(self.qmgr.envelopes, [])

        return d.addCallback(check)

    def test_bareCRLFStill(self):
        """
        The smuggling rules are unchanged: a bare LF ends nothing and
        rejects the message with 554 5.6.11.
        """
        port = self.startServer()
        body = b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@x.test>\r\n.\r\n"
        d = threads.deferToThread(rawSession, port, [OPEN + b"DATA\r\n", body])

        def check(answers):
            self.assertTrue(answers[2].startswith(b"554 5.6.11 "), answers)
            self.assertEqual(self.qmgr.envelopes, [])

        return d.addCallback(check)


class RelayTests(unittest.TestCase):
    """
    C{twistd -n smx} relaying to smtp-sink: a refused message reaches
    the next hop in no form, a clean one does.
    """

    @defer.inlineCallbacks
    def test_nothingRelayed(self):
        """
        Messages with C{<CRLF><NUL>.<CRLF>} or a line over 1000 octets are
        refused; the clean message sent after them on the same session is
        the only one smtp-sink receives.
        """
        reason = missing(SMTP_SINK)
        if reason:
            raise unittest.SkipTest(reason)
        root = tempDirectory(self)
        sink = SmtpSink(self, root)
        sink.start()
        mta = MTA(self, os.path.join(root, "smx"))
        mta.write(
            configuration(mta.port, smtpc="remote_port = %d;" % (sink.port,)),
            mt="localhost lmtp:\nremote.test [%s]\n" % (sink.address,),
            access="cltaddr:127.0.0.1 relay\n",
        )
        mta.start()

        def client():
            replies = []
            with smtplib.SMTP("127.0.0.1", mta.port, local_hostname="c.test") as s:
                for body in [
                    b"Subject: nul\r\n\r\nNUL MARK\r\n\x00.\r\nsmuggled\r\n",
                    b"Subject: long\r\n\r\nLONG MARK " + b"z" * 5000 + b"\r\n",
                    b"Subject: clean\r\n\r\nCLEAN MARK\r\n",
                ]:
                    try:
                        s.sendmail("a@client.test", ["bob@remote.test"], body)
                        replies.append(250)
                    except smtplib.SMTPDataError as e:
                        replies.append(e.smtp_code)
            return replies

        replies = yield threads.deferToThread(client)
        self.assertEqual(replies, [554, 500, 250])
        ok = yield until(lambda: sink.containing(b"CLEAN MARK"))
        self.assertTrue(ok, mta.log())
        self.assertEqual(len(sink.messages()), 1)
        self.assertEqual(sink.containing(b"MARK"), sink.containing(b"CLEAN MARK"))
        records = "\n".join(mta.records("smtps"))
        self.assertIn("stat=554", records)
        self.assertIn("stat=500", records)
