# -*- test-case-name: smx.mail.test.test_client -*-
"""
The events the client state machine (L{smx.mail.client.ClientMachine})
returns to its adapter (L{smx.mail.clientprotocol}): bytes to send,
STARTTLS to begin, the session ready or failed, the body to send, a
transaction done with its per-recipient results.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from smx.mail.clientwire import Reply
from smx.values import ResultData


class Send:
    """Write C{data} to the server."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return "Send(%r)" % (self.data,)


class StartTLS:
    """The server said 220 to STARTTLS: start the TLS handshake now and
    call L{ClientMachine.tlsStarted} once it is complete."""

    def __repr__(self) -> str:
        return "StartTLS()"


class SessionReady:
    """
    The session can carry a transaction (after the greeting and EHLO, or
    after RSET).

    @ivar extensions: the EHLO keywords in upper case -> their parameters.
    """

    def __init__(self, extensions: Dict[str, str]) -> None:
        self.extensions = extensions

    def __repr__(self) -> str:
        return "SessionReady(%r)" % (sorted(self.extensions),)


class SessionFailed:
    """
    The session cannot carry a transaction.

    @ivar where: C{"greeting"} or C{"ehlo"} (or the stage of an RSET).
    @ivar code: the reply code, or 0 if there was no reply.
    @ivar reply: the reply text or a description of the problem.
    """

    def __init__(self, where: str, code: int, reply: str) -> None:
        self.where = where
        self.code = code
        self.reply = reply

    def __repr__(self) -> str:
        return "SessionFailed(%r, %r, %r)" % (self.where, self.code, self.reply)


class SendBody:
    """The server said 354: send the encoded content (see L{BodyEncoder})
    and then call L{ClientMachine.bodySent}.  With CHUNKING
    (L{ClientMachine.chunking}): send the content with
    L{ClientMachine.sendChunk} (all of it with PIPELINING, else the next
    chunk)."""

    def __repr__(self) -> str:
        return "SendBody()"


class TransactionDone:
    """
    The transaction is over.

    @ivar results: one C{dict} per recipient, in the order given:
        C{{"status": "ok"|"temp"|"perm", "code": int, "reply": str,
        "where": str}}.
    @ivar mailReply: the L{Reply} to MAIL, or C{None}.
    @ivar rcptReplies: the L{Reply} to each RCPT (C{None} if none came).
    @ivar reusable: can the session carry another transaction?
    """

    def __init__(
        self,
        results: List[ResultData],
        mailReply: Optional[Reply],
        rcptReplies: List[Optional[Reply]],
        reusable: bool,
    ) -> None:
        self.results = results
        self.mailReply = mailReply
        self.rcptReplies = rcptReplies
        self.reusable = reusable

    def __repr__(self) -> str:
        return "TransactionDone(%r)" % (self.results,)


# States -------------------------------------------------------------------


#: one event of L{smx.mail.client.ClientMachine}
ClientEvent = Union[
    Send, StartTLS, SessionReady, SessionFailed, SendBody, TransactionDone
]
