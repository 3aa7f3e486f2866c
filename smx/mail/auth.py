# -*- test-case-name: smx.mail.test.test_auth -*-
"""
SMTP AUTH (RFC 4954, seed §5.9 item 19) through C{twisted.cred}: the
SASL mechanisms PLAIN (RFC 4616), LOGIN and CRAM-MD5 (RFC 2195) turn the
client's lines into credentials, which a C{twisted.cred} checker verifies.

The password file (an smx extension: C{auth { password_file = ...; }}) has
one C{user:password} line per user, in clear text because CRAM-MD5 needs
the secret; C{#} starts a comment.  It is read with
L{twisted.cred.checkers.FilePasswordDB} and reread when it changes.

The C{auth} flags of §5.9 (Cyrus SASL's security flags) filter the
mechanisms by the properties Dovecot gives them (L{filterMechanisms}):
C{noplaintext} removes PLAIN and LOGIN, C{nodictionary} and C{noactive}
remove CRAM-MD5; C{pass_credentials} has no effect.

The back ends (L{smx.interfaces.ISASLAuthenticator}), chosen by
C{auth { type }}: C{file} (the password file, L{CheckerAuthenticator}
with L{passwordChecker}), C{dovecot} (L{smx.mail.sasl_dovecot}: Dovecot's
authentication server runs the whole exchange) and C{saslauthd}
(L{smx.mail.saslauthd}: PLAIN and LOGIN are decoded here, the password is
checked by Cyrus saslauthd).  L{authenticatorFromSection} builds the one
an C{auth} section asks for.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import time
from typing import Any, Collection, Iterable, Optional, Sequence, Tuple

from twisted.cred import credentials
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.checkers import FilePasswordDB
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet import defer
from zope.interface import implementer

from smx.interfaces import ISASLAuthenticator, ISASLExchange
from smx.log import Logger

#: every mechanism smx implements, in the order offered
MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")
PLAINTEXT = frozenset(["PLAIN", "LOGIN"])


class AuthError(Exception):
    """
    AUTH is refused: the client's SASL input is malformed (501), the
    credentials are wrong (535), the server is unavailable (454).

    @ivar reason: what the log says about it (not sent to the client), or
        C{None}.
    """

    def __init__(
        self, code: int, dsn: str, text: str, reason: Optional[str] = None
    ) -> None:
        Exception.__init__(self, text)
        self.code = code
        self.dsn = dsn
        self.text = text
        self.reason = reason


class AuthUnavailable(AuthError):
    """
    The authentication server cannot be asked (down, timed out, broken
    reply, or it reported a temporary failure): 454 4.7.0.

    @ivar reason: what went wrong, for the log (not for the client).
    """

    def __init__(self, reason: str) -> None:
        AuthError.__init__(
            self, 454, "4.7.0", "Temporary authentication failure", reason
        )


def describeError(value: Optional[BaseException]) -> str:
    """
    A back end's connection error as the log wants it (C{Connection
    refused}, not Twisted's C{111}).
    """
    number = getattr(value, "osError", None)
    if isinstance(number, int):
        return os.strerror(number)
    return str(value) or type(value).__name__


#: the reply to wrong credentials
INVALID = (535, "5.7.8", "Authentication credentials invalid")


class Challenge:
    """
    A step of an exchange: send C{334 text} and wait for the client.

    @ivar text: base64 text (may be empty).
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Challenge) and other.text == self.text

    def __repr__(self) -> str:
        return "Challenge(%r)" % (self.text,)


class Success:
    """
    The end of a successful exchange.

    @ivar user: the authenticated user name, as the back end names it.
    """

    __slots__ = ("user",)

    def __init__(self, user: str) -> None:
        self.user = user

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Success) and other.user == self.user

    def __repr__(self) -> str:
        return "Success(%r)" % (self.user,)


class ClientInfo:
    """
    What a back end may want to know about the SMTP client (Dovecot uses it
    for its log and its brute-force penalty).

    @ivar address: the client's IP address.
    @ivar port: the client's port.
    @ivar localAddress: the server's address of the session.
    @ivar localPort: the server's port of the session.
    @ivar secured: whether the session is protected by TLS.
    @ivar session: the session id (C{ss_sess}).
    """

    __slots__ = ("address", "port", "localAddress", "localPort", "secured", "session")

    def __init__(
        self,
        address: str = "",
        port: int = 0,
        localAddress: str = "",
        localPort: int = 0,
        secured: bool = False,
        session: str = "",
    ) -> None:
        self.address = address
        self.port = port
        self.localAddress = localAddress
        self.localPort = localPort
        self.secured = secured
        self.session = session


#: the properties of the built-in mechanisms, named as Dovecot names them
#: in its C{MECH} lines (and as Cyrus SASL's security flags mean them)
MECHANISM_FLAGS = {
    "PLAIN": frozenset(["plaintext"]),
    "LOGIN": frozenset(["plaintext"]),
    "CRAM-MD5": frozenset(["dictionary", "active"]),
}

#: C{auth} flags that remove mechanisms with a property
_FORBIDS = {
    "noplaintext": "plaintext",
    "noactive": "active",
    "nodictionary": "dictionary",
    "noanonymous": "anonymous",
}

#: C{auth} flags that keep only mechanisms with a property
_REQUIRES = {"forward_secrecy": "forward-secrecy", "mutual_auth": "mutual-auth"}


def filterMechanisms(
    mechanisms: Iterable[Tuple[str, Collection[str]]], flags: Collection[str] = ()
) -> Tuple[str, ...]:
    """
    The mechanisms to offer under the C{auth} C{flags} (the Cyrus SASL
    security flags of §5.9): C{noplaintext}, C{noactive}, C{nodictionary}
    and C{noanonymous} remove the mechanisms with that weakness,
    C{forward_secrecy} and C{mutual_auth} keep only the mechanisms with
    that strength; C{pass_credentials} has no effect.  Mechanisms marked
    C{private} by Dovecot, and EXTERNAL (it needs the client certificate's
    name, which smx does not pass on), are never offered.

    @param mechanisms: C{(name, properties)} pairs, properties named as in
        Dovecot's C{MECH} lines (C{plaintext}, C{anonymous}, ...).
    @return: the upper-case names, in the given order, without duplicates.
    """
    out = []  # type: list
    for name, properties in mechanisms:
        name = name.upper()
        if name in out or name == "EXTERNAL" or "private" in properties:
            continue
        if any(_FORBIDS[f] in properties for f in flags if f in _FORBIDS):
            continue
        if any(_REQUIRES[f] not in properties for f in flags if f in _REQUIRES):
            continue
        out.append(name)
    return tuple(out)


def offeredMechanisms(
    flags: Collection[str] = (), mechanisms: Sequence[str] = MECHANISMS
) -> Tuple[str, ...]:
    """
    The built-in C{mechanisms} to offer under the C{auth} C{flags} (see
    L{filterMechanisms}).
    """
    return filterMechanisms(((m, MECHANISM_FLAGS[m]) for m in mechanisms), flags)


def passwordChecker(path: str) -> FilePasswordDB:
    """
    A C{twisted.cred} checker of C{user:password} lines in C{path}.

    @raise OSError: if the file cannot be read (a configuration mistake).
    """
    with open(path, "rb"):
        pass
    return FilePasswordDB(path, delim=b":", caseSensitive=True, cache=False)


def _decode(line: str) -> bytes:
    if line == "=":
        return b""
    try:
        return base64.b64decode(line.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise AuthError(501, "5.5.2", "Invalid base64 data")


def _b64(text: bytes) -> str:
    return base64.b64encode(text).decode("ascii")


class SASLExchange:
    """
    One SASL exchange.  L{start} and L{respond} return C{("challenge",
    text)} to send C{334 text}, or C{("credentials", creds)} once the
    client said everything; they raise L{AuthError} for bad input.

    @ivar mechanism: the mechanism name.
    """

    def __init__(self, mechanism: str, hostname: str) -> None:
        self.mechanism = mechanism
        self.hostname = hostname
        self._step = 0
        self._user = b""
        self._challenge = b""

    def start(self, initial: Optional[str]) -> Tuple[str, Any]:
        """The AUTH command with its optional initial response."""
        if self.mechanism == "CRAM-MD5":
            if initial is not None:
                raise AuthError(501, "5.5.2", "CRAM-MD5 takes no initial response")
            self._challenge = (
                "<%d.%d.%d@%s>"
                % (
                    secrets.randbelow(1 << 31),
                    os.getpid(),
                    int(time.time() * 1000),
                    self.hostname,
                )
            ).encode("ascii")
            return ("challenge", _b64(self._challenge))
        if initial is None:
            if self.mechanism == "PLAIN":
                return ("challenge", "")
            return ("challenge", _b64(b"Username:"))
        return self.respond(initial)

    def respond(self, line: str) -> Tuple[str, Any]:
        """A line the client sent after a 334."""
        data = _decode(line)
        if self.mechanism == "PLAIN":
            parts = data.split(b"\0")
            if len(parts) != 3 or not parts[1]:
                raise AuthError(501, "5.5.2", "Invalid PLAIN response")
            if parts[0] and parts[0] != parts[1]:
                raise AuthError(535, "5.7.8", "Authorization identity not allowed")
            return ("credentials", credentials.UsernamePassword(parts[1], parts[2]))
        if self.mechanism == "LOGIN":
            if self._step == 0:
                self._step = 1
                self._user = data
                return ("challenge", _b64(b"Password:"))
            return ("credentials", credentials.UsernamePassword(self._user, data))
        # CRAM-MD5
        user, _, digest = data.rpartition(b" ")
        if not user or len(digest) != 32:
            raise AuthError(501, "5.5.2", "Invalid CRAM-MD5 response")
        creds = credentials.CramMD5Credentials(self.hostname)
        creds.challenge = self._challenge
        creds.username = user  # type: ignore[assignment]
        creds.response = digest
        return ("credentials", creds)


@implementer(ISASLExchange)
class CheckerExchange:
    """
    An exchange of a built-in mechanism (L{SASLExchange}) whose credentials
    a C{twisted.cred} checker verifies.
    """

    def __init__(
        self, checker: ICredentialsChecker, mechanism: str, hostname: str
    ) -> None:
        self.checker = checker
        self.mechanism = mechanism
        self._sasl = SASLExchange(mechanism, hostname)

    def start(self, initial: Optional[str]) -> "defer.Deferred[Any]":
        return self._step(self._sasl.start, initial)

    def respond(self, line: str) -> "defer.Deferred[Any]":
        return self._step(self._sasl.respond, line)

    def _step(self, method: Any, line: Any) -> "defer.Deferred[Any]":
        try:
            kind, value = method(line)
        except AuthError:
            return defer.fail()
        if kind == "challenge":
            return defer.succeed(Challenge(value))
        d = defer.maybeDeferred(self.checker.requestAvatarId, value)
        d.addCallbacks(self._cbChecked, self._ebChecked)
        return d

    def _cbChecked(self, avatarId: Any) -> Success:
        if isinstance(avatarId, bytes):
            avatarId = avatarId.decode("utf-8", "replace")
        return Success(str(avatarId))

    def _ebChecked(self, reason: Any) -> Any:
        if reason.check(UnauthorizedLogin, UnhandledCredentials):
            raise AuthError(*INVALID)
        return reason


@implementer(ISASLAuthenticator)
class CheckerAuthenticator:
    """
    The built-in mechanisms (L{SASLExchange}) with a C{twisted.cred}
    checker: the password file (L{passwordChecker}) or saslauthd
    (L{smx.mail.saslauthd.SaslauthdChecker}).

    @ivar checker: an C{ICredentialsChecker} (of C{IUsernamePassword}, and
        of C{IUsernameHashedPassword} for CRAM-MD5).
    @ivar hostname: the server name in CRAM-MD5 challenges.
    """

    def __init__(
        self,
        checker: ICredentialsChecker,
        mechanisms: Sequence[str],
        hostname: str = "localhost",
    ) -> None:
        self.checker = checker
        self._mechanisms = tuple(m.upper() for m in mechanisms)
        self.hostname = hostname

    def mechanisms(self) -> Tuple[str, ...]:
        return self._mechanisms

    def exchange(self, mechanism: str, client: ClientInfo) -> CheckerExchange:
        return CheckerExchange(self.checker, mechanism, self.hostname)

    def start(self, log: Optional[Logger] = None) -> None:
        pass

    def stop(self) -> "defer.Deferred[None]":
        return defer.succeed(None)


class AuthConfigurationError(Exception):
    """
    The C{auth} section cannot be used.

    @ivar location: C{"file:line:column"} of the option at fault, or C{""}.
    @ivar message: the problem.
    """

    def __init__(self, message: str, location: str = "") -> None:
        Exception.__init__(self, message, location)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        if self.location:
            return "%s: %s" % (self.location, self.message)
        return self.message


#: where the servers listen unless C{auth { path }} says otherwise
DEFAULT_PATHS = {
    "dovecot": "/run/dovecot/auth-client",
    "saslauthd": "/run/saslauthd/mux",
}


def authenticatorFromSection(
    auth: Any, hostname: str = "localhost", reactor: Any = None
) -> Optional[ISASLAuthenticator]:
    """
    The L{ISASLAuthenticator} an C{auth} section asks for (C{type},
    C{password_file}, C{path}, C{address}, C{service}, C{realm},
    C{timeout}, C{flags}), or C{None} when AUTH is not offered (C{type =
    file} without C{password_file}).

    @raise AuthConfigurationError: for an unusable combination or file.
    """
    kind = auth["type"]
    flags = frozenset(auth["flags"])
    passwordFile = auth["password_file"]
    path = auth["path"]
    address = auth["address"]
    timeout = float(auth["timeout"])

    def error(message: str, name: str) -> AuthConfigurationError:
        where = getattr(auth, "where", None)
        return AuthConfigurationError(message, where(name) if where else "")

    if kind == "file":
        for name in ("path", "address"):
            if auth[name] is not None:
                raise error(
                    "%s is used with type = dovecot or saslauthd, not with "
                    "type = file (write type = dovecot or saslauthd)" % (name,),
                    name,
                )
        if not passwordFile:
            return None
        try:
            checker = passwordChecker(passwordFile)  # type: Any
        except OSError as e:
            raise error(
                "password_file %s: %s" % (passwordFile, e.strerror), "password_file"
            )
        return CheckerAuthenticator(checker, offeredMechanisms(flags), hostname)
    if passwordFile:
        raise error(
            "password_file is used only with type = file (this auth section "
            "has type = %s)" % (kind,),
            "password_file",
        )
    service = auth["service"]
    if kind == "saslauthd":
        if address is not None:
            raise error(
                "saslauthd listens on a Unix domain socket only: write path, "
                "not address",
                "address",
            )
        mechanisms = offeredMechanisms(flags, ("PLAIN", "LOGIN"))
        if not mechanisms:
            raise error(
                "saslauthd checks plaintext passwords only (PLAIN, LOGIN), "
                "which flags = { noplaintext } forbids",
                "flags",
            )
        from smx.mail.saslauthd import SaslauthdChecker

        checker = SaslauthdChecker(
            path or DEFAULT_PATHS["saslauthd"],
            service=service,
            realm=auth["realm"] or "",
            timeout=timeout,
            reactor=reactor,
        )
        return CheckerAuthenticator(checker, mechanisms, hostname)
    # dovecot
    if path is not None and address is not None:
        raise error("write either path or address, not both", "address")
    if auth["realm"]:
        raise error(
            "realm is sent to saslauthd only (Dovecot has auth_default_realm)",
            "realm",
        )
    from smx.mail.sasl_dovecot import DovecotAuthenticator

    return DovecotAuthenticator(
        path=None if address is not None else (path or DEFAULT_PATHS["dovecot"]),
        address=address,
        service=service,
        flags=flags,
        timeout=timeout,
        reactor=reactor,
    )
