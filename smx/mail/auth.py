# -*- test-case-name: smx.mail.test.test_auth -*-
"""
SMTP AUTH (RFC 4954, seed §5.9 item 19) through C{twisted.cred}: the
SASL mechanisms PLAIN (RFC 4616), LOGIN and CRAM-MD5 (RFC 2195) turn the
client's lines into credentials, which a C{twisted.cred} checker verifies.

The password file (an smx extension: C{auth { password_file = ...; }}) has
one C{user:password} line per user, in clear text because CRAM-MD5 needs
the secret; C{#} starts a comment.  It is read with
L{twisted.cred.checkers.FilePasswordDB} and reread when it changes.

The C{auth} flags of §5.9 that apply to these mechanisms: C{noplaintext}
removes PLAIN and LOGIN; the other Cyrus SASL flags are accepted and have
no effect.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import time
from typing import Any, Collection, Optional, Tuple

from twisted.cred import credentials
from twisted.cred.checkers import FilePasswordDB

#: every mechanism smx implements, in the order offered
MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")
PLAINTEXT = frozenset(["PLAIN", "LOGIN"])


class AuthError(Exception):
    """
    The client's SASL input is malformed (501) or was cancelled.
    """

    def __init__(self, code: int, dsn: str, text: str) -> None:
        Exception.__init__(self, text)
        self.code = code
        self.dsn = dsn
        self.text = text


def offeredMechanisms(flags: Collection[str] = ()) -> Tuple[str, ...]:
    """
    The mechanisms to offer under the C{auth} C{flags}.
    """
    if "noplaintext" in flags:
        return tuple(m for m in MECHANISMS if m not in PLAINTEXT)
    return MECHANISMS


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
