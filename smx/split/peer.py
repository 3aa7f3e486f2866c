# -*- test-case-name: smx.split.test.test_peer -*-
"""
NAME
    smx.split.peer - AMP connections between components over Unix sockets

SYNOPSIS
    peer = PeerConnection(reactor, "qmsmtps/smtpssock", SomeAMP,
                          waitForServer=10, name="qmgr")
    peer.startService()
    d = peer.callRemote(SessionOpen, sessionId=..., clientAddress=...)

    port = listenSocket(reactor, "qmsmar/smarsock", factory)

DESCRIPTION
    L{PeerConnection} is the connecting side: it connects at start and
    again whenever the connection is lost (after 0.1 s, then backing off
    to at most L{MAX_RETRY_DELAY}), so a component whose peer restarts
    finds it again without anybody's help.  A call made while there is no
    connection waits for one, at most C{waitForServer} seconds (the
    C{wait_for_server} option), and then fails with L{PeerUnavailable}.

    L{listenSocket} is the listening side: it replaces a stale socket file
    (left by a process killed with SIGKILL) and creates the socket mode
    0660, so that the group of the socket's directory (seed §4.1) may
    connect.

DIAGNOSTICS
    A lost connection is logged once (C{sev=WARN}), and once when it is
    back (C{sev=NOTICE}), naming the peer and the socket; a peer that
    cannot be reached C{waitForServer} seconds after the start or the
    loss is logged once with C{sev=ERR} and C{stat=unavailable}.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Set

from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, endpoints, error
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols import amp
from twisted.python.failure import Failure

from zope.interface import implementer

from smx._twistedcompat import succeeded
from smx import net
from smx.log import Logger
from smx.split.boxes import FastBoxReceiver
from smx.split.dispatch import LeanDispatch
from smx.unixsocket import socketName

#: the errors of a connection that ended
GONE = (error.ConnectionClosed, error.ConnectionLost, error.ConnectionDone)

#: the longest wait between two attempts to connect to a peer
MAX_RETRY_DELAY = 1.0


class PeerUnavailable(Exception):
    """
    The peer component could not be reached within C{wait_for_server}.
    """


class QuietAMP(LeanDispatch, FastBoxReceiver, amp.AMP):
    """
    AMP without the lines per connection that C{amp.AMP} logs, reading
    whole boxes at a time (L{smx.split.boxes}), answering at once what
    can be answered at once (L{smx.split.dispatch}).
    """

    def makeConnection(self, transport: Any) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure = error.ConnectionDone()) -> None:  # type: ignore[assignment]
        amp.BinaryBoxProtocol.connectionLost(self, reason)


class PeerConnection(service.Service):
    """
    A reconnecting AMP connection to the Unix socket of another component
    (see the module docstring).

    @ivar protocol: the connected protocol, or C{None}.
    @ivar onConnected: called (without arguments) after each connection.
    """

    def __init__(
        self,
        reactor: Any,
        path: str,
        makeProtocol: Callable[[], amp.AMP],
        waitForServer: float,
        name: str,
        logger: Optional[Logger] = None,
    ) -> None:
        """
        @param path: the Unix socket the peer listens on.
        @param makeProtocol: makes the AMP protocol of a connection (it
            may answer commands of the peer, as SMTPC answers L{Deliver}).
        @param waitForServer: seconds a call waits for a connection.
        @param name: the peer's name, for log records.
        """
        self.reactor = reactor
        self.path = path
        self.waitForServer = waitForServer
        self.peerName = name
        self.setName("%s connection" % (name,))
        self.logger = logger or Logger("split")
        self.protocol = None  # type: Optional[amp.AMP]
        self.onConnected = None  # type: Optional[Callable[[], Any]]
        self._wasUp = False
        self._reportedDown = False
        self._watcher = None  # type: Any
        #: the calls waiting for a connection (L{stopWaiting})
        self._waiters = set()  # type: Set[defer.Deferred]
        self._stopping = False
        outer = self

        def build() -> amp.AMP:
            proto = makeProtocol()
            made, lost = proto.connectionMade, proto.connectionLost

            def connectionMade() -> None:
                made()
                outer._connected(proto)

            def connectionLost(reason: Any = None) -> None:
                outer._lost(proto)
                lost(reason)

            proto.connectionMade = connectionMade  # type: ignore[method-assign]
            proto.connectionLost = connectionLost  # type: ignore[method-assign]
            return proto

        factory = Factory.forProtocol(build)  # type: ignore[arg-type]
        factory.noisy = False
        self._client = ClientService(
            _UnixEndpoint(reactor, path),
            factory,
            retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=MAX_RETRY_DELAY),
            clock=reactor,
        )

    def _connected(self, proto: Any) -> None:
        self.protocol = proto
        if self._reportedDown or self._wasUp:
            self.logger.notice(peer=self.peerName, socket=self.path, stat="connected")
        self._wasUp = True
        self._reportedDown = False
        if self.onConnected is not None:
            try:
                self.onConnected()
            except Exception:
                self.logger.failure("PeerConnection.onConnected", Failure())

    def _lost(self, proto: amp.AMP) -> None:
        if self.protocol is proto:
            self.protocol = None
            if self._stopping:
                self._failWaiters()
            if self.running:
                self._reportedDown = True
                self.logger.warn(
                    "PeerConnection", peer=self.peerName, socket=self.path, stat="lost"
                )
                self._watch()

    def _watch(self) -> None:
        """
        Say so (once) if there is still no connection after
        C{waitForServer}.
        """
        if self._watcher is None or not self._watcher.active():
            self._watcher = self.reactor.callLater(self.waitForServer, self._check)

    def _check(self) -> None:
        if self.running and self.protocol is None:
            self.logger.error(
                "PeerConnection",
                peer=self.peerName,
                socket=self.path,
                stat="unavailable",
                waited=self.waitForServer,
            )

    def startService(self) -> None:
        service.Service.startService(self)
        self._stopping = False
        self._client.startService()
        self._watch()

    def stopService(self) -> Any:
        service.Service.stopService(self)
        if self._watcher is not None and self._watcher.active():
            self._watcher.cancel()
        return self._client.stopService()

    def connection(self) -> defer.Deferred:
        """
        @return: a L{Deferred} firing with the connected protocol, or
            failing with L{PeerUnavailable} after C{waitForServer}.
        """
        if self.protocol is not None and self.protocol.transport is not None:
            return defer.succeed(self.protocol)
        if not self.running:
            return defer.fail(PeerUnavailable("%s: not started" % (self.peerName,)))
        if self._stopping:
            return defer.fail(self._stoppingError())
        out = defer.Deferred()  # type: defer.Deferred
        self._waiters.add(out)
        out.addBoth(self._waited, out)
        waiting = self._client.whenConnected()

        def timedOut() -> None:
            if not out.called:
                out.errback(
                    PeerUnavailable(
                        "%s unavailable (%s) for %gs"
                        % (self.peerName, self.path, self.waitForServer)
                    )
                )

        timer = self.reactor.callLater(self.waitForServer, timedOut)

        def stopTimer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        out.addBoth(stopTimer)

        def connected(proto: Any) -> None:
            if not out.called:
                timer.cancel()
                out.callback(proto)

        def failed(reason: Failure) -> None:
            if not out.called:
                timer.cancel()
                out.errback(PeerUnavailable("%s: %s" % (self.peerName, reason.value)))

        # in a later turn of the reactor: ClientService fires this inside
        # its state machine, which must not be re-entered (by a caller
        # that stops the service, for one)
        waiting.addCallbacks(
            lambda proto: self.reactor.callLater(0, connected, proto),
            lambda reason: self.reactor.callLater(0, failed, reason),
        )
        return out

    def _waited(self, result: Any, out: defer.Deferred) -> Any:
        self._waiters.discard(out)
        return result

    def _stoppingError(self) -> PeerUnavailable:
        return PeerUnavailable(
            "%s unavailable (%s) while stopping" % (self.peerName, self.path)
        )

    def stopWaiting(self) -> None:
        """
        This process is stopping: calls no longer wait for a connection
        that is not there (now or after a loss from now on) but fail at
        once with L{PeerUnavailable}, so that a stop does not wait
        C{waitForServer} for a peer that is gone (QMGR killed: the MCP
        stops SMTPS, whose commits in flight then get 451 at once).
        """
        self._stopping = True
        if self.protocol is None:
            self._failWaiters()

    def _failWaiters(self) -> None:
        for out in list(self._waiters):
            if not out.called:
                out.errback(self._stoppingError())

    def callRemote(
        self, command: Any, /, *, idempotent: bool = False, **kw: Any
    ) -> defer.Deferred:
        """
        Call C{command} on the peer, waiting for a connection first.

        @param idempotent: the call may be made again: if the connection
            ends before the answer (the peer is restarting), it is made
            once more on the next connection.
        @return: a L{Deferred} firing with the answer; it fails with
            L{PeerUnavailable} when there is no connection in time, and
            with C{ConnectionLost} when the connection ends before the
            answer.
        """
        proto = self.protocol
        if proto is not None and proto.transport is not None:
            # connected: no Deferred of the connection to chain through
            try:
                d = proto.callRemote(command, **kw)
            except Exception:
                d = defer.fail()
            if d is None:  # a command that needs no answer
                d = succeeded(None)
        else:
            d = self.connection().addCallback(lambda p: p.callRemote(command, **kw))
        if idempotent:

            def again(reason: Failure) -> Any:
                reason.trap(*GONE)
                return self.callRemote(command, **kw)

            d.addErrback(again)
        return d


@implementer(IStreamClientEndpoint)
class _UnixEndpoint:
    """
    A Unix client endpoint whose (possibly long) path is turned into a
    short name at each attempt: the socket's directory may be created
    after this process starts.
    """

    def __init__(self, reactor: Any, path: str) -> None:
        self.reactor = reactor
        self.path = path

    def connect(self, factory: Any) -> defer.Deferred:
        try:
            name = socketName(self.path)
        except OSError as e:
            return defer.fail(e)
        return endpoints.UNIXClientEndpoint(
            _SendingOncePerTurn(self.reactor), name, timeout=10
        ).connect(factory)


class _SendingOncePerTurn:
    """
    The C{connectUNIX} of a reactor, whose connections send once per
    reactor turn (L{smx.net.connectUNIX}), for an endpoint.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def connectUNIX(
        self, address: str, factory: Any, timeout: float = 30, checkPID: int = 0
    ) -> Any:
        return net.connectUNIX(
            self.reactor, address, factory, timeout=timeout, checkPID=checkPID
        )


def listenSocket(reactor: Any, path: str, factory: Any, mode: int = 0o660) -> Any:
    """
    Listen on the Unix socket C{path}: its directory is made if missing,
    a stale socket file is replaced.

    @return: the listening port.
    """
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    return net.listenUNIX(reactor, socketName(path), factory, mode=mode)
