# -*- test-case-name: smx.milter.test.test_client -*-
"""
NAME
    smx.milter.client - smx as the MTA of sendmail milters

SYNOPSIS
    settings = MilterSettings("dkim", parseSocket("unix:/run/opendkim.sock"),
                              connectTimeout=30, commandTimeout=30,
                              contentTimeout=300, defaultAction="tempfail")
    client = MilterClient(settings, reactor, log)
    session = client.session("ss_sess id")
    decision = yield session.connect(ConnectInfo(None, "inet", addr, port),
                                     connectMacros(hostname, addr, port))
    decision = yield session.helo("client.example")
    decision = yield session.mail("a@example.org", ["SIZE=1000"])
    decision = yield session.rcpt("b@example.net")
    decision = yield session.data()
    decision = yield session.headers([("Subject", " hello")])
    decision = yield session.eoh()
    decision = yield session.body(b"text\\r\\n")
    decision = yield session.endOfMessage()
    edited = applyModifications(headers, body, envelope,
                                decision.modifications)
    yield session.quit()

DESCRIPTION
    The Twisted adapter of L{smx.milter.protocol}: one L{MilterClient} per
    configured milter, one L{MilterSession} (one connection, as Postfix
    opens one per SMTP client: libmilter ends its side when the SMTP
    session ends) per SMTP session.  Every stage returns a L{Deferred}
    firing with a L{smx.milter.protocol.Decision}; it never fails.

    SMTPS calls the stages in SMTP order and waits for each decision
    before the next call: C{connect} when the client connects, C{helo} at
    HELO/EHLO, C{mail} at MAIL, C{rcpt} at RCPT (also for a recipient it
    rejected itself when L{MilterSession.wantsRejectedRecipients}, with
    L{smx.milter.macros.rejectedRecipientMacros}), C{data} at DATA, then
    C{header}/C{headers} (without smx's own C{Received:}), C{eoh},
    C{body} chunks and C{endOfMessage}, whose decision carries the
    modifications to make with L{smx.milter.modifications.
    applyModifications}; C{abort} at RSET or when a transaction ends
    early; C{unknown} for an unknown command; C{quit} at the end.

CONFIGURATION PARAMETERS
    L{MilterSettings}: the milter's C{socket} (L{parseSocket}:
    C{unix:/path}, C{local:/path}, C{inet:port@host}, C{inet6:port@host},
    C{inet:host:port}, C{inet:[::1]:port}); C{connectTimeout} (Postfix's
    C{milter_connect_timeout}, 30s); C{commandTimeout} for each reply to
    a command up to DATA (C{milter_command_timeout}, 30s);
    C{contentTimeout} for each reply to the header and body
    (C{milter_content_timeout}, 300s); C{defaultAction}, C{tempfail},
    C{reject} or C{accept} (C{milter_default_action}, tempfail); the
    macro lists (L{smx.milter.macros.DEFAULT_MACROS}).  A
    C{SMFIR_PROGRESS} restarts the timeout.

DIAGNOSTICS
    A milter that cannot be reached, does not reply within its timeout,
    closes the connection while a reply is awaited, or breaks the
    protocol: the stage and every later one get the default action
    (C{451 4.7.1 Service unavailable - try again later}, C{550 5.5.0
    Service unavailable}, or the milter is ignored), and one record is
    logged for the session::

        sev=WARN, func=MilterSession, milter=NAME, socket=SOCKET,
        ss_sess=..., stage=STAGE, reason=..., default_action=ACTION
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

from twisted.internet import defer, protocol
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.python import failure
from zope.interface import implementer

from smx.interfaces import IMilterClient, IMilterSession
from smx.log import Logger
from smx.milter.macros import DEFAULT_MACROS, MacroLists
from smx.milter.protocol import (
    NEED_DATA,
    ConnectInfo,
    Decision,
    Failed,
    MilterMachine,
    StageDone,
    failureDecision,
)
from smx.unixsocket import socketName

#: stages whose replies are waited for with the content timeout
CONTENT_STAGES = ("header", "eoh", "body", "eom")


@dataclass(frozen=True)
class MilterSocket:
    """
    Where a milter listens.

    @ivar family: C{"unix"}, C{"inet"} or C{"inet6"}.
    @ivar path: the socket path (C{"unix"}).
    @ivar host: the host name or address (without brackets).
    @ivar port: the TCP port.
    """

    family: str
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.family == "unix":
            return "unix:" + self.path
        return "%s:%d@%s" % (self.family, self.port, self.host)


_SOCKET_FORMS = "unix:/path, inet:port@host, inet6:port@host or inet:host:port"


def _port(text: str, whole: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ValueError(
            "milter socket %r: port %r is not a number from 1 to 65535" % (whole, text)
        )
    return int(text)


def parseSocket(text: str) -> MilterSocket:
    """
    A milter socket in sendmail or Postfix notation: C{unix:/path} (or
    C{local:/path}), C{inet:port@host}, C{inet6:port@host}, and
    C{inet:host:port}, C{inet:[::1]:port}.

    @raise ValueError: with a message naming the socket.
    """
    kind, colon, rest = text.strip().partition(":")
    kind = kind.lower()
    if not colon or not rest:
        raise ValueError("milter socket %r: expected %s" % (text, _SOCKET_FORMS))
    if kind in ("unix", "local"):
        if not rest.startswith("/"):
            raise ValueError(
                "milter socket %r: the path of a unix socket must be absolute" % (text,)
            )
        return MilterSocket("unix", path=rest)
    if kind not in ("inet", "inet6"):
        raise ValueError("milter socket %r: expected %s" % (text, _SOCKET_FORMS))
    if "@" in rest:
        port, _, host = rest.partition("@")
    elif rest.startswith("["):
        host, bracket, port = rest[1:].partition("]:")
        if not bracket:
            raise ValueError("milter socket %r: expected [address]:port" % (text,))
    else:
        host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    if not host:
        raise ValueError("milter socket %r: no host" % (text,))
    number = _port(port, text)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return MilterSocket(kind, host=host, port=number)
    family = "inet6" if address.version == 6 else "inet"
    if kind == "inet6" and family == "inet":
        raise ValueError("milter socket %r: %s is not an IPv6 address" % (text, host))
    return MilterSocket(family, host=host, port=number)


@dataclass(frozen=True)
class MilterSettings:
    """
    One configured milter.

    @ivar name: its name in the configuration, for log records.
    @ivar maxBodySize: the longest replacement body accepted (0: any).
    """

    name: str
    socket: MilterSocket
    connectTimeout: float
    commandTimeout: float
    contentTimeout: float
    defaultAction: str
    macros: MacroLists = DEFAULT_MACROS
    maxBodySize: int = 0

    def __post_init__(self) -> None:
        failureDecision(self.defaultAction, "")


def endpointFor(reactor: Any, socket: MilterSocket, timeout: float) -> Any:
    """
    The client endpoint of C{socket}.

    @raise OSError: a Unix socket path that cannot be used
        (L{smx.unixsocket.SocketNameError}).
    """
    if socket.family == "unix":
        return UNIXClientEndpoint(reactor, socketName(socket.path), timeout=timeout)
    try:
        address = ipaddress.ip_address(socket.host)
    except ValueError:
        return HostnameEndpoint(reactor, socket.host, socket.port, timeout=timeout)
    if address.version == 6:
        return TCP6ClientEndpoint(reactor, socket.host, socket.port, timeout=timeout)
    return TCP4ClientEndpoint(reactor, socket.host, socket.port, timeout=timeout)


class MilterProtocol(protocol.Protocol):
    """
    The connection to a milter: bytes to and from a L{MilterSession}.
    """

    def __init__(self, session: MilterSession) -> None:
        self.session = session

    def connectionMade(self) -> None:
        self.session._connected(self)

    def dataReceived(self, data: bytes) -> None:
        self.session._dataReceived(data)

    def connectionLost(self, reason: failure.Failure = protocol.connectionDone) -> None:
        self.session._connectionLost(self, reason)


class _Factory(protocol.Factory):
    noisy = False  # one per SMTP session: no "Starting factory" records

    def __init__(self, session: MilterSession) -> None:
        self.session = session

    def buildProtocol(self, addr: Any) -> MilterProtocol:
        p = MilterProtocol(self.session)
        p.factory = self
        return p


@implementer(IMilterClient)
class MilterClient:
    """
    One configured milter; it makes a L{MilterSession} per SMTP session.
    """

    def __init__(
        self,
        settings: MilterSettings,
        reactor: Any,
        log: Logger,
        endpoint: Optional[Callable[[], IStreamClientEndpoint]] = None,
    ) -> None:
        """
        @param endpoint: makes the endpoint to connect to (for tests);
            by default the one of C{settings.socket}.
        """
        self.settings = settings
        self.reactor = reactor
        self.log = log
        self._endpoint = endpoint

    @property
    def name(self) -> str:
        return self.settings.name

    def endpoint(self) -> IStreamClientEndpoint:
        """A client endpoint of the milter's socket."""
        if self._endpoint is not None:
            return self._endpoint()
        return endpointFor(  # type: ignore[no-any-return]
            self.reactor, self.settings.socket, self.settings.connectTimeout
        )

    def session(self, sessionId: Optional[str] = None) -> MilterSession:
        """
        @param sessionId: the SMTP session's id (C{ss_sess}), for log
            records.
        """
        return MilterSession(self, sessionId)


@implementer(IMilterSession)
class MilterSession:
    """
    One SMTP session's connection to one milter.

    @ivar machine: its L{MilterMachine}.
    """

    def __init__(self, client: MilterClient, sessionId: Optional[str]) -> None:
        self.client = client
        self.sessionId = sessionId
        settings = client.settings
        self.machine = MilterMachine(
            settings.defaultAction, settings.macros, maxBodySize=settings.maxBodySize
        )
        self._protocol = None  # type: Optional[MilterProtocol]
        self._connecting = None  # type: Optional[defer.Deferred]
        self._pending = None  # type: Optional[defer.Deferred]
        self._stage = "connect"
        self._timer = None  # type: Optional[IDelayedCall]
        self._timerKey = None  # type: Optional[Tuple[str, int]]
        self._closing = False
        self._lost = []  # type: List[defer.Deferred]
        #: stages called, and those answered by the default action
        self.calls = 0
        self.failures = 0

    @property
    def wantsRejectedRecipients(self) -> bool:
        """Should RCPT be called for recipients smx rejected, too?"""
        return self.machine.wantsRejectedRecipients

    # Stages.

    def connect(
        self, info: ConnectInfo, macros: Optional[Mapping[str, str]] = None
    ) -> defer.Deferred:
        """
        Connect to the milter, negotiate, and report the SMTP client.
        """
        self._stage = "connect"
        try:
            self.machine.connect(info, macros)
        except ValueError as e:
            return self._counted(defer.succeed(self._failNow("connect: %s" % (e,))))
        self._pending = defer.Deferred()
        d = self._counted(self._pending)
        try:
            endpoint = self.client.endpoint()
        except OSError as e:
            self._fail("cannot connect: %s" % (e,))
            return d
        settings = self.client.settings
        connecting = endpoint.connect(_Factory(self))
        connecting.addTimeout(settings.connectTimeout, self.client.reactor)
        self._connecting = connecting
        connecting.addErrback(self._ebConnect)
        return d

    def helo(
        self, name: str, macros: Optional[Mapping[str, str]] = None
    ) -> defer.Deferred:
        """HELO or EHLO."""
        return self._call("helo", self.machine.helo, name, macros)

    def mail(
        self,
        sender: str,
        parameters: Sequence[str] = (),
        macros: Optional[Mapping[str, str]] = None,
    ) -> defer.Deferred:
        """MAIL; C{sender} without brackets."""
        return self._call("mail", self.machine.mail, sender, parameters, macros)

    def rcpt(
        self,
        recipient: str,
        parameters: Sequence[str] = (),
        macros: Optional[Mapping[str, str]] = None,
    ) -> defer.Deferred:
        """RCPT; C{recipient} without brackets."""
        return self._call("rcpt", self.machine.rcpt, recipient, parameters, macros)

    def data(self, macros: Optional[Mapping[str, str]] = None) -> defer.Deferred:
        """DATA."""
        return self._call("data", self.machine.data, macros)

    def header(self, name: str, value: str) -> defer.Deferred:
        """One header field (value as in the message, after the colon)."""
        return self.headers([(name, value)])

    def headers(
        self,
        fields: Sequence[Tuple[str, str]],
        macros: Optional[Mapping[str, str]] = None,
    ) -> defer.Deferred:
        """Header fields, in order."""
        return self._call("header", self.machine.headers, fields, macros)

    def eoh(self, macros: Optional[Mapping[str, str]] = None) -> defer.Deferred:
        """The end of the header."""
        return self._call("eoh", self.machine.eoh, macros)

    def body(self, chunk: bytes) -> defer.Deferred:
        """Some of the body (CRLF line ends)."""
        return self._call("body", self.machine.body, chunk)

    def endOfMessage(
        self, macros: Optional[Mapping[str, str]] = None
    ) -> defer.Deferred:
        """The end of the message: the decision has the modifications."""
        return self._call("eom", self.machine.endOfMessage, macros)

    def unknown(
        self, command: str, macros: Optional[Mapping[str, str]] = None
    ) -> defer.Deferred:
        """An unknown SMTP command."""
        return self._call("unknown", self.machine.unknown, command, macros)

    def abort(self) -> None:
        """The transaction ended early (RSET, a rejection, ...)."""
        self.machine.abort()
        self._flush()

    def quit(self) -> defer.Deferred:
        """
        The SMTP session ended.  A stage still waiting gets the default
        action at once (without a log record).

        @return: a L{Deferred} firing when the connection is closed.
        """
        pending, self._pending = self._pending, None
        self.machine.quit()
        if self._connecting is not None:
            self._connecting.cancel()
        self._flush()
        self._updateTimer()
        if pending is not None:
            pending.callback(
                self.machine.defaultDecision(
                    "the session ended before the milter replied"
                )
            )
        if self.calls:
            # counted by smx.metrics (smx_milter_calls_total, ...)
            self.client.log.debug(
                milter=self.client.settings.name,
                ss_sess=self.sessionId,
                milter_calls=self.calls,
                milter_failures=self.failures,
            )
            self.calls = self.failures = 0
        if self._protocol is None:
            return defer.succeed(None)
        d = defer.Deferred()  # type: defer.Deferred
        self._lost.append(d)
        return d

    # Internals.

    def _call(
        self, stage: str, method: Callable[..., Optional[Decision]], *args: Any
    ) -> defer.Deferred:
        if self._pending is not None:
            raise RuntimeError(
                "MilterSession.%s: called while %s waits" % (stage, self._stage)
            )
        self._stage = stage
        try:
            decision = method(*args)
        except ValueError as e:
            decision = self.machine.fail("%s: %s" % (stage, e))
        if decision is not None:
            self._process()
            return self._counted(defer.succeed(decision))
        self._pending = defer.Deferred()
        d = self._counted(self._pending)
        self._process()
        return d

    def _counted(self, d: defer.Deferred) -> defer.Deferred:
        self.calls += 1

        def _count(decision: Decision) -> Decision:
            if decision.failure is not None:
                self.failures += 1
            return decision

        return d.addCallback(_count)

    def _failNow(self, reason: str) -> Decision:
        decision = self.machine.fail(reason)
        self._process()
        return decision

    def _connected(self, p: MilterProtocol) -> None:
        self._protocol = p
        self._connecting = None
        self._process()

    def _ebConnect(self, reason: failure.Failure) -> None:
        self._connecting = None
        if reason.check(defer.CancelledError) and self.machine.wantsClose:
            return
        if reason.check(defer.TimeoutError):
            message = "no connection within %gs" % (
                self.client.settings.connectTimeout,
            )
        else:
            message = reason.getErrorMessage()
        self._fail("cannot connect: %s" % (message,))

    def _dataReceived(self, data: bytes) -> None:
        self.machine.receiveData(data)
        self._process()

    def _connectionLost(self, p: MilterProtocol, reason: failure.Failure) -> None:
        self._protocol = None
        if not self.machine.wantsClose:
            self._fail("connection closed by the milter")
        self._cancelTimer()
        lost, self._lost = self._lost, []
        for d in lost:
            d.callback(None)

    def _fail(self, reason: str) -> None:
        self.machine.fail(reason)
        self._process()

    def _timedOut(self, stage: str, seconds: float) -> None:
        self._timer = None
        self._fail("no reply to %s within %gs" % (stage, seconds))

    def _process(self) -> None:
        """Act on the machine's events, write its bytes, keep the timer."""
        while True:
            event = self.machine.nextEvent()
            if event is NEED_DATA:
                break
            if isinstance(event, Failed):
                self._logFailure(event.reason)
            elif isinstance(event, StageDone):
                d, self._pending = self._pending, None
                if d is not None:
                    d.callback(event.decision)
        self._flush()
        self._updateTimer()

    def _flush(self) -> None:
        if self._protocol is None:
            if self.machine.wantsClose and self._connecting is not None:
                self._connecting.cancel()
            return
        transport = self._protocol.transport
        assert transport is not None, "MilterSession._flush: no transport"
        data = self.machine.dataToSend()
        if data:
            transport.write(data)
        if self.machine.wantsClose and not self._closing:
            self._closing = True
            transport.loseConnection()

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._timerKey = None

    def _updateTimer(self) -> None:
        awaiting = self.machine.awaiting
        if awaiting is None or self._protocol is None:
            self._cancelTimer()
            return
        self._stage = awaiting if awaiting != "optneg" else "connect"
        key = (awaiting, self.machine.repliesReceived)
        if self._timer is not None and self._timerKey == key:
            return
        self._cancelTimer()
        settings = self.client.settings
        seconds = (
            settings.contentTimeout
            if awaiting in CONTENT_STAGES
            else settings.commandTimeout
        )
        self._timerKey = key
        self._timer = self.client.reactor.callLater(
            seconds, self._timedOut, awaiting, seconds
        )

    def _logFailure(self, reason: str) -> None:
        settings = self.client.settings
        self.client.log.warn(
            "MilterSession",
            milter=settings.name,
            socket=str(settings.socket),
            ss_sess=self.sessionId,
            stage=self._stage,
            reason=reason,
            default_action=settings.defaultAction,
        )
