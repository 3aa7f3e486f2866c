# -*- test-case-name: smx.mcp.test.test_supervisor -*-
"""
Tests of L{smx.mcp.supervisor}: the restart rules, back-off, stop order
and signals, with a fake process reactor and a L{Clock}.  The same with
real child processes is L{smx.mcp.test.test_integration_mcp}.
"""

from __future__ import annotations

import signal
from typing import Any, Dict, List, Tuple

from twisted.internet import error
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from smx import log as smxlog
from smx.interfaces import IProcessSupervisor
from smx.mcp.settings import ServiceSettings
from smx.mcp.supervisor import ProcessSupervisor, describeStatus


class FakeTransport:
    """
    A child process that records the signals sent to it.
    """

    def __init__(self, reactor: "ProcessReactor", protocol: Any, pid: int) -> None:
        self.reactor = reactor
        self.protocol = protocol
        self.pid = pid
        self.signals: List[Any] = []
        self.ended = False

    def signalProcess(self, signum: Any) -> None:
        if self.ended:
            raise error.ProcessExitedAlready()
        self.signals.append(signum)
        self.reactor.signalled.append((self.pid, signum))

    def end(self, exitCode: Any = 0, sig: Any = None) -> None:
        """
        The process exits with C{exitCode} or by signal C{sig}.
        """
        self.ended = True
        if sig is None and exitCode == 0:
            reason = Failure(error.ProcessDone(0))
        else:
            reason = Failure(error.ProcessTerminated(exitCode, sig))
        self.protocol.processEnded(reason)


class ProcessReactor(Clock):
    """
    A L{Clock} that starts fake processes.

    @ivar spawned: C{(transport, path, argv, keywords)} per spawn.
    @ivar signalled: C{(pid, signal)} in the order sent.
    """

    def __init__(self) -> None:
        Clock.__init__(self)
        self.spawned: List[Tuple[FakeTransport, str, List[str], Dict[str, Any]]] = []
        self.signalled: List[Tuple[int, Any]] = []
        self._pid = 100

    def spawnProcess(self, protocol: Any, executable: str, args: Any, **kw: Any) -> Any:
        self._pid += 1
        transport = FakeTransport(self, protocol, self._pid)
        self.spawned.append((transport, executable, list(args), kw))
        protocol.makeConnection(transport)
        return transport

    def callFromThread(self, f: Any, *a: Any) -> None:
        f(*a)

    def running(self, name: str, supervisor: ProcessSupervisor) -> List[FakeTransport]:
        return [p.transport for p in supervisor.slots[name] if p.transport is not None]


def service(name: str, rank: int = 2, **kw: Any) -> ServiceSettings:
    """
    A service of type wait running C{/bin/NAME}.
    """
    settings: Dict[str, Any] = dict(
        name=name,
        keyword=name,
        mcpType="wait",
        port=None,
        address="0.0.0.0",
        socketName=None,
        socketUmask=None,
        socketUid=None,
        socketGid=None,
        minProcesses=1,
        maxProcesses=1,
        passFdSocket=None,
        uid=None,
        gid=None,
        user="root",
        restartDependencies=(),
        path="/bin/" + name,
        argv=(name, "-f", "smx.conf"),
        passId=None,
        useIdInLogfileName=False,
        rank=rank,
        where="smx.conf:1:1",
    )
    settings.update(kw)
    return ServiceSettings(**settings)


def layout() -> List[ServiceSettings]:
    """
    The seed's §5.3 layout: smar, qmgr (restarts smtps, smtpc, smar),
    smtpc, two smtps with pass_id.
    """
    return [
        service("smar", 0, restartDependencies=("smtps", "qmgr")),
        service("qmgr", 1, restartDependencies=("smtps", "smtpc", "smar")),
        service("smtpc", 3),
        service("smtps", 4, minProcesses=2, maxProcesses=2, passId="-i"),
    ]


class SupervisorTests(SynchronousTestCase):
    """
    L{ProcessSupervisor} with fake processes.
    """

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.sink = smxlog.MemorySink()
        self.supervisor = ProcessSupervisor(
            layout(),
            self.reactor,
            queueDirectory="/q",
            log=smxlog.Logger("mcp", sink=self.sink),
            minRestartDelay=1.0,
            maxRestartDelay=8.0,
            threshold=30.0,
            killTimeout=5.0,
            newSession=False,
        )
        self.supervisor.startService()

    def running(self, name: str) -> List[FakeTransport]:
        return self.reactor.running(name, self.supervisor)

    def test_interface(self) -> None:
        """
        L{ProcessSupervisor} provides L{IProcessSupervisor}.
        """
        self.assertTrue(verifyObject(IProcessSupervisor, self.supervisor))

    def test_start(self) -> None:
        """
        Every service starts in start order, C{min_processes} processes,
        in the queue directory, with C{pass_id} and the number inserted
        after the program's name.
        """
        spawned = [(path, argv) for t, path, argv, kw in self.reactor.spawned]
        self.assertEqual(
            spawned,
            [
                ("/bin/smar", ["smar", "-f", "smx.conf"]),
                ("/bin/qmgr", ["qmgr", "-f", "smx.conf"]),
                ("/bin/smtpc", ["smtpc", "-f", "smx.conf"]),
                ("/bin/smtps", ["smtps", "-i", "0", "-f", "smx.conf"]),
                ("/bin/smtps", ["smtps", "-i", "1", "-f", "smx.conf"]),
            ],
        )
        self.assertEqual(self.reactor.spawned[0][3]["path"], "/q")
        found = self.successResultOf(self.supervisor.processes())
        self.assertEqual(
            [(p["name"], p["id"], p["state"], p["restarts"]) for p in found],
            [
                ("smar", 0, "running", 0),
                ("qmgr", 0, "running", 0),
                ("smtpc", 0, "running", 0),
                ("smtps", 0, "running", 0),
                ("smtps", 1, "running", 0),
            ],
        )

    def test_restartWithDependencies(self) -> None:
        """
        A crashed process is restarted after the back-off delay together
        with its restart dependencies, which are stopped first with
        SIGTERM (in reverse start order); the log says why, with
        C{sev=ERR}.
        """
        self.reactor.advance(60)
        [qmgr] = self.running("qmgr")
        qmgr.end(sig=9)
        # smtps first (rank 4), then smtpc, then smar
        self.assertEqual(
            [(pid, s) for pid, s in self.reactor.signalled],
            [(t.pid, "TERM") for t in self.running("smtps")],
        )
        for t in self.running("smtps"):
            t.end(sig=15)
        [smtpc] = self.running("smtpc")
        self.assertEqual(smtpc.signals, ["TERM"])
        smtpc.end(sig=15)
        [smar] = self.running("smar")
        self.assertEqual(smar.signals, ["TERM"])
        smar.end(sig=15)
        before = len(self.reactor.spawned)
        self.reactor.advance(0.9)
        self.assertEqual(len(self.reactor.spawned), before)
        self.reactor.advance(0.1)
        restarted = [path for t, path, a, k in self.reactor.spawned[before:]]
        self.assertEqual(
            restarted,
            ["/bin/smar", "/bin/qmgr", "/bin/smtpc", "/bin/smtps", "/bin/smtps"],
        )
        found = self.successResultOf(self.supervisor.processes())
        self.assertEqual({p["restarts"] for p in found}, {1})
        self.assertEqual({p["state"] for p in found}, {"running"})
        [line] = [l for l in self.sink.lines() if "processEnded" in l and "sev=" in l]
        self.assertIn("sev=ERR, func=processEnded, service=qmgr", line)
        self.assertIn("status=signal 9 (SIGKILL), restart_in=1s", line)
        self.assertIn("dependencies=smar smtpc smtps", line)

    def test_onlyTheProcess(self) -> None:
        """
        A process without restart dependencies is restarted alone; the
        other process of the same service keeps running.
        """
        self.reactor.advance(60)
        first, second = self.running("smtps")
        first.end(1)
        self.assertEqual(self.reactor.signalled, [])
        self.reactor.advance(1)
        self.assertEqual(
            self.reactor.spawned[-1][2], ["smtps", "-i", "0", "-f", "smx.conf"]
        )
        self.assertEqual(len(self.running("smtps")), 2)
        self.assertIn(second, self.running("smtps"))

    def test_backoff(self) -> None:
        """
        A process that ends soon after it started waits twice as long
        each time, up to C{maxRestartDelay}; one that ran at least
        C{threshold} seconds is restarted after C{minRestartDelay} again.
        """
        delays = []
        for i in range(6):
            [smtpc] = self.running("smtpc")
            smtpc.end(1)
            waited = 0.0
            while not self.running("smtpc"):
                self.reactor.advance(0.5)
                waited += 0.5
            delays.append(waited)
        self.assertEqual(delays, [1.0, 2.0, 4.0, 8.0, 8.0, 8.0])
        self.reactor.advance(30)
        [smtpc] = self.running("smtpc")
        smtpc.end(1)
        self.reactor.advance(1)
        self.assertEqual(len(self.running("smtpc")), 1)

    def test_killedInTurn(self) -> None:
        """
        With the default back-off, a component killed again and again
        while it serves (every 15 s, as a tester kills each component in
        turn during a stream of messages) is restarted after 1 s each
        time: only a process that dies within seconds of its start backs
        off (doc/split.md), so its peers' C{wait_for_server} and
        C{wait_for_client} (4 s in the seed's §5.3 example) are not
        exceeded.
        """
        supervisor = ProcessSupervisor(
            layout(),
            self.reactor,
            queueDirectory="/q",
            log=smxlog.Logger("mcp", sink=self.sink),
            newSession=False,
        )
        supervisor.startService()
        for i in range(5):
            self.reactor.advance(15)
            [smtpc] = self.reactor.running("smtpc", supervisor)
            smtpc.end(sig=signal.SIGKILL)
            self.reactor.advance(1)
            self.assertEqual(len(self.reactor.running("smtpc", supervisor)), 1, i)

    def test_servedThenStoppedResetsBackoff(self) -> None:
        """
        A process that ran C{threshold} seconds or more before it was
        stopped (restarted with a dependency) starts its back-off again:
        killed soon after that restart it waits C{minRestartDelay}, not
        twice as long because of a quick end long before.
        """
        [smtpc] = self.running("smtpc")
        smtpc.end(sig=signal.SIGKILL)
        self.reactor.advance(1)
        # smtpc serves for a minute; then qmgr dies and restarts it
        self.reactor.advance(60)
        [qmgr] = self.running("qmgr")
        qmgr.end(sig=signal.SIGKILL)
        for name in ("smtps", "smtpc", "smar"):
            for t in self.running(name):
                t.end(0)
        self.reactor.advance(1)
        self.assertEqual(len(self.running("smtpc")), 1)
        # killed 5 s after that restart: 1 s, as the first quick end
        self.reactor.advance(5)
        [smtpc] = self.running("smtpc")
        smtpc.end(sig=signal.SIGKILL)
        self.reactor.advance(1)
        self.assertEqual(len(self.running("smtpc")), 1)

    def test_noRestart(self) -> None:
        """
        A process that exits with EX_USAGE (64) or EX_CONFIG (78) is not
        restarted (nor are its dependencies stopped): the log says so
        with C{sev=ERR}; C{restart} starts it again by hand.
        """
        for name, code, word in (("smtpc", 64, "EX_USAGE"), ("qmgr", 78, "EX_CONFIG")):
            [t] = self.running(name)
            t.end(code)
            self.reactor.advance(120)
            self.assertEqual(self.running(name), [])
            self.assertEqual(self.supervisor.slots[name][0].state, "failed")
            self.assertTrue(
                any(
                    "service=%s" % (name,) in l
                    and "status=exit %d (%s), restart=no" % (code, word) in l
                    for l in self.sink.lines()
                ),
                self.sink.lines(),
            )
        self.assertEqual(self.reactor.signalled, [])
        self.supervisor.restart("smtpc")
        self.reactor.advance(0)
        self.assertEqual(len(self.running("smtpc")), 1)

    def test_stopInReverseOrder(self) -> None:
        """
        Stopping the MCP sends SIGTERM to the services in reverse start
        order, each rank only after the previous one has exited; one
        that does not exit gets SIGKILL after C{killTimeout}.
        """
        d = self.supervisor.stopService()
        smtps = self.running("smtps")
        self.assertEqual({tuple(t.signals) for t in smtps}, {("TERM",)})
        self.assertEqual(self.running("smtpc")[0].signals, [])
        for t in smtps:
            t.end(sig=15)
        [smtpc] = self.running("smtpc")
        self.assertEqual(smtpc.signals, ["TERM"])
        self.reactor.advance(5)
        self.assertEqual(smtpc.signals, ["TERM", "KILL"])
        smtpc.end(sig=9)
        [qmgr] = self.running("qmgr")
        qmgr.end(0)
        [smar] = self.running("smar")
        self.assertNoResult(d)
        smar.end(0)
        self.successResultOf(d)
        self.assertEqual(
            [p for p, s in self.reactor.signalled if s == "TERM"],
            [t.pid for t in smtps] + [smtpc.pid, qmgr.pid, smar.pid],
        )
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.spawned), 5)

    def test_stopClosesSocketsFirst(self) -> None:
        """
        Stopping the MCP closes its copy of a service's listening socket
        at once, before the processes have stopped: new connections are
        refused as soon as the SMTPS processes close theirs.
        """
        from smx.test.mta import canConnect, freePort

        port = freePort()
        services = layout()[:3] + [
            service("smtps", 4, mcpType="accept", port=port, address="127.0.0.1")
        ]
        supervisor = ProcessSupervisor(
            services,
            self.reactor,
            queueDirectory="/q",
            log=smxlog.Logger("mcp", sink=self.sink),
            newSession=False,
        )
        supervisor.startService()
        self.assertTrue(canConnect(port))
        d = supervisor.stopService()
        self.assertFalse(canConnect(port))
        [smtps] = self.reactor.running("smtps", supervisor)
        self.assertEqual(smtps.signals, ["TERM"])
        for name in ("smtps", "smtpc", "qmgr", "smar"):
            for t in self.reactor.running(name, supervisor):
                t.end(0)
        self.successResultOf(d)

    def test_stopDuringRestart(self) -> None:
        """
        Stopping the MCP while a restart waits for dependencies to exit
        cancels the restart: everything stops, nothing starts again.
        """
        self.reactor.advance(60)
        [qmgr] = self.running("qmgr")
        qmgr.end(sig=9)
        d = self.supervisor.stopService()
        for name in ("smtps", "smtpc", "smar"):
            for t in self.running(name):
                t.end(sig=15)
        self.successResultOf(d)
        before = len(self.reactor.spawned)
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.spawned), before)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_signalsPassedOn(self) -> None:
        """
        SIGUSR1 and SIGUSR2 are passed on to every process.
        """
        self.assertEqual(self.supervisor.signalAll(signal.SIGUSR1), 5)
        self.assertEqual({s for p, s in self.reactor.signalled}, {signal.SIGUSR1})
        self.assertEqual(len(self.reactor.signalled), 5)

    def test_signalsOnlyToComponents(self) -> None:
        """
        SIGUSR1 and SIGUSR2 go to smx's components only: another program
        the MCP starts (a local mailer such as procmail, or smx lmtpd in a
        section of another name) may not handle them, and their default
        action ends it (seen in the issue 16 rehearsal: a reload killed
        the local mailer).
        """
        supervisor = ProcessSupervisor(
            layout() + [service("mailer", 2)],
            self.reactor,
            queueDirectory="/q",
            log=smxlog.Logger("mcp", sink=self.sink),
            newSession=False,
        )
        supervisor.startService()
        [mailer] = self.reactor.running("mailer", supervisor)
        before = len(self.reactor.signalled)
        self.assertEqual(supervisor.signalAll(signal.SIGUSR2), 5)
        self.assertEqual(len(self.reactor.signalled), before + 5)
        self.assertEqual(mailer.signals, [])

    def test_stopAndRestartByName(self) -> None:
        """
        C{stop(name)} stops a service for good; C{restart(name)} starts it
        again (with its dependencies); an unknown name is a C{KeyError}.
        """
        d = self.supervisor.stop("smtpc")
        [smtpc] = self.running("smtpc")
        smtpc.end(sig=15)
        self.successResultOf(d)
        self.reactor.advance(100)
        self.assertEqual(self.running("smtpc"), [])
        self.assertEqual(self.supervisor.slots["smtpc"][0].state, "stopped")
        self.supervisor.restart("smtpc")
        self.reactor.advance(0)
        self.assertEqual(len(self.running("smtpc")), 1)
        self.failureResultOf(self.supervisor.restart("nothing"), KeyError)
        self.failureResultOf(self.supervisor.stop("nothing"), KeyError)


class NumberTests(SynchronousTestCase):
    """
    The numbers of the processes (C{pass_id}).
    """

    def test_uniquePerKeyword(self) -> None:
        """
        The processes of two sections of one keyword are numbered one
        after the other (0, 1 and 2, 3); a service with several processes
        but without C{pass_id} learns its number from the environment
        (C{SMX_PROCESS_NUMBER}), one with a single process does not;
        every process finds the name of its section in C{SMX_SERVICE}.
        """
        reactor = ProcessReactor()
        supervisor = ProcessSupervisor(
            [
                service("smar", 0),
                service("MTA", 4, keyword="smtps", minProcesses=2, maxProcesses=2),
                service(
                    "MSA",
                    4,
                    keyword="smtps",
                    minProcesses=2,
                    maxProcesses=2,
                    passId="-i",
                ),
            ],
            reactor,
            environ={"PATH": "/bin"},
            log=smxlog.Logger("mcp", sink=smxlog.MemorySink()),
            newSession=False,
        )
        supervisor.startService()
        found = [
            (argv[0], argv[1:3], kw["env"].get("SMX_PROCESS_NUMBER"))
            for t, path, argv, kw in reactor.spawned
        ]
        self.assertEqual(
            found,
            [
                ("smar", ["-f", "smx.conf"], None),
                ("MTA", ["-f", "smx.conf"], "0"),
                ("MTA", ["-f", "smx.conf"], "1"),
                ("MSA", ["-i", "2"], None),
                ("MSA", ["-i", "3"], None),
            ],
        )
        # each knows its section
        self.assertEqual(
            [kw["env"]["SMX_SERVICE"] for t, path, argv, kw in reactor.spawned],
            ["smar", "MTA", "MTA", "MSA", "MSA"],
        )
        self.assertEqual(reactor.spawned[0][3]["env"]["PATH"], "/bin")


class DescribeTests(SynchronousTestCase):
    """
    L{describeStatus}.
    """

    def test_describe(self) -> None:
        """
        An exit status, with the sysexits name of 64 and 78; a signal with
        its name.
        """
        self.assertEqual(describeStatus(error.ProcessDone(0)), "exit 0")
        self.assertEqual(
            describeStatus(error.ProcessTerminated(64)), "exit 64 (EX_USAGE)"
        )
        self.assertEqual(
            describeStatus(error.ProcessTerminated(None, 9)), "signal 9 (SIGKILL)"
        )
