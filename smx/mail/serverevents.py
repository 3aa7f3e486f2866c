# -*- test-case-name: smx.mail.test.test_server -*-
"""
The events of the sans-I/O ESMTP server machine (L{smx.mail.server}) and
the formatting of its replies.

An L{Event} is what a client asked for (L{Helo}, L{MailFrom}, L{RcptTo},
L{DataCommand}, L{DataChunk}, L{EndOfData}, ...); L{NEED_DATA},
L{PAUSED} and L{CLOSE} are the markers L{smx.mail.server.ServerConnection.
nextEvent} returns when there is no event.  Every name here is also
importable from L{smx.mail.server}.
"""

from __future__ import annotations

from typing import Optional, Tuple


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Marker("NEED_DATA")
PAUSED = _Marker("PAUSED")
CLOSE = _Marker("CLOSE")


class Event:
    """
    Something the client asked for.  Events other than L{DataChunk} wait
    for L{ServerConnection.accept} or L{ServerConnection.reject}.
    """

    needsReply = True

    def __repr__(self) -> str:
        return "%s(%s)" % (
            self.__class__.__name__,
            ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__),
        )

    __slots__ = ()  # type: Tuple[str, ...]


class Helo(Event):
    """C{HELO} or C{EHLO}; C{extended} is true for EHLO."""

    __slots__ = ("name", "extended")

    def __init__(self, name: str, extended: bool) -> None:
        self.name = name
        self.extended = extended


class MailFrom(Event):
    """
    C{MAIL FROM:}.

    @ivar sender: the reverse path without brackets, C{""} for C{<>}.
    @ivar size: the declared C{SIZE=}, or 0.
    @ivar body: C{"7BIT"} or C{"8BITMIME"}.
    @ivar parameters: every C{(KEYWORD, value)} given.
    @ivar ret: the DSN C{RET=} (RFC 3461), C{"FULL"}, C{"HDRS"} or C{None}.
    @ivar envid: the DSN C{ENVID=}, decoded, or C{None}.
    """

    __slots__ = ("sender", "size", "body", "parameters", "ret", "envid")

    def __init__(self, sender, size, body, parameters, ret=None, envid=None) -> None:
        self.sender = sender
        self.size = size
        self.body = body
        self.parameters = parameters
        self.ret = ret
        self.envid = envid

    @property
    def smtputf8(self) -> bool:
        """Did MAIL carry C{SMTPUTF8} (RFC 6531)?"""
        return any(keyword == "SMTPUTF8" for keyword, _ in self.parameters)

    @property
    def requiretls(self) -> bool:
        """Did MAIL carry C{REQUIRETLS} (RFC 8689)?"""
        return any(keyword == "REQUIRETLS" for keyword, _ in self.parameters)


class RcptTo(Event):
    """
    C{RCPT TO:}; C{recipient} is the forward path without brackets.

    @ivar notify: the DSN C{NOTIFY=} (RFC 3461): C{"NEVER"}, some of
        C{"SUCCESS,FAILURE,DELAY"}, or C{None}.
    @ivar orcpt: the DSN C{ORCPT=}, decoded (C{"rfc822;addr"}), or C{None}.
    """

    __slots__ = ("recipient", "parameters", "notify", "orcpt")

    def __init__(self, recipient, parameters, notify=None, orcpt=None) -> None:
        self.recipient = recipient
        self.parameters = parameters
        self.notify = notify
        self.orcpt = orcpt


class DataCommand(Event):
    """
    C{DATA}; accept it to receive the message (354).  Also the first
    C{BDAT} of a transaction (RFC 3030): then C{chunk} is its size and
    C{last} tells whether it is C{BDAT n LAST}; accepting it writes nothing
    (the reply comes once the chunk is read), rejecting it answers and
    skips the chunk's octets, and ends the transaction.
    """

    __slots__ = ("chunk", "last")

    def __init__(self, chunk: Optional[int] = None, last: bool = False) -> None:
        self.chunk = chunk
        self.last = last


class Rset(Event):
    """C{RSET}."""

    __slots__ = ()


class Quit(Event):
    """C{QUIT}."""

    __slots__ = ()


class StartTLS(Event):
    """
    C{STARTTLS}; accepting it writes 220 and discards every byte received
    after the command.  Call L{ServerConnection.tlsStarted} once the
    transport speaks TLS.
    """

    __slots__ = ()


class Auth(Event):
    """
    C{AUTH mechanism [initial-response]}: answer with
    L{ServerConnection.challenge}, L{ServerConnection.accept} (235) or
    L{ServerConnection.reject}.
    """

    __slots__ = ("mechanism", "initial")

    def __init__(self, mechanism: str, initial: Optional[str]) -> None:
        self.mechanism = mechanism
        self.initial = initial


class AuthResponse(Event):
    """A client's line answering a 334 challenge (not C{*}: that cancels)."""

    __slots__ = ("line",)

    def __init__(self, line: str) -> None:
        self.line = line


class DataChunk(Event):
    """
    Message content as received, dot-unstuffed (BDAT content as it is), in
    large pieces; needs no reply.
    """

    needsReply = False
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class EndOfData(Event):
    """
    The final dot (or the end of the chunk of C{BDAT n LAST}).

    @ivar size: bytes of content (after dot-unstuffing).
    @ivar hops: the number of C{Received:} headers.
    @ivar messageId: the C{Message-Id:} header value, or C{None}.
    @ivar tooBig: the content exceeded the size limit (and was not passed
        on completely).
    @ivar badLineEnd: a bare CR or LF was found in the content.
    @ivar nul: a NUL byte was found in the content.
    @ivar longLine: a line of the content is longer than
        L{smx.mail.server.MAX_TEXT_LINE} octets with its CRLF.
    @ivar tlsRequiredNo: the header has C{TLS-Required: No} (RFC 8689
        §3): the sender asks that TLS policy failures not stop delivery.

    Content with any of these problems was not passed on completely.
    """

    __slots__ = (
        "size",
        "hops",
        "messageId",
        "tooBig",
        "badLineEnd",
        "nul",
        "longLine",
        "tlsRequiredNo",
    )

    def __init__(
        self,
        size,
        hops,
        messageId,
        tooBig,
        badLineEnd,
        nul: bool = False,
        longLine: bool = False,
        tlsRequiredNo: bool = False,
    ) -> None:
        self.size = size
        self.hops = hops
        self.messageId = messageId
        self.tooBig = tooBig
        self.badLineEnd = badLineEnd
        self.nul = nul
        self.longLine = longLine
        self.tlsRequiredNo = tlsRequiredNo

    def refusal(self) -> Optional[Tuple[int, str, str]]:
        """
        @return: the reply that refuses content with one of the problems
            above (the first found: too big, bare CR or LF, NUL, long
            line), or C{None} when it has none.
        """
        if self.tooBig:
            return (552, "5.3.4", "Message size exceeds fixed maximum message size")
        if self.badLineEnd:
            return (554, "5.6.11", "Message contains bare CR or LF, rejected")
        if self.nul:
            return (554, "5.6.0", "Message contains NUL characters, rejected")
        if self.longLine:
            return (
                500,
                "5.5.2",
                "Line too long: the message has a line over 1000 octets, rejected",
            )
        return None


def softened(code: int, dsn: str) -> Tuple[int, str]:
    """
    The C{softbounce} form of a reply (seed §5.9 4f): 5xy becomes 4xy.
    """
    if 500 <= code < 600:
        return code - 100, "4" + dsn[1:] if dsn.startswith("5") else dsn
    return code, dsn


def cleanText(text: str) -> str:
    """
    Reply text with every control character replaced by a space (CR, LF
    and NUL never reach the client from a map or a header).
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else " " for c in text)


def formatReply(code: int, dsn: Optional[str], text: str) -> bytes:
    """
    Format a reply; C{text} may hold several lines separated by C{"\\n"}.
    """
    if "\n" not in text and text.isprintable() and text.isascii():
        # one line, nothing to clean: the usual reply
        if dsn:
            return ("%d %s %s\r\n" % (code, dsn, text)).encode("ascii", "replace")
        return ("%d %s\r\n" % (code, text)).encode("ascii")
    lines = text.split("\n")
    prefix = "%d %s " % (code, dsn) if dsn else "%d " % (code,)
    prefixMore = "%d-%s " % (code, dsn) if dsn else "%d-" % (code,)
    out = []
    for i, line in enumerate(lines):
        p = prefix if i == len(lines) - 1 else prefixMore
        out.append(p + cleanText(line) + "\r\n")
    return "".join(out).encode("ascii", "replace")
