# -*- test-case-name: smx.pmilter.test.test_content -*-
"""
NAME
    smx.pmilter.content - header fields and body lines of the content a
    pmilter is given

SYNOPSIS
    scanner = ContentScanner()
    for event in scanner.feed(chunk):       # chunks as received (App. B.4)
        if event[0] == HEADER: name, value = event[1:]
        elif event[0] == BODY: line = event[1]
    scanner.finish()

DESCRIPTION
    The C{body} callback of App. B.4 gets the content as SMTP received it:
    CRLF line ends, dot-stuffed, the last chunk ending with the final dot.
    L{ContentScanner} turns those chunks into events: each header field
    (name and value, folded lines joined), the end of the header, and each
    body line with the dot-stuffing removed.  The final C{.} line is not
    an event.

    A line is kept up to L{ContentScanner.maxLine} bytes; the rest of a
    longer line is not looked at, so memory stays bounded whatever the
    client sends.  Text is decoded as UTF-8, bytes that are not are
    replaced.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

HEADER = "header"
END_OF_HEADERS = "endOfHeaders"
BODY = "body"

Event = Tuple[str, ...]


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace")


class ContentScanner:
    """
    Events from the chunks of one message's content.

    @ivar maxLine: the most bytes of a line (or folded header field) that
        are kept.
    @ivar headersOnly: stop after the header (no body events).
    """

    def __init__(self, maxLine: int = 65536, headersOnly: bool = False) -> None:
        self.maxLine = maxLine
        self.headersOnly = headersOnly
        self._partial = b""
        self._overflow = False
        self._inHeader = True
        self._field = None  # type: Optional[bytes]
        self._ended = False

    @property
    def done(self) -> bool:
        """
        Has the scanner seen all it wants (the final dot, or the end of
        the header with C{headersOnly})?
        """
        return self._ended or (self.headersOnly and not self._inHeader)

    def feed(self, chunk: bytes) -> List[Event]:
        """
        Take the next chunk.

        @return: the events of the lines it completes.
        """
        events = []  # type: List[Event]
        if self.done:
            return events
        start = 0
        while not self.done:
            end = chunk.find(b"\n", start)
            if end < 0:
                rest = chunk[start:]
                room = self.maxLine - len(self._partial)
                if len(rest) > room:
                    self._overflow = True
                self._partial += rest[: max(room, 0)]
                break
            piece = chunk[start:end]
            start = end + 1
            if self._overflow:
                line, self._overflow = self._partial, False
            else:
                line = (
                    self._partial + piece[: max(self.maxLine - len(self._partial), 0)]
                )
            self._partial = b""
            if line.endswith(b"\r"):
                line = line[:-1]
            self._line(line, events)
        return events

    def finish(self) -> List[Event]:
        """
        The content ended: the events still pending (a header field
        without a line after it, a last line without CRLF).
        """
        events = []  # type: List[Event]
        if self._partial and not self.done:
            line, self._partial = self._partial, b""
            self._line(line.rstrip(b"\r"), events)
        if self._inHeader:
            self._endHeader(events)
        self._ended = True
        return events

    def _line(self, line: bytes, events: List[Event]) -> None:
        if line == b".":
            self._ended = True
            if self._inHeader:
                self._endHeader(events)
            return
        if line.startswith(b"."):
            line = line[1:]
        if not self._inHeader:
            events.append((BODY, _text(line)))
            return
        if line[:1] in (b" ", b"\t") and self._field is not None:
            if len(self._field) < self.maxLine:
                self._field += b" " + line.strip()
            return
        self._flushField(events)
        if not line or b":" not in line:
            # the empty line, or a line that cannot be a header field,
            # begins the body (RFC 5322 2.1)
            self._endHeader(events)
            if line:
                events.append((BODY, _text(line)))
            return
        self._field = line

    def _flushField(self, events: List[Event]) -> None:
        if self._field is not None:
            name, _, value = self._field.partition(b":")
            events.append((HEADER, _text(name.strip()), _text(value.strip())))
            self._field = None

    def _endHeader(self, events: List[Event]) -> None:
        self._flushField(events)
        if self._inHeader:
            self._inHeader = False
            events.append((END_OF_HEADERS,))


class MessageIdScanner:
    """
    The Message-Id of a message (App. B.6 C{PMM_DOT_MSGID}) from its
    chunks: the value of its first C{Message-ID:} header field.
    """

    def __init__(self) -> None:
        self.messageId = None  # type: Optional[str]
        self._scanner = ContentScanner(maxLine=4096, headersOnly=True)

    def feed(self, chunk: bytes) -> None:
        if self.messageId is not None or self._scanner.done:
            return
        for event in self._scanner.feed(chunk):
            if (
                event[0] == HEADER
                and event[1].lower() == "message-id"
                and self.messageId is None
            ):
                self.messageId = event[2]
