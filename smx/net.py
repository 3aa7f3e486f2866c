# -*- test-case-name: smx.test.test_net -*-
"""
NAME
    smx.net - TCP transports that send at once; address literals

SYNOPSIS
    port = listenTCP(reactor, 25, factory, backlog=1024, interface="::")
    connector = connectTCP(reactor, "192.0.2.1", 25, factory, timeout=300)
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

    L{listenTCP} and L{connectTCP} fall back to the reactor's own methods
    for a reactor that is not Twisted's POSIX reactor (the memory reactors
    of unit tests).

    L{isIPAddress} tells an address literal from a host name, and
    remembers the answer: SMTPC asks it of the next hop of every delivery
    (its TLS policy, MTA-STS, the certificate check).
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, Iterable, Optional, Tuple

from twisted.internet import main, tcp
from twisted.internet.posixbase import PosixReactorBase

from smx._twistedcompat import (
    TCPConnector,
    disconnectSelectable,
    hasBufferedWrites,
    writeDisconnected,
)


class _SendAtOnce:
    """
    Mixin for L{tcp.Connection}: C{write} sends at once when it can.
    """

    def _plainAndIdle(self) -> bool:
        """
        Plain TCP, open, without a producer, with nothing buffered: may a
        write go straight to the socket?
        """
        return not (
            self.TLS  # type: ignore[attr-defined]
            or hasBufferedWrites(self)
            or self.producer is not None  # type: ignore[attr-defined]
            or self.disconnecting  # type: ignore[attr-defined]
            or not self.connected  # type: ignore[attr-defined]
            or writeDisconnected(self)
        )

    def write(self, data: bytes) -> None:
        if not isinstance(data, bytes) or not self._plainAndIdle():
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
        self.write(b"".join(iovec))

    def loseConnection(self, *args: Any, **kwargs: Any) -> None:
        if not self._plainAndIdle():
            super().loseConnection(*args, **kwargs)  # type: ignore[misc]
            return
        # nothing left to send: close at the end of this reactor turn,
        # without first watching for writability as Twisted does
        self.stopReading()  # type: ignore[attr-defined]
        setattr(self, "disconnecting", 1)
        self.reactor.callLater(0, self._closeNow)  # type: ignore[attr-defined]

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
