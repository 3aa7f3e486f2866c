# -*- test-case-name: smx.pmilter.test.test_greylist -*-
"""
NAME
    smx greylist - list and change the database of the greylist pmilter

SYNOPSIS
    smx greylist [-f smx.conf] [-q DIR] [-N NAME] [--database FILE] list [--json]
    smx greylist ... remove NETWORK SENDER RECIPIENT
    smx greylist ... remove ENTRY
    smx greylist ... whitelist ENTRY...
    smx greylist ... expire

DESCRIPTION
    C{list} prints every triplet (client network, sender, recipient) with
    its state (C{pending}: refused, waiting for a retry; C{passed};
    C{expired}: to be removed), the time of its first and last attempt
    (UTC) and the number of attempts, then the whitelist.

    C{remove NETWORK SENDER RECIPIENT} removes triplets; C{*} matches
    anything, C{<>} is the null sender (C{remove 192.0.2.0/24 '*' '*'}).
    C{remove ENTRY} removes a whitelist entry.

    C{whitelist ENTRY...} adds entries that are never greylisted: a client
    address or network (C{192.0.2.0/24}, C{cltaddr:2001:db8::/32}), a
    sender (C{user@example.com}, C{from:@example.com}, C{from:@.example.com}
    for subdomains too) or a recipient (C{to:postmaster@example.org},
    C{to:@example.org}).

    C{expire} removes the triplets that expired (the pmilter does it once
    an hour).

    The database is C{database} of C{smtps [NAME] { pmilter { greylist
    { ... } } }} in smx.conf (C{-f}, else the smx.conf of the queue
    directory C{-q} or the current directory), or C{--database}.  It may be
    changed while smx runs.

EXIT STATUS
    0 on success, 1 if the database cannot be used, 2 for a mistake in
    the command line or the configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, List, Optional, TextIO

from smx.pmilter.greylistdb import GreylistDatabase, Policy

COMMANDS = ("list", "remove", "whitelist", "expire")


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _settings(options: argparse.Namespace) -> dict:
    """
    The greylist settings from the configuration.

    @raise SystemExit: a bad configuration.
    """
    import os

    from smx.config import ConfigError, SectionNotFound
    from smx.pmilter.plugins import pluginOptions
    from smx.scripts.qmgrctl import loadToolConfiguration

    queue = options.queue
    if queue is None and options.config:
        queue = os.path.dirname(os.path.abspath(options.config))
    try:
        cfg = loadToolConfiguration(options.config, queue)
        section = cfg.section("smtps", options.name).section("pmilter")
    except (ConfigError, SectionNotFound) as e:
        raise SystemExit(str(e))
    return pluginOptions(section, "greylist")


def run(
    argv: List[str],
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
    now: Optional[float] = None,
) -> int:
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    p = argparse.ArgumentParser(prog="smx greylist")
    p.add_argument("-f", dest="config")
    p.add_argument("-q", dest="queue")
    p.add_argument("-N", dest="name")
    p.add_argument("--database")
    p.add_argument("--json", action="store_true")
    p.add_argument("command", choices=COMMANDS)
    p.add_argument("args", nargs="*")
    try:
        options = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        settings = _settings(options)
    except SystemExit as e:
        err.write("smx greylist: %s\n" % (e.code,))
        return 2
    database = GreylistDatabase(options.database or settings["database"])
    policy = Policy(settings["delay"], settings["retry_window"], settings["lifetime"])
    now = time.time() if now is None else now
    try:
        return _command(options, database, policy, now, out, err)
    except ValueError as e:
        err.write("smx greylist: %s\n" % (e,))
        return 2
    except Exception as e:
        err.write("smx greylist: %s: %s\n" % (database.path, e))
        return 1


def _command(
    options: argparse.Namespace,
    database: GreylistDatabase,
    policy: Policy,
    now: float,
    out: TextIO,
    err: TextIO,
) -> int:
    command, args = options.command, options.args
    if command == "list":
        if args:
            raise ValueError("list takes no arguments")
        entries = database.entries()
        if options.json:
            out.write(json.dumps(_present(entries, policy, now), indent=2) + "\n")
            return 0
        for kind, fields, record in entries:
            if kind == "triplet" and record is not None:
                network, sender, recipient = fields
                out.write(
                    "%-8s %-20s <%s> <%s> first=%s last=%s count=%d\n"
                    % (
                        _state(record, policy, now),
                        network,
                        sender,
                        recipient,
                        _stamp(record.first),
                        _stamp(record.last),
                        record.count,
                    )
                )
        for kind, fields, _ in entries:
            if kind == "whitelist":
                out.write("whitelist %s:%s\n" % fields)
        return 0
    if command == "whitelist":
        if not args:
            raise ValueError("whitelist needs at least one ENTRY")
        parsed = [database.whitelist(a) for a in args]
        for kind, value in parsed:
            out.write("whitelisted %s:%s\n" % (kind, value))
        return 0
    if command == "remove":
        removed = database.remove(*args)
        out.write("removed %d\n" % (removed,))
        return 0
    if args:
        raise ValueError("expire takes no arguments")
    out.write("expired %d\n" % (database.expire(now, policy),))
    return 0


def _state(record: Any, policy: Policy, now: float) -> str:
    if record.expired(now, policy):
        return "expired"
    return "passed" if record.passed else "pending"


def _present(entries: Any, policy: Policy, now: float) -> List[dict]:
    out = []
    for kind, fields, record in entries:
        if kind == "triplet" and record is not None:
            out.append(
                {
                    "network": fields[0],
                    "sender": fields[1],
                    "recipient": fields[2],
                    "state": _state(record, policy, now),
                    "first": record.first,
                    "last": record.last,
                    "count": record.count,
                }
            )
        elif kind == "whitelist":
            out.append({"whitelist": "%s:%s" % fields})
    return out
