# -*- test-case-name: smx.mail.test.test_client -*-
"""
The ESMTP and LMTP client protocol of SMTPC as a sans-I/O state machine.

Replies go in (L{ReplyParser} turns bytes into L{Reply} objects,
L{ClientMachine.replyReceived} takes them), events come out: L{Send}
(bytes to write), L{StartTLS}, L{SessionReady}, L{SessionFailed},
L{SendBody} and L{TransactionDone}.  Nothing here knows about sockets,
reactors or time; L{smx.mail.smtpc} is the Twisted adapter.

What the machine does (RFC 5321, RFC 1869, RFC 2920, RFC 3207, RFC 6152,
RFC 1870, RFC 2033):

  - EHLO (LHLO for LMTP), and HELO when the server refuses EHLO with 5xx;
  - STARTTLS whenever the server offers it and the caller can do TLS, then
    EHLO again (a refused STARTTLS continues in clear text; a failed
    handshake is the caller's connection failure); when the caller's TLS
    policy requires TLS (C{requireTLS}), a server that does not offer
    STARTTLS, refuses it or refuses EHLO ends the session before any
    mail command with L{SessionFailed} C{where="starttls"};
  - REQUIRETLS (RFC 8689): a transaction that requires it goes with
    C{MAIL ... REQUIRETLS}, and never to a server that does not offer
    it: every recipient fails with C{550 5.7.30} (L{REQUIRETLS_REQUIRED})
    before MAIL;
  - one transaction with many recipients: C{MAIL FROM} with C{SIZE=} when
    offered and C{BODY=8BITMIME} for an 8-bit body; with PIPELINING,
    C{MAIL}, every C{RCPT} and C{DATA} in one write;
  - a message that needs SMTPUTF8 (RFC 6531) goes with C{MAIL ...
    SMTPUTF8}, and never to a server that does not offer it: every
    recipient fails with C{553 5.6.7} (L{UTF8_REQUIRED}) before MAIL;
  - an 8-bit body is never sent to a server that does not offer 8BITMIME
    (RFC 6152 section 3): every recipient fails with C{554 5.6.3}
    (L{CONVERSION_REQUIRED}, RFC 3463) before MAIL is sent (the caller
    converts it first: L{smx.mail.routeloop}, L{smx.mail.downgrade});
  - C{452} to RCPT (and C{552 5.5.3}, RFC 5321 4.5.3.1.10) is "too many
    recipients" (L{tooManyRecipients}): a temporary failure the caller
    sends again in a new transaction;
  - a per-recipient result; for LMTP one reply per accepted recipient after
    the final dot;
  - a connection lost, a timeout or a garbled reply in the middle of a
    transaction makes every recipient without a definitive answer a
    temporary failure: nothing is reported delivered that the server did
    not accept.

CHUNKING (RFC 3030): when the server offers it, the content goes with
C{BDAT} instead of DATA.  After the replies to MAIL and RCPT (all in one
write with PIPELINING) and with at least one recipient accepted, the
machine says L{SendBody}; the caller sends the content in chunks with
L{ClientMachine.sendChunk} (each C{BDAT n} followed by its n octets, the
last C{BDAT n LAST}), all at once with PIPELINING, else one after each
reply (the machine says L{SendBody} again after every chunk's 250).  The
reply to the LAST chunk is the reply to the final dot (LMTP: one per
recipient).  A failed chunk fails the transaction: the caller stops
sending (L{ClientMachine.chunkFailed}) and calls L{ClientMachine.
bodySent}; replies to chunks already written are read and ignored.

L{BodyEncoder} turns message content into the DATA stream: every lone LF
and lone CR becomes CRLF, lines starting with a dot get another one, and
the stream ends with CRLF.CRLF; it works on large chunks with C{bytes}
methods only.  With C{dotStuffing=False} it makes BDAT content: the same
line ends, no dot added, no final dot.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

from smx.mail.clientevents import (  # noqa: F401 - re-exported
    ClientEvent,
    SendBody,
    Send,
    SessionFailed,
    SessionReady,
    StartTLS,
    TransactionDone,
)
from smx.mail.dsnparams import encodeOrcpt, encodeXtext
from smx.values import ResultData
from smx.mail.clientwire import (  # noqa: F401 - re-exported
    MAX_REPLY_LINE,
    MAX_REPLY_LINES,
    BodyEncoder,
    ProtocolError,
    Reply,
    ReplyParser,
    encodeBody,
)

#: the result of every recipient when an 8-bit body would go to a server
#: without 8BITMIME (RFC 6152 section 3, RFC 3463 5.6.3); SMTPC converts
#: such content first (L{smx.mail.downgrade}), so this is the last guard
CONVERSION_REQUIRED = (
    "554 5.6.3 Conversion required but not supported: the message has "
    "8-bit data and the server does not offer 8BITMIME"
)

#: the result of every recipient when a message that needs SMTPUTF8 (RFC
#: 6531: non-ASCII addresses or headers) would go to a server that does
#: not offer it; smx does not downgrade (RFC 6531 §3.2)
UTF8_REQUIRED = (
    "553 5.6.7 SMTPUTF8 required but not supported: the message has "
    "non-ASCII addresses or headers and the server does not offer SMTPUTF8"
)

#: the result of every recipient of a REQUIRETLS message (RFC 8689) when
#: the server does not offer REQUIRETLS
REQUIRETLS_REQUIRED = (
    "550 5.7.30 REQUIRETLS support required: the message was sent with "
    "REQUIRETLS and the server does not offer it"
)

_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


def enhancedStatus(text: str) -> str:
    """
    @param text: a reply as one line (C{"452 4.5.3 too many"}).
    @return: its enhanced status code (RFC 3463, C{"4.5.3"}), or C{""}.
    """
    words = text.split(None, 2)
    if len(words) >= 2 and _ENHANCED.match(words[1]):
        return words[1]
    return ""


def tooManyRecipients(result: ResultData) -> bool:
    """
    Was a recipient refused because the transaction had too many (RFC 5321
    4.5.3.1.10)?  That is C{452} to RCPT with the enhanced status C{4.5.3}
    or none (C{452 4.2.2} is a full mailbox, C{452 4.3.1} a full disk),
    and C{552 5.5.3}, the code RFC 821 wrongly gave.

    @param result: a per-recipient result of L{TransactionDone}.
    """
    if result.get("where") != "rcpt":
        return False
    code = result.get("code")
    status = enhancedStatus(result.get("reply") or "")
    if code == 452:
        return status in ("", "4.5.3")
    return code == 552 and status == "5.5.3"


GREETING = "greeting"
EHLO = "ehlo"
HELO = "helo"
STARTTLS = "starttls"
HANDSHAKE = "handshake"
READY = "ready"
RSET = "rset"
TRANSACTION = "transaction"
BODY = "body"
DOT = "dot"
CLOSED = "closed"


class ClientMachine:
    """
    One ESMTP or LMTP client session.

    @ivar state: the current state (C{greeting}, C{ehlo}, C{helo},
        C{starttls}, C{handshake}, C{ready}, C{rset}, C{transaction},
        C{body}, C{dot}, C{closed}).
    @ivar extensions: the server's EHLO keywords (upper case) -> parameters.
    @ivar tls: is the session protected by TLS?
    @ivar greeting: the server's greeting L{Reply}.
    @ivar chunking: the current transaction sends its content with BDAT.
    @ivar chunkFailed: a BDAT chunk was refused: send no more.
    """

    def __init__(
        self,
        heloName: str,
        lmtp: bool = False,
        canTLS: bool = False,
        requireTLS: bool = False,
    ):
        """
        @param heloName: the name to greet the server with.
        @param lmtp: speak LMTP (LHLO; a reply per recipient after the dot).
        @param canTLS: can the caller start TLS (then STARTTLS is used
            whenever offered)?
        @param requireTLS: the session must not carry mail without TLS
            (the caller's TLS policy): no STARTTLS is a L{SessionFailed}.
        """
        self.heloName = heloName
        self.lmtp = lmtp
        self.canTLS = canTLS
        self.requireTLS = requireTLS
        self.state = GREETING
        self.extensions = {}  # type: Dict[str, str]
        self.tls = False
        self.greeting = None  # type: Optional[Reply]
        self._expected = deque()  # type: Deque[Tuple[str, int]]
        self._reset()

    def _reset(self) -> None:
        self._recipients = []  # type: List[str]
        self._results = []  # type: List[Optional[ResultData]]
        self._mailReply = None  # type: Optional[Reply]
        self._rcptReplies = []  # type: List[Optional[Reply]]
        self._accepted = []  # type: List[int]
        self._mailFailed = False
        self._pipelined = False
        self._nextRcpt = 0
        self._dataSent = False
        self._emptyData = False
        self._dotReplied = False
        self.chunking = False
        self.chunkFailed = False
        self._lastChunkSent = False
        #: the DSN parameters went to the server (it offers DSN)
        self._dsnPassed = False
        self._rcptParams = []  # type: List[bytes]

    # what the caller tells us ---------------------------------------------

    def replyReceived(self, reply: Reply) -> List[ClientEvent]:
        """
        Handle one reply from the server.

        @return: a C{list} of events.
        """
        if self.state == CLOSED:
            return []
        if reply.code == 421 and self.state != GREETING:
            # the server is closing the session (RFC 5321 3.8)
            return self.connectionFailed(reply.text, reply.code)
        handler = getattr(self, "_reply_" + self.state)
        return handler(reply)

    def tlsStarted(self) -> List[ClientEvent]:
        """
        The TLS handshake is complete: greet again (RFC 3207 4.2).
        """
        self.tls = True
        self.extensions = {}
        return self._sendHello()

    def startTransaction(
        self,
        sender: str,
        recipients: Sequence[str],
        size: int = 0,
        bodyType: str = "7BIT",
        smtputf8: bool = False,
        dsn: Optional[Tuple[Any, Any, Sequence[Tuple[Any, Any]]]] = None,
        requireTLS: bool = False,
    ) -> List[ClientEvent]:
        """
        Start a mail transaction; only in state C{ready}.

        @param sender: the reverse path without angle brackets.
        @param recipients: the forward paths without angle brackets.
        @param size: the content size in bytes (for C{SIZE=}).
        @param bodyType: C{"7BIT"} or C{"8BITMIME"}: does the content
            have 8-bit octets (or was it declared 8-bit)?  An 8-bit body
            to a server without 8BITMIME fails at once with
            L{CONVERSION_REQUIRED}.
        @param smtputf8: the message needs SMTPUTF8 (RFC 6531): C{MAIL}
            gets the parameter, and a server without the extension fails
            every recipient at once with L{UTF8_REQUIRED}.  Non-ASCII
            addresses need it whatever this says.
        @param dsn: the DSN parameters (RFC 3461): C{(ret, envid,
            [(notify, orcpt) per recipient])}, values as stored (decoded,
            C{None} when not given).  They go to an ESMTP server that
            offers DSN; then every result says C{dsnPassed}: that server
            reports success, not smx.
        @param requireTLS: the message was received with REQUIRETLS (RFC
            8689): C{MAIL} gets the parameter, and a server without the
            extension (or a session without TLS) fails every recipient at
            once with L{REQUIRETLS_REQUIRED}.
        @return: a C{list} of events.
        """
        if self.state != READY:
            raise RuntimeError("startTransaction in state %s" % (self.state,))
        if not recipients:
            raise ValueError("a transaction needs recipients")
        self._reset()
        self._recipients = list(recipients)
        self._results = [None] * len(recipients)
        self._rcptReplies = [None] * len(recipients)
        self._rcptParams = [b""] * len(recipients)
        self.state = TRANSACTION
        limit = self.extensions.get("SIZE", "")
        if limit.isascii() and limit.isdigit() and 0 < int(limit) < size:
            text = "552 5.3.4 message size %d exceeds the server's limit %s" % (
                size,
                limit,
            )
            for i in range(len(recipients)):
                self._results[i] = _result("perm", 552, text, "mail")
            return self._done(reusable=True)
        eightBit = bodyType.upper() == "8BITMIME"
        if eightBit and "8BITMIME" not in self.extensions:
            for i in range(len(recipients)):
                self._results[i] = _result("perm", 554, CONVERSION_REQUIRED, "mail")
            return self._done(reusable=True)
        utf8 = smtputf8 or not all(a.isascii() for a in [sender, *recipients])
        if utf8 and "SMTPUTF8" not in self.extensions:
            for i in range(len(recipients)):
                self._results[i] = _result("perm", 553, UTF8_REQUIRED, "mail")
            return self._done(reusable=True)
        if requireTLS and (not self.tls or "REQUIRETLS" not in self.extensions):
            for i in range(len(recipients)):
                self._results[i] = _result("perm", 550, REQUIRETLS_REQUIRED, "mail")
            return self._done(reusable=True)
        mail = b"MAIL FROM:<" + sender.encode("utf-8") + b">"
        if "SIZE" in self.extensions:
            mail += b" SIZE=%d" % (size,)
        if eightBit:
            mail += b" BODY=8BITMIME"
        if utf8:
            mail += b" SMTPUTF8"
        if requireTLS:
            mail += b" REQUIRETLS"
        if dsn is not None and "DSN" in self.extensions and not self.lmtp:
            ret, envid, perRcpt = dsn
            self._dsnPassed = True
            if ret:
                mail += b" RET=" + ret.encode("ascii")
            if envid:
                mail += b" ENVID=" + encodeXtext(envid).encode("ascii")
            for i, (notify, orcpt) in enumerate(list(perRcpt)[: len(recipients)]):
                params = b""
                if notify:
                    params += b" NOTIFY=" + notify.encode("ascii")
                if orcpt:
                    params += b" ORCPT=" + encodeOrcpt(orcpt).encode("ascii")
                self._rcptParams[i] = params
        self.chunking = "CHUNKING" in self.extensions
        if "PIPELINING" in self.extensions:
            self._pipelined = True
            commands = [mail]
            self._expected.append(("mail", 0))
            for i, rcpt in enumerate(self._recipients):
                commands.append(
                    b"RCPT TO:<" + rcpt.encode("utf-8") + b">" + self._rcptParams[i]
                )
                self._expected.append(("rcpt", i))
            if not self.chunking:
                commands.append(b"DATA")
                self._expected.append(("data", 0))
                self._dataSent = True
            return [Send(b"\r\n".join(commands) + b"\r\n")]
        self._expected.append(("mail", 0))
        return [Send(mail + b"\r\n")]

    def bodySent(self) -> List[ClientEvent]:
        """
        The encoded content including the final dot was written.
        """
        if self.state != BODY:
            raise RuntimeError("bodySent in state %s" % (self.state,))
        self.state = DOT
        if self.chunking:
            # no LAST chunk: a chunk failed, its transaction is over
            if not self.chunkFailed:
                raise RuntimeError("bodySent before the LAST chunk")
            return self._chunksAnswered()
        if self.lmtp:
            for i in self._accepted:
                self._expected.append(("dot", i))
        else:
            self._expected.append(("dot", -1))
        return []

    def sendChunk(self, data: bytes, last: bool) -> List[ClientEvent]:
        """
        Send the next chunk of the content (BDAT, RFC 3030), encoded (see
        L{BodyEncoder} with C{dotStuffing=False}); only after L{SendBody}
        in a L{chunking} transaction, and not once L{chunkFailed}.

        @param last: this is the last chunk (C{BDAT n LAST}).
        @return: a C{list} of events.
        """
        if self.state != BODY or not self.chunking or self.chunkFailed:
            raise RuntimeError("sendChunk in state %s" % (self.state,))
        if last:
            self.state = DOT
            self._lastChunkSent = True
            if self.lmtp:
                for i in self._accepted:
                    self._expected.append(("dot", i))
            else:
                self._expected.append(("dot", -1))
            command = b"BDAT %d LAST\r\n" % (len(data),)
        else:
            self._expected.append(("bdat", 0))
            command = b"BDAT %d\r\n" % (len(data),)
        return [Send(command + data)]

    def reset(self) -> List[ClientEvent]:
        """
        Send RSET (before a cached session carries a new transaction); a
        L{SessionReady} or L{SessionFailed} follows.
        """
        if self.state != READY:
            raise RuntimeError("reset in state %s" % (self.state,))
        self.state = RSET
        return [Send(b"RSET\r\n")]

    def quit(self) -> List[ClientEvent]:
        """
        End the session politely.
        """
        if self.state == CLOSED:
            return []
        self.state = CLOSED
        return [Send(b"QUIT\r\n")]

    def connectionFailed(self, why: str, code: int = 0) -> List[ClientEvent]:
        """
        The connection was lost, timed out, or the server sent garbage.

        @param why: a description (or the text of a 421 reply).
        @param code: the reply code, if a reply ended the session.
        @return: a L{SessionFailed} before a transaction, a
            L{TransactionDone} (every recipient without a definitive
            answer failed temporarily) during one, else nothing.
        """
        state = self.state
        where = self._where(state) if state in (TRANSACTION, BODY, DOT) else ""
        self.state = CLOSED
        self._expected.clear()
        if state in (GREETING, EHLO, HELO, STARTTLS, HANDSHAKE, RSET):
            where = "greeting" if state == GREETING else "ehlo"
            return [SessionFailed(where, code, why)]
        if state in (TRANSACTION, BODY, DOT):
            text = why if code else "451 4.4.2 %s" % (why,)
            for i, result in enumerate(self._results):
                if result is None or (result["status"] == "ok" and state != DOT):
                    self._results[i] = _result("temp", code or 451, text, where)
                elif result["status"] == "ok" and state == DOT:
                    if result["where"] != "final_dot":
                        self._results[i] = _result("temp", code or 451, text, where)
            return self._done(reusable=False)
        return []

    # replies by state -----------------------------------------------------

    def _reply_greeting(self, reply: Reply) -> List[ClientEvent]:
        self.greeting = reply
        if reply.code != 220:
            self.state = CLOSED
            return [
                SessionFailed("greeting", reply.code, reply.text),
                Send(b"QUIT\r\n"),
            ]
        return self._sendHello()

    def _sendHello(self) -> List[ClientEvent]:
        self.state = EHLO
        verb = b"LHLO " if self.lmtp else b"EHLO "
        return [Send(verb + self.heloName.encode("ascii", "replace") + b"\r\n")]

    def _reply_ehlo(self, reply: Reply) -> List[ClientEvent]:
        if reply.code == 250:
            self.extensions = _parseExtensions(reply.lines[1:])
            if (
                self.canTLS
                and not self.tls
                and not self.lmtp
                and "STARTTLS" in self.extensions
            ):
                self.state = STARTTLS
                return [Send(b"STARTTLS\r\n")]
            if self.requireTLS and not self.tls and not self.lmtp:
                self.state = CLOSED
                return [
                    SessionFailed("starttls", 0, "STARTTLS not offered"),
                    Send(b"QUIT\r\n"),
                ]
            self.state = READY
            return [SessionReady(self.extensions)]
        if self.requireTLS and not self.tls and not self.lmtp:
            self.state = CLOSED
            return [
                SessionFailed(
                    "starttls", 0, "EHLO refused, so no STARTTLS: %s" % (reply.text,)
                ),
                Send(b"QUIT\r\n"),
            ]
        if 500 <= reply.code < 600 and not self.lmtp and not self.tls:
            self.state = HELO
            return [Send(b"HELO " + self.heloName.encode("ascii", "replace") + b"\r\n")]
        self.state = CLOSED
        return [SessionFailed("ehlo", reply.code, reply.text), Send(b"QUIT\r\n")]

    def _reply_helo(self, reply: Reply) -> List[ClientEvent]:
        if reply.code == 250:
            self.extensions = {}
            self.state = READY
            return [SessionReady(self.extensions)]
        self.state = CLOSED
        return [SessionFailed("ehlo", reply.code, reply.text), Send(b"QUIT\r\n")]

    def _reply_starttls(self, reply: Reply) -> List[ClientEvent]:
        if reply.code == 220:
            self.state = HANDSHAKE
            return [StartTLS()]
        if self.requireTLS:
            self.state = CLOSED
            return [
                SessionFailed("starttls", 0, "STARTTLS refused: %s" % (reply.text,)),
                Send(b"QUIT\r\n"),
            ]
        # refused: go on in clear text with what the server offered
        self.state = READY
        return [SessionReady(self.extensions)]

    def _reply_handshake(self, reply: Reply) -> List[ClientEvent]:
        # nothing may arrive before the handshake is complete (it would be
        # data injected in clear text before TLS, CVE-2011-0411 class)
        return self.connectionFailed("reply before the TLS handshake")

    def _reply_ready(self, reply: Reply) -> List[ClientEvent]:
        return self.connectionFailed("unexpected reply %s" % (reply.text,))

    def _reply_rset(self, reply: Reply) -> List[ClientEvent]:
        if reply.code == 250:
            self.state = READY
            return [SessionReady(self.extensions)]
        self.state = CLOSED
        return [SessionFailed("ehlo", reply.code, reply.text), Send(b"QUIT\r\n")]

    def _reply_transaction(self, reply: Reply) -> List[ClientEvent]:
        if not self._expected:
            return self.connectionFailed("unexpected reply %s" % (reply.text,))
        kind, index = self._expected.popleft()
        if kind == "mail":
            self._mailReply = reply
            if reply.code // 100 != 2:
                self._mailFailed = True
                for i in range(len(self._recipients)):
                    self._results[i] = _result(
                        reply.status, reply.code, reply.text, "mail"
                    )
                if not self._pipelined:
                    return self._done(reusable=True)
                return []
            if not self._pipelined:
                return self._sendNextRcpt()
            return []
        if kind == "rcpt":
            self._rcptReplies[index] = reply
            if self._mailFailed:
                if self.chunking and not self._expected:
                    # no DATA whose reply would end the transaction
                    return self._done(reusable=True)
                return []
            if reply.code // 100 == 2:
                self._accepted.append(index)
                self._results[index] = _result("ok", reply.code, reply.text, "rcpt")
            else:
                result = _result(reply.status, reply.code, reply.text, "rcpt")
                if tooManyRecipients(result):
                    # 552 5.5.3 too: temporary (RFC 5321 4.5.3.1.10)
                    result["status"] = "temp"
                self._results[index] = result
            if not self._pipelined:
                return self._sendNextRcpt()
            if self.chunking and not self._expected:
                return self._startChunks()
            return []
        if kind == "data":
            if reply.code == 354:
                if self._mailFailed or not self._accepted:
                    # the server took DATA without a recipient: end it
                    self._emptyData = True
                    self.state = DOT
                    self._expected.append(("dot", -2))
                    return [Send(b".\r\n")]
                self.state = BODY
                return [SendBody()]
            if not self._mailFailed:
                for i in self._accepted:
                    self._results[i] = _result(
                        reply.status, reply.code, reply.text, "data"
                    )
            return self._done(reusable=True)
        return self.connectionFailed("unexpected reply %s" % (reply.text,))

    def _sendNextRcpt(self) -> List[ClientEvent]:
        if self._nextRcpt < len(self._recipients):
            i = self._nextRcpt
            self._nextRcpt += 1
            self._expected.append(("rcpt", i))
            rcpt = self._recipients[i].encode("utf-8")
            return [Send(b"RCPT TO:<" + rcpt + b">" + self._rcptParams[i] + b"\r\n")]
        if not self._accepted:
            return self._done(reusable=True)
        if self.chunking:
            return self._startChunks()
        self._expected.append(("data", 0))
        self._dataSent = True
        return [Send(b"DATA\r\n")]

    def _startChunks(self) -> List[ClientEvent]:
        if self._mailFailed or not self._accepted:
            return self._done(reusable=True)
        self._dataSent = True
        self.state = BODY
        return [SendBody()]

    def _chunkReply(self, reply: Reply) -> List[ClientEvent]:
        """The reply to a chunk without LAST."""
        if not self._expected or self._expected[0][0] != "bdat":
            return self.connectionFailed("unexpected reply %s" % (reply.text,))
        self._expected.popleft()
        if self.chunkFailed:
            return self._chunksAnswered()
        if reply.code // 100 != 2:
            # RFC 3030 §2: the transaction failed, no more BDAT
            self.chunkFailed = True
            for i in self._accepted:
                self._results[i] = _result(reply.status, reply.code, reply.text, "data")
            if self.state == BODY and not self._pipelined:
                # the caller waits for the word to send the next chunk
                self.state = DOT
            return self._chunksAnswered()
        if self.state == BODY and not self._pipelined:
            return [SendBody()]
        return []

    def _chunksAnswered(self) -> List[ClientEvent]:
        # after a failed chunk: done once every chunk written is answered
        if self.state == DOT and not self._expected:
            return self._done(reusable=False)
        return []

    def _reply_body(self, reply: Reply) -> List[ClientEvent]:
        if self.chunking:
            return self._chunkReply(reply)
        return self.connectionFailed(
            "reply while sending the message: %s" % (reply.text,)
        )

    def _reply_dot(self, reply: Reply) -> List[ClientEvent]:
        if not self._expected:
            return self.connectionFailed("unexpected reply %s" % (reply.text,))
        if self.chunking and (self.chunkFailed or self._expected[0][0] == "bdat"):
            if self._expected[0][0] == "bdat":
                return self._chunkReply(reply)
            # the reply to LAST after a failed chunk: the failure stands
            self._expected.popleft()
            return self._chunksAnswered()
        # whatever it says, a reply to the final dot ends the transaction
        self._dotReplied = True
        kind, index = self._expected.popleft()
        if index == -2:
            return self._done(reusable=True)
        if kind != "dot":
            return self.connectionFailed("unexpected reply %s" % (reply.text,))
        if index == -1:
            for i in self._accepted:
                self._results[i] = _result(
                    reply.status, reply.code, reply.text, "final_dot"
                )
        else:
            self._results[index] = _result(
                reply.status, reply.code, reply.text, "final_dot"
            )
        if self._expected:
            return []
        return self._done(reusable=True)

    def _done(self, reusable: bool) -> List[ClientEvent]:
        if self._mailReply is not None and self._mailReply.positive:
            # the server took MAIL: only the reply to the final dot ends
            # its transaction; without it (every recipient refused, DATA
            # refused) a cached session would need RSET: it is not cached
            reusable = reusable and self._dotReplied
        if self.state != CLOSED:
            self.state = READY
        self._expected.clear()
        results = []
        for result in self._results:
            if result is None:
                result = _result("temp", 451, "451 4.4.0 no reply", "rcpt")
            elif self._dsnPassed:
                result = dict(result, dsnPassed=True)
            results.append(result)
        event = TransactionDone(
            results, self._mailReply, list(self._rcptReplies), reusable
        )
        self._results = []
        return [event]

    def _where(self, state: str) -> str:
        if state == TRANSACTION:
            if self._mailReply is None:
                return "mail"
            if self._dataSent and not self._expected:
                return "data"
            if self._expected and self._expected[0][0] == "data":
                return "data"
            return "rcpt"
        if state == BODY:
            return "data"
        return "final_dot"


def _result(status: str, code: int, reply: str, where: str) -> ResultData:
    return {"status": status, "code": code, "reply": reply, "where": where}


def _parseExtensions(lines: Sequence[str]) -> Dict[str, str]:
    extensions = {}
    for line in lines:
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            extensions[keyword.upper()] = params.strip()
    return extensions
