# -*- test-case-name: smx.pmilter.test.test_host,smx.test.test_interfaces -*-
"""
Fakes for tests of the policy milter API: L{FakePolicyMilter}, a pmilter
that records its calls and answers from a table, and L{FakeSMTPSession},
which drives an L{IPolicyMilterHost}-shaped host the way SMTPS does.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from zope.interface import implementer

from smx.interfaces import IPolicyMilter
from smx.pmilter.api import CONT, Negotiation
from smx.pmilter.decision import CONTINUE, Decision


@implementer(IPolicyMilter)
class FakePolicyMilter:
    """
    A policy milter that records every call and answers from a table.

    @ivar name: its name.
    @ivar negotiation: what C{negotiate} returns (every stage offered).
    @ivar answers: callback name -> the value it returns, or a callable
        C{(session, *args) -> value}; callbacks not listed return L{CONT}.
    @ivar replies: callback name -> the text it gives to C{setreply}.
    @ivar calls: C{(callback, args...)} in order (without the session).
    @ivar servers: the server contexts it was negotiated with.
    @ivar sessions: the session contexts it saw, by C{id}.
    """

    def __init__(
        self, name: str = "fake", negotiation: Optional[Negotiation] = None
    ) -> None:
        self.name = name
        self.negotiation = negotiation if negotiation is not None else Negotiation()
        self.answers = {}  # type: Dict[str, Any]
        self.replies = {}  # type: Dict[str, str]
        self.calls = []  # type: List[tuple]
        self.servers = []  # type: List[Any]
        self.sessions = {}  # type: Dict[int, Any]

    def negotiate(self, server):
        self.calls.append(("negotiate",))
        self.servers.append(server)
        answer = self.answers.get("negotiate", self.negotiation)
        if callable(answer):
            return answer(server)
        return answer

    def _answer(self, callback: str, session: Any, *args: Any) -> Any:
        self.calls.append((callback,) + args)
        self.sessions[id(session)] = session
        if callback in self.replies:
            session.setreply(self.replies[callback])
        answer = self.answers.get(callback, CONT)
        if callable(answer):
            return answer(session, *args)
        return answer

    def connect(self, session, hostname, address):
        return self._answer("connect", session, hostname, address)

    def helo(self, session, helohost):
        return self._answer("helo", session, helohost)

    def mail(self, session, address, args):
        return self._answer("mail", session, address, list(args))

    def rcpt(self, session, address, args):
        return self._answer("rcpt", session, address, list(args))

    def data(self, session):
        return self._answer("data", session)

    def unknown(self, session, command):
        return self._answer("unknown", session, command)

    def body(self, session, chunk):
        return self._answer("body", session, chunk)

    def eom(self, session):
        return self._answer("eom", session)

    def abort(self, session):
        return self._answer("abort", session)

    def close(self, session):
        return self._answer("close", session)

    def callbacks(self) -> List[str]:
        """
        @return: the names of the calls made, in order.
        """
        return [c[0] for c in self.calls]


class FakeSMTPSession:
    """
    Drives a host (L{smx.pmilter.host.PolicyMilterHost} or
    L{smx.pmilter.remote.RemotePolicyMilterHost}) the way SMTPS calls it:
    each SMTP command becomes the host call the integration notes of
    L{smx.pmilter.host} prescribe, and SMTPS's reply to it is worked out
    from the decision as SMTPS will.

    @ivar transcript: C{(command, reply code, Decision)} for each command.
    """

    def __init__(
        self,
        host: Any,
        sessionId: str = "S1",
        client: str = "192.0.2.7",
        clientName: Optional[str] = "client.example.com",
    ) -> None:
        self.host = host
        self.sessionId = sessionId
        self.address = IPv4Address("TCP", client, 40000)
        self.clientName = clientName
        self.transcript = []  # type: List[Tuple[str, int, Decision]]
        self.session = None  # type: Any
        self.closed = False
        self._transactions = 0

    def _record(self, decision: Decision, command: str, default: int) -> Decision:
        code = decision.code if decision.code is not None else default
        if decision.ssd:
            self.closed = True
        self.transcript.append((command, code, decision))
        return decision

    def _step(self, command: str, d: defer.Deferred, default: int) -> defer.Deferred:
        return d.addCallback(self._record, command, default)

    def connect(self) -> defer.Deferred:
        self.session = self.host.openSession(self.sessionId)
        d = self.session.connect(self.clientName, self.address)

        def _cb(decision: Decision) -> Decision:
            if decision.rejected:
                self.closed = decision.code is not None and decision.code < 500
            return decision

        return self._step("connect", d, 220).addCallback(_cb)

    def helo(self, name: str = "client.example.com") -> defer.Deferred:
        return self._step("EHLO", self.session.helo(name), 250)

    def mail(self, sender: str, args: Sequence[str] = ()) -> defer.Deferred:
        self._transactions += 1
        taId = "%s-T%d" % (self.sessionId, self._transactions)
        return self._step(
            "MAIL", self.session.mail("<%s>" % (sender,), list(args), taId), 250
        )

    def rcpt(
        self, recipient: str, args: Sequence[str] = (), status: int = 250
    ) -> defer.Deferred:
        d = self.session.rcpt("<%s>" % (recipient,), list(args), status)
        return self._step("RCPT", d, status)

    def data(self) -> defer.Deferred:
        return self._step("DATA", self.session.data(), 354)

    def content(self, text: bytes, chunkSize: int = 8192) -> defer.Deferred:
        """
        The content (with CRLF line ends, not yet dot-stuffed), in chunks
        as received, the final dot, and the eom decision.
        """
        lines = text.split(b"\r\n")
        if lines and lines[-1] == b"":
            lines.pop()
        stuffed = b"".join(
            (b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines
        )
        stuffed += b".\r\n"
        for i in range(0, len(stuffed), chunkSize):
            self.session.body(stuffed[i : i + chunkSize])
        return self._step("DOT", self.session.eom(), 250)

    def rset(self) -> defer.Deferred:
        return self.session.abort()

    def unknown(self, command: str) -> defer.Deferred:
        return self._step(command.split()[0], self.session.unknown(command), 500)

    def quit(self) -> defer.Deferred:
        self.closed = True
        return self.session.close()

    def run(self, steps: Sequence[Tuple[str, Any]]) -> defer.Deferred:
        """
        Run C{[(method, args), ...]} one after the other, as SMTPS waits
        for each decision.

        @return: a L{Deferred} firing with L{transcript}.
        """

        @defer.inlineCallbacks
        def go():
            for name, args in steps:
                method = getattr(self, name)  # type: Callable[..., Any]
                if not isinstance(args, tuple):
                    args = (args,)
                yield method(*args)
            return self.transcript

        return go()

    def codes(self) -> List[Tuple[str, int]]:
        """
        @return: C{(command, reply code)} of the transcript.
        """
        return [(c, code) for c, code, _ in self.transcript]


__all__ = ["FakePolicyMilter", "FakeSMTPSession", "CONTINUE"]
