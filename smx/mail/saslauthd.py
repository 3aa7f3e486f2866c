# -*- test-case-name: smx.mail.test.test_saslauthd -*-
"""
NAME
    smx.mail.saslauthd - SMTP AUTH passwords checked by Cyrus saslauthd

SYNOPSIS
    smtps { auth { type = saslauthd; path = "/run/saslauthd/mux"; } }

DESCRIPTION
    PLAIN and LOGIN are decoded by smx (L{smx.mail.auth.SASLExchange});
    the user name and password are checked by C{saslauthd} (with C{-a
    pam}, C{-a shadow}, C{-a sasldb}, C{-a rimap}, ...), the way Postfix
    does it through Cyrus SASL's C{pwcheck_method: saslauthd}.

    saslauthd's protocol on its Unix domain socket (the C{mux} socket in
    the directory of C{saslauthd -m}): the client sends the login, the
    password, the service and the realm, each as a 2-byte big-endian
    length followed by that many bytes; saslauthd answers with one such
    string, C{OK ...} or C{NO ...}, and closes the connection.  smx opens
    one connection per check, without blocking the reactor.

    L{encodeQuery} and L{decodeReply} are the protocol; L{SaslauthdQuery}
    its Twisted adapter; L{SaslauthdChecker} a C{twisted.cred} checker of
    C{IUsernamePassword} that L{smx.mail.auth.CheckerAuthenticator} uses.

CONFIGURATION PARAMETERS
    auth { type = saslauthd; path; service; realm; timeout; flags }
    path        the C{mux} socket (default C{/run/saslauthd/mux}, Debian's)
    service     the service name sent (default C{smtp}; C{-a pam} uses it
                as the PAM service)
    realm       the realm sent (default empty; C{-a sasldb} then uses the
                host name)
    timeout     the longest wait for an answer (default 30s)
    Only PLAIN and LOGIN can be offered, so the flag C{noplaintext} is an
    error with this back end.

SECURITY
    saslauthd compares C strings: a NUL in the user name or password
    would cut it short there, so such credentials are refused here.

DIAGNOSTICS
    When saslauthd cannot be reached, answers nothing within C{timeout}
    or answers neither OK nor NO, AUTH is answered C{454 4.7.0 Temporary
    authentication failure} and the reason is logged (C{where=auth,
    stat=454, reason=...}).
"""

from __future__ import annotations

import struct
from typing import Any, Optional, Sequence, Tuple

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.python import failure
from zope.interface import implementer

from smx.mail.auth import AuthUnavailable, describeError

#: longest field the 2-byte length can describe
MAX_FIELD = 65535


class SaslauthdProtocolError(Exception):
    """saslauthd answered something that is neither OK nor NO."""


def encodeQuery(fields: Sequence[bytes]) -> bytes:
    """
    The request: each field as a 2-byte big-endian length and its bytes.

    @raise ValueError: for a field longer than L{MAX_FIELD}.
    """
    out = []
    for field in fields:
        if len(field) > MAX_FIELD:
            raise ValueError("a field of %d bytes is too long" % (len(field),))
        out.append(struct.pack("!H", len(field)) + field)
    return b"".join(out)


def decodeReply(data: bytes) -> Optional[Tuple[bool, str]]:
    """
    The answer, once complete.

    @return: C{None} while more bytes are needed, else C{(ok, text)}.
    @raise SaslauthdProtocolError: if the answer is neither OK nor NO.
    """
    if len(data) < 2:
        return None
    (length,) = struct.unpack("!H", data[:2])
    if len(data) < 2 + length:
        return None
    text = data[2 : 2 + length].decode("utf-8", "replace")
    if text[:2] == "OK":
        return (True, text[2:].strip())
    if text[:2] == "NO":
        return (False, text[2:].strip())
    raise SaslauthdProtocolError("saslauthd answered %r" % (text[:80],))


class SaslauthdQuery(protocol.Protocol):
    """
    One check: writes the query when connected and fires L{result} with
    C{(ok, text)} or a failure.
    """

    transport = None  # type: Any

    def __init__(self, query: bytes) -> None:
        self.query = query
        self.result = defer.Deferred()  # type: defer.Deferred[Tuple[bool, str]]
        self._buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(self.query)

    def dataReceived(self, data: bytes) -> None:
        if self.result.called:
            return
        self._buffer += data
        try:
            answer = decodeReply(self._buffer)
        except SaslauthdProtocolError:
            self.result.errback()
            self.transport.abortConnection()
            return
        if answer is not None:
            self.result.callback(answer)
            self.transport.loseConnection()

    def connectionLost(self, reason: failure.Failure = protocol.connectionDone) -> None:
        if not self.result.called:
            self.result.errback(
                SaslauthdProtocolError("saslauthd closed the connection without answer")
            )


@implementer(ICredentialsChecker)
class SaslauthdChecker:
    """
    A C{twisted.cred} checker that asks saslauthd.

    @ivar path: saslauthd's C{mux} socket.
    @ivar service: the service name sent.
    @ivar realm: the realm sent.
    @ivar timeout: seconds to wait for the answer.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self,
        path: str,
        service: str = "smtp",
        realm: str = "",
        timeout: float = 30.0,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.path = path
        self.service = service
        self.realm = realm
        self.timeout = timeout
        self.reactor = reactor

    def requestAvatarId(self, credentials: Any) -> "defer.Deferred[Any]":
        """
        @return: a L{Deferred} firing with the user name; it fails with
            L{UnauthorizedLogin} for a wrong password and with
            L{AuthUnavailable} when saslauthd cannot tell.
        """
        user, password = credentials.username, credentials.password
        if isinstance(user, str):
            user = user.encode("utf-8")
        if isinstance(password, str):
            password = password.encode("utf-8")
        if not user or b"\0" in user or b"\0" in password:
            return defer.fail(UnauthorizedLogin("a NUL in the credentials"))
        try:
            query = encodeQuery(
                [user, password, self.service.encode(), self.realm.encode()]
            )
        except ValueError:
            return defer.fail(UnauthorizedLogin("credentials too long"))
        proto = SaslauthdQuery(query)
        endpoint = UNIXClientEndpoint(self.reactor, self.path, timeout=self.timeout)
        connecting = endpoint.connect(_OneQueryFactory(proto))
        timer = self.reactor.callLater(self.timeout, self._timedOut, proto, connecting)
        connecting.addErrback(self._ebConnect, proto)
        d = proto.result
        d.addBoth(self._cbDone, timer)
        d.addCallbacks(self._cbAnswer, self._ebAnswer, callbackArgs=(user,))
        return d

    def _ebConnect(self, reason: failure.Failure, proto: SaslauthdQuery) -> None:
        if not proto.result.called:
            proto.result.errback(reason)

    def _timedOut(self, proto: SaslauthdQuery, connecting: defer.Deferred) -> None:
        if not connecting.called:
            connecting.cancel()
        elif not proto.result.called:
            proto.result.errback(error.TimeoutError())
            if proto.transport is not None:
                proto.transport.abortConnection()

    def _cbDone(self, result: Any, timer: Any) -> Any:
        if timer.active():
            timer.cancel()
        return result

    def _cbAnswer(self, answer: Tuple[bool, str], user: bytes) -> bytes:
        ok, text = answer
        if not ok:
            raise UnauthorizedLogin(text or "saslauthd said NO")
        return user

    def _ebAnswer(self, reason: failure.Failure) -> None:
        if reason.check(
            defer.CancelledError, error.ConnectingCancelledError, error.TimeoutError
        ):
            message = "no answer within %gs" % (self.timeout,)
        else:
            message = describeError(reason.value)
        raise AuthUnavailable("saslauthd %s: %s" % (self.path, message))


class _OneQueryFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, proto: SaslauthdQuery) -> None:
        self.proto = proto

    def buildProtocol(self, addr: Any) -> SaslauthdQuery:
        return self.proto
