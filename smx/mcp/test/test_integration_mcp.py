# -*- test-case-name: smx.mcp.test.test_integration_mcp -*-
"""
Integration tests of the MCP with real child processes (the small
program L{smx.mcp.test.child}), real signals, a real passed socket on a
loopback port, and, as root, real users (throwaway ones, deleted
afterwards) checked with C{ps -o user=}.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from typing import Any, Dict, List

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SkipTest, TestCase

from smx import log as smxlog
from smx.config import configurationFromText
from smx.mcp.settings import servicesFromConfiguration
from smx.mcp.supervisor import ProcessSupervisor

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")
#: an interpreter every user can run (the virtualenv's may be under /root)
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def freePort() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class _Base(TestCase):
    """
    An MCP with services running L{CHILD}, in a temporary directory every
    user can enter.
    """

    timeout = 20

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="smx-mcp-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        os.chmod(self.directory, 0o755)
        # a copy of the child every user can read, run by /usr/bin/python3
        self.child = os.path.join(self.directory, "child.py")
        with open(CHILD) as f:
            source = f.read().split("\n", 1)[1]
        with open(self.child, "w") as f:
            f.write("#!%s\n%s" % (PYTHON, source))
        os.chmod(self.child, 0o755)
        self.record = os.path.join(self.directory, "record")
        with open(self.record, "w"):
            pass
        os.chmod(self.record, 0o666)
        self.sink = smxlog.MemorySink()

    def section(self, name: str, mode: str, extra: str = "") -> str:
        """
        A service NAME that runs L{CHILD} in MODE; C{extra} replaces
        C{mcp_type = wait;}.
        """
        return '%s { %s path = %s; arguments = "child.py %s %s %s"; }\n' % (
            name,
            extra or "mcp_type = wait;",
            self.child,
            self.record,
            name,
            mode,
        )

    def supervisor(self, text: str, **kw: Any) -> ProcessSupervisor:
        configuration = configurationFromText(text, queueDirectory=self.directory)
        services = servicesFromConfiguration(configuration)
        settings: Dict[str, Any] = dict(
            queueDirectory=self.directory,
            log=smxlog.Logger("mcp", sink=self.sink),
            minRestartDelay=0.2,
            maxRestartDelay=1.0,
            threshold=5.0,
            killTimeout=3.0,
        )
        settings.update(kw)
        supervisor = ProcessSupervisor(services, reactor, **settings)
        supervisor.startService()
        self.addCleanup(self.stop, supervisor)
        return supervisor

    def stop(self, supervisor: ProcessSupervisor) -> Any:
        if supervisor.running:
            return supervisor.stopService()
        return None

    def lines(self, kind: str = "") -> List[List[str]]:
        with open(self.record) as f:
            found = [line.split() for line in f]
        return [words for words in found if not kind or words[0] == kind]

    @defer.inlineCallbacks
    def until(self, condition: Any, timeout: float = 10.0) -> Any:
        """
        Wait until C{condition()} is true (polling every 50 ms).
        """
        waited = 0.0
        while not condition():
            if waited > timeout:
                self.fail(
                    "timed out; record: %r; log: %r" % (self.lines(), self.sink.lines())
                )
            yield task.deferLater(reactor, 0.05, lambda: None)
            waited += 0.05

    def pids(self, supervisor: ProcessSupervisor, name: str) -> List[Any]:
        return [p.pid for p in supervisor.slots[name] if p.pid is not None]


class RestartTests(_Base):
    """
    Restarts of real processes.
    """

    @defer.inlineCallbacks
    def test_restartWithDependencies(self) -> Any:
        """
        Each process runs in a session of its own.  A process killed with
        SIGKILL is started again, and its restart
        dependency is stopped (SIGTERM) and started again too; a service
        that is not a dependency keeps running.
        """
        supervisor = self.supervisor(
            self.section(
                "qmgr", "sleep", "mcp_type = wait; restartdependencies = smtpc;"
            )
            + self.section("smtpc", "sleep")
            + self.section("smar", "sleep")
        )
        yield self.until(lambda: len(self.lines("start")) == 3)
        [qmgr], [smtpc], [smar] = (
            self.pids(supervisor, n) for n in ("qmgr", "smtpc", "smar")
        )
        # each in a session of its own (setsid): a signal to the MCP's
        # process group does not reach it
        self.assertEqual(os.getsid(qmgr), qmgr)
        os.kill(qmgr, signal.SIGKILL)
        yield self.until(lambda: len(self.lines("start")) == 5)
        self.assertEqual(self.lines("term"), [["term", "smtpc", str(smtpc)]])
        self.assertEqual(
            sorted(words[1] for words in self.lines("start")[3:]), ["qmgr", "smtpc"]
        )
        self.assertEqual(self.pids(supervisor, "smar"), [smar])
        found = yield supervisor.processes()
        self.assertEqual(
            {p["name"]: p["restarts"] for p in found},
            {"qmgr": 1, "smtpc": 1, "smar": 0},
        )
        self.assertTrue(
            any(
                "sev=ERR, func=processEnded, service=qmgr" in l
                and "status=signal 9 (SIGKILL)" in l
                for l in self.sink.lines()
            )
        )

    @defer.inlineCallbacks
    def test_backoff(self) -> Any:
        """
        A program that dies at once is restarted with growing delays
        (0.2, 0.4, 0.8, 1 s), not in a tight loop.
        """
        self.supervisor(self.section("smar", "crash"))
        yield task.deferLater(reactor, 2.0, lambda: None)
        starts = len(self.lines("start"))
        self.assertGreaterEqual(starts, 3)
        self.assertLessEqual(starts, 5)
        delays = [l for l in self.sink.lines() if "restart_in=" in l]
        self.assertIn("restart_in=0.2s", delays[0])
        self.assertIn("restart_in=0.4s", delays[1])

    @defer.inlineCallbacks
    def test_noRestart(self) -> Any:
        """
        A program that exits with EX_USAGE or EX_CONFIG is not restarted.
        """
        supervisor = self.supervisor(
            self.section("smtpc", "usage") + self.section("smar", "config")
        )
        yield self.until(
            lambda: {p.state for ps in supervisor.slots.values() for p in ps}
            == {"failed"}
        )
        yield task.deferLater(reactor, 0.6, lambda: None)
        self.assertEqual(len(self.lines("start")), 2)
        lines = [l for l in self.sink.lines() if "restart=no" in l]
        self.assertEqual(len(lines), 2)

    @defer.inlineCallbacks
    def test_stopOrderAndSignals(self) -> Any:
        """
        SIGUSR1 and SIGUSR2 are passed on to every process; stopping the
        MCP stops smtps first, then smtpc, qmgr and smar last.
        """
        supervisor = self.supervisor(
            self.section("smar", "sleep")
            + self.section("smtps", "sleep")
            + self.section("qmgr", "sleep")
            + self.section("smtpc", "sleep")
        )
        yield self.until(lambda: len(self.lines("start")) == 4)
        supervisor.signalAll(signal.SIGUSR1)
        supervisor.signalAll(signal.SIGUSR2)
        yield self.until(
            lambda: len(self.lines("usr1")) == 4 and len(self.lines("usr2")) == 4
        )
        yield supervisor.stopService()
        self.assertEqual(
            [words[1] for words in self.lines("term")],
            ["smtps", "smtpc", "qmgr", "smar"],
        )

    @defer.inlineCallbacks
    def test_logDirectory(self) -> Any:
        """
        With a log directory, a process's output goes to C{NAME.log}
        (C{NAME<id>.log} with C{use_id_in_logfile_name}), and SIGUSR2
        rewinds a log file that was copied away (seed §6.8.1); C{pass_id}
        is the first argument.
        """
        logs = os.path.join(self.directory, "log")
        os.mkdir(logs)
        supervisor = self.supervisor(
            self.section(
                "smtpc",
                "sleep",
                'mcp_type = wait; pass_id = "-i"; use_id_in_logfile_name = yes;'
                " min_processes = 2; max_processes = 2;",
            ),
            logDirectory=logs,
        )
        yield self.until(lambda: len(self.lines("start")) == 2)
        yield self.until(lambda: len(os.listdir(logs)) == 2)
        self.assertEqual(sorted(os.listdir(logs)), ["smtpc0.log", "smtpc1.log"])
        yield self.until(lambda: os.path.getsize(os.path.join(logs, "smtpc1.log")) > 0)
        with open(os.path.join(logs, "smtpc1.log")) as f:
            self.assertIn("smtpc running as", f.read())
        # seed §6.8.1: copy the log, SIGUSR2: the file is rewound
        log = os.path.join(logs, "smtpc1.log")
        shutil.copy(log, log + ".0")
        supervisor.signalAll(signal.SIGUSR2)
        yield self.until(lambda: len(self.lines("usr2")) == 2)
        yield self.until(lambda: os.path.getsize(log) > 0)
        with open(log) as f:
            self.assertEqual(f.read(), "smtpc got SIGUSR2\n")
        with open(log + ".0") as f:
            self.assertIn("smtpc running as", f.read())
        # pass_id and the number come first, after the program's name
        self.assertEqual(sorted(words[4] for words in self.lines("start")), ["0", "1"])


class PassedSocketTests(_Base):
    """
    C{mcp_type = pass}: one port, several processes.
    """

    @defer.inlineCallbacks
    def test_twoProcessesOnePort(self) -> Any:
        """
        The MCP binds the port and passes it over C{pass_fd_socket} (mode
        0600) to two processes, which both serve connections on it: two
        connections open at once are answered by two different pids.
        """
        port = freePort()
        passing = os.path.join(self.directory, "smtpsfd")
        os.environ["SMX_TEST_PASS"] = passing
        self.addCleanup(os.environ.pop, "SMX_TEST_PASS", None)
        supervisor = self.supervisor(
            self.section(
                "smtps",
                "serve",
                "mcp_type = pass; port = %d; address = 127.0.0.1; "
                "pass_fd_socket = smtpsfd; min_processes = 2; max_processes = 2;"
                % (port,),
            )
        )
        self.assertEqual(stat.S_IMODE(os.stat(passing).st_mode), 0o600)
        yield self.until(lambda: supervisor.passing["smtps"].passed == 2)
        banners = yield _threads(lambda: twoBanners(port))
        pids = {int(b.split()[1]) for b in banners}
        self.assertEqual(pids, set(self.pids(supervisor, "smtps")))


class AcceptTests(_Base):
    """
    C{mcp_type = accept} and C{nostartaccept}.
    """

    @defer.inlineCallbacks
    def test_accept(self) -> Any:
        """
        C{accept}: the MCP binds the socket (here C{socket { name umask
        }}) and the process accepts on descriptor 0.
        """
        path = os.path.join(self.directory, "lmtp.sock")
        supervisor = self.supervisor(
            self.section(
                "procmail",
                "accept",
                "mcp_type = accept; socket { name = lmtp.sock; umask = 077; }",
            )
        )
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o700)
        [pid] = self.pids(supervisor, "procmail")

        def banner() -> bytes:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(path)
            try:
                return s.recv(100)
            finally:
                s.close()

        got = yield _threads(banner)
        self.assertEqual(got, b"220 %d\r\n" % (pid,))

    @defer.inlineCallbacks
    def test_noStartAccept(self) -> Any:
        """
        C{nostartaccept}: nothing runs until a connection comes; then one
        process per connection, with the connection on descriptors 0 and
        1, at most C{max_processes} at a time (a third connection waits
        until one ends); the processes are not restarted.
        """
        port = freePort()
        supervisor = self.supervisor(
            self.section(
                "finger",
                "inetd",
                "mcp_type = nostartaccept; port = %d; address = 127.0.0.1; "
                "max_processes = 2;" % (port,),
            )
        )
        self.assertEqual(supervisor.slots["finger"], [])
        clients = []
        for i in range(2):
            c = yield _threads(lambda: socket.create_connection(("127.0.0.1", port), 5))
            clients.append(c)
        banners = yield _threads(lambda: [c.recv(100) for c in clients])
        self.assertEqual(len({b.split()[1] for b in banners}), 2)
        third = socket.create_connection(("127.0.0.1", port), 5)
        self.addCleanup(third.close)
        yield task.deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(len(self.lines("start")), 2)
        clients[0].close()
        banner = yield _threads(lambda: third.recv(100))
        self.assertTrue(banner.startswith(b"220 "), banner)
        clients[1].close()
        third.close()
        yield self.until(lambda: supervisor.slots["finger"] == [])
        self.assertEqual(len(self.lines("start")), 3)


class ParentDeathTests(_Base):
    """
    The MCP as a program (C{twistd -n smx --component mcp}), killed.
    """

    @defer.inlineCallbacks
    def test_killedMCP(self) -> Any:
        """
        When the MCP dies by SIGKILL, its processes get SIGTERM (the
        parent-death signal): none is left behind holding a port.
        """
        if not os.path.exists("/usr/bin/setpriv"):
            raise SkipTest("needs setpriv(1) of util-linux")
        config = os.path.join(self.directory, "smx.conf")
        with open(config, "w") as f:
            f.write(self.section("smar", "sleep") + self.section("qmgr", "sleep"))
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        mcp = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "smx", "--config", config]
            + ["--component", "mcp"],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(lambda: mcp.poll() is None and mcp.kill())
        yield self.until(lambda: len(self.lines("start")) == 2)
        mcp.kill()
        mcp.wait()
        yield self.until(lambda: len(self.lines("term")) == 2)
        self.assertEqual(
            sorted(words[1] for words in self.lines("term")), ["qmgr", "smar"]
        )


def twoBanners(port: int) -> List[str]:
    """
    Open two connections to C{port} at once and read their banners.
    """
    first = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        one = first.recv(100).decode()
        second = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            two = second.recv(100).decode()
        finally:
            second.close()
    finally:
        first.close()
    return [one, two]


def _threads(f: Any) -> Any:
    from twisted.internet.threads import deferToThread

    return deferToThread(f)


class UserTests(_Base):
    """
    As root: services under their own users.
    """

    def setUp(self) -> None:
        _Base.setUp(self)
        from smx.scripts.test.throwaway import addUser, needRoot, prefix

        needRoot()
        self.user = prefix() + "u"
        self.uid = addUser(self, self.user)

    @defer.inlineCallbacks
    def test_user(self) -> Any:
        """
        A service with C{user} runs as that user (its uid, and C{ps -o
        user=}); the C{pass_fd_socket} belongs to it, mode 0600.
        """
        port = freePort()
        passing = os.path.join(self.directory, "smtpsfd")
        os.environ["SMX_TEST_PASS"] = passing
        self.addCleanup(os.environ.pop, "SMX_TEST_PASS", None)
        supervisor = self.supervisor(
            self.section("qmgr", "sleep", "mcp_type = wait; user = %s;" % (self.user,))
            + self.section(
                "smtps",
                "serve",
                "mcp_type = pass; port = %d; address = 127.0.0.1; "
                "pass_fd_socket = smtpsfd; min_processes = 2; max_processes = 2; "
                "user = %s;" % (port, self.user),
            )
        )
        st = os.stat(passing)
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (self.uid, 0o600))
        yield self.until(lambda: len(self.lines("start")) == 3)
        self.assertEqual({words[3] for words in self.lines("start")}, {str(self.uid)})
        for name in ("qmgr", "smtps"):
            for pid in self.pids(supervisor, name):
                user = subprocess.run(
                    ["ps", "-o", "user=", "-p", str(pid)],
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                self.assertEqual(user, self.user)
        banners = yield _threads(lambda: twoBanners(port))
        self.assertEqual(
            {int(b.split()[1]) for b in banners}, set(self.pids(supervisor, "smtps"))
        )
        found = yield supervisor.processes()
        self.assertEqual({p["user"] for p in found}, {self.user})
