# -*- test-case-name: smx.test.test_interfaces -*-
"""
An in-memory fake of L{IDeliveryAgent} for unit tests of QMGR.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from twisted.internet import defer
from zope.interface import implementer

from smx.interfaces import IDeliveryAgent


@implementer(IDeliveryAgent)
class FakeDeliveryAgent:
    """
    A delivery agent that answers every recipient from a rule.

    @ivar transactions: every transaction handed to L{deliver}.
    @ivar outcome: a function of a recipient C{dict} returning C{(status,
        code, reply)}; by default every recipient is delivered.
    @ivar pending: if set to a list, L{deliver} returns unfired Deferreds
        appended here as C{(transaction, deferred)}.
    """

    def __init__(self, outcome: Optional[Callable[[Dict[str, Any]], tuple]] = None):
        self.transactions = []  # type: List[Dict[str, Any]]
        self.outcome = outcome or (lambda rcpt: ("ok", 250, "250 2.0.0 ok"))
        self.pending = None  # type: Optional[List[tuple]]

    def results(self, transaction: Dict[str, Any]) -> List[Dict[str, Any]]:
        """The results L{outcome} gives for every recipient."""
        out = []
        for rcpt in transaction["recipients"]:
            status, code, reply = self.outcome(rcpt)
            out.append(
                {
                    "index": rcpt["index"],
                    "address": rcpt["address"],
                    "status": status,
                    "code": code,
                    "reply": reply,
                    "remoteMTA": "127.0.0.1",
                    "where": "final_dot" if status == "ok" else "rcpt",
                }
            )
        return out

    def deliver(self, transaction):
        self.transactions.append(transaction)
        if self.pending is not None:
            d = defer.Deferred()  # type: defer.Deferred
            self.pending.append((transaction, d))
            return d
        return defer.succeed(self.results(transaction))
