# -*- test-case-name: smx.scripts.test.test_lmtpdsignals -*-
"""
Tests of C{smx lmtpd} (L{smx.scripts.lmtpd}) as the MCP runs it: a real
process that SIGUSR1 and SIGUSR2 do not end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

BIN = os.path.dirname(sys.executable)


class SignalTests(SynchronousTestCase):
    """
    C{smx lmtpd} under the MCP, which passes SIGUSR1 and SIGUSR2 on.
    """

    def test_usr1usr2(self) -> None:
        """
        SIGUSR1 and SIGUSR2 leave C{smx lmtpd} running (it has no maps to
        reopen; the MCP rewinds its log file); SIGTERM ends it.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        sock = os.path.join(directory, "lmtpsock")
        child = subprocess.Popen(
            [
                os.path.join(BIN, "smx"),
                "lmtpd",
                "--socket",
                sock,
                "--maildir",
                os.path.join(directory, "mail"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        deadline = time.time() + 30
        while not os.path.exists(sock) and time.time() < deadline:
            time.sleep(0.05)
        self.assertTrue(os.path.exists(sock))
        for signum in (signal.SIGUSR1, signal.SIGUSR2):
            child.send_signal(signum)
            time.sleep(0.3)
            self.assertIsNone(child.poll(), signum)
        child.terminate()
        self.assertEqual(child.wait(timeout=30), 0)
