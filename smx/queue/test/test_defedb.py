# -*- test-case-name: smx.queue.test.test_defedb -*-
"""
Tests for L{smx.queue.defedb}: a real Berkeley DB environment in a
temporary directory.
"""

import os

from twisted.trial import unittest

from smx.queue import defedb
from smx.queue.testing import defaultDefedb

ENV = {
    "id": "S00000000407CE49200",
    "sender": "a@x.test",
    "size": 10,
    "received": 1000.0,
    "recipients": [{"address": "ignored"}],
}


def rcpt(index, nextTry, address=None):
    return {
        "index": index,
        "address": address or "r%d@y.test" % (index,),
        "nextTry": nextTry,
        "tries": 1,
    }


class DeferredEnvelopeDBTests(unittest.TestCase):
    """
    Tests for L{defedb.DeferredEnvelopeDB}.
    """

    def setUp(self):
        self.dir = self.mktemp()
        self.reports = []
        self.db = defaultDefedb(self.dir, report=self.reports.append)
        self.db.open()
        self.addCleanup(self.db.close)

    def reopen(self):
        self.db.close()
        self.db = defaultDefedb(self.dir, report=self.reports.append)
        self.db.open()

    def test_putAndLoad(self):
        """
        Stored recipients and their envelope are read back after the
        environment is closed and reopened (with recovery); the envelope
        is stored without its recipient list.
        """
        self.db.putRecipients(ENV, [rcpt(0, 50.0), rcpt(2, 20.0)])
        self.reopen()
        [(envelope, rcpts)] = self.db.loadAll()
        self.assertEqual(envelope["sender"], "a@x.test")
        self.assertNotIn("recipients", envelope)
        self.assertEqual(sorted(r["index"] for r in rcpts), [0, 2])

    def test_dueOrdered(self):
        """
        C{due} lists recipients by next-time-to-try, only those due.
        """
        other = dict(ENV, id="S00000000407CE49300")
        self.db.putRecipients(ENV, [rcpt(0, 50.0), rcpt(1, 10.0)])
        self.db.putRecipients(other, [rcpt(0, 30.0)])
        self.assertEqual(
            list(self.db.due(40.0)),
            [(10.0, ENV["id"], 1), (30.0, other["id"], 0)],
        )
        self.assertEqual(list(self.db.due(100.0, limit=1)), [(10.0, ENV["id"], 1)])

    def test_updateMovesDueEntry(self):
        """
        Storing a recipient again with a new next-time-to-try replaces its
        entry in the due index.
        """
        self.db.putRecipients(ENV, [rcpt(0, 10.0)])
        self.db.putRecipients(ENV, [rcpt(0, 90.0)])
        self.assertEqual(list(self.db.due(50.0)), [])
        self.assertEqual(list(self.db.due(100.0)), [(90.0, ENV["id"], 0)])

    def test_remove(self):
        """
        Removing recipients removes their due entries; the envelope goes
        with the last recipient.
        """
        self.db.putRecipients(ENV, [rcpt(0, 10.0), rcpt(1, 10.0)])
        self.assertFalse(self.db.removeRecipients(ENV["id"], [0]))
        self.assertEqual(list(self.db.due(100.0)), [(10.0, ENV["id"], 1)])
        self.assertTrue(self.db.removeRecipients(ENV["id"], [1]))
        self.assertEqual(self.db.loadAll(), [])
        self.assertEqual(list(self.db.due(100.0)), [])

    def test_checkpoint(self):
        """
        A checkpoint can be taken at any time.
        """
        self.db.putRecipients(ENV, [rcpt(0, 10.0)])
        self.db.checkpoint()
        self.db.checkpoint(force=True)
        self.reopen()
        self.assertEqual(len(self.db.loadAll()), 1)

    def test_damagedRecord(self):
        """
        A recipient record that cannot be decoded is reported and skipped;
        the other records load.
        """
        self.db.putRecipients(ENV, [rcpt(0, 10.0), rcpt(1, 10.0)])
        self.db._rcpts.put(defedb.recipientKey(ENV["id"], 1), b"{not json")
        [(envelope, rcpts)] = self.db.loadAll()
        self.assertEqual([r["index"] for r in rcpts], [0])
        self.assertEqual(len(self.reports), 1)
        self.assertIn("cannot be decoded", self.reports[0])

    def test_unusable(self):
        """
        A base directory that cannot be created raises L{defedb.DefedbError}
        naming it.
        """
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("x")
        bad = defaultDefedb(os.path.join(blocker, "defedb"))
        e = self.assertRaises(defedb.DefedbError, bad.open)
        self.assertIn(blocker, str(e))


class Plenty:
    """A C{statvfs} result with plenty of room."""

    f_bavail = 1 << 40
    f_frsize = 1


class Short:
    """A C{statvfs} result of a full disk."""

    f_bavail = 0
    f_frsize = 4096


def allocated(path):
    """@return: the bytes the file system allocated to C{path}."""
    return os.stat(path).st_blocks * 512


class FullDiskPreparationTests(unittest.TestCase):
    """
    What DEFEDB does so that a full disk cannot kill the process: region
    files without holes and with room to grow, log files written in full,
    and no change started without head room.
    """

    def setUp(self):
        self.dir = self.mktemp()
        self.statvfs = Plenty
        self.db = defaultDefedb(self.dir, statvfs=lambda path: self.statvfs())
        self.db.open()
        self.addCleanup(self.db.close)

    def test_regionFilesAllocated(self):
        """
        Every region file (mapped into memory: a hole there is a SIGBUS on
        a full disk) has all its blocks, and blocks beyond its end for it
        to grow into.
        """
        regions = [n for n in os.listdir(self.dir) if n.startswith("__db.")]
        self.assertTrue(regions)
        for name in regions:
            path = os.path.join(self.dir, name)
            size = os.stat(path).st_size
            self.assertGreaterEqual(allocated(path), size, name)
            self.assertGreaterEqual(
                allocated(path), max(4 * size, defedb.REGION_RESERVE), name
            )

    def test_logFilesWrittenInFull(self):
        """
        Log files are L{defedb.LOG_FILE_SIZE} bytes and have all their
        blocks from the start: writing the log never needs new blocks
        except for a new log file.
        """
        self.db.putRecipients(ENV, [rcpt(0, 10.0)])
        [log] = [n for n in os.listdir(self.dir) if n.startswith("log.")]
        path = os.path.join(self.dir, log)
        self.assertGreaterEqual(os.stat(path).st_size, defedb.LOG_FILE_SIZE)
        self.assertGreaterEqual(allocated(path), defedb.LOG_FILE_SIZE)

    def test_noChangeWithoutHeadroom(self):
        """
        With less than C{headroom} bytes free a change fails at once with
        L{defedb.DefedbError} (C{full}), before Berkeley DB is touched: the
        environment stays usable and has nothing of it.
        """
        self.statvfs = Short
        e = self.assertRaises(
            defedb.DefedbError, self.db.putRecipients, ENV, [rcpt(0, 1.0)]
        )
        self.assertTrue(e.full)
        self.assertFalse(e.recover)
        self.assertIn("disk space short", str(e))
        self.assertRaises(defedb.DefedbError, self.db.removeRecipients, ENV["id"], [0])
        self.assertTrue(self.db.isOpen)
        self.statvfs = Plenty
        self.assertEqual(self.db.loadAll(), [])
        self.db.putRecipients(ENV, [rcpt(0, 1.0)])
        self.assertEqual(len(self.db.loadAll()), 1)

    def test_openWithoutHeadroom(self):
        """
        The environment is not opened (nor recovered) on a full disk: the
        error says so, and a later open works.
        """
        self.db.close()
        self.statvfs = Short
        e = self.assertRaises(defedb.DefedbError, self.db.open)
        self.assertTrue(e.full)
        self.assertFalse(self.db.isOpen)
        self.statvfs = Plenty
        self.db.open()
        self.assertTrue(self.db.isOpen)

    def test_readCheckpointed(self):
        """
        L{defedb.readCheckpointed} reads the database files on their own,
        while the environment is open: it sees what was checkpointed, and
        changes nothing (no region file is made or touched).
        """
        self.db.putRecipients(ENV, [rcpt(0, 10.0)])
        self.db.checkpoint(force=True)
        other = dict(ENV, id="S00000000407CE49300")
        self.db.putRecipients(other, [rcpt(0, 10.0)])
        regions = {
            n: os.stat(os.path.join(self.dir, n))
            for n in os.listdir(self.dir)
            if n.startswith("__db.")
        }
        reports = []
        [(envelope, rcpts)] = defedb.readCheckpointed(
            self.dir, reports.append
        ).loadAll()
        self.assertEqual(envelope["id"], ENV["id"])
        self.assertEqual(reports, [])
        after = {
            n: os.stat(os.path.join(self.dir, n))
            for n in os.listdir(self.dir)
            if n.startswith("__db.")
        }
        self.assertEqual(
            {n: (s.st_ino, s.st_mtime_ns) for n, s in regions.items()},
            {n: (s.st_ino, s.st_mtime_ns) for n, s in after.items()},
        )
        # the environment goes on as if nothing happened
        self.db.checkpoint(force=True)
        self.assertEqual(
            len(defedb.readCheckpointed(self.dir, reports.append).loadAll()), 2
        )

    def test_readCheckpointedMissing(self):
        """
        A directory without the database files reads as empty.
        """
        empty = self.mktemp()
        os.makedirs(empty)
        self.assertEqual(defedb.readCheckpointed(empty, print).loadAll(), [])


GROWTH_CHILD = """
import os, sys
from smx.queue import defedb
from smx.queue.test.tmpfs import fill
from smx.queue.testing import defaultDefedb
home, mount = sys.argv[1:3]
d = defaultDefedb(home)
d.open()
for i in range(3000):
    d.putRecipients(
        {"id": "S%016X00" % i, "sender": "a@x.test"},
        [{"index": 0, "address": "r@y.test", "nextTry": i, "pad": "x" * 400}],
    )
d.checkpoint(force=True)
d.close()
d.open()
fill(mount)
print("read", len(d.loadAll()), flush=True)
"""


class FullTmpfsTests(unittest.TestCase):
    """
    DEFEDB on a real, full, 20 MB tmpfs (root only).
    """

    def setUp(self):
        from smx.queue.test.tmpfs import mountTmpfs

        self.mount = mountTmpfs(self)
        self.dir = os.path.join(self.mount, "defedb")
        self.counter = 0

    def envelope(self):
        self.counter += 1
        return dict(ENV, id="S%016X00" % (self.counter,))

    def test_regionGrowthOnFullDisk(self):
        """
        Regions grow while DEFEDB is used (here the memory pool region, as
        the cache fills with the pages of a scan); on a full disk the new
        part of the file could not be allocated, and touching it killed
        the process with SIGBUS.  In a child process: a scan on a full
        disk reads every record and the process lives.
        """
        import subprocess
        import sys

        p = subprocess.run(
            [sys.executable, "-c", GROWTH_CHILD, self.dir, self.mount],
            capture_output=True,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
        )
        self.assertEqual(
            (p.returncode, p.stdout), (0, b"read 3000\n"), p.stderr.decode()
        )

    def test_failedCommit(self):
        """
        A commit that fails (the disk filled while the log had a hole to
        write into, as it had before log files were written in full) is
        not followed by an abort of the same transaction (Berkeley DB
        freed it: "DBTxn must not be used after txn_commit"): it is a
        L{defedb.DefedbError} that asks for recovery, the environment is
        L{broken}, and once there is room again it reopens (with
        recovery) and every change that was committed is there.
        """
        from smx.bdb import db
        from smx.queue.test.tmpfs import fill

        d = defaultDefedb(self.dir, statvfs=lambda path: Plenty())
        d.open()
        self.addCleanup(d.close)
        # log files with holes, as Berkeley DB makes them by default
        d.env.log_set_config(db.DB_LOG_ZERO, 0)
        first = d.env.log_stat()["cur_file"]
        while d.env.log_stat()["cur_file"] == first:
            d.putRecipients(self.envelope(), [rcpt(0, 10.0)])
        stored = self.counter
        filler = fill(self.mount)
        error = None
        for i in range(200):
            try:
                d.putRecipients(self.envelope(), [rcpt(0, 10.0)])
            except defedb.DefedbError as e:
                error = e
                break
            stored += 1
        self.assertIsNotNone(error, "no change failed on a full disk")
        self.assertIn("commit failed", str(error))
        self.assertTrue(error.recover)
        self.assertTrue(error.full)
        self.assertTrue(d.broken)
        self.assertFalse(d.isOpen)
        self.assertRaises(defedb.DefedbError, d.putRecipients, ENV, [rcpt(0, 1.0)])
        os.unlink(filler)
        d.open()
        self.assertTrue(d.isOpen)
        ids = {envelope["id"] for envelope, _ in d.loadAll()}
        self.assertGreaterEqual(len(ids), stored)
        d.putRecipients(self.envelope(), [rcpt(0, 10.0)])

    def test_newLogFileOnFullDisk(self):
        """
        A commit that needed a new log file on a full disk: Berkeley DB
        5.3 reports it done though nothing reached the file (its log
        buffer only has it); DEFEDB sees the short log file and reports
        the commit as failed, asking for recovery.
        """
        from smx.queue.test.tmpfs import fill

        d = defaultDefedb(self.dir, statvfs=lambda path: Plenty())
        d.open()
        self.addCleanup(d.close)
        while d.env.log_stat()["cur_offset"] < defedb.LOG_FILE_SIZE - 4096:
            d.putRecipients(self.envelope(), [rcpt(0, 10.0)])
        filler = fill(self.mount)
        error = None
        for i in range(100):
            try:
                d.putRecipients(self.envelope(), [rcpt(0, 10.0)])
            except defedb.DefedbError as e:
                error = e
                break
        self.assertIsNotNone(error, "no change failed on a full disk")
        self.assertTrue(error.recover)
        self.assertTrue(d.broken)
        os.unlink(filler)
        d.open()
        d.putRecipients(self.envelope(), [rcpt(0, 10.0)])

    def test_guardOnFullDisk(self):
        """
        With the real C{statvfs}, nothing is written to a full disk: the
        change fails at once (C{full}), the environment stays usable, and
        works again once the filler is gone.
        """
        from smx.queue.test.tmpfs import fill

        d = defaultDefedb(self.dir)
        d.open()
        self.addCleanup(d.close)
        d.putRecipients(self.envelope(), [rcpt(0, 10.0)])
        filler = fill(self.mount)
        self.assertFalse(d.hasRoom())
        e = self.assertRaises(
            defedb.DefedbError, d.putRecipients, self.envelope(), [rcpt(0, 1.0)]
        )
        self.assertTrue(e.full)
        self.assertTrue(d.isOpen)
        os.unlink(filler)
        self.assertTrue(d.hasRoom())
        d.putRecipients(self.envelope(), [rcpt(0, 10.0)])
        self.assertEqual(len(d.loadAll()), 2)
