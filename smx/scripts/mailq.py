# -*- test-case-name: smx.queue.test.test_integration_control -*-
"""
NAME
    smx mailq - show the mail queue (seed §6.6.2)

SYNOPSIS
    smx mailq [-f smx.conf] [-q queuedir] [-S socket] [--json] [--offline]

DESCRIPTION
    Asks the running QMGR over its control socket; when QMGR cannot be
    asked (or with C{--offline}) reads IBDB, DEFEDB and CDB directly, as
    recovery would, but never changing them: DEFEDB's database files are
    opened read-only on their own, without joining or recovering the
    environment, so what is shown of DEFEDB is what its last checkpoint
    (or QMGR's stop) wrote (seed §6.6.2); a recipient IBDB says was
    deferred that is not there yet is shown as deferred.  This is safe
    while QMGR runs (a recovery then would destroy the environment under
    it); whether it runs is told by the lock it holds on C{qmgr.pid}
    (L{smx.queue.lockfile}), and said on standard error.  The text output looks like sendmail's C{mailq}: one
    block per transaction with its id, size, arrival time and sender, then
    the recipients with their state and last reply.  C{--json} prints a
    list of transactions, each with C{id}, C{sender}, C{size},
    C{received}, the DSN C{ret} and C{envid} (RFC 3461, C{null} when not
    given), C{requiretls} (RFC 8689, a boolean), C{recipients} (C{index}, C{address}, C{state}, C{tries},
    C{nextTry}, C{reply}, the DSN C{notify} and C{orcpt}).  The text
    output shows the DSN parameters given (decoded) and REQUIRETLS under
    the sender, and the DSN parameters under each recipient.

    The queue is in the main queue directory (seed §5.6): C{-q}, else the
    current directory, as for C{twistd smx}.

DIAGNOSTICS
    When QMGR cannot be reached, a line on standard error says so before
    the files are read (and whether QMGR runs nevertheless).  A directory without a queue (no C{ibdb}) is an
    error (exit status 1), not an empty queue.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, List


def readOffline(cfg: Any) -> List[dict]:
    """
    Read the queue from the files of a configuration (QMGR not running).
    """
    from smx.queue.defedb import DefedbError, readCheckpointed
    from smx.queue.qmgr import contentStoreFromConfiguration
    from smx.queue.recovery import recoverQueue
    from smx.queue.settings import QueueSettings

    settings = QueueSettings.fromConfiguration(cfg)
    problems = []  # type: List[str]
    cdb = contentStoreFromConfiguration(cfg, create=False)
    defedb = None  # type: Any
    if os.path.isdir(settings.defedbDirectory):
        try:
            defedb = readCheckpointed(settings.defedbDirectory, problems.append)
        except DefedbError as e:
            problems.append("%s; showing what IBDB has" % (e,))
    result = recoverQueue(
        os.path.join(settings.queueDirectory, "ibdb"),
        defedb,
        cdb,
        problems.append,
        defedbComplete=False,
    )
    for p in problems:
        sys.stderr.write("smx mailq: %s\n" % (p,))
    return [ta.describe() for _, ta in sorted(result.transactions.items())]


def formatQueue(entries: List[dict]) -> str:
    if not entries:
        return "Mail queue is empty\n"
    lines = ["%-20s %8s %-16s %s" % ("Queue ID", "Size", "Arrival", "Sender")]
    for ta in entries:
        arrival = time.strftime(
            "%a %b %d %H:%M", time.localtime(ta.get("received") or 0)
        )
        lines.append(
            "%-20s %8d %-16s <%s>"
            % (ta["id"], ta.get("size") or 0, arrival, ta.get("sender", ""))
        )
        dsn = [
            "%s=%s" % (name.upper(), ta[name])
            for name in ("ret", "envid")
            if ta.get(name)
        ]
        if ta.get("requiretls"):
            dsn.append("REQUIRETLS")
        if dsn:
            lines.append("%40s%s" % ("", " ".join(dsn)))
        for r in ta.get("recipients", []):
            if r.get("reply"):
                lines.append("      (%s)" % (r["reply"],))
            lines.append("%40s<%s> %s" % ("", r["address"], r["state"]))
            dsn = [
                "%s=%s" % (name.upper(), r[name])
                for name in ("notify", "orcpt")
                if r.get(name)
            ]
            if dsn:
                lines.append("%40s  %s" % ("", " ".join(dsn)))
    lines.append("\tTotal requests: %d" % (len(entries),))
    return "\n".join(lines) + "\n"


def run(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="smx mailq")
    parser.add_argument("-f", dest="config", help="smx.conf")
    parser.add_argument(
        "-q", dest="queue", help="the main queue directory (default: current)"
    )
    parser.add_argument("-S", dest="socket", help="the control socket")
    parser.add_argument("--json", action="store_true", help="JSON output")
    parser.add_argument(
        "--offline", action="store_true", help="read the files, not QMGR"
    )
    try:
        options = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    from smx.config import ConfigError
    from smx.scripts.qmgrctl import loadToolConfiguration

    try:
        cfg = loadToolConfiguration(options.config, options.queue)
    except ConfigError as e:
        sys.stderr.write("smx mailq: %s\n" % (e,))
        return 1
    path = options.socket or cfg.section("qmgr")["control_socket"]
    entries = None
    if not options.offline:
        from smx.scripts.qmgrctl import _run

        try:
            entries = _run(path, "list", [], prog="smx mailq")
        except SystemExit as e:
            from smx.queue.lockfile import runningQueueManager

            pid = runningQueueManager(cfg.queueDirectory)
            running = ""
            if pid is not None:
                running = " (QMGR%s runs; DEFEDB as last checkpointed)" % (
                    " pid %d" % (pid,) if pid else "",
                )
            sys.stderr.write("%s; reading the queue files%s\n" % (e.code, running))
            entries = None
    if entries is None:
        ibdb = os.path.join(cfg.queueDirectory, "ibdb")
        if not os.path.isdir(ibdb):
            sys.stderr.write(
                "smx mailq: no queue in %s (no directory %s); run in the"
                " queue directory or give -q DIR\n" % (cfg.queueDirectory, ibdb)
            )
            return 1
        try:
            entries = readOffline(cfg)
        except OSError as e:
            sys.stderr.write(
                "smx mailq: cannot read the queue files: %s%s%s\n"
                % (
                    "%s: " % (e.filename,) if e.filename else "",
                    e.strerror or e,
                    (
                        " (the queue is for smx's user and root)"
                        if isinstance(e, PermissionError)
                        else ""
                    ),
                )
            )
            return 1
    if options.json:
        sys.stdout.write(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(formatQueue(entries))
    return 0
