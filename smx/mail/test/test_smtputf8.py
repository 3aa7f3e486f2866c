# -*- test-case-name: smx.mail.test.test_smtputf8 -*-
"""
Tests for SMTPUTF8 (RFC 6531, 6532): internationalised addresses in the
address syntax (L{smx.mail.address}), the server core
(L{smx.mail.server}), the client machine (L{smx.mail.client}), the
routing loop's decision (L{smx.mail.routeloop}) and the queue envelope
(L{smx.queue.envelope}).
"""

from __future__ import annotations

import io

from twisted.trial.unittest import SynchronousTestCase

from smx.mail import server as sm
from smx.mail.address import (
    PathSyntaxError,
    addressKey,
    domainKey,
    effectiveAddress,
    parsePath,
)
from smx.mail.client import (
    UTF8_REQUIRED,
    ClientMachine,
    ReplyParser,
    Send,
    SessionReady,
    TransactionDone,
)
from smx.mail.received import protocolName
from smx.mail.routeloop import _Content, _tryElsewhere
from smx.mail.test.test_client import r, sent
from smx.mail.test.test_server import run, started
from smx.queue.envelope import Transaction
from smx.queue.testing import defaultDefedb

U_DOMAIN = "bücher.example"
A_DOMAIN = "xn--bcher-kva.example"


class AddressTests(SynchronousTestCase):
    """UTF-8 local parts, U-labels and A-labels in paths."""

    def test_utf8Path(self) -> None:
        """
        A UTF-8 local part and a U-label domain parse and are kept as
        given, dot-string or quoted.
        """
        self.assertEqual(
            parsePath("<jöran@%s> SMTPUTF8" % (U_DOMAIN,), True),
            ("jöran@%s" % (U_DOMAIN,), [("SMTPUTF8", None)]),
        )
        self.assertEqual(
            parsePath('<"jö ran"@%s>' % (A_DOMAIN,), False),
            ('"jö ran"@%s' % (A_DOMAIN,), []),
        )

    def test_badIdna(self) -> None:
        """
        A domain with an invalid A-label or U-label is refused with 553
        5.1.3 (bad destination address syntax).
        """
        for path in ["<a@xn--zz.example>", "<a@a\u200db.example>"]:
            e = self.assertRaises(PathSyntaxError, parsePath, path, False)
            self.assertEqual((e.code, e.dsn), (553, "5.1.3"), path)

    def test_octetLimits(self) -> None:
        """
        The limits of RFC 5321 §4.5.3.1 count octets: 32 two-octet
        characters fill a local part, 33 are too many.
        """
        parsePath("<%s@b.example>" % ("é" * 32,), False)
        e = self.assertRaises(
            PathSyntaxError, parsePath, "<%s@b.example>" % ("é" * 33,), False
        )
        self.assertEqual(e.text, "path too long")

    def test_domainKey(self) -> None:
        """
        U-labels and A-labels of one domain give the same key, its
        lower-case A-labels (UTS #46 mapping: upper case is folded).
        """
        self.assertEqual(domainKey("Bücher.Example"), A_DOMAIN)
        self.assertEqual(domainKey("XN--BCHER-KVA.example"), A_DOMAIN)
        self.assertEqual(domainKey("Plain.Example"), "plain.example")
        self.assertEqual(domainKey("[127.0.0.1]"), "[127.0.0.1]")
        self.assertRaises(ValueError, domainKey, "xn--zz.example")
        self.assertEqual(addressKey("Jö@BÜCHER.example"), "Jö@" + A_DOMAIN)
        self.assertEqual(addressKey("a@xn--zz.example"), "a@xn--zz.example")

    def test_effectiveAddress(self) -> None:
        """
        The relay decision sees the A-label form, also behind a percent
        hack.
        """
        self.assertEqual(effectiveAddress("jö@" + U_DOMAIN), "jö@" + A_DOMAIN)
        self.assertEqual(
            effectiveAddress("jö%%%s@here.example" % (U_DOMAIN,)), "jö@" + A_DOMAIN
        )

    def test_protocolName(self) -> None:
        """RFC 6531 §4.3: the Received "with" of an SMTPUTF8 transaction."""
        self.assertEqual(protocolName(True, False, False, utf8=True), "UTF8SMTP")
        self.assertEqual(protocolName(True, True, True, utf8=True), "UTF8SMTPSA")
        self.assertEqual(protocolName(True, True, False), "ESMTPS")


class ServerTests(SynchronousTestCase):
    """SMTPUTF8 in the sans-I/O server core."""

    def test_offered(self) -> None:
        """EHLO and LHLO offer SMTPUTF8."""
        _, out = run(started(), b"EHLO c.test\r\n")
        self.assertIn(b"250-SMTPUTF8\r\n", out)
        _, out = run(started(lmtp=True), b"LHLO c.test\r\n")
        self.assertIn(b"-SMTPUTF8\r\n", out)

    def test_utf8Transaction(self) -> None:
        """
        With SMTPUTF8 on MAIL, UTF-8 addresses are taken at MAIL and RCPT
        and the event says so.
        """
        conn = started()
        events, out = run(
            conn,
            "EHLO c.test\r\nMAIL FROM:<jö@{0}> SMTPUTF8\r\nRCPT TO:<ü@{0}>\r\n"
            "RCPT TO:<plain@{1}>\r\n".format(U_DOMAIN, A_DOMAIN).encode("utf-8"),
        )
        mail = [e for e in events if isinstance(e, sm.MailFrom)][0]
        self.assertEqual(mail.sender, "jö@" + U_DOMAIN)
        self.assertTrue(mail.smtputf8)
        rcpts = [e.recipient for e in events if isinstance(e, sm.RcptTo)]
        self.assertEqual(rcpts, ["ü@" + U_DOMAIN, "plain@" + A_DOMAIN])
        self.assertEqual(out.count(b"250 "), 4)

    def test_withoutParameter(self) -> None:
        """
        Without SMTPUTF8 a UTF-8 address gets 553 5.6.7 at MAIL and at
        RCPT (RFC 6531 §3.4), and it is not counted as a bad command.
        """
        conn = started(maxBadCommands=1)
        events, out = run(
            conn,
            "EHLO c.test\r\nMAIL FROM:<jö@{0}>\r\nMAIL FROM:<jö@{0}>\r\n"
            "MAIL FROM:<a@b.test>\r\nRCPT TO:<ü@{0}>\r\nRCPT TO:<u@b.test>\r\n"
            "NOOP\r\n".format(U_DOMAIN).encode("utf-8"),
        )
        self.assertEqual(
            out.split(b"\r\n")[-7:-1],
            [
                b"553 5.6.7 Non-ASCII address requires SMTPUTF8",
                b"553 5.6.7 Non-ASCII address requires SMTPUTF8",
                b"250 2.1.0 <a@b.test>... Sender ok",
                b"553 5.6.7 Non-ASCII address requires SMTPUTF8",
                b"250 2.1.5 <u@b.test>... Recipient ok",
                b"250 2.0.0 OK",
            ],
        )
        self.assertFalse([e for e in events if isinstance(e, sm.MailFrom)][0].smtputf8)
        self.assertEqual(conn.badCommands, 0)

    def test_otherEightBit(self) -> None:
        """
        8-bit octets anywhere else (another command, MAIL that is not
        UTF-8) are still a bad command (500).
        """
        conn = started()
        _, out = run(conn, b"EHLO c.test\r\nNOOP \xc3\xa9\r\n")
        self.assertTrue(out.endswith(b"500 5.5.2 Syntax error: 8-bit characters\r\n"))
        _, out = run(conn, b"MAIL FROM:<j\xf6@b.test> SMTPUTF8\r\n")
        self.assertTrue(out.endswith(b"500 5.5.2 Syntax error: 8-bit characters\r\n"))
        self.assertEqual(conn.badCommands, 2)

    def test_parameterValue(self) -> None:
        """C{SMTPUTF8} takes no value (555), and needs EHLO."""
        _, out = run(started(), b"EHLO c.test\r\nMAIL FROM:<a@b.test> SMTPUTF8=1\r\n")
        self.assertTrue(
            out.endswith(b"555 5.5.4 Unsupported or malformed parameter SMTPUTF8\r\n")
        )
        _, out = run(started(), b"HELO c.test\r\nMAIL FROM:<a@b.test> SMTPUTF8\r\n")
        self.assertTrue(out.endswith(b"555 5.5.4 Parameters need EHLO\r\n"))


class ClientTests(SynchronousTestCase):
    """SMTPUTF8 in the sans-I/O client machine."""

    def ready(self, ehlo: bytes) -> ClientMachine:
        m = ClientMachine("me.test")
        m.replyReceived(r(b"220 mx.test ESMTP"))
        events = m.replyReceived(ReplyParser().feed(ehlo + b"\r\n")[0])
        self.assertIsInstance(events[0], SessionReady)
        return m

    def test_sent(self) -> None:
        """
        A message that needs SMTPUTF8 goes with the parameter and its
        addresses in UTF-8.
        """
        m = self.ready(b"250-mx.test\r\n250 SMTPUTF8")
        events = m.startTransaction("jö@b.test", ["ü@" + U_DOMAIN], 5, smtputf8=True)
        self.assertEqual(
            sent(events), "MAIL FROM:<jö@b.test> SMTPUTF8\r\n".encode("utf-8")
        )

    def test_asciiAsBefore(self) -> None:
        """A message that does not need it goes as before."""
        m = self.ready(b"250-mx.test\r\n250 SMTPUTF8")
        self.assertEqual(
            sent(m.startTransaction("a@b.test", ["c@d.test"], 5)),
            b"MAIL FROM:<a@b.test>\r\n",
        )

    def test_notOffered(self) -> None:
        """
        To a server without SMTPUTF8 nothing is sent: every recipient
        fails with 553 5.6.7, flagged or only with a UTF-8 address.
        """
        for sender, rcpt, flag in [
            ("a@b.test", "c@d.test", True),
            ("a@b.test", "ü@" + U_DOMAIN, False),
        ]:
            m = self.ready(b"250 mx.test")
            events = m.startTransaction(sender, [rcpt, "e@f.test"], 5, smtputf8=flag)
            self.assertFalse([e for e in events if isinstance(e, Send)])
            [done] = events
            self.assertIsInstance(done, TransactionDone)
            self.assertEqual(
                done.results,
                [
                    {
                        "status": "perm",
                        "code": 553,
                        "reply": UTF8_REQUIRED,
                        "where": "mail",
                    }
                ]
                * 2,
            )
            self.assertTrue(done.reusable)
        self.assertTrue(UTF8_REQUIRED.startswith("553 5.6.7 "))
        self.assertTrue(_tryElsewhere(done.results[0]), "another MX may offer SMTPUTF8")


class NeedsSmtputf8Tests(SynchronousTestCase):
    """L{_Content.needsSmtputf8}: which messages need SMTPUTF8."""

    def needs(self, smtputf8: bool, sender: str, header: bytes, body: bytes) -> bool:
        transaction = {
            "smtputf8": smtputf8,
            "sender": sender,
            "recipients": [{"address": "c@d.test", "index": 0}],
        }
        f = io.BytesIO(header + b"\r\n" + body)
        result = _Content(transaction).needsSmtputf8(f)
        self.assertEqual(f.tell(), 0)
        return result

    def test_decision(self) -> None:
        """
        Only a message received with SMTPUTF8 whose addresses or header
        are not ASCII needs it; an 8-bit body alone does not.
        """
        ascii = b"Subject: hi\r\n"
        utf8 = "Subject: grüße\r\n".encode("utf-8")
        self.assertFalse(self.needs(False, "jö@b.test", utf8, b""))
        self.assertFalse(self.needs(True, "a@b.test", ascii, "ü".encode()))
        self.assertTrue(self.needs(True, "jö@b.test", ascii, b""))
        self.assertTrue(self.needs(True, "a@b.test", utf8, b""))
        self.assertTrue(self.needs(True, "a@b.test", b"X: y\n" + utf8, b"x"))


class EnvelopeTests(SynchronousTestCase):
    """The flag is kept with the queued envelope."""

    def test_roundTrip(self) -> None:
        """
        C{smtputf8} survives L{Transaction.toRecord} and
        L{Transaction.fromEnvelope} (IBDB, DEFEDB); old records without it
        read as false.
        """
        ta = Transaction.fromEnvelope(
            {"id": "T1", "sender": "jö@b.test", "smtputf8": True, "recipients": []}
        )
        self.assertTrue(Transaction.fromEnvelope(ta.toRecord()).smtputf8)
        self.assertTrue(ta.envelope()["smtputf8"])
        self.assertFalse(Transaction.fromEnvelope({"id": "T2"}).smtputf8)

    def test_defedb(self) -> None:
        """
        A deferred transaction keeps the flag and its UTF-8 addresses in a
        real DEFEDB (Berkeley DB) across a close and reopen, as across a
        restart.
        """
        ta = Transaction.fromEnvelope(
            {
                "id": "S00000000407CE49201",
                "sender": "jö@" + U_DOMAIN,
                "smtputf8": True,
                "recipients": [{"address": "ü@" + A_DOMAIN}],
            }
        )
        directory = self.mktemp()
        db = defaultDefedb(directory)
        db.open()
        db.putRecipients(ta.envelope(), [r.toDict() for r in ta.recipients.values()])
        db.close()
        db = defaultDefedb(directory)
        db.open()
        self.addCleanup(db.close)
        [(envelope, rcpts)] = db.loadAll()
        again = Transaction(envelope)
        self.assertTrue(again.smtputf8)
        self.assertEqual(again.sender, "jö@" + U_DOMAIN)
        self.assertEqual([r["address"] for r in rcpts], ["ü@" + A_DOMAIN])
