# -*- test-case-name: smx.mcp.test.test_control -*-
"""
NAME
    smx mcpctl - show and control the processes of the MCP (split mode)

SYNOPSIS
    smx mcpctl [-f smx.conf] [-d queuedir] [-S socket] [--json]
               [status | restart NAME | stop NAME]

DESCRIPTION
    Asks the MCP over its control socket (C{MCP_control_socket} of the
    global section, relative to the main queue directory: C{-d}, else
    the current directory; C{-S} names it directly).  C{status} (the
    default) shows each process: its service, number, user, pid, state,
    restarts and how it last ended.  C{restart NAME} restarts a service
    with its C{restartdependencies} (also one the MCP left stopped after
    C{EX_USAGE} or C{EX_CONFIG}); C{stop NAME} stops it until the next
    restart.  See L{smx.mcp.control}.

DIAGNOSTICS
    The MCP cannot be reached or refuses the command: one line on
    standard error, exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List


def formatStatus(processes: List[Dict[str, Any]]) -> str:
    """
    The table C{smx mcpctl status} prints.
    """
    rows = [("SERVICE", "ID", "USER", "PID", "STATE", "RESTARTS", "LAST")]
    for p in processes:
        rows.append(
            (
                str(p["name"]),
                str(p.get("id", "-")),
                str(p.get("user", "-")),
                "-" if p["pid"] is None else str(p["pid"]),
                str(p["state"]),
                str(p["restarts"]),
                p.get("last_status") or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] + "\n"
        for r in rows
    )


def run(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="smx mcpctl")
    p.add_argument("-f", dest="config", metavar="FILE", help="configuration file")
    p.add_argument("-d", dest="queue", metavar="DIR", help="main queue directory")
    p.add_argument("-S", dest="socket", metavar="PATH", help="the control socket")
    p.add_argument("--json", action="store_true", help="print the reply as JSON")
    p.add_argument("command", nargs="*", help="status | restart NAME | stop NAME")
    args = p.parse_args(argv)
    path = args.socket
    if path is None:
        from smx.config import ConfigError
        from smx.scripts.qmgrctl import loadToolConfiguration

        try:
            cfg = loadToolConfiguration(args.config, args.queue)
        except ConfigError as e:
            sys.stderr.write("smx mcpctl: %s\n" % (e,))
            return 1
        path = cfg.globals["MCP_control_socket"]
    from smx.mcp.control import ask

    command = " ".join(args.command) or "status"
    try:
        reply = ask(path, command)
    except OSError as e:
        sys.stderr.write(
            "smx mcpctl: cannot reach the MCP at %s: %s\n" % (path, e.strerror or e)
        )
        return 1
    except ValueError:
        sys.stderr.write("smx mcpctl: the MCP at %s gave no answer\n" % (path,))
        return 1
    if args.json:
        sys.stdout.write(json.dumps(reply, indent=2, sort_keys=True) + "\n")
    elif "error" in reply:
        pass
    elif "processes" in reply:
        sys.stdout.write(formatStatus(reply["processes"]))
    else:
        sys.stdout.write("%s\n" % (reply.get("ok"),))
    if "error" in reply:
        sys.stderr.write("smx mcpctl: %s\n" % (reply["error"],))
        return 1
    return 0
