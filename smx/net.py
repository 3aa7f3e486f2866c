# -*- test-case-name: smx.test.test_net -*-
"""
NAME
    smx.net - TCP transports that send at once, Unix transports that send
    once per turn; address literals

SYNOPSIS
    port = listenTCP(reactor, 25, factory, backlog=1024, interface="::")
    connector = connectTCP(reactor, "192.0.2.1", 25, factory, timeout=300)
    port = listenUNIX(reactor, "/var/spool/smx/qmgr/smtpssock", factory)
    connector = connectUNIX(reactor, "/var/spool/smx/qmgr/smtpssock", factory)
    isIPAddress("[192.0.2.1]")  # True

DESCRIPTION
    Twisted's TCP transport buffers every C{write} and sends it when the
    reactor next finds the socket writable: two C{epoll_ctl} calls (watch
    for writability, stop watching) and a trip through the reactor for
    each SMTP reply.  An SMTP session is a dozen small replies and
    commands, each of which fits in the socket's buffer, so most of that
    work is wasted.

    The transports here send a write at once with one C{send} when
    nothing is waiting before it, and hand only what the kernel did not
    take to Twisted's buffer.  Everything else (ordering, TLS, producers,
    closing after the last byte) stays Twisted's: the direct path is taken
    only when the connection is plain TCP, open, has no producer and has
    nothing buffered.  Likewise C{loseConnection} with nothing buffered
    closes at the end of the reactor's turn instead of first registering
    the socket for writing.

    The Unix transports of L{listenUNIX} and L{connectUNIX} (the AMP
    connections between the processes of split mode) gather what is
    written during a reactor turn and send it with one C{send} at the end
    of the turn (L{smx.turn}): a queue manager answers many commands in
    one turn, so the answers to one process still go out together, and
    none waits for a registration for writability.  What the kernel does
    not take, bytes that carry file descriptors, and anything written
    while Twisted's own buffer holds bytes go through Twisted's buffer,
    in order; C{loseConnection} sends the bytes of the turn first.

    L{listenTCP}, L{connectTCP}, L{listenUNIX} and L{connectUNIX} fall
    back to the reactor's own methods for a reactor that is not Twisted's
    POSIX reactor (the memory reactors of unit tests).

    L{isIPAddress} tells an address literal from a host name, and
    remembers the answer: SMTPC asks it of the next hop of every delivery
    (its TLS policy, MTA-STS, the certificate check).
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, Callable, Iterable, List, Optional, Tuple

from twisted.internet import main, tcp, unix
from twisted.internet.posixbase import PosixReactorBase

from smx._twistedcompat import (
    TCPConnector,
    UNIXConnector,
    canSendTCPNow,
    canSendUnixNow,
    disconnectSelectable,
    hasBufferedWrites,
)
from smx.turn import atEndOfTurn


class _DirectSend:
    """
    What the transports below share: bytes go straight to the socket when
    Twisted holds none before them.
    """

    #: may bytes go straight to the socket now (each kind of transport
    #: has its own test, from L{smx._twistedcompat})
    _canSendNow: Callable[..., bool]

    def _send(self, data: bytes) -> None:
        """
        Send C{data} with one C{send}; what the kernel does not take, and
        all of it when the socket is not plain and idle, goes to
        Twisted's buffer, in order (and what is not bytes to Twisted's
        C{write}, which refuses it).
        """
        if type(data) is not bytes or not self._canSendNow():
            super().write(data)  # type: ignore[misc]
            return
        try:
            sent = self.socket.send(data)  # type: ignore[attr-defined]
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # let the reactor's write find the error and close the
            # connection the usual way
            sent = 0
        if sent < len(data):
            super().write(data[sent:])  # type: ignore[misc]

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        self.write(b"".join(iovec))  # type: ignore[attr-defined]


class _SendAtOnce(_DirectSend):
    """
    Mixin for L{tcp.Connection}: C{write} sends at once when it can.
    """

    # plain TCP, open, without a producer, with nothing buffered
    _canSendNow = canSendTCPNow

    #: each write is sent at once (one call less per SMTP reply)
    write = _DirectSend._send

    def loseConnection(self, *args: Any, **kwargs: Any) -> None:
        if not self._canSendNow():
            super().loseConnection(*args, **kwargs)  # type: ignore[misc]
            return
        # nothing left to send: close at the end of this reactor turn,
        # without first watching for writability as Twisted does
        self.stopReading()  # type: ignore[attr-defined]
        setattr(self, "disconnecting", 1)
        atEndOfTurn(self.reactor, self._closeNow)  # type: ignore[attr-defined]

    def _closeNow(self) -> None:
        if not self.connected:  # type: ignore[attr-defined]
            return
        if hasBufferedWrites(self):
            # written after loseConnection: Twisted sends it, then closes
            self.startWriting()  # type: ignore[attr-defined]
            return
        disconnectSelectable(
            self.reactor, self, main.CONNECTION_DONE, False  # type: ignore[attr-defined]
        )


class Server(_SendAtOnce, tcp.Server):
    """
    An accepted TCP connection that sends at once.
    """


class Client(_SendAtOnce, tcp.Client):
    """
    An outgoing TCP connection that sends at once.
    """


class Port(tcp.Port):
    """
    A listening TCP port whose connections send at once.
    """

    transport = Server


class Connector(TCPConnector):
    """
    A TCP connector whose connection sends at once.
    """

    clientClass = Client


def listenTCP(
    reactor: Any, port: int, factory: Any, backlog: int = 50, interface: str = ""
) -> Any:
    """
    Like C{reactor.listenTCP}, with connections that send at once.
    """
    if not isinstance(reactor, PosixReactorBase):
        return reactor.listenTCP(port, factory, backlog=backlog, interface=interface)
    p = Port(port, factory, backlog, interface, reactor)
    p.startListening()
    return p


def connectTCP(
    reactor: Any,
    host: str,
    port: int,
    factory: Any,
    timeout: float = 30.0,
    bindAddress: Optional[Tuple[str, int]] = None,
) -> Any:
    """
    Like C{reactor.connectTCP}, with a connection that sends at once.
    """
    if not isinstance(reactor, PosixReactorBase):
        return reactor.connectTCP(
            host, port, factory, timeout=timeout, bindAddress=bindAddress
        )
    c = Connector(host, port, factory, timeout, bindAddress, reactor)
    c.connect()
    return c


class _SendAtEndOfTurn(_DirectSend):
    """
    Mixin for L{unix.Server} and L{unix.Client}: the bytes written during
    a reactor turn go with one C{send} at its end (see the module
    docstring).
    """

    #: the bytes written this turn, not sent yet (C{None}: none)
    _turnBytes = None  # type: Optional[List[bytes]]

    # open, without a producer, with nothing buffered by Twisted and no
    # file descriptor to send
    _canSendNow = canSendUnixNow

    def write(self, data: bytes) -> None:
        pending = self._turnBytes
        if pending is not None and type(data) is bytes:
            pending.append(data)
            return
        if type(data) is not bytes or not self._canSendNow():
            super().write(data)  # type: ignore[misc]
            return
        self._turnBytes = [data]
        atEndOfTurn(self.reactor, self.sendTurnBytes)  # type: ignore[attr-defined]

    def sendTurnBytes(self) -> None:
        """Send the bytes written this turn now."""
        pending, self._turnBytes = self._turnBytes, None
        if pending:
            self._send(b"".join(pending))

    def loseConnection(self, *args: Any, **kwargs: Any) -> None:
        self.sendTurnBytes()
        super().loseConnection(*args, **kwargs)  # type: ignore[misc]

    def loseWriteConnection(self) -> None:
        self.sendTurnBytes()
        super().loseWriteConnection()  # type: ignore[misc]

    def abortConnection(self) -> None:
        # what was not sent yet goes with the connection, as in Twisted's
        # buffer
        self._turnBytes = None
        super().abortConnection()  # type: ignore[misc]

    def connectionLost(self, reason: Any) -> None:
        self._turnBytes = None
        super().connectionLost(reason)  # type: ignore[misc]


class UNIXServer(_SendAtEndOfTurn, unix.Server):
    """
    An accepted Unix connection that sends once per reactor turn.
    """


class UNIXClient(_SendAtEndOfTurn, unix.Client):
    """
    An outgoing Unix connection that sends once per reactor turn.
    """


class UNIXPort(unix.Port):
    """
    A listening Unix socket whose connections send once per reactor turn.
    """

    transport = UNIXServer


class _UNIXConnector(UNIXConnector):
    clientClass = UNIXClient


def listenUNIX(
    reactor: Any, address: str, factory: Any, backlog: int = 50, mode: int = 0o666
) -> Any:
    """
    Like C{reactor.listenUNIX}, with connections that send once per turn.
    """
    if not isinstance(reactor, PosixReactorBase):
        return reactor.listenUNIX(address, factory, backlog=backlog, mode=mode)
    p = UNIXPort(address, factory, backlog, mode, reactor)  # type: ignore[arg-type]
    p.startListening()
    return p


def connectUNIX(
    reactor: Any, address: str, factory: Any, timeout: float = 30, checkPID: int = 0
) -> Any:
    """
    Like C{reactor.connectUNIX}, with a connection that sends once per
    turn.
    """
    if not isinstance(reactor, PosixReactorBase):
        return reactor.connectUNIX(address, factory, timeout=timeout, checkPID=checkPID)
    c = _UNIXConnector(address, factory, timeout, reactor, checkPID)
    c.connect()
    return c


@functools.lru_cache(maxsize=1024)
def isIPAddress(name: str) -> bool:
    """
    Is C{name} an IPv4 or IPv6 address, bare or in brackets
    (C{[192.0.2.1]})?  The answers for the last 1,024 names are kept.
    """
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True
