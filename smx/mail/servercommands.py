# -*- test-case-name: smx.mail.test.test_server -*-
"""
The commands of the sans-I/O ESMTP/LMTP server machine: the syntax of
each command's arguments (RFC 5321 §4.1, seed §9.1), the EHLO (LHLO)
keywords, and the limits that need no policy.  Which command is allowed
in which state is the table of L{smx.mail.serverstates}.

L{CommandsMixin} is a part of L{smx.mail.server.ServerConnection}: its
C{do_VERB} methods are called with the text after the verb of a command
line that is already known to be ASCII (or, for MAIL and RCPT, UTF-8),
CRLF-terminated and short enough.
They are called only where that table allows the command.  Each returns
an L{smx.mail.serverevents.Event} for the caller to answer, or C{None}
after writing a reply itself (a syntax error, NOOP, HELP, VRFY, EXPN, a
limit).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from smx.mail.address import PathSyntaxError, parsePath
from smx.mail.dsnparams import (
    DSNParameterError,
    parseEnvid,
    parseNotify,
    parseOrcpt,
    parseRet,
)
from smx.mail.serverevents import (
    Auth,
    DataCommand,
    Helo,
    MailFrom,
    Quit,
    RcptTo,
    Rset,
    StartTLS,
)


class CommandsMixin:
    """
    The command verbs of L{smx.mail.server.ServerConnection}; it uses the
    connection's state and limits and its C{_send} and C{_policy}.
    """

    hostname: str
    heloName: Optional[str]
    extended: bool
    tls: bool
    authenticated: bool
    transactions: int
    recipients: int
    sessionRecipients: int
    maxMessageSize: int
    maxRecipientsPerTransaction: int
    maxRecipientsPerSession: int
    maxTransactions: int
    eightBitMime: bool
    tlsAvailable: bool
    authMechanisms: Tuple[str, ...]
    authRequiresTLS: bool
    lmtp: bool
    #: offer SMTPUTF8 (RFC 6531) and take UTF-8 addresses with it
    smtputf8 = True
    #: the last MAIL given carried SMTPUTF8
    smtputf8Transaction = False

    def _send(self, code: int, dsn: Optional[str], text: str) -> None:
        raise NotImplementedError()  # pragma: no cover - the connection's

    def _policy(self, code: int, dsn: str, text: str) -> None:
        raise NotImplementedError()  # pragma: no cover - the connection's

    def _ehloLines(self, text: Optional[str]) -> List[str]:
        if self.lmtp:
            return self._lhloLines(text)
        lines = [text or "%s Hello" % (self.hostname,), "PIPELINING"]
        lines.append(
            "SIZE %d" % (self.maxMessageSize,) if self.maxMessageSize else "SIZE"
        )
        if self.eightBitMime:
            lines.append("8BITMIME")
        if self.smtputf8:
            lines.append("SMTPUTF8")
        lines.append("CHUNKING")
        lines.append("DSN")
        lines.append("ENHANCEDSTATUSCODES")
        if self.tlsAvailable and not self.tls:
            lines.append("STARTTLS")
        if self.tls:
            # RFC 8689 §2: only on a TLS session (as Exim and Postfix do)
            lines.append("REQUIRETLS")
        if self._authOffered():
            lines.append("AUTH " + " ".join(self.authMechanisms))
        lines.append("HELP")
        return lines

    def _lhloLines(self, text: Optional[str]) -> List[str]:
        # RFC 2033 §5: PIPELINING and ENHANCEDSTATUSCODES SHOULD be offered
        lines = [text or self.hostname, "PIPELINING", "ENHANCEDSTATUSCODES"]
        lines.append("CHUNKING")
        if self.eightBitMime:
            lines.append("8BITMIME")
        if self.smtputf8:
            lines.append("SMTPUTF8")
        if self.tlsAvailable and not self.tls:
            lines.append("STARTTLS")
        if self._authOffered():
            lines.append("AUTH " + " ".join(self.authMechanisms))
        lines.append(
            "SIZE %d" % (self.maxMessageSize,) if self.maxMessageSize else "SIZE"
        )
        return lines

    def _authOffered(self) -> bool:
        return (
            bool(self.authMechanisms)
            and not self.authenticated
            and (self.tls or not self.authRequiresTLS)
        )

    def _syntax(self, text: str, dsn: str = "5.5.4", code: int = 501) -> None:
        self._send(code, dsn, text)
        return None

    def _sequence(self, text: str):
        self._send(503, "5.5.1", text)
        return None

    def do_LHLO(self, argument: str, hasArgument: bool):
        return self._helo("LHLO", argument)

    def do_EHLO(self, argument: str, hasArgument: bool):
        return self._helo("EHLO", argument)

    def do_HELO(self, argument: str, hasArgument: bool):
        return self._helo("HELO", argument)

    def _helo(self, verb: str, argument: str):
        if not argument or " " in argument.strip() or not argument.isprintable():
            return self._syntax("Syntax: %s hostname" % (verb,))
        return Helo(argument.strip(), verb != "HELO")

    def do_MAIL(self, argument: str, hasArgument: bool):
        if argument[:5].upper() != "FROM:":
            return self._syntax("Syntax: MAIL FROM:<address>", "5.5.2")
        try:
            sender, params = parsePath(argument[5:], allowNull=True)
        except PathSyntaxError as e:
            return self._syntax("Syntax error in MAIL: " + e.text, e.dsn, e.code)
        if params and not self.extended:
            return self._syntax("Parameters need EHLO", "5.5.4", 555)
        size = 0
        body = "7BIT"
        utf8 = False
        ret = envid = None  # type: Optional[str]
        if len({keyword for keyword, _ in params}) != len(params):
            return self._syntax("Duplicate parameter")
        for keyword, value in params:
            if keyword in ("RET", "ENVID") and not self.lmtp:
                try:
                    if keyword == "RET":
                        ret = parseRet(value)
                    else:
                        envid = parseEnvid(value)
                except DSNParameterError as e:
                    return self._syntax(e.text, e.dsn, e.code)
            elif (
                keyword == "SIZE"
                and value is not None
                and value.isascii()
                and value.isdigit()
            ):
                if len(value) > 20:
                    value = "9" * 20
                size = int(value)
            elif keyword == "BODY" and value is not None:
                body = value.upper()
                if body not in ("7BIT", "8BITMIME") or (
                    body == "8BITMIME" and not self.eightBitMime
                ):
                    return self._syntax("Unsupported BODY type", "5.5.4", 555)
            elif keyword == "AUTH" and value is not None:
                pass
            elif keyword == "SMTPUTF8" and value is None and self.smtputf8:
                utf8 = True
            elif keyword == "REQUIRETLS" and value is None and not self.lmtp:
                if not self.tls:
                    # RFC 8689 §4.1: the session itself must be TLS
                    self._send(530, "5.7.10", "REQUIRETLS needs a TLS session")
                    return None
            else:
                return self._syntax(
                    "Unsupported or malformed parameter %s" % (keyword,), "5.5.4", 555
                )
        if not utf8 and not argument.isascii():
            return self._needsUtf8()
        if self.maxMessageSize and size > self.maxMessageSize:
            self._policy(552, "5.3.4", "Message size exceeds fixed maximum size")
            return None
        if self.maxTransactions and self.transactions >= self.maxTransactions:
            self._policy(452, "4.3.2", "Too many transactions in this session")
            return None
        self.smtputf8Transaction = utf8
        return MailFrom(sender, size, body, params, ret, envid)

    def _needsUtf8(self) -> None:
        # RFC 6531 §3.4: not a syntax error, so not a bad command
        self._send(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
        return None

    def do_RCPT(self, argument: str, hasArgument: bool):
        if argument[:3].upper() != "TO:":
            return self._syntax("Syntax: RCPT TO:<address>", "5.5.2")
        try:
            recipient, params = parsePath(
                argument[3:], allowNull=False, allowPostmaster=True
            )
        except PathSyntaxError as e:
            return self._syntax("Syntax error in RCPT: " + e.text, e.dsn, e.code)
        if not self.smtputf8Transaction and not argument.isascii():
            return self._needsUtf8()
        if params and not self.extended:
            return self._syntax("Parameters need EHLO", "5.5.4", 555)
        if len({keyword for keyword, _ in params}) != len(params):
            return self._syntax("Duplicate parameter")
        notify = orcpt = None  # type: Optional[str]
        for keyword, value in params:
            if self.lmtp or keyword not in ("NOTIFY", "ORCPT"):
                return self._syntax(
                    "Unsupported parameter %s" % (keyword,), "5.5.4", 555
                )
            try:
                if keyword == "NOTIFY":
                    notify = parseNotify(value)
                else:
                    orcpt = parseOrcpt(value, self.smtputf8Transaction)
            except DSNParameterError as e:
                return self._syntax(e.text, e.dsn, e.code)
        if (
            self.maxRecipientsPerTransaction
            and self.recipients >= self.maxRecipientsPerTransaction
        ):
            self._send(452, "4.5.3", "Too many recipients")
            return None
        if (
            self.maxRecipientsPerSession
            and self.sessionRecipients >= self.maxRecipientsPerSession
        ):
            self._send(452, "4.5.3", "Too many recipients in this session")
            return None
        return RcptTo(recipient, params, notify, orcpt)

    def do_DATA(self, argument: str, hasArgument: bool):
        if hasArgument:
            return self._syntax("Syntax: DATA")
        return DataCommand()

    def do_RSET(self, argument: str, hasArgument: bool):
        if hasArgument:
            return self._syntax("Syntax: RSET")
        return Rset()

    def do_NOOP(self, argument: str, hasArgument: bool):
        self._send(250, "2.0.0", "OK")
        return None

    def do_QUIT(self, argument: str, hasArgument: bool):
        if hasArgument:
            return self._syntax("Syntax: QUIT")
        return Quit()

    def do_VRFY(self, argument: str, hasArgument: bool):
        if not argument:
            return self._syntax("Syntax: VRFY address")
        self._send(252, "2.5.2", "Cannot VRFY user, but will accept message")
        return None

    def do_EXPN(self, argument: str, hasArgument: bool):
        self._send(502, "5.5.1", "EXPN not available")
        return None

    def do_HELP(self, argument: str, hasArgument: bool):
        self._send(
            214,
            "2.0.0",
            "Commands: %s MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP"
            % ("LHLO" if self.lmtp else "EHLO HELO",)
            + (" STARTTLS" if self.tlsAvailable else "")
            + (" AUTH" if self.authMechanisms else ""),
        )
        return None

    def do_STARTTLS(self, argument: str, hasArgument: bool):
        if hasArgument:
            return self._syntax("Syntax: STARTTLS")
        if self.tls:
            return self._sequence("TLS already active")
        if not self.tlsAvailable:
            self._send(502, "5.5.1", "STARTTLS not available")
            return None
        return StartTLS()

    def do_AUTH(self, argument: str, hasArgument: bool):
        if not self.authMechanisms:
            self._send(502, "5.5.1", "AUTH not available")
            return None
        if not self.extended:
            return self._sequence("Send EHLO first")
        if self.authenticated:
            return self._sequence("Already authenticated")
        if not self._authOffered():
            self._send(538, "5.7.11", "Encryption required for authentication")
            return None
        words = argument.split(" ")
        if not words[0] or len(words) > 2:
            return self._syntax("Syntax: AUTH mechanism [initial-response]")
        mechanism = words[0].upper()
        if mechanism not in self.authMechanisms:
            self._send(504, "5.5.4", "Unrecognized authentication type")
            return None
        return Auth(mechanism, words[1] if len(words) == 2 else None)
