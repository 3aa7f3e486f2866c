# -*- test-case-name: smx.maps.test.test_integration_resolver -*-
"""
Maps of type C{socket} (seed §5.8.1): sendmail's socket map protocol over
a Unix domain or TCP socket.

A request is the netstring C{<len>:mapname key,}; the answer a netstring
C{OK value}, C{NOTFOUND}, C{TEMP reason}, C{TIMEOUT reason} or C{PERM
reason}.  One connection is kept open and requests are sent in order (the
protocol has no request ids; answers come in order).  A request that gets
no answer within C{timeout} seconds, a refused or lost connection, a
malformed answer, C{TEMP}, C{TIMEOUT} and C{PERM} all fail the lookup
temporarily (L{MapTemporaryError}); after a timeout or a malformed answer
the connection is dropped and the next lookup reconnects.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, List, Optional, Tuple

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from zope.interface import implementer

from smx.interfaces import IMap
from smx.log import Logger
from smx.maps.errors import MapTemporaryError
from smx.unixsocket import socketName

MAX_ANSWER = 100000


def netstring(data: bytes) -> bytes:
    """
    Encode C{data} as a netstring.
    """
    return b"%d:%s," % (len(data), data)


class NetstringError(Exception):
    """
    The peer sent something that is not a netstring.
    """


def parseNetstrings(buffer: bytes) -> Tuple[List[bytes], bytes]:
    """
    Split complete netstrings off C{buffer}.

    @return: C{(strings, rest)}.
    @raise NetstringError: on malformed input.
    """
    out = []  # type: List[bytes]
    while True:
        colon = buffer.find(b":")
        if colon < 0:
            if len(buffer) > 10 or (buffer and not buffer.isdigit()):
                raise NetstringError("bad length")
            return out, buffer
        head = buffer[:colon]
        if not head.isdigit() or len(head) > 10:
            raise NetstringError("bad length %r" % (head[:20],))
        size = int(head)
        if size > MAX_ANSWER:
            raise NetstringError("answer too long")
        end = colon + 1 + size
        if len(buffer) < end + 1:
            return out, buffer
        if buffer[end : end + 1] != b",":
            raise NetstringError("missing ','")
        out.append(buffer[colon + 1 : end])
        buffer = buffer[end + 1 :]


class SocketMapProtocol(protocol.Protocol):
    """
    The client side of one socket map connection.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self.waiting = deque()  # type: Deque[defer.Deferred]
        self.lost = defer.Deferred()  # type: defer.Deferred

    def request(self, mapname: str, key: str) -> defer.Deferred:
        d = defer.Deferred()  # type: defer.Deferred
        self.waiting.append(d)
        self.transport.write(  # type: ignore[union-attr]
            netstring(("%s %s" % (mapname, key)).encode("utf-8"))
        )
        return d

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        try:
            answers, self._buffer = parseNetstrings(self._buffer)
        except NetstringError as e:
            self._failAll(MapTemporaryError("socket map: malformed answer: %s" % (e,)))
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        for answer in answers:
            if not self.waiting:
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
            self.waiting.popleft().callback(answer)

    def _failAll(self, error: Exception) -> None:
        while self.waiting:
            self.waiting.popleft().errback(error)

    def connectionLost(self, reason: Any = None) -> None:
        self._failAll(MapTemporaryError("socket map: connection lost"))
        self.lost.callback(None)


@implementer(IMap)
class SocketMap:
    """
    A socket map client.

    @ivar mapname: the map name sent in requests.
    @ivar timeout: seconds to wait for an answer.
    """

    def __init__(
        self,
        name: str,
        reactor: Any,
        mapname: str,
        path: Optional[str] = None,
        address: Optional[str] = None,
        port: Optional[int] = None,
        timeout: float = 10.0,
        log: Optional[Logger] = None,
    ) -> None:
        self.name = name
        self.reactor = reactor
        self.mapname = mapname
        self.timeout = timeout
        self.log = log if log is not None else Logger("smar")
        self.endpoint = None  # type: Any
        if path:
            self.endpoint = UNIXClientEndpoint(
                reactor, socketName(path), timeout=timeout
            )
            self.where = path
        elif address and port:
            self.endpoint = TCP4ClientEndpoint(reactor, address, port, timeout=timeout)
            self.where = "%s:%d" % (address, port)
        else:
            raise ValueError("socket map %s needs a path or address and port" % (name,))
        self._proto = None  # type: Optional[SocketMapProtocol]
        self._connecting = None  # type: Optional[list]

    def _connect(self) -> defer.Deferred:
        proto = self._proto
        if proto is not None and getattr(proto.transport, "connected", False):
            return defer.succeed(proto)
        if self._connecting is None:
            self._connecting = []
            d = self.endpoint.connect(protocol.Factory.forProtocol(SocketMapProtocol))
            d.addBoth(self._cbConnected)
        waiter = defer.Deferred()  # type: defer.Deferred
        self._connecting.append(waiter)
        return waiter

    def _cbConnected(self, result: Any) -> None:
        waiters, self._connecting = self._connecting or [], None
        if isinstance(result, SocketMapProtocol):
            self._proto = result
            for w in waiters:
                w.callback(result)
        else:
            for w in waiters:
                w.errback(result)

    def lookup(self, key: str) -> defer.Deferred:
        result = defer.Deferred()  # type: defer.Deferred
        timer = self.reactor.callLater(self.timeout, self._timedOut, result, key)
        d = self._connect()
        d.addCallback(lambda proto: proto.request(self.mapname, key))
        d.addBoth(self._cbAnswer, result, timer, key)
        return result

    def _timedOut(self, result: defer.Deferred, key: str) -> None:
        self.log.error(
            "SocketMap.lookup",
            map=self.name,
            socket=self.where,
            key=key,
            error="timeout",
        )
        self._drop()
        if not result.called:
            result.errback(MapTemporaryError("socket map %s: timeout" % (self.name,)))

    def _cbAnswer(
        self, answer: Any, result: defer.Deferred, timer: Any, key: str
    ) -> None:
        if timer.active():
            timer.cancel()
        if result.called:
            return None
        if not isinstance(answer, bytes):
            error = getattr(answer, "value", answer)
            if not isinstance(error, MapTemporaryError):
                self.log.error(
                    "SocketMap.lookup",
                    map=self.name,
                    socket=self.where,
                    error=str(error),
                )
                error = MapTemporaryError("socket map %s: %s" % (self.name, error))
            result.errback(error)
            return None
        status, _, value = answer.decode("utf-8", "replace").partition(" ")
        if status == "OK":
            result.callback(value)
        elif status == "NOTFOUND":
            result.callback(None)
        else:
            self.log.info(map=self.name, key=key, socketmap=status, reason=value)
            result.errback(
                MapTemporaryError("socket map %s: %s %s" % (self.name, status, value))
            )
        return None

    def _drop(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.loseConnection()
        self._proto = None

    def reopen(self) -> None:
        self._drop()

    def close(self) -> None:
        self._drop()
