# -*- test-case-name: smx.pmilter.test.test_remote,smx.pmilter.test.test_integration_pmilterserver -*-
"""
NAME
    smx.pmilter.remote - the pmilters of a C{smx pmilter-server}, as a host

SYNOPSIS
    host = RemotePolicyMilterHost(reactor, "/var/spool/smx/pmilter.sock",
                                  timeout=5, onFailure="tempfail",
                                  hostname="mx.example.org", log=log)
    host.startService()
    session = host.openSession(sessionId)      # as PolicyMilterHost

DESCRIPTION
    Provides the same API as L{smx.pmilter.host.PolicyMilterHost}
    (L{smx.interfaces.IPolicyMilterHost}) for the pmilters that run in
    another process behind the Unix socket of seed §5.9 (C{pmilter {
    socket; timeout; }}), so that SMTPS uses both the same way.  The
    connection is the SMTP server's (App. B.1 C{pmss_ctx}): it is opened
    at start with C{Negotiate} (App. B.3), which also tells which
    callbacks the pmilters want; the calls they do not want are answered
    here without a round trip, the content is sent only if one wants it.

    Failures: C{timeout} applies to every command.  A server that cannot
    be reached, that closes the connection or does not answer in time,
    and an answer that is not a valid decision give the failure policy's
    decision (C{tempfail}: 451 4.3.0; C{accept}: no objection), flagged
    C{failed}.  Being unreachable is logged once when the connection is
    lost or cannot be made and once when it is back (C{sev=ERR},
    C{pmilter=} the names of the server's pmilters, C{socket=} the path);
    the connection is tried again when a session opens, at most once per
    C{timeout}.  Sessions that were open on a lost connection fail until
    they end.  The failures of the pmilters themselves are logged by the
    server.
"""

from __future__ import annotations

import itertools
from typing import Any, FrozenSet, List, Optional, Sequence

from twisted.application import service
from twisted.internet import defer, endpoints, error
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from smx.interfaces import IPolicyMilterHost, IPolicyMilterSession
from smx.log import Logger
from smx.pmilter.api import CAP_RCPT_ST, CAPABILITIES, PMM_DOT_MSGID, STAGES
from smx.pmilter.content import MessageIdScanner
from smx.pmilter.decision import (
    CONTINUE,
    FAILURE_POLICIES,
    TEMPFAIL,
    Decision,
    Nonsense,
    failureDecision,
)
from smx.pmilter.host import (
    TRANSACTION_CALLBACKS,
    CallTimeout,
    SerialCalls,
    callWithTimeout,
    follow,
    hasResult,
)
from smx.pmilter.protocol import (
    MAX_CHUNK,
    PROTOCOL_VERSION,
    Abort,
    Body,
    Close,
    Connect,
    Data,
    Eom,
    Helo,
    Mail,
    Negotiate,
    Rcpt,
    Reload,
    Unknown,
    clip,
)
from smx.pmilter.server import addressFields
from smx.queue.control import QuietAMP
from smx.unixsocket import socketName

#: the errors of a connection that ended
_GONE = (error.ConnectionClosed, error.ConnectionLost, error.ConnectionDone)


class _ClientProtocol(QuietAMP):
    """
    The connection to the pmilter server; tells the host when it ends.
    """

    def __init__(self, host: "RemotePolicyMilterHost") -> None:
        QuietAMP.__init__(self)
        self.host = host

    def connectionLost(self, reason: Failure = error.ConnectionDone()) -> None:  # type: ignore[assignment]
        # the host knows first: the calls failed below must not make more
        self.host._lost(self)
        QuietAMP.connectionLost(self, reason)


@implementer(IPolicyMilterHost)
class RemotePolicyMilterHost(service.Service):
    """
    The pmilters behind a Unix socket (see the module docstring).

    @ivar state: C{"new"}, C{"connecting"}, C{"up"} or C{"down"}.
    @ivar pmilters: the names of the server's pmilters, once negotiated.
    @ivar wants: the callbacks they want (L{PolicyMilterHost.wanted}).
    """

    name = "pmilter-socket"

    def __init__(
        self,
        reactor: Any,
        path: str,
        timeout: float,
        onFailure: str = TEMPFAIL,
        hostname: str = "localhost",
        log: Optional[Logger] = None,
        stages: Sequence[str] = STAGES,
        capabilities: Sequence[str] = CAPABILITIES,
        clock: Any = None,
        connector: Any = None,
    ) -> None:
        """
        @param reactor: connects to the socket.
        @param path: the Unix socket of the pmilter server.
        @param timeout: seconds each command may take.
        @param onFailure: C{"tempfail"} or C{"accept"}.
        @param hostname: the SMTP server's name.
        @param clock: times the commands (default: C{reactor}).
        @param connector: C{connector(protocol) -> Deferred} connecting a
            protocol to the server (default: the Unix socket C{path}).
        """
        if onFailure not in FAILURE_POLICIES:
            raise ValueError("on_failure must be one of %s" % (FAILURE_POLICIES,))
        if log is None:
            from smx.log import Logger

            log = Logger("smtps")
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.path = path
        self.timeout = timeout
        self.onFailure = onFailure
        self.hostname = hostname
        self.log = log
        self.stages = list(stages)
        self.capabilities = list(capabilities)
        self._connector = connector if connector is not None else self._connectUNIX
        self.protocol = None  # type: Optional[_ClientProtocol]
        self.state = "new"
        self.pmilters = []  # type: List[str]
        self.wants = frozenset()  # type: FrozenSet[str]
        self.pending = None  # type: Optional[defer.Deferred]
        self.lastAttempt = None  # type: Optional[float]
        self._handles = itertools.count(1)

    @property
    def label(self) -> str:
        """
        How logs name the pmilters: their names once known, else the
        socket.
        """
        return "+".join(self.pmilters) if self.pmilters else "socket:" + self.path

    # -- the connection -----------------------------------------------------

    def startService(self) -> None:
        service.Service.startService(self)
        self.connect()

    def stopService(self) -> Any:
        service.Service.stopService(self)
        proto, self.protocol = self.protocol, None
        if proto is not None and proto.transport is not None:
            proto.transport.loseConnection()
        self.state = "new"
        return None

    def _connectUNIX(self, protocol: _ClientProtocol) -> defer.Deferred:
        endpoint = endpoints.UNIXClientEndpoint(
            self.reactor, socketName(self.path), timeout=max(1, int(self.timeout))
        )
        return endpoints.connectProtocol(endpoint, protocol)

    def connect(self) -> defer.Deferred:
        """
        Connect and negotiate, unless that is under way.

        @return: a L{Deferred} that fires (with C{None}) when it is done.
        """
        if self.pending is not None:
            return follow(self.pending)
        wasDown = self.state == "down"
        if self.state == "new":
            self.state = "connecting"
        self.lastAttempt = self.clock.seconds()
        proto = _ClientProtocol(self)
        holder = []  # type: List[Any]

        def _negotiate() -> defer.Deferred:
            d = defer.maybeDeferred(self._connector, proto)

            def _cbConnected(_: Any) -> defer.Deferred:
                holder.append(proto)
                return proto.callRemote(
                    Negotiate,
                    version=PROTOCOL_VERSION,
                    hostname=clip(self.hostname),
                    stages=self.stages,
                    capabilities=self.capabilities,
                    onFailure=self.onFailure,
                )

            return d.addCallback(_cbConnected)

        d = callWithTimeout(self.clock, self.timeout, _negotiate)

        def _cbNegotiated(answer: Any) -> None:
            self.protocol = proto
            self.pmilters = list(answer["pmilters"])
            self.wants = frozenset(answer["wants"])
            self.state = "up"
            if wasDown:
                self.log.notice(pmilter=self.label, socket=self.path, status="up")

        def _ebFailed(reason: Failure) -> None:
            if holder and proto.transport is not None:
                proto.transport.loseConnection()
            if not wasDown:
                self.log.error(
                    "RemotePolicyMilterHost.connect",
                    pmilter=self.label,
                    socket=self.path,
                    error=_describe(reason, self.timeout),
                    action=self.onFailure,
                )
            self.state = "down"

        def _cbDone(_: Any) -> None:
            self.pending = None

        d.addCallback(_cbNegotiated)
        d.addErrback(_ebFailed)
        d.addBoth(_cbDone)
        if not hasResult(d):
            self.pending = d
        return follow(d)

    def _lost(self, proto: _ClientProtocol) -> None:
        """
        The connection C{proto} ended.
        """
        if proto is not self.protocol:
            return
        self.protocol = None
        if self.running and self.state == "up":
            self.state = "down"
            self.log.error(
                "RemotePolicyMilterHost.connection",
                pmilter=self.label,
                socket=self.path,
                error="connection lost",
                action=self.onFailure,
            )

    # -- the host API -------------------------------------------------------

    def openSession(self, sessionId: str) -> "RemoteSession":
        """
        A new SMTP session (see L{smx.pmilter.host.PolicyMilterHost}).
        """
        now = self.clock.seconds()
        if self.state == "new" or (
            self.state == "down"
            and (self.lastAttempt is None or now - self.lastAttempt >= self.timeout)
        ):
            self.connect()
        return RemoteSession(self, sessionId, next(self._handles))

    def reload(self) -> None:
        """
        Ask the server to reload its pmilters (SIGUSR1).
        """
        if self.protocol is None:
            return
        d = self.protocol.callRemote(Reload)
        d.addErrback(
            lambda f: self.log.error(
                "RemotePolicyMilterHost.reload",
                pmilter=self.label,
                socket=self.path,
                error=f.getErrorMessage(),
            )
        )


def _describe(reason: Failure, timeout: float) -> str:
    if reason.check(CallTimeout):
        return "no answer within %gs" % (timeout,)
    if reason.check(amp.RemoteAmpError):
        return str(getattr(reason.value, "description", reason.value))
    return reason.getErrorMessage() or getattr(reason.type, "__name__", "error")


@implementer(IPolicyMilterSession)
class RemoteSession:
    """
    One SMTP session on the pmilter server.
    """

    def __init__(self, host: RemotePolicyMilterHost, sessionId: str, handle: int):
        self.host = host
        self.sessionId = sessionId
        self.handle = handle
        self._proto = None  # type: Optional[_ClientProtocol]
        self._opened = False
        self._wants = frozenset()  # type: FrozenSet[str]
        self._failed = False
        self._inTransaction = False
        self._bodyFailure = None  # type: Optional[Decision]
        self._messageId = None  # type: Optional[MessageIdScanner]
        self._calls = SerialCalls()

    # -- the calls ------------------------------------------------------------

    def _failure(self) -> Decision:
        return failureDecision(self.host.label, self.host.onFailure)

    def _alive(self) -> bool:
        return (
            self._proto is not None
            and self._proto is self.host.protocol
            and not self._failed
        )

    @defer.inlineCallbacks
    def _command(self, name: str, cmd: Any, **kwargs: Any) -> Any:
        """
        Send one command; its answer, or the failure (logged).

        @return: C{(answer or None, failure decision or None)}.
        """
        host = self.host
        assert self._proto is not None
        try:
            answer = yield callWithTimeout(
                host.clock,
                host.timeout,
                self._proto.callRemote,
                cmd,
                session=self.handle,
                **kwargs,
            )
        except Exception:
            reason = Failure()
            if reason.check(*_GONE):
                # the lost connection is logged once by the host
                self._failed = True
            else:
                host.log.error(
                    "RemotePolicyMilterHost.call",
                    pmilter=host.label,
                    socket=host.path,
                    callback=name,
                    ss_sess=self.sessionId,
                    error=_describe(reason, host.timeout),
                    action=host.onFailure,
                )
            return None, self._failure()
        return answer, None

    @defer.inlineCallbacks
    def _decision(self, name: str, cmd: Any, **kwargs: Any) -> Any:
        answer, failed = yield self._command(name, cmd, **kwargs)
        if failed is not None:
            return failed
        try:
            return Decision.fromFields(answer)
        except Nonsense as e:
            self.host.log.error(
                "RemotePolicyMilterHost.call",
                pmilter=self.host.label,
                socket=self.host.path,
                callback=name,
                ss_sess=self.sessionId,
                error=str(e),
                action=self.host.onFailure,
            )
            return self._failure()

    @defer.inlineCallbacks
    def _ask(self, name: str, cmd: Any, force: bool = False, **kwargs: Any) -> Any:
        """
        Send a decision stage, unless no pmilter of the server wants it.

        @param force: send it all the same (MAIL and the final dot, which
            begin and end the server's transaction).
        """
        if not self._opened:
            decision = yield self._open(None, None)
            if decision.final:
                return decision
        if not self._alive():
            return self._failure()
        if name not in self._wants and not force:
            return CONTINUE
        decision = yield self._decision(name, cmd, **kwargs)
        return decision

    @defer.inlineCallbacks
    def _open(self, hostname: Optional[str], address: Any) -> Any:
        host = self.host
        self._opened = True
        if host.pending is not None:
            yield follow(host.pending)
        if host.protocol is None:
            self._failed = True
            return self._failure()
        self._proto = host.protocol
        fields = addressFields(address)
        if hostname is not None:
            fields["hostname"] = clip(hostname)
        answer, failed = yield self._command(
            "connect", Connect, sessionId=clip(self.sessionId), **fields
        )
        if failed is not None:
            self._failed = True
            return failed
        self._wants = frozenset(answer.pop("wants"))
        try:
            return Decision.fromFields(answer)
        except Nonsense:
            return self._failure()

    # -- the stages -----------------------------------------------------------

    def connect(self, hostname: Optional[str], address: Any) -> defer.Deferred:
        return self._calls.run(self._open, hostname, address, closed=CONTINUE)

    def helo(self, helohost: str) -> defer.Deferred:
        return self._calls.run(self._helo, helohost, closed=CONTINUE)

    def _helo(self, helohost: str) -> defer.Deferred:
        self._endTransaction()
        return self._ask("helo", Helo, helohost=clip(helohost))

    def mail(
        self, address: str, args: Sequence[str], transactionId: Optional[str] = None
    ) -> defer.Deferred:
        return self._calls.run(
            self._mail, address, list(args), transactionId, closed=CONTINUE
        )

    @defer.inlineCallbacks
    def _mail(self, address: str, args: List[str], transactionId: Optional[str]):
        self._endTransaction()
        kwargs = {"address": clip(address), "args": [clip(a) for a in args]}
        if transactionId is not None:
            kwargs["transactionId"] = clip(transactionId)
        decision = yield self._ask(
            "mail", Mail, force=bool(self._wants & TRANSACTION_CALLBACKS), **kwargs
        )
        if not decision.rejected and self._alive():
            self._inTransaction = bool(self._wants & TRANSACTION_CALLBACKS)
            if PMM_DOT_MSGID in self._wants and "body" not in self._wants:
                self._messageId = MessageIdScanner()
        return decision

    def _endTransaction(self) -> None:
        """
        The server ends an open transaction itself (new MAIL, HELO); only
        the local state is reset.
        """
        self._inTransaction = False
        self._messageId = None
        self._bodyFailure = None

    def rcpt(
        self, address: str, args: Sequence[str], status: int = 250
    ) -> defer.Deferred:
        return self._calls.run(self._rcpt, address, list(args), status, closed=CONTINUE)

    @defer.inlineCallbacks
    def _rcpt(self, address: str, args: List[str], status: int) -> Any:
        if status >= 400 and CAP_RCPT_ST not in self._wants and self._opened:
            return CONTINUE
        decision = yield self._ask(
            "rcpt",
            Rcpt,
            address=clip(address),
            args=[clip(a) for a in args],
            status=status,
        )
        # a recipient SMTPS rejected stays rejected
        return CONTINUE if status >= 400 else decision

    def data(self) -> defer.Deferred:
        return self._calls.run(self._ask, "data", Data, closed=CONTINUE)

    def unknown(self, command: str) -> defer.Deferred:
        return self._calls.run(
            lambda: self._ask("unknown", Unknown, command=clip(command)),
            closed=CONTINUE,
        )

    def body(self, chunk: bytes) -> defer.Deferred:
        return self._calls.run(self._body, chunk, closed=None)

    @defer.inlineCallbacks
    def _body(self, chunk: bytes) -> Any:
        if not self._inTransaction or self._bodyFailure is not None:
            return None
        if self._messageId is not None:
            self._messageId.feed(chunk)
        if "body" not in self._wants or not self._alive():
            return None
        for start in range(0, len(chunk), MAX_CHUNK):
            _, failed = yield self._command(
                "body", Body, chunk=chunk[start : start + MAX_CHUNK]
            )
            if failed is not None:
                self._bodyFailure = failed
                break
        return None

    def eom(self, messageId: Optional[str] = None) -> defer.Deferred:
        return self._calls.run(self._eom, messageId, closed=CONTINUE)

    @defer.inlineCallbacks
    def _eom(self, messageId: Optional[str]) -> Any:
        if not self._inTransaction:
            return CONTINUE
        if messageId is None and self._messageId is not None:
            messageId = self._messageId.messageId
        bodyFailure = self._bodyFailure
        kwargs = {}
        if messageId is not None:
            kwargs["messageId"] = clip(messageId)
        if bodyFailure is not None and self._alive():
            # the server is owed the end of the transaction
            yield self._command("abort", Abort)
            decision = bodyFailure
        else:
            decision = yield self._ask("eom", Eom, force=True, **kwargs)
        self._endTransaction()
        return decision

    def abort(self) -> defer.Deferred:
        return self._calls.run(self._abort, closed=None)

    @defer.inlineCallbacks
    def _abort(self) -> Any:
        if self._inTransaction and self._alive():
            yield self._command("abort", Abort)
        self._endTransaction()
        return None

    def close(self) -> defer.Deferred:
        return self._calls.run(self._close, closed=None)

    @defer.inlineCallbacks
    def _close(self) -> Any:
        self._calls.closed = True
        if self._opened and self._alive():
            yield self._command("close", Close)
        self._endTransaction()
        return None
