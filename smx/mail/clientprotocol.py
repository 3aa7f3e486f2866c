# -*- test-case-name: smx.mail.test.test_smtpc -*-
"""
The Twisted side of one SMTPC session: L{ClientProtocol} adapts the
sans-I/O L{smx.mail.client.ClientMachine} to a connection (replies in,
commands out, C{io_timeout} at every step, STARTTLS, the content streamed
from the content store after DATA, or in BDAT chunks of L{CHUNK_SIZE}
octets when the server offers CHUNKING, all written at once with
PIPELINING), and L{_ConnectFactory} turns a connection attempt
into a L{Deferred} that fires once the session can carry a transaction.

With a TLS policy (L{smx.tlspolicy.destination.SessionPolicy}), the
session is checked once the STARTTLS handshake is complete: a session
that does not meet it is ended (QUIT over TLS) before any mail command
with a L{SessionError} C{where="starttls"} whose reply the policy gives
(C{451 4.7.5}, C{451 4.7.4} for no STARTTLS, C{550 5.7.10} with
REQUIRETLS), and a C{tls_policy_failed} record; one that meets a policy
stronger than C{may} gets a C{tls_policy_ok} record.  A handshake that
fails under a policy that requires TLS is such a failure too
(C{validation-failure}).  An MTA-STS policy in testing mode is checked
and logged the same way (C{testing=1}) without ending anything.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple, Union

from twisted.internet import defer, error, interfaces
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from smx.log import Logger
from smx.tlspolicy.dane import PolicyFailure
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


def lostReason(reason: Failure) -> str:
    """
    Why a connection was lost, in words: OpenSSL's reasons (C{TLS error:
    tlsv1 alert protocol version}) rather than the repr of its error list.
    """
    from OpenSSL import SSL

    if reason.check(SSL.Error):
        args = getattr(reason.value, "args", None)
        errors = args[0] if args else None
        if isinstance(errors, list):
            texts = [e[-1] for e in errors if isinstance(e, tuple) and e and e[-1]]
            if texts:
                return "TLS error: " + ", ".join(str(t) for t in texts)
    return reason.getErrorMessage()


def connectReason(reason: Any) -> str:
    """
    Why a connection could not be made, in one line: the system's reason
    (C{Connection refused}, C{No such file or directory}), C{connection
    closed} for a peer that closed it at once, rather than Twisted's
    C{An error occurred while connecting: [Failure instance: ...]}.

    @param reason: a L{Failure} or an exception.
    """
    e = reason.value if isinstance(reason, Failure) else reason
    for _ in range(5):
        inner = e.args[0] if isinstance(e, error.ConnectError) and e.args else None
        if isinstance(inner, Failure):
            e = inner.value
        elif isinstance(inner, BaseException):
            e = inner
        else:
            break
    if isinstance(e, error.ConnectionDone):
        text = "connection closed"
    elif isinstance(e, error.ConnectionLost):
        text = "connection lost"
    elif isinstance(e, error.ConnectError):
        arg = e.args[0] if e.args else ""
        if arg:
            text = str(arg)
        elif e.osError:
            text = str(e.osError)
        else:
            text = e.MESSAGE
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split()).rstrip(".") or type(e).__name__


class SessionError(Exception):
    """
    A session could not be set up (or reset).

    @ivar where: C{"connect"}, C{"greeting"}, C{"ehlo"} or C{"starttls"}
        (the TLS policy was not met).
    @ivar code: the reply code, 0 if there was none.
    @ivar reply: the reply text or a description.
    """

    def __init__(self, where: str, code: int, reply: str) -> None:
        Exception.__init__(self, where, code, reply)
        self.where = where
        self.code = code
        self.reply = reply


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
        policy: Optional[Any] = None,
    ) -> None:
        """
        @param tlsCreator: the TLS side of the connection (an
            C{IOpenSSLClientConnectionCreator}: a
            L{smx.mail.clienttls.ClientTLSSession}), or C{None}.
        @param policy: the session's TLS policy (a
            L{smx.tlspolicy.destination.SessionPolicy}), or C{None}:
            opportunistic TLS.
        """
        self.machine = machine
        self.policy = policy  # type: Any
        self._handshaking = False
        self._audited = False
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
        #: when the peer's time to answer ends (L{_resetTimer})
        self._deadline = 0.0
        self._body = None  # type: Optional[Union[_BodySender, _ChunkSender]]
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
        # the deadline moves; the timer, set for an earlier one, finds
        # out when it fires (no change of the reactor's timers per reply)
        self._deadline = self.reactor.seconds() + self.timeout
        if self._timer is None or not self._timer.active():
            self._timer = self.reactor.callLater(self.timeout, self._timeUp)

    def _stopTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timeUp(self) -> None:
        left = self._deadline - self.reactor.seconds()
        if left > 1e-6:
            self._timer = self.reactor.callLater(left, self._timeUp)
            return
        self._timedOut()

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
        self._handshaking = False
        tls = self.tlsCreator
        describe = getattr(tls, "describe", None)
        version, cipher = describe() if describe is not None else (None, None)
        self.log.info(
            da_sess=self.sessionId,
            where="connection",
            starttls="successful",
            version=version,
            cipher=cipher,
        )
        if tls is not None and not tls.verified:
            self.log.info(level=11, da_sess=self.sessionId, cert_verify="failed")
        if self.policy is not None and tls is not None:
            chain = tls.peerChain()
            verifyError = tls.verifyError
            if self.policy.audit is not None:
                self._audit(self.policy.checkAudit(chain, verifyError))
            failure = self.policy.check(chain, verifyError)
            if failure is not None:
                self._policyFailed(failure)
                return
            if self.policy.reported:
                self.policy.logOk(
                    self.log, self.sessionId, localAddress=self._localAddress()
                )
        self._resetTimer()
        self._events(self.machine.tlsStarted())

    def _audit(self, failure: Optional[PolicyFailure]) -> None:
        """Log the result of the testing-mode MTA-STS policy."""
        self._audited = True
        if failure is None:
            self.policy.logOk(
                self.log,
                self.sessionId,
                testing=True,
                localAddress=self._localAddress(),
            )
        else:
            self.policy.logFailure(
                self.log,
                self.sessionId,
                failure,
                testing=True,
                localAddress=self._localAddress(),
            )

    def _localAddress(self) -> Optional[str]:
        """smx's address of this session, for the TLS policy records."""
        try:
            return str(self.transport.getHost().host)
        except AttributeError:
            return None

    def _policyFailed(self, failure: PolicyFailure) -> None:
        """
        The session does not meet its TLS policy: log it, fail the
        session and end it without a mail command.
        """
        self.policy.logFailure(
            self.log, self.sessionId, failure, localAddress=self._localAddress()
        )
        code, reply = self.policy.reply(failure)
        self._fail(SessionError("starttls", code, reply))
        if not self.lost:
            for event in self.machine.quit():
                if isinstance(event, Send):
                    self.transport.write(event.data)
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(error.ConnectionDone())) -> None:
        self.lost = True
        self._stopTimer()
        if self._body is not None:
            self._body.stop()
        self._events(
            self.machine.connectionFailed("connection lost: %s" % (lostReason(reason),))
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
                if self.policy is not None and self.policy.audit is not None:
                    if not self.machine.tls and not self._audited:
                        self._audit(
                            PolicyFailure(
                                "starttls-not-supported", "STARTTLS not offered"
                            )
                        )
                self._fire(self)
            elif isinstance(event, SessionFailed):
                self._fail(self._sessionError(event))
                if not self.lost:
                    self.transport.loseConnection()
            elif isinstance(event, TransactionDone):
                if self._body is not None:
                    self._body.stop()
                    self._body = None
                self._closeBody()
                self._fire(event)
            elif isinstance(event, StartTLS):
                self._startTLS()
            elif isinstance(event, SendBody):
                self._sendBody()

    def _sessionError(self, event: SessionFailed) -> SessionError:
        """
        The L{SessionError} of a session that failed; a TLS policy
        failure (no STARTTLS, a failed handshake where TLS is required)
        is logged and gets the policy's reply.
        """
        policy = self.policy
        failure = None  # type: Optional[PolicyFailure]
        if event.where == "starttls":
            failure = PolicyFailure("starttls-not-supported", event.reply)
        elif self._handshaking:
            self._handshaking = False
            if policy is not None and policy.requiresTLS:
                failure = PolicyFailure(
                    "validation-failure", "TLS handshake failed: %s" % (event.reply,)
                )
        if failure is None or policy is None:
            return SessionError(event.where, event.code, event.reply)
        policy.logFailure(
            self.log, self.sessionId, failure, localAddress=self._localAddress()
        )
        code, reply = policy.reply(failure)
        return SessionError("starttls", code, reply)

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
        self._handshaking = True
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
        smtputf8: bool = False,
        dsn: Any = None,
        requireTLS: bool = False,
    ) -> defer.Deferred:
        """
        Run one mail transaction.

        @param bodyFile: a binary file with the content, read when the
            server says 354 and closed when the transaction ends.
        @param smtputf8: the message needs SMTPUTF8 (RFC 6531).
        @param dsn: the DSN parameters (see L{smx.mail.client.
            ClientConnection.startTransaction}).
        @param requireTLS: the message was received with REQUIRETLS.
        @return: a L{Deferred} firing with a
            L{smx.mail.client.TransactionDone}.
        """
        d = defer.Deferred()  # type: defer.Deferred
        self._waiting = d
        self._bodyFile = bodyFile
        self._events(
            self.machine.startTransaction(
                sender,
                recipients,
                size,
                bodyType,
                smtputf8=smtputf8,
                dsn=dsn,
                requireTLS=requireTLS,
            )
        )
        return d

    def _sendBody(self) -> None:
        if not self.machine.chunking:
            self._body = _BodySender(self, self._bodyFile)
            self._body.start()
        elif isinstance(self._body, _ChunkSender):
            # without PIPELINING: the previous chunk was answered
            self._body.sendOne()
        else:
            self._body = _ChunkSender(
                self, self._bodyFile, "PIPELINING" in self.machine.extensions
            )
            self._body.start()

    def chunksDone(self) -> None:
        """Called by the chunk sender once the LAST chunk is written."""
        self._body = None
        self._closeBody()

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
            except OSError as e:
                self.log.warn("closeBody", da_sess=self.sessionId, error=str(e))
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


@implementer(interfaces.IPushProducer)
class _ChunkSender:
    """
    Sends the content with BDAT (RFC 3030) in chunks of about
    L{CHUNK_SIZE} octets: with PIPELINING as a push producer that writes
    until the transport asks it to pause (stopping early when a chunk is
    refused), else one chunk each time the machine says L{SendBody}.
    The file is read one chunk ahead, so that the last chunk goes with
    LAST (C{BDAT 0 LAST} only for empty content).
    """

    def __init__(self, protocol: ClientProtocol, bodyFile: Any, pipelined: bool):
        self.protocol = protocol
        self.file = bodyFile
        self.pipelined = pipelined
        self.encoder = BodyEncoder(dotStuffing=False)
        self.paused = False
        self.stopped = False
        self.registered = False
        self.transport = protocol.transport
        self._ahead = None  # type: Optional[bytes]

    def start(self) -> None:
        if not self.pipelined:
            self.sendOne()
            return
        self.transport.registerProducer(self, True)
        self.registered = True
        self._pump()

    def _readEncoded(self) -> Optional[bytes]:
        while True:
            raw = self.file.read(CHUNK_SIZE)
            if not raw:
                return None
            data = self.encoder.encode(raw)
            if data:
                return data

    def _take(self) -> Tuple[bytes, bool]:
        data = self._ahead
        if data is None:
            data = self._readEncoded()
            if data is None:
                return self.encoder.finish(), True
        self._ahead = self._readEncoded()
        if self._ahead is None:
            return data + self.encoder.finish(), True
        return data, False

    def sendOne(self) -> None:
        """Send the next chunk."""
        if self.stopped:
            return
        try:
            data, last = self._take()
        except (OSError, ValueError) as e:
            self.stop()
            self.protocol.bodyFailed(str(e))
            return
        machine = self.protocol.machine
        if last:
            self.stop()
        self.protocol._events(machine.sendChunk(data, last))
        if last:
            self.protocol.chunksDone()

    def _pump(self) -> None:
        while not self.paused and not self.stopped:
            if self.protocol.machine.chunkFailed:
                # RFC 3030 §2: no more BDAT after a refused chunk
                self.stop()
                self.protocol.bodyDone()
                return
            self.sendOne()

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
        if self.registered:
            self.registered = False
            self.transport.unregisterProducer()


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
                    "451 4.4.1 cannot connect: %s" % (connectReason(reason),),
                )
            )
