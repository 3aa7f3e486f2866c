# -*- test-case-name: smx.mail.test.test_smtps -*-
"""
The AUTH command of SMTPS (RFC 4954): the SASL exchange with the
section's L{smx.interfaces.ISASLAuthenticator}, the challenges, the
result and its log record; a mixin of L{smx.mail.smtps.SMTPServerProtocol}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from twisted.internet import defer
from twisted.python import failure

from smx.mail import server as sm
from smx.mail.auth import AuthError, AuthUnavailable, Challenge, ClientInfo

if TYPE_CHECKING:  # pragma: no cover
    from smx.interfaces import ISASLExchange


class AuthCommandsMixin:
    """
    AUTH and its responses for the SMTP session protocol.
    """

    factory: Any
    transport: Any
    connection: Any
    policy: Any
    sessionId: str
    clientAddress: str
    _sasl: Optional["ISASLExchange"]
    authUser: Optional[str]
    authMechanism: Optional[str]
    _pdSaslMethod: str

    def do_Auth(self, event: sm.Auth):
        peer = self.transport.getPeer()
        host = self.transport.getHost()
        client = ClientInfo(
            address=self.clientAddress,
            port=getattr(peer, "port", 0) or 0,
            localAddress=getattr(host, "host", "") or "",
            localPort=getattr(host, "port", 0) or 0,
            secured=self.connection.tls,
            session=self.sessionId,
        )
        authenticator = self.factory.settings.authenticator
        try:
            self._sasl = authenticator.exchange(event.mechanism, client)
            d = self._sasl.start(event.initial)
        except Exception:
            d = defer.fail()
        return self._authStep(d)

    def do_AuthResponse(self, event: sm.AuthResponse):
        if self._sasl is None:  # pragma: no cover
            self.connection.reject(503, "5.5.1", "No AUTH in progress")
            return None
        return self._authStep(defer.maybeDeferred(self._sasl.respond, event.line))

    def _authStep(self, d: defer.Deferred) -> defer.Deferred:
        d.addCallbacks(self._cbAuthStep, self._ebAuth)
        # a fresh Deferred: one that waits on another (a back end's
        # chain) counts as called, and the session must wait for it
        done = defer.Deferred()  # type: defer.Deferred[None]
        d.addBoth(done.callback)
        return done

    def _cbAuthStep(self, step: Any) -> None:
        if isinstance(step, Challenge):
            self.connection.challenge(step.text)
            return
        mechanism = self._sasl.mechanism if self._sasl else ""
        self._sasl = None
        self.authUser = step.user
        self.authMechanism = mechanism
        self._pdSaslMethod = mechanism
        self.policy.authenticated(mechanism)
        self.factory.log.info(
            ss_sess=self.sessionId,
            where="auth",
            mech=mechanism,
            user=self.authUser,
            relay=1 if self.policy.relayClient else None,
            stat=0,
        )
        self.connection.accept()

    def _ebAuth(self, reason: failure.Failure) -> None:
        mechanism = self._sasl.mechanism if self._sasl else ""
        self._sasl = None
        e = reason.value
        if isinstance(e, AuthError):
            if e.code in (535, 454):
                self.factory.log.info(
                    ss_sess=self.sessionId,
                    where="auth",
                    mech=mechanism,
                    stat=e.code,
                    reason=e.reason,
                )
            self.connection.reject(e.code, e.dsn, e.text)
        else:
            self.factory.log.failure("_ebAuth", reason, ss_sess=self.sessionId)
            u = AuthUnavailable("")
            self.connection.reject(u.code, u.dsn, u.text)
