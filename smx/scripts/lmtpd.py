# -*- test-case-name: smx.mail.test.test_lmtpd -*-
"""
NAME
    smx lmtpd - a small LMTP server delivering into Maildirs

SYNOPSIS
    smx lmtpd --socket PATH --maildir BASE [--hostname NAME]

DESCRIPTION
    Runs L{smx.mail.lmtpd.LMTPDeliveryService} until interrupted: mail
    for C{user@domain} received over LMTP on the Unix socket PATH lands in
    C{BASE/user/Maildir/new/}.  Point SMTPC's C{LMTP_socket} at PATH.

DIAGNOSTICS
    A bad option or a socket that cannot be created is one line on
    standard error and exit status 2 or 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional


def parseArguments(argv: List[str]) -> Optional[argparse.Namespace]:
    """
    @return: the parsed options, or C{None} after a usage error was
        printed.
    """
    parser = argparse.ArgumentParser(
        prog="smx lmtpd",
        description="an LMTP server delivering into Maildirs",
    )
    parser.add_argument("--socket", required=True, help="Unix socket to listen on")
    parser.add_argument(
        "--maildir", required=True, help="base directory: BASE/user/Maildir"
    )
    parser.add_argument("--hostname", default=None, help="name in the greeting")
    try:
        return parser.parse_args(argv)
    except SystemExit:
        return None


def _override(section: Any, name: str, value: str) -> None:
    """
    Set an option from the command line: C{value} as it is, not as
    smx.conf text (a path may hold spaces or quotes).
    """
    section.override(name, section.spec.option(name).type.render(value))


def run(argv: List[str], reactor=None) -> int:
    """
    Run the LMTP server with the reactor until it stops.

    @return: the exit status.
    """
    options = parseArguments(argv)
    if options is None:
        return 2
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    from twisted.python import log

    from smx.config import ConfigError, defaultConfiguration
    from smx.mail.lmtpd import LMTPDeliveryService, LMTPServerSettings

    # the options of an lmtpd section with the table's defaults, the
    # command line's overriding them
    cfg = defaultConfiguration()
    section = cfg.section("lmtpd")
    try:
        _override(section, "socket", options.socket)
        _override(section, "maildir_base", options.maildir)
        if options.hostname is not None:
            _override(cfg.globals, "hostname", options.hostname)
    except ConfigError as e:
        sys.stderr.write("smx lmtpd: %s\n" % (e,))
        return 2
    service = LMTPDeliveryService(LMTPServerSettings.fromSection(section), reactor)
    try:
        service.startService()
    except Exception as e:
        sys.stderr.write("smx lmtpd: cannot listen on %s: %s\n" % (options.socket, e))
        return 1
    log.startLogging(sys.stdout)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    # started by the MCP (doc/split.md), which passes SIGUSR1 (reopen the
    # maps) and SIGUSR2 (rewind the logs) on to smx's components: lmtpd
    # has no maps, and the MCP rewinds the log file it gave it; without
    # this their default action would end it
    import signal

    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)
    reactor.run()
    return 0
