# -*- test-case-name: smx.split.test.test_integration_stop -*-
"""
Integration tests of split mode: the SMTPS process gets SIGTERM (as the
MCP stops it, before QMGR) while a client waits for the reply to its
final dot, which a pmilter plugin on C{PYTHONPATH} holds for 2 seconds;
the components are real processes (C{python -m smx.split.run}) and the
message is relayed to Postfix's smtp-sink.
"""

from __future__ import annotations

import os
import signal
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from smx.mail.test.test_integration_stop import SLOWDOT
from smx.split.test.test_integration_split import SplitSystem
from smx.test.mta import (
    SMTP_SINK,
    SmtpSink,
    canConnect,
    dropInPlugins,
    missing,
    sendUntilDot,
    tempDirectory,
)


class SlowDotSystem(SplitSystem):
    """
    The components of split mode, SMTPS with the C{slowdot} pmilter.
    """

    def __init__(self, testCase: SynchronousTestCase, root: str, sink: SmtpSink):
        SplitSystem.__init__(self, testCase, root, sink)
        self.environ = dict(
            os.environ,
            PYTHONPATH=dropInPlugins(root, stoptest_slowdot=SLOWDOT),
            STOPTEST_DELAY="2",
        )
        with open(self.config) as f:
            text = f.read()
        text = text.replace(
            "io_timeout = 30s;",
            "io_timeout = 30s; pmilter { plugins = { slowdot }; timeout = 30s; }",
            1,
        )
        with open(self.config, "w") as f:
            f.write(text)


class StopSMTPSTests(SynchronousTestCase):
    """
    SIGTERM to the SMTPS process while a final dot waits for its reply.
    """

    def setUp(self) -> None:
        reason = missing(SMTP_SINK)
        if reason:
            raise SkipTest(reason)
        root = tempDirectory(self, "smx-splitstop-")
        self.sink = SmtpSink(self, root)
        self.sink.start()
        self.system = SlowDotSystem(self, root, self.sink)
        self.system.startAll()

    def test_commitFinishes(self) -> None:
        """
        The client gets the 250 of its message from the stopping SMTPS
        process (its commit with QMGR finished), then 421 4.3.2; new
        connections are refused at once; the process exits with status
        0 and QMGR delivers the message once.
        """
        c = sendUntilDot(
            self,
            self.system.port,
            "a@client.test",
            "b@sink.test",
            b"Subject: split stop\r\n\r\nSPLIT-STOP-MARKER\r\n",
        )
        time.sleep(0.3)
        smtps = self.system.processes.pop("smtps")
        smtps.send_signal(signal.SIGTERM)
        deadline = time.time() + 1.5
        refused = False
        while time.time() < deadline and not refused:
            refused = not canConnect(self.system.port)
            time.sleep(0.05)
        code, text = c.getreply()
        self.assertEqual(code, 250, (text, self.system.log("smtps")))
        self.assertTrue(refused, "a new connection was accepted after SIGTERM")
        code, text = c.getreply()
        self.assertEqual((code, text[:5]), (421, b"4.3.2"))
        self.assertEqual(smtps.wait(15), 0, self.system.log("smtps"))
        marker = b"SPLIT-STOP-MARKER"
        deadline = time.time() + 15
        while time.time() < deadline and not self.sink.containing(marker):
            time.sleep(0.1)
        time.sleep(0.5)
        self.assertEqual(len(self.sink.containing(marker)), 1, self.system.log("qmgr"))
