# -*- test-case-name: smx.scripts.test.test_sendmail -*-
"""
NAME
    smx.scripts.sendmailmessage - the message of a local submission

SYNOPSIS
    lines = readMessage(sys.stdin.buffer, dotEnds=True)
    message = prepareMessage(lines, identity, extract=True)
    message.content          # CR LF line ends, ready for DATA
    message.recipients       # from To, Cc, Bcc (or their Resent- forms)

DESCRIPTION
    What C{smx sendmail} does to the message it reads, as Postfix's
    sendmail and cleanup do for local mail:

      - every line end (LF, CR LF, or a lone CR) becomes CR LF; leading
        mbox C{From } lines are dropped; without C{-i} a line with a
        single dot ends the input;
      - a line over 998 octets (RFC 5322 2.1.1) is broken by inserting
        CR LF and a space, as Postfix's SMTP client does, so that SMTPS
        takes it;
      - with C{-t} the recipients are taken from C{To:}, C{Cc:} and
        C{Bcc:}, or from C{Resent-To:}, C{Resent-Cc:} and
        C{Resent-Bcc:} if the message has any of those;
      - C{Bcc:} and C{Resent-Bcc:} are always removed (sendmail 8 does
        the same), so blind copies stay blind;
      - a C{Received:} header naming the user id is put on top, and the
        missing ones of C{From:} (C{-F} full name and sender), C{Date:}
        and C{Message-ID:} are added at the end of the header; in a
        message with any C{Resent-} field, the missing ones of
        C{Resent-From:}, C{Resent-Date:} and C{Resent-Message-ID:}
        instead (as Postfix's cleanup);
      - a message that does not start with a header gets these headers
        and an empty line before it; a header block that ends without an
        empty line gets one.

    A NUL byte cannot be passed on (SMTPS refuses it); L{MessageError}
    says so.
"""

from __future__ import annotations

import email.utils
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, List, Optional, Tuple

#: the longest line sent, without its CR LF (RFC 5322 section 2.1.1)
MAX_LINE = 998

_FIELD = re.compile(rb"^[!-9;-~]+[ \t]*:")
_MBOX_FROM = re.compile(rb"^>*From ")


class MessageError(Exception):
    """
    The input cannot be submitted; the text says why in one line.
    """


@dataclass(frozen=True)
class Identity:
    """
    Who submits, for the headers added.

    @ivar sender: the envelope sender (C{""}: the null sender).
    @ivar fullName: the full name for C{From:}, or C{""}.
    @ivar hostname: the host name (C{Message-ID:}, C{Received:}).
    @ivar uid: the user id of the submitter.
    """

    sender: str
    fullName: str
    hostname: str
    uid: int


@dataclass
class PreparedMessage:
    """
    @ivar content: the message, CR LF line ends, not dot-stuffed.
    @ivar recipients: the addresses found in the recipient headers (with
        C{extract}), in order.
    @ivar eightBit: whether the content has bytes outside ASCII.
    """

    content: bytes
    recipients: List[str] = field(default_factory=list)
    eightBit: bool = False


def splitLines(data: bytes) -> List[bytes]:
    """
    The lines of C{data}, without their ends; LF, CR LF and a lone CR
    each end a line.  A last line without an end is a line too.
    """
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def readMessage(stream: BinaryIO, dotEnds: bool) -> List[bytes]:
    """
    Read the message from C{stream} up to its end, or (with C{dotEnds})
    up to a line with a single dot, which is not read past.

    @return: its lines without their ends, leading mbox C{From } lines
        dropped.
    """
    lines = []  # type: List[bytes]
    leading = True
    while True:
        raw = stream.readline()
        if not raw:
            break
        for line in splitLines(raw) or [b""]:
            if leading and _MBOX_FROM.match(line):
                continue
            leading = False
            if dotEnds and line == b".":
                return lines
            lines.append(line)
    return lines


def _isField(line: bytes) -> bool:
    return _FIELD.match(line) is not None


def _fieldName(line: bytes) -> str:
    return line.split(b":", 1)[0].strip().decode("ascii").lower()


def splitHeader(lines: List[bytes]) -> Tuple[List[List[bytes]], List[bytes], bool]:
    """
    Split a message into its header fields (each a list of lines: the
    field and its continuation lines) and its body.

    @return: C{(fields, body, separated)}; C{separated} is whether an
        empty line ended the header.
    """
    fields = []  # type: List[List[bytes]]
    i = 0
    while i < len(lines):
        line = lines[i]
        if line == b"":
            return fields, lines[i + 1 :], True
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        elif _isField(line):
            fields.append([line])
        else:
            break
        i += 1
    return fields, lines[i:], False


def fieldValue(lines: List[bytes]) -> str:
    """
    The unfolded value of a header field, decoded as UTF-8.
    """
    text = b" ".join(l.strip() for l in lines)
    value = text.split(b":", 1)[1] if b":" in text else b""
    return value.decode("utf-8", "replace").strip()


def headerAddresses(values: List[str]) -> List[str]:
    """
    The addresses in the values of address header fields (groups and
    display names allowed), in order, empty ones dropped.

    Each value is parsed on its own and leniently, as before Python's
    strict parser (CVE-2023-27043; Python 3.11.4+, and Debian 12's 3.11.2
    by a security update): it returns no address at all for the whole
    list when one value ends in a comma (C{"To: a@b,"}) or is otherwise
    unusual, which dropped every recipient of C{-t} without a word.  The
    strict parser guards programs that check the domain of an address
    they were given; here the local user names the recipients anyway,
    and what cannot be an address is refused by the envelope's checks
    (C{553 5.1.3 bad address syntax}).
    """
    lenient = (
        {"strict": False}
        if getattr(email.utils, "supports_strict_parsing", False)
        else {}
    )  # type: Dict[str, Any]
    out = []  # type: List[str]
    for value in values:
        out.extend(a for _, a in email.utils.getaddresses([value], **lenient) if a)
    return out


def breakLongLine(line: bytes) -> List[bytes]:
    """
    A line over L{MAX_LINE} octets as several, each continuation
    starting with a space (Postfix's C{smtp_line_length_limit}).
    """
    if len(line) <= MAX_LINE:
        return [line]
    out = [line[:MAX_LINE]]
    rest = line[MAX_LINE:]
    while rest:
        out.append(b" " + rest[: MAX_LINE - 1])
        rest = rest[MAX_LINE - 1 :]
    return out


def _formatFrom(identity: Identity) -> str:
    address = identity.sender or "MAILER-DAEMON@" + identity.hostname
    name = identity.fullName
    if not name:
        return address
    return email.utils.formataddr((name, address), charset="utf-8")


def prepareMessage(
    lines: List[bytes], identity: Identity, extract: bool, now: Optional[float] = None
) -> PreparedMessage:
    """
    Make the message to submit from the lines read (see the module
    docstring).

    @param extract: take the recipients from the header (C{-t}).
    @raise MessageError: for content that cannot be passed on.
    """
    if now is None:
        now = time.time()
    for line in lines:
        if b"\0" in line:
            raise MessageError("the message contains a NUL character")
    fields, body, _ = splitHeader(lines)
    names = [_fieldName(f[0]) for f in fields]
    recipients = []  # type: List[str]
    if extract:
        resent = any(n in ("resent-to", "resent-cc", "resent-bcc") for n in names)
        wanted = (
            ("resent-to", "resent-cc", "resent-bcc") if resent else ("to", "cc", "bcc")
        )
        recipients = headerAddresses(
            [fieldValue(f) for f, n in zip(fields, names) if n in wanted]
        )
    kept = [f for f, n in zip(fields, names) if n not in ("bcc", "resent-bcc")]
    present = set(names)
    # a message sent again (any Resent- field) gets the missing fields of
    # its resent block instead, as from Postfix's cleanup
    prefix = "Resent-" if any(n.startswith("resent-") for n in names) else ""
    date = email.utils.formatdate(now, localtime=True)
    added = []  # type: List[str]
    if prefix.lower() + "from" not in present:
        added.append(prefix + "From: " + _formatFrom(identity))
    if prefix.lower() + "date" not in present:
        added.append(prefix + "Date: " + date)
    if prefix.lower() + "message-id" not in present:
        added.append(
            prefix
            + "Message-ID: <%s.%s@%s>"
            % (
                time.strftime("%Y%m%d%H%M%S", time.gmtime(now)),
                secrets.token_hex(8),
                identity.hostname,
            )
        )
    out = [
        (
            "Received: by %s (smx sendmail, from userid %d);"
            % (identity.hostname, identity.uid)
        ).encode("utf-8"),
        ("\t" + date).encode("ascii"),
    ]
    for f in kept:
        out.extend(f)
    out.extend(a.encode("utf-8") for a in added)
    # the header ends with an empty line, also where the input had none
    # (the first line that is not a header field starts the body)
    out.append(b"")
    out.extend(body)
    content = b"".join(piece + b"\r\n" for line in out for piece in breakLongLine(line))
    return PreparedMessage(content, recipients, not content.isascii())


__all__ = [
    "MessageError",
    "Identity",
    "PreparedMessage",
    "readMessage",
    "prepareMessage",
    "splitLines",
    "splitHeader",
    "headerAddresses",
    "breakLongLine",
]
