# -*- test-case-name: smx.tlspolicy.test.test_tlsrpt -*-
"""
Tests of L{smx.tlspolicy.tlsrpt} and C{smx tlsrpt}
(L{smx.scripts.tlsrpt}): the sessions counted from SMTPC's log records,
the day files, and the RFC 8460 report.
"""

from __future__ import annotations

import calendar
import io
import json
import os
import subprocess
import sys

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smx.config import defaultConfiguration
from smx.log import Logger, MemorySink
from smx.scripts import main as smxmain
from smx.scripts.tlsrpt import run
from smx.tlspolicy.mtasts import CachedPolicy, PolicyCache, parsePolicy
from smx.tlspolicy.policy import FAILED_RECORD, OK_RECORD
from smx.tlspolicy.tlsrpt import (
    KEEP_DAYS,
    RecordError,
    ReportService,
    ReportSettings,
    SessionRecorder,
    checkDay,
    dailyReports,
    mailtoAddress,
    parseReportingRecord,
    readDay,
    reportService,
    stsPolicyReader,
)

POLICY = (
    "version: STSv1\nmode: enforce\nmx: mx.remote.test\n"
    "mx: *.backup.remote.test\nmax_age: 86400\n"
)
DAY = "2026-11-30"
NOON = calendar.timegm((2026, 11, 30, 12, 0, 0))


def ok(log: Logger, domain: str, policy: str = "mta-sts", mx="mx.remote.test"):
    """The record SMTPC writes for a session that met its policy."""
    log.info(
        func=OK_RECORD,
        da_sess="C0001",
        domain=domain,
        policy_domain=domain,
        mx=mx,
        ip="127.0.0.2",
        policy=policy,
        testing=0,
    )


def failed(
    log: Logger,
    domain: str,
    resultType: str,
    policy: str = "mta-sts",
    mx="mx.remote.test",
    ip="127.0.0.2",
    reason="the certificate is not valid for mx.remote.test",
):
    """The record SMTPC writes for a policy not met."""
    log.warn(
        FAILED_RECORD,
        da_sess="C0002",
        domain=domain,
        policy_domain=domain,
        mx=mx,
        ip=ip,
        policy=policy,
        result_type=resultType,
        testing=0,
        reason=reason,
    )


class RecorderTests(SynchronousTestCase):
    """
    L{SessionRecorder} as the observer of the log records.
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.mkdir(self.dir)
        self.directory = os.path.join(self.dir, "tlsrpt")
        self.stsCache = os.path.join(self.dir, "mta-sts.json")
        cache = PolicyCache(self.stsCache, Logger("smtpc", 0, MemorySink()))
        cache.put(
            "remote.test", CachedPolicy("1", NOON, parsePolicy(POLICY)), NOON - 10
        )
        self.clock = Clock()
        self.clock.advance(NOON)
        self.sink = MemorySink()
        self.log = Logger("smtpc", 14, self.sink)
        self.recorder = SessionRecorder(
            self.directory, self.clock, self.log, stsPolicyReader(self.stsCache)
        )
        self.addCleanup(self.recorder.close)
        self.service = ReportService(self.recorder)
        self.service.startService()
        self.addCleanup(self.stopService)
        self.settings = ReportSettings(
            True, self.directory, "", "", "smx.example", self.stsCache
        )

    def stopService(self):
        if self.service.running:
            self.service.stopService()

    def test_counts(self):
        """
        Sessions of MTA-STS and DANE policies are counted per policy
        domain in the report of their day: successes, failures, and the
        failure details grouped by result type, MX and address; records
        of other policies and other records are not.
        """
        for _ in range(3):
            ok(self.log, "remote.test")
        failed(self.log, "remote.test", "certificate-host-mismatch")
        failed(self.log, "remote.test", "certificate-host-mismatch")
        failed(
            self.log,
            "remote.test",
            "starttls-not-supported",
            mx="mx2.backup.remote.test",
            ip="127.0.0.3",
            reason="no STARTTLS",
        )
        ok(self.log, "dane.test", policy="dane", mx="mx.dane.test")
        failed(self.log, "dane.test", "tlsa-invalid", policy="dane", mx="mx.dane.test")
        ok(self.log, "map.test", policy="verify")
        failed(self.log, "map.test", "certificate-not-trusted", policy="encrypt")
        self.log.info(stat=0, da_sess="C0003")
        reports = dailyReports(self.settings, DAY)
        self.assertEqual(
            [r["policies"][0]["policy"]["policy-domain"] for r in reports],
            ["dane.test", "remote.test"],
        )
        dane, sts = reports
        self.assertEqual(
            sts,
            {
                "organization-name": "smx.example",
                "date-range": {
                    "start-datetime": "2026-11-30T00:00:00Z",
                    "end-datetime": "2026-11-30T23:59:59Z",
                },
                "contact-info": "postmaster@smx.example",
                "report-id": "2026-11-30_remote.test@smx.example",
                "policies": [
                    {
                        "policy": {
                            "policy-type": "sts",
                            "policy-domain": "remote.test",
                            "policy-string": [
                                "version: STSv1",
                                "mode: enforce",
                                "mx: mx.remote.test",
                                "mx: *.backup.remote.test",
                                "max_age: 86400",
                            ],
                            "mx-host": ["mx.remote.test", "*.backup.remote.test"],
                        },
                        "summary": {
                            "total-successful-session-count": 3,
                            "total-failure-session-count": 3,
                        },
                        "failure-details": [
                            {
                                "result-type": "certificate-host-mismatch",
                                "receiving-mx-hostname": "mx.remote.test",
                                "receiving-ip": "127.0.0.2",
                                "failed-session-count": 2,
                                "failure-reason-code": "the certificate is not "
                                "valid for mx.remote.test",
                            },
                            {
                                "result-type": "starttls-not-supported",
                                "receiving-mx-hostname": "mx2.backup.remote.test",
                                "receiving-ip": "127.0.0.3",
                                "failed-session-count": 1,
                                "failure-reason-code": "no STARTTLS",
                            },
                        ],
                    }
                ],
            },
        )
        policy = dane["policies"][0]
        self.assertEqual(policy["policy"]["policy-type"], "tlsa")
        self.assertEqual(policy["policy"]["mx-host"], ["mx.dane.test"])
        self.assertEqual(
            policy["summary"],
            {"total-successful-session-count": 1, "total-failure-session-count": 1},
        )
        self.assertEqual(policy["failure-details"][0]["result-type"], "tlsa-invalid")

    def test_sendingAddress(self):
        """
        The local address of the session, when the record has it
        (C{local_ip=}), is the C{sending-mta-ip}.
        """
        self.log.warn(
            FAILED_RECORD,
            domain="remote.test",
            policy_domain="remote.test",
            mx="mx.remote.test",
            ip="127.0.0.2",
            local_ip="127.0.0.1",
            policy="mta-sts",
            result_type="certificate-expired",
        )
        (report,) = dailyReports(self.settings, DAY)
        detail = report["policies"][0]["failure-details"][0]
        self.assertEqual(detail["sending-mta-ip"], "127.0.0.1")

    def test_oneDomain(self):
        """
        C{domain}: only that policy domain's report.
        """
        ok(self.log, "remote.test")
        ok(self.log, "dane.test", policy="dane")
        reports = dailyReports(self.settings, DAY, "Remote.Test.")
        self.assertEqual(
            [r["report-id"] for r in reports], ["2026-11-30_remote.test@smx.example"]
        )
        self.assertEqual(dailyReports(self.settings, DAY, "other.test"), [])

    def test_days(self):
        """
        Each UTC day has its own file and its own report.
        """
        ok(self.log, "remote.test")
        self.clock.advance(12 * 3600)
        ok(self.log, "remote.test")
        ok(self.log, "remote.test")
        self.assertEqual(
            sorted(os.listdir(self.directory)),
            ["2026-11-30.jsonl", "2026-12-01.jsonl"],
        )
        (report,) = dailyReports(self.settings, "2026-12-01")
        self.assertEqual(
            report["policies"][0]["summary"]["total-successful-session-count"], 2
        )
        self.assertIn("policy-string", report["policies"][0]["policy"])

    def test_oldFilesRemoved(self):
        """
        Day files older than L{KEEP_DAYS} days are removed when a new day
        begins.
        """
        ok(self.log, "remote.test")
        self.clock.advance((KEEP_DAYS + 1) * 86400)
        ok(self.log, "remote.test")
        self.assertEqual(os.listdir(self.directory), ["2027-01-02.jsonl"])

    def test_cutLine(self):
        """
        A line cut short (the process was killed in the middle of a
        write) is skipped; the sessions before it and after it count.
        """
        ok(self.log, "remote.test")
        with open(os.path.join(self.directory, DAY + ".jsonl"), "ab") as f:
            f.write(b'{"d":"remote.test","p":"st')
        ok(self.log, "remote.test")
        ok(self.log, "remote.test")
        (report,) = dailyReports(self.settings, DAY)
        # the line after the cut one is glued to it and lost: at most one
        self.assertEqual(
            report["policies"][0]["summary"]["total-successful-session-count"], 2
        )

    def test_survivesRestart(self):
        """
        Counts are in the file at once: a new recorder (smx restarted,
        or killed) appends to them.
        """
        ok(self.log, "remote.test")
        self.service.stopService()
        recorder = SessionRecorder(self.directory, self.clock, self.log, None)
        self.addCleanup(recorder.close)
        Logger.observer = recorder.observe
        self.addCleanup(setattr, Logger, "observer", None)
        failed(self.log, "remote.test", "certificate-expired")
        (report,) = dailyReports(self.settings, DAY)
        self.assertEqual(
            report["policies"][0]["summary"],
            {"total-successful-session-count": 1, "total-failure-session-count": 1},
        )

    def test_unwritable(self):
        """
        A directory that cannot be made is reported once a day; the
        records go on being written and nothing raises.
        """
        with open(os.path.join(self.dir, "file"), "w"):
            pass
        recorder = SessionRecorder(
            os.path.join(self.dir, "file", "sub"), self.clock, self.log, None
        )
        recorder.observe(
            self.log, {"func": OK_RECORD, "policy": "dane", "domain": "a.test"}
        )
        recorder.observe(
            self.log, {"func": OK_RECORD, "policy": "dane", "domain": "a.test"}
        )
        errors = [l for l in self.sink.lines() if "func=SessionRecorder" in l]
        self.assertEqual(len(errors), 1)

    def test_serviceKeepsPreviousObserver(self):
        """
        While it runs, the service sees every record before the observer
        that was there (the metrics); stopped, it puts that one back.
        """
        self.service.stopService()
        seen = []
        Logger.observer = lambda logger, fields: seen.append(fields)
        self.addCleanup(setattr, Logger, "observer", None)
        self.service.startService()
        ok(self.log, "remote.test")
        self.assertEqual(len(seen), 1)
        self.service.stopService()
        self.assertEqual(len(list(readDay(self.directory, DAY))), 2)
        self.assertIsNotNone(Logger.observer)
        ok(self.log, "remote.test")
        self.assertEqual(len(seen), 2)
        self.assertEqual(len(list(readDay(self.directory, DAY))), 2)

    def test_checkDay(self):
        """
        L{checkDay} takes C{YYYY-MM-DD} days only.
        """
        self.assertEqual(checkDay("2026-02-28"), "2026-02-28")
        for bad in ["2026-02-30", "2026-2-1", "yesterday", "../../etc", "2026-02-28x"]:
            self.assertRaises(ValueError, checkDay, bad)


class ConfigurationTests(SynchronousTestCase):
    """
    The options of the C{smtpc} section.
    """

    def test_defaults(self):
        """
        By default sessions are counted in C{tlsrpt} under the queue
        directory; the report is signed by the hostname.
        """
        cfg = defaultConfiguration(queueDirectory="/var/spool/smx")
        settings = ReportSettings.fromSection(cfg.section("smtpc"))
        self.assertTrue(settings.enabled)
        self.assertEqual(settings.directory, "/var/spool/smx/tlsrpt")
        self.assertEqual(settings.stsCache, "/var/spool/smx/mta-sts.json")
        self.assertEqual(settings.organizationName, settings.hostname)
        self.assertIsNotNone(reportService(cfg, Clock()))

    def test_disabled(self):
        """
        C{tlsrpt = no}: no service.
        """
        path = self.mktemp()
        os.mkdir(path)
        with open(os.path.join(path, "smx.conf"), "w") as f:
            f.write("smtpc { tlsrpt = no; mta_sts = no; }\n")
        from smx.config import loadConfiguration

        cfg = loadConfiguration(os.path.join(path, "smx.conf"), queueDirectory=path)
        self.assertIsNone(reportService(cfg, Clock()))
        self.assertEqual(ReportSettings.fromSection(cfg.section("smtpc")).stsCache, "")


class ScriptTests(SynchronousTestCase):
    """
    C{smx tlsrpt}.
    """

    def setUp(self):
        self.queue = os.path.abspath(self.mktemp())
        os.mkdir(self.queue)
        with open(os.path.join(self.queue, "smx.conf"), "w") as f:
            f.write(
                'hostname = "mta.example";\n'
                'smtpc { tlsrpt_organization = "Example Inc.";\n'
                '  tlsrpt_contact = "tls-reports@example"; }\n'
            )
        clock = Clock()
        clock.advance(NOON)
        log = Logger("smtpc", 14, MemorySink())
        recorder = SessionRecorder(os.path.join(self.queue, "tlsrpt"), clock, log, None)
        self.addCleanup(recorder.close)
        Logger.observer = recorder.observe
        self.addCleanup(setattr, Logger, "observer", None)
        ok(log, "remote.test")
        failed(log, "remote.test", "certificate-not-trusted")
        ok(log, "dane.test", policy="dane")

    def run_(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        status = run(["-q", self.queue] + list(argv), out, err)
        return status, out.getvalue(), err.getvalue()

    def test_domain(self):
        """
        C{--day --domain}: the report of that domain as a JSON object,
        with the organization and contact of the configuration.
        """
        status, out, err = self.run_("--day", DAY, "--domain", "remote.test")
        self.assertEqual((status, err), (0, ""))
        report = json.loads(out)
        self.assertEqual(
            sorted(report),
            [
                "contact-info",
                "date-range",
                "organization-name",
                "policies",
                "report-id",
            ],
        )
        self.assertEqual(report["organization-name"], "Example Inc.")
        self.assertEqual(report["contact-info"], "tls-reports@example")
        self.assertEqual(report["report-id"], "2026-11-30_remote.test@mta.example")
        (policy,) = report["policies"]
        self.assertEqual(policy["policy"]["policy-type"], "sts")
        self.assertEqual(
            policy["summary"],
            {"total-successful-session-count": 1, "total-failure-session-count": 1},
        )
        self.assertEqual(
            policy["failure-details"][0]["result-type"], "certificate-not-trusted"
        )

    def test_all(self):
        """
        Without C{--domain}: a JSON array of every domain's report.
        """
        status, out, err = self.run_("--day", DAY)
        self.assertEqual(status, 0)
        self.assertEqual(
            [r["report-id"].split("_")[1] for r in json.loads(out)],
            ["dane.test@mta.example", "remote.test@mta.example"],
        )

    def test_noSessions(self):
        """
        A domain without sessions that day: exit status 1 and why.
        """
        status, out, err = self.run_("--day", "2026-11-29", "--domain", "remote.test")
        self.assertEqual(status, 1)
        self.assertIn("no MTA-STS or DANE sessions of remote.test on 2026-11-29", err)
        status, out, err = self.run_("--day", "2026-11-29")
        self.assertEqual((status, json.loads(out)), (0, []))

    def test_badDay(self):
        """
        A day that is not C{YYYY-MM-DD}: exit status 2, one line.
        """
        status, out, err = self.run_("--day", "30.11.2026")
        self.assertEqual(status, 2)
        self.assertEqual(
            err, "smx tlsrpt: --day: '30.11.2026' is not a day (YYYY-MM-DD)\n"
        )

    def test_list(self):
        """
        C{--list}: the days that have counts.
        """
        self.assertEqual(self.run_("--list")[:2], (0, DAY + "\n"))

    def test_badConfiguration(self):
        """
        A bad configuration: exit status 2 and the file's problem.
        """
        with open(os.path.join(self.queue, "smx.conf"), "w") as f:
            f.write("smtpc { tlsrpt = maybe; }\n")
        status, out, err = self.run_("--day", DAY)
        self.assertEqual(status, 2)
        self.assertIn("tlsrpt", err)

    def test_command(self):
        """
        C{smx tlsrpt} is a command of C{smx}, and runs as a program.
        """
        self.assertIn("tlsrpt", smxmain.COMMANDS)
        result = subprocess.run(
            [sys.executable, "-m", "smx.scripts.main", "tlsrpt", "-q", self.queue]
            + ["--day", DAY, "--domain", "dane.test"],
            capture_output=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        report = json.loads(result.stdout)
        self.assertEqual(report["policies"][0]["policy"]["policy-type"], "tlsa")


class AssemblyTests(SynchronousTestCase):
    """
    The service as L{smx.components.assemble} starts it: after the
    metrics service, in one parent.
    """

    def test_withMetrics(self):
        """
        Started after the metrics service, the report service counts the
        policy sessions and the metrics still count every record;
        stopped, no observer is left.
        """
        from twisted.application import service
        from twisted.internet.testing import MemoryReactorClock

        from smx.metrics import MetricsRecorder, MetricsService

        directory = os.path.abspath(self.mktemp())
        clock = MemoryReactorClock()
        clock.advance(NOON)
        parent = service.MultiService()
        metrics = MetricsRecorder(clock)
        MetricsService(clock, "127.0.0.1", 0, metrics).setServiceParent(parent)
        recorder = SessionRecorder(directory, clock, Logger("smtpc", 0), None)
        ReportService(recorder).setServiceParent(parent)
        parent.startService()
        log = Logger("smar", 0, MemorySink())
        log.debug(14, dns_query="_mta-sts.remote.test", type="TXT")
        ok(log, "remote.test")
        parent.stopService()
        self.assertIsNone(Logger.observer)
        self.assertEqual(metrics.counters["smx_dns_queries_total"], {("TXT",): 1})
        self.assertEqual(len(list(readDay(directory, DAY))), 1)


class ReportingRecordTests(SynchronousTestCase):
    """
    L{parseReportingRecord} and L{mailtoAddress}: where reports go
    (RFC 8460 section 3).
    """

    def test_rua(self):
        """
        The C{rua} URIs of the one C{v=TLSRPTv1} record.
        """
        self.assertEqual(
            parseReportingRecord(
                ["v=spf1 -all", "v=TLSRPTv1; rua=mailto:a@x.test , https://r.test/x;"]
            ),
            ["mailto:a@x.test", "https://r.test/x"],
        )
        self.assertEqual(
            parseReportingRecord(["v=TLSRPTv1;rua=mailto:a@x.test"]),
            ["mailto:a@x.test"],
        )
        self.assertEqual(parseReportingRecord(["v=TLSRPTv10; rua=mailto:a@b"]), [])

    def test_bad(self):
        """
        Several records, no C{rua}, an empty URI or a field without C{=}
        make the record unusable.
        """
        for texts in [
            ["v=TLSRPTv1; rua=mailto:a@b", "v=TLSRPTv1; rua=mailto:c@d"],
            ["v=TLSRPTv1"],
            ["v=TLSRPTv1; rua=mailto:a@b,"],
            ["v=TLSRPTv1; junk"],
        ]:
            self.assertRaises(RecordError, parseReportingRecord, texts)

    def test_mailto(self):
        """
        A C{mailto:} URI's address (percent-decoded, without a query).
        """
        self.assertEqual(
            mailtoAddress("mailto:tls%2Brpt@x.test?subject=x"), "tls+rpt@x.test"
        )
        self.assertEqual(mailtoAddress("MAILTO:a@b.test"), "a@b.test")
        for bad in [
            "https://x.test/",
            "mailto:",
            "mailto:nobody",
            "mailto:a b@c",
            "mailto:a@b%0D%0A",
        ]:
            self.assertIsNone(mailtoAddress(bad), bad)
