# -*- test-case-name: smx.mail.test.test_dsnparams -*-
"""
Tests for L{smx.mail.dsnparams} and the DSN parameters (RFC 3461, RFC
6533) of MAIL and RCPT in L{smx.mail.server}.
"""

from twisted.trial import unittest

from smx.mail import server as sm
from smx.mail.dsnparams import (
    DSNParameterError,
    decodeXtext,
    encodeOrcpt,
    encodeXtext,
    parseEnvid,
    parseNotify,
    parseOrcpt,
    parseRet,
)
from smx.mail.test.test_server import run, started


class XtextTests(unittest.TestCase):
    """xtext (RFC 3461 §4)."""

    def test_decode(self):
        """+HH decodes; plain characters stay."""
        self.assertEqual(decodeXtext("a+2Bb+3Dc"), "a+b=c")
        self.assertEqual(decodeXtext("x+20y"), "x y")

    def test_malformed(self):
        """
        Lower-case hex, a bare + or =, a space, raw non-ASCII, octets that
        are not UTF-8 are refused.
        """
        for bad in ["a+2b", "a+", "a+G0", "a=b", "a b", "\u00e9", "a+E9"]:
            self.assertRaises(DSNParameterError, decodeXtext, bad)

    def test_utf8Octets(self):
        """Encoded UTF-8 octets decode (as Postfix sends a UTF-8 ORCPT)."""
        self.assertEqual(decodeXtext("j+C3+B6rg"), "j\u00f6rg")
        self.assertEqual(parseOrcpt("rfc822;j+C3+B6rg@b"), "rfc822;j\u00f6rg@b")
        self.assertRaises(DSNParameterError, parseEnvid, "j+C3+B6rg")


class EncodeTests(unittest.TestCase):
    """What the client sends: xtext, and RFC 6533 utf-8-addr-xtext."""

    def test_roundTrip(self):
        """Encoded values decode to what was stored."""
        self.assertEqual(encodeXtext("a+b=c d"), "a+2Bb+3Dc+20d")
        for orcpt in ["rfc822;a+b=c@d", "utf-8;j\u00f6rg+x=\\y@b"]:
            encoded = encodeOrcpt(orcpt)
            self.assertTrue(encoded.isascii(), encoded)
            self.assertEqual(parseOrcpt(encoded), orcpt)
        self.assertEqual(encodeOrcpt("utf-8;j\u00f6rg@b"), "utf-8;j\\x{F6}rg@b")
        self.assertEqual(encodeOrcpt("rfc822;j\u00f6@b"), "utf-8;j\\x{F6}@b")


class ParameterValueTests(unittest.TestCase):
    """The values of RET, ENVID, NOTIFY and ORCPT."""

    def test_ret(self):
        """RET is FULL or HDRS, any case."""
        self.assertEqual(parseRet("hdrs"), "HDRS")
        self.assertEqual(parseRet("FULL"), "FULL")
        for bad in [None, "", "BODY"]:
            self.assertRaises(DSNParameterError, parseRet, bad)

    def test_envid(self):
        """ENVID is decoded; at most 100 printable characters."""
        self.assertEqual(parseEnvid("QQ+2B123"), "QQ+123")
        self.assertEqual(parseEnvid("x" * 100), "x" * 100)
        for bad in [None, "", "x" * 101, "a+20b", "a+0A"]:
            self.assertRaises(DSNParameterError, parseEnvid, bad)

    def test_notify(self):
        """NOTIFY: NEVER alone, or a list without repetitions; normalized."""
        self.assertEqual(parseNotify("never"), "NEVER")
        self.assertEqual(parseNotify("delay,Success"), "SUCCESS,DELAY")
        self.assertEqual(parseNotify("FAILURE"), "FAILURE")
        for bad in [None, "", "NEVER,SUCCESS", "SUCCESS,SUCCESS", "ALWAYS", "FAILURE,"]:
            self.assertRaises(DSNParameterError, parseNotify, bad)

    def test_orcpt(self):
        """ORCPT: addr-type ; xtext, the type lower-cased, the xtext decoded."""
        self.assertEqual(parseOrcpt("rfc822;a+2Bb@c.test"), "rfc822;a+b@c.test")
        self.assertEqual(parseOrcpt("RFC822;a@b"), "rfc822;a@b")
        for bad in [None, "", "rfc822", "rfc822;", ";a@b", "rfc 822;a@b", "rfc822;a b"]:
            self.assertRaises(DSNParameterError, parseOrcpt, bad)
        self.assertRaises(DSNParameterError, parseOrcpt, "rfc822;" + "a" * 500)

    def test_orcptUtf8(self):
        """
        RFC 6533: the utf-8 type takes \\x{HEX} (utf-8-addr-xtext) and, with
        SMTPUTF8, raw UTF-8 (utf-8-addr-unitext).
        """
        self.assertEqual(
            parseOrcpt("utf-8;j\\x{F6}rg@b.test"), "utf-8;j\u00f6rg@b.test"
        )
        self.assertEqual(
            parseOrcpt("utf-8;j\u00f6rg@b.test", utf8=True), "utf-8;j\u00f6rg@b.test"
        )
        self.assertRaises(DSNParameterError, parseOrcpt, "utf-8;j\u00f6rg@b.test")
        self.assertRaises(DSNParameterError, parseOrcpt, "rfc822;j\u00f6rg@b", True)
        for bad in [
            "utf-8;a\\x{D800}",
            "utf-8;a\\b",
            "utf-8;a=b",
            "utf-8;a\\x{110000}",
        ]:
            self.assertRaises(DSNParameterError, parseOrcpt, bad, True)


class ServerDSNTests(unittest.TestCase):
    """The DSN parameters through the server machine."""

    def test_advertised(self):
        """EHLO offers DSN; LHLO does not (smx reports LMTP delivery itself)."""
        _, out = run(started(), b"EHLO c\r\n")
        self.assertIn(b"250-DSN\r\n", out)
        _, out = run(started(lmtp=True), b"LHLO c\r\n")
        self.assertNotIn(b"DSN", out)

    def test_mailParameters(self):
        """RET and ENVID reach the MailFrom event, decoded."""
        events, out = run(
            started(), b"EHLO c\r\nMAIL FROM:<a@b.c> RET=hdrs ENVID=ab+2Bc\r\n"
        )
        self.assertIsInstance(events[1], sm.MailFrom)
        self.assertEqual((events[1].ret, events[1].envid), ("HDRS", "ab+c"))
        events, _ = run(started(), b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n")
        self.assertEqual((events[1].ret, events[1].envid), (None, None))

    def test_rcptParameters(self):
        """NOTIFY and ORCPT reach the RcptTo event, decoded."""
        events, out = run(
            started(),
            b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n"
            b"RCPT TO:<x@y.test> NOTIFY=success,delay ORCPT=rfc822;X+2By@y.test\r\n",
        )
        self.assertIsInstance(events[2], sm.RcptTo)
        self.assertEqual(events[2].notify, "SUCCESS,DELAY")
        self.assertEqual(events[2].orcpt, "rfc822;X+y@y.test")

    def test_utf8Orcpt(self):
        """With SMTPUTF8 the ORCPT may be utf-8-addr-unitext (RFC 6533)."""
        events, out = run(
            started(),
            "EHLO c\r\nMAIL FROM:<a@b.c> SMTPUTF8\r\n"
            "RCPT TO:<j\u00f6rg@y.test> ORCPT=utf-8;j\u00f6rg@y.test\r\n".encode(),
        )
        self.assertEqual(events[2].orcpt, "utf-8;j\u00f6rg@y.test")

    def test_malformed(self):
        """Malformed values are 501 5.5.4 with the reason."""
        for command, reason in [
            (b"MAIL FROM:<a@b.c> RET=BODY", b"RET must be FULL or HDRS"),
            (b"MAIL FROM:<a@b.c> ENVID=a+2x", b"Malformed xtext"),
            (b"MAIL FROM:<a@b.c> RET", b"RET must be FULL or HDRS"),
        ]:
            _, out = run(started(), b"EHLO c\r\n" + command + b"\r\n")
            self.assertIn(b"501 5.5.4 " + reason + b"\r\n", out, command)
        for command, reason in [
            (b"NOTIFY=NEVER,FAILURE", b"NOTIFY must be NEVER"),
            (b"NOTIFY=", b"Syntax error in RCPT"),
            (b"ORCPT=a@b.c", b"Malformed ORCPT"),
        ]:
            _, out = run(
                started(),
                b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@y.z> " + command + b"\r\n",
            )
            self.assertIn(b"501 5.5.4 " + reason, out, command)

    def test_duplicates(self):
        """A parameter given twice is 501 (RFC 3461 §4)."""
        _, out = run(started(), b"EHLO c\r\nMAIL FROM:<a@b.c> RET=FULL RET=HDRS\r\n")
        self.assertIn(b"501 5.5.4 Duplicate parameter\r\n", out)
        _, out = run(
            started(),
            b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n"
            b"RCPT TO:<x@y.z> NOTIFY=NEVER notify=FAILURE\r\n",
        )
        self.assertIn(b"501 5.5.4 Duplicate parameter\r\n", out)

    def test_needEhlo(self):
        """After HELO, RCPT takes no DSN parameters."""
        _, out = run(
            started(),
            b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@y.z> NOTIFY=NEVER\r\n",
        )
        self.assertIn(b"555 5.5.4 ", out)

    def test_lmtp(self):
        """LMTP does not take the DSN parameters (555)."""
        _, out = run(started(lmtp=True), b"LHLO c\r\nMAIL FROM:<a@b.c> RET=FULL\r\n")
        self.assertIn(b"555 5.5.4 ", out)
