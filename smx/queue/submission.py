# -*- test-case-name: smx.queue.test.test_submission -*-
"""
NAME
    smx.queue.submission - hand one message to the local SMTPS

SYNOPSIS
    outcome = submit(("127.0.0.1", 25), envelope, content, heloName="host")
    outcome.accepted     # addresses SMTPS took responsibility for (250)
    outcome.temporary    # RecipientResults to try again later (4xx, no answer)
    outcome.permanent    # RecipientResults refused for good (5xx)

DESCRIPTION
    One ESMTP transaction (RFC 5321) with the standard library's
    C{smtplib}, blocking: used by C{smx sendmail} and, in a thread of its
    own, by the pickup service (L{smx.queue.pickup}), so that both submit
    the same way and every check of SMTPS applies to local mail.

    The envelope is a L{smx.queue.maildrop.DropEnvelope}; its pending
    recipients are submitted.  Parameters are sent only where the server
    offers their extension: C{SIZE=}; C{BODY=8BITMIME} for an 8-bit body
    (without 8BITMIME the body is sent as it is); C{SMTPUTF8} for an
    address that is not ASCII (without it such an address is refused with
    C{553 5.6.7}); with DSN (RFC 3461) C{RET=}, C{ENVID=} (xtext) and
    C{NOTIFY=}, which are left out, without an error, when DSN is not
    offered.

    A recipient is accepted only when the final dot got C{250}.  A 4xx
    reply, a connection that cannot be made or is lost, a timeout or a
    garbled reply make every recipient without a final answer a temporary
    result: the caller keeps the message and tries again (at worst the
    message arrives twice, if the connection was lost after the final dot
    was sent).  A 5xx reply is a permanent result for the recipients it
    concerns.

DIAGNOSTICS
    Nothing is raised for a problem of the server or the network; each
    result carries the reply (C{"550 5.1.1 User unknown"}) or a text that
    says what happened (C{"connection to 127.0.0.1:25 failed: Connection
    refused"}) and where (C{connect}, C{greeting}, C{ehlo}, C{mail},
    C{rcpt}, C{data}, C{final_dot}).
"""

from __future__ import annotations

import re
import smtplib
import socket
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from smx.mail.dsnparams import encodeXtext
from smx.queue.maildrop import DropEnvelope, DropRecipient

#: seconds to wait for the TCP connection and the greeting
CONNECT_TIMEOUT = 10.0

#: seconds to wait for any later reply (the final dot waits for fsyncs)
REPLY_TIMEOUT = 120.0

#: xtext (RFC 3461 section 4), as SMTPC encodes it
xtext = encodeXtext


@dataclass(frozen=True)
class RecipientResult:
    """
    What became of one recipient that was not accepted.

    @ivar address: the recipient.
    @ivar code: the reply code (0 when there was no reply).
    @ivar reply: the reply as one line (C{"550 5.1.1 User unknown"}) or a
        description of what happened.
    @ivar where: the step: C{connect}, C{greeting}, C{ehlo}, C{mail},
        C{rcpt}, C{data} or C{final_dot}.
    """

    address: str
    code: int
    reply: str
    where: str


@dataclass
class Outcome:
    """
    The result of one submission.

    @ivar accepted: the recipients accepted (the final dot got 250).
    @ivar temporary: L{RecipientResult}s to try again later.
    @ivar permanent: L{RecipientResult}s refused for good.
    @ivar extensions: the EHLO keywords of the server (lower case).
    """

    accepted: List[str] = field(default_factory=list)
    temporary: List[RecipientResult] = field(default_factory=list)
    permanent: List[RecipientResult] = field(default_factory=list)
    extensions: Tuple[str, ...] = ()

    def classify(
        self, recipients: List[DropRecipient], code: int, reply: str, where: str
    ) -> None:
        """
        Record one reply (or failure) for C{recipients}: 2xx accepted,
        5xx permanent, anything else temporary.
        """
        for r in recipients:
            if 200 <= code < 300:
                self.accepted.append(r.address)
            elif 500 <= code < 600:
                self.permanent.append(RecipientResult(r.address, code, reply, where))
            else:
                self.temporary.append(RecipientResult(r.address, code, reply, where))


def replyText(code: int, message: bytes) -> str:
    """
    A reply of C{smtplib} as one printable line: C{"550 5.1.1 User
    unknown"} (the lines of a multi-line reply joined by spaces).
    """
    text = message.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return ("%d %s" % (code, text)).strip()


def dotStuffed(content: bytes) -> bytes:
    """
    The DATA stream of C{content} (CR LF line ends): every line starting
    with a dot gets another one, and C{.} CR LF ends it.
    """
    data = re.sub(rb"(?m)^\.", b"..", content)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _failure(code: int) -> int:
    """
    The code to classify a reply that was not the one expected: a 4xx or
    5xx as it is, anything else (an unexpected 2xx or 3xx) as 0, which is
    temporary.
    """
    return code if code >= 400 else 0


def _needsUTF8(text: str) -> bool:
    return not text.isascii()


class _Session:
    """
    One submission in progress: the connection and what is left to decide.
    """

    def __init__(
        self,
        address: Tuple[str, int],
        envelope: DropEnvelope,
        content: bytes,
        heloName: str,
        timeout: float,
        connectTimeout: float,
        trace: Optional[Callable[[str], None]],
    ) -> None:
        self.address = address
        self.envelope = envelope
        self.content = content
        self.heloName = heloName
        self.timeout = timeout
        self.connectTimeout = connectTimeout
        self.trace = trace
        self.outcome = Outcome()
        #: recipients without a final answer yet
        self.open = list(envelope.pending())
        self.where = "connect"
        self.client = None  # type: Optional[smtplib.SMTP]

    def _say(self, line: str) -> None:
        if self.trace is not None:
            self.trace(line)

    def _command(self, verb: str, argument: str = "") -> Tuple[int, str]:
        assert self.client is not None
        self._say(">>> %s%s" % (verb, " " + argument if argument else ""))
        code, message = self.client.docmd(verb, argument)
        text = replyText(code, message)
        self._say("<<< " + text)
        return code, text

    def _settle(self, recipients: List[DropRecipient], code: int, text: str) -> None:
        self.outcome.classify(recipients, code, text, self.where)
        settled = {id(r) for r in recipients}
        self.open = [r for r in self.open if id(r) not in settled]

    def run(self) -> Outcome:
        try:
            self._transaction()
        except (OSError, smtplib.SMTPException, UnicodeError) as e:
            if isinstance(e, smtplib.SMTPServerDisconnected):
                why = "connection lost"
            elif isinstance(e, socket.timeout):
                why = "timeout"
            elif isinstance(e, smtplib.SMTPResponseException):
                error = e.smtp_error
                if isinstance(error, str):
                    error = error.encode("utf-8", "replace")
                why = "bad reply: %s" % (replyText(e.smtp_code, error),)
            elif isinstance(e, OSError) and e.strerror:
                why = e.strerror
            else:
                why = str(e) or e.__class__.__name__
            host, port = self.address
            text = "%s with %s:%d: %s" % (
                "connection" if self.where == "connect" else self.where.upper(),
                host,
                port,
                why,
            )
            self._say("*** " + text)
            self._settle(list(self.open), 0, text)
        finally:
            self._close()
        return self.outcome

    def _close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if client.sock is not None:
                self._say(">>> QUIT")
                client.quit()
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            client.close()

    def _transaction(self) -> None:
        host, port = self.address
        self.client = smtplib.SMTP(
            timeout=self.connectTimeout, local_hostname=self.heloName
        )
        self.where = "connect"
        code, message = self.client.connect(host, port)
        self.where = "greeting"
        text = replyText(code, message)
        self._say("<<< " + text)
        if code != 220:
            self._settle(list(self.open), _failure(code), text)
            return
        assert self.client.sock is not None
        self.client.sock.settimeout(self.timeout)
        self.where = "ehlo"
        self._say(">>> EHLO " + self.heloName)
        code, message = self.client.ehlo()
        self._say("<<< " + replyText(code, message))
        if code != 250:
            self._say(">>> HELO " + self.heloName)
            code, message = self.client.helo()
            self._say("<<< " + replyText(code, message))
            if code != 250:
                text = replyText(code, message)
                self._settle(list(self.open), _failure(code), text)
                return
        features = self.client.esmtp_features
        self.outcome.extensions = tuple(sorted(features))
        self._mail(features)

    def _mail(self, features: dict) -> None:
        envelope = self.envelope
        utf8 = "smtputf8" in features
        if _needsUTF8(envelope.sender) and not utf8:
            self.where = "mail"
            self._settle(
                list(self.open),
                553,
                "553 5.6.7 the sender address is not ASCII and the server does "
                "not offer SMTPUTF8",
            )
            return
        unusable = [r for r in self.open if _needsUTF8(r.address) and not utf8]
        if unusable:
            self.where = "rcpt"
            self._settle(
                unusable,
                553,
                "553 5.6.7 the address is not ASCII and the server does not "
                "offer SMTPUTF8",
            )
        if not self.open:
            return
        assert self.client is not None
        useUTF8 = utf8 and (
            _needsUTF8(envelope.sender) or any(_needsUTF8(r.address) for r in self.open)
        )
        if useUTF8:
            self.client.command_encoding = "utf-8"
        params = []
        if "size" in features:
            params.append("SIZE=%d" % (len(self.content),))
        if envelope.bodyType == "8BITMIME" and "8bitmime" in features:
            params.append("BODY=8BITMIME")
        if useUTF8:
            params.append("SMTPUTF8")
        dsn = "dsn" in features
        if dsn and envelope.ret:
            params.append("RET=" + envelope.ret)
        if dsn and envelope.envid:
            params.append("ENVID=" + xtext(envelope.envid))
        self.where = "mail"
        code, text = self._command(
            "MAIL", "FROM:<%s>%s" % (envelope.sender, "".join(" " + p for p in params))
        )
        if code != 250:
            self._settle(list(self.open), _failure(code), text)
            return
        self.where = "rcpt"
        accepted = []
        for r in list(self.open):
            notify = " NOTIFY=" + r.notify if dsn and r.notify else ""
            code, text = self._command("RCPT", "TO:<%s>%s" % (r.address, notify))
            if code in (250, 251):
                accepted.append(r)
            else:
                self._settle([r], _failure(code), text)
        if not accepted:
            self._command("RSET")
            return
        self.where = "data"
        code, text = self._command("DATA")
        if code != 354:
            self._settle(accepted, _failure(code), text)
            return
        self.where = "final_dot"
        self._say(">>> (%d bytes of content) ." % (len(self.content),))
        self.client.send(dotStuffed(self.content))
        code, message = self.client.getreply()
        text = replyText(code, message)
        self._say("<<< " + text)
        self._settle(accepted, code if code == 250 or code >= 400 else 0, text)


def submit(
    address: Tuple[str, int],
    envelope: DropEnvelope,
    content: bytes,
    heloName: str,
    timeout: float = REPLY_TIMEOUT,
    connectTimeout: float = CONNECT_TIMEOUT,
    trace: Optional[Callable[[str], None]] = None,
) -> Outcome:
    """
    Submit the pending recipients of C{envelope} with C{content} in one
    transaction (see the module docstring).

    @param address: C{(host, port)} of SMTPS.
    @param content: the message, CR LF line ends, not dot-stuffed.
    @param heloName: the name to give with EHLO.
    @param trace: called with each line sent (C{">>> ..."}) and received
        (C{"<<< ..."}), for C{smx sendmail -v}.
    @return: the L{Outcome}; every pending recipient is in exactly one of
        its lists.
    """
    return _Session(
        address, envelope, content, heloName, timeout, connectTimeout, trace
    ).run()


__all__ = ["submit", "Outcome", "RecipientResult", "xtext", "dotStuffed", "replyText"]
