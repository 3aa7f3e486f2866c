# -*- test-case-name: smx.milter.test.test_client -*-
"""
In-memory fakes of L{IMilterClient} and L{IMilterSession} for unit tests
of SMTPS: scripted decisions, every call recorded.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import defer
from zope.interface import implementer

from smx.interfaces import IMilterClient, IMilterSession
from smx.milter.protocol import CONTINUE, Decision


@implementer(IMilterSession)
class FakeMilterSession:
    """
    A milter session answering every stage from L{decisions}.

    @ivar calls: C{(stage, arguments)} of every call, in order.
    @ivar decisions: stage name (C{"connect"}, ..., C{"eom"}) to the
        L{Decision} it gets; C{continue} for the others.
    @ivar wantsRejectedRecipients: what the milter asked for.
    """

    def __init__(
        self,
        decisions: Optional[Dict[str, Decision]] = None,
        wantsRejectedRecipients: bool = False,
    ) -> None:
        self.calls = []  # type: List[Tuple[str, Tuple[Any, ...]]]
        self.decisions = dict(decisions or {})
        self.wantsRejectedRecipients = wantsRejectedRecipients

    def _stage(self, stage: str, *arguments: Any) -> defer.Deferred:
        self.calls.append((stage, arguments))
        return defer.succeed(self.decisions.get(stage, CONTINUE))

    def connect(self, info, macros=None):
        return self._stage("connect", info, macros)

    def helo(self, name, macros=None):
        return self._stage("helo", name, macros)

    def mail(self, sender, parameters=(), macros=None):
        return self._stage("mail", sender, tuple(parameters), macros)

    def rcpt(self, recipient, parameters=(), macros=None):
        return self._stage("rcpt", recipient, tuple(parameters), macros)

    def data(self, macros=None):
        return self._stage("data", macros)

    def header(self, name, value):
        return self.headers([(name, value)])

    def headers(self, fields, macros=None):
        return self._stage("header", tuple(fields), macros)

    def eoh(self, macros=None):
        return self._stage("eoh", macros)

    def body(self, chunk):
        return self._stage("body", chunk)

    def endOfMessage(self, macros=None):
        return self._stage("eom", macros)

    def unknown(self, command, macros=None):
        return self._stage("unknown", command, macros)

    def abort(self):
        self.calls.append(("abort", ()))

    def quit(self):
        self.calls.append(("quit", ()))
        return defer.succeed(None)


@implementer(IMilterClient)
class FakeMilterClient:
    """
    Makes L{FakeMilterSession}s that share L{decisions}.

    @ivar sessions: every session made, in order.
    """

    def __init__(
        self, name: str = "fake", decisions: Optional[Dict[str, Decision]] = None
    ) -> None:
        self.name = name
        self.decisions = dict(decisions or {})
        self.sessions = []  # type: List[FakeMilterSession]

    def session(self, sessionId=None):
        session = FakeMilterSession(self.decisions)
        self.sessions.append(session)
        return session
