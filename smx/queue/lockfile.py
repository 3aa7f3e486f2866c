# -*- test-case-name: smx.queue.test.test_lockfile -*-
"""
NAME
    smx.queue.lockfile - the lock a running QMGR holds on its queue

SYNOPSIS
    lock = QueueLock(queueDirectory)
    lock.acquire()               # QMGR, at start; OSError if taken
    lock.release()               # at stop (or the process ends)
    pid = runningQueueManager(queueDirectory)   # None: QMGR does not run

DESCRIPTION
    QMGR holds an exclusive C{flock(2)} lock on C{qmgr.pid} in the queue
    directory for as long as it runs, with its process id written in the
    file.  The kernel drops the lock when the process ends however it
    ends (C{kill -9} too), so a file left behind never claims a QMGR that
    is gone: whether QMGR runs is whether the lock is held, never whether
    the file exists.  C{smx mailq} asks this before it reads the queue
    files, and a second QMGR on the same queue (two C{twistd smx} in one
    directory would recover DEFEDB under each other's feet) refuses to
    start.

SECURITY
    The file is created mode 0644 and only read by others.

DIAGNOSTICS
    L{QueueLock.acquire} raises an L{OSError} (C{EBUSY}) naming the file
    and the process id of the holder.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from typing import Optional

#: the name of the lock file in the queue directory
LOCK_FILE = "qmgr.pid"


def lockPath(queueDirectory: str) -> str:
    return os.path.join(os.path.abspath(queueDirectory), LOCK_FILE)


def _readPid(fd: int) -> Optional[int]:
    try:
        data = os.pread(fd, 32, 0)
    except OSError:
        return None
    try:
        return int(data.split()[0])
    except (ValueError, IndexError):
        return None


class QueueLock:
    """
    The lock of one queue directory.

    @ivar path: the lock file.
    """

    def __init__(self, queueDirectory: str) -> None:
        self.path = lockPath(queueDirectory)
        self._fd = None  # type: Optional[int]

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float = 1.0) -> None:
        """
        Take the lock (waiting up to C{timeout} seconds for a process that
        only looks at it) and write our process id into the file.

        @raise OSError: C{EBUSY} if another QMGR holds it; the error of
            opening the file otherwise.
        """
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid = _readPid(fd)
                    os.close(fd)
                    raise OSError(
                        errno.EBUSY,
                        "the queue is in use by another QMGR%s"
                        % (" (pid %d)" % (pid,) if pid else ""),
                        self.path,
                    )
                time.sleep(0.05)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"%d\n" % (os.getpid(),), 0)
        except OSError:
            # a full disk: the lock is what counts, not the number
            pass
        self._fd = fd

    def release(self) -> None:
        """
        Drop the lock (the file stays; it claims nothing unlocked).
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def runningQueueManager(queueDirectory: str) -> Optional[int]:
    """
    Does a QMGR run on C{queueDirectory}?

    @return: its process id (0 if the file does not say), or C{None} if
        no process holds the lock.
    """
    try:
        fd = os.open(lockPath(queueDirectory), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _readPid(fd) or 0
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
