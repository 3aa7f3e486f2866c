# -*- test-case-name: smx.split.test.test_peer -*-
"""
Tests for L{smx.split.peer}: the listening side replaces a stale socket
file; the connecting side waits a bounded time and reconnects.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from smx.split.peer import PeerConnection, PeerUnavailable, QuietAMP, listenSocket
from smx.split.testing import running, serve, socketPath
from smx.test.mta import until


class ListenSocketTests(unittest.TestCase):
    """
    L{listenSocket} makes the directory and replaces a stale socket.
    """

    def test_stale(self) -> None:
        """
        A socket file left by a process killed with SIGKILL does not stop
        the next one from listening; the socket is mode 0660.
        """
        path = socketPath(self)
        os.makedirs(os.path.dirname(path))
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()
        port = listenSocket(reactor, path, Factory.forProtocol(QuietAMP))
        self.addCleanup(port.stopListening)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o660)


class PeerConnectionTests(unittest.TestCase):
    """
    L{PeerConnection} waits at most C{waitForServer} for its peer.
    """

    def test_notStarted(self) -> None:
        """
        A connection that is not started fails at once.
        """
        peer = PeerConnection(reactor, socketPath(self), QuietAMP, 5, "qmgr")
        self.failureResultOf(peer.connection(), PeerUnavailable)

    @defer.inlineCallbacks
    def test_unavailable(self) -> Any:
        """
        Without a peer, a call fails with L{PeerUnavailable} naming the
        peer and the socket after C{waitForServer}.
        """
        path = socketPath(self)
        peer = PeerConnection(reactor, path, QuietAMP, 0.1, "smar")
        running(self, peer)
        with self.assertRaises(PeerUnavailable) as e:
            yield peer.connection()
        self.assertIn("smar", str(e.exception))
        self.assertIn(path, str(e.exception))

    @defer.inlineCallbacks
    def test_stopWaiting(self) -> Any:
        """
        Once the process is stopping (L{PeerConnection.stopWaiting}), a
        call waiting for a peer that is not there fails at once with
        L{PeerUnavailable}, not after C{waitForServer}, and so does a new
        one; a connection lost from then on fails its waiting calls at
        once too.
        """
        path = socketPath(self)
        peer = PeerConnection(reactor, path, QuietAMP, 30, "qmgr")
        running(self, peer)
        waiting = peer.connection()
        start = reactor.seconds()
        peer.stopWaiting()
        with self.assertRaises(PeerUnavailable) as e:
            yield waiting
        self.assertIn("stopping", str(e.exception))
        with self.assertRaises(PeerUnavailable):
            yield peer.connection()
        self.assertLess(reactor.seconds() - start, 5)

    @defer.inlineCallbacks
    def test_stopWaitingThenLost(self) -> Any:
        """
        A peer connected when the stop begins serves calls; once its
        connection is lost, a call waiting for a new one fails at once.
        """
        path = socketPath(self)
        port = serve(self, Factory.forProtocol(QuietAMP), path)
        peer = PeerConnection(reactor, path, QuietAMP, 30, "qmgr")
        running(self, peer)
        proto = yield peer.connection()
        peer.stopWaiting()
        self.assertIs((yield peer.connection()), proto)
        yield port.stopListening()
        proto.transport.loseConnection()
        yield until(lambda: peer.protocol is None, 5, 0.01)
        start = reactor.seconds()
        with self.assertRaises(PeerUnavailable):
            yield peer.connection()
        self.assertLess(reactor.seconds() - start, 5)

    @defer.inlineCallbacks
    def test_connects(self) -> Any:
        """
        Once the peer listens, the connection is made and kept.
        """
        path = socketPath(self)
        serve(self, Factory.forProtocol(QuietAMP), path)
        peer = PeerConnection(reactor, path, QuietAMP, 5, "qmgr")
        running(self, peer)
        proto = yield peer.connection()
        self.assertIs(proto, peer.protocol)
        self.assertIs((yield peer.connection()), proto)

    @defer.inlineCallbacks
    def test_onConnected(self) -> Any:
        """
        C{onConnected} is called after each connection, the first and
        one after the peer came back; one that raises is logged.
        """
        path = socketPath(self)
        servers = []

        class Server(QuietAMP):
            def connectionMade(self) -> None:
                servers.append(self)

        serve(self, Factory.forProtocol(Server), path)
        peer = PeerConnection(reactor, path, QuietAMP, 5, "smar")
        calls = []
        peer.onConnected = lambda: calls.append(peer.protocol)
        running(self, peer)
        first = yield peer.connection()
        self.assertEqual(calls, [first])
        servers[0].transport.loseConnection()
        yield until(lambda: len(calls) == 2, 5, 0.01)
        self.assertIsNot(calls[1], first)
        self.assertIs(calls[1], peer.protocol)

        def broken() -> None:
            raise RuntimeError("broken")

        peer.onConnected = broken
        servers[1].transport.loseConnection()
        yield until(lambda: len(servers) == 3 and peer.protocol is not None, 5, 0.01)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @defer.inlineCallbacks
    def test_callsWhenConnected(self) -> Any:
        """
        Over a connection that is up, a call is made at once: its answer,
        or for a command that needs none a L{Deferred} that fires with
        C{None}; an error of the peer is the call's failure.
        """
        from twisted.protocols import amp

        class Ping(amp.Command):
            arguments = [(b"n", amp.Integer())]
            response = [(b"n", amp.Integer())]

        class Note(amp.Command):
            arguments = [(b"n", amp.Integer())]
            requiresAnswer = False

        class Fail(amp.Command):
            errors = {KeyError: b"KEY"}

        notes = []

        class Server(QuietAMP):
            @Ping.responder
            def ping(self, n: int) -> Any:
                return {"n": n + 1}

            @Note.responder
            def note(self, n: int) -> Any:
                notes.append(n)
                return {}

            @Fail.responder
            def fail(self) -> Any:
                raise KeyError("x")

        path = socketPath(self)
        serve(self, Factory.forProtocol(Server), path)
        peer = PeerConnection(reactor, path, QuietAMP, 5, "qmgr")
        running(self, peer)
        yield peer.connection()
        self.assertEqual((yield peer.callRemote(Ping, n=1)), {"n": 2})
        note = peer.callRemote(Note, n=7)
        self.assertIsInstance(note, defer.Deferred)
        self.assertIsNone((yield note))
        with self.assertRaises(KeyError):
            yield peer.callRemote(Fail)
        self.assertEqual((yield peer.callRemote(Ping, n=2)), {"n": 3})
        self.assertEqual(notes, [7])


class UnavailableReportTests(unittest.TestCase):
    """
    A peer that cannot be reached within C{waitForServer} is logged once.
    """

    def test_reported(self) -> None:
        """
        C{waitForServer} after the start without a connection, one
        C{sev=ERR} record names the peer and the socket.
        """
        from twisted.internet.testing import MemoryReactorClock

        from smx.log import Logger, MemorySink

        clock = MemoryReactorClock()
        sink = MemorySink()
        logger = Logger("smtpc", sink=sink)
        peer = PeerConnection(clock, "/nonexistent/sock", QuietAMP, 4, "qmgr", logger)
        peer.startService()
        clock.advance(3.9)
        self.assertFalse([l for l in sink.lines() if "unavailable" in l])
        clock.advance(0.2)
        [line] = [l for l in sink.lines() if "unavailable" in l]
        self.assertIn("sev=ERR", line)
        self.assertIn("peer=qmgr", line)
        self.assertIn("socket=/nonexistent/sock", line)
        clock.advance(10)
        self.assertEqual(len([l for l in sink.lines() if "unavailable" in l]), 1)
        peer.stopService()
