# -*- test-case-name: smx.test.test_integration_metrics -*-
"""
Integration tests of the metrics endpoint and of the health check: smx
run as a user runs it (C{twistd -n smx} as a child process, see
L{smx.test.mta}) with C{metrics { address; }}, mail sent to it with
smtplib over a loopback socket and delivered by its own lmtpd, the
endpoint read over HTTP and checked with Prometheus's C{promtool check
metrics}; C{smx qmgrctl status} run against it while it runs and after
it stopped.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import urllib.request
from typing import Dict, Tuple

from twisted.trial.unittest import SkipTest, TestCase

from smx.test.mta import MTA, SMX, configuration, freePort, tempDirectory, waitFor

PROMTOOL = "/usr/bin/promtool"


def scrape(port: int) -> Tuple[str, str]:
    """
    GET /metrics on 127.0.0.1:port.

    @return: the content type and the text.
    """
    url = "http://127.0.0.1:%d/metrics" % (port,)
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode("utf-8")


def samples(text: str) -> Dict[str, float]:
    """
    The samples of an exposition text, by name with labels as written.
    """
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


class MetricsEndpointTests(TestCase):
    """
    The endpoint of a running smx counts what was sent to it.
    """

    N = 5

    def setUp(self) -> None:
        self.root = tempDirectory(self)
        self.mta = MTA(self, os.path.join(self.root, "smx"))
        self.metricsPort = freePort()
        config = configuration(self.mta.port)
        config += '\nmetrics {\n    address = "127.0.0.1:%d";\n}\n' % (
            self.metricsPort,
        )
        self.mta.write(
            config,
            aliases="root: local:\nu1: local:\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()

    def qmgrctl(self, *args: str) -> subprocess.CompletedProcess:
        """Run C{smx qmgrctl ARGS} for this instance (blocking)."""
        argv = [SMX, "qmgrctl", "-f", self.mta.config, "-q", self.mta.directory]
        return subprocess.run(
            argv + list(args), capture_output=True, text=True, timeout=30
        )

    def test_countsAndFormat(self) -> None:
        """
        After N messages to a local user are accepted and delivered, the
        endpoint says received == N (by listener) and delivered == N (by
        mailer: smx's lmtpd behind the local LMTP socket), its
        content type is the text format's, and C{promtool check metrics}
        finds nothing wrong with the text.
        """
        client = smtplib.SMTP("127.0.0.1", self.mta.port, timeout=10)
        for i in range(self.N):
            client.sendmail(
                "a@localhost", ["u1@localhost"], b"Subject: m%d\r\n\r\nhi\r\n" % i
            )
        client.quit()
        self.assertTrue(
            waitFor(lambda: len(self.mta.maildir("u1")) == self.N, 10),
            self.mta.log(),
        )

        session = 'smx_sessions_total{listener="smtps"}'

        def delivered() -> bool:
            # two sessions: the harness's probe of the SMTP port, and ours
            counts = samples(scrape(self.metricsPort)[1])
            return (
                counts.get('smx_recipients_delivered_total{mailer="lmtp"}') == self.N
                and counts.get(session) == 2
            )

        self.assertTrue(waitFor(delivered, 10), scrape(self.metricsPort)[1])
        contentType, text = scrape(self.metricsPort)
        self.assertEqual(contentType, "text/plain; version=0.0.4; charset=utf-8")
        counts = samples(text)
        self.assertEqual(
            counts['smx_messages_received_total{listener="smtps"}'], self.N
        )
        self.assertEqual(
            counts['smx_recipients_delivered_total{mailer="lmtp"}'], self.N
        )
        self.assertNotIn("smx_recipients_deferred_total", " ".join(counts))
        self.assertEqual(counts["smx_delivery_latency_seconds_count"], self.N)
        self.assertEqual(counts["smx_queue_transactions"], 0)
        self.assertGreater(counts["smx_ibdb_commits_total"], 0)
        self.assertEqual(
            counts["smx_ibdb_fsync_seconds_count"], counts["smx_ibdb_commits_total"]
        )
        self.assertEqual(
            counts["smx_ibdb_commit_records_sum"], counts["smx_ibdb_records_total"]
        )
        if not os.access(PROMTOOL, os.X_OK):
            raise SkipTest("%s (Debian package prometheus) is not installed" % PROMTOOL)
        check = subprocess.run(
            [PROMTOOL, "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(
            (check.returncode, check.stdout, check.stderr), (0, "", ""), text
        )

    def test_notFound(self) -> None:
        """
        Another path than /metrics is a 404, not a traceback.
        """
        url = "http://127.0.0.1:%d/other" % (self.metricsPort,)
        with self.assertRaises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(url, timeout=5)
        self.assertEqual(caught.exception.code, 404)

    def test_healthCheck(self) -> None:
        """
        C{smx qmgrctl status} exits 0 with one line while smx runs, and
        non-zero with the reason on one line once it is stopped.
        """
        up = self.qmgrctl("status")
        self.assertEqual(up.returncode, 0, up.stderr)
        self.assertEqual(len(up.stdout.splitlines()), 1, up.stdout)
        self.assertTrue(up.stdout.startswith("smx: ok"), up.stdout)
        self.mta.stop()
        down = self.qmgrctl("status")
        self.assertNotEqual(down.returncode, 0)
        self.assertEqual(down.stdout, "")
        self.assertEqual(len(down.stderr.splitlines()), 1, down.stderr)
        self.assertIn("cannot talk to QMGR", down.stderr)


class HealthCheckDiskTests(TestCase):
    """
    C{smx qmgrctl status} fails while the queue disk is short (a real
    tmpfs filled up).
    """

    def test_diskShort(self) -> None:
        """
        With the queue on a nearly full tmpfs (below C{min_disk_space}),
        C{smx qmgrctl status} exits 1 and names min_disk_space on one line.
        """
        if os.getuid() != 0:
            raise SkipTest("needs root to mount a tmpfs")
        root = tempDirectory(self)
        mnt = os.path.join(root, "fs")
        os.makedirs(mnt)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", mnt], check=True
        )
        self.addCleanup(subprocess.run, ["umount", "-l", mnt])
        mta = MTA(self, os.path.join(mnt, "smx"))
        mta.write(
            configuration(mta.port, qmgr="min_disk_space = 4MB;"),
            aliases="root: local:\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        mta.start()
        argv = [SMX, "qmgrctl", "-f", mta.config, "-q", mta.directory, "status"]
        first = subprocess.run(argv, capture_output=True, text=True)
        self.assertEqual(first.returncode, 0, first.stderr)
        # leave 2 MB free
        st = os.statvfs(mnt)
        with open(os.path.join(mnt, "filler"), "wb") as f:
            f.write(b"x" * (st.f_bavail * st.f_frsize - (2 << 20)))

        def short() -> bool:
            return subprocess.run(argv, capture_output=True).returncode != 0

        self.assertTrue(waitFor(short, 10), mta.log())
        result = subprocess.run(argv, capture_output=True, text=True)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn("min_disk_space", result.stderr)
        mta.stop()
        shutil.rmtree(os.path.join(mnt, "smx"), True)
