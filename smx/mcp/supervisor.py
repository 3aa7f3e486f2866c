# -*- test-case-name: smx.mcp.test.test_supervisor -*-
"""
NAME
    smx.mcp.supervisor - MCP: start, watch and restart the services

SYNOPSIS
    supervisor = ProcessSupervisor(services, reactor, queueDirectory="/var/spool/smx",
                                   logDirectory="/var/log/smx")
    supervisor.bindAll()            # as root, before anything starts
    supervisor.setServiceParent(application)

DESCRIPTION
    The main control program of seed §5.2 and §6.1.  For each service
    (L{smx.mcp.settings.ServiceSettings}) it binds the service's socket,
    then starts C{min_processes} processes of C{path} with C{arguments}
    (and C{pass_id NUMBER}), as C{user} and C{group} (set in the child
    before C{exec}: C{setgid}, C{initgroups}, C{setuid}), in the main
    queue directory, in start order (L{smx.mcp.settings.START_RANK}).

    What a process gets on its descriptors depends on C{mcp_type}:
    C{wait} and C{pass}: nothing on 0 (C{/dev/null}; C{pass} processes
    fetch the listening socket over C{pass_fd_socket},
    L{smx.mcp.sockets}); C{accept}: the listening socket on 0, the
    process accepts; C{nostartaccept}: the MCP accepts, and starts one
    process per connection with the connection on 0 and 1, at most
    C{max_processes} at a time.  Standard output and error go to
    C{LOGDIR/NAME.log} (C{NAME<number>.log} with
    C{use_id_in_logfile_name}) when the MCP has a log directory (C{-L}),
    else into the MCP's own log, one line each.

    A process that ends is started again together with its
    C{restartdependencies} (which are stopped first), unless its exit
    status is C{EX_USAGE} (64) or C{EX_CONFIG} (78): a restart cannot
    help, and the MCP logs it with C{sev=ERR} and leaves it stopped.
    Restarts back off: a process that ran less than C{threshold} seconds
    (10: it died at or soon after its start) waits C{minRestartDelay}
    doubled for each such quick end in a row, at most C{maxRestartDelay},
    so a component that dies at once does not spin; one that had been
    serving (killed, crashed on a message) is started again after
    C{minRestartDelay}, within its peers' C{wait_for_server}.

    Stopping the MCP (SIGTERM, SIGINT) closes its copies of the listening
    sockets (a new connection is refused once the processes serving a
    socket have closed theirs) and stops every service in reverse
    start order (SMTPS before QMGR), each with SIGTERM and, after
    C{killTimeout} seconds, SIGKILL.  SIGUSR1 (reload maps, seed §6.7)
    and SIGUSR2 (reopen logs, §6.8.1) are passed on to every process of
    smx's components (L{SIGNALLED}).

    Not L{twisted.runner.procmon.ProcessMonitor}: it restarts a process
    whatever its exit status, knows no restart dependencies, no stop
    order and no descriptors to hand over; the back-off here is its
    (C{minRestartDelay}, C{maxRestartDelay}, C{threshold}).

DIAGNOSTICS
    Records of the C{mcp} component (L{smx.log}): C{spawn},
    C{processEnded} with C{status=} and C{restart_in=} or
    C{restart=no}, with C{sev=ERR} when a process ended on its own.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.application import service
from twisted.internet import defer, error, protocol, task
from twisted.logger import Logger as TwistedLogger
from zope.interface import implementer

from smx import log as smxlog
from smx.interfaces import IProcessSupervisor
from smx.mcp.settings import EX_CONFIG, EX_USAGE, ServiceSettings, dependents
from smx.mcp.sockets import PassingServer, bindService

#: the environment variable that gives a process its number when its
#: service has several processes but no C{pass_id}
PROCESS_NUMBER = "SMX_PROCESS_NUMBER"
#: the section keywords of smx's components, to which the MCP passes
#: SIGUSR1 and SIGUSR2 (L{ProcessSupervisor.signalAll})
SIGNALLED = frozenset(["smar", "qmgr", "lmtpd", "smtpc", "smtps", "pickup"])
#: the environment variable that names the section a process runs for
SERVICE_NAME = "SMX_SERVICE"
#: setsid(1) of util-linux: runs a program in a session of its own
SETSID = "/usr/bin/setsid"
#: setpriv(1) of util-linux: sets the parent-death signal
SETPRIV = "/usr/bin/setpriv"
#: exit statuses after which a restart cannot help (seed §6.1)
NO_RESTART = {EX_USAGE: "EX_USAGE", EX_CONFIG: "EX_CONFIG"}


class Process:
    """
    One process slot of a service (its number is its C{pass_id}).

    @ivar state: C{"running"}, C{"stopping"}, C{"stopped"}, C{"waiting"}
        (to be restarted), C{"failed"} (not restarted).
    @ivar restarts: how often it was started again.
    @ivar failures: quick ends in a row (for the back-off).
    @ivar lastStatus: how it last ended, for display.
    """

    def __init__(self, service: ServiceSettings, number: int) -> None:
        self.service = service
        self.number = number
        self.transport: Any = None
        self.pid: Optional[int] = None
        self.state = "stopped"
        self.restarts = 0
        self.failures = 0
        self.startedAt = 0.0
        self.lastStatus: Optional[str] = None
        self.stopped: List[defer.Deferred] = []
        self.killer: Any = None
        self.connection: Any = None
        #: the descriptor and name of its log file (in the MCP)
        self.logFile: Optional[Tuple[int, str]] = None

    def describe(self) -> Dict[str, Any]:
        return {
            "name": self.service.name,
            "id": self.number,
            "user": self.service.user,
            "pid": self.pid,
            "state": self.state,
            "restarts": self.restarts,
            "type": self.service.mcpType,
            "last_status": self.lastStatus,
        }


class _ChildProtocol(protocol.ProcessProtocol):
    """
    Report a child's end to the supervisor; relay its output to the MCP's
    log when it has no log file.
    """

    def __init__(self, supervisor: "ProcessSupervisor", process: Process) -> None:
        self.supervisor = supervisor
        self.process = process
        self._buffers: Dict[int, bytes] = {}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffered = self._buffers.get(childFD, b"") + data
        *lines, rest = buffered.split(b"\n")
        self._buffers[childFD] = rest[-65536:]
        for line in lines:
            self.supervisor.childOutput(self.process, line)

    def processEnded(self, reason: Any) -> None:
        for rest in self._buffers.values():
            if rest:
                self.supervisor.childOutput(self.process, rest)
        self._buffers.clear()
        self.supervisor.processEnded(self.process, self, reason.value)


def describeStatus(status: Any) -> str:
    """
    How a process ended: C{"exit 1"}, C{"exit 64 (EX_USAGE)"},
    C{"signal 9 (SIGKILL)"}.
    """
    sig = getattr(status, "signal", None)
    if sig is not None:
        try:
            return "signal %d (%s)" % (sig, signal.Signals(sig).name)
        except ValueError:
            return "signal %d" % (sig,)
    code = getattr(status, "exitCode", None)
    if code in NO_RESTART:
        return "exit %d (%s)" % (code, NO_RESTART[code])
    return "exit %s" % (code,)


@implementer(IProcessSupervisor)
class ProcessSupervisor(service.Service):
    """
    The MCP as a service; see the module docstring.

    @ivar services: the L{ServiceSettings}, in start order.
    @ivar sockets: service name -> its bound listening socket.
    """

    name = "mcp"  # type: ignore[assignment]

    def __init__(
        self,
        services: List[ServiceSettings],
        reactor: Any = None,
        queueDirectory: Optional[str] = None,
        logDirectory: Optional[str] = None,
        environ: Optional[Dict[str, str]] = None,
        log: Optional[smxlog.Logger] = None,
        minRestartDelay: float = 1.0,
        maxRestartDelay: float = 60.0,
        threshold: float = 10.0,
        killTimeout: float = 10.0,
        installSignals: bool = False,
        newSession: bool = True,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.services = list(services)
        self.reactor = reactor
        self.queueDirectory = queueDirectory or os.getcwd()
        self.logDirectory = logDirectory
        self.environ = dict(os.environ if environ is None else environ)
        self.log = log or smxlog.Logger("mcp")
        self.minRestartDelay = minRestartDelay
        self.maxRestartDelay = maxRestartDelay
        self.threshold = threshold
        self.killTimeout = killTimeout
        self.installSignals = installSignals
        self.setsid = SETSID if newSession and os.path.exists(SETSID) else None
        self.setpriv = SETPRIV if self.setsid and os.path.exists(SETPRIV) else None
        self.sockets: Dict[str, Any] = {}
        self.passing: Dict[str, PassingServer] = {}
        self.acceptors: Dict[str, "_Acceptor"] = {}
        self.slots: Dict[str, List[Process]] = {s.name: [] for s in self.services}
        self._byName = {s.name.lower(): s for s in self.services}
        #: the number of the first process of each service: the processes
        #: of all sections of one keyword (two smtps sections) are numbered
        #: one after the other, so that each number is unique (seed §5.2,
        #: 13; SMTPS makes it part of its transaction ids)
        self.firstNumber: Dict[str, int] = {}
        following: Dict[str, int] = {}
        for s in self.services:
            first = following.get(s.keyword.lower(), 0)
            self.firstNumber[s.name] = first
            following[s.keyword.lower()] = first + max(s.minProcesses, s.maxProcesses)
        self._pending: List[defer.Deferred] = []
        #: more environment for a process (smx.metricsgather: its socket)
        self.processEnviron: Optional[Callable[[Process], Dict[str, str]]] = None
        self._oldHandlers: Dict[int, Any] = {}
        self._twistedLog = TwistedLogger(namespace="mcp")

    # sockets

    def bindAll(self) -> None:
        """
        Bind the socket of every service that listens and the
        C{pass_fd_socket}s, before any process starts (as root).  On a
        problem, close what was bound and raise.

        @raise smx.mcp.sockets.ListenError: naming the section and option.
        """
        try:
            for s in self.services:
                if s.listens() and s.name not in self.sockets:
                    self.sockets[s.name] = bindService(s)
            for s in self.services:
                if s.mcpType == "pass" and s.name not in self.passing:
                    server = PassingServer(s, self.sockets[s.name])
                    server.start(self.reactor)
                    self.passing[s.name] = server
        except Exception:
            self._closeSockets()
            raise

    def _closeSockets(self) -> defer.Deferred:
        """
        Close the listening sockets and the C{pass_fd_socket}s.

        @return: a L{Deferred} that fires when they are closed.
        """
        for acceptor in self.acceptors.values():
            acceptor.stop()
        self.acceptors.clear()
        stopped = [defer.maybeDeferred(server.stop) for server in self.passing.values()]
        self.passing.clear()
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        return defer.DeferredList(stopped)

    # the service

    def startService(self) -> None:
        service.Service.startService(self)
        self.bindAll()
        if self.installSignals:
            for signum in (signal.SIGUSR1, signal.SIGUSR2):
                self._oldHandlers[signum] = signal.signal(signum, self._signalReceived)
        for s in self.services:
            if s.mcpType == "nostartaccept":
                acceptor = _Acceptor(self, s, self.sockets[s.name])
                self.acceptors[s.name] = acceptor
                acceptor.start()
                continue
            slots = self.slots[s.name]
            for index in range(len(slots), s.minProcesses):
                slots.append(Process(s, self.firstNumber[s.name] + index))
            for process in slots:
                self.spawn(process)

    def stopService(self) -> defer.Deferred:
        service.Service.stopService(self)
        for signum, handler in self._oldHandlers.items():
            signal.signal(signum, handler)
        self._oldHandlers.clear()
        for d in list(self._pending):
            d.cancel()
        for acceptor in self.acceptors.values():
            acceptor.stop()
        running = [p for ps in self.slots.values() for p in ps if p.transport]
        # new connections are refused at once; a process keeps its own
        # copy of its socket while it stops (SMTPS: its commits under
        # way, smx.mail.drain)
        closed = self._closeSockets()
        d = self._stopInOrder(running)

        def _cbStopped(result: Any) -> Any:
            self.log.notice(func="stopService", stopped=len(running))
            return closed

        return d.addBoth(_cbStopped)

    def _signalReceived(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.signalAll, signum)

    def signalAll(self, signum: int) -> int:
        """
        Pass C{signum} on to every running process of smx's components
        (L{SIGNALLED}: another program, such as a local mailer, may not
        handle it, and its default action would end it); a SIGUSR2
        reopens the MCP's own log too, and rewinds every log file the
        MCP opened (for the other programs as well).

        @return: how many processes it was sent to.
        """
        if signum == signal.SIGUSR2:
            smxlog.reopenAll()
            self.rewindLogs()
        sent = 0
        for process in self._allProcesses():
            if process.service.keyword.lower() not in SIGNALLED:
                continue
            if process.transport is not None:
                try:
                    process.transport.signalProcess(signum)
                    sent += 1
                except (error.ProcessExitedAlready, OSError):
                    pass
        self.log.info(
            func="signalAll", signal=signal.Signals(signum).name, processes=sent
        )
        return sent

    def rewindLogs(self) -> None:
        """
        Seed §6.8.1: after C{cp smtps.log smtps.log.0}, SIGUSR2 rewinds
        the log file, which is the standard output of the processes: the
        MCP empties each one that is still the file of that name.  A file
        moved away is written to until the process is restarted.
        """
        for process in self._allProcesses():
            if process.logFile is None:
                continue
            fd, path = process.logFile
            try:
                here, there = os.fstat(fd), os.stat(path)
            except OSError:
                there = None
            if there is not None and (here.st_dev, here.st_ino) == (
                there.st_dev,
                there.st_ino,
            ):
                os.ftruncate(fd, 0)
            else:
                self.log.warn(
                    "rewindLogs",
                    service=process.service.name,
                    file=path,
                    error="moved away; the process writes to it until it is "
                    "restarted (copy the file, do not move it: seed §6.8.1)",
                )

    def _allProcesses(self) -> List[Process]:
        return [p for s in self.services for p in self.slots[s.name]]

    # starting

    def _childFDs(self, process: Process) -> Dict[int, Any]:
        s = process.service
        fds: Dict[int, Any] = {0: self._devNull()}
        if s.mcpType == "accept":
            fds[0] = self.sockets[s.name].fileno()
        if process.connection is not None:
            fds[0] = process.connection.fileno()
        if self.logDirectory is not None:
            path = s.logFileName(self.logDirectory, process.number)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            if os.geteuid() == 0 and s.uid is not None:
                st = os.fstat(fd)
                if st.st_uid == 0:
                    os.fchown(fd, s.uid, -1)
            fds[1] = fds[2] = fd
        else:
            fds[1] = fds[2] = "r"
        if process.connection is not None:
            fds[1] = fds[0]
        return fds

    def _devNull(self) -> int:
        fd = getattr(self, "_devNullFD", None)
        if fd is None:
            fd = self._devNullFD = os.open(os.devnull, os.O_RDWR)
        return fd

    def spawn(self, process: Process) -> None:
        """
        Start the program of C{process} (once the MCP runs).
        """
        s = process.service
        if not self.running:
            return
        argv = s.arguments(process.number)
        executable = s.path
        if self.setsid is not None:
            # a session of its own: a signal to the MCP's process group
            # (Ctrl-C, timeout(1)) reaches the MCP only, which stops the
            # services in order
            executable, argv = self.setsid, ["setsid", s.path] + argv[1:]
            if self.setpriv is not None:
                # and SIGTERM when the MCP dies (even by SIGKILL): no
                # orphan keeps the port or the queue
                command = ["setpriv", "--pdeathsig", "TERM", "--", self.setsid]
                executable, argv = self.setpriv, command + argv[1:]
        # the section it was started for (smx.mcp.run: which smtps)
        environ = dict(self.environ, **{SERVICE_NAME: s.name})
        if s.passId is None and max(s.minProcesses, s.maxProcesses) > 1:
            # several processes without pass_id: they still learn their
            # number (smx.mcp.run reads it), so that two SMTPS processes
            # never make the same transaction id
            environ = dict(environ, **{PROCESS_NUMBER: str(process.number)})
        if self.processEnviron is not None:
            environ.update(self.processEnviron(process))
        protocol = _ChildProtocol(self, process)
        uid = s.uid if s.uid is not None and s.uid != os.geteuid() else None
        gid = s.gid
        if gid is not None and uid is None and gid == os.getegid():
            gid = None
        try:
            fds = self._childFDs(process)
        except OSError as e:
            self._failed(process, "cannot open the log file: %s" % (e,))
            return
        try:
            transport = self.reactor.spawnProcess(
                protocol,
                executable,
                argv,
                env=environ,
                path=self.queueDirectory,
                uid=uid,
                gid=gid,
                childFDs=fds,
            )
        except Exception as e:
            self._failed(process, "cannot start %s: %s" % (s.path, e))
            if self.logDirectory is not None:
                os.close(fds[2])
            return
        finally:
            # the child has its copy now
            if process.connection is not None:
                process.connection.close()
        if self.logDirectory is not None:
            # kept to rewind it on SIGUSR2 (rewindLogs)
            process.logFile = (fds[2], s.logFileName(self.logDirectory, process.number))
        process.transport = transport
        process.pid = getattr(transport, "pid", None)
        process.state = "running"
        process.startedAt = self.reactor.seconds()
        self.log.info(
            func="spawn",
            service=s.name,
            id=process.number,
            pid=process.pid,
            user=s.user,
            path=s.path,
        )

    def _failed(self, process: Process, why: str) -> None:
        process.state = "failed"
        process.lastStatus = why
        self.log.error(
            "spawn", service=process.service.name, id=process.number, error=why
        )

    def childOutput(self, process: Process, line: bytes) -> None:
        """
        A line a child wrote on its standard output or error (when there
        is no log directory): into the MCP's log, named.
        """
        self._twistedLog.info(
            "{name}[{pid}]: {line}",
            name=process.service.name,
            pid=process.pid,
            line=line.decode("utf-8", "replace").rstrip("\r"),
        )

    # ending

    def processEnded(self, process: Process, protocol: Any, status: Any) -> None:
        """
        A child ended: restart it (and its dependencies), unless it was
        stopped on purpose or its status says a restart cannot help.
        """
        pid = process.pid
        process.transport = None
        process.pid = None
        process.lastStatus = describeStatus(status)
        if process.logFile is not None:
            os.close(process.logFile[0])
            process.logFile = None
        if process.killer is not None and process.killer.active():
            process.killer.cancel()
        process.killer = None
        waiters, process.stopped = process.stopped, []
        s = process.service
        lifetime = self.reactor.seconds() - process.startedAt
        if lifetime >= self.threshold:
            # it served, whether it ended or was stopped (restarted with
            # a dependency): its next quick end starts the back-off anew
            process.failures = 0
        try:
            if process.connection is not None:
                # nostartaccept: one process per connection, never restarted
                self.slots[s.name].remove(process)
                acceptor = self.acceptors.get(s.name)
                if acceptor is not None:
                    acceptor.resume()
                return
            if process.state == "stopping" or not self.running:
                if process.state == "stopping":
                    process.state = "stopped"
                self.log.info(
                    func="processEnded",
                    service=s.name,
                    id=process.number,
                    pid=pid,
                    status=process.lastStatus,
                )
                return
            code = getattr(status, "exitCode", None)
            if code in NO_RESTART:
                process.state = "failed"
                self.log.error(
                    "processEnded",
                    service=s.name,
                    id=process.number,
                    pid=pid,
                    status=process.lastStatus,
                    restart="no",
                    reason="a restart cannot help; fix the cause and run smx "
                    "mcpctl restart %s" % (s.name,),
                )
                return
            process.failures += 1
            delay = min(
                self.minRestartDelay * 2 ** (process.failures - 1), self.maxRestartDelay
            )
            group = [process] + [
                p
                for d in dependents(self.services, s.name)
                for p in self.slots[d.name]
                if p.state in ("running", "waiting")
            ]
            self.log.error(
                "processEnded",
                service=s.name,
                id=process.number,
                pid=pid,
                status=process.lastStatus,
                restart_in="%gs" % (delay,),
                dependencies=" ".join(
                    sorted({p.service.name for p in group if p is not process})
                )
                or None,
            )
            process.state = "waiting"
            self._restartGroup(group, delay)
        finally:
            for d in waiters:
                if not d.called:  # a cancelled restart errbacked it
                    d.callback(None)

    def _restartGroup(self, group: List[Process], delay: float) -> defer.Deferred:
        """
        Stop the running ones of C{group} (in reverse start order), wait
        C{delay} seconds, start them all (in start order).
        """
        for p in group:
            p.state = "waiting" if p.transport is None else p.state
        stopped = self._stopInOrder([p for p in group if p.transport is not None])

        def _cbWait(result: Any) -> Any:
            if not self.running:
                return None
            for p in group:
                if p.state in ("stopped", "waiting"):
                    p.state = "waiting"
            timer = task.deferLater(self.reactor, delay, lambda: None)
            # stopService cancels the wait (only the wait: the stops run on)
            self._pending.append(timer)
            timer.addBoth(_forget, timer)
            return timer.addCallback(_cbStart)

        def _forget(result: Any, timer: defer.Deferred) -> Any:
            if timer in self._pending:
                self._pending.remove(timer)
            return result

        def _cbStart(result: Any) -> None:
            order = {id(s): i for i, s in enumerate(self.services)}
            for p in sorted(group, key=lambda p: (order[id(p.service)], p.number)):
                if p.state == "waiting" and p.transport is None:
                    p.restarts += 1
                    self.spawn(p)

        d = stopped.addCallback(_cbWait)
        d.addErrback(lambda f: f.trap(defer.CancelledError))
        return d

    def _stopProcess(self, process: Process) -> defer.Deferred:
        """
        SIGTERM, then SIGKILL after C{killTimeout}.

        @return: a L{Deferred} that fires when it has exited.
        """
        if process.transport is None:
            if process.state != "failed":
                process.state = "stopped"
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        process.stopped.append(d)
        if process.state != "stopping":
            process.state = "stopping"
            try:
                process.transport.signalProcess("TERM")
            except error.ProcessExitedAlready:
                pass

            def kill() -> None:
                process.killer = None
                if process.transport is not None:
                    self.log.warn(
                        "stopProcess",
                        service=process.service.name,
                        pid=process.pid,
                        error="no exit %gs after SIGTERM; SIGKILL"
                        % (self.killTimeout,),
                    )
                    try:
                        process.transport.signalProcess("KILL")
                    except error.ProcessExitedAlready:
                        pass

            process.killer = self.reactor.callLater(self.killTimeout, kill)
        return d

    def _stopInOrder(self, processes: List[Process]) -> defer.Deferred:
        """
        Stop C{processes} in reverse start order: a rank at a time, the
        next once the previous ones have exited.
        """
        ranks = sorted({p.service.rank for p in processes}, reverse=True)

        @defer.inlineCallbacks
        def stopAll() -> Any:
            for rank in ranks:
                yield defer.DeferredList(
                    [self._stopProcess(p) for p in processes if p.service.rank == rank]
                )

        return stopAll()

    # IProcessSupervisor

    def processes(self) -> defer.Deferred:
        return defer.succeed([p.describe() for p in self._allProcesses()])

    def _service(self, name: str) -> ServiceSettings:
        s = self._byName.get(name.lower())
        if s is None:
            raise KeyError(name)
        return s

    def restart(self, name: str) -> defer.Deferred:
        try:
            s = self._service(name)
        except KeyError as e:
            return defer.fail(e)
        group = list(self.slots[s.name])
        if s.mcpType != "nostartaccept":
            for index in range(len(group), s.minProcesses):
                self.slots[s.name].append(Process(s, self.firstNumber[s.name] + index))
            group = list(self.slots[s.name])
        for d in dependents(self.services, s.name):
            group += [p for p in self.slots[d.name] if p.connection is None]
        for p in group:
            p.failures = 0
        self.log.notice(func="restart", service=s.name)
        return self._restartGroup([p for p in group if p.connection is None], 0)

    def stop(self, name: str) -> defer.Deferred:
        try:
            s = self._service(name)
        except KeyError as e:
            return defer.fail(e)
        self.log.notice(func="stop", service=s.name)
        d = self._stopInOrder([p for p in self.slots[s.name] if p.transport])

        def _cbStopped(result: Any) -> None:
            for p in self.slots[s.name]:
                p.state = "stopped"

        return d.addCallback(_cbStopped)


class _Acceptor:
    """
    C{mcp_type = nostartaccept}: accept connections and start one process
    per connection, at most C{max_processes} at a time.
    """

    def __init__(
        self, supervisor: ProcessSupervisor, service: ServiceSettings, sock: Any
    ) -> None:
        self.supervisor = supervisor
        self.service = service
        self.socket = sock
        self.socket.setblocking(False)
        self.reading = False

    def fileno(self) -> int:
        return self.socket.fileno()

    def logPrefix(self) -> str:
        return "mcp %s" % (self.service.name,)

    def start(self) -> None:
        self.resume()

    def resume(self) -> None:
        if not self.reading and self.supervisor.running:
            self.reading = True
            self.supervisor.reactor.addReader(self)

    def stop(self) -> None:
        if self.reading:
            self.reading = False
            self.supervisor.reactor.removeReader(self)

    def doRead(self) -> None:
        slots = self.supervisor.slots[self.service.name]
        while len(slots) < self.service.maxProcesses:
            try:
                connection, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.supervisor.log.error(
                    "accept", service=self.service.name, error=str(e)
                )
                return
            used = {p.number for p in slots}
            first = self.supervisor.firstNumber[self.service.name]
            number = min(set(range(first, first + len(slots) + 1)) - used)
            process = Process(self.service, number)
            process.connection = connection
            slots.append(process)
            self.supervisor.spawn(process)
            if process.transport is None:
                slots.remove(process)
        self.stop()

    def connectionLost(self, reason: Any) -> None:
        self.stop()
