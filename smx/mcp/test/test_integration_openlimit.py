# -*- test-case-name: smx.mcp.test.test_integration_openlimit -*-
"""
Integration test of C{smtps_max_open_connections} in split mode, as the
seed's §5.3 runs it: the MCP (C{smx-mcp}) with two SMTPS processes on
one passed loopback port, QMGR applying the limit of 5 to both.  A client
that keeps within the limit (Postfix's C{smtp-source -s 4}, a new
connection as soon as the last one got its 221, perhaps to the other
SMTPS process) is never refused; one that really holds 5 connections
gets 421 for the 6th.

It needs what L{smx.mcp.test.test_integration_layout} needs (root,
C{useradd}, C{smtp-sink}) and Postfix's C{smtp-source}; otherwise it is
skipped and says why.
"""

from __future__ import annotations

import socket
import subprocess

from twisted.trial.unittest import SkipTest

from smx.mcp.test.test_integration_layout import LayoutBase, _usable
from smx.test.mta import missing, waitFor

SMTP_SOURCE = "/usr/sbin/smtp-source"


class OpenLimitTests(LayoutBase):
    """
    The open-connections limit of QMGR over two SMTPS processes.
    """

    qmgrOptions = "smtps_max_open_connections = 5; smtps_max_connection_rate = 10000;"

    def setUp(self) -> None:
        reason = _usable() or missing(SMTP_SOURCE)
        if reason:
            raise SkipTest(reason)
        LayoutBase.setUp(self)
        self.startMCP()
        self.assertTrue(waitFor(self.allRunning, 30), self.log())
        self.assertTrue(waitFor(lambda: self.send("first") == 250, 30), self.log())

    def test_withinLimit(self) -> None:
        """
        C{smtp-source -s 4 -m 200}: four sessions at a time, each followed
        at once by the next, through both SMTPS processes: all 200
        messages are accepted (none refused with 421 4.7.0 too many open
        connections) and delivered.
        """
        result = subprocess.run(
            [SMTP_SOURCE, "-s", "4", "-m", "200", "-f", "me@client.test"]
            + ["-t", "u@sink.test", "127.0.0.1:%d" % (self.port,)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(
            (result.returncode, result.stdout + result.stderr),
            (0, ""),
            self.log()[-3000:],
        )
        self.assertTrue(
            waitFor(lambda: len(self.sink.messages()) >= 201, 30),
            len(self.sink.messages()),
        )
        self.assertNotIn("too many open connections", self.log())

    def test_overLimit(self) -> None:
        """
        A client that holds 5 sessions open gets 421 4.7.0 for a 6th;
        once one of the 5 has ended, a new one is accepted.
        """
        clients = []
        try:
            for i in range(5):
                c = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                clients.append(c)
                self.assertEqual(c.recv(1000)[:4], b"220 ")
            sixth = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            clients.append(sixth)
            self.assertRegex(
                sixth.recv(1000),
                rb"^421 4\.7\.0 .*too many open connections from 127\.0\.0\.1",
            )
            clients[0].sendall(b"QUIT\r\n")
            self.assertEqual(clients[0].recv(1000)[:4], b"221 ")
            again = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            clients.append(again)
            self.assertEqual(again.recv(1000)[:4], b"220 ")
        finally:
            for c in clients:
                c.close()
