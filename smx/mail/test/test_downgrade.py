# -*- test-case-name: smx.mail.test.test_downgrade -*-
"""
Tests for L{smx.mail.downgrade}: 8-bit MIME content made 7-bit, every
result parsed back with the standard library's L{email} package and
decoded to the original bytes.
"""

from __future__ import annotations

import email
import io
from email.message import Message
from typing import Any, List

from twisted.trial import unittest

from smx.mail import downgrade as downgradeModule
from smx.mail.downgrade import ConversionError, downgrade, downgradeFile


def convert(data: bytes) -> bytes:
    out = io.BytesIO()
    size = downgrade(io.BytesIO(data), out)
    result = out.getvalue()
    assert size == len(result)
    return result


def leaves(message: Message) -> List[Message]:
    """The leaf parts, message/rfc822 parts walked into."""
    return [part for part in message.walk() if not part.is_multipart()]


def normal(data: Any) -> bytes:
    assert isinstance(data, bytes)
    return data.replace(b"\r\n", b"\n")


class DowngradeTestCase(unittest.TestCase):
    """
    Assertions on converted content (no tests of its own).
    """

    def assertSevenBit(self, data: bytes) -> None:
        """C{data} is 7-bit with lines of at most 998 octets."""
        self.assertTrue(data.isascii(), data)
        for line in data.split(b"\n"):
            self.assertLessEqual(len(line.rstrip(b"\r")), 998)

    def assertSameContent(self, original: bytes, converted: bytes) -> Message:
        """
        C{converted} is 7-bit and every leaf part of it decodes to the
        bytes of the same part of C{original}.
        """
        self.assertSevenBit(converted)
        before = email.message_from_bytes(original)
        after = email.message_from_bytes(converted)
        old, new = leaves(before), leaves(after)
        self.assertEqual(len(old), len(new))
        for a, b in zip(old, new):
            self.assertEqual(a.get_content_type(), b.get_content_type())
            self.assertEqual(
                normal(a.get_payload(decode=True)), normal(b.get_payload(decode=True))
            )
        self.assertEqual(after.defects, [])
        return after


TEXT = (
    b"Received: from a by b; Tue, 1 Dec 2026 10:00:00 +0000\r\n"
    b"From: a@example.com\r\n"
    b"Subject: test\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"gr\xc3\xbc\xc3\x9fe\r\n"
    b"plain line\r\n"
)


class TextTests(DowngradeTestCase):
    """
    A single text part.
    """

    def test_text(self) -> None:
        """
        An 8-bit text part becomes quoted-printable; its
        Content-Transfer-Encoding line is replaced in place, every other
        header (the Received line first) is byte-identical.
        """
        converted = convert(TEXT)
        self.assertSameContent(TEXT, converted)
        head, body = converted.split(b"\r\n\r\n", 1)
        self.assertEqual(
            head,
            TEXT.split(b"\r\n\r\n")[0].replace(
                b"Encoding: 8bit", b"Encoding: quoted-printable"
            ),
        )
        self.assertEqual(body, b"gr=C3=BC=C3=9Fe\r\nplain line\r\n")

    def test_sevenBitUnchanged(self) -> None:
        """
        A part without 8-bit octets is copied as it is, even declared
        8bit.
        """
        data = TEXT.replace(b"gr\xc3\xbc\xc3\x9fe", b"gruesse")
        self.assertEqual(convert(data), data)

    def test_declaredSevenBit(self) -> None:
        """
        A part declared 7bit that has 8-bit octets is converted too.
        """
        data = TEXT.replace(b"Encoding: 8bit", b"Encoding: 7bit")
        converted = convert(data)
        self.assertIn(b"Content-Transfer-Encoding: quoted-printable\r\n", converted)
        self.assertNotIn(b"7bit", converted)
        self.assertSameContent(data, converted)

    def test_noEncodingHeader(self) -> None:
        """
        A MIME part without Content-Transfer-Encoding gets one, before
        the empty line.
        """
        data = TEXT.replace(b"Content-Transfer-Encoding: 8bit\r\n", b"")
        converted = convert(data)
        self.assertIn(
            b"charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
            converted,
        )
        self.assertSameContent(data, converted)

    def test_foldedEncodingHeader(self) -> None:
        """
        A folded Content-Transfer-Encoding field is replaced with all its
        lines.
        """
        data = TEXT.replace(
            b"Content-Transfer-Encoding: 8bit", b"Content-Transfer-Encoding:\r\n 8bit"
        )
        converted = convert(data)
        self.assertEqual(converted.count(b"Content-Transfer-Encoding"), 1)
        self.assertNotIn(b"8bit", converted)
        self.assertSameContent(data, converted)

    def test_encodingWithComment(self) -> None:
        """
        A Content-Transfer-Encoding with a comment, folded, is read as
        its token.
        """
        data = TEXT.replace(
            b"Content-Transfer-Encoding: 8bit",
            b"Content-Transfer-Encoding: 8BIT\r\n (utf-8\r\n text)",
        )
        converted = convert(data)
        self.assertEqual(converted.count(b"Content-Transfer-Encoding"), 1)
        self.assertNotIn(b"(utf-8", converted)
        self.assertSameContent(data, converted)

    def test_lfLineEndings(self) -> None:
        """
        Content with LF line endings keeps them: the headers are
        identical, soft breaks use LF as well.
        """
        data = normal(TEXT) + b"\xe9" * 100 + b"\n"
        converted = convert(data)
        self.assertNotIn(b"\r", converted)
        self.assertTrue(converted.startswith(normal(TEXT).split(b"\n\n")[0][:60]))
        self.assertSameContent(data, converted)

    def test_downgradeFile(self) -> None:
        """
        L{downgradeFile} returns the result in a file at position 0 and
        its size.
        """
        out, size = downgradeFile(io.BytesIO(TEXT))
        self.addCleanup(out.close)
        data = out.read()
        self.assertEqual(data, convert(TEXT))
        self.assertEqual(size, len(data))


class QuotedPrintableTests(DowngradeTestCase):
    """
    The edge cases of quoted-printable.
    """

    def roundTrip(self, body: bytes) -> bytes:
        data = TEXT.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + body
        converted = convert(data)
        self.assertSameContent(data, converted)
        return converted.split(b"\r\n\r\n", 1)[1]

    def test_trailingWhitespace(self) -> None:
        """
        White space at the end of a line is encoded (a relay may strip
        it); inside a line it stays.
        """
        body = self.roundTrip(b"\xe9 a b \r\n\xe9\t\r\n")
        self.assertEqual(body, b"=E9 a b=20\r\n=E9=09\r\n")

    def test_equals(self) -> None:
        """
        C{=} is encoded.
        """
        self.assertEqual(self.roundTrip(b"a=b \xe9\r\n"), b"a=3Db =E9\r\n")

    def test_longLines(self) -> None:
        """
        Lines are cut at 76 characters with soft breaks, also a line
        longer than the piece read at once.
        """
        self.patch(downgradeModule, "PIECE", 1000)
        body = self.roundTrip(b"\xe9" * 5000 + b"\r\n" + b"x" * 3000 + b"\r\n")
        for line in body.split(b"\r\n"):
            self.assertLessEqual(len(line), 76)

    def test_lonelyCRandLF(self) -> None:
        """
        A lone CR is data (=0D); a lone LF ends a line as CRLF does.
        """
        body = self.roundTrip(b"a\rb\xe9\r\nc\nd\r\n")
        self.assertEqual(body, b"a=0Db=E9\r\nc\nd\r\n")

    def test_dotLines(self) -> None:
        """
        A line that is only a dot is encoded (=2E), one that starts with
        a dot is left to the transport's dot-stuffing.
        """
        body = self.roundTrip(b"\xe9\r\n.\r\n..x\r\n")
        self.assertEqual(body, b"=E9\r\n=2E\r\n..x\r\n")

    def test_noFinalLineEnding(self) -> None:
        """
        A body that does not end with a line ending gets a soft break.
        """
        self.assertEqual(self.roundTrip(b"\xe9\r\nend"), b"=E9\r\nend=\r\n")


MULTIPART = (
    b"From: a@example.com\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"This is a preamble.\r\n"
    b"--outer\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"caf\xe9 \r\n"
    b"--outer\r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"seven bit\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"<p>\xc3\xa9</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAEC\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"From: b@example.com\r\n"
    b"Subject: inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"\xc3\xa0 bient\xc3\xb4t\r\n"
    b"--outer--\r\n"
    b"epilogue\r\n"
)


class StructureTests(DowngradeTestCase):
    """
    Multiparts, messages and messages without MIME.
    """

    def test_nestedMultipart(self) -> None:
        """
        Every 8-bit leaf of nested multiparts (and of a message/rfc822
        part) is converted; 7-bit and base64 parts, boundaries,
        preamble and epilogue are copied; composites declared 8bit are
        declared 7bit.
        """
        converted = convert(MULTIPART)
        after = self.assertSameContent(MULTIPART, converted)
        self.assertEqual(after["Content-Transfer-Encoding"], "7bit")
        encodings = [p["Content-Transfer-Encoding"] for p in after.walk()]
        self.assertEqual(
            encodings,
            [
                "7bit",
                "quoted-printable",
                None,
                None,
                "quoted-printable",
                "base64",
                "7bit",
                "quoted-printable",
            ],
        )
        for unchanged in [
            b"This is a preamble.\r\n--outer\r\n",
            b"\r\n--inner\r\nContent-Type: text/plain\r\n\r\nseven bit\r\n--inner\r\n",
            b"AAEC\r\n--outer\r\n",
            b"--outer--\r\nepilogue\r\n",
            b"From: b@example.com\r\nSubject: inner\r\n",
        ]:
            self.assertIn(unchanged, converted)
        self.assertIn(b"caf=E9=20\r\n--outer\r\n", converted)

    def test_digest(self) -> None:
        """
        The parts of a multipart/digest are messages by default.
        """
        data = (
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: multipart/digest; boundary=d\r\n"
            b"\r\n"
            b"--d\r\n"
            b"\r\n"
            b"Subject: one\r\n"
            b"\r\n"
            b"\xe9t\xe9\r\n"
            b"--d--\r\n"
        )
        converted = convert(data)
        self.assertSameContent(data, converted)
        self.assertIn(
            b"Subject: one\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=unknown-8bit\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9t=E9\r\n",
            converted,
        )

    def test_noMIME(self) -> None:
        """
        The body of a message without MIME-Version is one text/plain
        part: converted, it gets the MIME header fields.
        """
        data = b"Received: x\r\nFrom: a@b\r\nSubject: s\r\n\r\n\xe9\r\n"
        converted = convert(data)
        self.assertEqual(
            converted,
            b"Received: x\r\nFrom: a@b\r\nSubject: s\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=unknown-8bit\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n"
            b"\r\n=E9\r\n",
        )
        self.assertSameContent(data, converted)

    def test_noMIMEWithContentType(self) -> None:
        """
        A message without MIME-Version that has a Content-Type keeps it.
        """
        data = b"From: a@b\r\nContent-Type: text/plain; charset=latin1\r\n\r\n\xe9\r\n"
        converted = convert(data)
        self.assertEqual(converted.count(b"Content-Type"), 1)
        self.assertIn(b"MIME-Version: 1.0\r\n", converted)
        self.assertSameContent(data, converted)

    def test_unclosedMultipart(self) -> None:
        """
        A multipart without its close delimiter ends with the content.
        """
        data = MULTIPART.split(b"--outer\r\nContent-Type: multipart")[0]
        converted = convert(data)
        self.assertSevenBit(converted)
        self.assertTrue(converted.endswith(b"caf=E9=20\r\n"))


class RefusedTests(unittest.TestCase):
    """
    What cannot be converted is refused with 554 5.6.3 and the reason.
    """

    def assertRefused(self, data: bytes, reason: str) -> None:
        e = self.assertRaises(ConversionError, convert, data)
        self.assertEqual(e.reason, reason)
        self.assertTrue(e.reply.startswith("554 5.6.3 "), e.reply)
        self.assertIn(reason, e.reply)

    def test_eightBitHeader(self) -> None:
        """
        8-bit octets in a header of the message cannot be converted.
        """
        self.assertRefused(
            b"Subject: caf\xe9\r\n\r\nbody\r\n", "8-bit data in a header"
        )

    def test_eightBitPartHeader(self) -> None:
        """
        Nor in a header of a part, or of a message/rfc822 part.
        """
        self.assertRefused(
            MULTIPART.replace(b"charset=iso-8859-1", b"name=\xe9"),
            "8-bit data in a header",
        )
        self.assertRefused(
            MULTIPART.replace(b"Subject: inner", b"Subject: \xe9"),
            "8-bit data in a header",
        )

    def test_signed(self) -> None:
        """
        A multipart/signed part with 8-bit octets, or an 8-bit part
        inside one, is refused; a 7-bit one passes unchanged.
        """
        signed = (
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=m\r\n"
            b"\r\n"
            b"--m\r\n"
            b'Content-Type: multipart/signed; boundary=s; protocol="x"\r\n'
            b"\r\n"
            b"--s\r\n"
            b"Content-Type: text/plain\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n"
            b"\r\n"
            b"TEXT\r\n"
            b"--s\r\n"
            b"Content-Type: application/x\r\n"
            b"\r\n"
            b"sig\r\n"
            b"--s--\r\n"
            b"--m\r\n"
            b"Content-Type: text/plain\r\n"
            b"\r\n"
            b"OTHER\r\n"
            b"--m--\r\n"
        )
        self.assertRefused(
            signed.replace(b"TEXT", b"\xe9"),
            "8-bit data in a multipart/signed part (conversion would break "
            "the signature)",
        )
        self.assertEqual(convert(signed), signed)
        converted = convert(signed.replace(b"OTHER", b"\xe9"))
        self.assertIn(b"--s--\r\n--m\r\nContent-Type: text/plain\r\n", converted)
        self.assertIn(b"\r\n\r\n=E9\r\n--m--", converted)

    def test_binary(self) -> None:
        """
        A part declared binary is refused.
        """
        self.assertRefused(
            TEXT.replace(b"Encoding: 8bit", b"Encoding: binary"),
            "a part has the binary content transfer encoding",
        )

    def test_encodedWithEightBit(self) -> None:
        """
        8-bit octets in a part declared base64 are refused.
        """
        self.assertRefused(
            MULTIPART.replace(b"AAEC", b"AA\xe9C"),
            "8-bit data in a part declared base64",
        )

    def test_preamble(self) -> None:
        """
        8-bit octets in a preamble are refused.
        """
        self.assertRefused(
            MULTIPART.replace(b"a preamble", b"\xe9"),
            "8-bit data in a multipart preamble",
        )

    def test_reasonIsOneLine(self) -> None:
        """
        A reason that quotes the message (an unknown encoding) is one
        line of printable ASCII of bounded length.
        """
        data = TEXT.replace(
            b"Encoding: 8bit", b"Encoding: x-\x01" + b"y" * 100 + b"\r\n (c)"
        )
        e = self.assertRaises(ConversionError, convert, data)
        self.assertEqual(e.reason, "8-bit data in a part declared x-?" + "y" * 37)

    def test_depth(self) -> None:
        """
        MIME nested too deeply is refused.
        """
        self.patch(downgradeModule, "MAX_DEPTH", 3)
        inner = b"Content-Type: message/rfc822\r\n\r\n"
        self.assertRefused(inner * 5 + b"\r\n\xe9\r\n", "MIME parts nested too deeply")
