# -*- test-case-name: smx.mcp.test.test_sockets -*-
"""
Tests of L{smx.mcp.sockets}: the sockets the MCP binds and the listening
socket it passes over C{pass_fd_socket} (real sockets, integration).
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from smx.mcp.sockets import (
    PassingServer,
    bindService,
    receiveListeningSocket,
    socketFamily,
)
from smx.mcp.test.test_supervisor import service


class SocketTests(TestCase):
    """
    Binding and passing.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="smx-sockets-")
        self.addCleanup(os.rmdir, self.directory)

    def test_unixSocket(self) -> None:
        """
        C{socket { name umask }}: the socket is made with that umask; a
        stale socket file is replaced.
        """
        path = os.path.join(self.directory, "lmtp.sock")
        s = service("procmail", mcpType="accept", socketName=path, socketUmask=0o077)
        old = socket.socket(socket.AF_UNIX)
        old.bind(path)
        old.close()
        sock = bindService(s)
        self.addCleanup(os.unlink, path)
        self.addCleanup(sock.close)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o700)
        self.assertEqual(socketFamily(sock.fileno()), socket.AF_UNIX)

    @defer.inlineCallbacks
    def test_passed(self) -> Any:
        """
        A process that connects to C{pass_fd_socket} gets the listening
        TCP socket, non-blocking, and can accept on it.
        """
        s = service(
            "smtps",
            mcpType="pass",
            port=0,
            address="127.0.0.1",
            passFdSocket=os.path.join(self.directory, "fd"),
        )
        listening = bindService(s)
        self.addCleanup(listening.close)
        server = PassingServer(s, listening)
        server.start(reactor)
        self.addCleanup(server.stop)
        self.assertEqual(stat.S_IMODE(os.stat(s.passFdSocket).st_mode), 0o600)
        fd = yield threads.deferToThread(receiveListeningSocket, s.passFdSocket, 5.0)
        received = socket.socket(fileno=fd)
        self.addCleanup(received.close)
        self.assertFalse(os.get_blocking(fd))
        self.assertEqual(socketFamily(fd), socket.AF_INET)
        self.assertEqual(received.getsockname(), listening.getsockname())
        client = socket.create_connection(listening.getsockname(), timeout=5)
        self.addCleanup(client.close)
        received.setblocking(True)
        connection, peer = received.accept()
        connection.close()
        self.assertEqual(server.passed, 1)
