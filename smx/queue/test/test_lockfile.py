# -*- test-case-name: smx.queue.test.test_lockfile -*-
"""
Tests for L{smx.queue.lockfile}: the lock a running QMGR holds on its
queue, with real files and, for the holder, a real other process.
"""

import errno
import os
import signal
import subprocess
import sys

from twisted.trial import unittest

from smx.queue.lockfile import LOCK_FILE, QueueLock, runningQueueManager

HOLDER = """
import sys, time
from smx.queue.lockfile import QueueLock
QueueLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


class QueueLockTests(unittest.TestCase):
    """
    Tests for L{QueueLock} and L{runningQueueManager}.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def holder(self):
        """
        Start another process that takes the lock and keeps it.
        """
        p = subprocess.Popen(
            [sys.executable, "-c", HOLDER, self.dir],
            stdout=subprocess.PIPE,
            cwd=os.getcwd(),
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
        )

        def stop():
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()

        self.addCleanup(stop)
        self.assertEqual(p.stdout.readline(), b"locked\n")
        return p

    def test_notRunning(self):
        """
        Without a lock file, or with one nobody holds (left by a QMGR
        that ended), no QMGR runs.
        """
        self.assertIsNone(runningQueueManager(self.dir))
        with open(os.path.join(self.dir, LOCK_FILE), "w") as f:
            f.write("%d\n" % (os.getpid(),))
        self.assertIsNone(runningQueueManager(self.dir))

    def test_heldByAnotherProcess(self):
        """
        While another process holds the lock, L{runningQueueManager} names
        it and L{QueueLock.acquire} fails with C{EBUSY} naming it; once
        that process is killed with SIGKILL, the lock is free.
        """
        p = self.holder()
        self.assertEqual(runningQueueManager(self.dir), p.pid)
        lock = QueueLock(self.dir)
        e = self.assertRaises(OSError, lock.acquire, 0.1)
        self.assertEqual(e.errno, errno.EBUSY)
        self.assertIn("pid %d" % (p.pid,), str(e))
        self.assertEqual(e.filename, os.path.join(self.dir, LOCK_FILE))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        self.assertIsNone(runningQueueManager(self.dir))
        lock.acquire(0.1)
        self.addCleanup(lock.release)
        self.assertEqual(runningQueueManager(self.dir), os.getpid())

    def test_releasedAtStop(self):
        """
        L{QueueLock.release} frees the lock for the next QMGR.
        """
        lock = QueueLock(self.dir)
        lock.acquire()
        self.assertTrue(lock.held)
        self.assertRaises(OSError, QueueLock(self.dir).acquire, 0)
        lock.release()
        self.assertFalse(lock.held)
        self.assertIsNone(runningQueueManager(self.dir))
        again = QueueLock(self.dir)
        again.acquire(0)
        again.release()
