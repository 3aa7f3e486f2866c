# -*- test-case-name: smx.mcp.test.test_run -*-
"""
NAME
    smx.mcp.run - which program C{twistd smx} runs: embedded, the MCP or
    one component of split mode

SYNOPSIS
    twistd -n smx --config smx.conf                       # as root, §5.3 form: MCP
    twistd -n smx --config smx.conf --component mcp [-L logdir]
    twistd -n smx --config smx.conf --component qmgr [-i ID]

DESCRIPTION
    L{splitService} decides for L{smx.tap.makeService}: with
    C{--component NAME}, that program; without it, the MCP when smx runs
    as root with a configuration whose sections set C{path} and
    C{arguments} (the §5.3 form, L{smx.mcp.settings.isSplitConfiguration});
    else C{None}: embedded smx, as before.

    A component program (C{qmgr}, C{smtps}, C{smtpc}, C{smar}) is built
    by C{smx.split.service.makeComponentService}.  An SMTPS whose section
    says C{mcp_type = pass} first fetches the listening socket from the
    MCP over C{pass_fd_socket}.

SECURITY
    Every program but the MCP refuses to run as root (seed §6.6.1): it
    exits with C{EX_USAGE} (64) and one line; C{smx runas USER ...} runs
    it as another user.

DIAGNOSTICS
    A bad service (a program that is not there, an unknown user, a
    socket directory of the wrong owner, a port in use) is one line that
    names the section and option, and the exit status C{EX_CONFIG} (78);
    nothing has been started.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, Optional

from twisted.application import service

from smx.config import ConfigError
from smx.mcp.settings import (
    EX_CONFIG,
    EX_USAGE,
    isSplitConfiguration,
    servicesFromConfiguration,
)
from smx.mcp.sockets import ListenError

#: exit status of a temporary failure (sysexits.h): the MCP restarts it
EX_TEMPFAIL = 75
#: the components of split mode (their programs are smx-NAME)
COMPONENTS = ("qmgr", "smtps", "smtpc", "smar")
#: every program C{--component} takes
PROGRAMS = ("mcp",) + COMPONENTS


def refuseRoot(program: str) -> None:
    """
    End a component program started as root (seed §6.6.1).

    @raise SystemExit: with C{EX_USAGE}.
    """
    if os.geteuid() == 0:
        sys.stderr.write(
            "%s: refusing to run as root (seed §6.6.1); the MCP starts it as "
            "its user, or use: smx runas USER %s ...\n" % (program, program)
        )
        raise SystemExit(EX_USAGE)


def refuseSecondMCP(path: str) -> None:
    """
    Refuse to start a second MCP on the same queue directory: it would
    replace the sockets of the running one (its control socket, the
    C{pass_fd_socket}s) and its components those of the running
    components (C{SMAR_socket}, ...), and the running system would lose
    them at its next restart.  An MCP runs there when its control socket
    answers; a socket left by one that was killed does not.

    @raise ConfigError: naming the socket.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(5)
    try:
        probe.connect(path)
    except OSError:
        return
    finally:
        probe.close()
    raise ConfigError(
        "another MCP runs on this queue directory: its control socket %s "
        "(MCP_control_socket) answers; stop it first (smx mcpctl -S %s shows "
        "its processes)" % (path, path)
    )


def mcpService(
    configuration: Any,
    logDirectory: Optional[str] = None,
    reactor: Any = None,
    installSignals: bool = True,
) -> service.MultiService:
    """
    The MCP for a split configuration, its sockets bound: a
    L{MultiService} of the L{ProcessSupervisor} and its control socket.

    @raise ConfigError: for a bad service.
    @raise ListenError: for a socket that cannot be bound.
    """
    from smx.mcp.control import ControlService
    from smx.mcp.supervisor import ProcessSupervisor

    services = servicesFromConfiguration(configuration)
    if logDirectory is not None and not os.path.isdir(logDirectory):
        raise ConfigError(
            "-L %s: not a directory (the log directory of the services)"
            % (logDirectory,)
        )
    root = service.MultiService()
    supervisor = ProcessSupervisor(
        services,
        reactor,
        queueDirectory=configuration.queueDirectory,
        logDirectory=logDirectory,
        installSignals=installSignals,
    )
    path = configuration.globals["MCP_control_socket"]
    refuseSecondMCP(path)
    control = ControlService(supervisor, path, reactor)
    from smx.metricsgather import gatherService

    # the metrics of every process on one endpoint (metrics { address })
    gather = gatherService(configuration, supervisor)
    # the control socket last: it goes first when the MCP stops
    supervisor.bindAll()
    supervisor.setServiceParent(root)
    control.setServiceParent(root)
    if gather is not None:
        gather.setServiceParent(root)
    root.supervisor = supervisor  # type: ignore[attr-defined]
    return root


def splitService(options: Any) -> Optional[service.IService]:
    """
    The service C{twistd smx} runs in split mode, or C{None} for
    embedded mode.

    @param options: the parsed L{smx.tap.Options}.
    @raise SystemExit: on a problem, with one line on standard error.
    """
    component = options.get("component")
    configuration = options.configuration
    if component is None:
        if not isSplitConfiguration(configuration):
            return None
        if os.geteuid() != 0:
            sys.stderr.write(
                "smx: the configuration is for split mode, but the MCP runs only "
                "as root: running embedded, in one process (doc/split.md)\n"
            )
            return None
        component = "mcp"
    component = component.lower()
    if component not in PROGRAMS:
        sys.stderr.write(
            "smx: --component takes one of %s, not %r\n"
            % (", ".join(PROGRAMS), component)
        )
        raise SystemExit(EX_USAGE)
    if component == "mcp":
        try:
            return mcpService(configuration, options.get("log-directory"))
        except (ConfigError, ListenError) as e:
            sys.stderr.write("smx mcp: %s\n" % (e,))
            raise SystemExit(EX_CONFIG)
    refuseRoot("smx-" + component)
    listeningFd = None
    from smx.mcp.supervisor import PROCESS_NUMBER

    # -i (pass_id), else the number the MCP gives one of several processes
    number = options.get("id")
    if number is None:
        number = os.environ.get(PROCESS_NUMBER)
    try:
        instanceId = int(number) if number is not None else None
    except ValueError:
        sys.stderr.write("smx-%s: -i takes a number, not %r\n" % (component, number))
        raise SystemExit(EX_USAGE)
    if component == "smtps":
        listeningFd = _passedSocket(configuration)
    from smx.components import ComponentError
    from smx.split.service import makeComponentService
    from smx.tap import useQuietLog

    try:
        root = makeComponentService(
            configuration, component, instanceId=instanceId, listeningFd=listeningFd
        )
    except (ConfigError, ComponentError) as e:
        sys.stderr.write("smx-%s: %s\n" % (component, e))
        raise SystemExit(EX_CONFIG)
    # as embedded smx: a socket it cannot listen on is one line, exit 1
    root.exitOnStartupError = True  # type: ignore[attr-defined]
    useQuietLog(root, getattr(options, "parent", None))
    return root


def _passedSocket(configuration: Any) -> Optional[int]:
    """
    The listening socket of an SMTPS whose section says C{mcp_type =
    pass}, fetched from the MCP; C{None} for another SMTPS.
    """
    from smx.config.componentoptions import selectedSMTPS
    from smx.mcp.sockets import receiveListeningSocket

    from smx.mcp.supervisor import SERVICE_NAME

    names = selectedSMTPS(configuration)
    sections = configuration.sections("smtps")
    started = os.environ.get(SERVICE_NAME)
    if not names and started:
        # started by the MCP for a named smtps section, without -N: run
        # that section, with its socket
        named = [s for s in sections if s.name is not None and s.name == started]
        if named:
            configuration.smtpsNames = [started]
            names = [started]
    if names:
        sections = [s for s in sections if s.name in names]
    for section in sections:
        if section["mcp_type"] == "pass" and section["pass_fd_socket"]:
            try:
                return receiveListeningSocket(section["pass_fd_socket"])
            except OSError as e:
                sys.stderr.write(
                    "smx-smtps: cannot get the listening socket from the MCP "
                    "over %s (option 'pass_fd_socket' in %s): %s\n"
                    % (section["pass_fd_socket"], section.describe(), e)
                )
                raise SystemExit(EX_TEMPFAIL)
    return None
