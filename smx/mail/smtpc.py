# -*- test-case-name: smx.mail.test.test_smtpc -*-
"""
NAME
    smx.mail.smtpc - SMTPC, the delivery agent over ESMTP and LMTP

SYNOPSIS
    agent = DeliveryAgent.fromConfiguration(cfg, contentStore, reactor)
    agent.setServiceParent(parent)
    agent.deliver(transaction) -> Deferred([result, ...])

DESCRIPTION
    SMTPC delivers one delivery transaction (seed §5.10, §10): the content
    of the SMTPS transaction C{ss_ta} to recipients that share a
    destination.  It tries the routes SMAR found in order (MX preference)
    and moves to the next one when a connection cannot be made, times out,
    is greeted with 4xx/5xx (421 too), fails EHLO or the TLS handshake, or
    when recipients got a temporary answer; it stops at the first
    definitive answer per recipient.  2xx is C{"ok"}, 4xx C{"temp"} (QMGR
    retries), 5xx C{"perm"} (QMGR bounces).  A connection lost, a timeout
    or garbage from the server never marks a recipient delivered that the
    server did not accept.

    C{esmtp} routes connect to the route's address and port (default
    C{remote_port}); C{lmtp} routes speak LMTP (RFC 2033) over the Unix
    socket C{LMTP_socket}.  STARTTLS is used whenever it is offered (seed
    App. D); the client certificate is presented, the server's certificate
    is not required to verify (opportunistic TLS), but a failed handshake
    never falls back to clear text: it is a temporary failure for that
    route.

    With C{reuse_connection}, a session that finished a transaction is
    kept in the open connection cache (at most C{OCC_max_entries}
    sessions, each for at most C{cacheTimeout} seconds) and carries the
    next transaction to the same destination after an RSET.

    The protocol itself is the sans-I/O L{smx.mail.client.ClientMachine};
    this module holds the Twisted adapter, the connection cache and the
    routing loop.

CONFIGURATION PARAMETERS
    smtpc { io_timeout; LMTP_socket; remote_port; log_level; log { ... };
            tls { cert_file; key_file; CAcert_file; CAcert_path } }
    qmgr { flags = reuse_connection; OCC_max_entries }
    hostname (global): the name used in EHLO/LHLO.

SECURITY
    Content from the content store is sent as it is, dot-stuffed; replies
    are bounded in length and only logged in encoded form.  Nothing read
    from a server is trusted before a TLS handshake ends (pipelined
    replies before it end the session).

DIAGNOSTICS
    App. C.2 records::

      da_sess=C..., status=connected, port=25, addr=192.0.2.1
      da_sess=C..., where=connection, starttls=successful
      da_sess=C..., da_ta=C..., ss_ta=S..., mail=<a@b>, stat=0, reply=250 ...
      da_sess=C..., da_ta=C..., ss_ta=S..., rcpt=<c@d>, stat=0, reply=250 ...
      da_sess=C..., da_ta=C..., ss_ta=S..., where=final_dot, size=1177, stat=0

    A failure has C{stat=} the reply code (or 451 for a local timeout or a
    lost connection) and C{reply=} the reason.
"""

from __future__ import annotations

import socket
from typing import Any, Dict, List, Optional, Tuple

from OpenSSL import SSL
from twisted.application import service
from twisted.internet import defer, error, interfaces
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from smx import net
from smx.ids import ClientIdGenerator
from smx.interfaces import IDeliveryAgent
from smx.log import Logger, loggerFromConfiguration
from smx.mail.tls import TLSConfigurationError, makeContext
from smx.unixsocket import socketName
from smx.mail.client import (
    BodyEncoder,
    ClientMachine,
    ProtocolError,
    ReplyParser,
    Send,
    SendBody,
    SessionFailed,
    SessionReady,
    StartTLS,
    TransactionDone,
)

#: bytes read from the content store at a time
CHUNK_SIZE = 65536


class SessionError(Exception):
    """
    A session could not be set up (or reset).

    @ivar where: C{"connect"}, C{"greeting"} or C{"ehlo"}.
    @ivar code: the reply code, 0 if there was none.
    @ivar reply: the reply text or a description.
    """

    def __init__(self, where: str, code: int, reply: str) -> None:
        Exception.__init__(self, where, code, reply)
        self.where = where
        self.code = code
        self.reply = reply


@implementer(interfaces.IOpenSSLClientConnectionCreator)
class ClientTLSCreator:
    """
    The TLS side of STARTTLS for SMTPC: presents the client certificate
    (if configured), sends SNI, and accepts any server certificate
    (opportunistic TLS) while recording whether it verified against the
    configured CAs.

    @ivar verified: did the last handshake's server chain verify?
    """

    def __init__(
        self,
        certFile: Optional[str] = None,
        keyFile: Optional[str] = None,
        caFile: Optional[str] = None,
        caPath: Optional[str] = None,
    ) -> None:
        """
        @raise ValueError: if a file cannot be loaded (a user mistake).
        """
        try:
            ctx = makeContext(SSL.TLS_CLIENT_METHOD, certFile, keyFile, caFile, caPath)
        except TLSConfigurationError as e:
            raise ValueError("smtpc tls: %s" % (e,))
        self.verified = True
        ctx.set_verify(SSL.VERIFY_PEER, self._verify)
        self._context = ctx

    def _verify(self, connection: Any, x509: Any, errno: int, depth: int, ok: int):
        if not ok:
            self.verified = False
        return True

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        self.verified = True
        connection = SSL.Connection(self._context, None)
        connection.set_connect_state()
        return connection


@implementer(interfaces.IHandshakeListener)
class ClientProtocol(Protocol):
    """
    Twisted adapter around a L{ClientMachine}: feeds it replies, writes its
    commands, streams the content, enforces C{io_timeout} at every step.

    @ivar machine: the protocol state machine.
    @ivar sessionId: the C{da_sess} id.
    @ivar lost: has the connection gone?
    """

    transport: Any

    def __init__(
        self,
        machine: ClientMachine,
        reactor: Any,
        timeout: float,
        tlsCreator: Optional[Any] = None,
        logger: Optional[Logger] = None,
        sessionId: str = "",
    ) -> None:
        self.machine = machine
        self.reactor = reactor
        self.timeout = timeout
        self.tlsCreator = tlsCreator
        self.log = logger or Logger("smtpc")
        self.sessionId = sessionId
        self.lost = False
        self.onLost = None  # type: Optional[Any]
        self._parser = ReplyParser()
        self._waiting = None  # type: Optional[defer.Deferred]
        self._timer = None  # type: Optional[Any]
        self._body = None  # type: Optional[_BodySender]
        self._bodyFile = None  # type: Optional[Any]

    # setting up -----------------------------------------------------------

    def whenReady(self) -> defer.Deferred:
        """
        @return: a L{Deferred} firing with this protocol once the session
            can carry a transaction, or failing with L{SessionError}.
        """
        self._waiting = defer.Deferred()
        return self._waiting

    def connectionMade(self) -> None:
        self._resetTimer()

    def _resetTimer(self) -> None:
        if self.lost:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.timeout)
        else:
            self._timer = self.reactor.callLater(self.timeout, self._timedOut)

    def _stopTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timedOut(self) -> None:
        self._timer = None
        self._events(
            self.machine.connectionFailed(
                "timeout after %gs waiting in state %s"
                % (self.timeout, self.machine.state)
            )
        )
        self.transport.abortConnection()

    # I/O ------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self._resetTimer()
        try:
            replies = self._parser.feed(data)
        except ProtocolError as e:
            for reply in e.replies:
                self._events(self.machine.replyReceived(reply))
                if self.lost:
                    return
            self._events(self.machine.connectionFailed("protocol error: %s" % (e,)))
            self.transport.abortConnection()
            return
        for reply in replies:
            self._events(self.machine.replyReceived(reply))
            if self.lost:
                return

    def handshakeCompleted(self) -> None:
        self.log.info(da_sess=self.sessionId, where="connection", starttls="successful")
        if self.tlsCreator is not None and not self.tlsCreator.verified:
            self.log.info(level=11, da_sess=self.sessionId, cert_verify="failed")
        self._resetTimer()
        self._events(self.machine.tlsStarted())

    def connectionLost(self, reason: Failure = Failure(error.ConnectionDone())) -> None:
        self.lost = True
        self._stopTimer()
        if self._body is not None:
            self._body.stop()
        self._events(
            self.machine.connectionFailed(
                "connection lost: %s" % (reason.getErrorMessage(),)
            )
        )
        if self._waiting is not None:
            d, self._waiting = self._waiting, None
            d.errback(SessionError("connect", 0, "connection lost"))
        if self.onLost is not None:
            self.onLost(self)

    def _events(self, events: List[Any]) -> None:
        for event in events:
            if isinstance(event, Send):
                if not self.lost:
                    self.transport.write(event.data)
                    self._resetTimer()
            elif isinstance(event, SessionReady):
                self._fire(self)
            elif isinstance(event, SessionFailed):
                self._fail(SessionError(event.where, event.code, event.reply))
                if not self.lost:
                    self.transport.loseConnection()
            elif isinstance(event, TransactionDone):
                self._closeBody()
                self._fire(event)
            elif isinstance(event, StartTLS):
                self._startTLS()
            elif isinstance(event, SendBody):
                self._sendBody()

    def _fire(self, value: Any) -> None:
        if self._waiting is not None:
            d, self._waiting = self._waiting, None
            d.callback(value)

    def _fail(self, exc: Exception) -> None:
        if self._waiting is not None:
            d, self._waiting = self._waiting, None
            d.errback(exc)

    def _startTLS(self) -> None:
        if self.tlsCreator is None:
            self._events(self.machine.connectionFailed("no TLS context"))
            self.transport.loseConnection()
            return
        try:
            self.transport.startTLS(self.tlsCreator)
        except Exception as e:
            self._events(self.machine.connectionFailed("STARTTLS: %s" % (e,)))
            self.transport.abortConnection()

    # transactions ---------------------------------------------------------

    def transaction(
        self,
        sender: str,
        recipients: List[str],
        size: int,
        bodyType: str,
        bodyFile: Any,
    ) -> defer.Deferred:
        """
        Run one mail transaction.

        @param bodyFile: a binary file with the content, read when the
            server says 354 and closed when the transaction ends.
        @return: a L{Deferred} firing with a
            L{smx.mail.client.TransactionDone}.
        """
        d = defer.Deferred()  # type: defer.Deferred
        self._waiting = d
        self._bodyFile = bodyFile
        self._events(self.machine.startTransaction(sender, recipients, size, bodyType))
        return d

    def _sendBody(self) -> None:
        self._body = _BodySender(self, self._bodyFile)
        self._body.start()

    def bodyDone(self) -> None:
        """Called by the body sender once the final dot is written."""
        self._body = None
        self._closeBody()
        if not self.lost:
            self._resetTimer()
            self._events(self.machine.bodySent())

    def _closeBody(self) -> None:
        if self._bodyFile is not None:
            try:
                self._bodyFile.close()
            except Exception:
                pass
            self._bodyFile = None

    def bodyFailed(self, why: str) -> None:
        """The content could not be read: end the session."""
        self._body = None
        self._closeBody()
        self.log.error("bodyFailed", da_sess=self.sessionId, error=why)
        self._events(self.machine.connectionFailed("cannot read content: %s" % (why,)))
        self.transport.abortConnection()

    def quit(self) -> None:
        """Say QUIT and close."""
        if self.lost:
            return
        self._events(self.machine.quit())
        self.transport.loseConnection()


@implementer(interfaces.IPushProducer)
class _BodySender:
    """
    Streams the content in large chunks as a push producer: writes until
    the transport asks it to pause.
    """

    def __init__(self, protocol: ClientProtocol, bodyFile: Any) -> None:
        self.protocol = protocol
        self.file = bodyFile
        self.encoder = BodyEncoder()
        self.paused = False
        self.stopped = False
        self.transport = protocol.transport

    def start(self) -> None:
        try:
            first = self.file.read(CHUNK_SIZE)
            rest = self.file.read(CHUNK_SIZE) if first else b""
        except (OSError, ValueError) as e:
            self.stopped = True
            self.protocol.bodyFailed(str(e))
            return
        if not rest:
            # the usual small message: one write, no producer (so that the
            # transport can send it at once)
            self.transport.write(self.encoder.encode(first) + self.encoder.finish())
            self.stopped = True
            self.protocol.bodyDone()
            return
        self.transport.registerProducer(self, True)
        for chunk in (first, rest):
            data = self.encoder.encode(chunk)
            if data:
                self.transport.write(data)
        self._pump()

    def _pump(self) -> None:
        while not self.paused and not self.stopped:
            try:
                chunk = self.file.read(CHUNK_SIZE)
            except (OSError, ValueError) as e:
                self.transport.unregisterProducer()
                self.stopped = True
                self.protocol.bodyFailed(str(e))
                return
            if not chunk:
                self.transport.write(self.encoder.finish())
                self.transport.unregisterProducer()
                self.stopped = True
                self.protocol.bodyDone()
                return
            data = self.encoder.encode(chunk)
            if data:
                self.transport.write(data)
            self.protocol._resetTimer()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        if self.stopped:
            return
        self.paused = False
        self._pump()

    def stopProducing(self) -> None:
        self.stopped = True

    def stop(self) -> None:
        self.stopped = True


class _ConnectFactory(ClientFactory):
    # one factory per delivery session: no "Starting factory" log lines
    noisy = False

    def __init__(self, build: Any) -> None:
        self.build = build
        self.protocol_ = None  # type: Optional[ClientProtocol]
        self.deferred = defer.Deferred()  # type: defer.Deferred

    def buildProtocol(self, addr: Any) -> ClientProtocol:
        proto = self.build()
        self.protocol_ = proto
        proto.whenReady().chainDeferred(self.deferred)
        return proto

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self.deferred.called:
            self.deferred.errback(
                SessionError(
                    "connect",
                    0,
                    "451 4.4.1 cannot connect: %s" % (reason.getErrorMessage(),),
                )
            )


class ConnectionCache:
    """
    The open connection cache (OCC, seed §5.7): idle sessions by
    destination, at most C{maxEntries}, each closed after C{timeout}
    seconds of idleness.
    """

    def __init__(self, reactor: Any, maxEntries: int = 16, timeout: float = 60.0):
        self.reactor = reactor
        self.maxEntries = maxEntries
        self.timeout = timeout
        self._entries = []  # type: List[Tuple[Any, ClientProtocol, Any]]

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, key: Any) -> Optional[ClientProtocol]:
        """
        @return: an idle session to C{key} (removed from the cache) or
            C{None}.
        """
        for i, (k, proto, call) in enumerate(self._entries):
            if k == key and not proto.lost:
                del self._entries[i]
                if call.active():
                    call.cancel()
                proto.onLost = None
                return proto
        return None

    def put(self, key: Any, proto: ClientProtocol) -> None:
        """
        Keep C{proto} for later use; the oldest entry is closed if the
        cache is full.
        """
        if self.maxEntries <= 0 or proto.lost:
            proto.quit()
            return
        while len(self._entries) >= self.maxEntries:
            _, old, call = self._entries.pop(0)
            if call.active():
                call.cancel()
            old.onLost = None
            old.quit()
        call = self.reactor.callLater(self.timeout, self._expire, proto)
        proto.onLost = self._lost
        self._entries.append((key, proto, call))

    def _expire(self, proto: ClientProtocol) -> None:
        self._remove(proto)
        proto.onLost = None
        proto.quit()

    def _lost(self, proto: ClientProtocol) -> None:
        self._remove(proto)

    def _remove(self, proto: ClientProtocol) -> None:
        for i, (_, p, call) in enumerate(self._entries):
            if p is proto:
                del self._entries[i]
                if call.active():
                    call.cancel()
                return

    def closeAll(self) -> None:
        """Close every cached session."""
        entries, self._entries = self._entries, []
        for _, proto, call in entries:
            if call.active():
                call.cancel()
            proto.onLost = None
            proto.quit()


@implementer(IDeliveryAgent)
class DeliveryAgent(service.Service):
    """
    SMTPC: delivers delivery transactions over ESMTP and LMTP.

    @ivar cache: the L{ConnectionCache}.
    """

    name = "smtpc"  # type: ignore[assignment]

    def __init__(
        self,
        contentStore: Any,
        reactor: Any = None,
        heloName: Optional[str] = None,
        ioTimeout: float = 300.0,
        remotePort: int = 25,
        lmtpSocket: str = "lmtpsock",
        tlsCreator: Optional[ClientTLSCreator] = None,
        useTLS: bool = True,
        reuseConnection: bool = False,
        cacheSize: int = 16,
        cacheTimeout: float = 60.0,
        logger: Optional[Logger] = None,
        ids: Optional[ClientIdGenerator] = None,
    ) -> None:
        """
        @param contentStore: an L{smx.interfaces.IContentStore}.
        @param reactor: provides C{IReactorTCP}, C{IReactorUNIX},
            C{IReactorTime}.
        @param heloName: the name for EHLO/LHLO (default: the FQDN).
        @param ioTimeout: seconds to wait at every step (C{io_timeout}).
        @param remotePort: the port of C{esmtp} routes without their own.
        @param lmtpSocket: the Unix socket of C{lmtp} routes.
        @param tlsCreator: the TLS client side; C{None} with C{useTLS}
            makes one without a client certificate.
        @param useTLS: use STARTTLS when offered.
        @param reuseConnection: keep sessions in the connection cache.
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.contentStore = contentStore
        self.reactor = reactor
        self.heloName = heloName or socket.getfqdn()
        self.ioTimeout = ioTimeout
        self.remotePort = remotePort
        self.lmtpSocket = lmtpSocket
        if tlsCreator is None and useTLS:
            tlsCreator = ClientTLSCreator()
        self.tlsCreator = tlsCreator
        self.reuseConnection = reuseConnection
        self.cache = ConnectionCache(reactor, cacheSize, cacheTimeout)
        self.log = logger or Logger("smtpc")
        self.ids = ids or ClientIdGenerator()
        self._sessionCount = 0

    @classmethod
    def fromConfiguration(
        cls, cfg: Any, contentStore: Any, reactor: Any = None
    ) -> "DeliveryAgent":
        """
        Build SMTPC from the C{smtpc} section (and C{qmgr}'s
        C{reuse_connection} flag and C{OCC_max_entries}) of a
        configuration.

        @raise ValueError: if the TLS files cannot be loaded.
        """
        section = cfg.section("smtpc")
        qmgr = cfg.section("qmgr")
        tls = _subsection(section, "tls")
        creator = ClientTLSCreator(
            _get(tls, "cert_file"),
            _get(tls, "key_file"),
            _get(tls, "CAcert_file"),
            _get(tls, "CAcert_path"),
        )
        flags = _get(qmgr, "flags") or frozenset()
        return cls(
            contentStore,
            reactor,
            heloName=_get(cfg.globals, "hostname") or None,
            ioTimeout=float(_get(section, "io_timeout") or 300.0),
            remotePort=int(_get(section, "remote_port") or 25),
            lmtpSocket=_get(section, "LMTP_socket") or "lmtpsock",
            tlsCreator=creator,
            reuseConnection="reuse_connection" in flags,
            cacheSize=int(_get(qmgr, "OCC_max_entries") or 16),
            logger=loggerFromConfiguration("smtpc", section),
        )

    def stopService(self) -> None:
        service.Service.stopService(self)
        self.cache.closeAll()

    # delivery -------------------------------------------------------------

    def deliver(self, transaction: Dict[str, Any]) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._deliver(transaction))

    async def _deliver(self, transaction: Dict[str, Any]) -> List[Dict[str, Any]]:
        recipients = transaction["recipients"]
        daTa = transaction.get("id") or self.ids.next()
        final = [None] * len(recipients)  # type: List[Optional[Dict[str, Any]]]
        pending = list(range(len(recipients)))
        lastError = SessionError(
            "connect", 451, "451 4.4.0 no route to deliver to"
        )  # type: SessionError
        lastRoute = None  # type: Optional[Dict[str, Any]]
        for route in transaction.get("routes") or []:
            if not pending:
                break
            lastRoute = route
            try:
                proto, key, cached = await self._session(route)
            except SessionError as e:
                lastError = e
                continue
            addresses = [recipients[i]["address"] for i in pending]
            try:
                done = await self._transaction(proto, transaction, addresses)
                if cached and done.mailReply is None and not done.reusable:
                    # the server had closed the cached session: nothing
                    # of this transaction happened; again on a new one
                    proto, key, cached = await self._session(route, cached=False)
                    done = await self._transaction(proto, transaction, addresses)
            except SessionError as e:
                lastError = e
                continue
            except (KeyError, OSError) as e:
                self.log.error(
                    "deliver", da_ta=daTa, ss_ta=transaction["ss_ta"], error=str(e)
                )
                self._release(key, proto, False)
                lastError = SessionError("data", 451, "451 4.3.0 content missing")
                break
            self._logTransaction(proto, daTa, transaction, addresses, done)
            mta = self._remoteMTA(route)
            for i, result in zip(pending, done.results):
                final[i] = _makeResult(recipients[i], result, mta)
            pending = [i for i in pending if final[i]["status"] == "temp"]  # type: ignore[index]
            self._release(key, proto, done.reusable)
        results = []
        for i, rcpt in enumerate(recipients):
            result = final[i]
            if result is None:
                result = self._sessionFailure(rcpt, lastError, lastRoute)
            results.append(result)
        return results

    def _sessionFailure(
        self, rcpt: Dict[str, Any], e: SessionError, route: Optional[Dict[str, Any]]
    ) -> Dict[str, Any]:
        code = e.code or 451
        # a refused greeting is no verdict on the recipient: always retry
        status = "perm" if code >= 500 and e.where != "greeting" else "temp"
        text = e.reply if e.code else e.reply
        if not text[:3].isdigit():
            text = "%d 4.4.2 %s" % (code, text)
        return {
            "index": rcpt["index"],
            "address": rcpt["address"],
            "status": status,
            "code": code,
            "reply": text,
            "remoteMTA": self._remoteMTA(route) if e.where != "connect" else None,
            "where": e.where if e.where in ("connect", "greeting") else "ehlo",
        }

    def _remoteMTA(self, route: Optional[Dict[str, Any]]) -> Optional[str]:
        if route is None:
            return None
        if route.get("mailer") == "lmtp":
            return route.get("host") or "localhost"
        return route.get("host") or route.get("address") or None

    def _key(self, route: Dict[str, Any]) -> Tuple[str, str, int]:
        if route.get("mailer") == "lmtp":
            return ("lmtp", self.lmtpSocket, 0)
        return ("esmtp", route.get("address") or "", self._port(route))

    def _port(self, route: Dict[str, Any]) -> int:
        return int(route.get("port") or self.remotePort)

    async def _transaction(
        self, proto: ClientProtocol, transaction: Dict[str, Any], addresses: List[str]
    ) -> Any:
        """
        Run one transaction for C{addresses} on C{proto}.

        @raise KeyError: the content is not in the content store.
        """
        bodyFile = self.contentStore.open(transaction["ss_ta"])
        return await proto.transaction(
            transaction.get("sender", ""),
            addresses,
            int(transaction.get("size") or 0),
            transaction.get("bodyType") or "7BIT",
            bodyFile,
        )

    async def _session(
        self, route: Dict[str, Any], cached: bool = True
    ) -> Tuple[ClientProtocol, Any, bool]:
        """
        A session for C{route}: a cached one (C{cached} and
        C{reuse_connection}) or a new connection.

        A cached session carries the next transaction without RSET: the
        end of the previous one (the reply to the final dot) already
        reset the server (RFC 5321 4.1.1.4), and a session the server
        closed meanwhile shows at MAIL, where L{_deliver} starts again on
        a new connection.

        @return: the session, the cache key, and whether it was cached.
        """
        key = self._key(route)
        if self.reuseConnection and cached:
            proto = self.cache.take(key)
            if proto is not None:
                return proto, key, True
        proto = await self._connect(route, key)
        return proto, key, False

    def _connect(self, route: Dict[str, Any], key: Any) -> defer.Deferred:
        lmtp = key[0] == "lmtp"
        self._sessionCount += 1
        sessionId = self.ids.next(self._sessionCount)
        if not lmtp and not key[1]:
            return defer.fail(
                SessionError("connect", 0, "451 4.4.3 route has no address")
            )
        machine = ClientMachine(
            self.heloName, lmtp=lmtp, canTLS=self.tlsCreator is not None
        )

        def build() -> ClientProtocol:
            self.log.info(
                da_sess=sessionId,
                status="connected",
                port=key[2],
                addr=key[1],
            )
            return ClientProtocol(
                machine,
                self.reactor,
                self.ioTimeout,
                self.tlsCreator,
                self.log,
                sessionId,
            )

        factory = _ConnectFactory(build)
        if lmtp:
            try:
                name = socketName(key[1])
            except OSError as e:
                return defer.fail(SessionError("connect", 0, "451 4.4.0 %s" % (e,)))
            self.reactor.connectUNIX(name, factory, timeout=self.ioTimeout)
        else:
            net.connectTCP(
                self.reactor, key[1], key[2], factory, timeout=self.ioTimeout
            )
        d = factory.deferred

        def failed(f: Failure) -> Failure:
            e = f.value
            if isinstance(e, SessionError):
                self.log.info(
                    da_sess=sessionId,
                    where=e.where,
                    port=key[2],
                    addr=key[1],
                    stat=e.code or 451,
                    reply=e.reply,
                )
            return f

        d.addErrback(failed)
        return d

    def _release(self, key: Any, proto: ClientProtocol, reusable: bool) -> None:
        if self.reuseConnection and reusable and not proto.lost:
            self.cache.put(key, proto)
        else:
            proto.quit()

    def _logTransaction(
        self,
        proto: ClientProtocol,
        daTa: str,
        transaction: Dict[str, Any],
        addresses: List[str],
        done: TransactionDone,
    ) -> None:
        ssTa = transaction.get("ss_ta")
        sender = "<%s>" % (transaction.get("sender", ""),)
        if done.mailReply is not None:
            self.log.info(
                da_sess=proto.sessionId,
                da_ta=daTa,
                ss_ta=ssTa,
                mail=sender,
                stat=_stat(done.mailReply.code),
                reply=done.mailReply.text,
            )
        finals = []
        for address, reply, result in zip(addresses, done.rcptReplies, done.results):
            if reply is not None:
                self.log.info(
                    da_sess=proto.sessionId,
                    da_ta=daTa,
                    ss_ta=ssTa,
                    rcpt="<%s>" % (address,),
                    stat=_stat(reply.code),
                    reply=reply.text,
                )
            if reply is None or result["where"] not in ("rcpt", "mail"):
                finals.append((address, result))
        if not finals:
            return
        if proto.machine.lmtp:
            for address, result in finals:
                self._logFinal(proto, daTa, ssTa, transaction, result, address)
        else:
            self._logFinal(proto, daTa, ssTa, transaction, finals[0][1], None)

    def _logFinal(
        self,
        proto: ClientProtocol,
        daTa: str,
        ssTa: Optional[str],
        transaction: Dict[str, Any],
        result: Dict[str, Any],
        address: Optional[str],
    ) -> None:
        ok = result["status"] == "ok"
        self.log.info(
            da_sess=proto.sessionId,
            da_ta=daTa,
            ss_ta=ssTa,
            rcpt=None if address is None else "<%s>" % (address,),
            where=result["where"],
            size=transaction.get("size"),
            stat=0 if ok else result["code"],
            reply=None if ok and address is None else result["reply"],
        )


def _stat(code: int) -> int:
    return 0 if 200 <= code < 300 else code


def _makeResult(
    rcpt: Dict[str, Any], result: Dict[str, Any], mta: Optional[str]
) -> Dict[str, Any]:
    return {
        "index": rcpt["index"],
        "address": rcpt["address"],
        "status": result["status"],
        "code": result["code"],
        "reply": result["reply"],
        "remoteMTA": mta,
        "where": result["where"],
    }


def _subsection(section: Any, name: str) -> Any:
    try:
        return section.section(name)
    except (KeyError, AttributeError):
        return None


def _get(section: Any, name: str) -> Any:
    if section is None:
        return None
    try:
        return section[name]
    except KeyError:
        return None
