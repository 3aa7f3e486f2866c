# -*- test-case-name: smx.pmilter.test.test_content -*-
"""
Tests for L{smx.pmilter.content}: header fields and body lines of the
content as SMTP received it.
"""

from twisted.trial.unittest import SynchronousTestCase

from smx.pmilter.content import (
    BODY,
    END_OF_HEADERS,
    HEADER,
    ContentScanner,
    MessageIdScanner,
)

MESSAGE = (
    b"Subject: hello\r\n"
    b"To: a@example.com,\r\n"
    b"\tb@example.com\r\n"
    b"\r\n"
    b"..leading dot\r\n"
    b"line\r\n"
    b".\r\n"
)


class ContentScannerTests(SynchronousTestCase):
    """
    L{ContentScanner}.
    """

    def scan(self, data, size):
        s = ContentScanner()
        events = []
        for i in range(0, len(data), size):
            events.extend(s.feed(data[i : i + size]))
        events.extend(s.finish())
        return events

    def test_events(self):
        """
        Header fields (folded lines joined), the end of the header, body
        lines without dot-stuffing; the final dot is not an event, in
        whatever chunks the content comes.
        """
        expected = [
            (HEADER, "Subject", "hello"),
            (HEADER, "To", "a@example.com, b@example.com"),
            (END_OF_HEADERS,),
            (BODY, ".leading dot"),
            (BODY, "line"),
        ]
        for size in (1, 3, 7, 1000):
            self.assertEqual(self.scan(MESSAGE, size), expected, size)

    def test_afterFinalDot(self):
        """
        Nothing after the final dot is looked at.
        """
        self.assertEqual(
            self.scan(b"\r\nbody\r\n.\r\nmore\r\n", 100),
            [(END_OF_HEADERS,), (BODY, "body")],
        )

    def test_noBlankLine(self):
        """
        A line that cannot be a header field begins the body.
        """
        self.assertEqual(
            self.scan(b"A: b\r\nnot a field\r\n.\r\n", 100),
            [(HEADER, "A", "b"), (END_OF_HEADERS,), (BODY, "not a field")],
        )

    def test_longLine(self):
        """
        A line is kept up to C{maxLine} bytes.
        """
        s = ContentScanner(maxLine=10)
        events = s.feed(b"\r\n" + b"x" * 25)
        events += s.feed(b"y" * 25 + b"\r\nshort\r\n.\r\n")
        self.assertEqual(events, [(END_OF_HEADERS,), (BODY, "x" * 10), (BODY, "short")])

    def test_undecodable(self):
        """
        Bytes that are not UTF-8 are replaced, not an error.
        """
        events = self.scan(b"S: \xff\r\n\r\n.\r\n", 100)
        self.assertEqual(events[0], (HEADER, "S", "\ufffd"))

    def test_headersOnly(self):
        """
        With C{headersOnly}, the scanner is done at the end of the header.
        """
        s = ContentScanner(headersOnly=True)
        self.assertFalse(s.done)
        s.feed(b"A: b\r\n\r\nbody\r\n")
        self.assertTrue(s.done)
        self.assertEqual(s.feed(b"more\r\n"), [])


class MessageIdTests(SynchronousTestCase):
    """
    L{MessageIdScanner}.
    """

    def test_found(self):
        """
        The first Message-ID field, any case, across chunks.
        """
        s = MessageIdScanner()
        for piece in (b"Subject: x\r\nmessage-", b"id: <1@example>\r\n", b"\r\n.\r\n"):
            s.feed(piece)
        self.assertEqual(s.messageId, "<1@example>")

    def test_notInBody(self):
        """
        A Message-ID line in the body is not the message's.
        """
        s = MessageIdScanner()
        s.feed(b"Subject: x\r\n\r\nMessage-ID: <no@example>\r\n.\r\n")
        self.assertIsNone(s.messageId)
