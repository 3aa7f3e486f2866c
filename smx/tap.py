# -*- test-case-name: smx.test.test_tap -*-
"""
NAME
    smx.tap - the C{twistd smx} plugin: build smx's service tree

SYNOPSIS
    twistd -n smx [--config smx.conf] [-C n] [-c n] [-O R=n] [-O 0=n]
                  [--smtps-options "-a -T -C addr -N name"]...
                  [--smar-options "-U"] [--qmgr-options "-x c.n"]...

DESCRIPTION
    Reads the configuration (seed §5) and builds a C{MultiService} with one
    child service per configured component, all in one process
    ("embedded" mode, see C{doc/architecture.md}): SMAR (address resolver),
    QMGR (queue manager with CDB, IBDB, DEFEDB), SMTPC (delivery agent),
    one SMTPS listener per C{smtps} section, and smx's own LMTP delivery
    server when an C{lmtpd} section is present.  The components call each
    other only through the Interfaces of L{smx.interfaces}.

    Without C{--config} the embedded default configuration is used: it is
    written (if missing) into the current directory, which is the main
    queue directory (seed §5.6).

    The command-line options C{-C}, C{-c}, C{-O R=}, C{-O 0=} are those of
    seed §5.7.1 and override the configuration file.  The options of the
    SMTPS, SMAR and QMGR programs (C{smtps -a -C -N -T}, C{smar -U},
    C{qmgr -x}) are given as one string each with C{--smtps-options},
    C{--smar-options} and C{--qmgr-options} (after those of the
    environment variables C{SM_SERVER_OPTIONS} and C{SMAROPTS}) and
    override the configuration file too; see
    L{smx.config.componentoptions}.

    Signals: SIGTERM and SIGINT stop smx cleanly (twistd exits with status
    0); SIGUSR1 reopens the maps (seed §6.7) and reads SMTPS's
    certificates again (doc/tls.md); SIGUSR2 rotates the log
    files: a file copied away is rewound, a file moved away is replaced
    (seed §6.8.1).

DIAGNOSTICS
    A configuration error is one line naming the file, line and column;
    twistd then exits with status 1 (C{smx config -f} exits 2).  Warnings
    (settings that do nothing or are doubtful, a private key everybody may
    read) are printed on standard error at start, one line each, as
    C{smx config} prints them.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import resource
import signal
import sys
from typing import Any, Dict, Iterator, List, NoReturn, Optional

from twisted.application import service
from twisted.internet import error
from twisted.python import usage

from smx import log
from smx.config import ConfigError, loadConfiguration


class Options(usage.Options):
    """
    Command-line options of C{twistd smx}.
    """

    synopsis = (
        "[--config FILE] [-C n] [-c n] [-O R=n] [-O 0=n] "
        '[--smtps-options "-a -T -C addr -N name"] [--smar-options "-U"] '
        '[--qmgr-options "-x c.n"]'
    )

    optParameters = [
        ["config", "f", None, "the configuration file (default: embedded)"],
        [
            "queue-directory",
            "d",
            None,
            "the main queue directory (default: the current directory)",
        ],
        ["max-connections", "C", None, "max connections to one IP (§5.7.1)"],
        ["initial-connections", "c", None, "initial connections to one IP"],
        ["component", None, None, "split mode: run mcp, qmgr, smtps, smtpc or smar"],
        ["id", "i", None, "split mode: the process number (pass_id)"],
        ["log-directory", "L", None, "split mode: the MCP's log directory"],
    ]

    #: the name a configuration problem is reported under (L{_configProblem})
    programName = "smx"

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["overrides"] = {}
        self["component-options"] = {"smtps": [], "smar": [], "qmgr": []}
        self.configuration = None  # type: Any

    def opt_smtps_options(self, value: str) -> None:
        """SMTPS options, one string: -a (access map), -C addr (relay from addr), -N name (run that smtps section), -T (relay to lmtp: domains); repeatable; also $SM_SERVER_OPTIONS"""
        self["component-options"]["smtps"].append(value)

    def opt_smar_options(self, value: str) -> None:
        """SMAR options, one string: -U (DNS over TCP); also $SMAROPTS"""
        self["component-options"]["smar"].append(value)

    def opt_qmgr_options(self, value: str) -> None:
        """QMGR options, one string: -x c[-l][.n],... (debug level n of categories c to l, App. E); repeatable"""
        self["component-options"]["qmgr"].append(value)

    def opt_O(self, value: str) -> None:
        """
        R=n: max incoming connection rate per 60s; 0=n: max open
        incoming connections (seed §5.7.1).
        """
        key, sep, number = value.partition("=")
        names = {"R": "smtps_max_connection_rate", "0": "smtps_max_open_connections"}
        if not sep or key not in names or not number.isdigit():
            raise usage.UsageError("-O takes R=n or 0=n, not %r" % (value,))
        self["overrides"][names[key]] = int(number)

    def postOptions(self) -> None:
        for flag, opt, name in (
            ("-C", "max-connections", "smtpc_max_connections"),
            ("-c", "initial-connections", "smtpc_initial_connections"),
        ):
            if self[opt] is not None:
                if not str(self[opt]).isdigit():
                    raise usage.UsageError(
                        "%s (--%s) takes a number, not %r" % (flag, opt, self[opt])
                    )
                self["overrides"][name] = int(self[opt])
        queueDirectory = os.path.abspath(self["queue-directory"] or os.getcwd())
        path = self["config"]
        if path is None:
            from smx.scripts.defaultconfig import writeDefaultConfiguration

            path = writeDefaultConfiguration(queueDirectory)
        try:
            self.configuration = loadConfiguration(path, queueDirectory=queueDirectory)
        except ConfigError as e:
            self._configProblem(str(e))
        qmgr = self.configuration.section("qmgr")
        for name, value in self["overrides"].items():
            try:
                qmgr.override(name, value)
            except ConfigError as e:
                raise usage.UsageError(str(e))
        from smx.config.componentoptions import applyComponentOptions

        applyComponentOptions(
            self.configuration, environ=os.environ, **self["component-options"]
        )
        try:
            self.configuration.reconcile()
        except ConfigError as e:
            self._configProblem(str(e))
        from smx.config.files import checkFiles

        problems = checkFiles(self.configuration)
        # warnings, one line each, where the user sees them (like smx config)
        for warning in self.configuration.warnings:
            sys.stderr.write("%s\n" % (warning,))
        if problems:
            self._configProblem("\n".join(str(e) for e in problems))

    def _configProblem(self, text: str) -> NoReturn:
        """
        A mistake in the configuration: under twistd, one line per problem
        on standard error and exit status 78 (EX_CONFIG, as C{smx-mcp}),
        not twistd's usage text before it; a L{usage.UsageError}
        otherwise.
        """
        if getattr(self, "parent", None) is None:
            raise usage.UsageError(text)
        from smx.mcp.settings import EX_CONFIG

        for line in text.splitlines():
            sys.stderr.write("%s: %s\n" % (self.programName, line))
        sys.stderr.flush()
        raise SystemExit(EX_CONFIG)


class SmxService(service.MultiService):
    """
    The root of smx's service tree: starts the components in order, stops
    them in reverse order, and turns signals into reloads.

    @ivar components: name -> component object (for signal handling and
        tests): C{"resolver"}, C{"qmgr"}, C{"deliveryAgent"},
        C{"contentStore"}, C{"smtps"} (a list), C{"lmtpd"}.
    """

    def __init__(self, configuration: Any, installSignals: bool = True) -> None:
        service.MultiService.__init__(self)
        self.configuration = configuration
        self.components = {}  # type: Dict[str, Any]
        self._installSignals = installSignals
        self._oldHandlers = {}  # type: Dict[int, Any]
        self.logObserver = None  # type: Any
        #: the L{smx.logobserver.TurnLog} in L{logObserver}, if any
        self.turnLog = None  # type: Any
        #: end the process on a startup error (set by L{makeService})
        self.exitOnStartupError = False

    def setServiceParent(self, parent: Any) -> Any:
        """
        Under twistd the parent is the application: give it smx's log
        observer (twistd's own, less Twisted's DNS noise).
        """
        if self.logObserver is not None and hasattr(parent, "setComponent"):
            from twisted.logger import ILogObserver

            parent.setComponent(ILogObserver, self.logObserver)
        return service.MultiService.setServiceParent(self, parent)

    def privilegedStartService(self) -> None:
        if self.turnLog is not None and self.parent is not None:
            # twistd logs through it by now (it starts the log before the
            # services): smx's records go straight to it until the stop
            self.turnLog.startDirect()
        with self._startupErrors():
            service.MultiService.privilegedStartService(self)

    def startService(self) -> None:
        with self._startupErrors():
            self._startService()

    @contextlib.contextmanager
    def _startupErrors(self) -> Iterator[None]:
        """
        Under twistd (L{exitOnStartupError}), a socket that cannot be
        listened on ends smx with one line on standard error and exit
        status 1, not a traceback.
        """
        try:
            yield
        except (error.CannotListenError, OSError) as e:
            if not self.exitOnStartupError:
                raise
            sys.stderr.write("smx: %s\n" % (describeStartupError(e),))
            raise SystemExit(1)

    def _startService(self) -> None:
        if self._installSignals:
            for signum, handler in (
                (signal.SIGUSR1, self._reloadMaps),
                (signal.SIGUSR2, self._reopenLogs),
            ):
                self._oldHandlers[signum] = signal.signal(signum, handler)
            from twisted.internet import reactor

            # now, and again after the reactor's own handlers, which it
            # installs when it starts running
            self._installStopSignals()
            reactor.callWhenRunning(  # type: ignore[attr-defined]
                self._installStopSignals, True
            )
        service.MultiService.startService(self)

    def _installStopSignals(self, again: bool = False) -> None:
        """
        SIGTERM and SIGINT stop the reactor as Twisted's handlers do, but
        twistd then exits with status 0 instead of ending itself with the
        same signal: stopping smx is not a failure (C{make run} would
        report "Error 143", a service manager a failed unit).

        @param again: replacing the reactor's handlers, which are then the
            ones L{stopService} puts back.
        """
        if again and not self.running:
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            old = signal.signal(signum, self._stopSignal)
            if again or signum not in self._oldHandlers:
                self._oldHandlers[signum] = old

    def _stopSignal(self, signum: int, frame: Any) -> None:
        from twisted.internet import reactor

        reactor.callFromThread(  # type: ignore[attr-defined]
            self._stopReactor, signal.Signals(signum).name
        )

    def _stopReactor(self, name: str) -> None:
        from twisted.internet import reactor
        from twisted.logger import Logger

        Logger().info("Received {signal}, shutting down.", signal=name)
        try:
            reactor.stop()  # type: ignore[attr-defined]
        except error.ReactorNotRunning:
            pass

    def stopService(self):
        """
        Stop the children one after the other, in reverse start order,
        each once the one started after it has stopped: SMTPS finishes
        the commits of the messages whose final dot it has received
        while the pmilters and QMGR still run (L{smx.mail.drain});
        C{MultiService} would stop them all at once.  The signal handlers
        are put back once all have stopped: a second SIGTERM meanwhile
        does not end smx in the middle of a commit.
        """
        service.Service.stopService(self)
        from smx.servicestop import stopInReverse

        return stopInReverse(list(self)).addBoth(self._restoreSignals)

    def _restoreSignals(self, result: Any) -> Any:
        for signum, handler in self._oldHandlers.items():
            signal.signal(signum, handler)
        self._oldHandlers.clear()
        if self.turnLog is not None:
            # the last records through Twisted's log, into the same file
            self.turnLog.stopDirect()
        return result

    def _reloadMaps(self, signum: int, frame: Any) -> None:
        from twisted.internet import reactor

        reactor.callFromThread(self.reloadMaps)  # type: ignore[attr-defined]

    def _reopenLogs(self, signum: int, frame: Any) -> None:
        # in the reactor's turn, not in the middle of a write
        from twisted.internet import reactor

        reactor.callFromThread(log.reopenAll)  # type: ignore[attr-defined]

    def reloadMaps(self) -> None:
        """
        Reopen every map (seed §6.7): SMAR's maps and QMGR's conf map;
        call the pmilters' C{reload}; read SMTPS's certificates again.
        """
        resolver = self.components.get("resolver")
        if resolver is not None:
            resolver.reload()
        proxy = self.components.get("resolverProxy")
        if proxy is not None:
            proxy.forget()  # split SMTPS: SMAR's answers it kept (split/cache)
        qmgr = self.components.get("qmgr")
        if qmgr is not None:
            qmgr.reopenMaps()
        agent = self.components.get("deliveryAgent")
        if agent is not None and hasattr(agent, "reload"):
            agent.reload()  # SMTPC's tls_policy_map (doc/tls.md)
        # pmfi_signal (App. B.8): e.g. the rules pmilter reads its file
        for host in self.components.get("pmilters", ()):
            host.reload()
        # new SMTPS sessions get renewed certificates (doc/tls.md)
        from smx.mail.listener import reloadCertificates

        reloadCertificates(self.components.get("smtps", ()))


def describeStartupError(e: Exception) -> str:
    """
    One line for an error raised while the components start: which
    address or socket could not be listened on, and why.
    """
    if isinstance(e, error.CannotListenError):
        where = e.port
        if isinstance(where, bytes):
            where = os.fsdecode(where)
        if e.interface:
            where = "%s:%s" % (e.interface, where)
        reason = e.socketError
        if isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror
        return "cannot listen on %s: %s" % (where, reason)
    if isinstance(e, OSError) and e.strerror:
        if e.filename:
            return "%s: %s" % (e.filename, e.strerror)
        return e.strerror
    return str(e)


def buildService(
    configuration: Any, reactor: Any = None, installSignals: bool = True
) -> SmxService:
    """
    Build the service tree for C{configuration}: one child service per
    configured component.

    @param reactor: the reactor the components use (default: the global
        one).
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    from smx.components import assemble

    root = SmxService(configuration, installSignals=installSignals)
    root.components = assemble(configuration, reactor, root)
    return root


#: Twisted's own lines that say nothing to a postmaster: every DNS query
#: opens and closes a UDP port, and the resolver reports reading
#: /etc/resolv.conf
_NOISE = re.compile(
    r"^(DNSDatagramProtocol starting on \d+|\(UDP Port \d+ Closed\)"
    r"|/etc/resolv.conf changed, reparsing|Resolver added .* to server list)$"
)


def _isNoise(event: Dict[str, Any]) -> Any:
    from twisted.logger import PredicateResult, formatEvent

    if event.get("log_format") == "{line}":
        return PredicateResult.maybe  # an smx record (smx.log): not noise
    if _NOISE.match(formatEvent(event) or ""):
        return PredicateResult.no
    return PredicateResult.maybe


def useQuietLog(root: Any, twistdOptions: Any) -> None:
    """
    Give C{root} the log observer twistd would make for C{twistdOptions},
    without the lines of L{_NOISE} and made cheaper
    (L{smx.logobserver.speedUp}); nothing when twistd logs to syslog or
    the options are not twistd's.
    """
    try:
        if twistdOptions is None or twistdOptions.get("syslog"):
            return
        from twisted.logger import FilteringLogObserver

        from smx._twistedcompat import twistdLogObserver

        from smx.logobserver import speedUp

        observer = speedUp(twistdLogObserver(twistdOptions))
    except Exception:
        return
    root.logObserver = FilteringLogObserver(observer, [_isNoise])  # type: ignore[list-item]
    root.turnLog = observer if hasattr(observer, "startDirect") else None


#: thresholds of Python's cyclic garbage collector for the smx process
#: (Python's default is (700, 10, 10)); see L{tuneGarbageCollector}
GC_THRESHOLDS = (10000, 50, 50)


def tuneGarbageCollector() -> None:
    """
    Run the cyclic garbage collector less often.  Every message makes
    some hundred short-lived objects, few of them in cycles; with the
    default thresholds the collector ran every 700 allocations, some 60
    times a second at 1,000 msg/s, and took about 6% of smx's CPU in the
    durable benchmark (0.25 s per 6,000 messages, against 0.04 s with
    these thresholds).  Memory is freed by reference counting as before;
    only cyclic garbage waits a little longer.
    """
    gc.set_threshold(*GC_THRESHOLDS)


def raiseFileLimit() -> None:
    """
    Raise the soft limit of open files to the hard limit.  Every SMTP
    session, delivery connection and open map takes a descriptor; the
    usual soft limit of 1,024 would cap the sessions long before
    C{max_connections} (Postfix's master does the same at start).
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard
        if hard == resource.RLIM_INFINITY or hard > 1 << 20:
            wanted = max(soft, 1 << 20)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (OSError, ValueError) as e:
        sys.stderr.write("smx: cannot raise the open file limit: %s\n" % (e,))


def makeService(options: Options) -> service.IService:
    """
    The C{twistd} entry point.  A component that cannot be built from the
    configuration (a missing map, an unreadable certificate) ends twistd
    with one line on standard error and exit status 1.
    """
    from smx.components import ComponentError

    tuneGarbageCollector()
    raiseFileLimit()
    from smx.config.permissions import refuseUnsafeFiles

    # §9.2: exit 78, one line a file; a component of split mode checks the
    # files it relies on, embedded smx (and the MCP) all of them
    component = (options.get("component") or "").lower()
    if component in ("qmgr", "smtps", "smtpc", "smar"):
        refuseUnsafeFiles(options.configuration, component, "smx-" + component)
    else:
        refuseUnsafeFiles(options.configuration)
    from smx.mcp.run import splitService

    split = splitService(options)  # the MCP or one component (doc/split.md)
    if split is not None:
        return split
    try:
        root = buildService(options.configuration)
    except ComponentError as e:
        sys.stderr.write("smx: %s\n" % (e,))
        raise SystemExit(1)
    useQuietLog(root, getattr(options, "parent", None))
    root.exitOnStartupError = True
    return root
