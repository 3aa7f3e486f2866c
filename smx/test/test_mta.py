# -*- test-case-name: smx.test.test_mta -*-
"""
Tests for the process helpers of L{smx.test.mta}: a test signals only the
process it started, never one that got its pid since.
"""

import signal
import subprocess

from twisted.trial import unittest

from smx.test.mta import processIdentity, signalIdentified, signalPidFile


class IdentityTests(unittest.TestCase):
    """
    L{processIdentity} and L{signalIdentified}.
    """

    def sleeper(self) -> subprocess.Popen:
        process = subprocess.Popen(["sleep", "30"])
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        return process

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
