# -*- test-case-name: smx.mail.test.test_received -*-
"""
The C{Received:} header SMTPS prepends to every message (seed App. C.3,
RFC 5321 §4.4, RFC 3848)::

    Received: from EHLO-NAME (CLIENT-NAME [CLIENT-ADDR])
    \tby HOST-NAME (SM-X-VERSION) with PROTOCOL
    \t(TLS=TLSVERSION, cipher=CIPHERSUITE, bits=CIPHERBITS, verify=VERIFYRESULT)
    \tid SMTP-TA-ID; DATE

The client name is shown only when it is known (the C{access} flag makes
SMTPS look it up); otherwise the parenthesis holds C{[CLIENT-ADDR]} alone.
The TLS line is present only while TLS is active.  L{receivedId} reads
the id back from a stored content (recovery, L{smx.queue.recovery}).
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Optional

from smx import versionString


def protocolName(
    extended: bool, tls: bool, authenticated: bool, utf8: bool = False
) -> str:
    """
    The RFC 3848 transmission type: C{SMTP} after HELO, else C{ESMTP} with
    C{S} for TLS and C{A} for AUTH; C{UTF8SMTP}, C{UTF8SMTPS}, ... for a
    transaction with SMTPUTF8 (RFC 6531 §4.3).
    """
    if not extended:
        return "SMTP"
    if utf8:
        return "UTF8SMTP" + ("S" if tls else "") + ("A" if authenticated else "")
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")


def _clean(text: str) -> str:
    if text and text.isascii() and text.isprintable() and " " not in text:
        # the usual HELO name: nothing to replace (checked in C)
        return text
    return "".join(c if 32 < ord(c) < 127 else "?" for c in text) or "?"


#: the last date formatted: (whole second, RFC 5322 date)
_lastDate = (-1, "")


def _date(now: float) -> str:
    """
    The RFC 5322 local date of C{now}, formatted once per second (it has
    no fractions, and every message of that second carries it).
    """
    global _lastDate
    second = int(now)
    if _lastDate[0] != second:
        _lastDate = (second, email.utils.formatdate(second, localtime=True))
    return _lastDate[1]


def receivedHeader(
    heloName: str,
    clientAddress: str,
    hostname: str,
    protocol: str,
    transactionId: str,
    clientName: Optional[str] = None,
    tlsInfo: Optional[dict] = None,
    now: Optional[float] = None,
    version: str = versionString,
) -> bytes:
    """
    Build the header, folded, ending in CRLF.

    @param tlsInfo: C{None} without TLS, else a C{dict} with C{"version"},
        C{"cipher"}, C{"bits"}, C{"verify"} (see L{smx.mail.tls.tlsInfo}).
    @param now: the POSIX time of the DATE (default: now).
    """
    address = clientAddress
    if ":" in address and not address.startswith("IPv6:"):
        address = "IPv6:" + address
    if clientName:
        client = "%s [%s]" % (_clean(clientName), address)
    else:
        client = "[%s]" % (address,)
    lines = [
        "Received: from %s (%s)" % (_clean(heloName), client),
        "\tby %s (%s) with %s" % (hostname, version, protocol),
    ]
    if tlsInfo is not None:
        lines.append(
            "\t(TLS=%s, cipher=%s, bits=%s, verify=%s)"
            % (
                tlsInfo["version"],
                tlsInfo["cipher"],
                tlsInfo["bits"],
                tlsInfo["verify"],
            )
        )
    date = _date(time.time() if now is None else now)
    lines.append("\tid %s; %s" % (transactionId, date))
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")


#: the transaction id of the header's last line (L{receivedHeader})
_ID = re.compile(rb"\sid (\S+?);")


def receivedId(content: bytes) -> Optional[str]:
    """
    The transaction id in the C{Received:} header that begins C{content}
    (as L{receivedHeader} writes it: C{id ID;}), or C{None} when content
    does not begin with such a header.
    """
    lines = content.split(b"\n")
    if not lines[0].lower().startswith(b"received:"):
        return None
    field = [lines[0]]
    for line in lines[1:]:
        if line[:1] not in (b" ", b"\t"):
            break
        field.append(line)
    found = _ID.search(b" ".join(field))
    return found.group(1).decode("ascii", "replace") if found else None
