# -*- test-case-name: smx.mail.test.test_sasl_dovecot -*-
"""
NAME
    smx.mail.sasl_dovecot - SMTP AUTH through Dovecot's authentication server

SYNOPSIS
    smtps { auth { type = dovecot; path = "/var/spool/postfix/private/auth"; } }
    smtps { auth { type = dovecot; address = "127.0.0.1:12345"; } }

DESCRIPTION
    The client side of the Dovecot authentication protocol (version 1, the
    one Postfix speaks with C{smtpd_sasl_type = dovecot}).  Dovecot runs
    the whole SASL exchange; smx passes the client's lines on and Dovecot's
    challenges back as C{334} replies, so every mechanism Dovecot offers
    (PLAIN, LOGIN, CRAM-MD5, SCRAM-*, ...) works without smx knowing it.

    One connection serves every session of an C{smtps} section; requests
    are told apart by their id.  The handshake (C{VERSION 1 0}, C{CPID};
    the server answers C{VERSION}, C{MECH} lines, C{SPID}, C{CUID},
    C{COOKIE}, C{DONE}) gives the list of mechanisms, which EHLO offers
    after the C{auth} flags (L{smx.mail.auth.filterMechanisms}).  Then:

        C: AUTH <id> <mech> service=smtp nologin lip= rip= lport= rport=
           [secured] session=<ss_sess> [resp=<base64>]
        S: CONT <id> <base64>            -> 334 <base64>
        C: CONT <id> <base64>            <- the client's next line
        S: OK <id> user=<name>           -> 235 2.7.0
        S: FAIL <id> [code=temp_fail|temp] [reason=...]
                                          -> 454 4.7.0 (temporary),
                                             501 5.5.2 (bad base64),
                                             535 5.7.8 (otherwise)

    The protocol work is done by the sans-I/O L{DovecotAuthClient} (lines
    in, events out, bytes to send); L{DovecotAuthProtocol} is its Twisted
    adapter and L{DovecotAuthenticator} the
    L{smx.interfaces.ISASLAuthenticator} that owns the connection.

    The connection is opened when the listener starts and again whenever
    it is needed after a loss (an AUTH, or an EHLO at most every
    L{RETRY_INTERVAL} seconds so that the mechanism list stays current).
    Until the first handshake the offered mechanisms are PLAIN and LOGIN.

CONFIGURATION PARAMETERS
    auth { type = dovecot; path; address; service; timeout; flags }
    path        Dovecot's client socket (default C{/run/dovecot/auth-client};
                Postfix setups use C{service auth { unix_listener
                /var/spool/postfix/private/auth { ... } } })
    address     C{host:port} of an C{inet_listener} of the auth service
                instead of C{path}
    service     the service name sent to Dovecot (default C{smtp})
    timeout     the longest wait for the connection, the handshake and
                each reply (default 30s)

SECURITY
    The client's base64 is decoded and encoded again before it is sent, so
    no TAB or LF can reach the protocol.  A mechanism that Dovecot did not
    list is refused here (504): Dovecot drops a client that asks for one.
    A response for an exchange that began on a connection that has since
    been lost is not sent on the new one (Dovecot would not know its id).

DIAGNOSTICS
    When the server cannot be reached, times out or breaks the protocol,
    AUTH is answered C{454 4.7.0 Temporary authentication failure} and
    the reason is logged (C{where=auth, stat=454, reason=...}); losing the
    connection or failing to open it is logged once (C{sev=WARN}) until
    it works again (C{where=auth, dovecot=connected}).
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import (
    Any,
    Callable,
    Collection,
    Dict,
    FrozenSet,
    List,
    Optional,
    Sequence,
    Tuple,
)

from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.python import failure
from zope.interface import implementer

from smx.config.values import splitAddress
from smx.interfaces import ISASLAuthenticator, ISASLExchange
from smx.log import Logger
from smx.mail.auth import (
    INVALID,
    AuthError,
    AuthUnavailable,
    Challenge,
    ClientInfo,
    Success,
    describeError,
    filterMechanisms,
)

#: the protocol version smx speaks (Postfix sends the same)
VERSION = (1, 0)

#: longest line accepted from the server (Dovecot's own limit is 16384)
MAX_LINE = 65536

#: seconds between connection attempts made for EHLO
RETRY_INTERVAL = 5.0

#: what is offered before the server has ever answered
FALLBACK_MECHANISMS = (
    ("PLAIN", frozenset(["plaintext"])),
    ("LOGIN", frozenset(["plaintext"])),
)

Mechanisms = Tuple[Tuple[str, FrozenSet[str]], ...]

_UNESCAPE = {"0": "\0", "1": "\001", "t": "\t", "r": "\r", "n": "\n"}
_ESCAPE = {"\0": "\0010", "\001": "\0011", "\t": "\001t", "\r": "\001r", "\n": "\001n"}


def unescape(text: str) -> str:
    """
    Undo Dovecot's tab-escaping (C{\\001} followed by C{0}, C{1}, C{t},
    C{r} or C{n}; any other character stands for itself).
    """
    if "\001" not in text:
        return text
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\001" and i + 1 < len(text):
            out.append(_UNESCAPE.get(text[i + 1], text[i + 1]))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def escape(text: str) -> str:
    """Dovecot's tab-escaping of one parameter value."""
    return "".join(_ESCAPE.get(c, c) for c in text)


class DovecotProtocolError(Exception):
    """
    The server said something the protocol does not allow here.
    """


class Handshake:
    """
    Event: the handshake is complete.

    @ivar mechanisms: C{(name, properties)} of every C{MECH} line.
    """

    def __init__(self, mechanisms: Mechanisms) -> None:
        self.mechanisms = mechanisms


class Reply:
    """
    Event: the server's answer to a request.

    @ivar kind: C{"OK"}, C{"CONT"} or C{"FAIL"}.
    @ivar requestId: the id of the request.
    @ivar data: the base64 text of a C{CONT} (else C{""}).
    @ivar params: the C{name=value} parameters (C{None} for a flag such as
        C{temp}), unescaped.
    """

    def __init__(
        self, kind: str, requestId: int, data: str, params: Dict[str, Optional[str]]
    ) -> None:
        self.kind = kind
        self.requestId = requestId
        self.data = data
        self.params = params

    def __repr__(self) -> str:
        return "Reply(%r, %r, %r, %r)" % (
            self.kind,
            self.requestId,
            self.data,
            self.params,
        )


class DovecotAuthClient:
    """
    The sans-I/O client of the Dovecot authentication protocol: no socket,
    no reactor.  Feed it the server's lines (L{lineReceived}), send what
    L{dataToSend} returns.

    @ivar ready: the handshake is complete.
    @ivar mechanisms: the server's mechanisms, once L{ready}.
    """

    def __init__(self, pid: int) -> None:
        self._out = [
            b"VERSION\t%d\t%d\n" % VERSION,
            b"CPID\t%d\n" % (pid,),
        ]  # type: List[bytes]
        self._versionSeen = False
        self._mechs = []  # type: List[Tuple[str, FrozenSet[str]]]
        self.ready = False
        self.mechanisms = ()  # type: Mechanisms

    def dataToSend(self) -> bytes:
        """The bytes to write to the server now (and forget)."""
        out = b"".join(self._out)
        del self._out[:]
        return out

    def mechanismNames(self) -> FrozenSet[str]:
        """The upper-case names of L{mechanisms}."""
        return frozenset(name for name, _ in self.mechanisms)

    def lineReceived(self, line: bytes) -> Optional[Any]:
        """
        One line from the server, without its LF.

        @return: a L{Handshake}, a L{Reply} or C{None}.
        @raise DovecotProtocolError: for a line that breaks the protocol.
        """
        try:
            text = line.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            raise DovecotProtocolError("a line that is not UTF-8")
        fields = text.split("\t")
        command = fields[0]
        if not self.ready:
            return self._handshakeLine(command, fields)
        if command in ("OK", "CONT", "FAIL"):
            return self._reply(command, fields)
        # unknown commands are ignored, as the protocol says
        return None

    def _handshakeLine(self, command: str, fields: List[str]) -> Optional[Handshake]:
        if command == "VERSION":
            if len(fields) < 2 or fields[1] != str(VERSION[0]):
                raise DovecotProtocolError(
                    "the server speaks version %s, not %d"
                    % (".".join(fields[1:3]) or "?", VERSION[0])
                )
            self._versionSeen = True
            return None
        if not self._versionSeen:
            raise DovecotProtocolError("%r before VERSION" % (command,))
        if command == "MECH":
            if len(fields) < 2 or not fields[1]:
                raise DovecotProtocolError("MECH without a name")
            self._mechs.append(
                (fields[1].upper(), frozenset(f.lower() for f in fields[2:]))
            )
        elif command == "DONE":
            self.ready = True
            self.mechanisms = tuple(self._mechs)
            return Handshake(self.mechanisms)
        # SPID, CUID, COOKIE and anything new are of no use to smx
        return None

    def _reply(self, command: str, fields: List[str]) -> Reply:
        if len(fields) < 2 or not (fields[1].isascii() and fields[1].isdigit()):
            raise DovecotProtocolError("%s without a request id" % (command,))
        requestId = int(fields[1])
        data = ""
        rest = fields[2:]
        if command == "CONT":
            data = rest[0] if rest else ""
            rest = []
        params = {}  # type: Dict[str, Optional[str]]
        for field in rest:
            name, eq, value = field.partition("=")
            params[name] = unescape(value) if eq else None
        return Reply(command, requestId, data, params)

    def auth(
        self,
        requestId: int,
        mechanism: str,
        params: Sequence[Tuple[str, Optional[str]]],
    ) -> None:
        """
        Queue C{AUTH}: C{params} are C{(name, value)} pairs, C{value}
        C{None} for a flag such as C{secured}.
        """
        if not self.ready:  # pragma: no cover
            raise RuntimeError("DovecotAuthClient.auth: the handshake is not done")
        fields = ["AUTH", str(requestId), escape(mechanism)]
        for name, value in params:
            fields.append(name if value is None else "%s=%s" % (name, escape(value)))
        self._out.append(("\t".join(fields) + "\n").encode("utf-8"))

    def cont(self, requestId: int, data: str) -> None:
        """Queue C{CONT}: the client's next (base64) line."""
        if not self.ready:  # pragma: no cover
            raise RuntimeError("DovecotAuthClient.cont: the handshake is not done")
        self._out.append(("CONT\t%d\t%s\n" % (requestId, escape(data))).encode("utf-8"))


class DovecotAuthProtocol(protocol.Protocol):
    """
    The Twisted adapter of L{DovecotAuthClient}: splits lines, writes what
    the client says, and hands the events to its L{DovecotAuthenticator}.
    """

    authenticator = None  # type: Any
    transport = None  # type: Any

    def __init__(self) -> None:
        self.client = DovecotAuthClient(os.getpid())
        self._buffer = b""

    def connectionMade(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Write what the client has to say."""
        out = self.client.dataToSend()
        if out:
            self.transport.write(out)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while True:
            line, lf, rest = self._buffer.partition(b"\n")
            if not lf:
                break
            self._buffer = rest
            try:
                event = self.client.lineReceived(line)
            except DovecotProtocolError as e:
                self.protocolError(str(e))
                return
            if event is not None:
                self.authenticator._event(self, event)
        if len(self._buffer) > MAX_LINE:
            self.protocolError("a line longer than %d bytes" % (MAX_LINE,))

    def protocolError(self, reason: str) -> None:
        """The server broke the protocol: drop the connection."""
        self.authenticator._protocolError(self, reason)
        self._buffer = b""
        self.transport.abortConnection()

    def connectionLost(self, reason: failure.Failure = protocol.connectionDone) -> None:
        self.authenticator._lost(self, reason)


def _canonical(line: str) -> str:
    """
    The client's base64 line, checked and encoded again (C{=} is empty).

    @raise AuthError: 501 for anything that is not base64.
    """
    if line == "=":
        return ""
    try:
        raw = base64.b64decode(line.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise AuthError(501, "5.5.2", "Invalid base64 data")
    return base64.b64encode(raw).decode("ascii")


def _reason(reason: failure.Failure) -> str:
    if reason.check(
        defer.CancelledError, error.ConnectingCancelledError, error.TimeoutError
    ):
        return "timed out"
    return describeError(reason.value)


@implementer(ISASLExchange)
class DovecotExchange:
    """
    One SASL exchange run by Dovecot.
    """

    def __init__(
        self, authenticator: "DovecotAuthenticator", mechanism: str, client: ClientInfo
    ) -> None:
        self.authenticator = authenticator
        self.mechanism = mechanism
        self.client = client
        self._proto = None  # type: Optional[DovecotAuthProtocol]
        self._id = 0

    def start(self, initial: Optional[str]) -> "defer.Deferred[Any]":
        try:
            response = None if initial is None else _canonical(initial)
        except AuthError:
            return defer.fail()
        d = self.authenticator._connection()
        d.addCallback(self._cbConnected, response)
        return d

    def _cbConnected(
        self, proto: DovecotAuthProtocol, response: Optional[str]
    ) -> "defer.Deferred[Any]":
        if self.mechanism not in proto.client.mechanismNames():
            raise AuthError(504, "5.5.4", "Unrecognized authentication type")
        self._proto = proto
        self._id = self.authenticator._newId()
        c = self.client
        params = [
            ("service", self.authenticator.service),
            ("nologin", None),
        ]  # type: List[Tuple[str, Optional[str]]]
        if c.localAddress:
            params.append(("lip", c.localAddress))
        if c.address:
            params.append(("rip", c.address))
        if c.localPort:
            params.append(("lport", str(c.localPort)))
        if c.port:
            params.append(("rport", str(c.port)))
        if c.secured:
            params.append(("secured", None))
        if c.session:
            params.append(("session", c.session))
        if response is not None:
            params.append(("resp", response))
        requestId, mechanism = self._id, self.mechanism
        d = self.authenticator._send(
            proto, requestId, lambda client: client.auth(requestId, mechanism, params)
        )
        return d.addCallback(self._cbReply)

    def respond(self, line: str) -> "defer.Deferred[Any]":
        try:
            data = _canonical(line)
        except AuthError:
            return defer.fail()
        proto = self._proto
        if proto is None or not self.authenticator._isCurrent(proto):
            return defer.fail(
                AuthUnavailable("dovecot: the connection was lost during the exchange")
            )
        requestId = self._id
        d = self.authenticator._send(
            proto, requestId, lambda client: client.cont(requestId, data)
        )
        return d.addCallback(self._cbReply)

    def _cbReply(self, reply: Reply) -> Any:
        if reply.kind == "OK":
            return Success(reply.params.get("user") or "")
        if reply.kind == "CONT":
            return Challenge(reply.data)
        code = reply.params.get("code") or ""
        reason = reply.params.get("reason") or ""
        if "temp" in reply.params or code == "temp_fail":
            raise AuthUnavailable(
                "dovecot: temporary failure" + (": " + reason if reason else "")
            )
        if code == "invalid_base64":
            raise AuthError(501, "5.5.2", "Invalid base64 data")
        raise AuthError(*INVALID, reason=reason or code or None)


@implementer(ISASLAuthenticator)
class DovecotAuthenticator:
    """
    The connection to Dovecot's authentication server, shared by every
    session of an C{smtps} section.

    @ivar service: the service name sent with every request.
    @ivar timeout: seconds to wait for the connection, the handshake and
        each reply.
    @ivar log: where connection problems are logged.
    """

    def __init__(
        self,
        path: Optional[str] = None,
        address: Optional[str] = None,
        service: str = "smtp",
        flags: Collection[str] = (),
        timeout: float = 30.0,
        reactor: Any = None,
        log: Optional[Logger] = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        if (path is None) == (address is None):  # pragma: no cover
            raise ValueError("DovecotAuthenticator: give path or address")
        self.path = path
        self.address = address
        self.service = service
        self.flags = frozenset(flags)
        self.timeout = timeout
        self.reactor = reactor
        self.log = log if log is not None else Logger("smtps")
        self._proto = None  # type: Optional[DovecotAuthProtocol]
        self._ready = False
        self._attempt = None  # type: Optional[defer.Deferred]
        self._timer = None  # type: Any
        self._waiting = []  # type: List[defer.Deferred]
        self._pending = {}  # type: Dict[int, Tuple[defer.Deferred, Any]]
        self._known = None  # type: Optional[Mechanisms]
        self._lastAttempt = None  # type: Optional[float]
        self._failing = False
        self._lastId = 0
        self._closed = []  # type: List[defer.Deferred]
        self._stopping = False

    def describe(self) -> str:
        """The server, as the log names it."""
        return self.path if self.path is not None else "inet:%s" % (self.address,)

    # -- ISASLAuthenticator ----------------------------------------------

    def mechanisms(self) -> Tuple[str, ...]:
        if (
            not self._ready
            and self._proto is None
            and self._attempt is None
            and (
                self._lastAttempt is None
                or self.reactor.seconds() - self._lastAttempt >= RETRY_INTERVAL
            )
        ):
            self._connect()
        known = self._known if self._known is not None else FALLBACK_MECHANISMS
        return filterMechanisms(known, self.flags)

    def exchange(self, mechanism: str, client: ClientInfo) -> DovecotExchange:
        return DovecotExchange(self, mechanism.upper(), client)

    def start(self, log: Optional[Logger] = None) -> None:
        if log is not None:
            self.log = log
        if self._proto is None and self._attempt is None:
            self._connect()

    def stop(self) -> "defer.Deferred[None]":
        if self._attempt is not None:
            self._stopping = True
            try:
                self._attempt.cancel()
            finally:
                self._stopping = False
        proto = self._proto
        if proto is None:
            return defer.succeed(None)
        d = defer.Deferred()  # type: defer.Deferred[None]
        self._closed.append(d)
        proto.transport.loseConnection()
        return d

    # -- the connection --------------------------------------------------

    def _endpoint(self) -> Any:
        if self.path is not None:
            return UNIXClientEndpoint(self.reactor, self.path, timeout=self.timeout)
        host, port = splitAddress(self.address or "", 0)
        return HostnameEndpoint(self.reactor, host, port, timeout=self.timeout)

    def _connect(self) -> None:
        self._lastAttempt = self.reactor.seconds()
        factory = protocol.Factory.forProtocol(DovecotAuthProtocol)
        factory.protocol = self._makeProtocol  # type: ignore[assignment]
        factory.noisy = False
        try:
            d = self._endpoint().connect(factory)
        except Exception:  # pragma: no cover - an address the endpoint refuses
            d = defer.fail()
        self._attempt = d
        self._timer = self.reactor.callLater(self.timeout, self._cbTimedOut)
        d.addCallbacks(self._cbConnected, self._ebConnect)

    def _makeProtocol(self) -> DovecotAuthProtocol:
        proto = DovecotAuthProtocol()
        proto.authenticator = self
        return proto

    def _cbConnected(self, proto: DovecotAuthProtocol) -> None:
        self._attempt = None
        self._proto = proto

    def _ebConnect(self, reason: failure.Failure) -> None:
        self._attempt = None
        self._cancelTimer()
        self._trouble(
            "cannot connect to %s: %s" % (self.describe(), _reason(reason)),
            quiet=self._stopping,
        )

    def _cbTimedOut(self) -> None:
        self._timer = None
        if self._attempt is not None:
            self._attempt.cancel()
        elif self._proto is not None and not self._ready:
            self._protocolError(self._proto, "no handshake within %gs" % self.timeout)
            self._proto.transport.abortConnection()

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _event(self, proto: DovecotAuthProtocol, event: Any) -> None:
        if proto is not self._proto:  # pragma: no cover
            return
        if isinstance(event, Handshake):
            self._cancelTimer()
            self._ready = True
            self._known = event.mechanisms
            if self._failing:
                self._failing = False
                self.log.notice(
                    where="auth", dovecot="connected", server=self.describe()
                )
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(proto)
            return
        entry = self._pending.pop(event.requestId, None)
        if entry is None:
            # the answer to a request that timed out
            return
        d, timer = entry
        if timer.active():
            timer.cancel()
        d.callback(event)

    def _protocolError(self, proto: DovecotAuthProtocol, reason: str) -> None:
        if proto is self._proto:
            self._trouble("%s: %s" % (self.describe(), reason))

    def _lost(self, proto: DovecotAuthProtocol, reason: failure.Failure) -> None:
        if proto is not self._proto:  # pragma: no cover
            return
        self._proto = None
        self._ready = False
        self._cancelTimer()
        closed, self._closed = self._closed, []
        if closed:
            message = "the connection to %s was closed" % (self.describe(),)
        else:
            message = "lost the connection to %s" % (self.describe(),)
            if not reason.check(error.ConnectionDone):
                message += ": " + _reason(reason)
        self._trouble(message, quiet=bool(closed))
        for d in closed:
            d.callback(None)

    def _trouble(self, message: str, quiet: bool = False) -> None:
        """
        Fail everything that waits for the server with 454 and log the
        first problem of a series.
        """
        if not quiet and not self._failing:
            self._failing = True
            self.log.warn("DovecotAuthenticator", where="auth", error=message)
        waiting, self._waiting = self._waiting, []
        pending, self._pending = self._pending, {}
        for d in waiting:
            d.errback(AuthUnavailable("dovecot: " + message))
        for d, timer in pending.values():
            if timer.active():
                timer.cancel()
            d.errback(AuthUnavailable("dovecot: " + message))

    # -- requests ---------------------------------------------------------

    def _connection(self) -> "defer.Deferred[DovecotAuthProtocol]":
        """
        @return: a L{Deferred} firing with the protocol once the handshake
            is done, or failing with L{AuthUnavailable}.
        """
        if self._ready and self._proto is not None:
            return defer.succeed(self._proto)
        d = defer.Deferred()  # type: defer.Deferred[DovecotAuthProtocol]
        self._waiting.append(d)
        if self._proto is None and self._attempt is None:
            self._connect()
        return d

    def _isCurrent(self, proto: DovecotAuthProtocol) -> bool:
        return self._ready and proto is self._proto

    def _newId(self) -> int:
        self._lastId = self._lastId % 0xFFFFFFFF + 1
        return self._lastId

    def _send(
        self,
        proto: DovecotAuthProtocol,
        requestId: int,
        write: Callable[[DovecotAuthClient], None],
    ) -> "defer.Deferred[Reply]":
        d = defer.Deferred()  # type: defer.Deferred[Reply]
        timer = self.reactor.callLater(self.timeout, self._requestTimedOut, requestId)
        self._pending[requestId] = (d, timer)
        write(proto.client)
        proto.flush()
        return d

    def _requestTimedOut(self, requestId: int) -> None:
        entry = self._pending.pop(requestId, None)
        if entry is not None:
            entry[0].errback(
                AuthUnavailable(
                    "dovecot: no reply from %s within %gs"
                    % (self.describe(), self.timeout)
                )
            )
