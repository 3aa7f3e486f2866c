# -*- test-case-name: smx.test.test_interfaces -*-
"""
An in-memory fake of L{IPolicyMilter}.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet import defer
from zope.interface import implementer

from smx.interfaces import IPolicyMilter

STAGES = ["connect", "helo", "mail", "rcpt", "data", "unknown", "body", "eom"]


@implementer(IPolicyMilter)
class FakePolicyMilter:
    """
    A policy milter that records every call and answers from a table.

    @ivar answers: stage name -> answer C{dict}; stages not listed answer
        C{{"status": "cont", ...}}.
    @ivar calls: C{(stage, args...)} in order.
    """

    def __init__(self) -> None:
        self.answers = {}  # type: Dict[str, Dict[str, Any]]
        self.calls = []  # type: List[tuple]

    def _answer(self, stage: str, *args: Any) -> defer.Deferred:
        self.calls.append((stage,) + args)
        return defer.succeed(
            self.answers.get(stage, {"status": "cont", "reply": None, "quick": False})
        )

    def negotiate(self, serverCapabilities):
        self.calls.append(("negotiate", list(serverCapabilities)))
        return defer.succeed([s for s in serverCapabilities if s in STAGES])

    def connect(self, sessionId, hostname, address):
        return self._answer("connect", sessionId, hostname, address)

    def helo(self, sessionId, heloHost):
        return self._answer("helo", sessionId, heloHost)

    def mail(self, sessionId, sender, arguments):
        return self._answer("mail", sessionId, sender, list(arguments))

    def rcpt(self, sessionId, recipient, arguments):
        return self._answer("rcpt", sessionId, recipient, list(arguments))

    def data(self, sessionId):
        return self._answer("data", sessionId)

    def unknown(self, sessionId, command):
        return self._answer("unknown", sessionId, command)

    def body(self, sessionId, chunk):
        return self._answer("body", sessionId, chunk)

    def endOfMessage(self, sessionId):
        return self._answer("eom", sessionId)

    def abort(self, sessionId):
        return self._answer("abort", sessionId)

    def close(self, sessionId):
        return self._answer("close", sessionId)
