# -*- test-case-name: smx.tlspolicy.test.test_integration_tlsrpt -*-
"""
Integration tests of sending TLS reports (L{smx.tlspolicy.tlsrpt},
C{smx tlsrpt --send}): the C{_smtp._tls} records come from a Twisted
Names server on 127.0.0.1, reports by mail go to an ESMTP server on
127.0.0.1 (the local SMTPS as C{smx sendmail} submits to it), reports by
HTTPS to a twisted.web server with a certificate of a CA made at test
time (trustme); C{smx tlsrpt} runs as a program.
"""

from __future__ import annotations

import calendar
import email
import gzip
import json
import os
import sys
from typing import Any, Dict, List

import trustme
from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

from smx.config import loadConfiguration
from smx.log import Logger, MemorySink
from smx.maps.dns import DNSResolver
from smx.maps.test.dnsserver import startDNSServer
from smx.test.mta import runCommand
from smx.tlspolicy.mtasts import trustRootFromFiles
from smx.tlspolicy.policy import FAILED_RECORD, OK_RECORD
from smx.tlspolicy.test.mtastsserver import startPolicyServer
from smx.tlspolicy.test.test_integration_mtasts_delivery import _Receiver
from smx.tlspolicy.tlsrpt import (
    ReportSettings,
    SessionRecorder,
    dailyReports,
    poster,
    sendReports,
    submitter,
)

DAY = "2026-11-30"
NOON = float(calendar.timegm((2026, 11, 30, 12, 0, 0)))


class _NoonClock:
    def seconds(self) -> float:
        return NOON


class SendTests(TestCase):
    """
    Reports sent to the C{rua} of the domains' C{_smtp._tls} records.
    """

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.mkdir(self.dir)
        self.ca = trustme.CA()
        self.caFile = os.path.join(self.dir, "ca.pem")
        self.ca.cert_pem.write_to_path(self.caFile)
        self.https = startPolicyServer(self.ca, ["tlsrpt.remote.test"])
        self.addCleanup(self.https.stop)
        self.dnsPort, stop = startDNSServer(
            {
                "_smtp._tls.remote.test": [
                    (
                        "TXT",
                        "v=TLSRPTv1; rua=mailto:tls-reports@remote.test,"
                        "https://tlsrpt.remote.test:%d/report" % (self.https.port,),
                    )
                ],
                "tlsrpt.remote.test": [("A", "127.0.0.1")],
                "_smtp._tls.quiet.test": [("TXT", "v=spf1 -all")],
                "_smtp._tls.bad.test": [("TXT", "v=TLSRPTv1; rua=")],
            }
        )
        self.addCleanup(stop)
        # the local SMTPS reports are submitted to
        factory = protocol.Factory.forProtocol(_Receiver)
        factory.connections = []  # type: ignore[attr-defined]
        factory.messages = []  # type: ignore[attr-defined]
        factory.commands = []  # type: ignore[attr-defined]
        factory.tlsOptions = None  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.smtps = factory
        self.smtpsPort = port.getHost().port
        self.queue = os.path.join(self.dir, "q")
        os.mkdir(self.queue)
        with open(os.path.join(self.queue, "smx.conf"), "w") as f:
            f.write(
                'hostname = "mta.example";\n'
                'pickup { submission_address = "127.0.0.1:%d"; }\n'
                'smar { nameserver = { "127.0.0.1:%d" }; }\n'
                'smtpc { tlsrpt_contact = "tls-admin@mta.example";\n'
                '  tls { CAcert_file = "%s"; } }\n'
                % (self.smtpsPort, self.dnsPort, self.caFile)
            )
        self.cfg = loadConfiguration(
            os.path.join(self.queue, "smx.conf"), queueDirectory=self.queue
        )
        self.settings = ReportSettings.fromSection(self.cfg.section("smtpc"))
        log = Logger("smtpc", 14, MemorySink())
        recorder = SessionRecorder(self.settings.directory, _NoonClock(), log, None)
        Logger.observer = recorder.observe
        self.addCleanup(setattr, Logger, "observer", None)
        self.addCleanup(recorder.close)
        for domain in ("remote.test", "quiet.test", "bad.test", "none.test"):
            log.info(func=OK_RECORD, domain=domain, policy_domain=domain, policy="dane")
        log.warn(
            FAILED_RECORD,
            domain="remote.test",
            policy_domain="remote.test",
            mx="mx.remote.test",
            policy="mta-sts",
            result_type="starttls-not-supported",
        )
        Logger.observer = None
        self.dns = DNSResolver(reactor, ["127.0.0.1:%d" % (self.dnsPort,)], 2.0, False)
        self.addCleanup(self.dns.close)

    @defer.inlineCallbacks
    def test_sendReports(self):
        """
        A domain with a TLSRPT record gets its report by mail (a
        C{multipart/report} with the gzipped JSON as
        C{application/tlsrpt+gzip}, RFC 8460 section 5.3) and by an HTTPS
        POST (section 5.4); domains without a record, or with a bad one,
        are skipped.
        """
        reports = dailyReports(self.settings, DAY)
        done = yield defer.Deferred.fromCoroutine(
            sendReports(
                reports,
                self.settings,
                self.dns,
                submitter(self.cfg, self.settings),
                poster(reactor, self.dns, trustRootFromFiles(self.caFile, None), 5.0),
                NOON + 86400,
            )
        )
        outcomes = {(d.domain, d.uri.split(":")[0], d.outcome) for d in done}
        self.assertEqual(
            outcomes,
            {
                ("bad.test", "", "skipped"),
                ("none.test", "", "skipped"),
                ("quiet.test", "", "skipped"),
                ("remote.test", "mailto", "sent"),
                ("remote.test", "https", "sent"),
            },
        )
        self.assertIn((False, b"RCPT"), self.smtps.commands)
        [(tls, raw)] = self.smtps.messages
        message = email.message_from_bytes(raw.replace(b"\r\n", b"\n"))
        self.assertEqual(message.get_content_type(), "multipart/report")
        self.assertEqual(message.get_param("report-type"), "tlsrpt")
        self.assertEqual(message["TLS-Report-Domain"], "remote.test")
        self.assertEqual(message["TLS-Report-Submitter"], "mta.example")
        self.assertEqual(message["From"], "tls-admin@mta.example")
        self.assertIn(
            "Report-ID: <2026-11-30_remote.test@mta.example>", message["Subject"]
        )
        [part] = [
            p
            for p in message.walk()
            if p.get_content_type() == "application/tlsrpt+gzip"
        ]
        self.assertEqual(
            part.get_filename(),
            "mta.example!remote.test!1795996800!1796083199!"
            "2026-11-30_remote.test-mta.example.json.gz",
        )
        report = json.loads(gzip.decompress(part.get_payload(decode=True)))
        self.assertEqual(
            report,
            [r for r in reports if r["report-id"].startswith("2026-11-30_remote")][0],
        )
        [(host, path, contentType, body)] = self.https.posts
        self.assertEqual(
            (host, path, contentType),
            ("tlsrpt.remote.test", "/report", "application/tlsrpt+gzip"),
        )
        self.assertEqual(json.loads(gzip.decompress(body)), report)

    @defer.inlineCallbacks
    def test_failures(self):
        """
        A report the local SMTPS does not accept, or an HTTPS server that
        answers an error, is a failure with the reason.
        """
        self.https.postStatus = 503

        def refuse(address: str, message: bytes) -> Any:
            return False, "550 5.7.1 relaying denied"

        reports = dailyReports(self.settings, DAY, "remote.test")
        done = yield defer.Deferred.fromCoroutine(
            sendReports(
                reports,
                self.settings,
                self.dns,
                refuse,
                poster(reactor, self.dns, trustRootFromFiles(self.caFile, None), 5.0),
                NOON + 86400,
            )
        )
        self.assertEqual(
            [(d.outcome, d.text) for d in done],
            [("failed", "550 5.7.1 relaying denied"), ("failed", "HTTP status 503")],
        )

    @defer.inlineCallbacks
    def test_command(self):
        """
        C{smx tlsrpt --send} as a program: one line per URI, exit status
        0 when every report was sent or not asked for.
        """
        out, err, status = yield runCommand(
            [
                sys.executable,
                "-m",
                "smx.scripts.main",
                "tlsrpt",
                "-q",
                self.queue,
                "--day",
                DAY,
                "--send",
            ]
        )
        self.assertEqual(status, 0, err)
        lines = out.decode().splitlines()
        self.assertIn(
            "remote.test mailto:tls-reports@remote.test: sent (accepted by "
            "127.0.0.1:%d)" % (self.smtpsPort,),
            lines,
        )
        self.assertIn("quiet.test -: skipped (no TLSRPT record)", lines)
        self.assertEqual(len(self.smtps.messages), 1)
        self.assertEqual(len(self.https.posts), 1)
