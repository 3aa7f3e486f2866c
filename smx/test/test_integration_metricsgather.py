# -*- test-case-name: smx.test.test_integration_metricsgather -*-
"""
Integration test of the metrics of split mode (L{smx.metricsgather}):
the real MCP (C{smx-mcp}) as a child process starts SMAR, QMGR, SMTPC
and two SMTPS processes (C{python -m smx.split.run}, as root: the
virtualenv's interpreter may not be usable by other users, see
L{smx.mcp.test.test_integration_layout}) that share one loopback port
(C{mcp_type = accept}); mail sent through both SMTPS processes is relayed
to Postfix's C{smtp-sink}; the MCP's endpoint is read over HTTP and
checked with C{promtool check metrics}; an SMTPS process killed with
SIGKILL leaves the endpoint answering, and is read again once the MCP
started it again.

It needs root, C{smtp-sink}, C{promtool} (Debian's prometheus) and
C{ss}; otherwise it is skipped and says why.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any, Dict, List

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from smx.test.mta import (
    SMTP_SINK,
    SMX,
    SmtpSink,
    configuration,
    freePort,
    missing,
    tempDirectory,
    waitFor,
)

BIN = os.path.dirname(sys.executable)
PROMTOOL = "/usr/bin/promtool"


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


def total(counts: Dict[str, float], prefix: str) -> float:
    """The sum of the samples whose name starts with C{prefix}."""
    return sum(v for k, v in counts.items() if k.startswith(prefix))


class SplitMetricsTests(SynchronousTestCase):
    """
    One endpoint for the processes of split mode, served by the MCP.
    """

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("needs root (the MCP runs as root)")
        reason = missing(SMTP_SINK, PROMTOOL, "/usr/bin/ss")
        if reason:
            raise SkipTest(reason)
        self.root = tempDirectory(self, "smx-gather-")
        self.queue = os.path.join(self.root, "q")
        os.makedirs(self.queue)
        self.sink = SmtpSink(self, self.root)
        self.sink.start()
        self.port = freePort()
        self.metricsPort = freePort()
        self.config = os.path.join(self.queue, "smx.conf")
        program = os.path.join(self.root, "component")
        with open(program, "w") as f:
            f.write('#!/bin/sh\nexec %s -m smx.split.run "$@"\n' % (sys.executable,))
        os.chmod(program, 0o755)

        def mcp(name: str, extra: str = "") -> str:
            return (
                'mcp_type = wait; path = "%s"; arguments = "smx-%s -f %s -c %s%s";'
                % (program, name, self.config, name, extra)
            )

        smtps = (
            "mcp_type = accept; port = %d; address = 127.0.0.1; "
            'min_processes = 2; max_processes = 2; pass_id = "-i"; '
            'path = "%s"; arguments = "smx-smtps -f %s -c smtps --fd 0";'
            % (self.port, program, self.config)
        )
        text = configuration(
            self.port,
            lmtpd=False,
            smtps=smtps,
            qmgr="wait_for_client = 4s; wait_for_server = 4s; " + mcp("qmgr"),
            smtpc="wait_for_server = 4s; " + mcp("smtpc"),
            smar=mcp("smar"),
        )
        text += '\nmetrics {\n    address = "127.0.0.1:%d";\n}\n' % (self.metricsPort,)
        with open(self.config, "w") as f:
            f.write(text)
        with open(os.path.join(self.queue, "mt"), "w") as f:
            f.write("sink.test %d^esmtp:[%s]\n" % (self.sink.port, self.sink.address))
        for name, source, options in [
            ("aliases", "", ["-a"]),
            ("access", "cltaddr:127.0.0.1 relay\n", []),
        ]:
            path = os.path.join(self.queue, name)
            with open(path, "w") as f:
                f.write(source)
            subprocess.run(
                [SMX, "createmap", *options, "-F", path + ".db", "-i", path],
                check=True,
                capture_output=True,
                timeout=30,
            )
        self.mcpLog = open(os.path.join(self.root, "mcp.log"), "wb")
        self.addCleanup(self.mcpLog.close)
        self.mcp = subprocess.Popen(
            [os.path.join(BIN, "smx-mcp"), "-f", self.config],
            cwd=self.queue,
            stdout=self.mcpLog,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(self.stopMCP)

    def stopMCP(self) -> None:
        if self.mcp.poll() is None:
            self.mcp.send_signal(signal.SIGTERM)
            try:
                self.mcp.wait(30)
            except subprocess.TimeoutExpired:
                self.mcp.kill()
                self.mcp.wait()

    def log(self) -> str:
        with open(os.path.join(self.root, "mcp.log"), errors="replace") as f:
            return f.read()[-6000:]

    def scrape(self) -> str:
        url = "http://127.0.0.1:%d/metrics" % (self.metricsPort,)
        with urllib.request.urlopen(url, timeout=10) as response:
            self.assertEqual(response.status, 200)
            return response.read().decode("utf-8")

    def status(self) -> List[Dict[str, Any]]:
        result = subprocess.run(
            [SMX, "mcpctl", "--json", "-f", self.config, "-d", self.queue],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            return []
        return json.loads(result.stdout)["processes"]

    def allUp(self) -> bool:
        try:
            counts = samples(self.scrape())
        except OSError:
            return False
        ups = [v for k, v in counts.items() if k.startswith("smx_scrape_up{")]
        return len(ups) == 5 and all(ups)

    def promtool(self, text: str) -> None:
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

    def sendThroughBoth(self) -> int:
        """
        Open SMTP sessions until both SMTPS processes hold one (C{ss}),
        then send one message in each.

        @return: the number of messages answered 250.
        """
        clients = []  # type: List[smtplib.SMTP]
        pids = set()  # type: set
        try:
            for i in range(40):
                clients.append(smtplib.SMTP("127.0.0.1", self.port, timeout=30))
                out = subprocess.run(
                    ["ss", "-tnpH", "state", "established"]
                    + ["( sport = :%d )" % (self.port,)],
                    capture_output=True,
                    text=True,
                ).stdout
                for part in out.split("pid=")[1:]:
                    pids.add(int(part.split(",")[0]))
                if len(pids) >= 2 and len(clients) >= 3:
                    break
            self.assertEqual(len(pids), 2, out)
            accepted = 0
            for i, client in enumerate(clients):
                client.ehlo("client.test")
                client.mail("a@client.test")
                client.rcpt("b@sink.test")
                code, _ = client.data(b"Subject: %d\r\n\r\nsplit metrics\r\n" % i)
                accepted += code == 250
            return accepted
        finally:
            for client in clients:
                try:
                    client.quit()
                except Exception:
                    client.close()

    def test_oneEndpoint(self) -> None:
        """
        The MCP's endpoint shows every process (up 1); the received
        counters of the two SMTPS processes sum to the messages sent
        through both, QMGR counts them delivered and shows its queue
        gauges, each process's own text and the merged one pass
        C{promtool check metrics}; after an SMTPS process is killed with
        SIGKILL the endpoint still answers, and the new process is read
        again (its restart counted).
        """
        self.assertTrue(waitFor(self.allUp, 40), self.log())
        sent = self.sendThroughBoth()
        self.assertGreaterEqual(sent, 3)

        def delivered() -> bool:
            counts = samples(self.scrape())
            return total(counts, "smx_recipients_delivered_total{") == sent

        self.assertTrue(waitFor(delivered, 20), self.scrape() + self.log())
        text = self.scrape()
        counts = samples(text)
        received = {
            k: v
            for k, v in counts.items()
            if k.startswith("smx_messages_received_total{")
        }
        self.assertEqual(sum(received.values()), sent, text)
        # both processes received some
        self.assertEqual(len([v for v in received.values() if v]), 2, received)
        qmgr = '{component="qmgr",process="0"}'
        self.assertEqual(counts["smx_queue_transactions" + qmgr], 0)
        self.assertIn("smx_queue_aq_max" + qmgr, counts)
        self.assertEqual(counts["smx_messages_queued_total" + qmgr], sent)
        self.assertEqual(text.count("# TYPE smx_messages_received_total "), 1)
        self.promtool(text)
        # one process's own text, from its socket
        own = socket.socket(socket.AF_UNIX)
        own.connect(os.path.join(self.queue, "metrics", "smtps", "0.sock"))
        data = b""
        while True:
            chunk = own.recv(65536)
            if not chunk:
                break
            data += chunk
        own.close()
        self.assertIn(b"smx_messages_received_total{listener=", data)
        self.promtool(data.decode("utf-8"))

        victim = [p for p in self.status() if p["name"] == "smtps"][0]
        os.kill(victim["pid"], signal.SIGKILL)
        start = time.monotonic()
        text = self.scrape()
        self.assertLess(time.monotonic() - start, 5)
        up = 'smx_scrape_up{component="smtps",process="%d"}' % (victim["id"],)
        self.assertIn(samples(text)[up], (0, 1))
        self.promtool(text)
        restarts = 'smx_process_restarts_total{component="smtps",process="%d"}' % (
            victim["id"],
        )
        self.assertTrue(
            waitFor(lambda: self.allUp() and samples(self.scrape())[restarts] == 1, 30),
            self.scrape() + self.log(),
        )

    def qmgrctl(self, *args: str) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(
            [SMX, "qmgrctl", "-f", self.config, "-q", self.queue, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def test_qmgrctl(self) -> None:
        """
        In split mode C{smx qmgrctl processes} shows each process of the
        MCP with its user, pid and restarts; C{smx qmgrctl status} (the
        health check) exits 0 while all run, and 1 naming the service
        when one that should run does not (here SMTPC, stopped with
        C{smx mcpctl stop}).
        """
        self.assertTrue(waitFor(self.allUp, 40), self.log())
        up = self.qmgrctl("status")
        self.assertEqual((up.returncode, up.stderr), (0, ""), up.stdout)
        self.assertTrue(up.stdout.startswith("smx: ok"), up.stdout)
        table = self.qmgrctl("processes")
        self.assertEqual(table.returncode, 0, table.stderr)
        lines = table.stdout.splitlines()
        self.assertEqual(
            lines[0].split()[:6], ["SERVICE", "ID", "USER", "PID", "STATE", "RESTARTS"]
        )
        rows = [line.split() for line in lines[1:]]
        self.assertEqual(
            sorted(r[0] for r in rows), ["qmgr", "smar", "smtpc", "smtps", "smtps"]
        )
        pids = {p["pid"] for p in self.status()}
        for row in rows:
            self.assertEqual(row[2], "root")
            self.assertIn(int(row[3]), pids)
            self.assertEqual((row[4], row[5]), ("running", "0"))
        full = self.qmgrctl()
        self.assertEqual(full.returncode, 0, full.stderr)
        self.assertIn("transactions", full.stdout)
        self.assertIn("smtpc", full.stdout.split("SERVICE", 1)[1])
        stop = subprocess.run(
            [SMX, "mcpctl", "-f", self.config, "-d", self.queue, "stop", "smtpc"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(stop.returncode, 0, stop.stderr)
        down = self.qmgrctl("status")
        self.assertEqual(down.returncode, 1, down.stdout)
        self.assertEqual(down.stdout, "")
        self.assertIn("not running: smtpc/", down.stderr)
        self.assertEqual(len(down.stderr.splitlines()), 1, down.stderr)
