# -*- test-case-name: smx.test.test_metrics -*-
"""
Tests of L{smx.metrics}: what the recorder counts from the log records
of the components, the text it renders, and of the health check of
C{smx qmgrctl status} (L{smx.scripts.qmgrctl.healthProblem}).
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smx.config import configurationFromText
from smx.log import Logger, MemorySink
from smx.metrics import METRICS, Histogram, MetricsRecorder, metricsService
from smx.scripts.qmgrctl import healthProblem


class RecorderTests(SynchronousTestCase):
    """
    L{MetricsRecorder} counts the App. C.2 records real loggers write.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.recorder = MetricsRecorder(self.clock)
        self.patch(Logger, "observer", self.recorder.observe)
        self.smtps = Logger("smtps", sink=MemorySink())
        self.msa = Logger("smtps", sink=MemorySink())
        self.recorder.listeners[self.msa] = "MSA"
        self.qmgr = Logger("qmgr", level=1, sink=MemorySink())

    def counter(self, name: str, *labels: str) -> int:
        return self.recorder.counters[name].get(tuple(labels), 0)

    def test_received(self) -> None:
        """
        An accepted message (C{size=N, stat=0}) counts as received for
        its listener; a rejected or discarded one, and MAIL/RCPT records,
        do not.
        """
        self.smtps.info(ss_sess="S1", ss_ta="T1", mail="<a@b>", stat=0)
        self.smtps.info(ss_sess="S1", ss_ta="T1", rcpt="<c@d>", idx=0, stat=0)
        self.smtps.info(ss_sess="S1", ss_ta="T1", msgid="<m>", size=10, stat=0)
        self.smtps.info(ss_sess="S1", ss_ta="T2", msgid="<m>", size=10, stat=552)
        self.smtps.info(ss_sess="S1", ss_ta="T3", size=10, stat=0, discard=1)
        self.msa.info(ss_sess="S2", ss_ta="T4", msgid="<m>", size=10, stat=0)
        self.assertEqual(self.counter("smx_messages_received_total", "smtps"), 1)
        self.assertEqual(self.counter("smx_messages_received_total", "MSA"), 1)

    def test_policyRequests(self) -> None:
        """
        Each decision of a Postfix policy client counts as a request of
        its policy; one that is the default action (the server failed)
        as a failure too.  SMTPS's own rejection records naming the
        policy do not count again.
        """
        from smx.milter.policy import parseAction
        from smx.milter.policyclient import PolicyClient, _Request

        client = PolicyClient(
            "grey", "unix:/nonexistent", 5, "tempfail", self.clock, self.smtps
        )
        client._decided(_Request(b"", "RCPT", "T1"), parseAction("DUNNO"))
        client._fail(_Request(b"", "RCPT", "T2"), "cannot connect")
        # the client's warning about an action it ignored (FILTER)
        self.smtps.warn(
            "PolicyClient.check",
            policy="grey",
            protocol_state="RCPT",
            action="FILTER smtp:x",
            error="FILTER is not supported",
        )
        self.smtps.info(ss_sess="S1", rcpt="<a@b>", stat=451, policy="grey")
        self.assertEqual(self.counter("smx_policy_requests_total", "grey"), 2)
        self.assertEqual(self.counter("smx_policy_failures_total", "grey"), 1)

    def test_milterCalls(self) -> None:
        """
        The end of a milter session (its record at debug level, not
        written at the usual log_level) counts its calls and those the
        default action answered, by milter, for SMTPS and QMGR alike.
        """
        from smx.milter.client import MilterClient, MilterSettings, parseSocket
        from smx.milter.protocol import ConnectInfo

        settings = MilterSettings(
            "dkim", parseSocket("unix:/nonexistent/milter"), 1, 1, 1, "tempfail"
        )
        session = MilterClient(settings, self.clock, self.smtps).session("S1")
        decision = self.successResultOf(
            session.connect(ConnectInfo(None, "inet", "127.0.0.1", 25))
        )
        self.assertEqual(decision.code, 451)
        self.successResultOf(session.helo("client.example"))
        self.successResultOf(session.quit())
        self.qmgr.debug(milter="dkim", milter_calls=5, milter_failures=0)
        self.assertEqual(self.counter("smx_milter_calls_total", "dkim"), 7)
        self.assertEqual(self.counter("smx_milter_failures_total", "dkim"), 2)

    def test_sessions(self) -> None:
        """
        Session records count opened sessions, refusals by code, and TLS
        handshakes by version.
        """
        self.smtps.info(ss_sess="S1", client_ipv4="127.0.0.1", relay=0)
        self.smtps.info(ss_sess="S2", where="connection", stat=421, reply="421 x")
        self.smtps.info(
            ss_sess="S1", where="connection", starttls="successful", version="TLSv1.3"
        )
        self.assertEqual(self.counter("smx_sessions_total", "smtps"), 1)
        self.assertEqual(self.counter("smx_sessions_refused_total", "smtps", "421"), 1)
        self.assertEqual(self.counter("smx_tls_sessions_total", "smtps", "TLSv1.3"), 1)

    def test_deliveryResults(self) -> None:
        """
        QMGR's records count queued transactions, delivered, deferred and
        bounced recipients by mailer (C{none} when not routed), DSNs by kind, and the delivery latency from
        C{stat=queued} to C{stat=ok} — also when the qmgr log_level
        writes none of them.
        """
        self.qmgr.info(ss_ta="T1", mail="<a@b>", nrcpts=3, size=5, stat="queued")
        self.clock.advance(2)
        self.qmgr.info(
            ss_ta="T1", rcpt="<c@d>", idx=0, stat="ok", reply="250 ok", mailer="esmtp"
        )
        self.qmgr.info(
            ss_ta="T1", rcpt="<e@d>", idx=1, stat="temp", reply="451 x", mailer="lmtp"
        )
        self.qmgr.info(ss_ta="T1", rcpt="<f@d>", idx=2, stat="perm", reply="550 x")
        self.qmgr.info(ss_ta="T9", dsn_for="T1", kind="failed", rcpts=1)
        self.qmgr.info(ss_ta="T1", stat="done")
        self.assertEqual(self.qmgr.sink.records, [])
        self.assertEqual(self.counter("smx_messages_queued_total"), 1)
        self.assertEqual(self.counter("smx_recipients_delivered_total", "esmtp"), 1)
        self.assertEqual(self.counter("smx_recipients_deferred_total", "lmtp"), 1)
        self.assertEqual(self.counter("smx_recipients_bounced_total", "none"), 1)
        self.assertEqual(self.counter("smx_dsns_total", "failed"), 1)
        latency = self.recorder.histograms["smx_delivery_latency_seconds"]
        self.assertEqual((latency.count, latency.sum), (1, 2.0))
        self.assertEqual(self.recorder._queuedAt, {})

    def test_dns(self) -> None:
        """
        SMAR's records count DNS queries sent and lookups that failed, by
        type; the query records are level 14, not written at the default
        log_level.
        """
        smar = Logger("smar", sink=MemorySink())
        smar.debug(14, dns_query="a.test", type="MX")
        smar.info(dns_lookup="a.test", type="MX", error="timeout")
        self.assertEqual(self.counter("smx_dns_queries_total", "MX"), 1)
        self.assertEqual(self.counter("smx_dns_errors_total", "MX"), 1)
        self.assertEqual(len(smar.sink.records), 1)

    def test_ibdbCommits(self) -> None:
        """
        A real IBDB's group commits reach the commit size and fsync
        histograms through its C{commitObserver}.
        """
        from smx.queue.ibdb import TRANSACTION, IncomingBackupLog

        ibdb = IncomingBackupLog(
            self.mktemp(),
            self.clock,
            maxCommitDelay=1.0,
            maxOpenTransactions=100,
            fileSize=1 << 20,
        )
        ibdb.commitObserver = self.recorder.ibdbCommitted
        ibdb.start()
        self.addCleanup(ibdb.stop)
        for i in range(3):
            ibdb.append(TRANSACTION, {"id": "T%d" % i, "recipients": []})
        ibdb.commit()
        records = self.recorder.histograms["smx_ibdb_commit_records"]
        fsync = self.recorder.histograms["smx_ibdb_fsync_seconds"]
        self.assertEqual((records.count, records.sum), (1, 3))
        self.assertEqual(fsync.count, 1)

    def test_observerFails(self) -> None:
        """
        An observer that raises does not stop the record from being
        written.
        """

        def broken(logger, fields):
            raise RuntimeError("boom")

        self.patch(Logger, "observer", broken)
        self.smtps.info(ss_sess="S1", stat=0)
        self.assertEqual(self.smtps.sink.lines(), ["ss_sess=S1, stat=0"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class RenderTests(SynchronousTestCase):
    """
    The text exposition format of L{MetricsRecorder.render}.
    """

    def test_everyMetricOnce(self) -> None:
        """
        Every metric of L{METRICS} has one HELP and one TYPE line, and
        unlabelled counters are rendered as 0 before anything happened.
        """
        text = MetricsRecorder(Clock()).render(None)
        for name, kind, _, _ in METRICS:
            self.assertEqual(text.count("# TYPE %s %s\n" % (name, kind)), 1)
            self.assertEqual(text.count("# HELP %s " % (name,)), 1)
        self.assertIn("\nsmx_pmilter_calls_total 0\n", text)
        self.assertIn("\nsmx_messages_queued_total 0\n", text)
        self.assertTrue(text.endswith("\n"))

    def test_gaugesFromStatus(self) -> None:
        """
        QMGR's status becomes gauges; destinations and recipient states
        are labels, the local destination is C{local}, and label values
        are escaped.
        """
        status = {
            "transactions": 2,
            "recipients": {"deferred": 1},
            "iqdb": 3,
            "aq": 4,
            "sessions": 1,
            "diskShort": False,
            "defedb": True,
            "destinations": {
                "": {"open": 1, "limit": 4},
                'a"b': {"open": 0, "limit": 2},
            },
        }
        text = MetricsRecorder(Clock()).render(status)
        self.assertIn("\nsmx_queue_transactions 2\n", text)
        self.assertIn('\nsmx_queue_recipients{state="deferred"} 1\n', text)
        self.assertIn("\nsmx_queue_aq 4\n", text)
        self.assertIn("\nsmx_defedb_open 1\n", text)
        self.assertIn('\nsmx_destination_connections{destination="local"} 1\n', text)
        self.assertIn(
            '\nsmx_destination_connection_limit{destination="a\\"b"} 2\n', text
        )

    def test_histogram(self) -> None:
        """
        Buckets are cumulative and end with C{+Inf}, the count and sum.
        """
        h = Histogram((1, 10))
        for value in (0.5, 5, 50):
            h.observe(value)
        self.assertEqual(
            h.lines("x"),
            [
                'x_bucket{le="1"} 1',
                'x_bucket{le="10"} 2',
                'x_bucket{le="+Inf"} 3',
                "x_sum 55.5",
                "x_count 3",
            ],
        )


class ServiceTests(SynchronousTestCase):
    """
    L{metricsService} from the configuration.
    """

    def test_noAddress(self) -> None:
        """
        Without C{metrics { address; }} there is no listener.
        """
        cfg = configurationFromText("hostname = a.test;\n")
        self.assertIsNone(metricsService(cfg, Clock(), {}))

    def test_address(self) -> None:
        """
        C{address} names where the service listens.
        """
        cfg = configurationFromText(
            'hostname = a.test;\nmetrics { address = "127.0.0.1:9999"; }\n'
        )
        service = metricsService(cfg, Clock(), {})
        self.assertEqual((service.host, service.portNumber), ("127.0.0.1", 9999))

    def test_portOnly(self) -> None:
        """
        An address without a host (C{:port}) listens on 127.0.0.1, not on
        every interface: the endpoint has no authentication.  C{0.0.0.0}
        written out still means every interface.
        """
        for text, host in [(":9999", "127.0.0.1"), ("0.0.0.0:9999", "0.0.0.0")]:
            cfg = configurationFromText(
                'hostname = a.test;\nmetrics { address = "%s"; }\n' % (text,)
            )
            service = metricsService(cfg, Clock(), {})
            self.assertEqual((service.host, service.portNumber), (host, 9999), text)

    def test_keepsEarlierObserver(self) -> None:
        """
        The service's recorder goes in front of an observer that was
        there (it still sees every record, as in split mode) and puts it
        back when the service stops; it took its place before, and
        cleared it at stop.
        """
        from twisted.internet.testing import MemoryReactorClock

        seen = []  # type: List[Dict[str, Any]]
        self.patch(Logger, "observer", lambda logger, fields: seen.append(fields))
        earlier = Logger.observer
        cfg = configurationFromText(
            'hostname = a.test;\nmetrics { address = "127.0.0.1:9999"; }\n'
        )
        service = metricsService(cfg, MemoryReactorClock(), {})
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        Logger("smtps", sink=MemorySink()).info(
            ss_ta="T1", msgid="<m>", size=10, stat=0
        )
        self.assertEqual(len(seen), 1)
        self.assertEqual(
            service.recorder.counters["smx_messages_received_total"], {("smtps",): 1}
        )
        service.stopService()
        self.assertIs(Logger.observer, earlier)


class HealthProblemTests(SynchronousTestCase):
    """
    L{healthProblem}: the reason C{smx qmgrctl status} fails.
    """

    def test_healthy(self) -> None:
        """A status with DEFEDB open and the disk not short is healthy."""
        self.assertIsNone(healthProblem({"defedb": True, "diskShort": False}))
        self.assertIsNone(healthProblem({"defedb": True}, ("/q", 2 << 20, 1 << 20)))

    def test_diskShort(self) -> None:
        """Free space below min_disk_space, measured or as QMGR saw it."""
        self.assertIn(
            "min_disk_space", healthProblem({"defedb": True, "diskShort": True})
        )
        self.assertEqual(
            healthProblem({"defedb": True}, ("/q", 1 << 20, 2 << 20)),
            "queue disk below min_disk_space: 1024 KB free in /q, 2048 KB needed",
        )

    def test_defedbClosed(self) -> None:
        """DEFEDB closed is a problem."""
        self.assertEqual(healthProblem({"defedb": False}), "DEFEDB is not open")
