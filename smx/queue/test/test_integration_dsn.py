# -*- test-case-name: smx.queue.test.test_integration_dsn -*-
"""
Integration tests of DSN (RFC 3461, 3464) with C{twistd -n smx} and real
peers over loopback sockets: Python's C{smtplib} gives C{RET}, C{ENVID}
at MAIL and C{NOTIFY}, C{ORCPT} at RCPT; they are kept in the queue
(IBDB, DEFEDB) across a restart and shown by C{smx mailq}; success
notices come for local delivery (smx's lmtpd, Dovecot's LMTP from the
Debian package dovecot-lmtpd) and for relaying to a next hop without DSN
(Postfix's C{smtp-sink -N}); NOTIFY=NEVER suppresses the bounce; a next
hop that offers DSN (C{smtp-sink}) gets the parameters.  Every report is
parsed with the C{email} package.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import smtplib
import socket
from typing import Any, List

from twisted.internet import defer, threads
from twisted.trial.unittest import SkipTest, TestCase

from smx.test.mta import (
    MTATestCase,
    MTA,
    Dovecot,
    SMTP_SINK,
    SmtpSink,
    configuration,
    missing,
    tempDirectory,
    until,
)


def send(port: int, sender: str, recipients: List[str], body: bytes, mail, rcpt):
    """Send one message with smtplib and DSN options (blocking)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("dsn")
        refused = client.sendmail(sender, recipients, body, mail, rcpt)
        assert not refused, refused


class _Base(MTATestCase):

    def remote(self, sink: SmtpSink, retry: str = "1s", qmgr: str = "") -> None:
        self.mta.write(
            configuration(
                self.mta.port,
                smtpc="remote_port = %d;" % (sink.port,),
                retry=retry,
                qmgr=qmgr,
            ),
            mt="localhost lmtp:\nremote.test [%s]\n" % (sink.address,),
            aliases="alice: local:\nbob: local:\npostmaster: alice\n",
            access="cltaddr:127.0.0.1 relay\n",
        )

    def send(self, recipients, body, mail=(), rcpt=()) -> Any:
        return threads.deferToThread(
            send,
            self.mta.port,
            "alice@localhost",
            recipients,
            body,
            list(mail),
            list(rcpt),
        )

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.fail("%s; smx's log:\n%s" % (what, self.mta.log()))


class QueueTests(_Base):
    """The DSN parameters in the queue and in C{smx mailq}."""

    @defer.inlineCallbacks
    def test_restart(self) -> Any:
        """
        A message for a next hop that is down keeps RET, ENVID, NOTIFY and
        ORCPT (decoded) in DEFEDB: C{smx mailq --json} shows them while
        smx runs, C{mailq --offline} after C{kill -9}, and again after a
        restart; the text output shows them too.
        """
        self.need(SMTP_SINK)
        sink = SmtpSink(self, self.root)
        self.remote(sink, retry="1h")
        self.mta.start()
        yield self.send(
            ["bob@remote.test"],
            b"Subject: x\r\n\r\nkept\r\n",
            ["RET=HDRS", "ENVID=QQ+2B314"],
            ["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;Bob+2Bx@remote.test"],
        )
        self.check((yield until(lambda: "stat=temp" in self.mta.log())), "no deferral")

        def expectQueued(out: bytes) -> None:
            [ta] = json.loads(out)
            self.assertEqual((ta["ret"], ta["envid"]), ("HDRS", "QQ+314"))
            [r] = ta["recipients"]
            self.assertEqual(r["notify"], "SUCCESS,DELAY")
            self.assertEqual(r["orcpt"], "rfc822;Bob+x@remote.test")

        out, err, status = yield self.mta.smx("mailq", "--json")
        self.assertEqual(status, 0, err)
        expectQueued(out)
        self.mta.kill()
        out, err, status = yield self.mta.smx("mailq", "--offline", "--json")
        self.assertEqual(status, 0, err)
        expectQueued(out)
        out, err, status = yield self.mta.smx("mailq", "--offline")
        self.assertIn(b"RET=HDRS ENVID=QQ+314", out)
        self.assertIn(b"NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Bob+x@remote.test", out)
        self.mta.start()
        out, err, status = yield self.mta.smx("mailq", "--json")
        self.assertEqual(status, 0, err)
        expectQueued(out)


def lmtpCapabilities(path: str) -> List[str]:
    """The LHLO keywords of the LMTP server at the Unix socket C{path}."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        f = s.makefile("rwb")
        f.readline()
        f.write(b"LHLO client.test\r\n")
        f.flush()
        words = []
        while True:
            line = f.readline().decode()
            words.append(line[4:].split(" ")[0].strip().upper())
            if line[3:4] != "-":
                break
        f.write(b"QUIT\r\n")
        f.flush()
        return words[1:]


def report(testCase: TestCase, raw: bytes) -> Any:
    """
    Parse a DSN with the C{email} package: (message, per-message block,
    per-recipient blocks, returned part).
    """
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    testCase.assertEqual(msg.get_content_type(), "multipart/report")
    testCase.assertEqual(msg.get_param("report-type"), "delivery-status")
    text, status, returned = msg.get_payload()
    testCase.assertEqual(text.get_content_type(), "text/plain")
    testCase.assertEqual(status.get_content_type(), "message/delivery-status")
    blocks = status.get_payload()
    return msg, blocks[0], blocks[1:], returned


class ReportTests(_Base):
    """Success notices and NOTIFY at work (RFC 3461 §4.1, RFC 3464)."""

    @defer.inlineCallbacks
    def test_deliveredLocally(self) -> Any:
        """
        NOTIFY=SUCCESS for a mailbox at smx's lmtpd: the sender gets a
        success notice (C{Action: delivered}, 2.x.x) with the ENVID and
        ORCPT given, and only the header for RET=HDRS; a recipient
        without NOTIFY=SUCCESS gets none.
        """
        self.need(SMTP_SINK)
        sink = SmtpSink(self, self.root)
        self.remote(sink)
        self.mta.start()
        yield self.send(
            ["bob@localhost"],
            b"Subject: hello bob\r\n\r\nthe body text\r\n",
            ["RET=HDRS", "ENVID=env+2B1"],
            ["NOTIFY=SUCCESS", "ORCPT=rfc822;Bob+2Bdsn@localhost"],
        )
        self.check(
            (yield until(lambda: self.mta.maildir("alice"))), "no success notice"
        )
        [raw] = self.mta.maildir("alice")
        msg, perMessage, [rcpt], returned = report(self, raw)
        self.assertEqual(msg["Subject"], "Successful Mail Delivery Report")
        self.assertEqual(str(msg["To"]), "alice@localhost")
        self.assertEqual(str(perMessage["Reporting-MTA"]), "dns; smx.test")
        self.assertEqual(str(perMessage["Original-Envelope-Id"]), "env+1")
        self.assertIn("Arrival-Date", perMessage)
        self.assertEqual(str(rcpt["Original-Recipient"]), "rfc822;Bob+dsn@localhost")
        self.assertEqual(
            " ".join(str(rcpt["Final-Recipient"]).split()), "rfc822; bob@localhost"
        )
        self.assertEqual(str(rcpt["Action"]), "delivered")
        self.assertRegex(str(rcpt["Status"]), r"^2\.\d{1,3}\.\d{1,3}$")
        self.assertNotIn("Will-Retry-Until", rcpt)
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")
        self.assertIn("Subject: hello bob", returned.get_payload())
        self.assertNotIn("the body text", returned.get_payload())
        self.assertEqual(len(self.mta.maildir("bob")), 1)

    @defer.inlineCallbacks
    def test_deliveredByDovecot(self) -> Any:
        """
        NOTIFY=SUCCESS for a mailbox behind Dovecot's LMTP (Debian package
        dovecot-lmtpd): the notice, delivered into the sender's Dovecot
        mailbox too, says C{Action: delivered}.  (Dovecot 2.3's LMTP does
        not offer DSN, and smx sends no DSN parameter over LMTP.)
        """
        if not Dovecot.available():
            raise SkipTest("dovecot (Debian package dovecot-lmtpd) is not installed")
        dovecot = Dovecot(self, os.path.join(self.root, "dovecot"))
        dovecot.start()
        lhlo = lmtpCapabilities(dovecot.socket)
        self.assertIn("PIPELINING", lhlo)
        self.assertNotIn("DSN", lhlo)
        self.mta.write(
            configuration(
                self.mta.port,
                smtpc='LMTP_socket = "%s";' % (dovecot.socket,),
                lmtpd=False,
            ).replace('    LMTP_socket = "lmtpsock";\n', ""),
            mt="localhost lmtp:\n",
            aliases="alice: local:\nbob: local:\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()
        yield self.send(
            ["bob@localhost"],
            b"Subject: to dovecot\r\n\r\nbody\r\n",
            ["ENVID=dove"],
            ["NOTIFY=SUCCESS,FAILURE"],
        )
        self.check((yield until(lambda: dovecot.maildir("alice"))), "no success notice")
        [raw] = dovecot.maildir("alice")
        msg, perMessage, [rcpt], returned = report(self, raw)
        self.assertEqual(str(perMessage["Original-Envelope-Id"]), "dove")
        self.assertEqual(str(rcpt["Action"]), "delivered")
        self.assertRegex(str(rcpt["Status"]), r"^2\.")
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")
        [delivered] = dovecot.maildir("bob")
        self.assertIn(b"Subject: to dovecot", delivered)

    @defer.inlineCallbacks
    def test_relayedFull(self) -> Any:
        """
        NOTIFY=SUCCESS,FAILURE for a next hop that does not offer DSN
        (smtp-sink -N): after its 250 the sender gets C{Action: relayed}
        with the whole message (RET=FULL) and the Remote-MTA.
        """
        self.need(SMTP_SINK)
        sink = SmtpSink(self, self.root)
        sink.start("-N")
        self.remote(sink)
        self.mta.start()
        yield self.send(
            ["carol@remote.test"],
            b"Subject: relayed\r\n\r\nfull body here\r\n",
            ["RET=FULL"],
            ["NOTIFY=SUCCESS,FAILURE"],
        )
        self.check(
            (yield until(lambda: self.mta.maildir("alice"))), "no success notice"
        )
        [raw] = self.mta.maildir("alice")
        msg, perMessage, [rcpt], returned = report(self, raw)
        self.assertNotIn("Original-Envelope-Id", perMessage)
        self.assertNotIn("Original-Recipient", rcpt)
        self.assertEqual(str(rcpt["Action"]), "relayed")
        self.assertRegex(str(rcpt["Status"]), r"^2\.")
        self.assertEqual(str(rcpt["Remote-MTA"]), "dns; %s" % (sink.address,))
        self.assertEqual(returned.get_content_type(), "message/rfc822")
        self.assertIn(b"full body here", returned.as_bytes())
        self.assertEqual(len(sink.containing(b"full body here")), 1)

    @defer.inlineCallbacks
    def test_neverNoBounce(self) -> Any:
        """
        NOTIFY=NEVER, and NOTIFY=SUCCESS (no FAILURE), for recipients the
        next hop refuses: no bounce, the message leaves the queue; a
        recipient without NOTIFY in the same message is bounced.
        """
        self.need(SMTP_SINK)
        sink = SmtpSink(self, self.root)
        sink.start("-N", "-f", "RCPT", "-B", "550 5.1.1 User unknown")
        self.remote(sink)
        self.mta.start()
        yield self.send(
            ["never@remote.test"],
            b"Subject: never\r\n\r\nx\r\n",
            [],
            ["NOTIFY=NEVER"],
        )
        yield self.send(
            ["succ@remote.test"],
            b"Subject: only success\r\n\r\nx\r\n",
            [],
            ["NOTIFY=SUCCESS"],
        )
        self.check(
            (yield until(lambda: self.mta.log().count("dsn=none") == 2)),
            "no failures without report",
        )
        yield self.send(["plain@remote.test"], b"Subject: plain\r\n\r\nx\r\n")
        self.check((yield until(lambda: self.mta.maildir("alice"))), "no bounce")
        [raw] = self.mta.maildir("alice")
        msg, _, [rcpt], returned = report(self, raw)
        self.assertEqual(str(rcpt["Action"]), "failed")
        self.assertIn("plain@remote.test", str(rcpt["Final-Recipient"]))
        out, err, status = yield self.mta.smx("mailq", "--json")
        self.assertEqual((json.loads(out), status), ([], 0))


class PassOnTests(_Base):
    """The DSN parameters go on to a next hop that offers DSN."""

    @defer.inlineCallbacks
    def test_nextHopOffersDSN(self) -> Any:
        """
        smtp-sink offers DSN: smx passes RET, ENVID, NOTIFY and ORCPT on
        (xtext), and sends no success notice itself (the next hop does).
        """
        self.need(SMTP_SINK)
        sink = SmtpSink(self, self.root)
        sink.start()
        self.remote(sink)
        self.mta.start()
        yield self.send(
            ["dave@remote.test"],
            b"Subject: passed\r\n\r\npassed on\r\n",
            ["RET=HDRS", "ENVID=e+2B2"],
            ["NOTIFY=SUCCESS", "ORCPT=rfc822;Dave+2Bx@remote.test"],
        )
        self.check((yield until(lambda: sink.containing(b"passed on"))), "not relayed")
        [dump] = sink.containing(b"passed on")
        self.assertIn(b"RET=HDRS ENVID=e+2B2", dump)
        self.assertIn(b"NOTIFY=SUCCESS ORCPT=rfc822;Dave+2Bx@remote.test", dump)
        yield until(lambda: "stat=done" in self.mta.log() or False, 1.0)
        self.assertEqual(self.mta.maildir("alice"), [])
        self.assertNotIn("kind=success", self.mta.log())


class PostfixTests(_Base):
    """A private Postfix (Debian package postfix) as a next hop with DSN."""

    @defer.inlineCallbacks
    def test_postfixReportsSuccess(self) -> Any:
        """
        smx relays a message with NOTIFY=SUCCESS, ENVID and ORCPT to
        Postfix, which offers DSN and delivers it to a Maildir: Postfix's
        own success notice (C{Action: delivered}) comes back through smx
        to the sender, with the ENVID and ORCPT smx passed on; smx sends
        none of its own.
        """
        from smx.mail.test.test_integration_smtputf8 import POSTFIX, privatePostfix

        self.need(POSTFIX)
        if os.geteuid() != 0:
            raise SkipTest("a private Postfix needs root")
        postfix = privatePostfix(self, os.path.join(self.root, "pf"), self.mta.port)
        self.mta.write(
            configuration(self.mta.port, smtpc="remote_port = %d;" % (postfix.port,)),
            mt="localhost lmtp:\npf.test [127.0.0.1]\n",
            aliases="alice: local:\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        postfix.start()
        self.mta.start()
        yield self.send(
            ["zoe@pf.test"],
            b"Subject: to postfix\r\n\r\nbody\r\n",
            ["RET=HDRS", "ENVID=pf+2B1"],
            ["NOTIFY=SUCCESS", "ORCPT=rfc822;Zoe@pf.test"],
        )
        ok = yield until(lambda: self.mta.maildir("alice"), timeout=10)
        self.assertTrue(ok, self.mta.log() + postfix.log())
        [raw] = self.mta.maildir("alice")
        msg, perMessage, [rcpt], returned = report(self, raw)
        self.assertIn("pf.test", str(perMessage["Reporting-MTA"]))
        self.assertEqual(str(perMessage["Original-Envelope-Id"]), "pf+1")
        self.assertEqual(
            "".join(str(rcpt["Original-Recipient"]).split()).lower(),
            "rfc822;zoe@pf.test",
        )
        self.assertEqual(str(rcpt["Action"]), "delivered")
        self.assertRegex(str(rcpt["Status"]), r"^2\.")
        self.assertEqual(len(postfix.mailbox()), 1)
        self.assertNotIn("kind=success", self.mta.log())
