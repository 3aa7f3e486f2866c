# -*- test-case-name: smx.pmilter.test.test_integration_pmilterserver -*-
"""
Integration tests: a real C{smx pmilter-server} process on a real Unix
socket, used by L{RemotePolicyMilterHost} in this process with the real
reactor, as SMTPS uses it; C{smx greylist} as a process beside it; the
signals a user sends.
"""

import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from twisted.internet import defer, reactor
from twisted.trial import unittest

from smx.log import Logger, MemorySink
from smx.pmilter.host import PolicyMilterHost
from smx.pmilter.plugins import lookupPolicyMilter
from smx.pmilter.remote import RemotePolicyMilterHost
from smx.pmilter.server import (
    PolicyMilterServerFactory,
    SocketInUse,
    listenPolicyMilter,
)
from smx.pmilter.test.test_plugins import addDropin
from smx.pmilter.testing import FakeSMTPSession
from smx.scripts import pmilterserver
from smx.test.mta import SMX, runCommand, until

#: a pmilter of someone else, in their own smx/plugins/ directory: it
#: counts rejected recipients per session (App. B.7) and uses every kind
#: of context, macro and answer
COUNTER = """
from twisted.internet import defer
from twisted.plugin import IPlugin
from zope.interface import implementer
from smx.interfaces import IPolicyMilter
from smx import pmilter as pm

@implementer(IPlugin, IPolicyMilter)
class Counter:
    name = "counter"

    def negotiate(self, server):
        server.context = {"limit": 2}
        return pm.Negotiation(
            stages={pm.SMST_CONNECT, pm.SMST_MAIL, pm.SMST_RCPT, pm.SMST_DOT},
            macros={pm.SMST_CONNECT: [pm.PMM_SEID, pm.PMM_SRVHOSTNAME],
                    pm.SMST_MAIL: [pm.PMM_MAIL_TAID],
                    pm.SMST_DOT: [pm.PMM_DOT_MSGID]},
            capabilities={pm.CAP_RCPT_ST})

    def connect(self, session, hostname, address):
        session.context = {"bad": 0, "host": address.host}
        if session.getmac(pm.PMM_SRVHOSTNAME) != "mx.example.net":
            return pm.PERM
        return pm.CONT

    def mail(self, session, address, args):
        if "SIZE=999999999" in args:
            session.setreply("552 5.3.4 %s too big" % (session.getmac(pm.PMM_MAIL_TAID),))
            return 552
        return defer.succeed(pm.CONT)

    def rcpt(self, session, address, args):
        if session.getstatus() >= 400:
            session.context["bad"] += 1
            return pm.CONT
        if session.context["bad"] >= session.server.context["limit"]:
            session.setreply("421 4.7.0 %s: too many unknown recipients"
                             % (session.getmac(pm.PMM_SEID),))
            return pm.SSD
        return pm.CONT

    def eom(self, session):
        if session.getmac(pm.PMM_DOT_MSGID) == "<bad@example>":
            return pm.quick(pm.PERM)
        return pm.OK

counter = Counter()
"""

SESSIONS = [
    [
        ("connect", ()),
        ("helo", ()),
        ("mail", ("a@example.com", ["SIZE=999999999"])),
        ("mail", ("a@example.com", ["SIZE=10"])),
        ("rcpt", "b@example.org"),
        ("data", ()),
        ("content", b"Message-ID: <bad@example>\r\n\r\nx\r\n"),
        ("mail", "a@example.com"),
        ("rcpt", "c@example.org"),
        ("data", ()),
        ("content", b"Message-ID: <good@example>\r\n\r\nx\r\n"),
        ("quit", ()),
    ],
    [
        ("connect", ()),
        ("mail", "a@example.com"),
        ("rcpt", ("x@example.org", (), 550)),
        ("rcpt", ("y@example.org", (), 550)),
        ("rcpt", "b@example.org"),
        ("quit", ()),
    ],
]


class PmilterServerTestMixin:
    """
    Start C{smx pmilter-server} in a directory of its own.
    """

    def setUp(self):
        # a short directory: the socket's name must fit in sun_path
        self.directory = tempfile.mkdtemp(prefix="smxpm")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.socket = os.path.join(self.directory, "pm.sock")
        self.conf = os.path.join(self.directory, "smx.conf")
        self.logFile = os.path.join(self.directory, "pmilter.log")
        self.sink = MemorySink()
        self.log = Logger("smtps", level=20, sink=self.sink)

    def writeConfiguration(self, text):
        with open(self.conf, "w") as f:
            f.write(text)

    def startServer(self, *plugins, env=None, extra=()):
        argv = [SMX, "pmilter-server", "-f", self.conf, "--log-file", self.logFile]
        argv += list(extra) + list(plugins)
        self.stderr = open(os.path.join(self.directory, "stderr"), "w+")
        self.addCleanup(self.stderr.close)
        process = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            env=dict(os.environ, **(env or {})),
        )
        self.addCleanup(self._kill, process)
        return process

    def _kill(self, process):
        if process.poll() is None:
            process.kill()
            process.wait()

    def serverLog(self):
        if not os.path.exists(self.logFile):
            return ""
        with open(self.logFile) as f:
            return f.read()

    @defer.inlineCallbacks
    def waitListening(self, process):
        ok = yield until(
            lambda: "status=listening" in self.serverLog()
            or process.poll() is not None,
            10,
        )
        self.assertTrue(ok and process.poll() is None, self.serverLog())

    def remote(self, timeout=5):
        host = RemotePolicyMilterHost(
            reactor, self.socket, timeout, hostname="mx.example.net", log=self.log
        )
        host.startService()
        self.addCleanup(host.stopService)
        return host

    @defer.inlineCallbacks
    def drive(self, host, steps, sessionId="S1", client="192.0.2.7"):
        driver = FakeSMTPSession(host, sessionId, client)
        yield driver.run(steps)
        return driver


class BothWaysTests(PmilterServerTestMixin, unittest.TestCase):
    """
    A pmilter of someone else, inside "SMTPS" and in smx pmilter-server.
    """

    @defer.inlineCallbacks
    def test_sameBothWays(self):
        """
        The same plugin module decides the same in this process and in a
        pmilter server, for sessions that use its contexts, macros,
        replies, Deferreds, CAP_RCPT_ST, 421 and quick.
        """
        base = addDropin(self, COUNTER, "pmtest_counter")
        self.writeConfiguration("smtps { pmilter { socket = pm.sock; } }\n")
        process = self.startServer("counter", env={"PYTHONPATH": base})
        local = PolicyMilterHost(
            [lookupPolicyMilter("counter")],
            reactor,
            5,
            hostname="mx.example.net",
            log=self.log,
        )
        local.startService()
        here = []
        for i, steps in enumerate(SESSIONS):
            driver = yield self.drive(local, steps, "S%d" % i)
            here.append(driver.transcript)
        yield self.waitListening(process)
        remote = self.remote()
        there = []
        for i, steps in enumerate(SESSIONS):
            driver = yield self.drive(remote, steps, "S%d" % i)
            there.append(driver.transcript)
        self.assertEqual(there, here)
        codes = [[code for _, code, _ in t] for t in here]
        self.assertEqual(
            codes,
            [
                [220, 250, 552, 250, 250, 354, 550, 250, 250, 354, 250],
                [220, 250, 550, 550, 421],
            ],
        )
        self.assertEqual(here[0][2][2].text, "S0-T1 too big")
        self.assertTrue(here[0][6][2].quick)
        self.assertTrue(here[1][4][2].ssd)
        self.assertEqual(here[1][4][2].text, "S1: too many unknown recipients")
        self.assertEqual([l for l in self.sink.lines() if l.startswith("sev=")], [])


class ServerTests(PmilterServerTestMixin, unittest.TestCase):
    """
    The shipped pmilters in a pmilter server, and the server's life.
    """

    @defer.inlineCallbacks
    def test_greylistAndRules(self):
        """
        Greylisting and rules over the socket, with the Berkeley DB file
        that C{smx greylist} lists and changes while the server runs;
        SIGUSR1 reloads the rules; SIGTERM stops the server with status 0
        and removes the socket.
        """
        with open(os.path.join(self.directory, "pm.rules"), "w") as f:
            f.write('reject "550 5.7.1 not from there"\n  helo /^bad\\./\n')
        self.writeConfiguration(
            "smtps { pmilter { socket = pm.sock; timeout = 5s;\n"
            "  greylist { database = gl.db; delay = 1h; }\n"
            "  rules { file = pm.rules; } } }\n"
        )
        process = self.startServer("regex", "greylist", extra=["--debug", "2"])
        yield self.waitListening(process)
        host = self.remote()
        steps = [
            ("connect", ()),
            ("helo", "good.example"),
            ("mail", "a@example.com"),
            ("rcpt", "b@example.org"),
            ("quit", ()),
        ]
        driver = yield self.drive(host, steps)
        self.assertEqual(driver.codes()[3], ("RCPT", 451))
        self.assertIn("Greylisted", driver.transcript[3][2].text)
        self.assertEqual(driver.transcript[3][2].pmilter, "greylist")

        out, err, code = yield runCommand([SMX, "greylist", "-f", self.conf, "list"])
        self.assertEqual(code, 0, err)
        self.assertIn(b"pending  192.0.2.0/24", out)
        self.assertIn(b"<a@example.com> <b@example.org>", out)
        out, err, code = yield runCommand(
            [SMX, "greylist", "-f", self.conf, "whitelist", "192.0.2.0/24"]
        )
        self.assertEqual(code, 0, err)
        driver = yield self.drive(host, steps, "S2")
        self.assertEqual(driver.codes()[3], ("RCPT", 250))

        steps[1] = ("helo", "bad.example")
        driver = yield self.drive(host, steps, "S3")
        self.assertEqual(driver.codes()[1], ("EHLO", 550))
        with open(os.path.join(self.directory, "pm.rules"), "w") as f:
            f.write('tempfail "Later"\n  helo /^bad\\./\n')
        process.send_signal(signal.SIGUSR1)
        ok = yield until(lambda: "reloaded=1" in self.serverLog(), 5)
        self.assertTrue(ok, self.serverLog())
        driver = yield self.drive(host, steps, "S4")
        self.assertEqual(driver.codes()[1], ("EHLO", 451))
        self.assertEqual(driver.transcript[1][2].text, "Later")

        process.send_signal(signal.SIGTERM)
        ok = yield until(lambda: process.poll() is not None, 5)
        self.assertTrue(ok)
        self.assertEqual(process.returncode, 0)
        self.assertFalse(os.path.exists(self.socket))
        self.assertIn("status=stopped", self.serverLog())

    @defer.inlineCallbacks
    def test_killedAndRestarted(self):
        """
        A server killed in a session: the rest of the session gets 451
        4.3.0, logged once; a new server is used once it is back, which
        is logged too.
        """
        self.writeConfiguration("smtps { pmilter { socket = pm.sock; } }\n")
        base = addDropin(self, COUNTER, "pmtest_counter")
        env = {"PYTHONPATH": base}
        process = self.startServer("counter", env=env)
        yield self.waitListening(process)
        host = self.remote(timeout=1)
        driver = FakeSMTPSession(host, "S1")
        yield driver.run(SESSIONS[1][:2])
        process.kill()
        process.wait()
        yield driver.run(SESSIONS[1][2:])
        self.assertEqual(
            driver.codes()[2:], [("RCPT", 550), ("RCPT", 550), ("RCPT", 451)]
        )
        self.assertEqual(driver.transcript[4][2].enhanced, "4.3.0")
        errors = [l for l in self.sink.lines() if l.startswith("sev=")]
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("pmilter=counter", errors[0])

        os.unlink(self.logFile)
        process = self.startServer("counter", env=env)
        yield self.waitListening(process)
        yield until(lambda: False, 1.0)
        driver = yield self.drive(host, SESSIONS[1], "S2")
        self.assertEqual(driver.codes()[-1], ("RCPT", 421))
        self.assertIn("status=up", self.sink.lines()[-1])

    @defer.inlineCallbacks
    def test_mistakes(self):
        """
        A plugin that is not installed, a rules file with a mistake, a
        missing socket, a socket taken by a running server: one line on
        standard error and the exit status, no traceback.
        """
        with open(os.path.join(self.directory, "bad.rules"), "w") as f:
            f.write("reject\n  hello /x/\n")
        self.writeConfiguration(
            "smtps { pmilter { socket = pm.sock; rules { file = bad.rules; } } }\n"
        )
        out, err, code = yield runCommand(
            [
                SMX,
                "pmilter-server",
                "-f",
                self.conf,
                "--log-file",
                self.logFile,
                "rules",
            ]
        )
        self.assertEqual(code, 2)
        self.assertIn(b"rules: ", err)
        self.assertIn(b"bad.rules:2:3: expected a term", err)
        self.assertNotIn(b"Traceback", err)
        self.assertFalse(os.path.exists(self.socket))

        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        self.assertEqual(pmilterserver.run(["-f", self.conf, "nosuch"]), 2)
        self.assertIn("no pmilter plugin called 'nosuch'", stderr.getvalue())
        self.assertEqual(pmilterserver.run(["-f", self.conf]), 2)
        self.assertIn("no PLUGIN given", stderr.getvalue())
        self.writeConfiguration("smtps { }\n")
        self.assertEqual(pmilterserver.run(["-f", self.conf, "greylist"]), 2)
        self.assertIn("no socket", stderr.getvalue())
        self.assertEqual(pmilterserver.run(["--timeout", "soon", "greylist"]), 2)

        process = self.startServer("greylist", extra=["--socket", self.socket])
        yield self.waitListening(process)
        factory = PolicyMilterServerFactory([], reactor, 1, self.log)
        e = self.assertRaises(
            SocketInUse, listenPolicyMilter, reactor, self.socket, factory
        )
        self.assertIn("another server listens on it", str(e))
        self.assertIsNone(process.poll())
        with open(os.path.join(self.directory, "file"), "w") as f:
            f.write("not a socket")
        e = self.assertRaises(
            SocketInUse,
            listenPolicyMilter,
            reactor,
            os.path.join(self.directory, "file"),
            factory,
        )
        self.assertIn("is not a socket", str(e))
