# -*- test-case-name: smx.test.test_tools,smx.test.test_integration_e2e -*-
"""
NAME
    smx qmgrctl - query and control the queue manager (seed §6.6.3)

SYNOPSIS
    smx qmgrctl [-f smx.conf] [-q queuedir] [-S socket] [--json] [-r]
                [status|processes|flush|hold|release|delete [ID [RECIPIENT]]]

DESCRIPTION
    Without a command, shows the status of QMGR: queue sizes, AQ use, the
    connection limits in force, rates.  C{status} is the health check for
    systemd and monitoring: exit status 0 and one line when QMGR answers,
    DEFEDB is open and the queue disk has C{min_disk_space}; else exit
    status 1 and the reason on one line (standard error).  C{-r} (or
    C{reload}) reloads the maps (SMAR's and the conf map) and SMTPS's
    certificates (doc/tls.md); if a section's certificates cannot be
    read, it keeps its old ones and the exit status is 1.  C{flush}
    retries deferred recipients now (all, or of one transaction; a flush
    of all also ends the suspension of the next hops that could not be
    reached, shown as C{suspended=SECONDS} under C{destinations}),
    C{hold}/C{release} stop and restart delivery of a transaction or one
    recipient (by index or address), C{delete} removes them without a
    bounce.

    In split mode (a configuration whose sections set C{path}, seed
    §5.3) C{processes} shows each process the MCP runs: its service,
    number, user, pid, state and restarts (as C{smx mcpctl status});
    the status without a command shows them after QMGR's; and the
    health check C{status} also fails when the MCP cannot be reached or
    a process that should run is not running (named with its state).

    The control socket is C{control_socket} of the qmgr section, relative
    to the main queue directory (seed §5.6): C{-q}, else the current
    directory, as for C{twistd smx}.  C{-S} names the socket directly.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional, Tuple

COMMANDS = ("status", "processes", "flush", "hold", "release", "delete", "reload")


def loadToolConfiguration(
    configFile: Optional[str], queueDirectory: Optional[str] = None
) -> Any:
    """
    The configuration a queue tool works with: C{-f FILE}, else the
    C{smx.conf} in the queue directory (where C{twistd smx} and C{make run}
    keep it), else the built-in defaults.

    @raise ConfigError: for a bad file.
    """
    import os

    from smx.config import defaultConfiguration, loadConfiguration

    if not configFile:
        candidate = os.path.join(queueDirectory or os.getcwd(), "smx.conf")
        if os.path.isfile(candidate):
            configFile = candidate
    if configFile:
        return loadConfiguration(configFile, queueDirectory=queueDirectory)
    return defaultConfiguration(queueDirectory=queueDirectory)


def controlSocketPath(
    configFile: Optional[str],
    socket: Optional[str],
    queueDirectory: Optional[str] = None,
) -> str:
    """
    @param queueDirectory: the main queue directory (default: the current
        directory).
    @return: the control socket from C{-S}, else from the configuration.
    @raise SystemExit: with a one-line message on a bad configuration.
    """
    if socket:
        return socket
    from smx.config import ConfigError

    try:
        cfg = loadToolConfiguration(configFile, queueDirectory)
    except ConfigError as e:
        raise SystemExit("smx qmgrctl: %s" % (e,))
    return cfg.section("qmgr")["control_socket"]


def _run(path: str, command: str, args: List[str], prog: str = "smx qmgrctl") -> Any:
    from twisted.internet import reactor

    from smx.queue.control import callControl

    out = {}  # type: dict

    def done(result):
        out["result"] = result

    def failed(failure):
        out["error"] = failure

    d = callControl(
        reactor,
        path,
        command,
        args[0] if args else None,
        args[1] if len(args) > 1 else None,
    )
    d.addCallbacks(done, failed)
    d.addBoth(lambda _: reactor.callLater(0, reactor.stop))
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]
    if "error" in out:
        f = out["error"]
        from twisted.protocols.amp import RemoteAmpError

        if f.check(RemoteAmpError):
            raise SystemExit("%s: %s" % (prog, f.value.description))
        raise SystemExit(
            "%s: cannot talk to QMGR at %s: %s" % (prog, path, f.getErrorMessage())
        )
    return out.get("result")


def _formatValue(value: Any) -> str:
    """
    One value of the status: a number, a flag, or a group of them printed
    as C{name=value} pairs (C{(none)} when empty).
    """
    if isinstance(value, dict):
        if not value:
            return "(none)"
        return " ".join("%s=%s" % (k, _formatValue(value[k])) for k in sorted(value))
    if isinstance(value, float):
        return "%.3f" % (value,)
    return str(value)


def formatStatus(status: dict) -> str:
    """
    The status of QMGR as text: one value per line, groups (limits,
    destinations, recipients by state) indented under their name.
    """
    lines = []
    for key in sorted(status):
        value = status[key]
        if isinstance(value, dict):
            lines.append("%s:%s" % (key, "" if value else " (none)"))
            for k in sorted(value):
                lines.append("    %-30s %s" % (k, _formatValue(value[k])))
        else:
            lines.append("%-34s %s" % (key, _formatValue(value)))
    return "\n".join(lines) + "\n"


def healthProblem(
    status: dict, disk: Optional[Tuple[str, int, int]] = None
) -> Optional[str]:
    """
    Why QMGR is not healthy, for C{smx qmgrctl status} (systemd,
    monitoring): the queue disk below C{min_disk_space} (as QMGR last saw
    it, or as measured now), DEFEDB closed.

    @param status: the status of QMGR (L{smx.queue.control.Status}).
    @param disk: C{(directory, free bytes, min_disk_space)} of the
        fullest queue file system, or C{None}.
    @return: one line, or C{None} when all is well.
    """
    problems = []
    if disk is not None and disk[1] < disk[2]:
        problems.append(
            "queue disk below min_disk_space: %d KB free in %s, %d KB needed"
            % (disk[1] // 1024, disk[0], disk[2] // 1024)
        )
    elif status.get("diskShort"):
        problems.append("queue disk below min_disk_space, new mail is refused")
    if not status.get("defedb", True):
        problems.append("DEFEDB is not open")
    return "; ".join(problems) or None


def mcpProcesses(
    configFile: Optional[str], queueDirectory: Optional[str]
) -> Optional[List[Dict[str, Any]]]:
    """
    The processes of the MCP, in split mode.

    @return: the processes (as C{smx mcpctl status --json} gives them), or
        C{None} when the configuration is not for split mode.
    @raise SystemExit: with a one-line message when the configuration is
        bad or the MCP cannot be reached.
    """
    from smx.config import ConfigError
    from smx.mcp.control import ask
    from smx.mcp.settings import isSplitConfiguration

    try:
        cfg = loadToolConfiguration(configFile, queueDirectory)
    except ConfigError as e:
        raise SystemExit("smx qmgrctl: %s" % (e,))
    if not isSplitConfiguration(cfg):
        return None
    path = cfg.globals["MCP_control_socket"]
    try:
        reply = ask(path, "status", timeout=10.0)
    except OSError as e:
        raise SystemExit(
            "smx qmgrctl: cannot reach the MCP at %s: %s" % (path, e.strerror or e)
        )
    except ValueError:
        raise SystemExit("smx qmgrctl: the MCP at %s gave no answer" % (path,))
    return list(reply.get("processes") or [])


def processProblem(processes: List[Dict[str, Any]]) -> Optional[str]:
    """
    The processes of the MCP that should run and do not (a
    C{nostartaccept} service runs only while it has a connection).

    @return: one line, or C{None} when all run.
    """
    down = [
        "%s/%s %s" % (p.get("name"), p.get("id", "-"), p.get("state"))
        for p in processes
        if p.get("type") != "nostartaccept" and p.get("state") != "running"
    ]
    if down:
        return "not running: " + ", ".join(down)
    return None


def queueDisk(
    configFile: Optional[str], queueDirectory: Optional[str]
) -> Optional[Tuple[str, int, int]]:
    """
    The free space of the queue's file systems (the queue directory and
    C{CDB_base_directory}) as QMGR measures it.

    @return: C{(directory, free bytes, min_disk_space)} of the one with
        the least free space, or C{None} if none can be measured.
    """
    import os

    from smx.config import ConfigError
    from smx.queue.diskspace import FLOOR
    from smx.queue.settings import QueueSettings

    try:
        settings = QueueSettings.fromConfiguration(
            loadToolConfiguration(configFile, queueDirectory)
        )
    except ConfigError:
        return None
    least = None  # type: Optional[Tuple[str, int, int]]
    for path in (settings.queueDirectory, settings.cdbDirectory):
        try:
            st = os.statvfs(path)
        except OSError:
            continue
        free = st.f_bavail * st.f_frsize
        if least is None or free < least[1]:
            least = (path, free, max(settings.minDiskSpace, FLOOR))
    return least


def run(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="smx qmgrctl")
    parser.add_argument("-f", dest="config", help="smx.conf")
    parser.add_argument(
        "-q", dest="queue", help="the main queue directory (default: current)"
    )
    parser.add_argument("-S", dest="socket", help="the control socket")
    parser.add_argument(
        "-r", dest="reload", action="store_true", help="reload maps and certificates"
    )
    parser.add_argument("--json", action="store_true", help="JSON output")
    parser.add_argument("command", nargs="?", default="status", choices=COMMANDS)
    parser.add_argument("args", nargs="*", help="transaction id, recipient")
    try:
        options = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    # "status" named: the health check (exit status and one line)
    check = options.command == "status" and "status" in argv
    command = "reload" if options.reload else options.command
    if command in ("hold", "release", "delete") and not options.args:
        sys.stderr.write("smx qmgrctl: %s needs a transaction id\n" % (command,))
        return 2
    if command in ("status", "processes", "reload") and options.args:
        sys.stderr.write(
            "smx qmgrctl: %s takes no argument (got %s)\n"
            % (command, " ".join(options.args))
        )
        return 2
    if command == "processes":
        return _processes(options)
    try:
        path = controlSocketPath(options.config, options.socket, options.queue)
        result = _run(path, command, options.args)
        processes = None
        if command == "status" and not options.socket:
            processes = mcpProcesses(options.config, options.queue)
    except SystemExit as e:
        sys.stderr.write("%s\n" % (e.code,))
        return 1
    if check and command == "status":
        disk = None if options.socket else queueDisk(options.config, options.queue)
        problem = healthProblem(result, disk)
        if processes is not None:
            down = processProblem(processes)
            problem = "; ".join(p for p in (problem, down) if p) or None
        if problem is not None:
            sys.stderr.write("smx qmgrctl: %s\n" % (problem,))
            return 1
    if options.json:
        if processes is not None:
            result = dict(result, processes=processes)
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    elif check and command == "status":
        sys.stdout.write(
            "smx: ok, %d transactions, %d sessions, up %ds\n"
            % (result["transactions"], result["sessions"], result["uptime"])
        )
    elif command == "status":
        from smx.scripts import mcpctl

        sys.stdout.write(formatStatus(result))
        if processes is not None:
            sys.stdout.write("\n" + mcpctl.formatStatus(processes))
    else:
        sys.stdout.write(
            " ".join("%s=%s" % (k, v) for k, v in sorted(result.items())) + "\n"
        )
    if command == "reload" and result.get("certificate_errors"):
        # an ACME client's deploy hook must see it
        sys.stderr.write(
            "smx qmgrctl: the certificates of %d smtps section(s) could not be "
            "reloaded; the old ones stay in use (see the log)\n"
            % (result["certificate_errors"],)
        )
        return 1
    return 0


def _processes(options: argparse.Namespace) -> int:
    """C{smx qmgrctl processes}: the MCP's processes (split mode)."""
    from smx.scripts import mcpctl

    try:
        processes = mcpProcesses(options.config, options.queue)
    except SystemExit as e:
        sys.stderr.write("%s\n" % (e.code,))
        return 1
    if processes is None:
        sys.stderr.write(
            "smx qmgrctl: processes: this configuration is for embedded mode "
            "(one process; no section sets path)\n"
        )
        return 1
    if options.json:
        sys.stdout.write(json.dumps(processes, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(mcpctl.formatStatus(processes))
    return 0
