# -*- test-case-name: smx.queue.test.test_dsn -*-
"""
NAME
    smx.queue.dsn - delivery status notifications (RFC 3464)

SYNOPSIS
    message = buildReport("failed", reportingMTA, envelope, failures,
                          original, headersOnly=False, now=time.time())

DESCRIPTION
    Bounces and delay warnings are C{multipart/report;
    report-type=delivery-status} messages (RFC 3462/6522, RFC 3464) with
    three parts: a human-readable text (in the spirit of seed App. C.4), a
    C{message/delivery-status} part with one per-message block
    (C{Reporting-MTA}, C{Original-Envelope-Id}, C{Arrival-Date}) and one
    block per recipient (C{Final-Recipient}, C{Action}, C{Status},
    C{Remote-MTA}, C{Diagnostic-Code}, C{Last-Attempt-Date},
    C{Will-Retry-Until}), and the returned message as C{message/rfc822} or
    only its header as C{text/rfc822-headers}.

    For a message received with SMTPUTF8 whose addresses or header are
    not all ASCII (the envelope's C{smtputf8}), the report is a global
    one (RFC 6533): C{report-type=global-delivery-status}, a UTF-8 text
    part, a C{message/global-delivery-status} part whose non-ASCII
    addresses have the C{utf-8} address type, and the returned message as
    C{message/global} (or its header as C{message/global-headers}); its
    header and addresses keep their UTF-8.

    Lines end with CRLF, as in CDB.

CONFIGURATION PARAMETERS
    flags header_only_in_bounce, max_errors_per_bounce (used by the caller)

SECURITY
    Texts from remote servers are stripped of control characters and
    folded, so they cannot inject header fields into the report.

DIAGNOSTICS
    None: a report is always built from what is given.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from typing import Any, Dict, List, Optional

_ENHANCED = re.compile(r"^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def enhancedStatus(reply: str, code: int, default: Optional[str] = None) -> str:
    """
    @return: the RFC 3463 status in C{reply} (C{"550 5.1.1 ..."}), or one
        derived from the reply C{code}.
    """
    m = _ENHANCED.match(reply or "")
    if m:
        return m.group(1)
    if default:
        return default
    if 500 <= code < 600:
        return "5.0.0"
    if 400 <= code < 500:
        return "4.0.0"
    return "5.0.0"


def _clean(text: str) -> str:
    return _CONTROL.sub(" ", text or "").strip()


def _fold(name: str, value: str) -> str:
    """One header field, folded at spaces below 78 characters."""
    line = "%s: " % (name,)
    out = []
    for word in value.split(" "):
        if len(line) + len(word) > 76 and line.strip():
            out.append(line.rstrip())
            line = " "
        line += word + " "
    out.append(line.rstrip())
    return "\r\n".join(out)


def headerOf(content: bytes) -> bytes:
    """
    @return: the header of a message (up to and including the empty line).
    """
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = content.find(sep)
        if i >= 0:
            return content[: i + len(sep)]
    return content


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def isGlobal(
    envelope: Dict[str, Any], recipients: List[Dict[str, Any]], original: bytes
) -> bool:
    """
    Is the report about C{envelope} a global one (RFC 6533): the message
    came with SMTPUTF8 and its sender, a recipient or its header is not
    ASCII?
    """
    if not envelope.get("smtputf8"):
        return False
    texts = [envelope.get("sender") or ""]
    for r in recipients:
        texts += [r.get("address") or "", r.get("orcpt") or ""]
    return not all(t.isascii() for t in texts) or not headerOf(original).isascii()


def _addressType(address: str, utf8: bool) -> str:
    """C{rfc822; a} or, for a non-ASCII address in a global DSN, C{utf-8; a}."""
    if utf8 and not address.isascii():
        return "utf-8; %s" % (_clean(address),)
    return "rfc822; %s" % (_ascii(address),)


def buildReport(
    kind: str,
    reportingMTA: str,
    envelope: Dict[str, Any],
    recipients: List[Dict[str, Any]],
    original: bytes,
    headersOnly: bool = False,
    now: Optional[float] = None,
    willRetryUntil: Optional[float] = None,
) -> bytes:
    """
    Build a bounce (C{kind} C{"failed"}), a delay warning (C{"delayed"})
    or a success notice (C{"success"}: each recipient's C{action} is
    C{"delivered"} or C{"relayed"}, RFC 3461 §4.1).

    @param envelope: the original envelope (C{id}, C{sender}, C{received},
        optional C{envid}).
    @param recipients: C{dict}s with C{address}, C{code}, C{reply} (the
        last reply), optional C{dsn} (enhanced status), C{remoteMTA},
        C{where}, C{lastAttempt}.
    @param original: the original content (or its header).
    @param headersOnly: return only the header of the original.
    @return: the report as bytes with CRLF line ends.
    """
    if now is None:
        now = time.time()
    utf8 = isGlobal(envelope, recipients, original)
    text = _clean if utf8 else _ascii
    host = _ascii(reportingMTA)
    boundary = "%s.%d/%s" % (envelope["id"], int(now), host)
    failed = kind == "failed"
    success = kind == "success"
    subject = (
        "Undelivered Mail Returned to Sender"
        if failed
        else (
            "Successful Mail Delivery Report"
            if success
            else "Delayed Mail (still being retried)"
        )
    )
    lines = [
        "From: Mail Delivery Subsystem <MAILER-DAEMON@%s>" % (host,),
        "To: <%s>" % (text(envelope.get("sender", "")),),
        "Subject: %s" % (subject,),
        "Date: %s" % (formatdate(now),),
        "Message-ID: <%s.%s.%d@%s>" % (envelope["id"], kind, int(now), host),
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type=%sdelivery-status;\r\n\tboundary="%s"'
        % ("global-" if utf8 else "", boundary),
        "",
        "This is a MIME-encapsulated message.",
        "",
        "--" + boundary,
        "Content-Type: text/plain; charset=%s" % ("utf-8" if utf8 else "us-ascii",),
        "Content-Description: Notification",
        "",
    ]
    if failed:
        lines.append(
            "Hi! This is the smx MTA at %s. I'm sorry to inform you that a mail"
            % (host,)
        )
        lines.append("from you could not be delivered. See below for details.")
    elif success:
        lines.append(
            "Hi! This is the smx MTA at %s. Your message was delivered to" % (host,)
        )
        lines.append("the mailbox, or relayed to an MTA that sends no notices,")
        lines.append("for the recipients below, as you asked.")
    else:
        lines.append(
            "Hi! This is the smx MTA at %s. A mail from you could not be" % (host,)
        )
        lines.append("delivered yet. It will be retried; you need not resend it.")
    lines.append("")
    for r in recipients:
        lines.append("Recipient:")
        lines.append("<%s>" % (text(r["address"]),))
        if r.get("remoteMTA"):
            lines.append("Remote-MTA:")
            lines.append(_ascii(r["remoteMTA"]))
        lines.append("Result:" if success else "Reason:")
        lines.append(_ascii(_clean(r.get("reply", ""))) or "unknown")
        if r.get("where"):
            lines.append("during %s" % (r["where"].upper(),))
        lines.append("")
    lines += [
        "--" + boundary,
        "Content-Type: message/%sdelivery-status" % ("global-" if utf8 else "",),
        "Content-Description: Delivery report",
        "",
        "Reporting-MTA: dns; %s" % (host,),
    ]
    if envelope.get("envid"):
        lines.append("Original-Envelope-Id: %s" % (_ascii(envelope["envid"]),))
    if envelope.get("received"):
        lines.append("Arrival-Date: %s" % (formatdate(envelope["received"]),))
    for r in recipients:
        lines.append("")
        if r.get("orcpt"):
            orcpt = r["orcpt"]
            if utf8 and not orcpt.isascii():
                orcpt = "utf-8; " + orcpt.partition(";")[2].strip()
            lines.append("Original-Recipient: %s" % (text(orcpt),))
        lines.append("Final-Recipient: %s" % (_addressType(r["address"], utf8),))
        action = "failed" if failed else "delayed"
        if success:
            action = r.get("action") or "delivered"
        lines.append("Action: %s" % (action,))
        status = r.get("dsn") or enhancedStatus(
            r.get("reply", ""),
            r.get("code", 0),
            "2.0.0" if success else (None if failed else "4.0.0"),
        )
        if failed and status.startswith("4"):
            # a temporary error that timed out (queuereturn_timeout)
            status = "4.4.7"
        lines.append("Status: %s" % (status,))
        if r.get("remoteMTA"):
            lines.append("Remote-MTA: dns; %s" % (_ascii(r["remoteMTA"]),))
        reply = _ascii(_clean(r.get("reply", "")))
        if reply and r.get("code"):
            lines.append(_fold("Diagnostic-Code", "smtp; " + reply))
        if r.get("lastAttempt"):
            lines.append("Last-Attempt-Date: %s" % (formatdate(r["lastAttempt"]),))
        if kind == "delayed" and willRetryUntil:
            lines.append("Will-Retry-Until: %s" % (formatdate(willRetryUntil),))
    lines += [
        "",
        "--" + boundary,
    ]
    if headersOnly:
        body = headerOf(original)
        lines.append(
            "Content-Type: "
            + ("message/global-headers" if utf8 else "text/rfc822-headers")
        )
        lines.append(
            "Content-Description: %s Message Headers"
            % ("Delivered" if success else "Undelivered",)
        )
    else:
        body = original
        lines.append("Content-Type: message/" + ("global" if utf8 else "rfc822"))
        lines.append(
            "Content-Description: %s Message"
            % ("Delivered" if success else "Undelivered",)
        )
    lines.append("")
    head = ("\r\n".join(lines) + "\r\n").encode("utf-8" if utf8 else "ascii")
    if body and not body.endswith(b"\n"):
        body += b"\r\n"
    return head + body + ("\r\n--%s--\r\n" % (boundary,)).encode("ascii")


def is8bit(data: bytes) -> bool:
    """Does C{data} contain bytes outside 7-bit ASCII?"""
    try:
        data.decode("ascii")
    except UnicodeDecodeError:
        return True
    return False
