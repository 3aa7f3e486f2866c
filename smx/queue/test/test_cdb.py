# -*- test-case-name: smx.queue.test.test_cdb -*-
"""
Tests for L{smx.queue.cdb}: real files in a temporary directory.
"""

import ctypes
import errno
import fcntl
import os
import struct
import zlib

from twisted.internet import defer
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.interfaces import IContentStore
from smx.queue import cdb
from smx.queue.testing import stoppedPoolContentStore

TA = "S00000000407CE49200"


class FileContentStoreTests(unittest.TestCase):
    """
    Tests for L{cdb.FileContentStore}.
    """

    def setUp(self):
        self.base = self.mktemp()
        self.store = cdb.FileContentStore(self.base)

    def test_interface(self):
        """
        The store provides L{IContentStore}.
        """
        self.assertTrue(verifyObject(IContentStore, self.store))

    def test_directoriesRace(self):
        """
        Another process (QMGR and SMTPS start at once) making the
        directories between the check and the C{mkdir}: no error, the
        directories are there.  A file where a directory should be is
        still an error.
        """
        base = self.mktemp()
        os.makedirs(base)
        real = cdb.spreadSubdirectories

        def other(path):
            # the other process makes them all after this one's check
            for name in cdb.DIRECTORIES:
                os.mkdir(os.path.join(path, name), 0o771)
            return real(path)

        self.patch(cdb, "spreadSubdirectories", other)
        cdb.FileContentStore(base)
        self.assertEqual(sorted(os.listdir(base)), sorted(cdb.DIRECTORIES))
        self.patch(cdb, "spreadSubdirectories", real)
        bad = self.mktemp()
        os.makedirs(bad)
        open(os.path.join(bad, "8"), "w").close()
        self.assertRaises(FileExistsError, cdb.FileContentStore, bad)

    def test_directories(self):
        """
        The sixteen directories 0-9, A-F exist after construction.
        """
        self.assertEqual(sorted(os.listdir(self.base)), sorted("0123456789ABCDEF"))

    def test_spreadSubdirectories(self):
        """
        The base directory carries the flag that spreads the directories
        made in it (C{chattr +T}) wherever the file system takes it: read
        back with the ioctl that C{lsattr} uses, after checking on a
        directory of its own, with the ioctls of C{chattr}, that the flag
        can be set here.
        """
        probe = self.mktemp()
        os.mkdir(probe)
        fd = os.open(probe, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, cdb._FS_IOC_SETFLAGS, struct.pack("i", cdb._FS_TOPDIR_FL))
        except OSError as e:
            raise unittest.SkipTest("no chattr +T here: %s" % (e,))
        finally:
            os.close(fd)
        fd = os.open(self.base, os.O_RDONLY)
        try:
            (flags,) = struct.unpack(
                "i", fcntl.ioctl(fd, cdb._FS_IOC_GETFLAGS, b"\0" * 4)
            )
        finally:
            os.close(fd)
        self.assertTrue(flags & cdb._FS_TOPDIR_FL)
        self.assertTrue(cdb.spreadSubdirectories(self.base))

    def test_spreadUnsupported(self):
        """
        Where the flag cannot be set (another file system, or a directory
        of another user), the directories are made all the same.
        """

        def ioctl(fd, request, arg):
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))

        self.patch(cdb, "_ioctl", ioctl)
        base = self.mktemp()
        self.assertFalse(cdb.spreadSubdirectories(self.base))
        cdb.FileContentStore(base)
        self.assertEqual(sorted(os.listdir(base)), sorted("0123456789ABCDEF"))
        self.assertFalse(cdb.spreadSubdirectories(base + "-missing"))

    def test_roundTrip(self):
        """
        Written and committed content is read back unchanged from a file
        named by the transaction id in the directory of its last counter
        digit.
        """
        w = self.store.createWriter(TA)
        w.write(b"Subject: x\r\n\r\n")
        w.write(b"body\r\n" * 50000)
        self.successResultOf(w.commit())
        self.assertEqual(
            self.store.path(TA), os.path.join(os.path.abspath(self.base), "2", TA)
        )
        with self.store.open(TA) as f:
            self.assertEqual(f.read(), b"Subject: x\r\n\r\n" + b"body\r\n" * 50000)
        self.assertEqual(self.store.transactionIds(), [TA])
        self.assertEqual(self.store.size(TA), 14 + 6 * 50000)

    def test_chunkedWrites(self):
        """
        Small writes are gathered into chunks of at least C{chunkSize}
        bytes before they reach the file.
        """
        calls = []

        def write(fd, data):
            calls.append(len(data))
            return os.write(fd, data)

        self.patch(cdb, "_write", write)
        store = cdb.FileContentStore(self.mktemp(), chunkSize=1000)
        w = store.createWriter(TA)
        for i in range(100):
            w.write(b"x" * 100)
        self.successResultOf(w.commit())
        self.assertEqual(calls, [1000] * 10)

    def test_bytesInFlight(self):
        """
        C{bytesInFlight} counts the content bytes given to writers and not
        yet written to their files (QMGR counts them against the free disk
        space): up to a chunk per writer, until it is written, committed or
        aborted.
        """
        store = cdb.FileContentStore(self.mktemp(), chunkSize=1000)
        w1 = store.createWriter(TA)
        w2 = store.createWriter("S00000000407CE49300")
        w1.write(b"x" * 600)
        w2.write(b"y" * 300)
        self.assertEqual(store.bytesInFlight, 900)
        w1.write(b"x" * 600)  # a chunk: written to the file
        self.assertEqual(store.bytesInFlight, 300)
        w1.write(b"x" * 10)
        self.successResultOf(w1.commit())
        self.assertEqual(store.bytesInFlight, 300)
        w2.abort()
        self.assertEqual(store.bytesInFlight, 0)

    def test_remove(self):
        """
        C{remove} deletes the content; removing missing content is not an
        error; opening it raises L{KeyError}.
        """
        w = self.store.createWriter(TA)
        w.write(b"x")
        self.successResultOf(w.commit())
        self.store.remove(TA)
        self.store.remove(TA)
        self.assertRaises(KeyError, self.store.open, TA)
        self.assertEqual(self.store.transactionIds(), [])

    def test_abort(self):
        """
        An aborted writer leaves no file behind.
        """
        w = self.store.createWriter(TA)
        w.write(b"x")
        w.abort()
        self.assertFalse(os.path.exists(self.store.path(TA)))

    def test_fullDisk(self):
        """
        A write failing with ENOSPC makes C{commit} errback with the
        L{OSError} and removes the partial file.
        """

        def write(fd, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(cdb, "_write", write)
        w = self.store.createWriter(TA)
        w.write(b"x" * 10)
        f = self.failureResultOf(w.commit(), OSError)
        self.assertEqual(f.value.errno, errno.ENOSPC)
        self.assertFalse(os.path.exists(self.store.path(TA)))

    def test_noOverwrite(self):
        """
        A second writer for an existing id fails at commit and does not
        touch the stored content.
        """
        w = self.store.createWriter(TA)
        w.write(b"first")
        self.successResultOf(w.commit())
        w2 = self.store.createWriter(TA)
        w2.write(b"second")
        self.failureResultOf(w2.commit(), OSError)
        # the failing writer must not have removed the first file
        with self.store.open(TA) as f:
            self.assertEqual(f.read(), b"first")

    def test_badId(self):
        """
        Ids that are not plain names are refused.
        """
        self.assertRaises(ValueError, self.store.createWriter, "../etc")
        self.assertRaises(ValueError, self.store.open, "")

    def test_threadPool(self):
        """
        With a thread pool the sync runs there and C{commit} fires.
        """
        from twisted.internet import reactor

        pool = ThreadPool(1, 2)
        pool.start()
        self.addCleanup(pool.stop)
        store = cdb.FileContentStore(self.mktemp(), threadPool=pool, reactor=reactor)
        w = store.createWriter(TA)
        w.write(b"pooled")
        d = w.commit()

        def check(_):
            with store.open(TA) as f:
                self.assertEqual(f.read(), b"pooled")

        return d.addCallback(check)


class DirectorySyncTests(unittest.TestCase):
    """
    Whether a directory is fsynced after a file is created in it depends
    on the file system it is on (L{cdb.ENTRY_SYNCED_BY_FSYNC}).
    """

    def mountinfo(self, path, fsType, optional="shared:1"):
        """
        Point L{cdb.MOUNTINFO} at a table in which C{path}'s device is
        mounted with C{fsType}, after a mount of another device.
        """
        device = os.stat(path).st_dev
        table = self.mktemp()
        with open(table, "w") as f:
            f.write("21 1 254:99 / /elsewhere rw - ext4 /dev/other rw\n")
            f.write(
                "22 1 %d:%d / /mnt rw,relatime %s - %s /dev/x rw\n"
                % (os.major(device), os.minor(device), optional, fsType)
            )
        self.patch(cdb, "MOUNTINFO", table)

    def test_fileSystemType(self):
        """
        The type is read from the mount of the path's device, with any
        number of optional fields before the separator.
        """
        here = os.path.abspath(".")
        self.mountinfo(here, "xfs", optional="shared:1 master:2")
        self.assertEqual(cdb.fileSystemType(here), "xfs")
        self.mountinfo(here, "tmpfs", optional="")
        self.assertEqual(cdb.fileSystemType(here), "tmpfs")

    def test_fileSystemTypeUnknown(self):
        """
        A path that does not exist, a device that is not listed, or no
        mount table at all: the type is C{None} and directories are synced.
        """
        here = os.path.abspath(".")
        self.assertIsNone(cdb.fileSystemType(self.mktemp()))
        table = self.mktemp()
        with open(table, "w") as f:
            f.write("21 1 254:99 / /elsewhere rw - ext4 /dev/other rw\n")
        self.patch(cdb, "MOUNTINFO", table)
        self.assertIsNone(cdb.fileSystemType(here))
        self.assertFalse(cdb.entrySyncedByFileSync(here))
        self.patch(cdb, "MOUNTINFO", self.mktemp())
        self.assertIsNone(cdb.fileSystemType(here))

    def test_realMountTable(self):
        """
        On this system the type agrees with what C{findmnt} says.
        """
        import shutil
        import subprocess

        findmnt = shutil.which("findmnt")
        if findmnt is None or not os.path.exists(cdb.MOUNTINFO):
            raise unittest.SkipTest("no findmnt or mount table here")
        here = os.path.abspath(".")
        out = subprocess.run(
            [findmnt, "-n", "-o", "FSTYPE", "--target", here],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.assertEqual(cdb.fileSystemType(here), out)

    def directoriesSynced(self, store, ids):
        """
        Commit content for C{ids} in C{store}: return the directories that
        were fsynced.
        """
        synced = []
        real = cdb.fsyncDirectory

        def fsyncDirectory(path):
            synced.append(os.path.basename(path))
            real(path)

        self.patch(cdb, "fsyncDirectory", fsyncDirectory)
        for ta in ids:
            w = store.createWriter(ta)
            w.write(b"content")
            self.successResultOf(w.commit())
            with store.open(ta) as f:
                self.assertEqual(f.read(), b"content")
        return synced

    def test_syncedWhereNeeded(self):
        """
        On a file system that does not make a new entry durable with the
        file, each file's directory is fsynced after the file.
        """
        base = self.mktemp()
        os.makedirs(base)
        self.mountinfo(base, "ext2")
        store = cdb.FileContentStore(base)
        synced = self.directoriesSynced(store, [TA, "S00000000407CE49700"])
        self.assertEqual(synced, ["2", "7"])

    def test_notSyncedOnExt4(self):
        """
        On ext4 (or XFS, or btrfs) the fsync of the file is all it takes.
        """
        for fsType in ("ext4", "xfs", "btrfs"):
            base = self.mktemp()
            os.makedirs(base)
            self.mountinfo(base, fsType)
            store = cdb.FileContentStore(base)
            self.assertEqual(self.directoriesSynced(store, [TA]), [])

    def test_perDirectory(self):
        """
        Each directory is judged on its own: one may be a link to another
        disk (seed §5.4).
        """
        self.patch(cdb, "entrySyncedByFileSync", lambda path: not path.endswith("7"))
        store = cdb.FileContentStore(self.mktemp())
        synced = self.directoriesSynced(
            store, [TA, "S00000000407CE49700", "S00000000407CE49A00"]
        )
        self.assertEqual(synced, ["7"])

    @defer.inlineCallbacks
    def test_createdAhead(self):
        """
        A file created ahead in the thread pool has its directory synced
        there only where the file system needs it.
        """
        from twisted.internet import reactor

        pool = ThreadPool(1, 2)
        pool.start()
        self.addCleanup(pool.stop)
        for fsType, wanted in (("ext2", ["2"]), ("ext4", [])):
            base = self.mktemp()
            os.makedirs(base)
            self.mountinfo(base, fsType)
            synced = []
            self.patch(cdb, "fsyncDirectory", synced.append)
            store = cdb.FileContentStore(base, threadPool=pool, reactor=reactor)
            self.assertTrue(store.idle())
            w = store.createWriter(TA)
            self.assertIsNotNone(w._opening)
            w.write(b"ahead")
            yield w.commit()
            self.assertEqual([os.path.basename(p) for p in synced], wanted)
            with store.open(TA) as f:
                self.assertEqual(f.read(), b"ahead")

    def test_forced(self):
        """
        C{syncDirectories} overrides what the file system would allow.
        """
        self.patch(cdb, "entrySyncedByFileSync", lambda path: True)
        store = cdb.FileContentStore(self.mktemp(), syncDirectories=True)
        self.assertEqual(self.directoriesSynced(store, [TA]), ["2"])
        self.patch(cdb, "entrySyncedByFileSync", lambda path: False)
        store = cdb.FileContentStore(self.mktemp(), syncDirectories=False)
        self.assertEqual(self.directoriesSynced(store, [TA]), [])


def pooledStore(case):
    """
    A L{cdb.FileContentStore} for the test C{case} with a thread pool of
    its own (stopped after the test) and 1 KB chunks.
    """
    from twisted.internet import reactor

    case.pool = ThreadPool(1, 2)
    case.pool.start()
    case.addCleanup(case.pool.stop)
    return cdb.FileContentStore(
        case.mktemp(), threadPool=case.pool, reactor=reactor, chunkSize=1024
    )


def assertFinishFailsOverExisting(case, store, ta):
    """
    With a file already at C{ta}'s path (holding C{b"other"}), the
    C{finish} of a writer for C{ta} raises C{EEXIST}.
    """
    with open(store.path(ta), "wb") as f:
        f.write(b"other")
    w = store.createWriter(ta)
    w.write(b"x")
    e = case.assertRaises(OSError, w.finish)
    case.assertEqual(e.errno, errno.EEXIST)


class PooledStoreTests(unittest.TestCase):
    """
    L{cdb.FileContentStore} with a thread pool: small content is written
    in the pool at commit, and removals are batched there.
    """

    def setUp(self):
        self.store = pooledStore(self)

    def _exists(self, ta, wanted=True):
        """Fire once the content file of C{ta} exists (or not)."""
        from twisted.internet import reactor, task

        def check():
            if self.store.exists(ta) != wanted:
                return task.deferLater(reactor, 0.005, check)
            return None

        return check()

    def _created(self, writer):
        """Fire once C{writer} has its file open (in the reactor thread)."""
        from twisted.internet import reactor, task

        def check():
            if not writer._created:
                return task.deferLater(reactor, 0.005, check)
            return None

        return check()

    @defer.inlineCallbacks
    def test_createdAhead(self):
        """
        The file is created (in the pool) as soon as the writer exists;
        the content is buffered until commit, which writes and syncs it.
        """
        w = self.store.createWriter(TA)
        w.write(b"small")
        yield self._created(w)
        self.assertEqual(self.store.size(TA), 0)
        self.assertEqual(self.store.bytesInFlight, 5)
        yield w.commit()
        self.assertEqual(self.store.bytesInFlight, 0)
        with self.store.open(TA) as f:
            self.assertEqual(f.read(), b"small")

    @defer.inlineCallbacks
    def test_commitBeforeCreated(self):
        """A commit that comes before the file exists waits for it."""
        w = self.store.createWriter(TA)
        w.write(b"quick")
        yield w.commit()
        with self.store.open(TA) as f:
            self.assertEqual(f.read(), b"quick")

    @defer.inlineCallbacks
    def test_largeContentEarly(self):
        """
        Content larger than a chunk is written before commit, once the
        file exists, so that it is not held in memory.
        """
        w = self.store.createWriter(TA)
        yield self._created(w)
        w.write(b"x" * 2000)
        self.assertEqual(self.store.size(TA), 2000)
        w.write(b"y")
        yield w.commit()
        self.assertEqual(self.store.size(TA), 2001)

    @defer.inlineCallbacks
    def test_largeContentBeforeCreated(self):
        """
        Content that outgrows a chunk before the file exists is written
        when it does.
        """
        w = self.store.createWriter(TA)
        w.write(b"x" * 2000)
        yield self._created(w)
        self.assertEqual(self.store.size(TA), 2000)
        yield w.commit()
        self.assertEqual(self.store.size(TA), 2000)

    def test_duplicateAtCommit(self):
        """
        Committing content under an id that exists fails, and the existing
        file is kept.
        """
        with open(self.store.path(TA), "wb") as f:
            f.write(b"first")
        w = self.store.createWriter(TA)
        w.write(b"second")
        d = self.assertFailure(w.commit(), OSError)

        def check(e):
            self.assertEqual(e.errno, errno.EEXIST)
            with self.store.open(TA) as f:
                self.assertEqual(f.read(), b"first")

        return d.addCallback(check)

    @defer.inlineCallbacks
    def test_abortBeforeCreated(self):
        """
        Aborting while the file is still being created removes it once it
        exists.
        """
        w = self.store.createWriter(TA)
        w.write(b"gone")
        w.abort()
        self.assertFalse(w._created)
        opening = w._opening
        self.assertIsNotNone(opening)
        yield opening
        yield self._exists(TA, False)
        self.assertEqual(self.store.transactionIds(), [])

    @defer.inlineCallbacks
    def test_abortAfterCreated(self):
        """Aborting after the file exists removes it."""
        w = self.store.createWriter(TA)
        yield self._created(w)
        w.abort()
        yield self._exists(TA, False)

    def test_removeBatched(self):
        """
        Removed content disappears (unlinked in the pool), also content
        removed while an earlier unlink is under way.
        """
        from twisted.internet import reactor, task

        ids = ["S0000000040%dCE49200" % (i,) for i in range(5)]
        for ta in ids:
            with open(self.store.path(ta), "wb") as f:
                f.write(b"x")
        for ta in ids:
            self.store.remove(ta)
        self.store.remove("S00000000499CE49200")  # not there: no error

        def gone():
            if self.store.transactionIds():
                return task.deferLater(reactor, 0.01, gone)
            return None

        return gone()


class FlushRemovalsTests(unittest.TestCase):
    """
    L{cdb.ContentStoreService}: the removals still waiting for the thread
    pool when smx stops are made at its stop.
    """

    def test_stop(self):
        """
        Content removed while the pool does not run its jobs (it is
        stopping) is unlinked when the service stops: the file handed to
        the pool's job and the one waiting behind it.
        """
        pool, clock, store = stoppedPoolContentStore(self.mktemp())
        ids = ["S0000000040%dCE49200" % (i,) for i in range(2)]
        for ta in ids:
            with open(store.path(ta), "wb") as f:
                f.write(b"x")
        store.remove(ids[0])
        clock.advance(cdb.REMOVAL_DELAY)
        store.remove(ids[1])
        self.assertEqual(len(pool.jobs), 1)
        self.assertEqual(store.transactionIds(), sorted(ids))
        service = cdb.ContentStoreService(store)
        service.startService()
        service.stopService()
        self.assertEqual(store.transactionIds(), [])

    def test_stopBeforeTheJob(self):
        """
        Content removed less than L{cdb.REMOVAL_DELAY} before the stop,
        not yet handed to the pool, is unlinked at the stop, and no job
        is handed to the pool after it.
        """
        pool, clock, store = stoppedPoolContentStore(self.mktemp())
        with open(store.path(TA), "wb") as f:
            f.write(b"x")
        store.remove(TA)
        service = cdb.ContentStoreService(store)
        service.startService()
        service.stopService()
        self.assertEqual(store.transactionIds(), [])
        clock.advance(cdb.REMOVAL_DELAY)
        self.assertEqual(pool.jobs, [])


class RemovalBatchTests(unittest.TestCase):
    """
    With a thread pool, the removals of L{cdb.REMOVAL_DELAY} seconds go
    to the pool in one job.
    """

    def test_batch(self):
        pool, clock, store = stoppedPoolContentStore(self.mktemp())
        ids = ["S0000000040%dCE49200" % (i,) for i in range(3)]
        for ta in ids:
            with open(store.path(ta), "wb") as f:
                f.write(b"x")
            store.remove(ta)
            clock.advance(cdb.REMOVAL_DELAY / 4)
        self.assertEqual(pool.jobs, [])
        clock.advance(cdb.REMOVAL_DELAY)
        self.assertEqual(
            [args for f, args in pool.jobs], [([store.path(ta) for ta in ids],)]
        )

    def test_removeWaitingNow(self):
        """
        L{cdb.FileContentStore.removeWaitingNow} removes the files waiting
        for the next job at once, in the calling thread; no job follows.
        """
        pool, clock, store = stoppedPoolContentStore(self.mktemp())
        with open(store.path(TA), "wb") as f:
            f.write(b"x" * (cdb.RECYCLE_MAX_SIZE + 1))
        store.remove(TA)
        store.removeWaitingNow()
        self.assertEqual(store.transactionIds(), [])
        self.assertFalse(os.path.exists(store.path(TA)))
        clock.advance(cdb.REMOVAL_DELAY)
        self.assertEqual(pool.jobs, [])
        # and the next removal waits for its batch again
        with open(store.path(TA2), "wb") as f:
            f.write(b"y")
        store.remove(TA2)
        self.assertEqual(pool.jobs, [])
        clock.advance(cdb.REMOVAL_DELAY)
        self.assertEqual(len(pool.jobs), 1)


class IdleTests(unittest.TestCase):
    """
    L{cdb.FileContentStore.idle}: files are made ahead only for a message
    that comes after a pause.
    """

    def test_idle(self):
        """Idle without jobs, and only a while after the last one ended."""
        from twisted.internet.task import Clock

        clock = Clock()
        clock.advance(100)
        store = cdb.FileContentStore(self.mktemp(), threadPool=object(), reactor=clock)
        self.assertTrue(store.idle())
        store.jobsInFlight = 1
        self.assertFalse(store.idle())
        store.jobsInFlight = 0
        store._idleSince = clock.seconds()
        self.assertFalse(store.idle())
        clock.advance(cdb.AHEAD_AFTER_IDLE / 2)
        self.assertFalse(store.idle())
        clock.advance(cdb.AHEAD_AFTER_IDLE)
        self.assertTrue(store.idle())


class BusyPoolStoreTests(PooledStoreTests):
    """
    The same with a busy pool: writers create their file at commit, in
    the job that writes and syncs it.
    """

    def setUp(self):
        PooledStoreTests.setUp(self)
        self.patch(cdb, "AHEAD_AFTER_IDLE", float("inf"))

    def _created(self, writer):
        # nothing is made ahead: the file appears with the first chunk
        return defer.succeed(None)

    @defer.inlineCallbacks
    def test_createdAhead(self):
        """Small content makes no file until commit."""
        w = self.store.createWriter(TA)
        w.write(b"small")
        self.assertIsNone(w._opening)
        self.assertFalse(self.store.exists(TA))
        yield w.commit()
        with self.store.open(TA) as f:
            self.assertEqual(f.read(), b"small")

    def test_largeContentBeforeCreated(self):
        """Content that outgrows a chunk is written at once."""
        w = self.store.createWriter(TA)
        w.write(b"x" * 2000)
        self.assertEqual(self.store.size(TA), 2000)
        return w.commit()

    def test_abortBeforeCreated(self):
        """Aborting small content leaves no file."""
        w = self.store.createWriter(TA)
        w.write(b"gone")
        w.abort()
        self.assertEqual(self.store.transactionIds(), [])

    @defer.inlineCallbacks
    def test_groupCommit(self):
        """
        Contents committed together are synced by few pool jobs (the
        first starts at once, the others share the next), and one that
        fails (its id exists) does not fail the others.
        """
        jobs = []
        inPool = self.store._inPool

        def counting(f, *args):
            jobs.append(f)
            return inPool(f, *args)

        self.patch(self.store, "_inPool", counting)
        ids = ["S0000000040%dCE49200" % (i,) for i in range(5)]
        with open(self.store.path(ids[2]), "wb") as f:
            f.write(b"there already")
        writers = [self.store.createWriter(ta) for ta in ids]
        for i, w in enumerate(writers):
            w.write(b"content %d" % (i,))
        results = yield defer.DeferredList(
            [w.commit() for w in writers], consumeErrors=True
        )
        self.assertEqual([ok for ok, _ in results], [True, True, False, True, True])
        self.assertEqual(results[2][1].value.errno, errno.EEXIST)
        self.assertEqual(len(jobs), 2)
        for i in (0, 1, 3, 4):
            with self.store.open(ids[i]) as f:
                self.assertEqual(f.read(), b"content %d" % (i,))
        with self.store.open(ids[2]) as f:
            self.assertEqual(f.read(), b"there already")


class SyncedByQueueManagerTests(unittest.TestCase):
    """
    A store whose contents QMGR syncs (C{syncedByQueueManager}): its
    writers create their files at once, even with a thread pool, and
    L{cdb.ContentWriter.finish} writes the content out without a sync.
    """

    def setUp(self):
        self.store = pooledStore(self)
        self.store.syncedByQueueManager = True
        self.synced = []
        self.patch(cdb.os, "fsync", self.synced.append)

    def test_finish(self):
        """
        C{finish} writes the whole content (large chunks on the way) and
        closes the file, in the calling thread and without an fsync; the
        bytes are no longer in flight.
        """
        w = self.store.createWriter(TA)
        self.assertTrue(os.path.exists(self.store.path(TA)))
        w.write(b"a" * 1500)
        self.assertEqual(self.store.size(TA), 1500)
        w.write(b"tail")
        self.assertIsNone(w.finish())
        self.assertEqual(self.store.size(TA), 1504)
        self.assertEqual(self.store.bytesInFlight, 0)
        self.assertEqual(self.synced, [])
        self.assertIsNone(w._fd)

    def test_finishFullDisk(self):
        """
        A write failing with ENOSPC makes C{finish} raise the L{OSError};
        the partial file is removed.
        """

        def write(fd, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(cdb, "_write", write)
        w = self.store.createWriter(TA)
        w.write(b"x" * 10)
        e = self.assertRaises(OSError, w.finish)
        self.assertEqual(e.errno, errno.ENOSPC)
        self.assertEqual(self.store.bytesInFlight, 0)
        return self._gone(TA)

    def test_finishNotCreated(self):
        """
        A file that could not be created (here: one that exists) makes
        C{finish} raise, and the existing file is left alone.
        """
        assertFinishFailsOverExisting(self, self.store, TA)
        self.assertEqual(self.store.size(TA), 5)
        self.assertEqual(self.store.bytesInFlight, 0)

    def test_finishTwice(self):
        """C{finish} after C{finish} (or C{commit}) is a programming error."""
        w = self.store.createWriter(TA)
        w.finish()
        self.assertRaises(RuntimeError, w.finish)

    def test_abortAfterFinish(self):
        """A finished content that is given up is removed."""
        w = self.store.createWriter(TA)
        w.write(b"x")
        w.finish()
        w.abort()
        return self._gone(TA)

    def _gone(self, ta):
        """Fire once the content of C{ta} is removed (in the pool)."""
        from twisted.internet import reactor, task

        def check():
            if self.store.exists(ta):
                return task.deferLater(reactor, 0.005, check)
            return None

        return check()


#: in the same CDB directory as L{TA}
TA2 = "S00000000407CE4A200"
TA3 = "S00000000407CE4B200"


class RecycleTests(unittest.TestCase):
    """
    Removed contents are kept for reuse (C{.free.ID}) and taken by the
    writers of a store whose contents QMGR syncs, which overwrite them in
    place; real files, no thread pool (removals happen at once).
    """

    def setUp(self):
        self.base = self.mktemp()
        self.store = self._store()
        self.directory = os.path.dirname(self.store.path(TA))
        self.assertEqual(self.directory, os.path.dirname(self.store.path(TA2)))

    def _store(self):
        store = cdb.FileContentStore(self.base)
        store.syncedByQueueManager = True
        return store

    def _write(self, ta, data, store=None):
        w = (store or self.store).createWriter(ta)
        w.write(data)
        w.finish()
        return w

    def _read(self, ta):
        with self.store.open(ta) as f:
            return f.read()

    def _free(self):
        return sorted(
            n for n in os.listdir(self.directory) if n.startswith(cdb.FREE_PREFIX)
        )

    def test_removedKept(self):
        """
        A removed content is renamed to C{.free.ID} in its directory; it
        is no content any more.
        """
        self._write(TA, b"x" * 100)
        inode = os.stat(self.store.path(TA)).st_ino
        self.store.remove(TA)
        self.assertEqual(self._free(), [cdb.FREE_PREFIX + TA])
        self.assertEqual(
            os.stat(os.path.join(self.directory, cdb.FREE_PREFIX + TA)).st_ino, inode
        )
        self.assertFalse(self.store.exists(TA))
        self.assertRaises(KeyError, self.store.open, TA)
        self.assertEqual(self.store.transactionIds(), [])

    def test_takenOverwrittenAndCut(self):
        """
        The next writer in that directory takes the free file: the same
        inode, overwritten and cut to what it wrote; its C{recycledCrc} is
        the CRC-32 of that.
        """
        self._write(TA, b"old message " * 300)
        inode = os.stat(self.store.path(TA)).st_ino
        self.store.remove(TA)
        w = self._write(TA2, b"new")
        self.assertTrue(w.recycled)
        self.assertEqual(w.recycledCrc, zlib.crc32(b"new"))
        self.assertEqual(os.stat(self.store.path(TA2)).st_ino, inode)
        self.assertEqual(self._read(TA2), b"new")
        self.assertEqual(self._free(), [])
        self.assertEqual(self.store.crc(TA2), zlib.crc32(b"new"))

    def test_takenAndCommitted(self):
        """
        A writer that commits (QMGR's bounces in embedded mode) rather
        than finishing writes over a free file too: the file is cut to
        what it wrote and synced, nothing of the old content is left.
        """
        self._write(TA, b"old message " * 300)
        self.store.remove(TA)
        w = self.store.createWriter(TA2)
        w.write(b"bounce")
        self.successResultOf(w.commit())
        self.assertTrue(w.recycled)
        self.assertEqual(self._read(TA2), b"bounce")
        self.assertEqual(self.store.crc(TA2), w.recycledCrc)

    def test_newFileNoCrc(self):
        """A writer that made a new file gives no CRC."""
        w = self._write(TA, b"x")
        self.assertFalse(w.recycled)
        self.assertIsNone(w.recycledCrc)

    def test_largeUnlinked(self):
        """A removed content larger than L{cdb.RECYCLE_MAX_SIZE} is unlinked."""
        self.patch(cdb, "RECYCLE_MAX_SIZE", 10)
        self._write(TA, b"x" * 11)
        self._write(TA2, b"x" * 10)
        self.store.remove(TA)
        self.store.remove(TA2)
        self.assertEqual(self._free(), [cdb.FREE_PREFIX + TA2])

    def test_perDirectory(self):
        """
        At most L{cdb.RECYCLE_PER_DIRECTORY} free files in a directory: a
        removal beyond that unlinks, until a count finds room again (not
        sooner than L{cdb.LIST_DELAY_MIN} after the last).
        """
        self.patch(cdb, "RECYCLE_PER_DIRECTORY", 2)
        now = [100.0]
        self.store.clock = lambda: now[0]
        for ta in (TA, TA2, TA3):
            self._write(ta, b"x")
        for ta in (TA, TA2, TA3):
            self.store.remove(ta)
        self.assertEqual(self._free(), [cdb.FREE_PREFIX + TA, cdb.FREE_PREFIX + TA2])
        # another process takes one meanwhile
        other = self._store()
        self._write(TA3, b"y", store=other)
        self.assertEqual(len(self._free()), 1)
        self.store.remove(TA3)
        self.assertEqual(len(self._free()), 1)
        now[0] += cdb.LIST_DELAY_MAX
        self._write(TA3, b"z", store=other)
        self.store.remove(TA3)
        self.assertEqual(len(self._free()), 1)

    def test_otherProcess(self):
        """
        A store in another process finds the free files by listing the
        directory, at most every L{cdb.LIST_DELAY_MIN} seconds; while it
        finds none, less and less often.
        """
        self._write(TA, b"x")
        self.store.remove(TA)
        other = self._store()
        now = [100.0]
        other.clock = lambda: now[0]
        listings = []
        listdir = os.listdir
        self.patch(cdb.os, "listdir", lambda p: listings.append(p) or listdir(p))
        # in another directory, without free files: a new file every 10 ms
        # for 0.1 s, the directory listed at 0, 10, 30 and 70 ms
        for n in range(11):
            w = self._write("S%015X300" % (n,), b"a", store=other)
            self.assertFalse(w.recycled)
            now[0] += cdb.LIST_DELAY_MIN
        self.assertEqual(len(listings), 4)
        self.assertNotIn(self.directory, listings)
        w = self._write(TA2, b"b", store=other)
        self.assertTrue(w.recycled)
        self.assertEqual(listings[4:], [self.directory])
        self.assertEqual(self._read(TA2), b"b")

    def test_readerKeepsItsFile(self):
        """
        A file that a reader still has open is not taken: the writer makes
        a new file, and the reader reads what it opened.
        """
        self._write(TA, b"first message")
        reader = self.store.open(TA)
        self.addCleanup(reader.close)
        self.store.remove(TA)
        w = self._write(TA2, b"second")
        self.assertFalse(w.recycled)
        self.assertEqual(self._free(), [])
        self.assertEqual(reader.read(), b"first message")
        self.assertEqual(self._read(TA2), b"second")

    def test_writerLocksItsFile(self):
        """
        A recycled file being written cannot be opened to read: the reader
        is told the content is not there.
        """
        self._write(TA, b"first message")
        self.store.remove(TA)
        w = self.store.createWriter(TA2)
        self.assertTrue(w.recycled)
        self.assertRaises(KeyError, self.store.open, TA2)
        w.write(b"second")
        w.finish()
        self.assertEqual(self._read(TA2), b"second")

    def test_openedThenRenamed(self):
        """
        A reader whose file was renamed between its open and its lock
        (removed and taken meanwhile) is told the content is not there.
        """
        self._write(TA, b"first message")
        flock = fcntl.flock

        def renamedMeanwhile(fd, operation):
            os.rename(self.store.path(TA), self.store.path(TA2))
            return flock(fd, operation)

        self.patch(cdb.fcntl, "flock", renamedMeanwhile)
        self.assertRaises(KeyError, self.store.open, TA)

    def test_neverReplaces(self):
        """
        A free file is not renamed over an existing content: the writer
        fails as a create would.
        """
        self._write(TA, b"x")
        self.store.remove(TA)
        assertFinishFailsOverExisting(self, self.store, TA2)
        self.assertEqual(self._read(TA2), b"other")

    def test_withoutRenameat2(self):
        """Where renameat2 is missing, removed contents are unlinked."""
        self.patch(cdb, "_renameat2", None)
        self._write(TA, b"x")
        self.store.remove(TA)
        self.assertEqual(self._free(), [])
        self.assertFalse(self._write(TA2, b"y").recycled)

    def test_recycledOnFullDisk(self):
        """
        A recycled file that must grow on a full file system (a real tmpfs,
        root only): C{finish} raises C{ENOSPC}, nothing is left under the
        transaction's name, the file is kept for reuse again, and the next
        writer that fits in it writes its content whole.
        """
        from smx.queue.test.tmpfs import fill, mountTmpfs

        self.base = os.path.join(mountTmpfs(self, "2m"), "cdb")
        self.store = self._store()
        self.directory = os.path.dirname(self.store.path(TA))
        self._write(TA, b"old" * 100)
        self.store.remove(TA)
        filler = fill(self.base)
        self.addCleanup(os.unlink, filler)
        w = self.store.createWriter(TA2)
        self.assertTrue(w.recycled)
        w.write(b"x" * 65536)
        e = self.assertRaises(OSError, w.finish)
        self.assertEqual(e.errno, errno.ENOSPC)
        self.assertFalse(self.store.exists(TA2))
        self.assertEqual(self._free(), [cdb.FREE_PREFIX + TA2])
        w = self._write(TA3, b"new")
        self.assertTrue(w.recycled)
        self.assertEqual(self._read(TA3), b"new")

    def test_abortedRecycled(self):
        """A recycled file given up is kept for reuse again."""
        self._write(TA, b"x")
        self.store.remove(TA)
        w = self.store.createWriter(TA2)
        self.assertTrue(w.recycled)
        w.write(b"partial")
        w.abort()
        self.assertFalse(self.store.exists(TA2))
        self.assertEqual(self._free(), [cdb.FREE_PREFIX + TA2])

    def test_purgedWhenIdle(self):
        """
        L{cdb.ContentStoreService} removes the kept files once none was
        kept for L{cdb.PURGE_AFTER} seconds, and when it stops.
        """
        from twisted.internet.task import Clock

        clock = Clock()
        self.store.reactor = clock
        self.store.clock = clock.seconds
        service = cdb.ContentStoreService(self.store)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        self._write(TA, b"x")
        self.store.remove(TA)
        clock.advance(cdb.PURGE_AFTER / 2)
        self._write(TA2, b"y")
        self.store.remove(TA2)
        clock.advance(cdb.PURGE_AFTER / 2)
        self.assertEqual(len(self._free()), 1)
        clock.advance(cdb.PURGE_AFTER)
        self.assertEqual(self._free(), [])
        self.assertIsNone(self.store.lastKept)
        # then new files, and more kept
        w = self._write(TA3, b"z")
        self.assertFalse(w.recycled)
        self.store.remove(TA3)
        self.assertEqual(self._free(), [cdb.FREE_PREFIX + TA3])
        service.stopService()
        self.assertEqual(self._free(), [])
        self.assertEqual(os.listdir(self.directory), [])

    def test_pooledRemoval(self):
        """
        With a thread pool, removals are recycled in the pool, and this
        store's writers then take them without listing.
        """
        store = pooledStore(self)
        store.syncedByQueueManager = True
        w = store.createWriter(TA)
        w.write(b"x")
        w.finish()
        store.remove(TA)
        from twisted.internet import reactor, task

        def idle():
            if store._unlinking:
                return task.deferLater(reactor, 0.005, idle)
            return None

        def taken(_):
            with self.patch(cdb.os, "listdir", lambda p: self.fail("listed")):
                w = store.createWriter(TA2)
            self.assertTrue(w.recycled)
            w.finish()
            store.remove(TA2)
            return idle()

        def purged(_):
            self.assertEqual(
                os.listdir(os.path.dirname(store.path(TA2))),
                [cdb.FREE_PREFIX + TA2],
            )
            # idle long enough: purged in the pool
            store.lastKept -= cdb.PURGE_AFTER
            store.purgeIfIdle()
            self.assertTrue(store._unlinking)
            return idle().addCallback(
                lambda _: self.assertEqual(
                    os.listdir(os.path.dirname(store.path(TA2))), []
                )
            )

        return idle().addCallback(taken).addCallback(purged)


class ContentSyncTests(unittest.TestCase):
    """
    Tests for L{cdb.ContentSync}: how QMGR syncs the contents SMTPS wrote.
    """

    def setUp(self):
        self.store = cdb.FileContentStore(self.mktemp())
        self.ibdb = os.open(self.mktemp(), os.O_WRONLY | os.O_CREAT, 0o600)
        self.addCleanup(os.close, self.ibdb)
        self.paths = []
        for ta in (TA, "S00000000407CE49300"):
            w = self.store.createWriter(ta)
            w.write(b"content")
            w.finish()
            self.paths.append(self.store.path(ta))

    def test_fileSystem(self):
        """
        In mode C{filesystem} one C{syncfs} per file system holding the
        CDB directories syncs every content at once; the IBDB file on the
        same file system needs no fsync of its own.
        """
        if cdb._syncfs is None:
            raise unittest.SkipTest("no syncfs(2) here")
        calls = []
        real = cdb._syncfs

        def syncfs(fd):
            calls.append(os.fstat(fd).st_dev)
            return real(fd)

        self.patch(cdb, "_syncfs", syncfs)
        sync = cdb.ContentSync(self.store, cdb.SYNC_FILESYSTEM)
        self.addCleanup(sync.close)
        self.assertEqual(sync.mode, cdb.SYNC_FILESYSTEM)
        self.assertTrue(sync.sync(self.paths, self.ibdb))
        self.assertEqual(calls, [os.stat(self.store.baseDirectory).st_dev])

    def test_fileSystemFails(self):
        """A failed C{syncfs} raises the L{OSError}: the commit fails."""
        if cdb._syncfs is None:
            raise unittest.SkipTest("no syncfs(2) here")

        def syncfs(fd):
            ctypes.set_errno(errno.EIO)
            return -1

        self.patch(cdb, "_syncfs", syncfs)
        sync = cdb.ContentSync(self.store, cdb.SYNC_FILESYSTEM)
        self.addCleanup(sync.close)
        e = self.assertRaises(OSError, sync.sync, self.paths, self.ibdb)
        self.assertEqual(e.errno, errno.EIO)

    def test_otherFileSystem(self):
        """
        An IBDB file on another file system than CDB's still needs its
        own fsync.
        """
        if cdb._syncfs is None:
            raise unittest.SkipTest("no syncfs(2) here")
        self.patch(cdb, "_syncfs", lambda fd: 0)
        sync = cdb.ContentSync(self.store, cdb.SYNC_FILESYSTEM)
        self.addCleanup(sync.close)
        sync.sync(self.paths, self.ibdb)
        sync._fileSystems = {-1: sync._fileSystems.popitem()[1]}
        self.assertFalse(sync.sync(self.paths, self.ibdb))

    def test_file(self):
        """
        In mode C{file} each content is fsynced, and its directory where
        the file system needs that; the IBDB file is not.
        """
        synced = []
        self.patch(cdb.os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino))
        directories = []
        self.patch(cdb, "fsyncDirectory", directories.append)
        self.store._syncDirectory = dict.fromkeys(self.store._syncDirectory, True)
        sync = cdb.ContentSync(self.store, cdb.SYNC_FILE)
        self.assertFalse(sync.sync(self.paths, self.ibdb))
        self.assertEqual(synced, [os.stat(p).st_ino for p in self.paths])
        self.assertEqual(
            sorted(directories), sorted({os.path.dirname(p) for p in self.paths})
        )

    def test_fileMissing(self):
        """
        In mode C{file} a content that is not there fails the sync.
        """
        os.unlink(self.paths[1])
        sync = cdb.ContentSync(self.store, cdb.SYNC_FILE)
        self.assertRaises(FileNotFoundError, sync.sync, self.paths, self.ibdb)

    def test_noSyncfs(self):
        """Where there is no C{syncfs}, the mode is C{file}."""
        self.patch(cdb, "_syncfs", None)
        self.assertEqual(
            cdb.ContentSync(self.store, cdb.SYNC_FILESYSTEM).mode, cdb.SYNC_FILE
        )
        self.assertRaises(OSError, cdb.syncFileSystem, self.ibdb)
