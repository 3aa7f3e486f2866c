# -*- test-case-name: smx.scripts.test.test_programs -*-
"""
NAME
    smx-mcp, smx-qmgr, smx-smtps, smx-smtpc, smx-smar - the programs of
    split mode (seed §1.4, §6.1)

SYNOPSIS
    smx-mcp   [-f smx.conf] [-d queuedir] [-L logdir]
    smx-qmgr  [-f smx.conf] [-d queuedir] [-i ID] [-L logdir]
              [-C n] [-c n] [-O R=n] [-O 0=n] [-x c[-l][.n],...]
    smx-smtps [-f smx.conf] [-d queuedir] [-i ID] [-L logdir] [-N name]
              [-a] [-T] [-C address]...
    smx-smtpc [-f smx.conf] [-d queuedir] [-i ID] [-L logdir]
    smx-smar  [-f smx.conf] [-d queuedir] [-i ID] [-L logdir] [-U]

DESCRIPTION
    Each program runs one component of smx in split mode, with the
    arguments of the seed's programs: C{-f} the configuration file (seed
    §5), C{-i} the process number the MCP passes (C{pass_id}), C{-L} the
    log directory.  It is C{twistd -n --pidfile= smx --config FILE
    --component NAME} (L{smx.tap}); C{-d} is the main queue directory
    (default: the current directory, where the MCP starts its services).
    The other options are those of the seed's programs, as C{twistd smx}
    takes them (doc/program-options.md): SMTPS C{-a}, C{-T}, C{-C
    address}; SMAR C{-U}; QMGR C{-C}, C{-c}, C{-O}, C{-x}.

    C{smx-mcp} is the main control program: as root it binds the sockets
    of the services and starts, watches and restarts them
    (L{smx.mcp.supervisor}); C{-L DIR} sends each service's output to
    C{DIR/NAME.log}.  A component program writes its log to standard
    output, or with C{-L DIR} to C{DIR/NAME.log} (C{DIR/NAMEID.log} with
    C{-i ID}).

SECURITY
    Every program but C{smx-mcp} refuses to run as root: exit status 64
    (EX_USAGE) and one line (seed §6.6.1).  Use C{smx runas USER
    PROGRAM ...} to start one by hand.

DIAGNOSTICS
    A bad argument: one line and exit status 64.  A bad configuration
    (or a file others can write, seed §9.2): one line per problem naming
    file, line and option, exit status 78 (EX_CONFIG, which the MCP and
    the systemd unit do not restart).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import List, Optional

from smx.mcp.settings import EX_CONFIG, EX_USAGE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write("%s: %s\n" % (self.prog, message))
        raise SystemExit(EX_USAGE)


def _number(value: str) -> str:
    if not value.isdigit():
        raise argparse.ArgumentTypeError("takes a number, not %r" % (value,))
    return value


def _limit(value: str) -> str:
    key, sep, number = value.partition("=")
    if not sep or key not in ("R", "0") or not number.isdigit():
        raise argparse.ArgumentTypeError("takes R=n or 0=n, not %r" % (value,))
    return value


def parser(component: str) -> argparse.ArgumentParser:
    """
    The command line of C{smx-COMPONENT}.
    """
    p = _Parser(
        prog="smx-" + component,
        description="run the %s of smx in split mode (doc/split.md)" % (component,),
    )
    p.add_argument("-f", dest="config", metavar="FILE", help="configuration file")
    p.add_argument(
        "-d", dest="queue", metavar="DIR", help="main queue directory (default: .)"
    )
    p.add_argument(
        "-L",
        dest="logdir",
        metavar="DIR",
        help="log directory"
        + (" of the services" if component == "mcp" else " (DIR/NAME[ID].log)"),
    )
    if component != "mcp":
        p.add_argument(
            "-i", dest="id", metavar="ID", type=int, help="process number (pass_id)"
        )
    if component == "smtps":
        p.add_argument(
            "-N", dest="name", metavar="NAME", help="run the smtps section NAME"
        )
        p.add_argument("-a", action="store_true", help="use the access map")
        p.add_argument("-T", action="store_true", help="relay to lmtp: domains")
        p.add_argument(
            "-C",
            dest="relay",
            metavar="ADDRESS",
            action="append",
            default=[],
            help="allow relaying from this client (repeatable)",
        )
    if component == "smar":
        p.add_argument("-U", action="store_true", help="DNS over TCP")
    if component == "qmgr":
        p.add_argument(
            "-C", dest="max", metavar="N", type=_number, help="smtpc_max_connections"
        )
        p.add_argument(
            "-c",
            dest="initial",
            metavar="N",
            type=_number,
            help="smtpc_initial_connections",
        )
        p.add_argument(
            "-O",
            dest="limits",
            type=_limit,
            metavar="R=N|0=N",
            action="append",
            default=[],
            help="smtps_max_connection_rate (R), smtps_max_open_connections (0)",
        )
        p.add_argument(
            "-x",
            dest="debug",
            metavar="SPEC",
            action="append",
            default=[],
            help="debug categories c[-l][.n],... (App. E)",
        )
    return p


def twistdArguments(component: str, argv: List[str]) -> List[str]:
    """
    The C{twistd} command line that runs C{smx-COMPONENT argv}.

    @raise SystemExit: with C{EX_USAGE} for a bad argument.
    """
    args = parser(component).parse_args(argv)
    out = ["twistd", "-n", "--pidfile="]
    if component != "mcp" and args.logdir:
        number = "" if args.id is None else str(args.id)
        out += [
            "--logfile",
            os.path.join(args.logdir, "%s%s.log" % (component, number)),
        ]
    out += ["smx", "--component", component]
    if args.config:
        out += ["--config", args.config]
    if args.queue:
        out += ["--queue-directory", args.queue]
    if component == "mcp" and args.logdir:
        out += ["--log-directory", args.logdir]
    if component != "mcp" and args.id is not None:
        out += ["--id", str(args.id)]
    # the options of the seed's programs (doc/program-options.md)
    if component == "smtps":
        words = ["-N", args.name] if args.name else []
        words += ["-a"] * args.a + ["-T"] * args.T
        for address in args.relay:
            words += ["-C", address]
        if words:
            out += ["--smtps-options", " ".join(shlex.quote(w) for w in words)]
    if component == "smar" and args.U:
        out += ["--smar-options", "-U"]
    if component == "qmgr":
        if args.max is not None:
            out += ["--max-connections", args.max]
        if args.initial is not None:
            out += ["--initial-connections", args.initial]
        for limit in args.limits:
            out += ["-O", limit]
        for spec in args.debug:
            out += ["--qmgr-options", "-x " + shlex.quote(spec)]
    return out


def run(component: str, argv: Optional[List[str]] = None) -> int:
    """
    Run C{smx-COMPONENT} with C{argv} (default: C{sys.argv[1:]}).
    """
    from smx.mcp.run import refuseRoot

    if argv is None:
        argv = sys.argv[1:]
    try:
        # first, so that --help works as root too
        arguments = twistdArguments(component, argv)
    except SystemExit as e:
        return int(e.code or 0)
    if component != "mcp":
        try:
            refuseRoot("smx-" + component)
        except SystemExit as e:
            return int(e.code or 0)
    from twisted.python import usage
    from twisted.scripts.twistd import ServerOptions, runApp

    sys.argv = arguments
    from smx import tap

    # a configuration problem is reported as smx-NAME's
    tap.Options.programName = "smx-" + component
    options = ServerOptions()
    try:
        options.parseOptions(arguments[1:])
    except usage.error as e:
        # twistd would print its whole usage text before the one line
        # that matters, and exit 1 (which the MCP and systemd restart)
        for line in str(e).splitlines():
            sys.stderr.write("smx-%s: %s\n" % (component, line))
        return EX_CONFIG
    try:
        runApp(options)
    except SystemExit as e:
        if isinstance(e.code, str):
            sys.stderr.write(e.code + "\n")
            return 1
        return int(e.code or 0)
    return 0


def mcp() -> None:
    """C{smx-mcp}"""
    sys.exit(run("mcp"))


def qmgr() -> None:
    """C{smx-qmgr}"""
    sys.exit(run("qmgr"))


def smtps() -> None:
    """C{smx-smtps}"""
    sys.exit(run("smtps"))


def smtpc() -> None:
    """C{smx-smtpc}"""
    sys.exit(run("smtpc"))


def smar() -> None:
    """C{smx-smar}"""
    sys.exit(run("smar"))
