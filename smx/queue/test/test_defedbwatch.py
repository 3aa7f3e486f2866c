# -*- test-case-name: smx.queue.test.test_defedbwatch -*-
"""
Tests for L{smx.queue.defedbwatch}: a real Berkeley DB DEFEDB and real IBDB
files in a temporary directory, the free space told by the test's
C{statvfs}, time from a L{Clock}.
"""

import os

from twisted.internet.task import Clock
from twisted.trial import unittest

from smx.log import Logger, MemorySink
from smx.queue.cdb import FileContentStore
from smx.queue.defedb import DefedbError
from smx.queue.defedbwatch import MAX_REOPEN_DELAY, WATCH_INTERVAL, DefedbWatcher
from smx.queue.envelope import Transaction
from smx.queue.store import QueueStore
from smx.queue.testing import defaultDefedb, defaultIncomingBackupLog


class Space:
    """A C{statvfs} whose free space the test sets."""

    def __init__(self):
        self.free = 1 << 40

    def __call__(self, path):
        space = self

        class Stat:
            f_frsize = 1
            f_bavail = space.free

        return Stat()


class FakeScheduler:
    def __init__(self):
        self.scheduled = []

    def retryAt(self, ta, r):
        self.scheduled.append((ta.id, r.index))


class DefedbWatcherTests(unittest.TestCase):
    """
    Tests for L{DefedbWatcher}.
    """

    def setUp(self):
        self.clock = Clock()
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.space = Space()
        self.defedb = defaultDefedb(
            os.path.join(self.dir, "defedb"), statvfs=self.space
        )
        self.defedb.open()
        self.addCleanup(self.defedb.close)
        self.log = defaultIncomingBackupLog(os.path.join(self.dir, "ibdb"), self.clock)
        self.log.start()
        self.addCleanup(self.log.stop)
        self.sink = MemorySink()
        self.logger = Logger("qmgr", level=14, sink=self.sink)
        self.cdb = FileContentStore(os.path.join(self.dir, "cdb"))
        self.store = QueueStore(self.log, self.defedb, self.cdb, self.logger)
        self.scheduler = FakeScheduler()
        self.watch = DefedbWatcher(
            self.clock,
            self.defedb,
            self.store,
            self.scheduler,
            self.cdb,
            self.logger,
        )
        self.watch.start()
        self.addCleanup(self.watch.stop)

    def transaction(self, taId="S00000000407CE49200"):
        ta = Transaction.fromEnvelope(
            {
                "id": taId,
                "sender": "a@x.test",
                "recipients": [{"address": "b@y.test"}],
                "received": 1.0,
            }
        )
        r = ta.recipients[0]
        r.state = "deferred"
        r.nextTry = 100.0
        r.tries = 1
        self.store.transactions[ta.id] = ta
        return ta, r

    def test_keptThenWritten(self):
        """
        A deferral DEFEDB refuses for want of space is written at the first
        look after space returns; the refusal is logged once with
        C{sev=ERR}, the return with a notice.
        """
        ta, r = self.transaction()
        self.space.free = 0
        self.store.defer(ta, [r])
        ta2, r2 = self.transaction("S00000000407CE49300")
        self.store.defer(ta2, [r2])
        self.assertEqual(self.store.pendingCount(), 2)
        self.clock.advance(WATCH_INTERVAL)
        self.assertEqual(self.store.pendingCount(), 2)
        errors = [line for line in self.sink.lines() if "sev=ERR" in line]
        self.assertEqual(len(errors), 1, errors)
        self.space.free = 1 << 40
        self.clock.advance(WATCH_INTERVAL)
        self.assertEqual(self.store.pendingCount(), 0)
        self.assertTrue(r.inDefedb and r2.inDefedb)
        self.assertEqual(len(self.defedb.loadAll()), 2)
        self.assertIn("DEFEDB has room again", "\n".join(self.sink.lines()))

    def test_brokenReopened(self):
        """
        A DEFEDB left broken (a failed commit) is opened again, with
        recovery, once its file system has room, and what waited is
        written; while there is no room it waits, and says so once.
        """
        ta, r = self.transaction()
        self.store.defer(ta, [r])
        self.defedb.broken = True
        ta2, r2 = self.transaction("S00000000407CE49300")
        self.store.defer(ta2, [r2])
        self.assertEqual(self.store.pendingCount(), 1)
        self.space.free = 0
        self.clock.advance(WATCH_INTERVAL)
        self.clock.advance(WATCH_INTERVAL)
        self.assertFalse(self.defedb.isOpen)
        self.assertEqual(self.watch.state, "waiting")
        waits = [line for line in self.sink.lines() if "waits for disk space" in line]
        self.assertEqual(len(waits), 1)
        self.space.free = 1 << 40
        self.clock.advance(WATCH_INTERVAL)
        self.assertTrue(self.defedb.isOpen)
        self.assertEqual(self.watch.state, "ok")
        self.assertEqual(self.store.pendingCount(), 0)
        self.assertEqual(
            sorted(e["id"] for e, _ in self.defedb.loadAll()), [ta.id, ta2.id]
        )
        self.assertIn("DEFEDB reopened", "\n".join(self.sink.lines()))

    def test_failedOpenBacksOff(self):
        """
        A DEFEDB that cannot be opened although there is room (a damaged
        file) is tried again after one interval, then after twice as long
        each time up to L{MAX_REOPEN_DELAY}, not at every look; once it
        opens, the next failure starts again from one interval.
        """
        attempts = []
        realOpen = self.defedb.open

        def failingOpen():
            attempts.append(self.clock.seconds())
            raise DefedbError("damaged")

        self.defedb.broken = True
        self.defedb.open = failingOpen
        self.clock.advance(WATCH_INTERVAL)
        self.assertFalse(self.defedb.isOpen)
        for _ in range(int(2 * MAX_REOPEN_DELAY / WATCH_INTERVAL) + 200):
            self.clock.advance(WATCH_INTERVAL)
        gaps = [b - a for a, b in zip(attempts, attempts[1:])]
        self.assertEqual(gaps[:4], [2.0, 4.0, 8.0, 16.0])
        self.assertEqual(max(gaps), MAX_REOPEN_DELAY)
        self.assertEqual(self.watch.state, "failed")
        failed = [line for line in self.sink.lines() if "DEFEDB unusable" in line]
        self.assertEqual(len(failed), 1, failed)
        self.defedb.open = realOpen
        self.clock.advance(MAX_REOPEN_DELAY)
        self.assertTrue(self.defedb.isOpen)
        self.assertEqual(self.watch.state, "ok")
        self.assertEqual(self.watch._reopenDelay, WATCH_INTERVAL)

    def test_pagesWritten(self):
        """
        While DEFEDB is usable each look writes the pages changed since the
        last one to their files (no growing of files on demand later).
        """
        ta, r = self.transaction()
        self.store.defer(ta, [r])
        self.assertTrue(self.defedb._dirty)
        self.clock.advance(WATCH_INTERVAL)
        self.assertFalse(self.defedb._dirty)

    def test_merge(self):
        """
        With C{mergeNeeded} (DEFEDB could not be read at the start), a
        transaction only DEFEDB has is queued (its deferred recipient
        scheduled), and records of recipients final in memory removed.
        """
        ta, r = self.transaction()
        self.store.defer(ta, [r])
        other, r2 = self.transaction("S00000000407CE49300")
        self.store.defer(other, [r2])
        w = self.cdb.createWriter(ta.id)
        w.write(b"Subject: x\r\n\r\nx\r\n")
        self.successResultOf(w.commit())
        # the queue as rebuilt from IBDB alone: the first transaction is
        # unknown, the other one delivered meanwhile
        self.store.transactions.clear()
        r2.state = "delivered"
        r2.inDefedb = False
        self.store.transactions[other.id] = other
        self.watch.mergeNeeded = True
        self.clock.advance(WATCH_INTERVAL)
        self.assertFalse(self.watch.mergeNeeded)
        self.assertIn(ta.id, self.store.transactions)
        self.assertEqual(self.scheduler.scheduled, [(ta.id, 0)])
        self.assertEqual([e["id"] for e, _ in self.defedb.loadAll()], [ta.id])
