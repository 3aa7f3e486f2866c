# -*- test-case-name: smx.test.test_mta -*-
"""
Tests for the process helpers of L{smx.test.mta}: a test signals only the
process it started, never one that got its pid since.
"""

import signal
import subprocess
import time

from twisted.trial import unittest

from smx.test.mta import processIdentity, signalIdentified, signalPidFile


class IdentityTests(unittest.TestCase):
    """
    L{processIdentity} and L{signalIdentified}.
    """

    def sleeper(self) -> subprocess.Popen:
        """
        A C{sleep} process, returned once it runs C{sleep}: until the
        child has called exec its command is still that of this process.
        """
        process = subprocess.Popen(["sleep", "30"])
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        deadline = time.monotonic() + 10
        while self.command(process.pid) != "sleep":
            self.assertLess(time.monotonic(), deadline, "sleep never started")
            time.sleep(0.01)
        return process

    @staticmethod
    def command(pid: int) -> str:
        with open("/proc/%d/comm" % (pid,)) as f:
            return f.read().strip()

    def test_signalled(self):
        """
        The process the identity names gets the signal.
        """
        process = self.sleeper()
        signalIdentified(processIdentity(process.pid), signal.SIGTERM)
        self.assertEqual(process.wait(10), -signal.SIGTERM)

    def test_otherStart(self):
        """
        A process with the pid but another start time (one started after
        the named one ended) gets nothing.
        """
        process = self.sleeper()
        pid, start = processIdentity(process.pid)
        signalIdentified((pid, start - 1), signal.SIGTERM)
        self.assertIsNone(process.poll())
        self.assertEqual(processIdentity(process.pid), (pid, start))

    def test_gone(self):
        """
        A process that has ended has no identity, and signalling nothing
        is no error.
        """
        process = subprocess.Popen(["true"])
        process.wait()
        self.assertIsNone(processIdentity(process.pid))
        signalIdentified(None, signal.SIGTERM)

    def test_pidFileOtherCommand(self):
        """
        L{signalPidFile} signals the pid of the file only when that process
        runs the command named.
        """
        process = self.sleeper()
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("%d\n" % (process.pid,))
        signalPidFile(path, "dovecot", signal.SIGTERM)
        self.assertIsNone(process.poll())
        signalPidFile(path, "sleep", signal.SIGTERM)
        self.assertEqual(process.wait(10), -signal.SIGTERM)
