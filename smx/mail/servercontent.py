# -*- test-case-name: smx.mail.test.test_server -*-
"""
Message content in the server core: what L{smx.mail.server.ServerConnection}
does between DATA (or the first BDAT) and the end of the message.

DATA content is read line by line up to C{<CRLF>.<CRLF>}, dot-unstuffed,
and checked as it arrives: bare CR or LF (SMTP smuggling), NUL octets,
lines longer than L{MAX_TEXT_LINE} octets with their CRLF, and the size
limit; none of them ends the content early, and a message with one of
them is refused at its end (L{EndOfData}).  BDAT content (RFC 3030) is
taken by count, never scanned for a dot, and checked by the same rules,
also across chunk boundaries.  The first L{MAX_HEADER_SCAN} octets of the
header section are scanned for C{Received:} hops, C{Message-Id:} and
C{TLS-Required: No} (RFC 8689 §3).
"""

from __future__ import annotations

import itertools
import re
from typing import Any, List, Optional

from smx.mail.serverevents import (
    CLOSE,
    NEED_DATA,
    DataChunk,
    DataCommand,
    EndOfData,
)
from smx.mail.serverstates import Refuse, State

#: longest line of message content with its CRLF (RFC 5321 §4.5.3.1.6)
MAX_TEXT_LINE = 1000
#: how much of the header section is scanned for Received: and Message-Id:
MAX_HEADER_SCAN = 256 * 1024

#: C{BDAT} arguments (RFC 3030 §2: 1*DIGIT [SP "LAST"])
_BDAT_ARGUMENT = re.compile(r"([0-9]{1,18})(?: +(LAST))? *\Z", re.IGNORECASE)


class ContentMixin:
    """
    The DATA and BDAT content of L{smx.mail.server.ServerConnection}; it
    uses the connection's buffer, state and limits and its C{_send}.
    """

    _buffer: bytes
    _state: State
    _next: State
    _ready: List[Any]
    _accepted: List[str]
    _due: List[str]
    _chunkLeft: int
    _chunkSize: int
    _chunkLast: bool
    _chunkSkip: bool
    _afterSkip: State
    maxMessageSize: int
    lmtp: bool

    def _send(self, code: int, dsn: Optional[str], text: str) -> None:
        raise NotImplementedError()  # pragma: no cover - the connection's

    # -- DATA -----------------------------------------------------------

    def _resetData(self) -> None:
        self._atLineStart = True
        self._size = 0
        self._tooBig = False
        self._badLineEnd = False
        self._nul = False
        self._longLine = False
        # BDAT: the last octet received was a CR, held until the next one
        self._heldCR = False
        # bytes of content since its last LF
        self._lineRun = 0
        self._inHeaders = True
        self._header = bytearray()
        self._hops = 0
        self._messageId = None  # type: Optional[str]
        self._tlsRequiredNo = False

    def _dataEvent(self):
        buf = self._buffer
        pos = 0
        end = -1
        pieces = []  # type: List[bytes]
        n = len(buf)
        while True:
            if self._atLineStart:
                if pos >= n:
                    break
                if buf[pos] == 0x2E:  # "."
                    if buf.startswith(b".\r\n", pos):
                        end = pos + 3
                        break
                    if n - pos < 3 and b".\r\n".startswith(buf[pos:]):
                        break
                    pos += 1
                self._atLineStart = False
            i = buf.find(b"\r\n.", pos)
            if i < 0:
                if buf.endswith(b"\r\n"):
                    pieces.append(buf[pos:])
                    pos = n
                    self._atLineStart = True
                elif buf.endswith(b"\r"):
                    pieces.append(buf[pos : n - 1])
                    pos = n - 1
                else:
                    pieces.append(buf[pos:])
                    pos = n
                break
            pieces.append(buf[pos : i + 2])
            pos = i + 2
            self._atLineStart = True
        self._buffer = buf[end:] if end >= 0 else buf[pos:]
        event = self._content(b"".join(pieces))
        if end >= 0:
            return self._endOfContent(event)
        return event if event is not None else NEED_DATA

    def _content(self, chunk: bytes) -> Optional[DataChunk]:
        """
        Check the next piece of content (DATA or BDAT) and pass it on as a
        L{DataChunk} unless the message has a problem.
        """
        event = None
        if chunk:
            self._size += len(chunk)
            if not self._badLineEnd:
                crlf = chunk.count(b"\r\n")
                if chunk.count(b"\r") != crlf or chunk.count(b"\n") != crlf:
                    self._badLineEnd = True
            if not self._nul and b"\0" in chunk:
                self._nul = True
            if not self._longLine:
                self._checkLineLengths(chunk)
            if self._inHeaders:
                self._scanHeader(chunk)
            if self.maxMessageSize and self._size > self.maxMessageSize:
                self._tooBig = True
            if not (self._tooBig or self._badLineEnd or self._nul or self._longLine):
                event = DataChunk(chunk)
        return event

    def _endOfContent(self, event: Optional[DataChunk]):
        """The content ended: L{EndOfData} (after C{event}, if any)."""
        if self._inHeaders:
            self._parseHeader(bytes(self._header))
        self._state = State.END_OF_DATA
        self._next = State.READY
        if self.lmtp:
            self._due = list(self._accepted)
        final = EndOfData(
            self._size,
            self._hops,
            self._messageId,
            self._tooBig,
            self._badLineEnd,
            self._nul,
            self._longLine,
            self._tlsRequiredNo,
        )
        if event is None:
            return final
        self._ready.append(final)
        return event

    # -- BDAT (RFC 3030) ------------------------------------------------

    def _bdat(self, argument: str, found):
        match = _BDAT_ARGUMENT.match(argument)
        if match is None:
            # the octets that follow cannot be told from commands
            self._send(501, "5.5.4", "Syntax: BDAT size [LAST]; closing connection")
            self._state = State.CLOSED
            return CLOSE
        size, last = int(match.group(1)), match.group(2) is not None
        if isinstance(found, Refuse):
            self._send(found.code, found.dsn, found.text)
            self._skipChunk(size)
            return None
        if self._state is State.BDAT:
            # a later chunk of the transaction
            self._startChunk(size, last)
            return None
        self._next = State.CHUNK
        return DataCommand(size, last)

    def _startChunk(self, size: int, last: bool) -> None:
        self._chunkLeft = self._chunkSize = size
        self._chunkLast = last
        self._chunkSkip = False
        self._state = self._next = State.CHUNK

    def _skipChunk(self, size: int) -> None:
        if size:
            self._afterSkip = self._state
            self._chunkLeft = size
            self._chunkSkip = True
            self._state = State.CHUNK

    def _chunkEvent(self):
        buf = self._buffer
        take = min(len(buf), self._chunkLeft)
        if take < len(buf):
            piece, self._buffer = buf[:take], buf[take:]
        else:
            piece, self._buffer = buf, b""
        self._chunkLeft -= take
        if self._chunkSkip:
            if self._chunkLeft:
                return NEED_DATA
            self._chunkSkip = False
            self._state = self._afterSkip
            return None
        done = not self._chunkLeft
        if self._heldCR:
            piece = b"\r" + piece
            self._heldCR = False
        if piece.endswith(b"\r") and not (done and self._chunkLast):
            # a CR at a piece's end is a line end only if an LF follows
            piece = piece[:-1]
            self._heldCR = True
        event = self._content(piece)
        if not done:
            return event if event is not None else NEED_DATA
        if self._chunkLast:
            return self._endOfContent(event)
        self._send(250, "2.0.0", "%d octets received" % (self._chunkSize,))
        self._state = self._next = State.BDAT
        return event

    def _checkLineLengths(self, chunk: bytes) -> None:
        """
        Look for a line longer than L{MAX_TEXT_LINE} octets (with its
        CRLF), i.e. L{MAX_TEXT_LINE} octets without an LF, in the content
        stream of which C{chunk} is the next part.  Each step looks for
        the last LF within the bytes the current line may still have, so
        that short lines cost no Python-level step.
        """
        run = self._lineRun
        pos = 0
        n = len(chunk)
        while True:
            window = MAX_TEXT_LINE - run
            if n - pos < window:
                last = chunk.rfind(b"\n", pos)
                self._lineRun = n - last - 1 if last >= 0 else run + n - pos
                return
            last = chunk.rfind(b"\n", pos, pos + window)
            if last < 0:
                self._longLine = True
                return
            pos = last + 1
            run = 0

    def _scanHeader(self, chunk: bytes) -> None:
        header = self._header
        start = max(0, len(header) - 3)
        header += chunk
        if header.startswith(b"\r\n"):
            self._inHeaders = False
            return
        i = header.find(b"\r\n\r\n", start)
        if i >= 0:
            self._parseHeader(bytes(header[: i + 2]))
        elif len(header) > MAX_HEADER_SCAN:
            self._parseHeader(bytes(header))

    def _parseHeader(self, header: bytes) -> None:
        self._inHeaders = False
        self._header = bytearray()
        lines = header.split(b"\r\n")
        for i, line in enumerate(lines):
            lower = line[:11].lower()
            if lower.startswith(b"received:"):
                self._hops += 1
            elif line[:13].lower() == b"tls-required:":
                # RFC 8689 §3: "No" is the one value
                value = b"".join(
                    [line[13:]]
                    + list(itertools.takewhile(_isContinuation, lines[i + 1 :]))
                )
                self._tlsRequiredNo = value.strip().lower() == b"no"
            elif lower == b"message-id:" and self._messageId is None:
                value = line[11:].strip()
                j = i + 1
                while not value and j < len(lines) and lines[j][:1] in (b" ", b"\t"):
                    value = lines[j].strip()
                    j += 1
                self._messageId = value.decode("ascii", "replace")


def _isContinuation(line: bytes) -> bool:
    """A folded header line goes on (RFC 5322 §2.2.3)."""
    return line[:1] in (b" ", b"\t")
