# -*- test-case-name: smx.queue.test.test_qmgr -*-
"""
Tests for L{smx.queue.qmgr.QueueManager} with real IBDB files, a real
Berkeley DB DEFEDB and real CDB files in temporary directories, time from a
L{Clock}, and the fake resolver and delivery agent.
"""

import email
import os

from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.interfaces import IQueueManager
from smx.log import Logger, MemorySink
from smx.mail.testing import FakeDeliveryAgent
from smx.maps.testing import FakeAddressResolver
from smx.queue import ibdb
from smx.queue.cdb import FileContentStore
from smx.queue.connections import OPEN_GRACE
from smx.queue.qmgr import STOP_WAIT, QueueManager
from smx.queue.testing import defaultQueueSettings

ROUTE = {
    "mailer": "esmtp",
    "host": "mx.y.test",
    "address": "127.0.0.2",
    "port": 25,
    "preference": 10,
}
CONTENT = b"From: a@x.test\r\nSubject: test\r\n\r\nhello\r\n"


class QueueManagerTestMixin:
    """
    A L{QueueManager} with the settings of the default configuration,
    some of them changed, over real files in a temporary directory.
    """

    def setUpQueue(self, statvfs=None, **changes):
        """
        @param statvfs: the C{statvfs} of the queue manager, if not the
            real one.
        @param changes: fields of the L{QueueSettings} to change.
        """
        self.clock = Clock()
        self.clock.advance(1000000)
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.cdb = FileContentStore(self.dir)
        self.resolver = FakeAddressResolver()
        self.resolver.routes["@y.test"] = [ROUTE]
        self.agent = FakeDeliveryAgent()
        self.sink = MemorySink()
        self.counter = 0
        self.statvfs = statvfs
        self.changes = dict(
            retryMinDelay=100,
            retryMaxDelay=400,
            queuereturnTimeout=10000,
            queuedelayTimeout=20000,
            dsnMaxDelay=0,
            hostname="mx.smx.test",
            # no reactor to listen with: the Clock is not one
            controlSocket=None,
        )
        self.changes.update(changes)
        self.qmgr = self.makeQueueManager()
        self.qmgr.startService()
        self.addCleanup(self.stop)

    def makeQueueManager(self):
        plumbing = {} if self.statvfs is None else {"statvfs": self.statvfs}
        return QueueManager(
            self.clock,
            defaultQueueSettings(self.dir, **self.changes),
            self.cdb,
            self.resolver,
            self.agent,
            logger=Logger("qmgr", level=14, sink=self.sink),
            **plumbing,
        )

    def stop(self):
        if self.qmgr.running:
            self.qmgr.stopService()
            self.clock.advance(STOP_WAIT)

    def restart(self):
        self.qmgr.stopService()
        # a delivery left under way: QMGR closes after STOP_WAIT (as a crash)
        self.clock.advance(STOP_WAIT)
        self.qmgr = self.makeQueueManager()
        self.qmgr.startService()

    def submit(
        self,
        recipients=("b@y.test",),
        sender="a@x.test",
        commit=True,
        contentPending=False,
        session="S0",
        **fields,
    ):
        self.counter += 1
        taId = "S%016X00" % (0x1000 + self.counter,)
        w = self.cdb.createWriter(taId)
        w.write(CONTENT)
        if contentPending:
            # the content sync is the caller's: see PendingContentTests
            self.writer = w
        else:
            self.successResultOf(w.commit())
        envelope = {
            "id": taId,
            "session": session,
            "sender": sender,
            "recipients": [
                {"address": a, "index": i} for i, a in enumerate(recipients)
            ],
            "size": len(CONTENT),
            "client": "127.0.0.1",
            "received": self.clock.seconds(),
            "bodyType": "7BIT",
        }
        envelope.update(fields)
        if contentPending:
            envelope["contentPending"] = True
        d = self.qmgr.commitTransaction(envelope)
        if commit:
            self.clock.advance(0.01)
            self.assertIsNone(self.successResultOf(d))
        return taId, d


class QueueManagerTests(QueueManagerTestMixin, unittest.TestCase):
    """
    Tests for the flow of transactions through L{QueueManager}.
    """

    def setUp(self):
        self.setUpQueue()

    def test_interface(self):
        """
        The queue manager provides L{IQueueManager}.
        """
        self.assertTrue(verifyObject(IQueueManager, self.qmgr))

    def test_commitWaitsForIBDB(self):
        """
        C{commitTransaction} fires only after the IBDB group commit.
        """
        taId, d = self.submit(commit=False)
        self.assertNoResult(d)
        self.assertEqual(self.agent.transactions, [])
        self.clock.advance(0.01)
        self.successResultOf(d)
        records = list(ibdb.readLog(self.qmgr.ibdbDirectory, self.fail))
        self.assertEqual(records[0][0], ibdb.TRANSACTION)
        self.assertEqual(records[0][1]["id"], taId)

    def test_badEnvelope(self):
        """
        An envelope of the wrong shape is refused with a C{ValueError}
        that names the field (L{smx.values}), and nothing is queued.
        """
        for envelope, words in (
            ({"id": "S1", "recipients": [{"address": 7}]}, "'address'"),
            ({"id": "S1", "recipients": [{"address": "a@b"}], "size": "9"}, "'size'"),
            ({"recipients": [{"address": "a@b"}]}, "'id'"),
        ):
            e = self.failureResultOf(self.qmgr.commitTransaction(envelope), ValueError)
            self.assertIn("bad envelope", str(e.value))
            self.assertIn(words, str(e.value))
        self.assertEqual(self.successResultOf(self.qmgr.listQueue()), [])

    def test_deliveredAndCleanedUp(self):
        """
        An accepted transaction is delivered at once through the delivery
        agent, grouped by destination, and its content removed afterwards.
        """
        taId, _ = self.submit(recipients=("b@y.test", "c@y.test"))
        [transaction] = self.agent.transactions
        self.assertEqual(transaction["ss_ta"], taId)
        self.assertEqual(transaction["routes"], [ROUTE])
        self.assertEqual(
            [r["address"] for r in transaction["recipients"]], ["b@y.test", "c@y.test"]
        )
        self.clock.advance(0.01)
        self.assertFalse(self.cdb.exists(taId))
        self.assertEqual(self.successResultOf(self.qmgr.listQueue()), [])

    def test_doneWithoutStates(self):
        """
        Recipients that finish their transaction are logged by its C{D}
        record alone; those that leave others to go get an C{R} record of
        their states.  A restart finds neither transaction to deliver.
        """
        self.resolver.routes["@x.test"] = [ROUTE]
        self.agent.outcome = lambda r: (
            ("temp", 451, "451 later")
            if r["address"] == "a@x.test"
            else ("ok", 250, "250 ok")
        )
        done, _ = self.submit(recipients=("b@y.test", "c@y.test"))
        partly, _ = self.submit(recipients=("b@y.test", "a@x.test"))
        self.clock.advance(0.01)
        kinds = [
            (kind, p["id"])
            for kind, p in ibdb.readLog(self.qmgr.ibdbDirectory, self.fail)
        ]
        self.assertEqual(
            [k for k, taId in kinds if taId == done],
            [ibdb.TRANSACTION, ibdb.DONE],
        )
        self.assertIn((ibdb.RECIPIENTS, partly), kinds)
        self.assertNotIn((ibdb.DONE, partly), kinds)
        sent = len(self.agent.transactions)
        self.restart()
        self.clock.advance(0.01)
        self.assertNotIn(done, [t["ss_ta"] for t in self.agent.transactions[sent:]])
        [queued] = self.successResultOf(self.qmgr.listQueue())
        self.assertEqual(queued["id"], partly)

    def test_temporaryFailureRetried(self):
        """
        A temporary failure goes to DEFEDB and is retried after
        C{retry_min_delay}, then after twice that.
        """
        self.agent.outcome = lambda r: ("temp", 451, "451 4.3.0 later")
        taId, _ = self.submit()
        self.assertEqual(len(self.agent.transactions), 1)
        [(envelope, rcpts)] = self.qmgr.defedb.loadAll()
        self.assertEqual(envelope["id"], taId)
        self.clock.advance(99)
        self.assertEqual(len(self.agent.transactions), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.agent.transactions), 2)
        self.clock.advance(199)
        self.assertEqual(len(self.agent.transactions), 2)
        self.agent.outcome = lambda r: ("ok", 250, "250 ok")
        self.clock.advance(1)
        self.assertEqual(len(self.agent.transactions), 3)
        self.clock.advance(0.01)
        self.assertEqual(self.qmgr.defedb.loadAll(), [])
        self.assertFalse(self.cdb.exists(taId))

    def test_permanentFailureBounces(self):
        """
        A permanent failure produces an RFC 3464 bounce to the sender,
        queued as a new transaction with the null sender.
        """
        self.agent.outcome = lambda r: (
            ("perm", 550, "550 5.1.1 no such user")
            if r["address"] == "b@y.test"
            else ("ok", 250, "250 ok")
        )
        self.resolver.routes["@x.test"] = [ROUTE]
        taId, _ = self.submit()
        self.clock.advance(0.01)
        bounces = [t for t in self.agent.transactions if t["sender"] == ""]
        self.assertEqual(len(bounces), 1)
        bounce = bounces[0]
        self.assertEqual(bounce["recipients"][0]["address"], "a@x.test")
        # the bounce was delivered, so its content is gone; check the log
        # of the DSN instead through a fresh bounce kept in the queue
        self.assertTrue(
            any("dsn_for=%s" % (taId,) in line for line in self.sink.lines())
        )

    def test_doubleBounce(self):
        """
        A bounce that fails permanently is logged as a double bounce and
        dropped: nothing stays queued and no bounce of the bounce is made.
        """
        self.agent.outcome = lambda r: ("perm", 550, "550 5.1.1 no such user")
        self.resolver.routes["@x.test"] = []  # the bounce has no route
        taId, _ = self.submit()
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(self.qmgr.listQueue()), [])
        self.assertEqual(self.qmgr.bouncer.sent, 1)
        self.assertEqual(self.qmgr.bouncer.dropped, 1)
        self.assertTrue(any("double bounce" in l for l in self.sink.lines()))

    def test_bounceMessage(self):
        """
        The DSN handed to the delivery agent is a valid RFC 3464 report.
        """
        seen = []

        def outcome(r):
            if r["address"] == "a@x.test":
                return ("temp", 451, "451 later")
            return ("perm", 550, "550 5.1.1 no such user")

        self.agent.outcome = outcome
        self.resolver.routes["@x.test"] = [ROUTE]
        taId, _ = self.submit()
        self.clock.advance(0.01)
        [dsnTa] = self.successResultOf(self.qmgr.listQueue())
        self.assertEqual(dsnTa["sender"], "")
        self.assertEqual(dsnTa["dsnFor"], taId)
        with self.cdb.open(dsnTa["id"]) as f:
            msg = email.message_from_bytes(f.read())
        self.assertEqual(msg.get_content_type(), "multipart/report")
        status = msg.get_payload()[1]
        self.assertEqual(status.get_content_type(), "message/delivery-status")
        block = status.get_payload()[1]
        self.assertEqual(block["Final-Recipient"], "rfc822; b@y.test")
        self.assertEqual(block["Action"], "failed")
        self.assertEqual(block["Status"], "5.1.1")
        self.assertEqual(block["Remote-MTA"], "dns; 127.0.0.1")
        self.clock.advance(0.01)
        self.assertFalse(self.cdb.exists(taId))

    def test_noBounceForNullSender(self):
        """
        A failed message from the null sender produces no bounce.
        """
        self.agent.outcome = lambda r: ("perm", 550, "550 5.1.1 no")
        self.submit(sender="")
        self.clock.advance(0.01)
        self.assertEqual(len(self.agent.transactions), 1)
        self.assertEqual(self.successResultOf(self.qmgr.listQueue()), [])

    def test_queuereturnTimeout(self):
        """
        A recipient still failing temporarily after C{queuereturn_timeout}
        is bounced with status 4.4.7.
        """
        self.agent.outcome = lambda r: (
            ("temp", 451, "451 4.3.0 later")
            if r["address"] == "b@y.test"
            else ("temp", 451, "451 later")
        )
        self.resolver.routes["@x.test"] = [ROUTE]
        taId, _ = self.submit()
        for i in range(40):
            self.clock.advance(400)
        queue = self.successResultOf(self.qmgr.listQueue())
        self.assertNotIn(taId, [t["id"] for t in queue])
        dsns = [t for t in queue if t["dsnFor"] == taId]
        self.assertEqual(len(dsns), 1)
        with self.cdb.open(dsns[0]["id"]) as f:
            msg = email.message_from_bytes(f.read())
        self.assertEqual(msg.get_payload()[1].get_payload()[1]["Status"], "4.4.7")

    def test_delayWarning(self):
        """
        After C{queuedelay_timeout} the sender gets one delay warning.
        """
        self.restartWith(queuedelayTimeout=150)
        self.agent.outcome = lambda r: (("temp", 451, "451 later"))
        self.resolver.routes["@x.test"] = []
        taId, _ = self.submit()
        self.clock.advance(100)
        self.assertFalse(any("kind=delayed" in l for l in self.sink.lines()))
        self.clock.advance(200)
        self.clock.advance(400)
        warnings = [l for l in self.sink.lines() if "kind=delayed" in l]
        self.assertEqual(len(warnings), 1)

    def restartWith(self, statvfs=None, **changes):
        if statvfs is not None:
            self.statvfs = statvfs
        self.changes.update(changes)
        self.restart()

    def test_slowStart(self):
        """
        At most C{smtpc_initial_connections} deliveries to one address run
        at once; the others wait for a slot.
        """
        self.restartWith(smtpcInitialConnections=1, smtpcMaxConnections=2)
        self.agent.pending = []
        self.submit()
        self.submit()
        self.assertEqual(len(self.agent.pending), 1)
        transaction, d = self.agent.pending.pop()
        d.callback(self.agent.results(transaction))
        self.assertEqual(len(self.agent.pending), 1)

    def test_deliveryTimeout(self):
        """
        A delivery that gives no result within C{delivery_timeout} is a
        temporary failure.
        """
        self.restartWith(deliveryTimeout=30)
        self.agent.pending = []
        taId, _ = self.submit()
        self.clock.advance(30)
        [t] = self.successResultOf(self.qmgr.listQueue())
        self.assertEqual(t["recipients"][0]["state"], "deferred")
        self.assertIn("timeout", t["recipients"][0]["reply"])

    def test_recoveryAfterRestart(self):
        """
        Queued and deferred recipients survive a restart and are delivered
        afterwards; old IBDB files are removed.
        """
        self.agent.outcome = lambda r: ("temp", 451, "451 later")
        ta1, _ = self.submit()
        self.agent.pending = []
        ta2, _ = self.submit()
        self.agent.pending = None
        self.agent.outcome = lambda r: ("ok", 250, "250 ok")
        self.restart()
        # ta2 was in delivery at the restart: delivered again at once
        self.assertIn(ta2, [t["ss_ta"] for t in self.agent.transactions[-1:]])
        self.clock.advance(100)
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(self.qmgr.listQueue()), [])
        self.assertEqual(len(ibdb.logFiles(self.qmgr.ibdbDirectory)), 1)

    def test_requireTLSKept(self):
        """
        REQUIRETLS and C{TLS-Required: No} (RFC 8689) of a transaction go
        to every delivery attempt, also after a restart from DEFEDB.
        """
        self.agent.outcome = lambda r: ("temp", 451, "451 later")
        self.submit(requiretls=True)
        self.submit(recipients=("c@y.test",), tlsRequiredNo=True)
        self.submit(recipients=("d@y.test",))
        self.restart()
        self.clock.advance(100)
        self.clock.advance(0.01)
        flags = {
            t["recipients"][0]["address"]: (t["requiretls"], t["tlsRequiredNo"])
            for t in self.agent.transactions[-3:]
        }
        self.assertEqual(
            flags,
            {
                "b@y.test": (True, False),
                "c@y.test": (False, True),
                "d@y.test": (False, False),
            },
        )
        queued = self.successResultOf(self.qmgr.listQueue())
        self.assertEqual([ta["requiretls"] for ta in queued], [True, False, False])

    def test_requireTLSBounce(self):
        """
        The bounce of a REQUIRETLS message is itself sent with REQUIRETLS
        (RFC 8689 §5): never in clear.
        """
        self.agent.outcome = lambda r: (
            ("temp", 451, "451 later")
            if r["address"] == "a@x.test"
            else ("perm", 550, "550 5.7.30 no REQUIRETLS")
        )
        self.resolver.routes["@x.test"] = [ROUTE]
        taId, _ = self.submit(requiretls=True)
        self.clock.advance(0.01)
        [bounce] = self.successResultOf(self.qmgr.listQueue())
        self.assertEqual((bounce["dsnFor"], bounce["requiretls"]), (taId, True))
        self.assertTrue(self.agent.transactions[-1]["requiretls"])

    def test_fullDiskCommit(self):
        """
        An envelope that cannot be written to IBDB fails the commit; the
        queue manager keeps working.
        """
        import errno

        def failing(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.qmgr.log._syncFile = failing
        taId, d = self.submit(commit=False)
        self.clock.advance(0.01)
        self.failureResultOf(d, OSError)
        self.qmgr.log._syncFile = os.fsync
        self.submit()
        self.assertEqual(len(self.agent.transactions), 1)

    def test_control(self):
        """
        hold, release, flush and delete act on queued transactions;
        unknown transactions give L{KeyError}.
        """
        self.agent.outcome = lambda r: ("temp", 451, "451 later")
        taId, _ = self.submit(recipients=("b@y.test", "c@y.test"))
        r = self.successResultOf(self.qmgr.control("hold", taId))
        self.assertEqual(r["recipients"], 2)
        self.successResultOf(self.qmgr.control("release", taId, "c@y.test"))
        self.clock.advance(0)
        self.assertEqual(len(self.agent.transactions), 2)
        self.successResultOf(self.qmgr.control("flush"))
        self.successResultOf(self.qmgr.control("delete", taId))
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(self.qmgr.listQueue()), [])
        self.assertFalse(self.cdb.exists(taId))
        self.failureResultOf(self.qmgr.control("hold", "S0"), KeyError)

    def test_retryReply(self):
        """
        C{retryReply} tries again now the deferred recipients whose last
        reply is the one given (in split mode: no SMTPC process was
        connected), not the others.
        """
        unavailable = "451 4.4.0 delivery agent unavailable"
        self.agent.outcome = lambda r: (
            ("temp", 451, unavailable)
            if r["address"].startswith("b@")
            else ("temp", 451, "451 later")
        )
        self.submit(recipients=("b@y.test", "c@y.test"))
        self.clock.advance(0.01)
        self.assertEqual(len(self.agent.transactions), 1)
        self.agent.outcome = lambda r: ("ok", 250, "250 2.0.0 ok")
        self.assertEqual(self.qmgr.retryReply(unavailable), 1)
        self.clock.advance(0.01)
        self.assertEqual(len(self.agent.transactions), 2)
        self.assertEqual(
            [r["address"] for r in self.agent.transactions[-1]["recipients"]],
            ["b@y.test"],
        )
        self.assertEqual(self.qmgr.retryReply(unavailable), 0)

    def test_localFailuresRetriedAtStart(self):
        """
        A QMGR that starts tries again at once the recipients deferred by
        a failure inside smx (SMAR, no SMTPC, a slot wait), not after
        C{retry_min_delay}; the others keep their next-time-to-try.
        """
        replies = {
            "a@y.test": "451 4.4.3 address resolver failed",
            "b@y.test": "451 4.4.0 delivery agent unavailable",
            "c@y.test": "451 4.4.5 too many concurrent deliveries to 127.0.0.2",
            "d@y.test": "451 4.4.0 next hop busy",
        }
        self.agent.outcome = lambda r: ("temp", 451, replies[r["address"]])
        self.submit(recipients=tuple(replies))
        self.clock.advance(0.01)
        self.agent.outcome = lambda r: ("ok", 250, "250 2.0.0 ok")
        before = len(self.agent.transactions)
        self.restart()
        self.clock.advance(0.01)
        self.assertEqual(
            sorted(
                r["address"]
                for t in self.agent.transactions[before:]
                for r in t["recipients"]
            ),
            ["a@y.test", "b@y.test", "c@y.test"],
        )
        self.assertIn("reason=local failures, rcpts=3", "\n".join(self.sink.lines()))
        [t] = self.successResultOf(self.qmgr.listQueue())
        self.assertEqual(
            [(r["address"], r["state"]) for r in t["recipients"]],
            [("d@y.test", "deferred")],
        )

    def test_holdSurvivesRestart(self):
        """
        A held recipient is still held after a restart (DEFEDB has it),
        is not delivered, and a release after the restart delivers it.
        """
        self.agent.outcome = lambda r: ("temp", 451, "451 later")
        taId, _ = self.submit(recipients=("b@y.test",))
        [t] = self.successResultOf(self.qmgr.listQueue())
        self.assertEqual(t["recipients"][0]["state"], "deferred")
        r = self.successResultOf(self.qmgr.control("hold", taId))
        self.assertEqual(r["recipients"], 1)
        self.restart()
        [t] = self.successResultOf(self.qmgr.listQueue())
        self.assertEqual(t["recipients"][0]["state"], "held")
        self.agent.outcome = lambda r: ("ok", 250, "250 ok")
        delivered = len(self.agent.transactions)
        self.clock.advance(3 * 3600)
        self.assertEqual(len(self.agent.transactions), delivered)
        self.successResultOf(self.qmgr.control("release", taId))
        self.clock.advance(0.01)
        self.assertEqual(len(self.agent.transactions), delivered + 1)
        self.assertEqual(self.successResultOf(self.qmgr.listQueue()), [])

    def test_stopWaitsForDeliveries(self):
        """
        QMGR's stop waits (at most L{STOP_WAIT} seconds) for the deliveries
        under way: a result that arrives meanwhile is recorded in IBDB, so
        the message is not delivered again at the next start; the
        databases are closed (the lock released) only then.
        """
        self.agent.pending = []
        taId, _ = self.submit()
        [(transaction, d)] = self.agent.pending
        stopped = self.qmgr.stopService()
        self.assertNoResult(stopped)
        self.assertIn("waiting for deliveries", "\n".join(self.sink.lines()))
        self.clock.advance(STOP_WAIT / 2)
        d.callback(self.agent.results(transaction))
        self.successResultOf(stopped)
        self.agent.pending = None
        before = len(self.agent.transactions)
        self.qmgr = self.makeQueueManager()
        self.qmgr.startService()
        self.clock.advance(100)
        self.assertEqual(len(self.agent.transactions), before)
        self.assertEqual(self.successResultOf(self.qmgr.listQueue()), [])

    def test_holdQueuedSurvivesRestart(self):
        """A recipient held while queued (never tried) stays held too."""
        self.agent.pending = []
        taId, _ = self.submit(recipients=("b@y.test",))
        # the first attempt hangs: the recipient is active; a second
        # transaction stays queued behind the AQ limit
        self.qmgr.scheduler.aqMaxEntries = 1
        ta2, _ = self.submit(recipients=("c@y.test",))
        [t] = [t for t in self.successResultOf(self.qmgr.listQueue()) if t["id"] == ta2]
        self.assertEqual(t["recipients"][0]["state"], "queued")
        self.successResultOf(self.qmgr.control("hold", ta2))
        self.restart()
        [t] = [t for t in self.successResultOf(self.qmgr.listQueue()) if t["id"] == ta2]
        self.assertEqual(t["recipients"][0]["state"], "held")

    def test_reload(self):
        """
        C{reload} reloads the resolver's maps and the conf map.
        """
        self.successResultOf(self.qmgr.control("reload"))
        self.assertEqual(self.resolver.reloaded, 1)

    def test_reloadHooks(self):
        """
        C{reload} calls the L{QueueManager.reloadHooks} (SMTPS's
        certificates, L{smx.components}).
        """
        called = []
        self.qmgr.reloadHooks.append(lambda: called.append(1))
        self.qmgr.reloadHooks.append(lambda: {"certificate_errors": 2})
        self.assertEqual(
            self.successResultOf(self.qmgr.control("reload")),
            {"command": "reload", "reloaded": True, "certificate_errors": 2},
        )
        self.assertEqual(called, [1])

    def test_status(self):
        """
        The status reports queue sizes and limits.
        """
        self.agent.outcome = lambda r: ("temp", 451, "451 later")
        self.submit()
        status = self.successResultOf(self.qmgr.status())
        self.assertEqual(status["transactions"], 1)
        self.assertEqual(status["recipients"], {"deferred": 1})
        self.assertEqual(status["limits"]["smtpc_max_connections"], 100)

    def test_incomingLimits(self):
        """
        C{sessionOpen} applies the incoming limits.
        """
        self.restartWith(smtpsMaxOpenConnections=1)
        self.assertIsNone(self.successResultOf(self.qmgr.sessionOpen("s1", "1.2.3.4")))
        d = self.qmgr.sessionOpen("s2", "1.2.3.4")
        # over the limit: refused after a while without a close
        self.assertNoResult(d)
        self.clock.advance(OPEN_GRACE)
        self.assertEqual(self.successResultOf(d)["code"], 421)
        self.qmgr.sessionClose("s1", "1.2.3.4")
        self.assertIsNone(self.successResultOf(self.qmgr.sessionOpen("s3", "1.2.3.4")))
        # a close that comes while a session waits lets it in
        d = self.qmgr.sessionOpen("s4", "1.2.3.4")
        self.assertNoResult(d)
        self.qmgr.sessionClose("s3", "1.2.3.4")
        self.assertIsNone(self.successResultOf(d))

    def test_diskShort(self):
        """
        C{checkAcceptance} answers 452 4.3.1 when the disk is short.
        """

        class Stat:
            f_bavail = 10
            f_frsize = 1

        self.restartWith(minDiskSpace=100, okDiskSpace=200, statvfs=lambda p: Stat())
        reply = self.successResultOf(self.qmgr.checkAcceptance(0))
        self.assertEqual((reply["code"], reply["dsn"]), (452, "4.3.1"))

    def test_iqdbFull(self):
        """
        C{checkAcceptance} answers 452 4.3.2 while C{IQDB.max_cache_entries}
        recipients wait for room in AQ, and accepts again once fewer do.
        """
        self.restartWith(iqdbMaxEntries=2, aqMaxEntries=1)
        self.agent.pending = []
        self.assertIsNone(self.successResultOf(self.qmgr.checkAcceptance(0)))
        self.submit(recipients=("1@y.test", "2@y.test", "3@y.test"))
        self.assertEqual(self.qmgr.scheduler.queuedCount(), 2)
        reply = self.successResultOf(self.qmgr.checkAcceptance(0, "s1"))
        self.assertEqual((reply["code"], reply["dsn"]), (452, "4.3.2"))
        self.qmgr.scheduler.ready[0][1].state = "held"
        self.assertIsNone(self.successResultOf(self.qmgr.checkAcceptance(0, "s1")))


class PendingContentTests(QueueManagerTestMixin, unittest.TestCase):
    """
    Envelopes committed with C{contentPending} (SMTPS syncs the content
    and the envelope at the same time): nothing is scheduled before
    C{contentCommitted}, and a crash before the content is complete drops
    the never-acknowledged transaction.
    """

    def setUp(self):
        self.setUpQueue()

    def test_waitsForContent(self):
        """
        The transaction is queued but not delivered until the content is
        reported stored.
        """
        taId, _ = self.submit(contentPending=True)
        self.clock.advance(1)
        self.assertEqual(self.agent.transactions, [])
        self.assertEqual(self.successResultOf(self.qmgr.status())["accepted"], 0)
        self.successResultOf(self.writer.commit())
        self.successResultOf(self.qmgr.contentCommitted(taId, True))
        self.assertEqual(self.successResultOf(self.qmgr.status())["accepted"], 1)
        self.clock.advance(0.01)
        self.assertEqual([t["ss_ta"] for t in self.agent.transactions], [taId])

    def test_contentFailed(self):
        """
        Content that could not be stored withdraws the transaction: it
        leaves the queue and a restart does not bring it back.
        """
        taId, _ = self.submit(contentPending=True)
        self.writer.abort()
        self.successResultOf(self.qmgr.contentCommitted(taId, False))
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(self.qmgr.listQueue()), [])
        self.assertEqual(self.successResultOf(self.qmgr.status())["accepted"], 0)
        self.restart()
        self.assertEqual(self.successResultOf(self.qmgr.listQueue()), [])
        self.assertEqual(self.agent.transactions, [])

    def test_unknown(self):
        """C{contentCommitted} for a transaction not waiting is a KeyError."""
        self.failureResultOf(
            self.qmgr.contentCommitted("S0000000000000000000", True), KeyError
        )

    def test_crashBeforeContent(self):
        """
        After a crash with the envelope stored and the content never
        written, recovery drops the transaction and says why.
        """
        taId, _ = self.submit(contentPending=True)
        self.writer.abort()
        self.restart()
        self.assertEqual(self.successResultOf(self.qmgr.listQueue()), [])
        self.assertEqual(self.qmgr.recovered.unacknowledged, [taId])
        self.assertIn("never acknowledged", "\n".join(self.sink.lines()))

    def test_crashWithPartialContent(self):
        """
        Content shorter than the envelope says (cut by the crash) is
        dropped with its transaction, and the partial file is removed.
        """
        taId, _ = self.submit(contentPending=True)
        self.writer.abort()
        with open(self.cdb.path(taId), "wb") as f:
            f.write(CONTENT[:5])
        self.restart()
        self.assertEqual(self.qmgr.recovered.unacknowledged, [taId])
        self.assertFalse(self.cdb.exists(taId))

    def test_crashAfterContent(self):
        """
        With the content complete at the crash the transaction is kept and
        delivered (the client may also send it again: a duplicate, never
        a loss).
        """
        taId, _ = self.submit(contentPending=True)
        self.successResultOf(self.writer.commit())
        self.restart()
        self.assertEqual(self.qmgr.recovered.unacknowledged, [])
        self.clock.advance(0.01)
        self.assertIn(taId, [t["ss_ta"] for t in self.agent.transactions])

    def test_emptyOrphanRemoved(self):
        """
        An empty content file without an envelope (made ahead for a
        transaction that never reached its final dot) is removed at
        start; a non-empty one is kept and reported for recover-from-log.
        """
        self.stop()
        empty, full = "S00000000000000AA00", "S00000000000000BB00"
        open(self.cdb.path(empty), "wb").close()
        with open(self.cdb.path(full), "wb") as f:
            f.write(CONTENT)
        self.qmgr = self.makeQueueManager()
        self.qmgr.startService()
        self.assertFalse(self.cdb.exists(empty))
        self.assertTrue(self.cdb.exists(full))
        self.assertEqual(self.qmgr.recovered.orphans, [full])
        self.assertIn("no envelope for this content", "\n".join(self.sink.lines()))


class SyncedContentTests(QueueManagerTestMixin, unittest.TestCase):
    """
    Envelopes committed with C{syncContent} (SMTPS wrote the content and
    did not sync it): QMGR syncs it in the IBDB commit of the envelope
    (L{smx.queue.cdb.ContentSync}) and queues the transaction at once.
    """

    def setUp(self):
        self.setUpQueue()
        self.synced = []
        real = self.qmgr.log.contentSync.sync

        def record(paths, fd):
            self.synced.extend(paths)
            return real(paths, fd)

        self.patch(self.qmgr.log.contentSync, "sync", record)

    def submitWritten(self):
        self.counter += 1
        taId = "S%016X00" % (0x1000 + self.counter,)
        w = self.cdb.createWriter(taId)
        w.write(CONTENT)
        w.finish()
        envelope = {
            "id": taId,
            "session": "S0",
            "sender": "a@x.test",
            "recipients": [{"address": "b@y.test", "index": 0}],
            "size": len(CONTENT),
            "syncContent": True,
        }
        return taId, self.qmgr.commitTransaction(envelope)

    def test_syncedAndQueued(self):
        """
        The content is synced with the envelope, the transaction queued
        and delivered without C{contentCommitted}; IBDB says the content
        was pending, so that recovery checks it.
        """
        taId, d = self.submitWritten()
        self.clock.advance(0.01)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.synced, [self.cdb.path(taId)])
        self.assertEqual(self.successResultOf(self.qmgr.status())["accepted"], 1)
        self.clock.advance(0.01)
        self.assertEqual([t["ss_ta"] for t in self.agent.transactions], [taId])
        self.failureResultOf(self.qmgr.contentCommitted(taId, True), KeyError)
        [(kind, record)] = [
            r for r in ibdb.readLog(self.qmgr.ibdbDirectory, None) if r[0] == b"T"
        ]
        self.assertTrue(record["contentPending"])

    def test_crashWithPartialContent(self):
        """
        After a crash, content shorter than the envelope says drops the
        transaction (never acknowledged); whole content is delivered.
        """
        cut, _ = self.submitWritten()
        whole, _ = self.submitWritten()
        with open(self.cdb.path(cut), "r+b") as f:
            f.truncate(5)
        # the envelopes are committed as QMGR stops: nothing was delivered
        self.restart()
        self.assertEqual(self.qmgr.recovered.unacknowledged, [cut])
        self.clock.advance(0.01)
        self.assertIn(whole, [t["ss_ta"] for t in self.agent.transactions])

    def test_notAFileStore(self):
        """
        A QMGR whose content store it cannot sync refuses such an envelope
        (SMTPS answers 451): nothing is stored.
        """
        self.qmgr.log.contentSync = None
        taId, d = self.submitWritten()
        self.failureResultOf(d, ValueError)
        self.assertEqual(self.successResultOf(self.qmgr.listQueue()), [])


class PathStat:
    """
    A C{statvfs} whose answer depends on the path: DEFEDB's directory can
    be made full while the rest of the queue has room.
    """

    def __init__(self):
        self.full = set()

    def __call__(self, path):
        class Stat:
            f_frsize = 1
            f_bavail = 0 if any(p in path for p in self.full) else 1 << 40

        return Stat()


class FullDefedbTests(QueueManagerTestMixin, unittest.TestCase):
    """
    DEFEDB on a disk without room (real Berkeley DB files; the free space
    told by a C{statvfs} of the test's): deferrals are kept in memory and
    in IBDB, DEFEDB gets them once there is room, and a QMGR started
    while DEFEDB cannot be opened merges it when it can; nothing
    accepted is lost.
    """

    def setUp(self):
        self.stat = PathStat()
        self.setUpQueue(statvfs=self.stat)
        self.agent.outcome = lambda r: ("temp", 451, "451 4.4.1 down")

    def errors(self):
        return [line for line in self.sink.lines() if "sev=ERR" in line]

    def test_deferKeptUntilRoom(self):
        """
        A deferral DEFEDB cannot take is logged (C{sev=ERR}), kept in
        memory (still deferred and retried) and in IBDB, counted in the
        status, and written to DEFEDB (and noted in IBDB) once DEFEDB's
        file system has room again.
        """
        self.stat.full.add("defedb")
        taId, _ = self.submit()
        [t] = self.successResultOf(self.qmgr.listQueue())
        self.assertEqual(t["recipients"][0]["state"], "deferred")
        self.assertTrue(any("QueueStore.defer" in e for e in self.errors()))
        self.assertIn("disk space short", "\n".join(self.errors()))
        status = self.successResultOf(self.qmgr.status())
        self.assertEqual(status["defedbPending"], 1)
        self.assertTrue(status["defedb"])
        self.stat.full.clear()
        self.clock.advance(2)
        self.clock.advance(0.01)
        status = self.successResultOf(self.qmgr.status())
        self.assertEqual(status["defedbPending"], 0)
        [(envelope, rcpts)] = self.qmgr.defedb.loadAll()
        self.assertEqual(envelope["id"], taId)
        states = [
            p["rcpts"]
            for kind, p in ibdb.readLog(self.qmgr.ibdbDirectory, print)
            if kind == ibdb.RECIPIENTS
        ]
        self.assertIn([[0, "deferred"]], states)

    def test_crashWhileKept(self):
        """
        A restart while a deferral was only in memory loses nothing: IBDB
        still has the transaction, and it is delivered.
        """
        self.stat.full.add("defedb")
        taId, _ = self.submit()
        self.agent.outcome = lambda r: ("ok", 250, "250 ok")
        self.restart()
        self.clock.advance(0.01)
        self.assertIn(taId, [t["ss_ta"] for t in self.agent.transactions[-1:]])
        self.assertEqual(self.successResultOf(self.qmgr.listQueue()), [])

    def test_startWithoutDefedb(self):
        """
        A QMGR started on a full disk runs without DEFEDB (a transaction
        only DEFEDB has is not lost, only not seen yet) and, once there is
        room, opens it without a restart and queues what only DEFEDB had;
        it is delivered at its next-time-to-try.
        """
        taId, _ = self.submit()
        # restarted once with room: IBDB is rewritten without the
        # transaction, which is safe in DEFEDB
        self.restart()
        self.assertEqual(
            [
                p["id"]
                for kind, p in ibdb.readLog(self.qmgr.ibdbDirectory, print)
                if kind == ibdb.TRANSACTION
            ],
            [],
        )
        self.stat.full.add("defedb")
        self.restart()
        self.assertFalse(self.qmgr.defedb.isOpen)
        self.assertEqual(self.successResultOf(self.qmgr.listQueue()), [])
        self.clock.advance(2)
        self.assertFalse(self.qmgr.defedb.isOpen)
        self.assertIn("DEFEDB waits for disk space", "\n".join(self.errors()))
        self.stat.full.clear()
        self.clock.advance(2)
        self.assertTrue(self.qmgr.defedb.isOpen)
        self.assertIn("DEFEDB reopened", "\n".join(self.sink.lines()))
        [t] = self.successResultOf(self.qmgr.listQueue())
        self.assertEqual(t["id"], taId)
        self.assertEqual(t["recipients"][0]["state"], "deferred")
        self.agent.outcome = lambda r: ("ok", 250, "250 ok")
        self.clock.advance(400)
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(self.qmgr.listQueue()), [])
        self.assertEqual(self.qmgr.defedb.loadAll(), [])
        self.assertFalse(self.cdb.exists(taId))

    def test_deliveredBeforeDefedbReturns(self):
        """
        A transaction IBDB had as deferred is delivered again while DEFEDB
        cannot be opened; when it opens, its stale records are removed
        (not delivered a third time).
        """
        taId, _ = self.submit()
        self.stat.full.add("defedb")
        self.agent.outcome = lambda r: ("ok", 250, "250 ok")
        # a crash: IBDB still has the transaction (deferred)
        self.qmgr.log.stop()
        self.qmgr.defedb.close()
        self.qmgr.lock.release()
        self.qmgr.running = False
        self.qmgr.scheduler.stop()
        self.qmgr.defedbWatch.stop()
        self.qmgr = self.makeQueueManager()
        self.qmgr.startService()
        self.clock.advance(0.01)
        delivered = [t["ss_ta"] for t in self.agent.transactions]
        self.assertEqual(delivered.count(taId), 2)
        self.stat.full.clear()
        self.clock.advance(2)
        self.clock.advance(500)
        self.assertEqual(self.qmgr.defedb.loadAll(), [])
        self.assertEqual([t["ss_ta"] for t in self.agent.transactions].count(taId), 2)

    def test_secondQueueManagerRefused(self):
        """
        A second QMGR on the same queue directory does not start: the
        first one holds the queue's lock.
        """
        other = self.makeQueueManager()
        e = self.assertRaises(OSError, other.startService)
        self.assertIn("in use by another QMGR", str(e))
        self.assertFalse(other.running)


class DiskReservationTests(QueueManagerTestMixin, unittest.TestCase):
    """
    C{checkAcceptance} measures the free space for every transaction and
    counts the sizes in flight.
    """

    def setUp(self):
        self.free = [50 * 1024 * 1024]

        class Stat:
            f_frsize = 1

            @property
            def f_bavail(inner):
                return self.free[0]

        self.setUpQueue(
            minDiskSpace=10 * 1024 * 1024,
            okDiskSpace=20 * 1024 * 1024,
            statvfs=lambda p: Stat(),
        )

    def test_burst(self):
        """
        Sessions that declared C{SIZE=} hold their size until their
        envelope is stored or the session ends; a burst of large
        transactions is refused with 452 4.3.1 before the disk fills.
        """
        MB = 1024 * 1024
        accept = self.qmgr.checkAcceptance
        self.assertIsNone(self.successResultOf(accept(15 * MB, "s1")))
        self.assertIsNone(self.successResultOf(accept(15 * MB, "s2")))
        reply = self.successResultOf(accept(15 * MB, "s3"))
        self.assertEqual((reply["code"], reply["dsn"]), (452, "4.3.1"))
        self.qmgr.sessionClose("s1", "127.0.0.1")
        self.assertIsNone(self.successResultOf(accept(15 * MB, "s3")))
        # s2's envelope is stored: its content is on the disk now
        self.submit(session="s2")
        self.assertEqual(self.qmgr.disk.reserved, 15 * MB)
        # a session's next transaction replaces its reservation
        self.assertIsNone(self.successResultOf(accept(1 * MB, "s3")))
        self.assertEqual(self.qmgr.disk.reserved, 1 * MB)

    def test_filledSinceLastTransaction(self):
        """
        A disk that filled since the last transaction refuses the next
        one at once (no second-long measuring interval).
        """
        self.assertIsNone(self.successResultOf(self.qmgr.checkAcceptance(0, "s1")))
        self.free[0] = 0
        reply = self.successResultOf(self.qmgr.checkAcceptance(0, "s1"))
        self.assertEqual((reply["code"], reply["dsn"]), (452, "4.3.1"))
