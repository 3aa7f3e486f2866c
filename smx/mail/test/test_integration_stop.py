# -*- test-case-name: smx.mail.test.test_integration_stop -*-
"""
Integration tests: how smx stops (L{smx.mail.drain}, L{smx.servicestop}).
A real C{twistd -n smx} whose final-dot check is slowed by a pmilter
plugin on C{PYTHONPATH} (it answers the final dot after
C{$STOPTEST_DELAY} seconds) gets SIGTERM while an smtplib client waits
for the reply to its final dot, over loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import tempfile
import time
from typing import Any, List, Tuple

from twisted.internet import defer
from twisted.trial import unittest

from smx.test.mta import (
    MTA,
    canConnect,
    configuration,
    dropInPlugins,
    sendUntilDot,
    until,
)

#: a pmilter that answers the final dot late
SLOWDOT = r'''
import os
from twisted.internet import defer, reactor
from twisted.plugin import IPlugin
from zope.interface import implementer
from smx.interfaces import IPolicyMilter
from smx import pmilter as pm


@implementer(IPlugin, IPolicyMilter)
class SlowDot:
    """CONT to the final dot, $STOPTEST_DELAY seconds late."""

    name = "slowdot"

    def negotiate(self, server):
        return pm.Negotiation(stages={pm.SMST_DOT})

    def eom(self, session):
        d = defer.Deferred()
        reactor.callLater(float(os.environ["STOPTEST_DELAY"]), d.callback, pm.CONT)
        return d


slowdot = SlowDot()
'''


def contentFiles(directory: str) -> List[str]:
    """@return: the files under C{directory} (CDB)."""
    return [name for _, _, names in os.walk(directory) for name in names]


class EmbeddedStopTests(unittest.TestCase):
    """
    SIGTERM to C{twistd -n smx} while a message's final dot waits for
    its reply.
    """

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp(prefix="smxstop")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.pythonPath = dropInPlugins(self.root, stoptest_slowdot=SLOWDOT)
        self.mta = MTA(self, os.path.join(self.root, "smx"))

    def start(self, delay: float, ioTimeout: str = "30s") -> None:
        text = configuration(
            self.mta.port, smtps="pmilter { plugins = { slowdot }; timeout = 30s; }"
        )
        # the smtps section's io_timeout bounds the wait for the commits
        text = text.replace("io_timeout = 30s;", "io_timeout = %s;" % (ioTimeout,), 1)
        self.mta.write(text, aliases="alice: local:\n", access="")
        self.mta.start(
            environ={"PYTHONPATH": self.pythonPath, "STOPTEST_DELAY": str(delay)}
        )

    def sendUntilDot(self, marker: bytes, lines: int = 0) -> smtplib.SMTP:
        """
        A transaction to alice up to and including the final dot (its
        reply not read yet), with C{lines} more lines of 72 octets.
        """
        body = marker + b"\r\n" + b"x" * 70 + b"\r\n"
        return sendUntilDot(
            self,
            self.mta.port,
            "carol@client.test",
            "alice@localhost",
            b"Subject: stop test\r\n\r\n" + body * lines + marker + b"\r\n",
        )

    def stopDuringCheck(self, c: smtplib.SMTP) -> Tuple[Tuple[int, bytes], bool]:
        """
        SIGTERM while the pmilter holds the final dot of C{c}, and again
        (a second one changes nothing).

        @return: the reply to the final dot, and whether a new connection
            was refused before it came.
        """
        time.sleep(0.3)
        assert self.mta.process is not None
        self.mta.process.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        self.mta.process.send_signal(signal.SIGTERM)
        deadline = time.time() + 1.5
        refused = False
        while time.time() < deadline and not refused:
            refused = not canConnect(self.mta.port)
            time.sleep(0.05)
        return c.getreply(), refused

    def exited(self) -> int:
        """@return: the exit status of smx, once it has stopped."""
        process, self.mta.process = self.mta.process, None
        assert process is not None
        return process.wait(15)

    def delivered(self, marker: bytes) -> int:
        return sum(marker in m for m in self.mta.maildir("alice"))

    @defer.inlineCallbacks
    def test_commitFinishes(self) -> Any:
        """
        The client gets the 250 of its message even though smx got
        SIGTERM after the final dot, then 421 4.3.2; new connections are
        refused at once; smx exits with status 0; the message is
        delivered exactly once (after the restart at the latest).
        """
        self.start(delay=2.0)
        c = self.sendUntilDot(b"MARKER-ONE")
        (code, text), refused = self.stopDuringCheck(c)
        self.assertEqual(code, 250, (text, self.mta.log()))
        self.assertTrue(refused, "a new connection was accepted after SIGTERM")
        code, text = c.getreply()
        self.assertEqual((code, text[:5]), (421, b"4.3.2"))
        self.assertEqual(self.exited(), 0)
        log = self.mta.log()
        self.assertIn("stat=waiting for commits, n=1", log)
        self.assertIn("where=shutdown, stat=421", log)
        self.mta.start(environ={"PYTHONPATH": self.pythonPath, "STOPTEST_DELAY": "0"})
        ok = yield until(lambda: self.delivered(b"MARKER-ONE"), 10)
        self.assertTrue(ok, self.mta.log())
        # recovery and the retry (1s) had their chance to deliver it again
        yield until(lambda: self.delivered(b"MARKER-ONE") > 1, 1.0)
        self.assertEqual(self.delivered(b"MARKER-ONE"), 1)

    @defer.inlineCallbacks
    def test_tooSlow(self) -> Any:
        """
        A final dot whose check does not end within io_timeout (below the
        5 s bound) after SIGTERM gets 421 4.3.2, and the message is not
        queued: after the restart nothing is delivered (the client sends
        it again); its content, already partly written to CDB (300 kB),
        is removed.
        """
        self.start(delay=3, ioTimeout="1s")
        c = self.sendUntilDot(b"MARKER-TWO", lines=4000)
        (code, text), refused = self.stopDuringCheck(c)
        self.assertEqual((code, text[:5]), (421, b"4.3.2"), self.mta.log())
        self.assertTrue(refused)
        self.assertEqual(self.exited(), 0)
        self.assertIn("commit=unfinished", self.mta.log())
        self.assertEqual(contentFiles(self.mta.path("cdb")), [])
        self.mta.start(environ={"PYTHONPATH": self.pythonPath, "STOPTEST_DELAY": "0"})
        yield until(lambda: self.delivered(b"MARKER-TWO"), 1.0)
        self.assertEqual(self.delivered(b"MARKER-TWO"), 0)
        self.assertEqual(os.listdir(self.mta.path("mail")), [])
