# -*- test-case-name: smx.tlspolicy.test.test_tlsrpt -*-
"""
NAME
    smx tlsrpt - print the daily SMTP TLS reports (RFC 8460)

SYNOPSIS
    smx tlsrpt [-f smx.conf] [-q DIR] [--day YYYY-MM-DD] [--domain DOMAIN]
               [--list] [--send]

DESCRIPTION
    Prints the TLS reports of one UTC day (default: yesterday, the last
    complete day) as RFC 8460 section 4 describes them, built from the
    sessions SMTPC counted in C{tlsrpt_directory} of the C{smtpc}
    section (L{smx.tlspolicy.tlsrpt}): with C{--domain}, the report of
    that policy domain (a JSON object); without, a JSON array of the
    reports of every policy domain with sessions that day.  C{--list}
    prints the days that have counts, one a line.

    C{--send} sends each report to the C{rua=} URIs of its domain's
    C{_smtp._tls} TXT record (RFC 8460 sections 3 and 5): a C{mailto:}
    address gets a mail submitted to the local SMTPS (as C{smx
    sendmail} submits), an C{https:} URI an HTTPS POST of the gzipped
    report (the server's certificate checked against C{smtpc { tls {
    CAcert_file } }}, else the system's CAs); one line per URI says what
    happened.  Run it once a day (cron), after midnight UTC.

    The configuration is C{-f FILE}, else the C{smx.conf} of the queue
    directory C{-q} (default: the current directory), else the
    defaults.

EXIT STATUS
    0 when a report was printed (or C{--list}, or every report was sent
    or not asked for), 1 when there are no sessions of that domain on
    that day or a report could not be sent, 2 for a mistake in the
    command line or the configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List, Optional, TextIO


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
    parser.add_argument(
        "--send",
        action="store_true",
        help="send the reports to the rua= of the domains' _smtp._tls records",
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
    if options.send:
        if options.domain and not reports:
            err.write(
                "smx tlsrpt: no MTA-STS or DANE sessions of %s on %s\n"
                % (options.domain, day)
            )
            return 1
        try:
            return _send(cfg, settings, reports, out, err)
        except ValueError as e:
            err.write("smx tlsrpt: %s\n" % (e,))
            return 2
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


def _send(
    cfg: Any, settings: Any, reports: List[Dict[str, Any]], out: TextIO, err: TextIO
) -> int:
    """
    Send C{reports} (L{smx.tlspolicy.tlsrpt.sendReports}) with the global
    reactor, and say what became of each.

    @raise ValueError: if the CA files cannot be read.
    """
    from twisted.internet import defer, reactor

    from smx.log import Logger
    from smx.maps.dns import DNSResolver
    from smx.maps.settings import ResolverSettings
    from smx.tlspolicy.mtasts import MTASTSSettings, trustRootFromFiles
    from smx.tlspolicy.tlsrpt import poster, sendReports, submitter

    sts = MTASTSSettings.fromSection(cfg.section("smtpc"))
    trust = trustRootFromFiles(sts.caFile, sts.caPath)
    resolver = ResolverSettings.fromConfiguration(cfg)
    dns = DNSResolver(
        reactor,
        resolver.nameservers,
        resolver.dnsTimeout,
        resolver.dnsUseTCP,
        Logger("smar", 0),
    )
    done = []  # type: List[Any]

    def _start() -> None:
        d = defer.Deferred.fromCoroutine(
            sendReports(
                reports,
                settings,
                dns,
                submitter(cfg, settings),
                poster(reactor, dns, trust, sts.timeout),
                time.time(),
            )
        )
        d.addBoth(done.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(_start)
    reactor.run()
    dns.close()
    if not done or not isinstance(done[0], list):
        why = done[0].getErrorMessage() if done else "the reactor stopped"
        err.write("smx tlsrpt: sending the reports failed: %s\n" % (why,))
        return 1
    failed = 0
    for delivery in done[0]:
        out.write(
            "%s %s: %s (%s)\n"
            % (delivery.domain, delivery.uri or "-", delivery.outcome, delivery.text)
        )
        failed += delivery.outcome == "failed"
    return 1 if failed else 0
