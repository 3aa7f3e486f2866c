# -*- test-case-name: smx.pmilter.test.test_integration_pmilterserver -*-
"""
NAME
    smx pmilter-server - run pmilter plugins as a server on a Unix socket

SYNOPSIS
    smx pmilter-server [--socket PATH] [-f smx.conf] [-N NAME] [-q DIR]
                       [--timeout TIME] [--backlog N] [--debug N]
                       [--log-file FILE] PLUGIN...
    smx pmilter-server --list

DESCRIPTION
    Serves the pmilters PLUGIN... (Twisted plugins providing
    IPolicyMilter, doc/pmilter.md) to the SMTP servers whose smx.conf
    says C{smtps { pmilter { socket = PATH; } }} (seed §5.9), in the order
    given.  They run unchanged, as they would inside SMTPS with
    C{pmilter { plugins = { PLUGIN, ... }; }}.

    The options are the start and stop functions of App. B.2:
    C{sm_pmfi_init} reads the configuration and finds the plugins,
    C{sm_pmfi_setconn} is C{--socket}, C{sm_pmfi_setbacklog}
    C{--backlog}, C{sm_pmfi_settimeout} C{--timeout} (how long each call
    of a pmilter may take; a slower one has failed), C{sm_pmfi_setdbg}
    C{--debug}; C{sm_pmfi_start} negotiates once with every plugin (a
    plugin that cannot, e.g. for a rules file with a mistake, is reported
    and the server does not start) and serves; C{sm_pmfi_stop} is SIGTERM
    or SIGINT: the socket is removed, the sessions are closed.  SIGUSR1
    makes the plugins read their files again (C{reload()}), SIGUSR2
    reopens the log file.

OPTIONS
    --socket PATH     the Unix socket (default: socket of the pmilter
                      section of smx.conf)
    -f FILE           smx.conf: the settings of the plugins are read from
                      C{smtps [NAME] { pmilter { PLUGIN { ... } } }}
    -N NAME           that smtps section (default: the unnamed one)
    -q DIR            the queue directory relative paths are resolved
                      against (default: the directory of FILE, else the
                      current one)
    --timeout TIME    each call of a pmilter (default: timeout of the
                      pmilter section)
    --backlog N       listen(2) backlog (default 50)
    --debug N         more records: 2 each decision, 3 each command
    --log-file FILE   where records go (default: standard error)
    --list            print the installed pmilters and exit

EXIT STATUS
    0 after SIGTERM or SIGINT; 1 if the socket cannot be listened on; 2
    for a mistake in the command line, the configuration or a plugin.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any, List, Optional, TextIO

USAGE = "smx pmilter-server [--socket PATH] [-f smx.conf] [OPTIONS] PLUGIN..."


def _parseTime(text: str) -> float:
    from smx.config.grammar import parseValueText
    from smx.config.values import Time, ValueProblem

    try:
        return float(Time(minimum=0.001).convert(parseValueText(text)))
    except (ValueProblem, ValueError) as e:
        raise argparse.ArgumentTypeError(
            "%r is not a time (e.g. 10s, 1m): %s" % (text, getattr(e, "message", e))
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smx pmilter-server", usage=USAGE)
    p.add_argument("--socket", dest="socket")
    p.add_argument("-f", dest="config")
    p.add_argument("-N", dest="name")
    p.add_argument("-q", dest="queue")
    p.add_argument("--timeout", type=_parseTime)
    p.add_argument("--backlog", type=int, default=50)
    p.add_argument("--debug", type=int, default=0)
    p.add_argument("--log-file", dest="logFile")
    p.add_argument("--list", action="store_true")
    p.add_argument("plugins", nargs="*", metavar="PLUGIN")
    return p


class Setup:
    """
    What C{sm_pmfi_init} prepares: the plugins, their settings, the socket.
    """

    def __init__(
        self, plugins: List[Any], options: dict, socket: str, timeout: float
    ) -> None:
        self.plugins = plugins
        self.options = options
        self.socket = socket
        self.timeout = timeout


def prepare(options: argparse.Namespace) -> Setup:
    """
    Read the configuration and find the plugins.

    @raise SystemExit: with a one-line message for a user's mistake.
    """
    from smx.config import ConfigError, SectionNotFound
    from smx.pmilter.host import pmilterName
    from smx.pmilter.plugins import (
        UnknownPolicyMilter,
        findPolicyMilters,
        lookupPolicyMilter,
        pluginOptions,
    )
    from smx.scripts.qmgrctl import loadToolConfiguration

    if not options.plugins:
        raise SystemExit("no PLUGIN given (usage: %s)" % (USAGE,))
    queue = options.queue
    if queue is None and options.config:
        queue = os.path.dirname(os.path.abspath(options.config))
    try:
        cfg = loadToolConfiguration(options.config, queue)
        smtps = cfg.section("smtps", options.name)
    except (ConfigError, SectionNotFound) as e:
        raise SystemExit(str(e))
    section = smtps.section("pmilter")
    found = findPolicyMilters()
    plugins = []
    settings = {}
    for name in options.plugins:
        try:
            plugin = lookupPolicyMilter(name, found)
        except UnknownPolicyMilter as e:
            raise SystemExit(str(e))
        plugins.append(plugin)
        settings[pmilterName(plugin)] = pluginOptions(section, pmilterName(plugin))
    socket = options.socket or section["socket"]
    if not socket:
        raise SystemExit(
            "no socket: give --socket PATH or socket in the pmilter section of "
            "the configuration"
        )
    timeout = options.timeout if options.timeout is not None else section["timeout"]
    return Setup(plugins, settings, os.path.abspath(socket), timeout)


def run(argv: List[str], stdout: Optional[TextIO] = None) -> int:
    out = sys.stdout if stdout is None else stdout
    try:
        options = parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if options.list:
        from smx.pmilter.plugins import findPolicyMilters

        for name, plugin in sorted(findPolicyMilters().items()):
            out.write("%-12s %s\n" % (name, type(plugin).__module__))
        return 0
    try:
        setup = prepare(options)
    except SystemExit as e:
        sys.stderr.write("smx pmilter-server: %s\n" % (e.code,))
        return 2
    return serve(setup, options)


def serve(setup: Setup, options: argparse.Namespace) -> int:
    """
    C{sm_pmfi_start}: negotiate, listen, serve until SIGTERM or SIGINT.
    """
    from twisted.internet import error, reactor

    from smx.log import DEFAULT_LEVEL, FileSink, Logger, reopenAll
    from smx.pmilter.host import PolicyMilterHost, pmilterName
    from smx.pmilter.server import (
        PolicyMilterServerFactory,
        SocketInUse,
        listenPolicyMilter,
    )

    try:
        sink = FileSink(options.logFile or "/dev/stderr", "pmilter")
    except OSError as e:
        sys.stderr.write(
            "smx pmilter-server: cannot open the log file %s: %s\n"
            % (options.logFile, e.strerror)
        )
        return 2
    log = Logger("pmilter", DEFAULT_LEVEL + max(0, options.debug), sink)
    status = {"code": 0}
    state = {}  # type: dict

    def fail(code: int, message: str) -> None:
        sys.stderr.write("smx pmilter-server: %s\n" % (message,))
        status["code"] = code
        if reactor.running:  # type: ignore[attr-defined]
            reactor.stop()  # type: ignore[attr-defined]

    def start() -> None:
        # a trial negotiation, so that a plugin that cannot work is
        # reported now and not at the first SMTP session
        trial = PolicyMilterHost(
            setup.plugins, reactor, setup.timeout, log=log, options=setup.options
        )
        d = trial.negotiate()
        d.addCallback(lambda _: listen(trial))
        d.addErrback(lambda f: fail(2, f.getErrorMessage()))

    def listen(trial: PolicyMilterHost) -> None:
        broken = [a for a in trial.attachments if a.state != "up"]
        if broken:
            fail(
                2,
                "; ".join(
                    "%s: %s" % (a.name, a.error or "cannot be negotiated")
                    for a in broken
                ),
            )
            return
        factory = PolicyMilterServerFactory(
            setup.plugins, reactor, setup.timeout, log, setup.options
        )
        try:
            state["port"] = listenPolicyMilter(
                reactor, setup.socket, factory, options.backlog
            )
        except (SocketInUse, error.CannotListenError, OSError) as e:
            fail(1, "cannot listen on %s: %s" % (setup.socket, e))
            return
        state["factory"] = factory
        log.notice(
            pmilter="+".join(pmilterName(p) for p in setup.plugins),
            socket=setup.socket,
            status="listening",
            timeout=setup.timeout,
        )

    def stop(signum: int, frame: Any) -> None:
        reactor.callFromThread(_stop)  # type: ignore[attr-defined]

    def _stop() -> None:
        port = state.pop("port", None)
        if port is not None:
            # the port removes the socket file
            port.stopListening()
            state["factory"].closeAll()
            log.notice(socket=setup.socket, status="stopped")
        if reactor.running:  # type: ignore[attr-defined]
            reactor.callLater(0, reactor.stop)  # type: ignore[attr-defined]

    def reload(signum: int, frame: Any) -> None:
        def _reload() -> None:
            from smx.pmilter.host import reloadPolicyMilters

            reloadPolicyMilters(setup.plugins, log)

        reactor.callFromThread(_reload)  # type: ignore[attr-defined]

    def installSignals() -> None:
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGUSR1, reload)
        signal.signal(signal.SIGUSR2, lambda s, f: reopenAll())

    reactor.callWhenRunning(installSignals)  # type: ignore[attr-defined]
    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    sink.close()
    return status["code"]
