# -*- test-case-name: smx.milter.test.test_protocol -*-
"""
NAME
    smx.milter.modifications - what a milter may change in a message, and
    how the change is made

SYNOPSIS
    from smx.milter.modifications import (
        Envelope, Recipient, applyModifications, splitMessage, joinMessage)

    headers, body = splitMessage(content)
    edited = applyModifications(headers, body, envelope,
                                decision.modifications, ownHeaders=1)
    content = joinMessage(edited.headers, edited.body)

DESCRIPTION
    At the end of a message a milter may add, insert, change or delete
    headers, replace the body, change the sender, add and delete
    recipients and quarantine the message.  Each request is a small frozen
    value: L{AddHeader}, L{InsertHeader}, L{ChangeHeader},
    L{DeleteHeader}, L{ReplaceBody}, L{ChangeFrom}, L{AddRecipient},
    L{DeleteRecipient}, L{Quarantine}, with L{asPlain}/L{fromPlain} for
    crossing a process boundary.

    Headers are C{(name, value)} pairs of C{str} (bytes decoded as UTF-8
    with C{surrogateescape}, so nothing is lost): C{value} is everything
    after the colon, folded lines joined by CRLF, without the final CRLF:
    C{("Subject", " hello\\r\\n world")}.  In a decision's modifications
    values are in that form already (L{fromMilterValue} made them so).

    L{applyModifications} follows sendmail and Postfix
    (C{cleanup_milter.c}) in what header indexes mean.  The milter never
    saw the headers smx added on top of the message (its C{Received:},
    C{ownHeaders} of them):

      - C{ChangeHeader}/C{DeleteHeader} index I (1 for the first; 0 is
        taken as 1) is the I-th header of that name after the first
        C{ownHeaders} headers, so smx's own C{Received:} cannot be changed
        or deleted; a change of a header that does not exist adds it;
      - C{InsertHeader} index I counts every header, smx's own included:
        0 puts the header above smx's C{Received:}, 1 just below it; an
        index past the end appends;
      - C{AddHeader} appends at the end of the header.

    Recipients and senders are compared without angle brackets, the
    domain without regard to case.

SECURITY
    L{fromMilterValue} refuses a header name that is not printable ASCII
    or has a colon, and a value with a NUL or a line break not followed by
    a space or tab: a milter cannot add a header block or end the header
    early.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union


@dataclass(frozen=True)
class AddHeader:
    """C{SMFIR_ADDHEADER}: append a header."""

    name: str
    value: str


@dataclass(frozen=True)
class InsertHeader:
    """
    C{SMFIR_INSHEADER}: insert a header at C{index} (0 for the very top,
    counting smx's own headers).
    """

    index: int
    name: str
    value: str


@dataclass(frozen=True)
class ChangeHeader:
    """
    C{SMFIR_CHGHEADER}: change the C{index}-th header called C{name} (1
    for the first).  From the milter, an empty value deletes the header;
    in a decision that is a L{DeleteHeader}.
    """

    index: int
    name: str
    value: str


@dataclass(frozen=True)
class DeleteHeader:
    """C{SMFIR_CHGHEADER} with an empty value: delete a header."""

    index: int
    name: str


@dataclass(frozen=True)
class ReplaceBody:
    """
    C{SMFIR_REPLBODY}: the new body (CRLF line ends, as on the wire; in
    a decision, every chunk joined).
    """

    body: bytes


@dataclass(frozen=True)
class ChangeFrom:
    """C{SMFIR_CHGFROM}: a new envelope sender and its ESMTP parameters."""

    sender: str
    parameters: Tuple[str, ...] = ()


@dataclass(frozen=True)
class AddRecipient:
    """C{SMFIR_ADDRCPT} (C{SMFIR_ADDRCPT_PAR} with parameters)."""

    recipient: str
    parameters: Tuple[str, ...] = ()


@dataclass(frozen=True)
class DeleteRecipient:
    """C{SMFIR_DELRCPT}."""

    recipient: str


@dataclass(frozen=True)
class Quarantine:
    """C{SMFIR_QUARANTINE}: hold the message, for C{reason}."""

    reason: str


AnyModification = Union[
    AddHeader,
    InsertHeader,
    ChangeHeader,
    DeleteHeader,
    ReplaceBody,
    ChangeFrom,
    AddRecipient,
    DeleteRecipient,
    Quarantine,
]

_TYPES = {
    "add_header": AddHeader,
    "insert_header": InsertHeader,
    "change_header": ChangeHeader,
    "delete_header": DeleteHeader,
    "replace_body": ReplaceBody,
    "change_from": ChangeFrom,
    "add_recipient": AddRecipient,
    "delete_recipient": DeleteRecipient,
    "quarantine": Quarantine,
}
_NAMES = {cls: name for name, cls in _TYPES.items()}


def asPlain(modification: AnyModification) -> Dict[str, Any]:
    """
    A modification as a C{dict} of plain values, with its C{"type"}
    (C{"add_header"}, C{"replace_body"}, ...).
    """
    plain = dataclasses.asdict(modification)
    plain["type"] = _NAMES[type(modification)]
    for key, value in plain.items():
        if isinstance(value, tuple):
            plain[key] = list(value)
    return plain


def fromPlain(plain: Dict[str, Any]) -> AnyModification:
    """
    The inverse of L{asPlain}.

    @raise ValueError: an unknown type or missing fields.
    """
    fields = dict(plain)
    kind = fields.pop("type", None)
    cls = _TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError("unknown milter modification %r" % (kind,))
    for key, value in fields.items():
        if isinstance(value, list):
            fields[key] = tuple(value)
    try:
        return cls(**fields)  # type: ignore[no-any-return]
    except TypeError as e:
        raise ValueError("milter modification %s: %s" % (kind, e))


_HEADER_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")


class HeaderError(ValueError):
    """A header name or value a milter sent cannot go into a message."""


def checkHeaderName(name: str) -> str:
    """
    @return: C{name}, a valid header field name (RFC 5322 ftext).
    @raise HeaderError: it is not.
    """
    if not _HEADER_NAME.match(name):
        raise HeaderError("bad header name %r" % (name,))
    return name


def toMilterValue(value: str, leadingSpace: bool) -> str:
    """
    A header value as sent to a milter: line breaks as LF (as sendmail
    sends them) and, unless the milter asked for C{SMFIP_HDR_LEADSPC}, one
    space after the colon removed.
    """
    value = value.replace("\r\n", "\n")
    if not leadingSpace and value.startswith(" "):
        value = value[1:]
    return value


def fromMilterValue(value: str, leadingSpace: bool) -> str:
    """
    The inverse of L{toMilterValue} for a value a milter sent: LF or CRLF
    line breaks become CRLF, trailing line breaks are dropped, and without
    C{SMFIP_HDR_LEADSPC} one space is put after the colon.

    @raise HeaderError: the value has a NUL, a lone CR, or a line break
        not followed by a space or tab.
    """
    text = value.replace("\r\n", "\n").rstrip("\n")
    if "\0" in text or "\r" in text:
        raise HeaderError("bad header value %r" % (value,))
    lines = text.split("\n")
    for line in lines[1:]:
        if not line[:1] in (" ", "\t"):
            raise HeaderError("header value with an unfolded line: %r" % (value,))
    text = "\r\n".join(lines)
    return text if leadingSpace else " " + text


def stripBrackets(address: str) -> str:
    """C{"<a@b>"} → C{"a@b"}; C{"<>"} → C{""}."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        return address[1:-1]
    return address


def sameAddress(one: str, other: str) -> bool:
    """
    Are two addresses the same, brackets aside, the domain compared
    without case?
    """
    a, b = stripBrackets(one), stripBrackets(other)
    localA, atA, domainA = a.rpartition("@")
    localB, atB, domainB = b.rpartition("@")
    if not atA or not atB:
        return a == b
    return localA == localB and domainA.lower() == domainB.lower()


@dataclass(frozen=True)
class Recipient:
    """
    An envelope recipient.

    @ivar address: without angle brackets.
    @ivar parameters: its ESMTP parameters (C{"NOTIFY=NEVER"}, ...).
    """

    address: str
    parameters: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Envelope:
    """
    @ivar sender: without angle brackets, C{""} for the null sender.
    @ivar recipients: the L{Recipient}s, in order.
    @ivar senderParameters: the ESMTP parameters of MAIL.
    """

    sender: str
    recipients: Tuple[Recipient, ...]
    senderParameters: Tuple[str, ...] = ()


Header = Tuple[str, str]


@dataclass(frozen=True)
class EditedMessage:
    """
    A message after L{applyModifications}.

    @ivar quarantine: the reason of the last L{Quarantine}, or C{None}.
    """

    headers: Tuple[Header, ...]
    body: bytes
    envelope: Envelope
    quarantine: Optional[str] = None


def _findHeader(
    headers: List[Header], name: str, index: int, skip: int
) -> Optional[int]:
    wanted = name.lower()
    count = max(index, 1)
    for position in range(skip, len(headers)):
        if headers[position][0].lower() == wanted:
            count -= 1
            if count == 0:
                return position
    return None


def applyModifications(
    headers: Sequence[Header],
    body: bytes,
    envelope: Envelope,
    modifications: Sequence[AnyModification],
    ownHeaders: int = 1,
) -> EditedMessage:
    """
    Make a milter's changes to a message, in the order the milter asked
    for them (see the module docstring for what indexes mean).

    @param headers: the header as it will be delivered: smx's own
        headers (the milter did not see them) first.
    @param body: the body, CRLF line ends.
    @param ownHeaders: how many of the first C{headers} smx added.
    """
    edited = list(headers)
    sender = envelope.sender
    senderParameters = envelope.senderParameters
    recipients = list(envelope.recipients)
    quarantine = None  # type: Optional[str]
    for m in modifications:
        if isinstance(m, AddHeader):
            edited.append((m.name, m.value))
        elif isinstance(m, InsertHeader):
            edited.insert(min(max(m.index, 0), len(edited)), (m.name, m.value))
        elif isinstance(m, ChangeHeader):
            position = _findHeader(edited, m.name, m.index, ownHeaders)
            if position is None:
                edited.append((m.name, m.value))
            else:
                edited[position] = (m.name, m.value)
        elif isinstance(m, DeleteHeader):
            position = _findHeader(edited, m.name, m.index, ownHeaders)
            if position is not None:
                del edited[position]
        elif isinstance(m, ReplaceBody):
            body = m.body
        elif isinstance(m, ChangeFrom):
            sender = stripBrackets(m.sender)
            senderParameters = m.parameters
        elif isinstance(m, AddRecipient):
            address = stripBrackets(m.recipient)
            if not any(sameAddress(r.address, address) for r in recipients):
                recipients.append(Recipient(address, m.parameters))
        elif isinstance(m, DeleteRecipient):
            recipients = [
                r for r in recipients if not sameAddress(r.address, m.recipient)
            ]
        elif isinstance(m, Quarantine):
            quarantine = m.reason
        else:
            raise TypeError("applyModifications: not a modification: %r" % (m,))
    return EditedMessage(
        tuple(edited),
        body,
        Envelope(sender, tuple(recipients), senderParameters),
        quarantine,
    )


def splitMessage(content: bytes) -> Tuple[Tuple[Header, ...], bytes]:
    """
    Split a message (CRLF line ends) into its header fields and its body.
    The header ends at the first empty line, or at the first line that is
    neither a field nor a continuation (which then starts the body).
    """
    headers = []  # type: List[List[str]]
    position = 0
    while position < len(content):
        end = content.find(b"\r\n", position)
        line = content[position:] if end < 0 else content[position:end]
        following = len(content) if end < 0 else end + 2
        if line == b"":
            position = following
            break
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1][1] += "\r\n" + line.decode("utf-8", "surrogateescape")
        else:
            name, colon, value = line.partition(b":")
            if not colon or not _HEADER_NAME.match(name.decode("ascii", "replace")):
                break
            headers.append(
                [
                    name.decode("ascii"),
                    value.decode("utf-8", "surrogateescape"),
                ]
            )
        position = following
    return tuple((n, v) for n, v in headers), content[position:]


def joinMessage(headers: Sequence[Header], body: bytes) -> bytes:
    """The inverse of L{splitMessage}."""
    return (
        b"".join(
            (name + ":" + value + "\r\n").encode("utf-8", "surrogateescape")
            for name, value in headers
        )
        + b"\r\n"
        + body
    )
