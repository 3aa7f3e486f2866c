# -*- test-case-name: smx.queue.test.test_defedb,smx.queue.test.test_ibdb -*-
"""
A small real file system for tests of full disks: a tmpfs mounted by the
test (root only) and unmounted by its cleanup, and a file that fills it.

    path = mountTmpfs(self, "20m")    # SkipTest unless root and mount works
    filler = fill(path)               # the file system is full now
    os.unlink(filler)                 # and has room again
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Any

from twisted.trial.unittest import SkipTest


def mountTmpfs(testCase: Any, size: str = "20m", prefix: str = "smx-tmpfs-") -> str:
    """
    Mount a tmpfs of C{size} on a new directory (mode 0755) and have
    C{testCase}'s cleanup unmount it.

    @return: the mount point.
    @raise SkipTest: if not root, or the mount fails.
    """
    if os.getuid() != 0:
        raise SkipTest("mounting a tmpfs needs root")
    path = tempfile.mkdtemp(prefix=prefix)
    p = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % (size,), "tmpfs", path],
        capture_output=True,
        timeout=30,
    )
    if p.returncode != 0:
        os.rmdir(path)
        raise SkipTest("cannot mount a tmpfs: %s" % (p.stderr.decode().strip(),))

    def unmount() -> None:
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)
        try:
            os.rmdir(path)
        except OSError:
            pass

    testCase.addCleanup(unmount)
    return path


def fill(directory: str, name: str = "filler") -> str:
    """
    Write a file in C{directory} until its file system is full (to the
    last byte).

    @return: the file's path.
    """
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 4096, 512, 1):
            chunk = b"\0" * size
            try:
                while True:
                    os.write(fd, chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    return path


def freeBytes(path: str) -> int:
    """@return: the bytes free for unprivileged use on C{path}'s file system."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
