# -*- test-case-name: smx.milter.test.test_protocol -*-
"""
NAME
    smx.milter.codec - the packets of the sendmail milter protocol

SYNOPSIS
    from smx.milter import codec
    transport.write(codec.helo("client.example"))
    parser = codec.PacketParser()
    for command, data in parser.feed(received):
        reply = codec.parseReply(command, data)

DESCRIPTION
    The wire format of libmilter's protocol, version 6 (sendmail's
    C{include/libmilter/mfdef.h}, Postfix's C{src/milter/milter8.c}).  A
    packet is a 4-byte big-endian length, one command byte and the data;
    the length counts the command byte and the data.  Strings are
    NUL-terminated; numbers are 4-byte (2-byte for the port) big-endian.

    The MTA sends commands (C{SMFIC_*}): C{O} option negotiation, C{D}
    macros, C{C} connect, C{H} HELO, C{M} MAIL, C{R} RCPT, C{T} DATA,
    C{L} a header, C{N} end of headers, C{B} a body chunk, C{E} end of
    message, C{A} abort, C{Q} quit, C{K} quit with a new connection to
    follow, C{U} an unknown SMTP command.  The milter answers with replies
    (C{SMFIR_*}): C{a} accept, C{c} continue, C{d} discard, C{r} reject,
    C{t} tempfail, C{y} a reply code and text, C{s} skip, C{p} progress,
    C{4} shutdown (421), and at the end of the message the modifications
    C{h} add header, C{i} insert header, C{m} change header, C{b} replace
    body, C{e} change sender, C{+} and C{2} add recipient, C{-} delete
    recipient, C{q} quarantine.

    L{PacketParser} splits a byte stream into packets and refuses a packet
    longer than L{MAX_REPLY_DATA} from its 4-byte header, before any of it
    is kept.  L{parseReply} turns one packet into a typed value
    (L{Negotiation}, L{Verdict}, L{ReplyCode} or one of the modifications
    of L{smx.milter.modifications}, with header values still in the
    milter's form).  The command encoders refuse data longer than
    L{MAX_COMMAND_DATA}, the most libmilter reads in one packet.

DIAGNOSTICS
    L{MilterProtocolError} for a malformed or oversized packet or reply;
    C{ValueError} for a command that cannot be encoded (a NUL in a string,
    too much data).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import List, Sequence, Tuple, Union

from smx.milter.modifications import (
    AddHeader,
    AddRecipient,
    ChangeFrom,
    ChangeHeader,
    DeleteRecipient,
    InsertHeader,
    Quarantine,
    ReplaceBody,
)

#: the protocol version smx speaks (libmilter's SMFI_PROT_VERSION)
VERSION = 6

#: the most data a command may carry: libmilter's MILTER_MAX_DATA_SIZE,
#: which is also MILTER_CHUNK_SIZE, the size of a body chunk
MAX_COMMAND_DATA = 65535

#: the most data accepted in one reply: libmilter's largest negotiable
#: MILTER_MAX_DATA_SIZE (MILTER_MDS_1M); a longer packet is refused from
#: its length field, before it is read
MAX_REPLY_DATA = 1024 * 1024 - 1

# Commands, MTA to milter.
SMFIC_ABORT = b"A"
SMFIC_BODY = b"B"
SMFIC_CONNECT = b"C"
SMFIC_MACRO = b"D"
SMFIC_BODYEOB = b"E"
SMFIC_HELO = b"H"
SMFIC_QUIT_NC = b"K"
SMFIC_HEADER = b"L"
SMFIC_MAIL = b"M"
SMFIC_EOH = b"N"
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
SMFIC_RCPT = b"R"
SMFIC_DATA = b"T"
SMFIC_UNKNOWN = b"U"

# Replies, milter to MTA.
SMFIR_ADDRCPT = b"+"
SMFIR_DELRCPT = b"-"
SMFIR_ADDRCPT_PAR = b"2"
SMFIR_SHUTDOWN = b"4"
SMFIR_ACCEPT = b"a"
SMFIR_REPLBODY = b"b"
SMFIR_CONTINUE = b"c"
SMFIR_DISCARD = b"d"
SMFIR_CHGFROM = b"e"
SMFIR_CONN_FAIL = b"f"
SMFIR_ADDHEADER = b"h"
SMFIR_INSHEADER = b"i"
SMFIR_SETSYMLIST = b"l"
SMFIR_CHGHEADER = b"m"
SMFIR_PROGRESS = b"p"
SMFIR_QUARANTINE = b"q"
SMFIR_REJECT = b"r"
SMFIR_SKIP = b"s"
SMFIR_TEMPFAIL = b"t"
SMFIR_REPLYCODE = b"y"

# Actions the milter may take at the end of the message (SMFIF_*).
SMFIF_ADDHDRS = 0x001
SMFIF_CHGBODY = 0x002
SMFIF_ADDRCPT = 0x004
SMFIF_DELRCPT = 0x008
SMFIF_CHGHDRS = 0x010
SMFIF_QUARANTINE = 0x020
SMFIF_CHGFROM = 0x040
SMFIF_ADDRCPT_PAR = 0x080
SMFIF_SETSYMLIST = 0x100
#: every action of version 6
SMFIF_ALL = 0x1FF

# Protocol steps: what the MTA should not send, and the steps the milter
# will not reply to (SMFIP_*).
SMFIP_NOCONNECT = 0x00000001
SMFIP_NOHELO = 0x00000002
SMFIP_NOMAIL = 0x00000004
SMFIP_NORCPT = 0x00000008
SMFIP_NOBODY = 0x00000010
SMFIP_NOHDRS = 0x00000020
SMFIP_NOEOH = 0x00000040
SMFIP_NR_HDR = 0x00000080
SMFIP_NOUNKNOWN = 0x00000100
SMFIP_NODATA = 0x00000200
SMFIP_SKIP = 0x00000400
SMFIP_RCPT_REJ = 0x00000800
SMFIP_NR_CONN = 0x00001000
SMFIP_NR_HELO = 0x00002000
SMFIP_NR_MAIL = 0x00004000
SMFIP_NR_RCPT = 0x00008000
SMFIP_NR_DATA = 0x00010000
SMFIP_NR_UNKN = 0x00020000
SMFIP_NR_EOH = 0x00040000
SMFIP_NR_BODY = 0x00080000
SMFIP_HDR_LEADSPC = 0x00100000
#: every protocol flag of version 6 (libmilter's SMFI_CURR_PROT)
SMFIP_ALL = 0x001FFFFF

# Protocol stages of macro lists (SMFIM_*), in SETSYMLIST and OPTNEG.
SMFIM_CONNECT = 0
SMFIM_HELO = 1
SMFIM_ENVFROM = 2
SMFIM_ENVRCPT = 3
SMFIM_DATA = 4
SMFIM_EOM = 5
SMFIM_EOH = 6

# Address families of SMFIC_CONNECT.
SMFIA_UNKNOWN = b"U"
SMFIA_UNIX = b"L"
SMFIA_INET = b"4"
SMFIA_INET6 = b"6"

_LENGTH = struct.Struct("!I")
_OPTNEG = struct.Struct("!III")


class MilterProtocolError(Exception):
    """
    The milter sent something the protocol does not allow: a packet too
    short or too long, a reply that is not defined, data where none
    belongs, a malformed reply code.  The message says what.
    """


@dataclass(frozen=True)
class Negotiation:
    """
    The milter's answer to option negotiation.

    @ivar version: its protocol version.
    @ivar actions: the C{SMFIF_*} actions it may take.
    @ivar protocol: the C{SMFIP_*} flags: steps it does not want, steps
        it does not reply to.
    @ivar macros: the macro lists it asked for with C{SETSYMLIST}, as
        C{(SMFIM_* stage, names)} pairs.
    """

    version: int
    actions: int
    protocol: int
    macros: Tuple[Tuple[int, Tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Verdict:
    """
    A reply without data.

    @ivar kind: C{"accept"}, C{"continue"}, C{"discard"}, C{"reject"},
        C{"tempfail"}, C{"skip"}, C{"progress"} or C{"shutdown"}.
    """

    kind: str


@dataclass(frozen=True)
class ReplyCode:
    """
    C{SMFIR_REPLYCODE}: reject or tempfail with the milter's own reply.

    @ivar code: the 4xx or 5xx reply code.
    @ivar lines: the text of every line, without the code (C{"5.7.1
        Blocked"}).
    """

    code: int
    lines: Tuple[str, ...]


Modification = Union[
    AddHeader,
    InsertHeader,
    ChangeHeader,
    ReplaceBody,
    ChangeFrom,
    AddRecipient,
    DeleteRecipient,
    Quarantine,
]

Reply = Union[Negotiation, Verdict, ReplyCode, Modification]

_VERDICTS = {
    SMFIR_ACCEPT: "accept",
    SMFIR_CONTINUE: "continue",
    SMFIR_DISCARD: "discard",
    SMFIR_REJECT: "reject",
    SMFIR_TEMPFAIL: "tempfail",
    SMFIR_SKIP: "skip",
    SMFIR_PROGRESS: "progress",
    SMFIR_SHUTDOWN: "shutdown",
}


def encodePacket(command: bytes, data: bytes = b"") -> bytes:
    """
    One packet: length, command byte, data.

    @raise ValueError: C{data} is longer than L{MAX_COMMAND_DATA}.
    """
    if len(data) > MAX_COMMAND_DATA:
        raise ValueError(
            "milter command %r: %d bytes of data, at most %d can be sent"
            % (command, len(data), MAX_COMMAND_DATA)
        )
    return _LENGTH.pack(len(data) + 1) + command + data


def encodeString(text: str) -> bytes:
    """
    A NUL-terminated string; text that came in as bytes (decoded with
    C{surrogateescape}) goes out as the same bytes.

    @raise ValueError: C{text} contains a NUL.
    """
    if "\0" in text:
        raise ValueError("a NUL cannot be sent in a milter string: %r" % (text,))
    return text.encode("utf-8", "surrogateescape") + b"\0"


def decodeString(data: bytes) -> str:
    """The inverse of L{encodeString} (without the NUL)."""
    return data.decode("utf-8", "surrogateescape")


def optionNegotiation(version: int, actions: int, protocol: int) -> bytes:
    """C{SMFIC_OPTNEG}: what the MTA offers."""
    return encodePacket(SMFIC_OPTNEG, _OPTNEG.pack(version, actions, protocol))


def macros(command: bytes, pairs: Sequence[Tuple[str, str]]) -> bytes:
    """
    C{SMFIC_MACRO}: macro values for the command C{command} that follows.
    """
    return encodePacket(
        SMFIC_MACRO,
        command + b"".join(encodeString(n) + encodeString(v) for n, v in pairs),
    )


def connect(hostname: str, family: bytes, port: int, address: str) -> bytes:
    """
    C{SMFIC_CONNECT}.  For L{SMFIA_UNKNOWN} only the host name is sent.
    """
    data = encodeString(hostname) + family
    if family != SMFIA_UNKNOWN:
        data += struct.pack("!H", port) + encodeString(address)
    return encodePacket(SMFIC_CONNECT, data)


def helo(name: str) -> bytes:
    """C{SMFIC_HELO} with the HELO or EHLO argument."""
    return encodePacket(SMFIC_HELO, encodeString(name))


def _arguments(command: bytes, arguments: Sequence[str]) -> bytes:
    return encodePacket(command, b"".join(encodeString(a) for a in arguments))


def mail(arguments: Sequence[str]) -> bytes:
    """C{SMFIC_MAIL}: C{"<sender>"} and the ESMTP parameters."""
    return _arguments(SMFIC_MAIL, arguments)


def rcpt(arguments: Sequence[str]) -> bytes:
    """C{SMFIC_RCPT}: C{"<recipient>"} and the ESMTP parameters."""
    return _arguments(SMFIC_RCPT, arguments)


def header(name: str, value: str) -> bytes:
    """C{SMFIC_HEADER} with the value in the milter's form."""
    return encodePacket(SMFIC_HEADER, encodeString(name) + encodeString(value))


def body(chunk: bytes) -> bytes:
    """C{SMFIC_BODY}: at most L{MAX_COMMAND_DATA} bytes of the body."""
    return encodePacket(SMFIC_BODY, chunk)


def unknown(command: str) -> bytes:
    """C{SMFIC_UNKNOWN} with the whole SMTP command line."""
    return encodePacket(SMFIC_UNKNOWN, encodeString(command))


def simple(command: bytes) -> bytes:
    """A command without data: DATA, EOH, end of body, ABORT, QUIT."""
    return encodePacket(command)


class PacketParser:
    """
    Splits a byte stream into C{(command, data)} packets.

    @ivar maxData: the longest data accepted in one packet.
    """

    def __init__(self, maxData: int = MAX_REPLY_DATA) -> None:
        self.maxData = maxData
        self._buffer = bytearray()

    def feed(self, data: bytes) -> List[Tuple[bytes, bytes]]:
        """
        @return: every packet completed by C{data}.
        @raise MilterProtocolError: a packet's length is 0 or longer than
            L{maxData} allows; nothing more can be parsed after it.
        """
        self._buffer += data
        packets = []
        offset = 0
        buffer = self._buffer
        while len(buffer) - offset >= 4:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            if length < 1:
                raise MilterProtocolError("packet of length 0")
            if length - 1 > self.maxData:
                raise MilterProtocolError(
                    "packet of %d bytes, longer than the %d allowed"
                    % (length, self.maxData + 1)
                )
            if len(buffer) - offset - 4 < length:
                break
            start = offset + 4
            packets.append(
                (
                    bytes(buffer[start : start + 1]),
                    bytes(buffer[start + 1 : start + length]),
                )
            )
            offset = start + length
        if offset:
            del buffer[:offset]
        return packets

    @property
    def pending(self) -> int:
        """How many bytes of an incomplete packet are held."""
        return len(self._buffer)


def _strings(data: bytes, count: int, name: str, optional: int = 0) -> List[str]:
    """
    Split C{data} into C{count} NUL-terminated strings (the last
    C{optional} of them may be missing).
    """
    if data and not data.endswith(b"\0"):
        raise MilterProtocolError("%s: string not terminated by NUL" % (name,))
    parts = data.split(b"\0")[:-1] if data else []
    if not count - optional <= len(parts) <= count:
        raise MilterProtocolError(
            "%s: %d strings where %d are expected" % (name, len(parts), count)
        )
    return [decodeString(p) for p in parts]


def _index(data: bytes, name: str) -> Tuple[int, bytes]:
    if len(data) < 4:
        raise MilterProtocolError("%s: too short for its index" % (name,))
    (index,) = _LENGTH.unpack_from(data)
    return index, data[4:]


def _parameters(text: str) -> Tuple[str, ...]:
    return tuple(text.split())


def parseNegotiation(data: bytes) -> Negotiation:
    """
    The data of the milter's C{SMFIC_OPTNEG} reply: version, actions,
    protocol flags and, with C{SETSYMLIST}, C{(stage, "name name")}
    pairs.

    @raise MilterProtocolError: it is malformed.
    """
    if len(data) < _OPTNEG.size:
        raise MilterProtocolError(
            "option negotiation: %d bytes, at least %d expected"
            % (len(data), _OPTNEG.size)
        )
    version, actions, protocol = _OPTNEG.unpack_from(data)
    rest = data[_OPTNEG.size :]
    lists = []
    while rest:
        stage, rest = _index(rest, "macro list")
        end = rest.find(b"\0")
        if end < 0:
            raise MilterProtocolError("macro list: string not terminated by NUL")
        names = decodeString(rest[:end]).replace(",", " ").split()
        lists.append((stage, tuple(names)))
        rest = rest[end + 1 :]
    return Negotiation(version, actions, protocol, tuple(lists))


def parseReplyCode(text: str) -> ReplyCode:
    """
    The text of C{SMFIR_REPLYCODE}: C{"550 5.7.1 text"}, or several lines
    C{"550-5.7.1 one\\r\\n550 5.7.1 two"}.  As Postfix does, C{%%} (the
    escape of sendmail's format strings) becomes C{%} and a lone C{%} is
    dropped.

    @raise MilterProtocolError: the code is not 4xx or 5xx, the lines do
        not all carry it, or an enhanced status code does not match its
        class.
    """
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line]
    if not lines:
        raise MilterProtocolError("reply code: empty")
    code = lines[0][:3]
    texts = []
    for number, line in enumerate(lines, 1):
        last = number == len(lines)
        if (
            len(line) < 3
            or line[:3] != code
            or code[0] not in "45"
            or not (code[1:].isascii() and code[1:].isdigit())
            or (len(line) > 3 and line[3] not in (" ", "-"))
            or (len(line) > 3 and line[3] == "-" and last)
            or (len(line) > 3 and line[3] == " " and not last)
        ):
            raise MilterProtocolError("malformed reply code: %r" % (text,))
        rest = line[4:]
        if rest[:1].isdigit() and rest[0] != code[0]:
            raise MilterProtocolError(
                "reply code %s with enhanced status %s: %r"
                % (code, rest.split(" ")[0], text)
            )
        texts.append(_unpercent(rest))
    return ReplyCode(int(code), tuple(texts))


def _unpercent(text: str) -> str:
    if "%" not in text:
        return text
    out = []
    i = 0
    while i < len(text):
        if text[i] == "%":
            if text[i + 1 : i + 2] == "%":
                out.append("%")
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def parseReply(command: bytes, data: bytes) -> Reply:
    """
    One reply of the milter as a typed value.  Header values are in the
    milter's form (LF line breaks; the leading space only with
    C{SMFIP_HDR_LEADSPC}); body chunks are the raw bytes of one
    C{SMFIR_REPLBODY}.

    @raise MilterProtocolError: an unknown reply, data after a reply that
        has none, a malformed reply.
    """
    if command in _VERDICTS:
        if data:
            raise MilterProtocolError(
                "reply %r followed by %d bytes of data" % (command, len(data))
            )
        return Verdict(_VERDICTS[command])
    if command == SMFIR_REPLYCODE:
        (text,) = _strings(data.rstrip(b"\0") + b"\0", 1, "reply code")
        return parseReplyCode(text)
    if command == SMFIC_OPTNEG:
        return parseNegotiation(data)
    if command == SMFIR_ADDHEADER:
        name, value = _strings(data, 2, "add header")
        return AddHeader(name, value)
    if command in (SMFIR_INSHEADER, SMFIR_CHGHEADER):
        index, rest = _index(data, "header")
        name, value = _strings(rest, 2, "header")
        if command == SMFIR_INSHEADER:
            return InsertHeader(index, name, value)
        return ChangeHeader(index, name, value)
    if command == SMFIR_REPLBODY:
        return ReplaceBody(data)
    if command == SMFIR_CHGFROM:
        parts = _strings(data, 2, "change sender", optional=1)
        return ChangeFrom(parts[0], _parameters(parts[1] if len(parts) > 1 else ""))
    if command in (SMFIR_ADDRCPT, SMFIR_ADDRCPT_PAR):
        if command == SMFIR_ADDRCPT:
            parts = _strings(data, 1, "add recipient")
        else:
            parts = _strings(data, 2, "add recipient", optional=1)
        return AddRecipient(parts[0], _parameters(parts[1] if len(parts) > 1 else ""))
    if command == SMFIR_DELRCPT:
        (recipient,) = _strings(data, 1, "delete recipient")
        return DeleteRecipient(recipient)
    if command == SMFIR_QUARANTINE:
        parts = _strings(data, 1, "quarantine", optional=1)
        return Quarantine(parts[0] if parts else "")
    raise MilterProtocolError("unknown reply %r" % (command,))
