# -*- test-case-name: smx.queue.test.test_ibdb -*-
"""
Tests for L{smx.queue.ibdb}: real files in a temporary directory, time from
a L{Clock}.
"""

import errno
import os

from twisted.internet.task import Clock
from twisted.trial import unittest

from smx.queue import ibdb
from smx.queue.test.tmpfs import fill, mountTmpfs
from smx.queue.testing import defaultIncomingBackupLog, stoppedPoolContentStore


class IncomingBackupLogTests(unittest.TestCase):
    """
    Tests for L{ibdb.IncomingBackupLog}.
    """

    def setUp(self):
        self.clock = Clock()
        self.dir = os.path.abspath(self.mktemp())
        self.syncs = []

        def sync(fd):
            self.syncs.append(fd)
            os.fsync(fd)

        self.log = defaultIncomingBackupLog(
            self.dir,
            self.clock,
            sync=sync,
            maxCommitDelay=0.005,
            maxOpenTransactions=3,
            ibdbFileSize=10000,
        )
        self.log.start()
        self.addCleanup(self.log.stop)

    def read(self):
        problems = []
        records = list(ibdb.readLog(self.dir, problems.append))
        return records, problems

    def test_groupCommitAtTurnEnd(self):
        """
        The records of one turn wait for its end; a C{T} record among them
        makes one fsync commit all of them, and every Deferred fires.
        """
        d1 = self.log.append(ibdb.TRANSACTION, {"id": "S1", "rcpts": []})
        d2 = self.log.append(ibdb.DONE, {"id": "S0"})
        self.assertNoResult(d1)
        self.assertEqual(self.read()[0], [])
        self.clock.advance(0)
        self.successResultOf(d1)
        self.successResultOf(d2)
        self.assertEqual(len(self.syncs), 1)
        self.assertEqual(
            self.read(),
            ([(b"T", {"id": "S1", "rcpts": []}), (b"D", {"id": "S0"})], []),
        )

    def test_writtenThenSynced(self):
        """
        Records without a C{T} among them are written at the end of the
        turn, without a sync, and their Deferreds fire; one fsync follows
        C{maxCommitDelay} later, or with the next C{T} record.
        """
        d = self.log.append(ibdb.DONE, {"id": "S0"})
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(self.read(), ([(b"D", {"id": "S0"})], []))
        self.assertEqual(self.syncs, [])
        self.clock.advance(0.005)
        self.assertEqual(len(self.syncs), 1)
        self.assertEqual(self.log.commits, 1)
        self.clock.advance(1)
        self.assertEqual(len(self.syncs), 1)

        d = self.log.append(ibdb.DONE, {"id": "S1"})
        self.clock.advance(0)
        self.successResultOf(d)
        t = self.log.append(ibdb.TRANSACTION, {"id": "S2", "rcpts": []})
        self.clock.advance(0)
        self.successResultOf(t)
        self.assertEqual(len(self.syncs), 2)
        self.clock.advance(1)
        self.assertEqual(len(self.syncs), 2)

    def test_stopSyncs(self):
        """
        L{IncomingBackupLog.stop} syncs the records written unsynced.
        """
        self.log.append(ibdb.DONE, {"id": "S0"})
        self.clock.advance(0)
        self.assertEqual(self.syncs, [])
        self.log.stop()
        self.assertEqual(len(self.syncs), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_groupCommitByCount(self):
        """
        C{maxOpenTransactions} waiting records are committed at once,
        without waiting for the delay.
        """
        ds = [self.log.append(ibdb.DONE, {"id": "S%d" % i}) for i in range(3)]
        for d in ds:
            self.successResultOf(d)
        self.assertEqual(len(self.syncs), 1)
        self.assertEqual(self.log.commits, 1)
        self.assertEqual(self.log.records, 3)

    def test_tornLastRecord(self):
        """
        A record cut off by a crash at the end of a file is reported and
        skipped; the records before it are read.
        """
        self.log.append(ibdb.DONE, {"id": "S1"})
        self.log.append(ibdb.DONE, {"id": "S2"})
        self.log.commit()
        path = self.log.currentPath
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size - 3)
        records, problems = self.read()
        self.assertEqual(records, [(b"D", {"id": "S1"})])
        self.assertEqual(len(problems), 1)
        self.assertIn("torn record", problems[0])
        self.assertIn(path, problems[0])

    def test_corruptRecordInMiddle(self):
        """
        A damaged record in the middle of a file is reported with its
        offset and skipped; the following records are still read.
        """
        for i in range(3):
            self.log.append(ibdb.DONE, {"id": "S%d" % i})
        path = self.log.currentPath
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            # change a byte of the second record's payload
            second = data.find(ibdb.MAGIC, 1)
            data[second + ibdb.HEADER_SIZE + 2] ^= 0xFF
            f.seek(0)
            f.write(data)
        records, problems = self.read()
        self.assertEqual(records, [(b"D", {"id": "S0"}), (b"D", {"id": "S2"})])
        self.assertEqual(len(problems), 1)
        self.assertIn("checksum mismatch", problems[0])
        self.assertIn("offset %d" % (second,), problems[0])

    def test_rotationAndRemoval(self):
        """
        A file that reached C{fileSize} is closed and a new one opened; the
        old one is removed once every transaction it holds is released.
        """
        big = "x" * 6000
        self.log.append(ibdb.TRANSACTION, {"id": "S1", "pad": big})
        self.log.append(ibdb.TRANSACTION, {"id": "S2", "pad": big})
        self.log.commit()
        self.assertEqual(len(ibdb.logFiles(self.dir)), 2)
        self.log.release("S1")
        self.assertEqual(len(ibdb.logFiles(self.dir)), 2)
        self.log.release("S2")
        files = ibdb.logFiles(self.dir)
        self.assertEqual([p for _, p in files], [self.log.currentPath])

    def test_beforeRemoving(self):
        """
        L{ibdb.IncomingBackupLog.beforeRemoving} is called before a file
        is removed (the contents its C{D} records name go first), and only
        then.
        """
        seen = []
        self.log.beforeRemoving = lambda: seen.append(
            [os.path.exists(p) for _, p in ibdb.logFiles(self.dir)]
        )
        big = "x" * 6000
        self.log.append(ibdb.TRANSACTION, {"id": "S1", "pad": big})
        self.log.append(ibdb.TRANSACTION, {"id": "S2", "pad": big})
        self.log.commit()
        self.log.release("S1")
        self.assertEqual(seen, [])
        self.log.release("S2")
        self.assertEqual(seen, [[True, True]])
        self.assertEqual(len(ibdb.logFiles(self.dir)), 1)

    def test_contentsGoFirst(self):
        """
        Wired by L{QueueStore}, IBDB removes a file only after the content
        removals still waiting for their batch (the contents its C{D}
        records name) are made.
        """
        from smx.log import Logger, MemorySink
        from smx.queue.store import QueueStore

        pool, _, contents = stoppedPoolContentStore(self.mktemp())
        QueueStore(self.log, None, contents, Logger("qmgr", sink=MemorySink()))
        big = "x" * 6000
        self.log.append(ibdb.TRANSACTION, {"id": "S1", "pad": big})
        self.log.append(ibdb.TRANSACTION, {"id": "S2", "pad": big})
        self.log.commit()
        ta = "S00000000407CE49200"
        with open(contents.path(ta), "wb") as f:
            f.write(b"x")
        contents.remove(ta)
        self.log.release("S1")
        self.assertEqual(contents.transactionIds(), [ta])
        self.log.release("S2")
        self.assertEqual(len(ibdb.logFiles(self.dir)), 1)
        self.assertEqual(contents.transactionIds(), [])
        self.assertEqual(pool.jobs, [])

    def test_currentFileNotRemoved(self):
        """
        Releasing every transaction of the current file keeps the file.
        """
        self.log.append(ibdb.TRANSACTION, {"id": "S1"})
        self.log.commit()
        self.log.release("S1")
        self.assertTrue(os.path.exists(self.log.currentPath))

    def test_fullDisk(self):
        """
        A failing fsync fails the Deferreds of that commit, the file is
        truncated to its last good record and later commits work.
        """
        self.log.append(ibdb.DONE, {"id": "S1"})
        self.log.commit()
        good = os.path.getsize(self.log.currentPath)

        def failingSync(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.log._syncFile = failingSync
        d = self.log.append(ibdb.DONE, {"id": "S2"})
        self.log.commit()
        self.failureResultOf(d, OSError)
        self.assertEqual(os.path.getsize(self.log.currentPath), good)
        self.log._syncFile = os.fsync
        d = self.log.append(ibdb.DONE, {"id": "S3"})
        self.log.commit()
        self.successResultOf(d)
        self.assertEqual(
            self.read(), ([(b"D", {"id": "S1"}), (b"D", {"id": "S3"})], [])
        )

    def test_contents(self):
        """
        The contents named by records are synced (by C{contentSync}) in
        the commit of those records, before the IBDB file; where that
        covered the IBDB file too it is not fsynced again.
        """
        calls = []

        class Sync:
            covers = True

            def sync(self, paths, fd):
                calls.append((list(paths), fd))
                return self.covers

        self.log.contentSync = Sync()
        d1 = self.log.append(ibdb.TRANSACTION, {"id": "S1", "rcpts": []}, "/q/1")
        d2 = self.log.append(ibdb.DONE, {"id": "S0"})
        d3 = self.log.append(ibdb.TRANSACTION, {"id": "S2", "rcpts": []}, "/q/2")
        self.successResultOf(d1)
        self.successResultOf(d2)
        self.successResultOf(d3)
        self.assertEqual(calls, [(["/q/1", "/q/2"], self.log._fd)])
        self.assertEqual(self.syncs, [])
        self.log.contentSync.covers = False
        d = self.log.append(ibdb.TRANSACTION, {"id": "S3", "rcpts": []}, "/q/3")
        self.log.commit()
        self.successResultOf(d)
        self.assertEqual(calls[1:], [(["/q/3"], self.log._fd)])
        self.assertEqual(self.syncs, [self.log._fd])
        # a commit without contents does not sync any
        self.log.append(ibdb.DONE, {"id": "S4"})
        self.log.commit()
        self.assertEqual(len(calls), 2)

    def test_contentSyncFails(self):
        """
        A failed content sync fails every record of its commit, and the
        file is cut back: nothing of it is acknowledged.
        """

        class Sync:
            def sync(self, paths, fd):
                raise OSError(errno.EIO, "Input/output error")

        self.log.contentSync = Sync()
        d1 = self.log.append(ibdb.DONE, {"id": "S0"})
        d2 = self.log.append(ibdb.TRANSACTION, {"id": "S1", "rcpts": []}, "/q/1")
        self.log.commit()
        self.failureResultOf(d1, OSError)
        self.failureResultOf(d2, OSError)
        self.assertEqual(os.path.getsize(self.log.currentPath), 0)

    def test_contentWithoutSync(self):
        """
        A record naming a content fails at once when the log cannot sync
        contents.
        """
        d = self.log.append(ibdb.TRANSACTION, {"id": "S1", "rcpts": []}, "/q/1")
        self.failureResultOf(d, OSError)
        self.log.commit()
        self.assertEqual(self.read(), ([], []))

    def test_restartAppends(self):
        """
        A new writer starts a new file after the existing ones, and
        C{removeOlderFiles} removes the old ones.
        """
        self.log.append(ibdb.DONE, {"id": "S1"})
        self.log.stop()
        log2 = defaultIncomingBackupLog(self.dir, self.clock)
        log2.start()
        self.addCleanup(log2.stop)
        self.assertEqual(len(ibdb.logFiles(self.dir)), 2)
        log2.append(ibdb.DONE, {"id": "S2"})
        log2.commit()
        self.assertEqual(
            self.read(), ([(b"D", {"id": "S1"}), (b"D", {"id": "S2"})], [])
        )
        log2.removeOlderFiles()
        self.assertEqual(self.read(), ([(b"D", {"id": "S2"})], []))


class AdaptiveCommitTests(unittest.TestCase):
    """
    The adaptive group commit: every record is written at the end of the
    reactor's turn; a C{T} record (SMTPS waits for it) is synced there
    too, the others at the latest C{maxCommitDelay} later.
    """

    def setUp(self):
        self.clock = Clock()
        self.dir = os.path.abspath(self.mktemp())
        self.log = defaultIncomingBackupLog(
            self.dir, self.clock, maxCommitDelay=0.2, maxOpenTransactions=100
        )
        self.log.start()
        self.addCleanup(self.log.stop)

    def read(self):
        return list(ibdb.readLog(self.dir, self.fail))

    def test_transactionAtTurnEnd(self):
        """
        A C{T} record is committed at the end of the turn, not after
        C{maxCommitDelay}, with the other records of the turn.
        """
        ds = [
            self.log.append(ibdb.TRANSACTION, {"id": "S1", "rcpts": []}),
            self.log.append(ibdb.DONE, {"id": "S0"}),
            self.log.append(ibdb.RECIPIENTS, {"id": "S2", "rcpts": [[0, "delivered"]]}),
        ]
        self.assertNoResult(ds[0])
        self.clock.advance(0)
        for d in ds:
            self.successResultOf(d)
        self.assertEqual((self.log.commits, self.log.records), (1, 3))

    def test_othersWrittenAtTurnEnd(self):
        """
        A C{D} record and C{R} records, delivered or deferred, are written
        at the end of the turn (a QMGR killed with SIGKILL then keeps
        them), in one write, and synced C{maxCommitDelay} later.
        """
        ds = [
            self.log.append(ibdb.DONE, {"id": "S1"}),
            self.log.append(ibdb.RECIPIENTS, {"id": "S3", "rcpts": [[0, "delivered"]]}),
            self.log.append(ibdb.RECIPIENTS, {"id": "S0", "rcpts": [[0, "deferred"]]}),
        ]
        self.assertNoResult(ds[0])
        self.assertEqual(self.read(), [])
        self.clock.advance(0)
        for d in ds:
            self.successResultOf(d)
        self.assertEqual(len(self.read()), 3)
        # counted as committed once synced
        self.assertEqual((self.log.commits, self.log.records), (0, 0))
        self.clock.advance(0.2)
        self.assertEqual((self.log.commits, self.log.records), (1, 3))

    def test_syncOfWrittenRetried(self):
        """
        A failed sync of records written unsynced leaves them in the file
        and is tried again C{maxCommitDelay} later; they count as
        committed once that sync succeeds.
        """
        self.log.append(ibdb.DONE, {"id": "S0"})
        self.clock.advance(0)

        def failingSync(fd):
            raise OSError(errno.EIO, "Input/output error")

        self.log._syncFile = failingSync
        self.clock.advance(0.2)
        self.assertEqual((self.log.commits, self.log.records), (0, 0))
        self.assertEqual(self.read(), [(b"D", {"id": "S0"})])
        self.log._syncFile = os.fsync
        self.clock.advance(0.2)
        self.assertEqual((self.log.commits, self.log.records), (1, 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FullDiskWriteTests(unittest.TestCase):
    """
    Records written without a sync on a file system that is really full
    (a tmpfs, root only).
    """

    def test_writeFails(self):
        """
        The write fails: the Deferreds of exactly those records fail with
        C{ENOSPC}, the file keeps its good records, and the log goes on
        once there is room.
        """
        mount = mountTmpfs(self, "2m")
        clock = Clock()
        directory = os.path.join(mount, "ibdb")
        log = defaultIncomingBackupLog(
            directory, clock, maxCommitDelay=0.2, maxOpenTransactions=100
        )
        log.start()
        self.addCleanup(log.stop)
        self.successResultOf(self.written(log, clock, {"id": "S1"}))
        good = os.path.getsize(log.currentPath)
        filler = fill(mount)
        # larger than what is left of the file's last page
        failed = self.written(log, clock, {"id": "S2", "pad": "x" * 8192})
        self.assertEqual(
            self.failureResultOf(failed, OSError).value.errno, errno.ENOSPC
        )
        self.assertEqual(os.path.getsize(log.currentPath), good)
        os.unlink(filler)
        self.successResultOf(self.written(log, clock, {"id": "S3"}))
        clock.advance(0.2)
        self.assertEqual(log.records, 2)
        self.assertEqual(
            list(ibdb.readLog(directory, self.fail)),
            [(b"D", {"id": "S1"}), (b"D", {"id": "S3"})],
        )

    def written(self, log, clock, payload):
        d = log.append(ibdb.DONE, payload)
        clock.advance(0)
        return d
