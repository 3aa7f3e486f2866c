# -*- test-case-name: smx.mcp.test.test_control -*-
"""
Tests of the MCP's control socket (L{smx.mcp.control}) and of C{smx
mcpctl} (L{smx.scripts.mcpctl}), over a real Unix socket.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
from typing import Any

from twisted.internet import defer, reactor, utils
from twisted.trial.unittest import SynchronousTestCase, TestCase

from smx.mcp.control import ControlService
from smx.mcp.testing import FakeProcessSupervisor
from smx.scripts.mcpctl import formatStatus


class AnswerTests(SynchronousTestCase):
    """
    L{ControlService.answer}: one command line, one reply.
    """

    def setUp(self) -> None:
        self.supervisor = FakeProcessSupervisor(["qmgr", "smtps"], {"qmgr": ["smtps"]})
        self.control = ControlService(self.supervisor, "/nonexistent")

    def answer(self, line: str) -> Any:
        return self.successResultOf(defer.maybeDeferred(self.control.answer, line))

    def test_status(self) -> None:
        """
        C{status} (and an empty line) lists the processes.
        """
        for line in ("status", ""):
            reply = self.answer(line)
            self.assertEqual([p["name"] for p in reply["processes"]], ["qmgr", "smtps"])

    def test_restartAndStop(self) -> None:
        """
        C{restart NAME} restarts a service with its dependencies; C{stop
        NAME} stops it; an unknown name is an error.
        """
        self.assertEqual(self.answer("restart qmgr"), {"ok": "restarted qmgr"})
        self.assertEqual(self.supervisor.services["smtps"]["restarts"], 1)
        self.assertEqual(self.answer("stop smtps"), {"ok": "stopped smtps"})
        self.assertEqual(self.supervisor.services["smtps"]["state"], "stopped")
        self.assertEqual(self.answer("stop nothing"), {"error": "no service 'nothing'"})

    def test_badCommand(self) -> None:
        """
        Anything else is an error that lists the commands.
        """
        self.assertEqual(
            self.answer("flush now"),
            {"error": "unknown command 'flush now' (status, restart NAME, stop NAME)"},
        )

    def test_format(self) -> None:
        """
        C{smx mcpctl} prints one line per process with its user, pid,
        state and restarts.
        """
        text = formatStatus(
            [
                {
                    "name": "qmgr",
                    "id": 0,
                    "user": "smxq",
                    "pid": 123,
                    "state": "running",
                    "restarts": 2,
                    "last_status": "signal 9 (SIGKILL)",
                },
                {
                    "name": "smtpc",
                    "id": 0,
                    "user": "smxc",
                    "pid": None,
                    "state": "failed",
                    "restarts": 0,
                    "last_status": "exit 78 (EX_CONFIG)",
                },
            ]
        )
        self.assertEqual(
            text.splitlines(),
            [
                "SERVICE  ID  USER  PID  STATE    RESTARTS  LAST",
                "qmgr     0   smxq  123  running  2         signal 9 (SIGKILL)",
                "smtpc    0   smxc  -    failed   0         exit 78 (EX_CONFIG)",
            ],
        )


class SocketTests(TestCase):
    """
    The control socket and C{smx mcpctl}, for real (integration).
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="smx-mcpctl-")
        self.path = os.path.join(self.directory, "mcp.ctl")
        self.supervisor = FakeProcessSupervisor(["qmgr", "smtps"], {"qmgr": ["smtps"]})
        self.control = ControlService(self.supervisor, self.path, reactor)
        self.control.startService()
        self.addCleanup(os.rmdir, self.directory)
        self.addCleanup(self.control.stopService)

    def mcpctl(self, *args: str) -> Any:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.dirname(
            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        )
        return utils.getProcessOutputAndValue(
            sys.executable,
            ["-m", "smx.scripts.main", "mcpctl", "-S", self.path] + list(args),
            env=env,
        )

    @defer.inlineCallbacks
    def test_mcpctl(self) -> Any:
        """
        The socket is mode 0600; C{smx mcpctl} shows the table, restarts
        a service, gives JSON with C{--json}, and exits 1 with one line
        for an unknown service.
        """
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        out, err, status = yield self.mcpctl()
        self.assertEqual((status, err), (0, b""))
        self.assertTrue(out.startswith(b"SERVICE  ID  USER"), out)
        self.assertIn(b"\nsmtps", out)
        out, err, status = yield self.mcpctl("restart", "qmgr")
        self.assertEqual((out, status), (b"restarted qmgr\n", 0))
        out, err, status = yield self.mcpctl("--json", "status")
        reply = json.loads(out)
        self.assertEqual(
            {p["name"]: p["restarts"] for p in reply["processes"]},
            {"qmgr": 1, "smtps": 1},
        )
        out, err, status = yield self.mcpctl("stop", "nothing")
        self.assertEqual((err, status), (b"smx mcpctl: no service 'nothing'\n", 1))

    @defer.inlineCallbacks
    def test_noMCP(self) -> Any:
        """
        Without an MCP, C{smx mcpctl} says so in one line.
        """
        yield self.control.stopService()
        out, err, status = yield self.mcpctl()
        self.assertEqual(status, 1)
        self.assertEqual(
            err,
            b"smx mcpctl: cannot reach the MCP at %s: No such file or directory\n"
            % (self.path.encode(),),
        )
