# -*- test-case-name: smx.split.test.test_integration_split -*-
"""
NAME
    smx.split.run - run one component of split mode in the foreground

SYNOPSIS
    python -m smx.split.run [-d QUEUEDIR] -f smx.conf -c COMPONENT [-i ID]
                            [--fd N]

DESCRIPTION
    Loads the configuration as C{twistd smx} does (L{smx.tap.Options}),
    builds the component with
    L{smx.split.service.makeComponentService} and runs it until SIGTERM.
    It is the smallest way to start a component by hand or from a test;
    the installed programs (C{smx-qmgr}, ..., C{twistd -n smx --component
    NAME}) are the MCP's (L{smx.mcp}).  C{--fd} is a listening TCP socket
    SMTPS serves instead of binding its addresses.

DIAGNOSTICS
    A configuration error or a component that cannot be built is one line
    on standard error and exit status 1; a socket that cannot be listened
    on likewise.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smx.split.run")
    parser.add_argument("-f", "--config", required=True)
    parser.add_argument("-d", "--queue-directory")
    parser.add_argument(
        "-c", "--component", required=True, choices=("qmgr", "smtps", "smtpc", "smar")
    )
    parser.add_argument("-i", "--id", type=int)
    parser.add_argument("--fd", type=int)
    args = parser.parse_args(argv)

    from twisted.python import usage

    from smx.components import ComponentError
    from smx.split.service import makeComponentService
    from smx.tap import Options, describeStartupError

    options = Options()
    optionArgs = ["--config", args.config]
    if args.queue_directory:
        optionArgs += ["--queue-directory", args.queue_directory]
    try:
        options.parseOptions(optionArgs)
    except usage.UsageError as e:
        sys.stderr.write("smx %s: %s\n" % (args.component, e))
        return 1
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    try:
        root = makeComponentService(
            options.configuration, args.component, args.id, args.fd
        )
    except ComponentError as e:
        sys.stderr.write("smx %s: %s\n" % (args.component, e))
        return 1
    failed = []  # type: List[str]

    def start() -> None:
        try:
            root.privilegedStartService()
            root.startService()
        except Exception as e:
            failed.append(describeStartupError(e))
            reactor.stop()  # type: ignore[attr-defined]

    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger(  # type: ignore[attr-defined]
        "before", "shutdown", root.stopService
    )
    reactor.run()  # type: ignore[attr-defined]
    if failed:
        sys.stderr.write("smx %s: %s\n" % (args.component, failed[0]))
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
