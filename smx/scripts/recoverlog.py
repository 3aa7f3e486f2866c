# -*- test-case-name: smx.queue.test.test_integration_control -*-
"""
NAME
    smx recover-from-log - rebuild envelopes of CDB files from log records
    (seed §6.10.2)

SYNOPSIS
    smx recover-from-log [-f smx.conf] [--json] LOGFILE...

DESCRIPTION
    Lists every message in CDB (C{[0-9A-F]/S*}) and searches the SMTPS log
    records for its transaction id: C{ss_ta=ID, mail=<...>} gives the
    sender, C{ss_ta=ID, rcpt=<...>} the recipients.  Prints one envelope per
    message (text, or JSON with C{--json}) so that the messages can be
    resent; messages whose envelope is not in the logs are listed as such.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List

from smx.log import decodeValue


def parseLog(lines, wanted) -> Dict[str, dict]:
    """
    @return: transaction id -> C{{"sender": str, "recipients": [str]}}
        for the ids in C{wanted}.
    """
    found = {}  # type: Dict[str, dict]
    for line in lines:
        if "ss_ta=" not in line:
            continue
        fields = {}
        for part in line.strip().split(", "):
            name, sep, value = part.partition("=")
            if sep:
                fields[name.strip().rsplit(" ", 1)[-1]] = decodeValue(value)
        ta = fields.get("ss_ta") or ""
        if ta not in wanted:
            continue
        entry = found.setdefault(ta, {"sender": None, "recipients": []})
        if "mail" in fields:
            entry["sender"] = fields["mail"].strip("<>")
        if "rcpt" in fields:
            rcpt = fields["rcpt"].strip("<>")
            if rcpt not in entry["recipients"]:
                entry["recipients"].append(rcpt)
    return found


def run(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="smx recover-from-log")
    parser.add_argument("-f", dest="config", help="smx.conf")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("logs", nargs="+", help="log files of SMTPS")
    try:
        options = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    from smx.config import ConfigError, defaultConfiguration, loadConfiguration
    from smx.queue.qmgr import contentStoreFromConfiguration

    try:
        cfg = loadConfiguration(options.config) if options.config else None
    except ConfigError as e:
        sys.stderr.write("smx recover-from-log: %s\n" % (e,))
        return 1
    cfg = cfg or defaultConfiguration()
    cdb = contentStoreFromConfiguration(cfg, create=False)
    wanted = set(cdb.transactionIds())
    found = {}  # type: Dict[str, dict]
    for path in options.logs:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                for ta, entry in parseLog(f, wanted).items():
                    old = found.setdefault(ta, {"sender": None, "recipients": []})
                    old["sender"] = entry["sender"] or old["sender"]
                    for r in entry["recipients"]:
                        if r not in old["recipients"]:
                            old["recipients"].append(r)
        except OSError as e:
            sys.stderr.write("smx recover-from-log: %s: %s\n" % (path, e.strerror))
            return 1
    out = []
    for ta in sorted(wanted):
        got = found.get(ta)
        out.append(
            {
                "id": ta,
                "file": cdb.path(ta),
                "sender": got["sender"] if got else None,
                "recipients": got["recipients"] if got else [],
                "found": got is not None and got["sender"] is not None,
            }
        )
    if options.json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        for item in out:
            if item["found"]:
                sys.stdout.write(
                    "%s mail=<%s> rcpt=%s\n"
                    % (
                        item["file"],
                        item["sender"],
                        ",".join("<%s>" % r for r in item["recipients"]),
                    )
                )
            else:
                sys.stdout.write(
                    "%s envelope not found in the logs\n" % (item["file"],)
                )
    return 0
