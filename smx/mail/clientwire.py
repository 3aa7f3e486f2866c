# -*- test-case-name: smx.mail.test.test_client -*-
"""
The wire format of SMTPC's client: SMTP replies parsed from bytes
(L{ReplyParser} gives L{Reply} objects, bounded by L{MAX_REPLY_LINE} and
L{MAX_REPLY_LINES}) and message content encoded for DATA or BDAT
(L{BodyEncoder}, L{encodeBody}).  No state of a session lives here; the
state machine is L{smx.mail.client.ClientMachine}.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

#: the longest reply line accepted (RFC 5321 says 512; be generous)
MAX_REPLY_LINE = 8192

#: the most lines in one multi-line reply (EHLO keywords and the like)
MAX_REPLY_LINES = 256


class ProtocolError(Exception):
    """
    The server sent something that is not an SMTP reply.

    @ivar replies: the complete replies that came before the bad line.
    """

    replies: List["Reply"] = []


class Reply:
    """
    One (possibly multi-line) SMTP reply.

    @ivar code: the three-digit reply code.
    @ivar lines: the text of every line, without the code and separator.
    """

    __slots__ = ("code", "lines")

    def __init__(self, code: int, lines: Sequence[str]) -> None:
        self.code = code
        self.lines = list(lines)

    def __repr__(self) -> str:
        return "Reply(%d, %r)" % (self.code, self.lines)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Reply)
            and self.code == other.code
            and self.lines == other.lines
        )

    @property
    def text(self) -> str:
        """
        The reply as one line of text: the code and the text of every line
        joined by spaces (C{"550 5.1.1 unknown user"}).
        """
        body = " ".join(filter(None, self.lines))
        return ("%d %s" % (self.code, body)).rstrip()

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def status(self) -> str:
        """C{"ok"}, C{"temp"} or C{"perm"} for the code's class."""
        if self.code < 400:
            return "ok"
        if self.code < 500:
            return "temp"
        return "perm"


class ReplyParser:
    """
    Bytes in, L{Reply} objects out.  A line ends with LF (CRLF expected, a
    bare LF is tolerated from servers).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._code = 0
        self._lines = []  # type: List[str]

    def feed(self, data: bytes) -> List[Reply]:
        """
        @return: every reply completed by C{data}.
        @raise ProtocolError: for a line that is not a reply or too long.
        """
        self._buffer += data
        replies = []  # type: List[Reply]
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_REPLY_LINE:
                    raise ProtocolError("reply line too long")
                return replies
            line = self._buffer[:end]
            self._buffer = self._buffer[end + 1 :]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > MAX_REPLY_LINE:
                raise ProtocolError("reply line too long")
            try:
                reply = self._line(line)
            except ProtocolError as e:
                e.replies = replies
                raise
            if reply is not None:
                replies.append(reply)

    def _line(self, line: bytes) -> Optional[Reply]:
        head = line[:3]
        sep = line[3:4]
        if len(head) != 3 or not head.isdigit() or sep not in (b"", b" ", b"-"):
            raise ProtocolError("not an SMTP reply: %r" % (line[:80],))
        code = int(head)
        if not 200 <= code <= 599:
            raise ProtocolError("reply code out of range: %r" % (line[:80],))
        if self._lines and code != self._code:
            raise ProtocolError("reply codes differ in a multi-line reply")
        self._code = code
        self._lines.append(line[4:].decode("utf-8", "replace"))
        if len(self._lines) > MAX_REPLY_LINES:
            raise ProtocolError("multi-line reply too long")
        if sep == b"-":
            return None
        reply = Reply(code, self._lines)
        self._lines = []
        return reply


class BodyEncoder:
    """
    Encode message content for DATA: line ends normalised to CRLF (a lone
    LF or lone CR becomes CRLF), dot-stuffing, and the final C{.CRLF}.
    Feed it chunks of any size with L{encode}, then call L{finish}.  With
    C{dotStuffing=False} (BDAT content), no dot is added and C{finish}
    gives no final dot.
    """

    def __init__(self, dotStuffing: bool = True) -> None:
        self.dotStuffing = dotStuffing
        self._atLineStart = True
        self._pendingCR = False
        self._empty = True

    def encode(self, chunk: bytes) -> bytes:
        """
        @return: the encoded form of C{chunk} (a trailing CR is held back
            until the next chunk shows whether an LF follows).
        """
        if self._pendingCR:
            chunk = b"\r" + chunk
            self._pendingCR = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self._pendingCR = True
        if not chunk:
            return b""
        self._empty = False
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        chunk = chunk.replace(b"\n", b"\r\n")
        if not self.dotStuffing:
            self._atLineStart = chunk.endswith(b"\n")
            return chunk
        if b"\n." in chunk:
            chunk = chunk.replace(b"\n.", b"\n..")
        if self._atLineStart and chunk[:1] == b".":
            chunk = b"." + chunk
        self._atLineStart = chunk.endswith(b"\n")
        return chunk

    def finish(self) -> bytes:
        """
        @return: what ends the DATA stream: a pending CR as CRLF, a CRLF if
            the content did not end with one, and C{.CRLF}.
        """
        out = b""
        if self._pendingCR:
            self._pendingCR = False
            self._empty = False
            out = b"\r\n"
            self._atLineStart = True
        if not self._empty and not self._atLineStart:
            out += b"\r\n"
        return out + b".\r\n" if self.dotStuffing else out


def encodeBody(data: bytes) -> bytes:
    """
    Encode a whole message at once (see L{BodyEncoder}).
    """
    encoder = BodyEncoder()
    return encoder.encode(data) + encoder.finish()


# Events -------------------------------------------------------------------
