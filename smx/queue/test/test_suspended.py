# -*- test-case-name: smx.queue.test.test_suspended -*-
"""
Tests for the suspension of route sets none of whose routes could be
reached (Postfix's dead destinations): L{smx.queue.connections.SlowStart}
(L{SlowStart.suspended}, L{SlowStart.probe}, L{SlowStart.unreachable},
...) alone, and through the L{smx.queue.scheduler.Scheduler} with the
harness of L{smx.queue.test.test_scheduler} (a L{Clock}, the fake
resolver and delivery agent, a real L{QueueStore}).
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from smx.queue.connections import SlowStart
from smx.queue.test.test_scheduler import OTHER, ROUTE, SchedulerTestMixin

ROUTES = (("esmtp", "mx.y.test", "127.0.0.2", 25),)
BOTH = ROUTES + (("esmtp", "mx.z.test", "127.0.0.3", 25),)
REFUSED = "451 4.4.1 cannot connect: Connection was refused by other side"
SUSPENDED = (
    "451 4.4.1 delivery temporarily suspended: cannot connect: "
    "Connection was refused by other side"
)


class SlowStartSuspensionTests(unittest.TestCase):
    """
    Tests for the suspensions of L{SlowStart}.
    """

    def setUp(self):
        self.clock = Clock()
        self.slowStart = SlowStart(self.clock, 2, 4, cacheSize=3, deadTime=60)

    def test_notSuspended(self):
        """
        A route set that never failed is not suspended and has no probe.
        """
        self.assertIsNone(self.slowStart.suspended(ROUTES))
        self.assertFalse(self.slowStart.probe(ROUTES))

    def test_suspendedForDeadTime(self):
        """
        After L{SlowStart.unreachable} the route set is suspended, with
        the failure's reply, for C{deadTime} seconds; then the first
        delivery is the probe and the others stay suspended until it ends.
        """
        self.assertTrue(self.slowStart.unreachable(ROUTES, "127.0.0.2", REFUSED))
        self.assertEqual(self.slowStart.suspended(ROUTES), REFUSED)
        self.assertFalse(self.slowStart.probe(ROUTES))
        self.clock.advance(59)
        self.assertEqual(self.slowStart.suspended(ROUTES), REFUSED)
        self.clock.advance(1)
        self.assertIsNone(self.slowStart.suspended(ROUTES))
        self.assertTrue(self.slowStart.probe(ROUTES))
        self.assertEqual(self.slowStart.suspended(ROUTES), REFUSED)
        self.assertFalse(self.slowStart.probe(ROUTES))

    def test_keyIsTheRouteSet(self):
        """
        A suspended route set does not suspend another that shares its
        first route (a secondary MX may answer).
        """
        self.slowStart.unreachable(ROUTES, "127.0.0.2", REFUSED)
        self.assertIsNone(self.slowStart.suspended(BOTH))

    def test_probeSucceeds(self):
        """
        L{SlowStart.reachable} ends the suspension.
        """
        self.slowStart.unreachable(ROUTES, "127.0.0.2", REFUSED)
        self.clock.advance(60)
        self.assertTrue(self.slowStart.probe(ROUTES))
        self.assertTrue(self.slowStart.reachable(ROUTES))
        self.assertIsNone(self.slowStart.suspended(ROUTES))
        self.assertFalse(self.slowStart.reachable(ROUTES))

    def test_probeFailsRenews(self):
        """
        A failure of the probe suspends the route set again for
        C{deadTime} from then.
        """
        self.slowStart.unreachable(ROUTES, "127.0.0.2", REFUSED)
        self.clock.advance(60)
        self.assertTrue(self.slowStart.probe(ROUTES))
        self.clock.advance(5)
        self.assertFalse(self.slowStart.unreachable(ROUTES, "127.0.0.2", "451 x"))
        self.assertEqual(self.slowStart.suspended(ROUTES), "451 x")
        self.clock.advance(59)
        self.assertEqual(self.slowStart.suspended(ROUTES), "451 x")
        self.clock.advance(1)
        self.assertIsNone(self.slowStart.suspended(ROUTES))

    def test_probeEndedWithoutVerdict(self):
        """
        After L{SlowStart.probeEnded} the next delivery is the probe.
        """
        self.slowStart.unreachable(ROUTES, "127.0.0.2", REFUSED)
        self.clock.advance(60)
        self.assertTrue(self.slowStart.probe(ROUTES))
        self.slowStart.probeEnded(ROUTES)
        self.assertIsNone(self.slowStart.suspended(ROUTES))
        self.assertTrue(self.slowStart.probe(ROUTES))

    def test_deadTimeZero(self):
        """
        With C{deadTime} 0 nothing is ever suspended.
        """
        slowStart = SlowStart(self.clock, 2, 4, cacheSize=3, deadTime=0)
        self.assertFalse(slowStart.unreachable(ROUTES, "127.0.0.2", REFUSED))
        self.assertIsNone(slowStart.suspended(ROUTES))

    def test_resume(self):
        """
        L{SlowStart.resume} (a flush) ends every suspension.
        """
        self.slowStart.unreachable(ROUTES, "127.0.0.2", REFUSED)
        self.slowStart.unreachable(BOTH, "127.0.0.2,127.0.0.3", REFUSED)
        self.assertEqual(self.slowStart.resume(), 2)
        self.assertIsNone(self.slowStart.suspended(ROUTES))
        self.assertIsNone(self.slowStart.suspended(BOTH))

    def test_bounded(self):
        """
        At most C{cacheSize} route sets are remembered: the expired ones
        go first, then the oldest.
        """
        for i in range(3):
            self.slowStart.unreachable(("a%d" % i,), "a%d" % i, REFUSED)
        self.clock.advance(60)
        self.slowStart.unreachable(("b",), "b", REFUSED)
        self.slowStart.unreachable(("c",), "c", REFUSED)
        self.assertEqual(
            [k for k in ("b", "c") if self.slowStart.suspended((k,))], ["b", "c"]
        )
        for i in range(3):
            self.slowStart.unreachable(("d%d" % i,), "d%d" % i, REFUSED)
        self.assertIsNone(self.slowStart.suspended(("b",)))
        self.assertEqual(self.slowStart.suspended(("d2",)), REFUSED)

    def test_state(self):
        """
        The state shows the seconds left of each suspended route set, in
        the entry of its address if slow start has one; 0 while its probe
        is under way; none once it expired.
        """
        self.slowStart.opened("127.0.0.2")
        self.slowStart.unreachable(ROUTES, "127.0.0.2", REFUSED)
        self.clock.advance(10.5)
        self.slowStart.unreachable(BOTH, "127.0.0.2,127.0.0.3", REFUSED)
        self.assertEqual(
            self.slowStart.state(),
            {
                "127.0.0.2": {"limit": 2, "open": 1, "suspended": 50},
                "127.0.0.2,127.0.0.3": {"suspended": 60},
            },
        )
        self.clock.advance(50)
        self.assertTrue(self.slowStart.probe(ROUTES))
        self.assertEqual(self.slowStart.state()["127.0.0.2"]["suspended"], 0)
        self.slowStart.probeEnded(ROUTES)
        self.assertNotIn("suspended", self.slowStart.state()["127.0.0.2"])

    def test_closedWithoutVerdict(self):
        """
        L{SlowStart.closed} with C{None} frees the slot and leaves the
        limit.
        """
        self.slowStart.opened("127.0.0.2")
        self.slowStart.closed("127.0.0.2", None)
        self.assertEqual(self.slowStart.state(), {"127.0.0.2": {"limit": 2, "open": 0}})


def refused(transaction):
    """Results of a transaction none of whose routes took the connection."""
    return [
        {
            "index": r["index"],
            "address": r["address"],
            "status": "temp",
            "code": 451,
            "reply": REFUSED,
            "remoteMTA": None,
            "where": "connect",
        }
        for r in transaction["recipients"]
    ]


class SchedulerSuspensionTests(SchedulerTestMixin, unittest.TestCase):
    """
    Tests for the suspension of route sets through the L{Scheduler}: the
    delivery agent is not asked while they are suspended.
    """

    def setUp(self):
        self.setUpScheduler()
        # less than retry_min_delay (100): no retry in between
        self.slowStart.deadTime = 50
        self.refuse()

    def refuse(self):
        """Make the agent find every route refusing connections."""
        self.agent.results = refused

    def accept(self):
        """Make the agent deliver every recipient."""
        del self.agent.results

    def assertSuspended(self, ta):
        for r in ta.recipients.values():
            self.assertEqual(
                (r.state, r.reply, r.where), ("deferred", SUSPENDED, "connect")
            )

    def test_suspended(self):
        """
        When no route of a delivery transaction took the connection, the
        next transactions over those routes are not sent: each recipient
        is deferred at once, "delivery temporarily suspended" with the
        failure's reply, at C{connect}, and logged as any result.
        """
        first = self.queue()
        self.assertEqual(first.recipients[0].reply, REFUSED)
        self.assertEqual(len(self.agent.transactions), 1)
        second = self.queue(("c@y.test", "d@y.test"))
        self.assertEqual(len(self.agent.transactions), 1)
        self.assertSuspended(second)
        self.assertEqual(second.recipients[0].tries, 1)
        self.assertEqual(self.scheduler.deferred, 3)
        lines = "\n".join(self.sink.lines())
        self.assertIn("routes=127.0.0.2, status=suspended", lines)
        self.assertIn("stat=temp, reply=%s" % (SUSPENDED,), lines)
        self.assertEqual(self.slowStart.state()["127.0.0.2"]["suspended"], 50)

    def test_probe(self):
        """
        Once the suspension expired the next transaction is the probe;
        those after it stay suspended until its result; its success ends
        the suspension.
        """
        self.queue()
        self.clock.advance(50)
        self.agent.pending = []
        self.accept()
        probe = self.queue()
        self.assertEqual(len(self.agent.pending), 1)
        during = self.queue()
        self.assertSuspended(during)
        tx, d = self.agent.pending.pop()
        d.callback(self.agent.results(tx))
        self.assertEqual(self.states(probe), ["delivered"])
        after = self.queue()
        self.assertEqual(len(self.agent.pending), 1)
        self.agent.pending.pop()[1].callback(self.agent.results(tx))
        self.assertEqual(self.states(after), ["delivered"])

    def test_probeFails(self):
        """
        A probe that reaches no route renews the suspension for
        C{deadTime}.
        """
        self.queue()
        self.clock.advance(60)
        self.queue()
        self.assertEqual(len(self.agent.transactions), 2)
        self.clock.advance(49)
        self.assertSuspended(self.queue())
        self.clock.advance(1)
        self.queue()
        self.assertEqual(len(self.agent.transactions), 3)

    def test_agentFailureIsNoVerdict(self):
        """
        A delivery agent that fails is no verdict on the routes: nothing
        is suspended, and a probe that fails so lets the next one probe.
        """
        self.agent.deliver = lambda tx: defer.fail(RuntimeError("agent gone"))
        self.queue()
        self.assertIsNone(self.slowStart.suspended(ROUTES))
        self.flushLoggedErrors(RuntimeError)
        del self.agent.deliver
        self.queue()
        self.clock.advance(50)
        self.agent.deliver = lambda tx: defer.fail(RuntimeError("agent gone"))
        self.queue()
        self.flushLoggedErrors(RuntimeError)
        del self.agent.deliver
        self.queue()
        self.assertEqual(len(self.agent.transactions), 2)

    def test_timeoutIsNoVerdict(self):
        """
        A delivery agent that does not answer within C{delivery_timeout}
        is no verdict on the routes.
        """
        self.setUpScheduler(deliveryTimeout=30)
        self.slowStart.deadTime = 50
        self.agent.pending = []
        self.queue()
        self.clock.advance(30)
        self.assertIsNone(self.slowStart.suspended(ROUTES))

    def test_otherFailuresNoVerdict(self):
        """
        A temporary failure after the connection (at RCPT) suspends
        nothing, nor does one recipient refused at connect among others
        that got further.
        """
        self.accept()
        self.agent.outcome = lambda r: ("temp", 451, "451 4.3.0 try later")
        self.queue()
        self.assertIsNone(self.slowStart.suspended(ROUTES))

        def mixed(tx):
            out = refused(tx)
            out[1].update(where="rcpt", reply="451 4.2.0 later")
            return out

        self.agent.results = mixed
        self.queue(("c@y.test", "d@y.test"))
        self.assertIsNone(self.slowStart.suspended(ROUTES))

    def test_secondaryNotSuspended(self):
        """
        The routes of a domain whose primary MX is suspended alone
        (another domain's only route) still go to the agent when they
        include a secondary MX; and when the agent reaches that secondary,
        nothing is suspended.
        """
        self.resolver.routes["@w.test"] = [ROUTE, OTHER]
        self.queue(("b@y.test",))
        self.assertEqual(self.slowStart.suspended(ROUTES), REFUSED)
        self.accept()
        ta = self.queue(("b@w.test",))
        self.assertEqual(len(self.agent.transactions), 2)
        self.assertEqual(self.agent.transactions[1]["routes"], [ROUTE, OTHER])
        self.assertEqual(self.states(ta), ["delivered"])
        self.assertIsNone(self.slowStart.suspended(BOTH))

    def test_allRoutesRefused(self):
        """
        When the agent reached none of the routes of a group with two MX,
        that route set is suspended (not the first route alone).
        """
        self.resolver.routes["@w.test"] = [ROUTE, OTHER]
        self.queue(("b@w.test",))
        self.assertEqual(self.slowStart.suspended(BOTH), REFUSED)
        self.assertIsNone(self.slowStart.suspended(ROUTES))

    def test_flushResumes(self):
        """
        L{SlowStart.resume} (what a flush of the whole queue does) lets
        the next transaction go.
        """
        ta = self.queue()
        self.accept()
        self.slowStart.resume()
        self.assertEqual(self.scheduler.flush(), 1)
        self.clock.advance(0)
        self.assertEqual(self.states(ta), ["delivered"])


class WaitingSuspensionTests(SchedulerTestMixin, unittest.TestCase):
    """
    Tests for the transactions waiting for a slot when their routes are
    suspended.
    """

    def setUp(self):
        self.setUpScheduler(
            smtpcInitialConnections=1, smtpcMaxConnections=2, waitForServer=30
        )
        self.slowStart.deadTime = 50
        self.agent.pending = []

    def test_suspendedWhenTheyStart(self):
        """
        The transactions waiting for a slot of the destination when its
        routes are suspended are deferred when they start, without being
        sent; their slots are free again and the limit is as the failure
        left it.
        """
        self.queue()
        waiting = [self.queue() for _ in range(300)]
        self.assertEqual(self.scheduler.destinations.waiting("127.0.0.2"), 300)
        tx, d = self.agent.pending.pop()
        d.callback(refused(tx))
        self.assertEqual(self.agent.pending, [])
        self.assertEqual(self.scheduler.destinations.waiting(), 0)
        for ta in waiting:
            self.assertEqual(ta.recipients[0].reply, SUSPENDED)
        self.assertEqual(
            self.slowStart.state()["127.0.0.2"],
            {"limit": 1, "open": 0, "suspended": 50},
        )
        self.clock.advance(50)
        self.queue()
        self.assertEqual(len(self.agent.pending), 1)
