# -*- test-case-name: smx.split.test.test_delivery -*-
"""
Tests for L{smx.split.delivery}: the same behaviour tests of
L{IDeliveryAgent} run against L{FakeDeliveryAgent} in the process and
through L{RemoteDeliveryAgents} (QMGR's side, listening) and
L{deliveryAgentClient} (SMTPC's side, connecting) over a real Unix
socket; then what only the remote agents do: wait for an SMTPC process,
give temporary results without one, share deliveries among several.
"""

from __future__ import annotations

import json
import os
from typing import Any, List

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.interfaces import IDeliveryAgent
from smx.mail.testing import FakeDeliveryAgent
from smx.split.delivery import (
    AGENT_UNAVAILABLE,
    RemoteDeliveryAgents,
    deliveryAgentClient,
)
from smx.split.testing import running, socketPath
from smx.test.mta import until

ROUTE = {
    "mailer": "esmtp",
    "host": "mx.example.com",
    "address": "192.0.2.25",
    "port": 25,
    "preference": 10,
}


def transaction(n: int = 2, id: str = "C0000018A2B3C4D5E00") -> Any:
    return {
        "id": id,
        "ss_ta": "S0000018A2B3C4D5E00",
        "sender": "alice@example.org",
        "recipients": [
            {"address": "r%d@example.com" % i, "index": i, "routes": [ROUTE]}
            for i in range(n)
        ],
        "routes": [ROUTE],
        "size": 100,
        "bodyType": "7BIT",
        "smtputf8": False,
        "requiretls": False,
    }


def bounceSecond(rcpt: Any) -> tuple:
    if rcpt["index"] == 1:
        return ("perm", 550, "550 5.1.1 no such user")
    return ("ok", 250, "250 2.0.0 ok")


class DeliveryBehaviour:
    """
    What every L{IDeliveryAgent} does, with a L{FakeDeliveryAgent}
    C{self.backend} behind C{self.agent}.
    """

    agent: Any
    backend: FakeDeliveryAgent

    def test_provides(self) -> None:
        """
        It provides L{IDeliveryAgent}.
        """
        self.assertTrue(verifyObject(IDeliveryAgent, self.agent))  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_deliver(self) -> Any:
        """
        One result per recipient, as the agent gives them; the
        transaction arrives with every field.
        """
        self.backend.outcome = bounceSecond
        results = yield self.agent.deliver(transaction())
        self.assertEqual(  # type: ignore[attr-defined]
            [(r["index"], r["status"], r["code"]) for r in results],
            [(0, "ok", 250), (1, "perm", 550)],
        )
        [got] = self.backend.transactions
        self.assertEqual(got["routes"], [ROUTE])  # type: ignore[attr-defined]
        self.assertIs(got["requiretls"], False)  # type: ignore[attr-defined]
        self.assertEqual(got["recipients"][1]["routes"], [ROUTE])  # type: ignore[attr-defined]


class InProcessTests(DeliveryBehaviour, unittest.TestCase):
    """
    The behaviour of L{FakeDeliveryAgent} itself.
    """

    def setUp(self) -> None:
        self.backend = FakeDeliveryAgent()
        self.agent = self.backend


class ProxiedTests(DeliveryBehaviour, unittest.TestCase):
    """
    The same behaviour through QMGR's remote agents and an SMTPC
    connected to them.
    """

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.path = socketPath(self)
        self.backend = FakeDeliveryAgent()
        self.agent = RemoteDeliveryAgents(reactor, self.path, waitForClient=5)
        running(self, self.agent)
        running(self, deliveryAgentClient(reactor, self.path, self.backend, 5))
        yield self.connected(1)

    @defer.inlineCallbacks
    def connected(self, n: int) -> Any:
        for _ in range(200):
            if len(self.agent.connections) >= n:
                return
            yield deferLater(reactor, 0.01, lambda: None)
        self.fail("%d SMTPC connections, not %d" % (len(self.agent.connections), n))

    @defer.inlineCallbacks
    def pending(self, n: int) -> Any:
        queue = self.backend.pending
        assert queue is not None
        for _ in range(300):
            if len(queue) >= n:
                return
            yield deferLater(reactor, 0.01, lambda: None)
        self.fail("%d deliveries, not %d" % (len(queue), n))

    @defer.inlineCallbacks
    def test_lostAgentAgain(self) -> Any:
        """
        A delivery whose SMTPC process goes away (killed) is handed to the
        next SMTPC process to connect (the one the MCP starts again, here
        the same client reconnecting), not deferred for
        C{retry_min_delay}.
        """
        self.backend.pending = []
        d = self.agent.deliver(transaction())
        yield self.pending(1)
        self.agent.connections[0].transport.loseConnection()
        yield self.pending(2)
        t, second = (self.backend.pending or [])[1]
        self.assertEqual(t["id"], "C0000018A2B3C4D5E00")
        second.callback(self.backend.results(t))
        results = yield d
        self.assertEqual([(r["status"], r["code"]) for r in results], [("ok", 250)] * 2)
        self.finishPending()

    def finishPending(self) -> None:
        """Answer the deliveries of the connections that were lost."""
        for t, pending in self.backend.pending or []:
            if not pending.called:
                pending.callback(self.backend.results(t))

    @defer.inlineCallbacks
    def test_lostAgent(self) -> Any:
        """
        A delivery whose SMTPC process goes away a second time gives a
        temporary result for every recipient (QMGR defers them).
        """
        self.backend.pending = []
        d = self.agent.deliver(transaction())
        for n in (1, 2):
            yield self.pending(n)
            yield self.connected(1)
            self.agent.connections[0].transport.loseConnection()
        results = yield d
        self.finishPending()
        self.assertEqual(
            [(r["status"], r["code"]) for r in results], [("temp", 451)] * 2
        )

    @defer.inlineCallbacks
    def test_badResults(self) -> Any:
        """
        Results of the wrong shape from SMTPC are refused by QMGR, which
        receives them (SMTPC sends its agent's results unchecked): every
        recipient gets a temporary result.
        """
        self.backend.deliver = lambda t: defer.succeed(  # type: ignore[method-assign]
            [{"index": "0", "address": 1, "status": "sent"}]
        )
        results = yield self.agent.deliver(transaction())
        self.assertEqual(
            [(r["status"], r["code"]) for r in results], [("temp", 451)] * 2
        )

    @defer.inlineCallbacks
    def test_shared(self) -> Any:
        """
        Deliveries go to the connected SMTPC process with the fewest in
        progress.
        """
        other = FakeDeliveryAgent()
        running(self, deliveryAgentClient(reactor, self.path, other, 5))
        yield self.connected(2)
        self.backend.pending = []
        other.pending = []
        ds = [self.agent.deliver(transaction(1, "C%d" % i)) for i in range(4)]
        yield until(
            lambda: len(self.backend.pending) + len(other.pending) == 4, 5, 0.01
        )
        self.assertEqual((len(self.backend.pending), len(other.pending)), (2, 2))
        for agent in (self.backend, other):
            for t, d in agent.pending:
                d.callback(agent.results(t))
        results = yield defer.gatherResults(ds)
        self.assertEqual([r[0]["status"] for r in results], ["ok"] * 4)

    @defer.inlineCallbacks
    def test_sharedOneAtATime(self) -> Any:
        """
        Deliveries that never overlap (each answered before the next is
        sent) still go to every connected SMTPC process in turn, not
        always to the first.
        """
        other = FakeDeliveryAgent()
        running(self, deliveryAgentClient(reactor, self.path, other, 5))
        yield self.connected(2)
        for i in range(4):
            yield self.agent.deliver(transaction(1, "C%d" % i))
        self.assertEqual(
            (len(self.backend.transactions), len(other.transactions)), (2, 2)
        )


class NoAgentTests(unittest.TestCase):
    """
    QMGR's remote agents without an SMTPC process.
    """

    def setUp(self) -> None:
        self.path = socketPath(self)
        self.agent = RemoteDeliveryAgents(reactor, self.path, waitForClient=0.2)
        running(self, self.agent)

    @defer.inlineCallbacks
    def test_none(self) -> Any:
        """
        Without an SMTPC process within C{wait_for_client}, every
        recipient has a temporary result, C{AGENT_UNAVAILABLE}, not one of
        a connection (which would suspend the next hop).
        """
        results = yield self.agent.deliver(transaction())
        self.assertEqual(
            [(r["index"], r["status"], r["where"], r["reply"]) for r in results],
            [(i, "temp", "agent", AGENT_UNAVAILABLE) for i in (0, 1)],
        )

    @defer.inlineCallbacks
    def test_onConnected(self) -> Any:
        """
        C{onConnected} is called when an SMTPC process has connected and
        said Ready (QMGR then retries what was deferred without one).
        """
        calls: List[int] = []
        self.agent.onConnected = lambda: calls.append(len(self.agent.connections))
        self.agent.waitForClient = 5
        d = self.agent.deliver(transaction())
        running(self, deliveryAgentClient(reactor, self.path, FakeDeliveryAgent(), 5))
        yield d
        self.assertEqual(calls, [1])

    @defer.inlineCallbacks
    def test_waits(self) -> Any:
        """
        A delivery waits for an SMTPC process that connects within
        C{wait_for_client}.
        """
        self.agent.waitForClient = 5
        d = self.agent.deliver(transaction())
        yield deferLater(reactor, 0.1, lambda: None)
        self.assertFalse(d.called)
        backend = FakeDeliveryAgent()
        running(self, deliveryAgentClient(reactor, self.path, backend, 5))
        results = yield d
        self.assertEqual([r["status"] for r in results], ["ok", "ok"])

    @defer.inlineCallbacks
    def test_badTransaction(self) -> Any:
        """
        A transaction of the wrong shape is a C{ValueError}, not sent.
        """
        with self.assertRaises(ValueError):
            yield self.agent.deliver({"id": "C1", "recipients": []})


class LateResultTests(unittest.TestCase):
    """
    Deliveries SMTPC finished while QMGR was away are not made again by
    the next QMGR.
    """

    @defer.inlineCallbacks
    def test_lateResultsGiven(self) -> Any:
        """
        A delivery whose connection to QMGR ends before it is done goes
        on; its successful results reach the next QMGR when SMTPC connects
        to it, and that QMGR answers those recipients from them instead of
        delivering them again, while a recipient without one is delivered.
        """
        path = socketPath(self)
        backend = FakeDeliveryAgent()
        backend.pending = []
        first = RemoteDeliveryAgents(reactor, path, waitForClient=5)
        first.startService()
        running(self, deliveryAgentClient(reactor, path, backend, 5))
        d = first.deliver(transaction(2))
        yield until(lambda: backend.pending, 5, 0.01)
        # QMGR goes away while SMTPC delivers
        yield first.stopService()
        results = yield d
        self.assertEqual([r["status"] for r in results], ["temp", "temp"])
        [(t, pending)] = backend.pending
        pending.callback(backend.results(t))
        backend.pending = None
        # the next QMGR
        second = RemoteDeliveryAgents(reactor, path, waitForClient=5)
        running(self, second)
        again = transaction(3, id="C0000018A2B3C4D5E99")
        results = yield second.deliver(again)
        self.assertEqual(
            sorted((r["index"], r["address"], r["status"]) for r in results),
            [
                (0, "r0@example.com", "ok"),
                (1, "r1@example.com", "ok"),
                (2, "r2@example.com", "ok"),
            ],
        )
        # only the recipient without a late result was delivered again
        [redelivered] = backend.transactions[1:]
        self.assertEqual(
            [r["address"] for r in redelivered["recipients"]], ["r2@example.com"]
        )
        self.assertEqual(second.late, {})

    def test_lateResultsKept(self) -> None:
        """
        L{LateResults} keeps only successful results, at most L{MAX_LATE}
        transactions, and gives them back when they could not be sent.
        """
        from smx.split.delivery import MAX_LATE, LateResults

        late = LateResults()
        t = transaction(2)
        late.add(
            t,
            [
                {"index": 0, "address": "r0@example.com", "status": "ok"},
                {"index": 1, "address": "r1@example.com", "status": "temp"},
            ],
        )
        [entry] = late.take()
        self.assertEqual([r["address"] for r in entry["results"]], ["r0@example.com"])
        self.assertEqual(late.take(), [])
        late.putBack([entry])
        self.assertEqual(late.take(), [entry])
        for i in range(MAX_LATE + 5):
            late.add(t, [{"index": 0, "address": "a%d" % i, "status": "ok"}])
        self.assertEqual(len(late.entries), MAX_LATE)


class LateResultFileTests(unittest.TestCase):
    """
    The late results outlive an SMTPC process that is stopped (as the MCP
    stops SMTPC when QMGR, which it depends on, is restarted) or killed.
    """

    def setUp(self) -> None:
        self.path = socketPath(self)
        self.state = os.path.join(os.path.dirname(self.path), "smtpc.late")

    @defer.inlineCallbacks
    def qmgrGoneWhileDelivering(self) -> Any:
        """
        An SMTPC process (with the state file) making a delivery when its
        QMGR goes away.

        @return: a L{Deferred} firing with the client and its delivery
            agent, whose delivery waits in C{pending}, once QMGR is gone.
        """
        backend = FakeDeliveryAgent()
        backend.pending = []
        first = RemoteDeliveryAgents(reactor, self.path, waitForClient=5)
        first.startService()
        client = deliveryAgentClient(
            reactor, self.path, backend, 5, stateFile=self.state
        )
        client.startService()
        d = first.deliver(transaction(2))
        yield until(lambda: backend.pending, 5, 0.01)
        yield first.stopService()
        yield d
        return client, backend

    @defer.inlineCallbacks
    def nextDeliversNothingAgain(self) -> Any:
        """
        The next SMTPC process and the next QMGR: the recipients of the
        late results are not delivered again, and the state file is
        removed once that QMGR has them.
        """
        again = FakeDeliveryAgent()
        second = RemoteDeliveryAgents(reactor, self.path, waitForClient=5)
        running(self, second)
        running(
            self,
            deliveryAgentClient(reactor, self.path, again, 5, stateFile=self.state),
        )
        results = yield second.deliver(transaction(2, id="C0000018A2B3C4D5E99"))
        self.assertEqual([r["status"] for r in results], ["ok", "ok"])
        self.assertEqual(again.transactions, [])
        yield until(lambda: not os.path.exists(self.state), 5, 0.01)

    @defer.inlineCallbacks
    def test_savedAndGiven(self) -> Any:
        """
        At its stop, SMTPC waits for the delivery it is making and writes
        its late results to its state file; the next SMTPC process reads
        the file and gives them to the next QMGR, which does not deliver
        those recipients again.
        """
        client, backend = yield self.qmgrGoneWhileDelivering()
        stopping = client.stopService()
        yield deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(stopping.called)  # it waits for the delivery
        [(t, pending)] = backend.pending
        pending.callback(backend.results(t))
        yield stopping
        self.assertTrue(os.path.exists(self.state))
        yield self.nextDeliversNothingAgain()

    @defer.inlineCallbacks
    def test_writtenWhenKept(self) -> Any:
        """
        Results kept because QMGR went away are in the state file at once,
        before any stop: an SMTPC killed while it waits for the next QMGR
        does not lose them.
        """
        client, backend = yield self.qmgrGoneWhileDelivering()
        self.assertFalse(os.path.exists(self.state))
        [(t, pending)] = backend.pending
        pending.callback(backend.results(t))
        yield until(lambda: os.path.exists(self.state), 5, 0.01)
        with open(self.state) as f:
            [entry] = json.load(f)
        self.assertEqual(entry["ss_ta"], t["ss_ta"])
        # killed: no stop of its own
        yield client.peer.stopService()
        yield self.nextDeliversNothingAgain()

    @defer.inlineCallbacks
    def test_keptUntilGiven(self) -> Any:
        """
        The state file stays until a QMGR has taken the late results: an
        SMTPC process that reads it and dies (killed) before it reached a
        QMGR leaves them to the next SMTPC process.
        """
        path, state = self.path, self.state
        late = [
            {
                "ss_ta": transaction(1)["ss_ta"],
                "results": [{"index": 0, "address": "r0@example.com", "status": "ok"}],
            }
        ]
        os.makedirs(os.path.dirname(state), exist_ok=True)
        with open(state, "w") as f:
            json.dump(late, f)
        # read, and no QMGR to give them to: the process is killed
        doomed = deliveryAgentClient(
            reactor, path, FakeDeliveryAgent(), 5, stateFile=state
        )
        doomed.startService()
        self.assertEqual(doomed.late.entries, late)
        doomed.peer.stopService()
        self.assertTrue(os.path.exists(state))
        # the next SMTPC process gives them to a QMGR, which does not
        # deliver that recipient again
        again = FakeDeliveryAgent()
        qmgr = RemoteDeliveryAgents(reactor, path, waitForClient=5)
        running(self, qmgr)
        running(self, deliveryAgentClient(reactor, path, again, 5, stateFile=state))
        yield until(lambda: not os.path.exists(state), 5, 0.01)
        results = yield qmgr.deliver(transaction(1, id="C0000018A2B3C4D5E99"))
        self.assertEqual([r["status"] for r in results], ["ok"])
        self.assertEqual(again.transactions, [])
