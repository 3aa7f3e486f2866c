# -*- test-case-name: smx.milter.test.test_policy -*-
"""
NAME
    smx.milter.policy - the Postfix SMTP access policy delegation protocol

SYNOPSIS
    from smx.milter.policy import (
        PolicySession, PolicyTransaction, policyAttributes,
        encodeRequest, ReplyReader, parseAction)

    attributes = policyAttributes("RCPT", session, transaction,
                                  recipient="bob@example.org")
    transport.write(encodeRequest(attributes))
    for reply in reader.feed(data):          # ReplyReader()
        decision = parseAction(reply["action"], "RCPT")

DESCRIPTION
    The protocol of Postfix's C{check_policy_service} (SMTPD_POLICY_README):
    the client sends C{name=value} lines ended by an empty line; the server
    answers with C{action=...} and an empty line, on a connection that is
    kept open for the next request.  This module holds no sockets: it
    builds and encodes requests, splits replies off a byte stream and turns
    an action into a typed, frozen L{PolicyDecision}.  L{smx.milter.
    policyclient} is the Twisted client that uses it.

    The actions are those of an SMTPD access(5) table, with the reply codes
    Postfix gives them (C{smtpd_check.c}, C{check_table_result}):

      OK, RELAY, PERMIT, all digits     accept (C{OK}; Postfix takes a
                                        bare number, even C{550}, as OK)
      DUNNO                             no decision
      REJECT [[d.d.d] text]             554 5.7.1 "Access denied"
      DEFER [[d.d.d] text]              450 4.7.1 "Access denied"
      4NN|5NN [d.d.d] text              that code (status 4.7.1 or 5.7.1)
      DEFER_IF_PERMIT [[d.d.d] text]    450 4.7.1 "Service unavailable",
                                        only if the mail would be accepted
      DEFER_IF_REJECT [[d.d.d] text]    450 4.7.1, instead of a later reject
      PREPEND header: value             add a header (not at END-OF-MESSAGE)
      DISCARD [text]                    accept and throw the message away
      HOLD [text]                       accept and keep it on hold
      REDIRECT user@domain              deliver to that address instead
      BCC user@domain                   deliver a copy to that address too
      WARN [text], INFO [text]          log the text, no decision
      FILTER transport:destination      not supported: no decision, warning

    Words are matched without regard to case.  An enhanced status code at
    the start of the text replaces the default one; its class digit is made
    to agree with the reply code, as Postfix does.  Anything else (an empty
    action, an unknown word, C{PREPEND} without a valid header, C{REDIRECT}
    without C{@}) is reported by L{parseAction}: unknown actions raise
    L{UnknownAction} (the client then applies its default action),
    malformed arguments of known actions give C{DUNNO} with a warning, as
    Postfix does.

    A request attribute value never contains a line break: CR, LF, NUL and
    the other control characters are replaced with C{?} (L{sanitize}).

CONFIGURATION PARAMETERS
    None here; see L{smx.milter.policyclient} and C{doc/policy.md}.

SECURITY
    Reply lines are bounded (L{MAX_LINE}) and so is a whole reply
    (L{MAX_REPLY}); a server that sends more gets its connection closed.
    The text of a reply is cut to fit an SMTP reply line (510 characters)
    and every character that is not printable ASCII is replaced with a
    space before it is sent to an SMTP client.

DIAGNOSTICS
    L{ReplyError} for a reply that breaks the protocol, L{UnknownAction}
    for an action that is not one of the above; C{ValueError} for a bad
    protocol state or attribute name (a programming error).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import smx

#: the protocol states of SMTPD_POLICY_README
PROTOCOL_STATES = (
    "CONNECT",
    "EHLO",
    "HELO",
    "MAIL",
    "RCPT",
    "DATA",
    "END-OF-MESSAGE",
    "VRFY",
    "ETRN",
)

#: the longest reply line accepted from a server, in bytes
MAX_LINE = 4096

#: the longest whole reply accepted from a server, in bytes
MAX_REPLY = 16384

#: the reply code of REJECT (Postfix's access_map_reject_code)
REJECT_CODE = 554

#: the reply code of DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT
#: (Postfix's access_map_defer_code)
DEFER_CODE = 450

#: what C{default_action} may name besides an access(5) action
DEFAULT_ACTIONS = {
    "tempfail": "451 4.3.5 Server configuration problem",
    "dunno": "DUNNO",
    "reject": "REJECT Server configuration problem",
}

#: the attribute C{mail_version}: smx's version (major.minor.patch)
MAIL_VERSION = smx.__version__

# the actions of a decision
OK = "OK"
DUNNO = "DUNNO"
REJECT = "REJECT"
DEFER = "DEFER"
DEFER_IF_PERMIT = "DEFER_IF_PERMIT"
DEFER_IF_REJECT = "DEFER_IF_REJECT"
PREPEND = "PREPEND"
DISCARD = "DISCARD"
HOLD = "HOLD"
REDIRECT = "REDIRECT"
BCC = "BCC"
WARN = "WARN"
INFO = "INFO"

ACTIONS = (
    OK,
    DUNNO,
    REJECT,
    DEFER,
    DEFER_IF_PERMIT,
    DEFER_IF_REJECT,
    PREPEND,
    DISCARD,
    HOLD,
    REDIRECT,
    BCC,
    WARN,
    INFO,
)

#: what Postfix puts in the text of a reply when the action gave none
_DEFAULT_TEXT = {
    REJECT: "Access denied",
    DEFER: "Access denied",
    DEFER_IF_PERMIT: "Service unavailable",
    DEFER_IF_REJECT: "Service unavailable",
}

#: Postfix's names of what a restriction at each protocol state rejects
REPLY_CLASSES = {
    "CONNECT": "Client host",
    "EHLO": "Helo command",
    "HELO": "Helo command",
    "MAIL": "Sender address",
    "RCPT": "Recipient address",
    "VRFY": "Recipient address",
    "DATA": "Data command",
    "END-OF-MESSAGE": "End-of-data",
    "ETRN": "Etrn command",
}

_DSN = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")
_HEADER = re.compile(r"^[\x21-\x39\x3b-\x7e]+[ \t]*:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ReplyError(Exception):
    """
    A policy server broke the protocol (an over-long line, a reply without
    C{action=}, a reply nobody asked for).
    """


class UnknownAction(Exception):
    """
    A policy server answered with an action that is not an access(5)
    action.
    """


@dataclass(frozen=True)
class PolicyDecision:
    """
    What a policy server decided about one request.

    @ivar action: one of L{ACTIONS}.
    @ivar code: the SMTP reply code of C{REJECT}, C{DEFER} and
        C{DEFER_IF_*} (0 for the others).
    @ivar dsn: the enhanced status code (RFC 3463) that goes with C{code},
        or C{""}.
    @ivar text: the reply text of C{REJECT}, C{DEFER} and C{DEFER_IF_*}
        (Postfix's default text when the server gave none), the header of
        C{PREPEND}, the address of C{REDIRECT} and C{BCC}, the text to log
        of the others.
    @ivar raw: the action as the server sent it (for the log).
    @ivar default: the server did not answer usably and this is the
        policy's C{default_action}.
    @ivar warning: why a malformed action became C{DUNNO}, else C{""}.
    """

    action: str
    code: int = 0
    dsn: str = ""
    text: str = ""
    raw: str = ""
    default: bool = False
    warning: str = ""

    @property
    def rejects(self) -> bool:
        """
        Is this a rejection to send at once (C{REJECT}, C{DEFER}, C{4NN},
        C{5NN})?
        """
        return self.action in (REJECT, DEFER)

    def reply(
        self, subject: Optional[str] = None, replyClass: Optional[str] = None
    ) -> Optional[Dict[str, Any]]:
        """
        The SMTP reply of a rejecting or deferring decision, as Postfix
        words it: C{"<bob@example.org>: Recipient address rejected:
        Greylisted"} when C{subject} and C{replyClass} are given, else the
        bare text.  An address-specific status (X.1.Y) is adjusted to what
        is rejected (Postfix's C{smtpd_dsn_fix}).

        @param subject: what is rejected (the address, the HELO name, the
            client C{name[address]}).
        @param replyClass: a value of L{REPLY_CLASSES}.
        @return: a I{reply} C{dict} (C{code}, C{dsn}, C{text}), or C{None}
            when the decision does not reject or defer.
        """
        if not self.code:
            return None
        dsn = _fixDsn(self.dsn, replyClass)
        if subject is not None and replyClass:
            text = "<%s>: %s rejected: %s" % (subject, replyClass, self.text)
        else:
            text = self.text
        text = _printable(text)[: 510 - len("%d %s " % (self.code, dsn))]
        return {"code": self.code, "dsn": dsn, "text": text}

    def toDict(self) -> Dict[str, Any]:
        """
        The decision as plain data (to cross a process boundary).
        """
        return {
            "action": self.action,
            "code": self.code,
            "dsn": self.dsn,
            "text": self.text,
            "raw": self.raw,
            "default": self.default,
            "warning": self.warning,
        }

    @classmethod
    def fromDict(cls, data: Mapping[str, Any]) -> "PolicyDecision":
        """
        Undo L{toDict}.

        @raise ValueError: C{data} does not describe a decision.
        """
        if data.get("action") not in ACTIONS:
            raise ValueError("not a policy decision: %r" % (data.get("action"),))
        return cls(
            action=str(data["action"]),
            code=int(data.get("code", 0)),
            dsn=str(data.get("dsn", "")),
            text=str(data.get("text", "")),
            raw=str(data.get("raw", "")),
            default=bool(data.get("default", False)),
            warning=str(data.get("warning", "")),
        )


def _printable(text: str) -> str:
    """
    C{text} with every character that is not printable ASCII replaced by a
    space (Postfix's C{printable(text, ' ')} for replies).
    """
    return "".join(c if " " <= c <= "~" else " " for c in text)


# smtpd_dsn_fix.c: the status of a sender (recipient) rejection that names
# the other kind of address, by its last number
_SENDER_DSN = {
    "1": "4.1.7",
    "2": "4.1.8",
    "3": "4.1.7",
    "4": "4.1.7",
    "5": "4.1.0",
    "6": "4.1.7",
    "7": "4.1.7",
    "8": "4.1.8",
}
_RECIPIENT_DSN = {
    "1": "4.1.1",
    "2": "4.1.2",
    "3": "4.1.3",
    "4": "4.1.4",
    "5": "4.1.5",
    "6": "4.1.6",
    "7": "4.1.3",
    "8": "4.1.2",
}


def _fixDsn(dsn: str, replyClass: Optional[str]) -> str:
    """
    Postfix's C{smtpd_dsn_fix}: an address status X.1.Y about the wrong
    kind of address is replaced by the matching one.
    """
    if len(dsn) < 5 or dsn[1:4] != ".1.":
        return dsn
    detail = dsn[4:]
    if replyClass == "Sender address":
        fixed = _SENDER_DSN.get(detail, "4.1.0")
    elif replyClass == "Recipient address":
        fixed = _RECIPIENT_DSN.get(detail, "4.1.0")
    elif replyClass is None:
        return dsn
    else:
        fixed = "4.0.0"
    return dsn[0] + fixed[1:]


def _splitDsn(text: str, default: str) -> Tuple[str, str]:
    """
    Split an optional enhanced status code off the front of C{text}
    (Postfix's C{dsn_split}).

    @return: C{(dsn, rest)}.
    """
    match = _DSN.match(text)
    if match is None:
        return default, text
    return "%s.%s.%s" % match.groups(), text[match.end() :]


def _reject(action: str, code: int, text: str, defaultDsn: str, raw: str):
    dsn, rest = _splitDsn(text, defaultDsn)
    # the class of the status agrees with the reply code
    dsn = str(code)[0] + dsn[1:]
    return PolicyDecision(
        action=action,
        code=code,
        dsn=dsn,
        text=rest or _DEFAULT_TEXT.get(action, "Access denied"),
        raw=raw,
    )


def parseAction(value: str, protocolState: Optional[str] = None) -> PolicyDecision:
    """
    Turn the value of a reply's C{action} attribute into a decision.

    @param value: the text after C{action=}.
    @param protocolState: the C{protocol_state} of the request (C{PREPEND}
        is refused at C{END-OF-MESSAGE}, as Postfix does).
    @raise UnknownAction: C{value} is not an access(5) action.
    """
    raw = value
    value = value.strip()
    parts = value.split(None, 1)
    if not parts:
        raise UnknownAction("empty action")
    word = parts[0]
    text = parts[1].strip() if len(parts) > 1 else ""
    upper = word.upper()
    if upper in (OK, "RELAY", "PERMIT") or (value.isascii() and value.isdigit()):
        # Postfix: "all-numeric result probably means OK"
        return PolicyDecision(OK, raw=raw)
    if upper == DUNNO:
        return PolicyDecision(DUNNO, raw=raw)
    if upper == REJECT:
        return _reject(REJECT, REJECT_CODE, text, "5.7.1", raw)
    if upper in (DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT):
        return _reject(upper, DEFER_CODE, text, "4.7.1", raw)
    if len(word) == 3 and word[0] in "45" and word[1:].isascii() and word[1:].isdigit():
        code = int(word)
        action = REJECT if word[0] == "5" else DEFER
        return _reject(action, code, text, word[0] + ".7.1", raw)
    if upper == PREPEND:
        if protocolState == "END-OF-MESSAGE":
            return _warned(raw, "PREPEND must be used before END-OF-MESSAGE")
        if not _HEADER.match(text):
            return _warned(raw, "PREPEND requires header: text")
        return PolicyDecision(PREPEND, text=text, raw=raw)
    if upper in (REDIRECT, BCC):
        if "@" not in text:
            return _warned(raw, "%s requires a user@domain target" % (upper,))
        return PolicyDecision(upper, text=text, raw=raw)
    if upper in (DISCARD, HOLD, WARN, INFO):
        return PolicyDecision(upper, text=text, raw=raw)
    if upper == "FILTER":
        return _warned(raw, "FILTER is not supported")
    raise UnknownAction("unknown action %r" % (_printable(word)[:64],))


def _warned(raw: str, warning: str) -> PolicyDecision:
    return PolicyDecision(DUNNO, raw=raw, warning=warning)


def defaultDecision(defaultAction: str) -> PolicyDecision:
    """
    The decision of a C{default_action}: C{tempfail} (451 4.3.5 Server
    configuration problem, Postfix's default), C{dunno}, C{reject}, or any
    access(5) action such as C{"450 4.7.1 Try again later"}.

    @raise ValueError: C{defaultAction} is neither.
    """
    text = DEFAULT_ACTIONS.get(defaultAction.strip().lower(), defaultAction)
    try:
        decision = parseAction(text)
    except UnknownAction as e:
        raise ValueError("bad default_action %r: %s" % (defaultAction, e))
    if decision.warning:
        raise ValueError(
            "bad default_action %r: %s" % (defaultAction, decision.warning)
        )
    return PolicyDecision(
        action=decision.action,
        code=decision.code,
        dsn=decision.dsn,
        text=decision.text,
        raw=decision.raw,
        default=True,
    )


# -- requests --------------------------------------------------------------


def sanitize(value: Any) -> str:
    """
    An attribute value as text without line breaks: CR, LF, NUL and the
    other control characters become C{?}.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return _CONTROL.sub("?", str(value))


def encodeRequest(attributes: Mapping[str, Any]) -> bytes:
    """
    Encode one request: C{name=value} lines and an empty line, UTF-8.

    @param attributes: names to values (C{str}, C{int}, C{bool}, C{None});
        values are L{sanitize}d.  C{request=smtpd_access_policy} is put
        first when missing.
    @raise ValueError: an attribute name is empty or contains C{=} or a
        control character.
    """
    lines = []
    if "request" not in attributes:
        lines.append("request=smtpd_access_policy")
    for name, value in attributes.items():
        if not name or "=" in name or _CONTROL.search(name):
            raise ValueError("bad policy attribute name %r" % (name,))
        lines.append("%s=%s" % (name, sanitize(value)))
    lines.append("")
    lines.append("")
    return "\n".join(lines).encode("utf-8", "surrogateescape")


def xtext(text: str) -> str:
    """
    Postfix's C{xtext_quote} for the C{ccert_*} names: C{+}, C{=} and
    every character outside C{!}..C{~} become C{+XX} (UTF-8 bytes).
    """
    out = []
    for byte in text.encode("utf-8", "surrogateescape"):
        if byte < 33 or byte > 126 or byte in (ord("+"), ord("=")):
            out.append("+%02X" % (byte,))
        else:
            out.append(chr(byte))
    return "".join(out)


@dataclass(frozen=True)
class PolicySession:
    """
    What a policy request says about the SMTP session.  SMTPS keeps one and
    replaces it (C{dataclasses.replace}) at EHLO, STARTTLS and AUTH.

    @ivar clientAddress: the client's IP address.
    @ivar clientPort: the client's port.
    @ivar clientName: the verified client host name (C{""} → C{unknown}).
    @ivar reverseClientName: the PTR name, verified or not (C{""} →
        C{unknown}).
    @ivar serverAddress: the local IP address of the connection.
    @ivar serverPort: the local port.
    @ivar heloName: the HELO/EHLO argument.
    @ivar protocolName: C{SMTP} or C{ESMTP}.
    @ivar saslMethod: the AUTH mechanism, once authenticated.
    @ivar saslUsername: the authenticated user.
    @ivar encryptionProtocol: the TLS version (C{TLSv1.3}).
    @ivar encryptionCipher: the cipher name.
    @ivar encryptionKeysize: the cipher's secret bits.
    @ivar ccertSubject: the client certificate's subject CN, only when it
        was verified (sent xtext-encoded, see L{xtext}).
    @ivar ccertIssuer: its issuer's CN, likewise.
    @ivar ccertFingerprint: the certificate's fingerprint (L{fingerprint}).
    @ivar ccertPubkeyFingerprint: its public key's fingerprint.
    @ivar stress: SMTPS is overloaded (sent as C{stress=yes}).
    """

    clientAddress: str = ""
    clientPort: int = 0
    clientName: str = ""
    reverseClientName: str = ""
    serverAddress: str = ""
    serverPort: int = 0
    heloName: str = ""
    protocolName: str = "SMTP"
    saslMethod: str = ""
    saslUsername: str = ""
    encryptionProtocol: str = ""
    encryptionCipher: str = ""
    encryptionKeysize: int = 0
    ccertSubject: str = ""
    ccertIssuer: str = ""
    ccertFingerprint: str = ""
    ccertPubkeyFingerprint: str = ""
    stress: bool = False


@dataclass(frozen=True)
class PolicyTransaction:
    """
    What a policy request says about the current mail transaction.

    @ivar instance: unique per transaction (Postfix: pid, time and a
        counter): SMTPS passes its transaction id (seed App. C.1), which
        is unique across processes and restarts.
    @ivar queueId: the queue id; in smx the same transaction id.
    @ivar sender: the MAIL address (C{""} for the null sender).
    @ivar recipients: the recipients accepted so far.
    @ivar size: the C{SIZE=} of MAIL, or the size received once the
        message is complete.
    @ivar saslSender: the C{AUTH=} address of MAIL.
    """

    instance: str = ""
    queueId: str = ""
    sender: str = ""
    recipients: Tuple[str, ...] = ()
    size: int = 0
    saslSender: str = ""


def policyAttributes(
    state: str,
    session: PolicySession,
    transaction: Optional[PolicyTransaction] = None,
    recipient: str = "",
    etrnDomain: str = "",
    policyContext: str = "",
) -> Dict[str, str]:
    """
    The attributes of one request, in the order Postfix sends them.

    C{recipient} is sent in C{RCPT} and C{VRFY} (the address asked
    about) and, in C{DATA} and C{END-OF-MESSAGE}, when the transaction has
    exactly one recipient; C{recipient_count} is non-zero only in C{DATA}
    and C{END-OF-MESSAGE}.  C{instance} and C{queue_id} are empty outside
    a transaction.

    @param state: one of L{PROTOCOL_STATES}.
    @param etrnDomain: the ETRN argument.
    @param policyContext: sent as C{policy_context}.
    @raise ValueError: C{state} is not a protocol state.
    """
    if state not in PROTOCOL_STATES:
        raise ValueError("bad policy protocol state %r" % (state,))
    t = transaction if transaction is not None else PolicyTransaction()
    inData = state in ("DATA", "END-OF-MESSAGE")
    if inData and not recipient and len(t.recipients) == 1:
        recipient = t.recipients[0]
    attributes = {
        "request": "smtpd_access_policy",
        "protocol_state": state,
        "protocol_name": session.protocolName,
        "client_address": session.clientAddress,
        "client_name": session.clientName or "unknown",
        "client_port": str(session.clientPort),
        "reverse_client_name": session.reverseClientName or "unknown",
        "server_address": session.serverAddress,
        "server_port": str(session.serverPort),
        "helo_name": session.heloName,
        "sender": t.sender,
        "recipient": recipient,
        "recipient_count": str(len(t.recipients) if inData else 0),
        "queue_id": t.queueId,
        "instance": t.instance,
        "size": str(t.size),
        "etrn_domain": etrnDomain if state == "ETRN" else "",
        "stress": "yes" if session.stress else "",
        "sasl_method": session.saslMethod,
        "sasl_username": session.saslUsername,
        "sasl_sender": t.saslSender,
        "ccert_subject": xtext(session.ccertSubject),
        "ccert_issuer": xtext(session.ccertIssuer),
        "ccert_fingerprint": session.ccertFingerprint,
        "ccert_pubkey_fingerprint": session.ccertPubkeyFingerprint,
        "encryption_protocol": session.encryptionProtocol,
        "encryption_cipher": session.encryptionCipher,
        "encryption_keysize": str(session.encryptionKeysize),
        "policy_context": policyContext,
        "compatibility_level": "",
        "mail_version": MAIL_VERSION,
    }
    return {name: sanitize(value) for name, value in attributes.items()}


def fingerprint(data: bytes) -> str:
    """
    A SHA-256 fingerprint as Postfix writes it (C{smtpd_tls_fingerprint_
    digest = sha256}): upper-case hexadecimal bytes separated by C{:}.
    """
    digest = hashlib.sha256(data).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def certificateFields(certificate: Any, verified: bool) -> Dict[str, str]:
    """
    The C{ccert*} fields of L{PolicySession} for a client certificate, as
    Postfix fills them: the fingerprints of the certificate (DER) and of
    its public key (DER SubjectPublicKeyInfo) always, the subject and
    issuer common names only when the certificate was verified.

    @param certificate: a C{cryptography} certificate or a pyOpenSSL
        C{X509} (C{connection.get_peer_certificate()}).
    @param verified: the certificate chain was verified.
    @return: keyword arguments for C{dataclasses.replace(session, ...)}.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if hasattr(certificate, "to_cryptography"):
        certificate = certificate.to_cryptography()
    der = certificate.public_bytes(serialization.Encoding.DER)
    key = certificate.public_key().public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    fields = {
        "ccertFingerprint": fingerprint(der),
        "ccertPubkeyFingerprint": fingerprint(key),
        "ccertSubject": "",
        "ccertIssuer": "",
    }
    if verified:
        for field, name in (
            ("ccertSubject", certificate.subject),
            ("ccertIssuer", certificate.issuer),
        ):
            names = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            if names:
                fields[field] = str(names[0].value)
    return fields


# -- replies ---------------------------------------------------------------


class ReplyReader:
    """
    Splits replies off the byte stream from a policy server.

    A reply is C{name=value} lines up to an empty line; the first
    C{action} is the decision, other attributes are kept but not needed.
    A line may end with CRLF or LF.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._lines = []  # type: List[str]
        self._size = 0

    @property
    def pending(self) -> bool:
        """Has part of a reply been received?"""
        return bool(self._buffer or self._lines)

    def feed(self, data: bytes) -> List[Dict[str, str]]:
        """
        Add C{data}; return the replies it completed, each a C{dict} of
        its attributes (the first value of a name wins).

        @raise ReplyError: a line is longer than L{MAX_LINE}, a reply
            longer than L{MAX_REPLY}, a line is not C{name=value}, or a
            reply has no C{action}.
        """
        self._buffer += data
        replies = []  # type: List[Dict[str, str]]
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    raise ReplyError("reply line longer than %d bytes" % (MAX_LINE,))
                return replies
            if end > MAX_LINE:
                raise ReplyError("reply line longer than %d bytes" % (MAX_LINE,))
            raw = self._buffer[:end]
            self._buffer = self._buffer[end + 1 :]
            self._size += end + 1
            if self._size > MAX_REPLY:
                raise ReplyError("reply longer than %d bytes" % (MAX_REPLY,))
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ReplyError("reply is not UTF-8: %r" % (raw[:64],))
            if line:
                self._lines.append(line)
                continue
            lines, self._lines, self._size = self._lines, [], 0
            replies.append(_attributes(lines))


def _attributes(lines: Iterable[str]) -> Dict[str, str]:
    attributes = {}  # type: Dict[str, str]
    for line in lines:
        name, sep, value = line.partition("=")
        if not sep or not name:
            raise ReplyError("reply line is not name=value: %r" % (line[:64],))
        attributes.setdefault(name, value)
    if "action" not in attributes:
        raise ReplyError("reply without action")
    return attributes
