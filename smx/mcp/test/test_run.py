# -*- test-case-name: smx.mcp.test.test_run -*-
"""
Tests of L{smx.mcp.run}: which program C{twistd smx} runs, and the MCP
refusing bad input as a user runs it (C{twistd -n smx --config F} as
root, a real process).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Any, List

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from smx.config import configurationFromText
from smx.mcp import run
from smx.mcp.settings import EX_CONFIG, EX_USAGE

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


class _Options(dict):
    """
    Parsed L{smx.tap.Options}, as far as L{run.splitService} reads them.
    """

    def __init__(self, configuration: Any, **kw: Any) -> None:
        dict.__init__(self, kw)
        self.configuration = configuration


SPLIT = 'smar { mcp_type = wait; path = /bin/sleep; arguments = "sleep 60"; }'


class SplitServiceTests(SynchronousTestCase):
    """
    L{run.splitService} decides between embedded smx, the MCP and a
    component.
    """

    def configuration(self, text: str) -> Any:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        return configurationFromText(text, queueDirectory=directory)

    def test_embedded(self) -> None:
        """
        A configuration without C{path} runs embedded (C{None}), as root
        or not; so does a split configuration when smx is not root, with
        one line that says so.
        """
        self.assertIsNone(run.splitService(_Options(self.configuration(""))))
        self.patch(os, "geteuid", lambda: 1000)
        lines: List[str] = []
        self.patch(
            sys, "stderr", type("W", (), {"write": lambda s, t: lines.append(t)})()
        )
        self.assertIsNone(run.splitService(_Options(self.configuration(SPLIT))))
        self.assertEqual(
            lines,
            [
                "smx: the configuration is for split mode, but the MCP runs only "
                "as root: running embedded, in one process (doc/split.md)\n"
            ],
        )

    def test_mcpAsRoot(self) -> None:
        """
        As root, a split configuration runs the MCP, its sockets bound.
        """
        self.patch(os, "geteuid", lambda: 0)
        c = self.configuration(SPLIT)
        root = run.splitService(_Options(c))
        self.assertEqual(
            [s.name for s in root.supervisor.services], ["smar"]  # type: ignore
        )
        self.assertEqual([s.name for s in root], ["mcp", "mcp control"])  # type: ignore

    def test_badComponent(self) -> None:
        """
        An unknown C{--component} is EX_USAGE.
        """
        e = self.assertRaises(
            SystemExit,
            run.splitService,
            _Options(self.configuration(""), component="smtpd"),
        )
        self.assertEqual(e.code, EX_USAGE)

    def test_component(self) -> None:
        """
        C{--component NAME} builds that component with
        C{makeComponentService}, its number from C{--id}, else from the
        MCP's C{SMX_PROCESS_NUMBER}.
        """
        from twisted.application import service

        import smx.split.service

        calls: List[Any] = []

        def make(configuration: Any, component: str, **kw: Any) -> Any:
            calls.append((component, kw))
            return service.MultiService()

        self.patch(smx.split.service, "makeComponentService", make)
        self.patch(os, "geteuid", lambda: 1000)
        c = self.configuration("")
        run.splitService(_Options(c, component="qmgr", id="3"))
        self.patch(os, "environ", {"SMX_PROCESS_NUMBER": "5"})
        run.splitService(_Options(c, component="smtpc"))
        self.assertEqual(
            calls,
            [
                ("qmgr", {"instanceId": 3, "listeningFd": None}),
                ("smtpc", {"instanceId": 5, "listeningFd": None}),
            ],
        )

    def test_namedSMTPS(self) -> None:
        """
        An SMTPS started by the MCP for a named smtps section (its name in
        C{SMX_SERVICE}) without C{-N} runs that section and fetches that
        section's listening socket.
        """
        import smx.mcp.sockets

        c = self.configuration(
            'smtps MTA { port = 2525; type = pass; pass_fd_socket = mta; path = /bin/true; arguments = "s"; }\n'
            'smtps MSA { port = 2587; type = pass; pass_fd_socket = msa; path = /bin/true; arguments = "s"; }\n'
        )
        asked: List[str] = []
        self.patch(
            smx.mcp.sockets,
            "receiveListeningSocket",
            lambda path: asked.append(path) or 7,
        )
        self.patch(os, "environ", {"SMX_SERVICE": "MSA"})
        self.assertEqual(run._passedSocket(c), 7)
        self.assertEqual(asked, [os.path.join(c.queueDirectory, "msa")])
        self.assertEqual(c.smtpsNames, ["MSA"])

    def test_refuseRoot(self) -> None:
        """
        A component as root is EX_USAGE, with one line.
        """
        self.patch(os, "geteuid", lambda: 0)
        lines: List[str] = []
        self.patch(
            sys, "stderr", type("W", (), {"write": lambda s, t: lines.append(t)})()
        )
        e = self.assertRaises(SystemExit, run.refuseRoot, "smx-qmgr")
        self.assertEqual(e.code, EX_USAGE)
        self.assertEqual(
            lines,
            [
                "smx-qmgr: refusing to run as root (seed §6.6.1); the MCP starts "
                "it as its user, or use: smx runas USER smx-qmgr ...\n"
            ],
        )


class BadInputTests(SynchronousTestCase):
    """
    C{twistd -n smx --config F} started as root with a bad service: one
    line naming the section and option, exit status EX_CONFIG (78),
    nothing started (integration: a real twistd).
    """

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("the MCP runs only as root")
        self.directory = tempfile.mkdtemp(prefix="smx-mcp-bad-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.started = os.path.join(self.directory, "started")

    def twistd(self, text: str) -> Any:
        path = os.path.join(self.directory, "smx.conf")
        with open(path, "w") as f:
            f.write(text)
        return subprocess.run(
            [TWISTD, "-n", "--pidfile=", "smx", "--config", path],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def good(self) -> str:
        """
        A service that would leave a trace if it started.
        """
        return (
            'smar { mcp_type = wait; path = /bin/touch; arguments = "touch %s"; }\n'
            % (self.started,)
        )

    def assertRefused(self, text: str, message: str) -> None:
        result = self.twistd(self.good() + text)
        self.assertEqual(result.returncode, EX_CONFIG, result.stderr)
        self.assertIn(message, result.stderr)
        self.assertFalse(os.path.exists(self.started))

    def test_missingProgram(self) -> None:
        """
        A C{path} that does not exist.
        """
        self.assertRefused(
            "qmgr { mcp_type = wait; path = /nonexistent/qmgr; arguments = q; }",
            "/smx.conf:2:25: option 'path' in section 'qmgr': cannot run "
            "/nonexistent/qmgr: No such file or directory",
        )

    def test_unknownUser(self) -> None:
        """
        A C{user} that does not exist.
        """
        self.assertRefused(
            "qmgr { mcp_type = wait; user = smxnosuchuser; path = /bin/true; "
            "arguments = q; }",
            "option 'user' in section 'qmgr': no user 'smxnosuchuser'",
        )

    def test_portInUse(self) -> None:
        """
        A port that is in use.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        self.assertRefused(
            "smtps { port = %d; address = 127.0.0.1; mcp_type = pass; "
            "pass_fd_socket = fd; path = /bin/true; arguments = s; }" % (port,),
            "/smx.conf:2:1): cannot listen on "
            "127.0.0.1:%d: Address already in use" % (port,),
        )

    def test_secondMCP(self) -> None:
        """
        A second MCP on the queue directory of a running one (its control
        socket answers) is refused before it replaces any socket.
        """
        running = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(running.close)
        running.bind(os.path.join(self.directory, "mcp.ctl"))
        running.listen(1)
        self.assertRefused(
            "",
            "smx mcp: another MCP runs on this queue directory: its control "
            "socket %s/mcp.ctl (MCP_control_socket) answers; stop it first"
            % (self.directory,),
        )

    def test_staleControlSocket(self) -> None:
        """
        The control socket of an MCP that was killed (nobody answers) is
        no obstacle.
        """
        from smx.mcp.run import refuseSecondMCP

        path = os.path.join(self.directory, "mcp.ctl")
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()
        refuseSecondMCP(path)
        refuseSecondMCP(os.path.join(self.directory, "none.ctl"))

    def test_passWithoutSocket(self) -> None:
        """
        C{mcp_type = pass} without C{pass_fd_socket} (found when the file
        is read: exit status 1, as any configuration error).
        """
        result = self.twistd(
            self.good() + "smtps { port = 2525; mcp_type = pass; path = /bin/true; "
            "arguments = s; }"
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(
            "mcp_type = pass requires 'pass_fd_socket'", result.stdout + result.stderr
        )
        self.assertFalse(os.path.exists(self.started))

    def test_socketDirectoryOwner(self) -> None:
        """
        A C{pass_fd_socket} in a directory that belongs to another user.
        """
        os.mkdir(os.path.join(self.directory, "smtps"))
        os.chown(os.path.join(self.directory, "smtps"), 65534, -1)
        self.assertRefused(
            "smtps { port = 2525; mcp_type = pass; pass_fd_socket = smtps/fd; "
            "path = /bin/true; arguments = s; }",
            "option 'pass_fd_socket' in section 'smtps': directory %s/smtps "
            "belongs to nobody, not to root" % (self.directory,),
        )
