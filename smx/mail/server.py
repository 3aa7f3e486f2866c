# -*- test-case-name: smx.mail.test.test_server,smx.mail.test.test_serverstates,smx.mail.test.test_serverlmtp -*-
"""
The ESMTP server protocol as a sans-I/O state machine (RFC 5321, 1870,
2034, 2920, 3207, 4954; seed §5.9, §9.1), and with C{lmtp=True} the LMTP
server protocol (RFC 2033) on the same rules: SMTPS and the Maildir
delivery server (L{smx.mail.lmtpd}) are its two users.

Bytes go in with L{ServerConnection.receiveData}; L{ServerConnection.
nextEvent} returns what the client asked for (L{Helo}, L{MailFrom},
L{RcptTo}, L{DataCommand}, L{DataChunk}, L{EndOfData}, ...) or one of the
markers L{NEED_DATA} (every complete input line is used up: time to write
the replies, which batches the replies to a pipelined group), L{PAUSED} (the
last event still waits for its reply) and L{CLOSE} (write the replies, then
close).  The caller answers an event with L{ServerConnection.accept} or
L{ServerConnection.reject}; the bytes to write are taken with
L{ServerConnection.dataToSend}.  Nothing here knows sockets, reactors or
Deferreds.

Which command is allowed in which state, and where accepting it leads, is
one table in L{smx.mail.serverstates}; the session's L{State} is
L{ServerConnection.state}.  In LMTP mode LHLO replaces HELO and EHLO
(both refused with 500), DATA without a recipient is 503, and the final
dot is answered once per accepted recipient, in RCPT order
(L{ServerConnection.acceptRecipient}, L{ServerConnection.rejectRecipient};
L{ServerConnection.accept} and L{ServerConnection.reject} answer all of
them at once).

The machine answers by itself everything that needs no policy: syntax
errors, commands out of sequence, NOOP, HELP, VRFY, EXPN, lines that are
too long or do not end in CRLF, the size and recipient limits, and too many
bad commands (421).

SMTPUTF8 (RFC 6531) is offered: a MAIL or RCPT line may be UTF-8 (any
other line with 8-bit octets is a bad command); a UTF-8 address is taken
after C{MAIL ... SMTPUTF8} and refused with C{553 5.6.7} otherwise, which
is not counted as a bad command (RFC 6531 §3.4).

DATA is scanned a whole received chunk at a time with C{bytes.find}: only
lines starting with a dot cost a Python-level step.  Only C{<CRLF>.<CRLF>}
ends the data; a bare CR or LF anywhere in it is remembered and reported
with L{EndOfData} (SMTP smuggling), as are a NUL byte (C{<CRLF><NUL>.
<CRLF>} ends the data for a next hop that drops NULs), a line longer than
L{MAX_TEXT_LINE} octets with its CRLF, and a message over the size limit:
such content is read to its end but no longer passed on.  Line lengths
are measured across received pieces (one C{rfind} per L{MAX_TEXT_LINE}
bytes), so a long line is never held.  They hold in LMTP mode too.

CHUNKING (RFC 3030) is offered, BINARYMIME is not (a BINARYMIME body
could not be relayed to a next hop without it, and it would need a
conversion smx does not have): C{BDAT n [LAST]} is allowed where DATA is;
the first one of a transaction is a L{DataCommand} with C{chunk} set (the
caller prepares the content as for DATA), the machine then reads exactly
C{n} octets, never looking for a dot (C{<CRLF>.<CRLF>} inside a chunk is
content), and answers a chunk without LAST itself (C{250 2.0.0 n octets
received}); the end of the LAST chunk is an L{EndOfData} like the final
dot, answered (LMTP: once per recipient) by the caller.  Since the body
is 7BIT or 8BITMIME, BDAT content follows the same rules as DATA content:
lines end in CRLF (a CRLF split between two chunks is one line end), no
NUL, no line over L{MAX_TEXT_LINE}, the same size limit (the refusal
comes with L{EndOfData}, after every declared octet was read).  The
octets of a refused BDAT (out of sequence, or its L{DataCommand}
rejected) are read and dropped, so they are never taken for commands; a
rejected first BDAT ends the transaction, so that pipelined later chunks
are refused (503) too.  A BDAT whose size cannot be read leaves no way to
find the next command: 501 and the session is closed.

The events and the reply format are in L{smx.mail.serverevents}, the
syntax of each command in L{smx.mail.servercommands}, the states and the
command table in L{smx.mail.serverstates}; their names are importable
from here too.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from smx.mail.servercommands import CommandsMixin
from smx.mail.servercontent import (  # noqa: F401 - also importable from here
    MAX_HEADER_SCAN,
    MAX_TEXT_LINE,
    ContentMixin,
)
from smx.mail.serverevents import (  # noqa: F401 - also importable from here
    CLOSE,
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    DataChunk,
    DataCommand,
    EndOfData,
    Event,
    Helo,
    MailFrom,
    Quit,
    RcptTo,
    Rset,
    StartTLS,
    cleanText,
    formatReply,
    softened,
)
from smx.mail.serverstates import (  # noqa: F401 - also importable from here
    COMMAND_STATES,
    LMTP_COMMANDS,
    SMTP_COMMANDS,
    Allow,
    Refuse,
    State,
    rule,
)

#: longest command line without CRLF (RFC 5321 §4.5.3.1.4: 512 with CRLF)
MAX_COMMAND_LINE = 510
#: longest AUTH line (RFC 4954 §4)
MAX_AUTH_LINE = 12288

#: the states in which command (or AUTH response) lines are read
_READING_LINES = frozenset(COMMAND_STATES + (State.REFUSED, State.AUTH))

#: replies that softbounce leaves as they are (syntax, not policy)
_SYNTAX_CODES = frozenset([500, 501, 502, 503, 504, 555])


class ServerConnection(ContentMixin, CommandsMixin):
    """
    One ESMTP server session, or with C{lmtp} one LMTP session (RFC 2033:
    LHLO; after the final dot one reply per accepted recipient, in RCPT
    order, given with L{acceptRecipient} and L{rejectRecipient}).

    @ivar hostname: the name in the greeting and the EHLO reply.
    @ivar lmtp: the session speaks LMTP.
    @ivar heloName: the name given with the last accepted HELO/EHLO/LHLO.
    @ivar extended: the client used EHLO (or LHLO).
    @ivar tls: TLS is active.
    @ivar authenticated: a client authenticated (AUTH).
    @ivar transactions: MAIL commands accepted in this session.
    @ivar recipients: recipients accepted in the current transaction.
    @ivar sessionRecipients: recipients accepted in this session.
    @ivar badCommands: bad commands seen in this session.
    @ivar problems: C{(code, dsn, text, line)} of every command line the
        machine rejected by itself, for the log; the caller empties it.
    """

    def __init__(
        self,
        hostname: str,
        *,
        maxMessageSize: int,
        maxRecipientsPerTransaction: int,
        maxRecipientsPerSession: int,
        maxTransactions: int,
        maxBadCommands: int,
        eightBitMime: bool,
        authRequiresTLS: bool,
        softbounce: bool,
        tlsAvailable: bool = False,
        authMechanisms: Tuple[str, ...] = (),
        greeting: str = "ESMTP smx",
        lmtp: bool = False,
    ) -> None:
        """
        The limits are those of an C{smtps} section
        (L{smx.mail.listener.ServerSettings}) or lmtpd's; 0 means
        unlimited.
        """
        self.hostname = hostname
        self.maxMessageSize = maxMessageSize
        self.maxRecipientsPerTransaction = maxRecipientsPerTransaction
        self.maxRecipientsPerSession = maxRecipientsPerSession
        self.maxTransactions = maxTransactions
        self.maxBadCommands = maxBadCommands
        self.eightBitMime = eightBitMime
        self.tlsAvailable = tlsAvailable
        self.authMechanisms = tuple(m.upper() for m in authMechanisms)
        self.authRequiresTLS = authRequiresTLS
        self.softbounce = softbounce
        self.greeting = greeting
        self.lmtp = lmtp
        self.heloName = None  # type: Optional[str]
        self.extended = False
        self.tls = False
        self.authenticated = False
        self.transactions = 0
        self.recipients = 0
        self.sessionRecipients = 0
        self.badCommands = 0
        self._commands = LMTP_COMMANDS if lmtp else SMTP_COMMANDS
        self._state = State.CONNECTED
        # the state accepting the pending event leads to
        self._next = State.CONNECTED
        self._buffer = b""
        self._discardLine = False
        self._out = []  # type: List[bytes]
        self._pending = None  # type: Optional[Event]
        self._currentLine = None  # type: Optional[bytes]
        self.problems = []  # type: List[Tuple[int, Optional[str], str, bytes]]
        self._ready = []  # type: List[Event]
        # the accepted recipients of the transaction, and (LMTP) those
        # whose reply to the final dot is still due
        self._accepted = []  # type: List[str]
        self._due = []  # type: List[str]
        # BDAT: octets of the current chunk still to read, whether it is
        # the LAST one, whether they are dropped (and the state after them)
        self._chunkLeft = 0
        self._chunkSize = 0
        self._chunkLast = False
        self._chunkSkip = False
        self._afterSkip = State.READY
        self._resetData()

    # -- what the session is doing ------------------------------------------

    @property
    def state(self) -> State:
        """Where the session is (L{smx.mail.serverstates.State})."""
        return self._state

    @property
    def closed(self) -> bool:
        """The session is over: write what is left and close."""
        return self._state is State.CLOSED

    @property
    def awaitingReply(self) -> bool:
        """An event waits for L{accept}, L{reject} or L{challenge}."""
        return self._pending is not None

    @property
    def awaitingEndOfData(self) -> bool:
        """
        The final dot (or BDAT LAST) waits for its reply: the message is
        being checked and committed (L{smx.mail.drain}).
        """
        return isinstance(self._pending, EndOfData)

    def discardInput(self) -> None:
        """
        Forget the input received and not yet read: the server stops and
        answers nothing sent after the final dot (L{smx.mail.drain}).
        """
        self._buffer = b""

    @property
    def receivingData(self) -> bool:
        """
        The message content is being read (between 354 and the dot, or
        from the first BDAT to the end of the LAST chunk).
        """
        return self._state in (State.DATA, State.BDAT) or (
            self._state is State.CHUNK and not self._chunkSkip
        )

    @property
    def acceptedRecipients(self) -> Tuple[str, ...]:
        """The recipients accepted in the current transaction, in order."""
        return tuple(self._accepted)

    @property
    def unansweredRecipients(self) -> Tuple[str, ...]:
        """
        LMTP: the recipients still due a reply to the final dot, in RCPT
        order (the first is answered by the next L{acceptRecipient} or
        L{rejectRecipient}); empty at any other time.
        """
        return tuple(self._due)

    # -- output ---------------------------------------------------------

    def dataToSend(self) -> bytes:
        """
        @return: every byte of reply produced so far (and forget them).
        """
        out = b"".join(self._out)
        self._out = []
        return out

    def _send(self, code: int, dsn: Optional[str], text: str) -> None:
        self._out.append(formatReply(code, dsn, text))
        if code >= 400 and self._currentLine is not None:
            self.problems.append((code, dsn, text, self._currentLine))

    def _policy(self, code: int, dsn: str, text: str) -> None:
        if self.softbounce and code not in _SYNTAX_CODES:
            code, dsn = softened(code, dsn)
        self._send(code, dsn, text)

    # -- session start and end --------------------------------------------

    def greet(self) -> None:
        """Write the 220 greeting and start reading commands."""
        self._send(220, None, "%s %s" % (self.hostname, self.greeting))
        self._state = State.GREETED

    def refuse(self, code: int, dsn: str, text: str) -> None:
        """
        Refuse the session: a 4xx closes it with 421, a 5xx greets with 554
        and then answers 503 to everything but QUIT (RFC 5321 §3.1).
        """
        if self.softbounce:
            code, dsn = softened(code, dsn)
        if code < 500:
            self._send(421, dsn, "%s %s" % (self.hostname, text))
            self._state = State.CLOSED
        else:
            self._send(554, dsn, "%s %s" % (self.hostname, text))
            self._state = State.REFUSED

    def timeout(self) -> None:
        """The client was silent for too long: 421 4.4.2 and close."""
        self._send(421, "4.4.2", "%s Error: timeout exceeded" % (self.hostname,))
        self._state = State.CLOSED

    def close(self) -> None:
        """Close after the replies written so far (a pmilter's SSD)."""
        self._state = State.CLOSED

    def shutdown(self) -> None:
        """The server stops: 421 4.3.2 and close."""
        self._send(421, "4.3.2", "%s Service shutting down" % (self.hostname,))
        self._state = State.CLOSED

    # -- input ----------------------------------------------------------

    def receiveData(self, data: bytes) -> None:
        """Bytes from the client."""
        if self._state is State.TLS or self._state is State.CLOSED:
            return
        if self._discardLine:
            i = data.find(b"\n")
            if i < 0:
                return
            self._discardLine = False
            data = data[i + 1 :]
        self._buffer = self._buffer + data if self._buffer else data

    def nextEvent(self):
        """
        @return: the next L{Event}, or L{NEED_DATA}, L{PAUSED}, L{CLOSE}.
        """
        if self._ready:
            event = self._ready.pop(0)
            if event.needsReply:
                self._pending = event
            return event
        if self._state is State.CLOSED:
            return CLOSE
        if self._pending is not None:
            return PAUSED
        while True:
            if self._state is State.DATA:
                event = self._dataEvent()
            elif self._state is State.CHUNK:
                event = self._chunkEvent()
            elif self._state in _READING_LINES:
                try:
                    event = self._command()
                finally:
                    # only a command's own problems name its line
                    self._currentLine = None
            else:
                return NEED_DATA
            if event is None:
                continue
            if event is NEED_DATA or event is CLOSE:
                return event
            if event.needsReply:
                self._pending = event
            return event

    # -- replies to events ------------------------------------------------

    def accept(self, text: Optional[str] = None) -> None:
        """
        Answer the pending event positively, with the standard reply (or
        C{text} in place of its human part).  In LMTP, accepting
        L{EndOfData} answers every recipient still due a reply with 250.
        """
        if self.lmtp and isinstance(self._pending, EndOfData):
            while self._due:
                self.acceptRecipient(text)
            return
        event = self._takePending()
        if isinstance(event, Helo):
            self._reset()
            self.heloName = event.name
            self.extended = event.extended
            if event.extended:
                self._send(250, None, "\n".join(self._ehloLines(text)))
            else:
                self._send(250, None, text or self.hostname)
        elif isinstance(event, MailFrom):
            self._reset()
            self.transactions += 1
            self._send(250, "2.1.0", text or "<%s>... Sender ok" % (event.sender,))
        elif isinstance(event, RcptTo):
            self.recipients += 1
            self.sessionRecipients += 1
            self._accepted.append(event.recipient)
            self._send(
                250, "2.1.5", text or "<%s>... Recipient ok" % (event.recipient,)
            )
        elif isinstance(event, DataCommand):
            self._resetData()
            if event.chunk is not None:
                self._startChunk(event.chunk, event.last)
            else:
                self._send(
                    354, None, text or 'Enter mail, end with "." on a line by itself'
                )
        elif isinstance(event, EndOfData):
            self._send(250, "2.0.0", text or "Message accepted for delivery")
            self._reset()
        elif isinstance(event, Rset):
            self._reset()
            self._send(250, "2.0.0", text or "Reset state")
        elif isinstance(event, Quit):
            self._send(221, "2.0.0", text or "%s closing connection" % self.hostname)
        elif isinstance(event, StartTLS):
            self._send(220, "2.0.0", text or "Ready to start TLS")
            # CVE-2011-0411: nothing sent before the handshake is a command
            self._buffer = b""
        elif isinstance(event, (Auth, AuthResponse)):
            self._send(235, "2.7.0", text or "Authentication successful")
            self.authenticated = True
        else:  # pragma: no cover
            raise RuntimeError("accept: no reply for %r" % (event,))
        self._state = self._next

    def reject(self, code: int, dsn: str, text: str) -> None:
        """
        Answer the pending event negatively (softbounce applied).  A
        rejected L{EndOfData} ends the transaction (in LMTP with this reply
        for every recipient still due one); a rejected L{StartTLS} or AUTH
        leaves the session as it was.
        """
        if self.lmtp and isinstance(self._pending, EndOfData):
            while self._due:
                self.rejectRecipient(code, dsn, text)
            return
        event = self._takePending()
        self._policy(code, dsn, text)
        if isinstance(event, EndOfData):
            self._reset()
            self._state = State.READY
        elif isinstance(event, DataCommand) and event.chunk is not None:
            # the transaction failed (RFC 3030 §2): pipelined chunks get 503
            self._reset()
            self._state = State.READY
            self._skipChunk(event.chunk)
            if code == 421:
                self._state = State.CLOSED
        elif isinstance(event, Quit) or code == 421:
            self._state = State.CLOSED

    def acceptRecipient(self, text: Optional[str] = None) -> None:
        """
        LMTP: the message is delivered to the first recipient of
        L{unansweredRecipients}: 250 2.0.0 (C{text} in place of the human
        part).  The last reply ends the transaction.
        """
        address = self._dueRecipient()
        self._send(250, "2.0.0", text or "<%s>... Message delivered" % (address,))
        self._answeredRecipient()

    def rejectRecipient(self, code: int, dsn: str, text: str) -> None:
        """
        LMTP: the message is not delivered to the first recipient of
        L{unansweredRecipients} (softbounce applied).  The last reply ends
        the transaction.
        """
        self._dueRecipient()
        self._policy(code, dsn, text)
        self._answeredRecipient()

    def _dueRecipient(self) -> str:
        if not self._due or not isinstance(self._pending, EndOfData):
            raise RuntimeError("no LMTP recipient waits for a reply")
        return self._due.pop(0)

    def _answeredRecipient(self) -> None:
        if not self._due:
            self._takePending()
            self._reset()
            self._state = State.READY

    def challenge(self, text: str) -> None:
        """
        Answer a pending L{Auth} or L{AuthResponse} with C{334 text}; the
        next line is an L{AuthResponse}.
        """
        event = self._takePending()
        if not isinstance(event, (Auth, AuthResponse)):  # pragma: no cover
            raise RuntimeError("challenge: %r is no AUTH" % (event,))
        self._send(334, None, text)
        self._state = State.AUTH

    def tlsStarted(self) -> None:
        """
        The TLS handshake is done: forget everything said before it (RFC
        3207 §4.2) and read commands again.
        """
        self._reset()
        self.heloName = None
        self.extended = False
        self.authenticated = False
        self.tls = True
        self._buffer = b""
        self._state = State.GREETED

    def _takePending(self) -> Event:
        event = self._pending
        if event is None:  # pragma: no cover
            raise RuntimeError("no event waits for a reply")
        self._pending = None
        return event

    def _reset(self) -> None:
        self.recipients = 0
        self._accepted = []
        self._due = []

    # -- commands -------------------------------------------------------

    def _command(self):
        buf = self._buffer
        self._currentLine = buf[:200]
        i = buf.find(b"\n")
        auth = self._state is State.AUTH
        limit = MAX_AUTH_LINE if auth else MAX_COMMAND_LINE
        if i < 0:
            if len(buf) > limit + 1 and not (
                limit == MAX_COMMAND_LINE
                and buf[:5].upper() == b"AUTH "
                and len(buf) <= MAX_AUTH_LINE + 1
            ):
                self._buffer = b""
                self._discardLine = True
                return self._bad(500, "5.5.2", "Line too long")
            return NEED_DATA
        line = buf[:i]
        self._buffer = buf[i + 1 :]
        self._currentLine = line[:200]
        if not line.endswith(b"\r"):
            return self._bad(500, "5.5.2", "Syntax error: lines must end in CRLF")
        line = line[:-1]
        self._currentLine = line[:200]
        if len(line) > limit and not (
            line[:5].upper() == b"AUTH " and len(line) <= MAX_AUTH_LINE
        ):
            return self._bad(500, "5.5.2", "Line too long")
        if b"\r" in line or b"\0" in line:
            return self._bad(500, "5.5.2", "Syntax error: bare CR or NUL")
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            # UTF-8 addresses (RFC 6531): MAIL and RCPT say whether SMTPUTF8
            # lets them in
            utf8 = None if auth else _utf8Command(line)
            if utf8 is None:
                return self._bad(500, "5.5.2", "Syntax error: 8-bit characters")
            text = utf8
        if auth:
            self._state = self._next = State.READY
            if text == "*":
                self._send(501, "5.7.0", "Authentication aborted")
                return None
            return AuthResponse(text)
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        found = rule(self._commands, self._state, verb)
        if found is None:
            return self._bad(500, "5.5.1", "Command unrecognized")
        if verb == "BDAT":
            return self._bdat(argument, found)
        if isinstance(found, Refuse):
            self._send(found.code, found.dsn, found.text)
            return None
        event = getattr(self, "do_" + verb)(argument, _ != "")
        self._next = found.next
        return event

    def _bad(self, code: int, dsn: str, text: str):
        if self._state is State.AUTH:
            # a broken SASL response ends the exchange
            self._state = State.READY
        self.badCommands += 1
        if self.maxBadCommands and self.badCommands > self.maxBadCommands:
            self._send(
                421,
                "4.7.0",
                "%s Too many bad commands; closing connection" % (self.hostname,),
            )
            self._state = State.CLOSED
            return CLOSE
        self._send(code, dsn, text)
        return None


def _utf8Command(line: bytes) -> Optional[str]:
    """
    A MAIL or RCPT line with 8-bit octets as text, if it is UTF-8;
    C{None} for any other 8-bit line.
    """
    if line[:5].upper() not in (b"MAIL ", b"RCPT "):
        return None
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None
