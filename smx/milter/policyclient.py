# -*- test-case-name: smx.milter.test.test_policyclient -*-
"""
NAME
    smx.milter.policyclient - a client of one Postfix SMTP access policy
    server

SYNOPSIS
    client = PolicyClient("greylist", "inet:127.0.0.1:10023", 10.0,
                          "tempfail", reactor, log)
    decision = yield client.check(policyAttributes("RCPT", session, ta,
                                                   recipient=rcpt))
    ...
    yield client.close()

DESCRIPTION
    L{PolicyClient} sends requests of the Postfix policy delegation
    protocol (L{smx.milter.policy}) to one server and gives back a
    L{PolicyDecision} for each.  As Postfix does, it keeps one connection
    open and uses it for request after request; requests wait their turn
    and are sent one at a time.  A connection closed by the server is
    opened again for the next request; a request that was sent on a
    connection that had served requests before and that is lost before
    the reply is sent once more on a new connection (Postfix's try limit
    of 2).  A connection is closed after C{MAX_IDLE} seconds without a
    request and, once it is older than C{MAX_TTL} seconds, after its
    current reply (Postfix's C{smtpd_policy_service_max_idle} and
    C{max_ttl}).

    L{PolicyClient.check} never fails.  When the server cannot be reached,
    does not answer within C{timeout} seconds of the call (waiting for the
    connection and for earlier requests included), closes the connection
    before the whole reply, or answers with something that is not the
    protocol (a line over 4 KB, a reply without C{action=}) or with an
    unknown action, the decision is the policy's C{default_action}
    (L{PolicyDecision.default} is C{True}), and a record with the policy's
    name says why.

CONFIGURATION PARAMETERS
    policy NAME { socket; timeout; default_action; }

    socket: C{unix:/path} or C{inet:host:port} (C{inet:[::1]:port});
    timeout: seconds a request may take; default_action: C{tempfail}
    (451 4.3.5 Server configuration problem, as Postfix), C{dunno},
    C{reject}, or an access(5) action.

DIAGNOSTICS
    C{sev=ERR, func=PolicyClient.check, policy=NAME, socket=...,
    error=...} when the default action is used; C{sev=WARN} for an action
    that was ignored (C{FILTER}, a malformed C{PREPEND}).  C{ValueError}
    from the constructor for a bad C{socket} or C{default_action}.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Mapping, Optional

from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from zope.interface import implementer

from smx.interfaces import IPolicyClient
from smx.log import Logger
from smx.milter.policy import (
    PolicyDecision,
    ReplyError,
    ReplyReader,
    UnknownAction,
    defaultDecision,
    encodeRequest,
    parseAction,
)
from smx.unixsocket import socketName

#: seconds an unused connection stays open (smtpd_policy_service_max_idle)
MAX_IDLE = 300.0

#: seconds after which a connection is closed once idle
#: (smtpd_policy_service_max_ttl)
MAX_TTL = 1000.0

#: times a request is sent when a reused connection is lost before the
#: reply (smtpd_policy_service_try_limit)
TRY_LIMIT = 2


@dataclass(frozen=True)
class PolicySocket:
    """
    Where a policy server listens.

    @ivar kind: C{"unix"} or C{"inet"}.
    @ivar path: the Unix socket's path.
    @ivar host: the host name or IP address.
    @ivar port: the TCP port.
    """

    kind: str
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "unix":
            return "unix:" + self.path
        if ":" in self.host:
            return "inet:[%s]:%d" % (self.host, self.port)
        return "inet:%s:%d" % (self.host, self.port)

    def endpoint(self, reactor: Any, timeout: float) -> Any:
        """
        A client endpoint that connects within C{timeout} seconds.
        """
        if self.kind == "unix":
            return UNIXClientEndpoint(reactor, socketName(self.path), timeout=timeout)
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            return HostnameEndpoint(reactor, self.host, self.port, timeout=timeout)
        if address.version == 6:
            return TCP6ClientEndpoint(reactor, self.host, self.port, timeout=timeout)
        return TCP4ClientEndpoint(reactor, self.host, self.port, timeout=timeout)


def parsePolicySocket(text: str) -> PolicySocket:
    """
    Parse C{unix:/path} or C{inet:host:port} (IPv6: C{inet:[::1]:port}),
    the forms of Postfix's C{check_policy_service}.

    @raise ValueError: with a message that says what is wrong.
    """
    kind, sep, rest = text.strip().partition(":")
    kind = kind.lower()
    if not sep or kind not in ("unix", "inet"):
        raise ValueError(
            "policy socket %r: expected unix:/path or inet:host:port" % (text,)
        )
    if kind == "unix":
        if not rest:
            raise ValueError("policy socket %r: no path" % (text,))
        return PolicySocket("unix", path=rest)
    if rest.startswith("["):
        host, bracket, portText = rest[1:].partition("]")
        if not bracket or not portText.startswith(":"):
            raise ValueError("policy socket %r: expected inet:[address]:port" % (text,))
        portText = portText[1:]
    else:
        host, _, portText = rest.rpartition(":")
        if ":" in host:
            raise ValueError(
                "policy socket %r: write an IPv6 address in brackets" % (text,)
            )
    if not host:
        raise ValueError("policy socket %r: no host" % (text,))
    if not (portText.isascii() and portText.isdigit()) or not 0 < int(portText) < 65536:
        raise ValueError("policy socket %r: bad port %r" % (text, portText))
    return PolicySocket("inet", host=host, port=int(portText))


class _Request:
    """
    One request waiting for its decision.
    """

    def __init__(self, data: bytes, state: str, instance: str) -> None:
        self.data = data
        self.state = state
        self.instance = instance
        self.result = defer.Deferred()  # type: defer.Deferred
        self.timer = None  # type: Optional[IDelayedCall]
        self.tries = 0
        self.reused = False


class PolicyProtocol(protocol.Protocol):
    """
    One connection to a policy server: bytes to replies, lost connection
    and protocol errors to the L{PolicyClient}.
    """

    def __init__(self, client: "PolicyClient") -> None:
        self.client = client
        self.reader = ReplyReader()
        self.served = 0
        self.connectedAt = 0.0
        self.closing = False

    def connectionMade(self) -> None:
        self.connectedAt = self.client.reactor.seconds()

    def send(self, data: bytes) -> None:
        """Write one encoded request."""
        self.transport.write(data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            replies = self.reader.feed(data)
        except ReplyError as e:
            self.abort()
            self.client._replyFailed(self, str(e))
            return
        for reply in replies:
            if self.closing:
                return
            self.served += 1
            self.client._replyReceived(self, reply)

    def abort(self) -> None:
        """Close the connection at once; nothing more is read from it."""
        self.closing = True
        transport = self.transport
        if transport is not None:
            if hasattr(transport, "abortConnection"):
                transport.abortConnection()
            else:
                transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.client._connectionLost(self, reason)


class _PolicyFactory(protocol.Factory):
    def __init__(self, client: "PolicyClient") -> None:
        self.client = client

    def buildProtocol(self, addr: Any) -> PolicyProtocol:
        return PolicyProtocol(self.client)


@implementer(IPolicyClient)
class PolicyClient:
    """
    The client of one policy server (one C{policy NAME { }} section).

    @ivar name: the policy's name, in every log record about it.
    @ivar socket: the server's L{PolicySocket}.
    @ivar timeout: seconds a request may take.
    @ivar defaultDecision: the decision when the server fails.
    @ivar endpoint: the client endpoint (replaceable in tests).
    """

    def __init__(
        self,
        name: str,
        socket: Any,
        timeout: float,
        defaultAction: str,
        reactor: Any,
        log: Optional[Logger] = None,
    ) -> None:
        """
        @param socket: a L{PolicySocket} or its text (L{parsePolicySocket}).
        @param defaultAction: C{tempfail}, C{dunno}, C{reject} or an
            access(5) action (L{smx.milter.policy.defaultDecision}).
        @raise ValueError: C{socket}, C{timeout} or C{defaultAction} is
            bad.
        """
        if timeout <= 0:
            raise ValueError("policy %s: timeout must be positive" % (name,))
        self.name = name
        self.socket = (
            socket if isinstance(socket, PolicySocket) else parsePolicySocket(socket)
        )
        self.timeout = timeout
        self.defaultDecision = defaultDecision(defaultAction)
        self.reactor = reactor
        self.log = log if log is not None else Logger("smtps")
        self.endpoint = self.socket.endpoint(reactor, timeout)
        self._waiting = deque()  # type: Deque[_Request]
        self._current = None  # type: Optional[_Request]
        self._proto = None  # type: Optional[PolicyProtocol]
        self._connecting = None  # type: Optional[defer.Deferred]
        self._idle = None  # type: Optional[IDelayedCall]
        self._closed = []  # type: List[defer.Deferred]
        self._stopped = False

    # -- the public API ------------------------------------------------

    def check(self, attributes: Mapping[str, Any]) -> defer.Deferred:
        """
        Ask the server about one protocol state.

        @param attributes: the request (L{smx.milter.policy.
            policyAttributes}); names to plain values.
        @return: a L{Deferred} firing with a L{PolicyDecision}; it never
            fails (the default action stands in for a failed request).
        """
        state = str(attributes.get("protocol_state", ""))
        instance = str(attributes.get("instance", ""))
        request = _Request(encodeRequest(attributes), state, instance)
        if self._stopped:
            self._fail(request, "client closed")
            return request.result
        request.timer = self.reactor.callLater(self.timeout, self._timedOut, request)
        self._waiting.append(request)
        self._next()
        return request.result

    def close(self) -> defer.Deferred:
        """
        Close the connection; requests still waiting get the default
        action.

        @return: a L{Deferred} firing once the connection is closed.
        """
        self._stopped = True
        self._cancelIdle()
        waiting, self._waiting = self._waiting, deque()
        if self._current is not None:
            waiting.appendleft(self._current)
            self._current = None
        if self._connecting is not None:
            self._connecting.cancel()
        proto = self._proto
        d = defer.succeed(None)  # type: defer.Deferred
        if proto is not None:
            d = defer.Deferred()
            self._closed.append(d)
            proto.closing = True
            if proto.transport is not None:
                proto.transport.loseConnection()
        for request in waiting:
            self._fail(request, "client closed")
        return d

    # -- sending ---------------------------------------------------------

    def _next(self) -> None:
        """
        Send the next waiting request if the connection is free; open the
        connection if there is none.
        """
        if self._current is not None or self._stopped:
            return
        if not self._waiting:
            self._startIdle()
            return
        self._cancelIdle()
        proto = self._proto
        if proto is None:
            self._connect()
            return
        request = self._waiting.popleft()
        self._current = request
        request.tries += 1
        request.reused = proto.served > 0
        proto.send(request.data)

    def _connect(self) -> None:
        if self._connecting is not None:
            return
        d = self.endpoint.connect(_PolicyFactory(self))
        self._connecting = d
        d.addCallbacks(self._cbConnected, self._ebConnect)

    def _cbConnected(self, proto: PolicyProtocol) -> None:
        self._connecting = None
        if self._stopped:
            proto.abort()
            return
        self._proto = proto
        self._next()

    def _ebConnect(self, reason: Failure) -> None:
        self._connecting = None
        if reason.check(defer.CancelledError):
            return
        why = _describe(reason)
        # a caller may ask again from its callback: that request waits for
        # a new connection attempt
        waiting, self._waiting = self._waiting, deque()
        for request in waiting:
            self._fail(request, "cannot connect: " + why)

    # -- replies -----------------------------------------------------------

    def _replyReceived(self, proto: PolicyProtocol, reply: Dict[str, str]) -> None:
        request = self._current
        if proto is not self._proto or request is None:
            proto.abort()
            self._dropped(proto)
            self.log.warn(
                "PolicyClient.check",
                policy=self.name,
                socket=str(self.socket),
                error="reply without a request",
            )
            return
        self._current = None
        # the connection is in order before the caller hears the decision
        # (it may ask again from its callback)
        if self.reactor.seconds() - proto.connectedAt >= MAX_TTL:
            self._retire(proto)
        try:
            decision = parseAction(reply["action"], request.state)
        except UnknownAction as e:
            self._fail(request, "%s: %s" % (e, reply["action"][:200]))
        else:
            if decision.warning:
                self.log.warn(
                    "PolicyClient.check",
                    policy=self.name,
                    socket=str(self.socket),
                    protocol_state=request.state,
                    action=decision.raw[:200],
                    error=decision.warning,
                )
            self._decided(request, decision)
        self._next()

    def _replyFailed(self, proto: PolicyProtocol, why: str) -> None:
        if proto is not self._proto:
            return
        self._dropped(proto)
        request, self._current = self._current, None
        if request is not None:
            self._fail(request, why)
        self._next()

    def _connectionLost(self, proto: PolicyProtocol, reason: Failure) -> None:
        if proto is not self._proto:
            return
        self._dropped(proto)
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)
        request, self._current = self._current, None
        if request is not None:
            if request.reused and request.tries < TRY_LIMIT:
                # a server may close an idle connection just as a request
                # is sent: try once more on a new one
                self._waiting.appendleft(request)
            else:
                partial = " (in the middle of a reply)" if proto.reader.pending else ""
                self._fail(
                    request,
                    "connection closed before the reply%s: %s"
                    % (partial, _describe(reason)),
                )
        self._next()

    def _timedOut(self, request: _Request) -> None:
        request.timer = None
        if request is self._current:
            self._current = None
            if self._proto is not None:
                proto = self._proto
                self._dropped(proto)
                proto.abort()
            self._fail(request, "timeout after %gs" % (self.timeout,))
            self._next()
            return
        try:
            self._waiting.remove(request)
        except ValueError:
            return
        self._fail(
            request,
            "timeout after %gs waiting for the connection" % (self.timeout,),
        )

    # -- decisions ---------------------------------------------------------

    def _decided(self, request: _Request, decision: PolicyDecision) -> None:
        if request.timer is not None and request.timer.active():
            request.timer.cancel()
        request.timer = None
        if not request.result.called:
            self.log.info(
                11,
                policy=self.name,
                protocol_state=request.state,
                instance=request.instance or None,
                action=decision.raw[:200],
                default=1 if decision.default else None,
            )
            request.result.callback(decision)

    def _fail(self, request: _Request, why: str) -> None:
        if request.result.called:
            return
        decision = self.defaultDecision
        self.log.error(
            "PolicyClient.check",
            policy=self.name,
            socket=str(self.socket),
            protocol_state=request.state or None,
            instance=request.instance or None,
            error=why,
            default_action=decision.raw,
        )
        self._decided(request, decision)

    # -- the connection ----------------------------------------------------

    def _dropped(self, proto: PolicyProtocol) -> None:
        if proto is self._proto:
            self._proto = None
            self._cancelIdle()

    def _retire(self, proto: PolicyProtocol) -> None:
        """Close a connection that served its time (C{MAX_TTL})."""
        self._dropped(proto)
        proto.closing = True
        if proto.transport is not None:
            proto.transport.loseConnection()

    def _startIdle(self) -> None:
        if self._proto is not None and self._idle is None:
            self._idle = self.reactor.callLater(MAX_IDLE, self._idleTimeout)

    def _cancelIdle(self) -> None:
        if self._idle is not None:
            if self._idle.active():
                self._idle.cancel()
            self._idle = None

    def _idleTimeout(self) -> None:
        self._idle = None
        proto = self._proto
        if proto is not None and self._current is None:
            self._retire(proto)


def _describe(reason: Failure) -> str:
    """A short text for a connection failure."""
    value = reason.value
    if isinstance(value, error.ConnectionDone):
        return "closed by the server"
    if isinstance(value, error.ConnectionLost):
        return "connection lost"
    if isinstance(value, error.ConnectError):
        return str(value).strip().rstrip(".") or value.__class__.__name__
    return "%s: %s" % (value.__class__.__name__, value)
