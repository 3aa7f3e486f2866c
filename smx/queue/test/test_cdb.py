# -*- test-case-name: smx.queue.test.test_cdb -*-
"""
Tests for L{smx.queue.cdb}: real files in a temporary directory.
"""

import errno
import os

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.interfaces import IContentStore
from smx.queue import cdb

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

    def test_directories(self):
        """
        The sixteen directories 0-9, A-F exist after construction.
        """
        self.assertEqual(sorted(os.listdir(self.base)), sorted("0123456789ABCDEF"))

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

    def _pooledStore(self, chunkSize=cdb.CHUNK_SIZE):
        from twisted.internet import reactor

        pool = ThreadPool(1, 1)
        pool.start()
        self.addCleanup(pool.stop)
        return pool, cdb.FileContentStore(
            self.mktemp(), threadPool=pool, reactor=reactor, chunkSize=chunkSize
        )

    def test_threadPoolIdleCreate(self):
        """
        With a thread pool and no sync under way, C{createWriter} creates
        the file at once.
        """
        pool, store = self._pooledStore()
        w = store.createWriter(TA)
        self.assertTrue(os.path.exists(store.path(TA)))
        w.abort()
        self.assertFalse(os.path.exists(store.path(TA)))

    def test_threadPoolLazyCreate(self):
        """
        With a thread pool and a sync under way, a small message's file
        is created by C{commit} in the pool, not by C{createWriter}; an
        empty content still gets its file; C{syncing} counts the commits
        under way.
        """
        pool, store = self._pooledStore()
        store.syncing = 1
        w = store.createWriter(TA)
        w.write(b"small")
        empty = store.createWriter("S00000000407CE49201")
        self.assertFalse(os.path.exists(store.path(TA)))
        self.assertFalse(os.path.exists(store.path("S00000000407CE49201")))
        d = defer.gatherResults([w.commit(), empty.commit()])
        self.assertEqual(store.syncing, 3)

        def check(_):
            self.assertEqual(store.syncing, 1)
            with store.open(TA) as f:
                self.assertEqual(f.read(), b"small")
            self.assertEqual(store.size("S00000000407CE49201"), 0)

        return d.addCallback(check)

    def test_threadPoolLazyAbort(self):
        """
        C{abort} of a writer whose file was not created yet leaves no file.
        """
        pool, store = self._pooledStore()
        store.syncing = 1
        w = store.createWriter(TA)
        w.write(b"x")
        w.abort()
        self.assertFalse(os.path.exists(store.path(TA)))
        self.failureResultOf(w.commit(), RuntimeError)

    def test_threadPoolBigContent(self):
        """
        With a thread pool and a sync under way, content larger than the
        chunk size creates the file when the first chunk is full, and is
        committed whole.
        """
        pool, store = self._pooledStore(chunkSize=4)
        store.syncing = 1
        w = store.createWriter(TA)
        w.write(b"01")
        self.assertFalse(os.path.exists(store.path(TA)))
        w.write(b"23456")
        self.assertTrue(os.path.exists(store.path(TA)))
        w.write(b"789")
        d = w.commit()

        def check(_):
            with store.open(TA) as f:
                self.assertEqual(f.read(), b"0123456789")

        return d.addCallback(check)

    def test_threadPoolNoOverwrite(self):
        """
        With a thread pool, a second writer for an existing id, created
        while a sync is under way, fails at commit and leaves the stored
        content alone.
        """
        pool, store = self._pooledStore()
        w = store.createWriter(TA)
        w.write(b"first")
        d = w.commit()

        def second(_):
            store.syncing = 1
            w2 = store.createWriter(TA)
            w2.write(b"second")
            return self.assertFailure(w2.commit(), OSError)

        def check(_):
            with store.open(TA) as f:
                self.assertEqual(f.read(), b"first")

        return d.addCallback(second).addCallback(check)

    def test_threadPoolFullDisk(self):
        """
        With a thread pool, a write failing in the pool makes C{commit}
        errback and removes the file.
        """

        def write(fd, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(cdb, "_write", write)
        pool, store = self._pooledStore()
        store.syncing = 1
        w = store.createWriter(TA)
        w.write(b"x" * 10)
        d = self.assertFailure(w.commit(), OSError)

        def check(e):
            self.assertEqual(e.errno, errno.ENOSPC)
            self.assertFalse(os.path.exists(store.path(TA)))

        return d.addCallback(check)
