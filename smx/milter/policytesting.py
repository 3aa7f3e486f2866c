# -*- test-case-name: smx.milter.test.test_policyclient -*-
"""
An in-memory L{IPolicyClient} for tests of the code that asks policy
servers (SMTPS), in the manner of C{twisted.internet.testing}.

    policy = FakePolicyClient("greylist", {"RCPT": "DEFER_IF_PERMIT Greylisted"})
    ...
    self.assertEqual(policy.requests[0]["recipient"], "bob@example.org")
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Union

from twisted.internet import defer
from zope.interface import implementer

from smx.interfaces import IPolicyClient
from smx.milter.policy import (
    PolicyDecision,
    UnknownAction,
    defaultDecision,
    parseAction,
)

Answer = Union[str, PolicyDecision, Callable[[Mapping[str, str]], Any]]


@implementer(IPolicyClient)
class FakePolicyClient:
    """
    Answers each request from a table keyed by C{protocol_state}.

    @ivar requests: every request, in order (C{dict}s of C{str}).
    @ivar answers: C{protocol_state} to an action text, a
        L{PolicyDecision}, or a callable taking the request and returning
        either (or a L{Deferred} of either); the key C{"*"} answers the
        other states; a state with no answer gets C{DUNNO}.
    @ivar defaultAction: the decision of an unknown action text.
    @ivar closed: L{close} was called.
    """

    def __init__(
        self,
        name: str = "policy",
        answers: Union[Mapping[str, Answer], None] = None,
        defaultAction: str = "tempfail",
    ) -> None:
        self.name = name
        self.answers = dict(answers or {})  # type: Dict[str, Answer]
        self.defaultAction = defaultDecision(defaultAction)
        self.requests = []  # type: List[Dict[str, str]]
        self.closed = False

    def check(self, attributes: Mapping[str, Any]) -> defer.Deferred:
        request = {name: str(value) for name, value in attributes.items()}
        self.requests.append(request)
        state = request.get("protocol_state", "")
        answer = self.answers.get(state, self.answers.get("*", "DUNNO"))
        if callable(answer):
            d = defer.maybeDeferred(answer, request)
        else:
            d = defer.succeed(answer)
        d.addCallback(self._decision, state)
        return d

    def _decision(self, answer: Any, state: str) -> PolicyDecision:
        if isinstance(answer, PolicyDecision):
            return answer
        try:
            return parseAction(str(answer), state)
        except UnknownAction:
            return self.defaultAction

    def close(self) -> defer.Deferred:
        self.closed = True
        return defer.succeed(None)
