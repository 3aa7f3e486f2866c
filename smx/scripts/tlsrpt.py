# -*- test-case-name: smx.tlspolicy.test.test_tlsrpt -*-
"""
NAME
    smx tlsrpt - print the daily SMTP TLS reports (RFC 8460)

SYNOPSIS
    smx tlsrpt [-f smx.conf] [-q DIR] [--day YYYY-MM-DD] [--domain DOMAIN]
               [--list]

DESCRIPTION
    Prints the TLS reports of one UTC day (default: yesterday, the last
    complete day) as RFC 8460 section 4 describes them, built from the
    sessions SMTPC counted in C{tlsrpt_directory} of the C{smtpc}
    section (L{smx.tlspolicy.tlsrpt}): with C{--domain}, the report of
    that policy domain (a JSON object); without, a JSON array of the
    reports of every policy domain with sessions that day.  C{--list}
    prints the days that have counts, one a line.

    The configuration is C{-f FILE}, else the C{smx.conf} of the queue
    directory C{-q} (default: the current directory), else the
    defaults.

EXIT STATUS
    0 when a report was printed (or C{--list}), 1 when there are no
    sessions of that domain on that day, 2 for a mistake in the command
    line or the configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional, TextIO


def run(
    argv: List[str], out: Optional[TextIO] = None, err: Optional[TextIO] = None
) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    parser = argparse.ArgumentParser(
        prog="smx tlsrpt", description="print the daily TLS reports (RFC 8460)"
    )
    parser.add_argument("-f", dest="config", help="smx.conf")
    parser.add_argument(
        "-q", dest="queue", help="the main queue directory (default: current)"
    )
    parser.add_argument("--day", help="the UTC day YYYY-MM-DD (default: yesterday)")
    parser.add_argument("--domain", help="only the report of this policy domain")
    parser.add_argument(
        "--list", action="store_true", help="list the days that have counts"
    )
    try:
        options = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    from smx.config import ConfigError
    from smx.scripts.qmgrctl import loadToolConfiguration
    from smx.tlspolicy.tlsrpt import ReportSettings, checkDay, dailyReports, dayFiles

    try:
        cfg = loadToolConfiguration(options.config, options.queue)
        settings = ReportSettings.fromSection(cfg.section("smtpc"))
    except ConfigError as e:
        err.write("smx tlsrpt: %s\n" % (e,))
        return 2
    if options.list:
        for day, _ in dayFiles(settings.directory):
            out.write(day + "\n")
        return 0
    day = options.day or time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    try:
        checkDay(day)
    except ValueError as e:
        err.write("smx tlsrpt: --day: %s\n" % (e,))
        return 2
    reports = dailyReports(settings, day, options.domain)
    if options.domain:
        if not reports:
            err.write(
                "smx tlsrpt: no MTA-STS or DANE sessions of %s on %s\n"
                % (options.domain, day)
            )
            return 1
        out.write(json.dumps(reports[0], indent=2) + "\n")
    else:
        out.write(json.dumps(reports, indent=2) + "\n")
    return 0
