# -*- test-case-name: smx.queue.test.test_scheduler -*-
"""
Tests for L{smx.queue.scheduler.Scheduler} and the queues it coordinates
(L{smx.queue.iqdb}, L{smx.queue.active}, L{smx.queue.destinations},
L{smx.queue.retry}, L{smx.queue.bounceschedule}), through their public
API: time from a L{Clock}, the fake resolver and delivery agent of
L{smx.maps.testing} and L{smx.mail.testing}, and a real L{QueueStore}
(IBDB files, a Berkeley DB DEFEDB and CDB files in a temporary directory).
"""

import os

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.interfaces import IAddressResolver, IDeliveryAgent
from smx.log import Logger, MemorySink
from smx.mail.testing import FakeDeliveryAgent
from smx.maps.testing import FakeAddressResolver
from smx.queue import ibdb
from smx.queue.bounce import Bouncer
from smx.queue.cdb import FileContentStore
from smx.queue.connections import SlowStart
from smx.queue.defedb import DeferredEnvelopeDB
from smx.queue.destinations import DestinationQueues
from smx.queue.envelope import Transaction
from smx.queue.iqdb import WaitingQueue
from smx.queue.retry import RetrySchedule
from smx.queue.scheduler import Scheduler
from smx.queue.store import QueueStore
from smx.queue.testing import defaultQueueSettings

ROUTE = {
    "mailer": "esmtp",
    "host": "mx.y.test",
    "address": "127.0.0.2",
    "port": 25,
    "preference": 10,
}
OTHER = dict(ROUTE, host="mx.z.test", address="127.0.0.3")
CONTENT = b"From: a@x.test\r\nSubject: test\r\n\r\nhello\r\n"
TEMP = ("temp", 451, "451 4.3.0 try later")
PERM = ("perm", 550, "550 5.1.1 no such user")
START = 1000000.0
OCC_MAX_ENTRIES = defaultQueueSettings().occMaxEntries


def transaction(taId, recipients, sender="a@x.test", received=START):
    return Transaction.fromEnvelope(
        {
            "id": taId,
            "sender": sender,
            "recipients": [{"address": a} for a in recipients],
            "size": len(CONTENT),
            "received": received,
        }
    )


class SchedulerTestMixin:
    """
    A L{Scheduler} over a real L{QueueStore}, the fake resolver and agent,
    a real L{SlowStart} and a real L{Bouncer} whose reports are recorded.
    """

    def setUpScheduler(self, **changes):
        """
        @param changes: fields of the L{QueueSettings} to change.
        """
        self.clock = Clock()
        self.clock.advance(START)
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        settings = dict(
            retryMinDelay=100,
            retryMaxDelay=400,
            queuereturnTimeout=10000,
            queuedelayTimeout=20000,
            dsnMaxDelay=0,
            hostname="mx.smx.test",
        )
        settings.update(changes)
        self.settings = s = defaultQueueSettings(self.dir, **settings)
        self.defedb = DeferredEnvelopeDB.fromSettings(s)
        self.defedb.open()
        self.addCleanup(self.defedb.close)
        self.log = ibdb.IncomingBackupLog.fromSettings(s, self.clock)
        self.log.start()
        self.addCleanup(self.log.stop)
        self.sink = MemorySink()
        self.logger = Logger("qmgr", level=14, sink=self.sink)
        self.cdb = FileContentStore(os.path.join(self.dir, "cdb"))
        self.store = QueueStore(self.log, self.defedb, self.cdb, self.logger)
        self.resolver = FakeAddressResolver()
        self.resolver.routes["@y.test"] = [ROUTE]
        self.resolver.routes["@z.test"] = [OTHER]
        self.agent = FakeDeliveryAgent()
        self.reports = []
        ids = iter(range(1, 1000))
        self.bouncer = Bouncer(
            self.cdb,
            self.submitReport,
            lambda: "S%016X00" % (0x9000 + next(ids),),
            s.hostname,
            self.clock,
            self.logger,
            maxErrors=s.maxErrorsPerBounce,
            headersOnly=s.headerOnlyInBounce,
            queuereturnTimeout=s.queuereturnTimeout,
        )
        self.slowStart = SlowStart(
            self.clock,
            s.smtpcInitialConnections,
            s.smtpcMaxConnections,
            cacheSize=s.occMaxEntries,
            deadTime=0,
        )
        daIds = iter(range(1, 1000))
        self.scheduler = Scheduler(
            self.clock,
            self.store,
            self.resolver,
            self.agent,
            self.bouncer,
            self.slowStart,
            self.logger,
            lambda: "C%016X" % (next(daIds),),
            s,
        )
        self.addCleanup(self.scheduler.stop)
        self.counter = 0

    def submitReport(self, envelope):
        self.reports.append(envelope)
        return defer.succeed(None)

    def queue(self, recipients=("b@y.test",), sender="a@x.test", notify=None):
        """
        A transaction as QMGR hands it over: content in CDB, envelope in
        IBDB and in the store; its recipients enqueued (with the DSN
        C{notify} given).
        """
        self.counter += 1
        taId = "S%016X00" % (0x1000 + self.counter,)
        writer = self.cdb.createWriter(taId)
        writer.write(CONTENT)
        self.successResultOf(writer.commit())
        ta = transaction(taId, recipients, sender, self.clock.seconds())
        for r in ta.recipients.values():
            r.notify = notify
        self.store.transactions[ta.id] = ta
        d = self.store.logNew(ta)
        self.clock.advance(0.01)
        self.successResultOf(d)
        self.scheduler.enqueue(ta, list(ta.recipients.values()))
        return ta

    def states(self, ta):
        return [r.state for _, r in sorted(ta.recipients.items())]


class FakesTests(unittest.TestCase):
    """
    The fakes the scheduler tests use provide their interfaces.
    """

    def test_fakes(self):
        """
        L{FakeAddressResolver} provides L{IAddressResolver} and
        L{FakeDeliveryAgent} provides L{IDeliveryAgent}.
        """
        self.assertTrue(verifyObject(IAddressResolver, FakeAddressResolver()))
        self.assertTrue(verifyObject(IDeliveryAgent, FakeDeliveryAgent()))


class SchedulerTests(SchedulerTestMixin, unittest.TestCase):
    """
    Tests for L{Scheduler}: from IQDB through AQ to a final state.
    """

    def setUp(self):
        self.setUpScheduler()

    def test_delivered(self):
        """
        The recipients of a transaction that share their routes go to the
        delivery agent in one delivery transaction; once delivered, the
        transaction leaves the store and AQ is empty.
        """
        ta = self.queue(("b@y.test", "c@y.test"))
        [tx] = self.agent.transactions
        self.assertEqual(tx["ss_ta"], ta.id)
        self.assertEqual(tx["sender"], "a@x.test")
        self.assertEqual(tx["routes"], [ROUTE])
        self.assertEqual(
            [(r["address"], r["index"]) for r in tx["recipients"]],
            [("b@y.test", 0), ("c@y.test", 1)],
        )
        self.assertEqual(self.states(ta), ["delivered", "delivered"])
        self.assertNotIn(ta.id, self.store.transactions)
        self.assertEqual((self.scheduler.active, self.scheduler.delivered), (0, 2))
        self.assertEqual(self.scheduler.deliveries, 1)
        self.clock.advance(0.01)
        self.assertFalse(self.cdb.exists(ta.id))

    def test_groupedByRoutes(self):
        """
        Recipients of one transaction with different routes make one
        delivery transaction per route list.
        """
        self.queue(("b@y.test", "c@z.test", "d@y.test"))
        self.assertEqual(
            [
                ([r["address"] for r in tx["recipients"]], tx["routes"])
                for tx in self.agent.transactions
            ],
            [(["b@y.test", "d@y.test"], [ROUTE]), (["c@z.test"], [OTHER])],
        )

    def test_aqMaxEntries(self):
        """
        At most C{AQ_max_entries} recipients are in AQ; the others wait in
        IQDB until an attempt ends.
        """
        self.scheduler.aqMaxEntries = 2
        self.agent.pending = []
        self.queue(("b@y.test", "c@y.test", "d@y.test"))
        self.assertEqual(self.scheduler.active, 2)
        self.assertEqual(self.scheduler.queuedCount(), 1)
        [(tx, d)] = self.agent.pending
        self.assertEqual(len(tx["recipients"]), 2)
        self.agent.pending = None
        d.callback(self.agent.results(tx))
        self.assertEqual(self.scheduler.queuedCount(), 0)
        self.assertEqual(self.scheduler.active, 0)
        self.assertEqual(self.scheduler.delivered, 3)

    def test_temporaryFailureRetried(self):
        """
        A temporary failure is deferred (in DEFEDB) and retried after
        C{retry_min_delay}, then after twice that, at most
        C{retry_max_delay}.
        """
        self.agent.outcome = lambda r: TEMP
        ta = self.queue()
        r = ta.recipients[0]
        self.assertEqual((r.state, r.tries, r.reply), ("deferred", 1, TEMP[2]))
        self.assertEqual(r.nextTry, self.clock.seconds() + 100)
        self.assertEqual(len(self.defedb.loadAll()), 1)
        self.assertEqual(self.scheduler.deferred, 1)
        delays = []
        for _ in range(4):
            before = len(self.agent.transactions)
            delay = round(r.nextTry - self.clock.seconds(), 3)
            self.clock.advance(delay - 1)
            self.assertEqual(len(self.agent.transactions), before)
            self.clock.advance(1)
            self.assertEqual(len(self.agent.transactions), before + 1)
            delays.append(delay)
        self.assertEqual(delays, [100, 200, 400, 400])
        self.agent.outcome = lambda r: ("ok", 250, "250 ok")
        self.clock.advance(400)
        self.assertEqual(r.state, "delivered")
        self.assertEqual(self.defedb.loadAll(), [])

    def test_retryDelay(self):
        """
        L{Scheduler.retryDelay} doubles C{retry_min_delay} per attempt up
        to C{retry_max_delay}.
        """
        self.assertEqual(
            [self.scheduler.retryDelay(n) for n in (0, 1, 2, 3, 4, 50)],
            [100, 100, 200, 400, 400, 400],
        )

    def test_flush(self):
        """
        L{Scheduler.flush} retries the deferred recipients now.
        """
        self.agent.outcome = lambda r: TEMP
        ta = self.queue(("b@y.test", "c@y.test"))
        self.agent.outcome = lambda r: ("ok", 250, "250 ok")
        self.assertEqual(self.scheduler.flush(ta), 2)
        self.clock.advance(0)
        self.assertEqual(self.states(ta), ["delivered", "delivered"])
        self.assertEqual(self.scheduler.flush(), 0)

    def test_permanentFailureBounced(self):
        """
        A permanent failure is bounced to the sender: a report with the
        null sender is queued and the recipient is C{failed}.
        """
        self.agent.outcome = lambda r: PERM
        ta = self.queue()
        [report] = self.reports
        self.assertEqual(report["sender"], "")
        self.assertEqual(report["dsnFor"], ta.id)
        self.assertEqual(report["recipients"][0]["address"], "a@x.test")
        self.assertEqual(self.states(ta), ["failed"])
        self.assertEqual(self.scheduler.failed, 1)

    def test_resolverError(self):
        """
        A resolver's 5xx reply fails the recipient permanently without a
        delivery; a resolver that fails is a temporary failure (451 4.4.3).
        """
        self.resolver.routes.pop("@z.test")
        ta = self.queue(("b@z.test",))
        self.assertEqual(self.agent.transactions, [])
        self.assertEqual(self.states(ta), ["failed"])
        self.assertEqual(ta.recipients[0].code, 550)
        self.resolver.resolveRecipient = lambda address: defer.fail(
            RuntimeError("down")
        )
        ta = self.queue()
        r = ta.recipients[0]
        self.assertEqual((r.state, r.code), ("deferred", 451))
        self.assertIn("4.4.3", r.reply)
        self.assertTrue(
            any("ActiveQueue.resolve" in line for line in self.sink.lines())
        )

    def test_noResult(self):
        """
        A recipient the delivery agent gives no result for is a temporary
        failure.
        """
        self.agent.deliver = lambda tx: defer.succeed([])
        ta = self.queue()
        r = ta.recipients[0]
        self.assertEqual(
            (r.state, r.reply), ("deferred", "451 4.4.0 no result from delivery agent")
        )

    def test_deleteRequested(self):
        """
        A recipient whose delete was requested while it was being
        delivered is deleted, whatever the result.
        """
        self.agent.pending = []
        self.agent.outcome = lambda r: TEMP
        ta = self.queue()
        ta.recipients[0].deleteRequested = True
        [(tx, d)] = self.agent.pending
        d.callback(self.agent.results(tx))
        self.assertEqual(self.states(ta), ["deleted"])
        self.assertNotIn(ta.id, self.store.transactions)

    def test_stop(self):
        """
        L{Scheduler.stop} cancels every timer: retries, slot waits and
        bounce collections; nothing moves to AQ afterwards.
        """
        self.agent.outcome = lambda r: TEMP
        ta = self.queue()
        self.clock.advance(0.01)  # the IBDB commit
        self.clock.advance(0.01)  # the sync of the deferral's record
        self.assertTrue(self.clock.getDelayedCalls())
        self.scheduler.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.scheduler.enqueue(ta, [ta.recipients[0]])
        self.assertEqual(self.scheduler.active, 0)
        self.assertEqual(self.scheduler.queuedCount(), 1)


class DeliveryTimeoutTests(SchedulerTestMixin, unittest.TestCase):
    """
    Tests for C{delivery_timeout}.
    """

    def test_deliveryTimeout(self):
        """
        A delivery agent that gives no result within C{delivery_timeout}
        is a temporary failure.
        """
        self.setUpScheduler(deliveryTimeout=30)
        self.agent.pending = []
        ta = self.queue()
        self.clock.advance(29)
        self.assertEqual(self.states(ta), ["active"])
        self.clock.advance(1)
        self.assertEqual(self.states(ta), ["deferred"])
        self.assertEqual(ta.recipients[0].reply, "451 4.4.7 delivery timeout")


class BounceTimingTests(SchedulerTestMixin, unittest.TestCase):
    """
    Tests for when L{Scheduler} bounces and warns.
    """

    def test_collectedForDsnMaxDelay(self):
        """
        A failure waits for the recipients of its transaction still queued
        or being delivered, and their failures within C{DSN_max_delay} go
        in the same bounce.
        """
        self.setUpScheduler(dsnMaxDelay=60)
        self.scheduler.aqMaxEntries = 1
        self.agent.pending = []
        self.agent.outcome = lambda r: PERM
        ta = self.queue(("b@y.test", "c@y.test"))
        tx, d = self.agent.pending.pop()
        d.callback(self.agent.results(tx))
        self.assertEqual(self.states(ta), ["bouncing", "active"])
        self.clock.advance(59)
        self.assertEqual(self.reports, [])
        tx, d = self.agent.pending.pop()
        d.callback(self.agent.results(tx))
        [report] = self.reports
        self.assertEqual(self.states(ta), ["failed", "failed"])
        with self.cdb.open(report["id"]) as f:
            data = f.read()
        self.assertIn(b"rfc822; b@y.test", data)
        self.assertIn(b"rfc822; c@y.test", data)

    def test_dsnMaxDelayExpires(self):
        """
        Failures are bounced C{DSN_max_delay} seconds after the first, even
        if other recipients of the transaction are still busy.
        """
        self.setUpScheduler(dsnMaxDelay=60)
        self.scheduler.aqMaxEntries = 1
        self.agent.pending = []
        self.agent.outcome = lambda r: PERM
        ta = self.queue(("b@y.test", "c@y.test"))
        tx, d = self.agent.pending.pop()
        d.callback(self.agent.results(tx))
        self.clock.advance(60)
        self.assertEqual(len(self.reports), 1)
        self.assertEqual(self.states(ta), ["failed", "active"])
        tx, d = self.agent.pending.pop()
        d.callback(self.agent.results(tx))
        self.assertEqual(len(self.reports), 2)
        self.assertEqual(self.states(ta), ["failed", "failed"])

    def test_bounceWhenNothingBusy(self):
        """
        The failures of a transaction with nothing else in progress are
        bounced at once, in one report.
        """
        self.setUpScheduler(dsnMaxDelay=60)
        self.agent.outcome = lambda r: PERM
        ta = self.queue(("b@y.test", "c@z.test"))
        self.assertEqual(len(self.reports), 1)
        self.assertEqual(self.states(ta), ["failed", "failed"])

    def test_queuereturnTimeout(self):
        """
        A recipient still failing temporarily C{queuereturn_timeout} after
        arrival is bounced, not deferred again.
        """
        self.setUpScheduler(queuereturnTimeout=250)
        self.agent.outcome = lambda r: TEMP
        ta = self.queue()
        self.clock.advance(100)
        self.assertEqual(self.states(ta), ["deferred"])
        self.assertEqual(self.reports, [])
        self.clock.advance(200)
        self.assertEqual(self.states(ta), ["failed"])
        self.assertEqual(len(self.reports), 1)
        [failure] = ta.recipients[0].failures
        self.assertEqual(failure["reply"], TEMP[2])

    def test_delayWarning(self):
        """
        A recipient still deferred after C{queuedelay_timeout} gets one
        delay warning, stored with it.
        """
        self.setUpScheduler(queuedelayTimeout=150)
        self.agent.outcome = lambda r: TEMP
        ta = self.queue()
        self.clock.advance(100)
        self.assertEqual(self.reports, [])
        self.clock.advance(200)
        self.assertEqual(len(self.reports), 1)
        self.assertTrue(ta.recipients[0].warned)
        self.clock.advance(400)
        self.assertEqual(len(self.reports), 1)
        self.assertTrue(any("kind=delayed" in line for line in self.sink.lines()))

    def test_notifyNever(self):
        """
        NOTIFY=NEVER, or a NOTIFY without FAILURE: a permanent failure is
        not bounced (logged with dsn=none), the recipient is C{failed}.
        """
        self.setUpScheduler()
        self.agent.outcome = lambda r: PERM
        for notify in ("NEVER", "SUCCESS,DELAY"):
            ta = self.queue(notify=notify)
            self.assertEqual(self.reports, [])
            self.assertEqual(self.states(ta), ["failed"])
        self.assertEqual(
            len([line for line in self.sink.lines() if "dsn=none" in line]), 2
        )

    def test_notifyDelay(self):
        """
        Delay warnings only for recipients whose NOTIFY has DELAY (or who
        have no NOTIFY); C{warned} is set either way.
        """
        self.setUpScheduler(queuedelayTimeout=150)
        self.agent.outcome = lambda r: TEMP
        quiet = self.queue(notify="FAILURE")
        told = self.queue(notify="DELAY")
        self.clock.advance(300)
        [report] = self.reports
        self.assertTrue(quiet.recipients[0].warned)
        self.assertTrue(told.recipients[0].warned)
        self.assertEqual(report["dsnFor"], told.id)

    def test_successNotice(self):
        """
        NOTIFY=SUCCESS: a delivered recipient gets a success notice
        (C{Action: relayed} for an esmtp route); others get none.
        """
        self.setUpScheduler()
        self.agent.outcome = lambda r: ("ok", 250, "250 ok")
        self.queue(notify="FAILURE")
        self.queue()
        self.assertEqual(self.reports, [])
        ta = self.queue(notify="SUCCESS")
        [report] = self.reports
        self.assertEqual(report["dsnFor"], ta.id)
        self.assertEqual(self.states(ta), ["delivered"])
        self.assertTrue(any("kind=success" in line for line in self.sink.lines()))
        with self.cdb.open(report["id"]) as f:
            data = f.read()
        self.assertIn(b"Action: relayed\r\n", data)
        self.assertIn(b"Content-Type: text/rfc822-headers", data)

    def test_noWarningWhenReturnComesFirst(self):
        """
        No delay warning is sent if C{queuedelay_timeout} is not below
        C{queuereturn_timeout}.
        """
        self.setUpScheduler(queuedelayTimeout=150, queuereturnTimeout=150)
        self.agent.outcome = lambda r: TEMP
        ta = self.queue()
        self.clock.advance(100)
        self.clock.advance(200)
        self.assertFalse(ta.recipients[0].warned)
        self.assertFalse(any("kind=delayed" in line for line in self.sink.lines()))

    def test_bounceRetried(self):
        """
        A bounce that cannot be queued is logged and tried again after
        C{retry_min_delay}; the recipient stays C{bouncing} meanwhile.
        """
        self.setUpScheduler()
        failing = [OSError("disk full")]

        def submit(envelope):
            if failing:
                return defer.fail(failing.pop())
            return self.submitReport(envelope)

        self.bouncer.submit = submit
        self.agent.outcome = lambda r: PERM
        ta = self.queue()
        self.assertEqual(self.states(ta), ["bouncing"])
        self.assertTrue(
            any("BounceSchedule.send" in line for line in self.sink.lines())
        )
        self.clock.advance(100)
        self.assertEqual(self.states(ta), ["failed"])


class SlowStartTests(SchedulerTestMixin, unittest.TestCase):
    """
    Tests for the wait for a connection slot (C{wait_for_server}).
    """

    def setUp(self):
        self.setUpScheduler(
            smtpcInitialConnections=1, smtpcMaxConnections=2, waitForServer=30
        )
        self.agent.pending = []

    def test_waitForSlot(self):
        """
        A delivery transaction to a destination without a free slot
        starts when a delivery there ends.
        """
        self.queue()
        self.queue()
        self.assertEqual(len(self.agent.pending), 1)
        tx, d = self.agent.pending.pop()
        d.callback(self.agent.results(tx))
        self.assertEqual(len(self.agent.pending), 1)

    def test_waitExpires(self):
        """
        A delivery transaction that waits C{wait_for_server} seconds for a
        slot is a temporary failure.
        """
        self.queue()
        ta = self.queue()
        self.clock.advance(30)
        r = ta.recipients[0]
        self.assertEqual(r.state, "deferred")
        self.assertEqual(
            r.reply, "451 4.4.5 too many concurrent deliveries to 127.0.0.2"
        )
        self.assertEqual(len(self.agent.pending), 1)

    def test_expiredRetriedWhenFree(self):
        """
        A recipient whose wait expired is deferred, but tried again as
        soon as a delivery to its destination ends and nobody waits, not
        after C{retry_min_delay}; it is then delivered.
        """
        self.queue()
        ta = self.queue()
        self.clock.advance(30)
        r = ta.recipients[0]
        self.assertEqual(r.state, "deferred")
        self.assertGreater(r.nextTry, self.clock.seconds() + 60)
        tx, d = self.agent.pending.pop()
        d.callback(self.agent.results(tx))
        self.clock.advance(0)
        self.assertEqual(r.state, "active")
        tx, d = self.agent.pending.pop()
        self.assertEqual(tx["ss_ta"], ta.id)
        d.callback(self.agent.results(tx))
        self.assertEqual(r.state, "delivered")
        self.assertEqual(self.scheduler.destinations.parked("127.0.0.2"), 0)

    def test_retryParkedFails(self):
        """
        A parked recipient that cannot be scheduled again is logged; the
        delivery whose end had room for it still ends.
        """
        self.queue()
        ta = self.queue()
        self.clock.advance(30)

        def broken(ta, r):
            raise RuntimeError("broken")

        self.scheduler.retries.retryAt = broken
        tx, d = self.agent.pending.pop()
        d.callback(self.agent.results(tx))
        self.assertEqual(self.scheduler.active, 0)
        self.assertEqual(ta.recipients[0].state, "deferred")
        self.assertIn("func=Scheduler.retryParked", "\n".join(self.sink.lines()))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_expiredFailsAgain(self):
        """
        A parked recipient that is no longer deferred with the expiry's
        reply (tried meanwhile, failed otherwise) is left to its own
        next-time-to-try.
        """
        self.queue()
        ta = self.queue()
        self.clock.advance(30)
        r = ta.recipients[0]
        r.reply = "451 4.4.1 something else"
        nextTry = r.nextTry
        tx, d = self.agent.pending.pop()
        d.callback(self.agent.results(tx))
        self.clock.advance(0)
        self.assertEqual((r.state, r.nextTry), ("deferred", nextTry))
        self.assertEqual(self.agent.pending, [])


class WaitingQueueTests(unittest.TestCase):
    """
    Tests for L{WaitingQueue} (IQDB).
    """

    def test_take(self):
        """
        L{WaitingQueue.take} gives at most C{room} queued recipients,
        oldest first, grouped by transaction; they become C{active}.
        """
        q = WaitingQueue()
        a = transaction("SA", ["1@y.test", "2@y.test"])
        b = transaction("SB", ["3@y.test"])
        q.add(a, [a.recipients[0]])
        q.add(b, [b.recipients[0]])
        q.add(a, [a.recipients[1]])
        self.assertEqual(q.count(), 3)
        groups = q.take(2)
        self.assertEqual(
            [(ta.id, [r.index for r in rcpts]) for ta, rcpts in groups],
            [("SA", [0]), ("SB", [0])],
        )
        self.assertEqual(a.recipients[0].state, "active")
        self.assertEqual(q.count(), 1)
        self.assertEqual([(ta.id, len(rs)) for ta, rs in q.take(5)], [("SA", 1)])
        self.assertEqual(q.take(5), [])

    def test_staleEntries(self):
        """
        A recipient no longer queued, queued twice, or of a finished
        transaction is dropped and takes no room.
        """
        q = WaitingQueue()
        a = transaction("SA", ["1@y.test", "2@y.test", "3@y.test"])
        done = transaction("SD", ["4@y.test"])
        q.add(a, list(a.recipients.values()))
        q.add(a, [a.recipients[2]])
        q.add(done, [done.recipients[0]])
        done.finished = True
        a.recipients[0].state = "held"
        self.assertEqual(q.count(), 4)
        [(ta, rcpts)] = q.take(10)
        self.assertEqual([r.index for r in rcpts], [1, 2])
        self.assertEqual(q.count(), 0)

    def test_reaches(self):
        """
        L{WaitingQueue.reaches} is C{count() >= limit}, and does not walk
        the entries while there are fewer than C{limit} of them (QMGR asks
        for every new transaction).
        """
        q = WaitingQueue()
        a = transaction("SA", ["1@y.test", "2@y.test", "3@y.test"])
        q.add(a, list(a.recipients.values()))
        self.assertTrue(q.reaches(3))
        self.assertFalse(q.reaches(4))
        a.recipients[0].state = "held"
        self.assertFalse(q.reaches(3))
        self.assertTrue(q.reaches(2))
        walked = []
        q.count = lambda: walked.append(1) or 0
        self.assertFalse(q.reaches(4))
        self.assertEqual(walked, [])


class RetryScheduleTests(unittest.TestCase):
    """
    Tests for L{RetrySchedule}.
    """

    def setUp(self):
        self.clock = Clock()

        class Store:
            def __init__(self):
                self.transactions = {}

        self.store = Store()
        self.due = []
        self.retries = RetrySchedule(
            self.clock,
            self.store,
            lambda ta, rcpts: self.due.append((ta.id, [r.index for r in rcpts])),
            retryMinDelay=10,
            retryMaxDelay=25,
            queuereturnTimeout=100,
        )
        self.ta = transaction("SA", ["1@y.test", "2@y.test"], received=0)
        self.store.transactions["SA"] = self.ta
        for r in self.ta.recipients.values():
            r.state = "deferred"

    def test_due(self):
        """
        Deferred recipients come back at their next-time-to-try, grouped
        by transaction, earliest first.
        """
        r0, r1 = self.ta.recipients[0], self.ta.recipients[1]
        r0.nextTry, r1.nextTry = 20, 10
        self.retries.retryAt(self.ta, r0)
        self.retries.retryAt(self.ta, r1)
        self.clock.advance(10)
        self.assertEqual(self.due, [("SA", [1])])
        self.clock.advance(10)
        self.assertEqual(self.due, [("SA", [1]), ("SA", [0])])

    def test_stale(self):
        """
        A recipient that is no longer deferred, or was given a later time,
        or whose transaction is gone, does not come back.
        """
        r0, r1 = self.ta.recipients[0], self.ta.recipients[1]
        r0.nextTry = r1.nextTry = 10
        self.retries.retryAt(self.ta, r0)
        self.retries.retryAt(self.ta, r1)
        r0.state = "held"
        r1.nextTry = 30
        self.clock.advance(10)
        self.assertEqual(self.due, [])
        r0.state = "deferred"
        r0.nextTry = 20
        self.retries.retryAt(self.ta, r0)
        del self.store.transactions["SA"]
        self.clock.advance(10)
        self.assertEqual(self.due, [])

    def test_delayAndExpiry(self):
        """
        The delay doubles from C{retry_min_delay} up to C{retry_max_delay};
        a transaction expires C{queuereturn_timeout} after it arrived.
        """
        self.assertEqual(
            [self.retries.retryDelay(n) for n in (1, 2, 3)], [10.0, 20.0, 25.0]
        )
        self.assertFalse(self.retries.expired(self.ta, 99))
        self.assertTrue(self.retries.expired(self.ta, 100))

    def test_stop(self):
        """
        After L{RetrySchedule.stop} no timer is left and none is armed.
        """
        r0 = self.ta.recipients[0]
        r0.nextTry = 10
        self.retries.retryAt(self.ta, r0)
        self.retries.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.retries.retryAt(self.ta, r0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DestinationQueuesTests(unittest.TestCase):
    """
    Tests for L{DestinationQueues} with a real L{SlowStart}.
    """

    def setUp(self):
        self.clock = Clock()
        self.queues = DestinationQueues(
            self.clock,
            SlowStart(self.clock, 1, 2, cacheSize=OCC_MAX_ENTRIES, deadTime=0),
            waitForServer=30,
        )
        self.events = []

    def request(self, dest, name):
        return self.queues.request(
            dest,
            lambda: self.events.append(("start", name)),
            lambda: self.events.append(("expire", name)),
        )

    def test_startWhenFree(self):
        """
        A request starts at once while slow start allows it, else waits
        for L{DestinationQueues.done}, first in first out; other
        destinations are not held up.
        """
        self.assertTrue(self.request("a", 1))
        self.assertFalse(self.request("a", 2))
        self.assertFalse(self.request("a", 3))
        self.assertTrue(self.request("b", 4))
        self.assertEqual(self.queues.waiting("a"), 2)
        self.queues.done("a", True)
        self.assertEqual(
            self.events, [("start", 1), ("start", 4), ("start", 2), ("start", 3)]
        )
        self.assertEqual(self.queues.waiting(), 0)

    def test_expire(self):
        """
        A request that waits C{wait_for_server} seconds expires.
        """
        self.request("a", 1)
        self.request("a", 2)
        self.clock.advance(30)
        self.assertEqual(self.events, [("start", 1), ("expire", 2)])
        self.assertEqual(self.queues.waiting(), 0)
        self.queues.done("a", True)
        self.assertEqual(len(self.events), 2)

    def test_parkedWhenRoom(self):
        """
        Parked entries go to C{onRoom} when a delivery to their
        destination ends and nobody waits for it, as many as it has room
        for; not while others wait.
        """
        rooms = []
        self.queues.onRoom = rooms.append
        self.request("a", 1)
        self.request("a", 2)
        self.request("a", 3)
        self.queues.park("a", ["w", "x", "y", "z"])
        self.assertEqual(self.queues.parked("a"), 4)
        # 1 ends, the limit grows to 2: 2 and 3 start, none waits
        self.queues.done("a", True)
        self.assertEqual(rooms, [])
        # 2 ends: room for one
        self.queues.done("a", True)
        self.assertEqual(rooms, [["w"]])
        # 3 ends: room for two
        self.queues.done("a", True)
        self.assertEqual(rooms, [["w"], ["x", "y"]])
        self.assertEqual(self.queues.parked("a"), 1)
        self.request("a", 4)
        self.request("a", 5)
        self.request("a", 6)
        # 4 ends and 6 starts: full again
        self.queues.done("a", True)
        self.assertEqual(len(rooms), 2)
        self.queues.done("a", True)
        self.assertEqual(rooms[-1], ["z"])
        self.assertEqual(self.queues.parked("a"), 0)

    def test_stop(self):
        """
        L{DestinationQueues.stop} forgets the waiting requests and their
        timers.
        """
        self.request("a", 1)
        self.request("a", 2)
        self.queues.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.queues.done("a", True)
        self.assertEqual(self.events, [("start", 1)])
