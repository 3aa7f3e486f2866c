# -*- test-case-name: smx.mail.test.test_integration_delivery_e2e -*-
"""
Integration tests, end to end, of SMTPC's delivery rules: smx run as a
user runs it (C{twistd -n smx --config smx.conf}, harness
L{smx.test.mta}), mail submitted with swaks or smtplib over loopback,
delivered to real peers:

  - a mailertable entry C{dove.test PORT^lmtp:[127.0.0.73]} delivers over
    LMTP on TCP to Dovecot there, not to smx's own lmtpd;
  - an 8-bit message to a next hop without 8BITMIME (C{smtp-sink -8})
    arrives there converted to quoted-printable, one with an 8-bit header
    bounces with status 5.6.3 and never reaches it;
  - 100 recipients to a next hop that takes 50 per transaction are all
    delivered at once, in two transactions;
  - named C{smtpc} sections are honoured: their C{io_timeout} and
    C{remote_port}.
"""

from __future__ import annotations

import email
import email.policy
import os
import smtplib
import socket
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase

from smx.mail.test.test_integration_delivery import listenLimited
from smx.test.mta import (
    MTATestCase,
    MTA,
    SMTP_SINK,
    SWAKS,
    Dovecot,
    SmtpSink,
    configuration,
    freePort,
    missing,
    swaks,
    tempDirectory,
    until,
)


class _Base(MTATestCase):

    def assertHappened(self, ok: bool, what: str) -> None:
        if not ok:
            self.fail("%s; smx's log:\n%s" % (what, self.mta.log()))

    @defer.inlineCallbacks
    def accepted(self, sender: str, recipients: str, *options: str) -> Any:
        out, err, status = yield swaks(
            self.mta.port, "--from", sender, "--to", recipients, *options
        )
        self.assertEqual(status, 0, out + err)


class LMTPOverTCPTests(_Base):
    """
    C{lmtp:} with a host in the mailertable.
    """

    @defer.inlineCallbacks
    def test_dovecotOverTCP(self) -> Any:
        """
        Mail for dove.test, whose mailertable entry is
        C{PORT^lmtp:[127.0.0.73]}, reaches Dovecot's LMTP listener on
        127.0.0.73 over TCP, and not the Maildir of smx's own lmtpd on
        the C{LMTP_socket}.
        """
        self.need(SWAKS)
        if not Dovecot.available():
            raise SkipTest("dovecot (Debian package dovecot-lmtpd) is not installed")
        port = freePort("127.0.0.73")
        dovecot = Dovecot(
            self, os.path.join(self.root, "dovecot"), ("127.0.0.73", port)
        )
        dovecot.start()
        self.mta.write(
            configuration(self.mta.port),
            mt="localhost lmtp:\ndove.test %d^lmtp:[127.0.0.73]\n" % (port,),
            aliases="alice: local:\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()
        yield self.accepted(
            "carol@client.test", "alice@dove.test", "--body", "over tcp END"
        )
        self.assertHappened(
            (yield until(lambda: dovecot.maildir("alice"))),
            "nothing reached Dovecot over TCP",
        )
        [message] = dovecot.maildir("alice")
        self.assertIn(b"over tcp END", message)
        self.assertEqual(self.mta.maildir("alice"), [])
        self.assertTrue(
            any(
                "status=connected, port=%d, addr=127.0.0.73" % (port,) in x
                for x in self.mta.records("smtpc")
            ),
            self.mta.log(),
        )


class EightBitTests(_Base):
    """
    8-bit mail to a next hop without 8BITMIME (RFC 6152 section 3).
    """

    @defer.inlineCallbacks
    def test_bounceFromSevenBitNextHop(self) -> Any:
        """
        A message with an 8-bit header, declared BODY=8BITMIME, for a
        next hop that does not offer 8BITMIME (C{smtp-sink -8}) cannot be
        converted and is not sent there: the sender gets a DSN with status
        5.6.3 at once.
        """
        self.need(SMTP_SINK)
        sink = SmtpSink(self, self.root)
        sink.start("-8")
        self.mta.write(
            configuration(
                self.mta.port, smtpc="remote_port = %d;" % (sink.port,), retry="1h"
            ),
            mt="localhost lmtp:\nremote.test [%s]\n" % (sink.address,),
            aliases="alice: local:\npostmaster: alice\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()
        body = "Subject: caf\u00e9\r\n\r\nna\u00efve \u00e9t\u00e9 END\r\n"
        with smtplib.SMTP("127.0.0.1", self.mta.port, timeout=10) as client:
            client.sendmail(
                "alice@localhost",
                ["bob@remote.test"],
                body.encode("utf-8"),
                mail_options=["BODY=8BITMIME"],
            )
        self.assertHappened(
            (yield until(lambda: self.mta.maildir("alice"))), "no DSN arrived"
        )
        [raw] = self.mta.maildir("alice")
        dsn = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(dsn.get_content_type(), "multipart/report")
        perRecipient = dsn.get_payload()[1].get_payload()[1]
        self.assertEqual(perRecipient["Action"], "failed")
        self.assertEqual(str(perRecipient["Status"]), "5.6.3")
        self.assertIn("8BITMIME", str(perRecipient["Diagnostic-Code"]))
        self.assertEqual(sink.messages(), [])

    @defer.inlineCallbacks
    def test_convertedForSevenBitNextHop(self) -> Any:
        """
        A multipart message with 8-bit parts, declared BODY=8BITMIME, for
        a next hop that does not offer 8BITMIME (C{smtp-sink -8}) arrives
        there 7-bit: its 8-bit parts quoted-printable, its headers (the
        Received line smx added included) as they were, and every part
        decodes to the original text.
        """
        self.need(SMTP_SINK)
        sink = SmtpSink(self, self.root)
        sink.start("-8")
        self.mta.write(
            configuration(
                self.mta.port, smtpc="remote_port = %d;" % (sink.port,), retry="1h"
            ),
            mt="localhost lmtp:\nremote.test [%s]\n" % (sink.address,),
            aliases="alice: local:\npostmaster: alice\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()
        plain = "na\u00efve \r\n.\r\n\u00e9t\u00e9 a=b " + "\u00e0" * 200 + "\r\n"
        html = "<p>caf\u00e9</p>\r\n"
        message = (
            "From: alice@localhost\r\n"
            "To: bob@remote.test\r\n"
            "Subject: 8bit\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/alternative; boundary="b"\r\n'
            "\r\n"
            "--b\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n"
            "\r\n" + plain + "--b\r\n"
            "Content-Type: text/html; charset=utf-8\r\n"
            "\r\n" + html + "--b--\r\nEND\r\n"
        ).encode("utf-8")
        with smtplib.SMTP("127.0.0.1", self.mta.port, timeout=10) as client:
            client.sendmail(
                "alice@localhost",
                ["bob@remote.test"],
                message,
                mail_options=["BODY=8BITMIME"],
            )
        self.assertHappened(
            (yield until(lambda: sink.containing(b"END"))), "nothing reached the sink"
        )
        [received] = sink.containing(b"END")
        self.assertTrue(received.isascii(), received)
        self.assertNotIn(b"BODY=8BITMIME", received)
        self.assertIn(b"\nReceived: from ", received)
        self.assertIn(
            b"\nFrom: alice@localhost\nTo: bob@remote.test\nSubject: 8bit\n"
            b"MIME-Version: 1.0\n"
            b'Content-Type: multipart/alternative; boundary="b"\n\n--b\n',
            received,
        )
        for line in received.split(b"\n"):
            self.assertLessEqual(len(line), 76)
        parsed = email.message_from_bytes(received)
        parts = parsed.get_payload()
        self.assertEqual(
            [p["Content-Transfer-Encoding"] for p in parts],
            ["quoted-printable", "quoted-printable"],
        )
        for part, text in zip(parts, [plain, html]):
            # (the last line ending belongs to the boundary line)
            self.assertEqual(
                part.get_payload(decode=True),
                text[:-2].replace("\r\n", "\n").encode(),
            )
        self.assertIn(
            "body=8bit converted to 7bit",
            self.mta.logWith("body=8bit converted to 7bit"),
        )


class TooManyRecipientsTests(_Base):
    """
    "452 4.5.3 too many recipients" from the next hop.
    """

    @defer.inlineCallbacks
    def test_hundredRecipients(self) -> Any:
        """
        100 recipients for a next hop that takes 50 per transaction are
        delivered at once (retry_min_delay is an hour), in two
        transactions; none is deferred.
        """
        self.need(SWAKS)
        server = listenLimited(self, 50)
        self.mta.write(
            configuration(
                self.mta.port, smtpc="remote_port = %d;" % (server.port,), retry="1h"
            ),
            mt="localhost lmtp:\nremote.test [127.0.0.1]\n",
            aliases="alice: local:\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()
        recipients = ["r%03d@remote.test" % (i,) for i in range(100)]
        # (a To: header with 100 addresses would be a line too long)
        yield self.accepted(
            "alice@localhost",
            ",".join(recipients),
            "--header",
            "To: undisclosed-recipients:;",
        )
        self.assertHappened(
            (
                yield until(
                    lambda: sum(len(r) for r, _ in server.transactions) == 100
                    and "stat=done" in self.mta.log()
                )
            ),
            "not all 100 recipients were delivered at once",
        )
        self.assertEqual([len(r) for r, _ in server.transactions], [50, 50])
        delivered = sorted(a for r, _ in server.transactions for a in r)
        self.assertEqual(delivered, [b"<%s>" % (a.encode(),) for a in recipients])
        self.assertNotIn("stat=temp", self.mta.log())


class NamedSectionTests(_Base):
    """
    Named C{smtpc} sections (seed §5.10) configure delivery.
    """

    @defer.inlineCallbacks
    def test_namedSectionsIoTimeout(self) -> Any:
        """
        With two named smtpc sections, the first with C{io_timeout = 2s},
        delivery to a next hop on their C{remote_port} that accepts the
        connection but never greets times out after 2 seconds.
        """
        self.need(SWAKS)
        silent = socket.socket()
        silent.bind(("127.0.0.2", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        port = silent.getsockname()[1]
        text = configuration(self.mta.port, retry="1h")
        unnamed = 'smtpc {\n    LMTP_socket = "lmtpsock";\n    io_timeout = 30s;\n'
        self.assertIn(unnamed, text)
        text = text.replace(
            unnamed,
            'smtpc MTA {\n    LMTP_socket = "lmtpsock";\n    io_timeout = 2s;\n'
            "    remote_port = %d;\n" % (port,),
        )
        text += (
            'smtpc LOCAL {\n    LMTP_socket = "lmtpsock";\n    io_timeout = 30s;\n'
            "    remote_port = %d;\n}\n" % (port,)
        )
        self.mta.write(
            text,
            mt="localhost lmtp:\nremote.test [127.0.0.2]\n",
            aliases="alice: local:\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()
        yield self.accepted("alice@localhost", "bob@remote.test")
        self.assertHappened(
            (yield until(lambda: "timeout after 2s" in self.mta.log(), timeout=6)),
            "no 2 s timeout",
        )
        self.assertTrue(
            any(
                "status=connected, port=%d, addr=127.0.0.2" % (port,) in x
                for x in self.mta.records("smtpc")
            ),
            self.mta.log(),
        )
