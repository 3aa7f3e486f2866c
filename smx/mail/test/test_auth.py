# -*- test-case-name: smx.mail.test.test_auth -*-
"""
Tests for L{smx.mail.auth}: SASL exchanges and the password file.
"""

import base64
import hmac

from twisted.cred.error import UnauthorizedLogin
from twisted.trial import unittest

from smx.mail.auth import (
    AuthError,
    SASLExchange,
    offeredMechanisms,
    passwordChecker,
)


def b64(data):
    return base64.b64encode(data).decode("ascii")


class ExchangeTests(unittest.TestCase):
    """L{SASLExchange}."""

    def test_plainInitial(self):
        """PLAIN with an initial response gives credentials at once."""
        kind, creds = SASLExchange("PLAIN", "mx").start(b64(b"\0u\0p"))
        self.assertEqual(
            (kind, creds.username, creds.password), ("credentials", b"u", b"p")
        )

    def test_plainMalformed(self):
        """A PLAIN response without two NULs or bad base64 is 501."""
        for line in [b64(b"up"), "!!!"]:
            e = self.assertRaises(AuthError, SASLExchange("PLAIN", "mx").start, line)
            self.assertEqual(e.code, 501)

    def test_plainOtherIdentity(self):
        """PLAIN with another authorization identity is refused."""
        e = self.assertRaises(
            AuthError, SASLExchange("PLAIN", "mx").start, b64(b"root\0u\0p")
        )
        self.assertEqual(e.code, 535)
        kind, creds = SASLExchange("PLAIN", "mx").start(b64(b"u\0u\0p"))
        self.assertEqual(creds.username, b"u")

    def test_login(self):
        """LOGIN asks for user name and password."""
        x = SASLExchange("LOGIN", "mx")
        self.assertEqual(x.start(None), ("challenge", b64(b"Username:")))
        self.assertEqual(x.respond(b64(b"u")), ("challenge", b64(b"Password:")))
        kind, creds = x.respond(b64(b"p"))
        self.assertEqual((creds.username, creds.password), (b"u", b"p"))

    def test_cramMD5(self):
        """CRAM-MD5 checks the HMAC of the challenge."""
        x = SASLExchange("CRAM-MD5", "mx")
        kind, challenge = x.start(None)
        raw = base64.b64decode(challenge)
        self.assertTrue(raw.startswith(b"<") and raw.endswith(b"@mx>"))
        digest = hmac.new(b"secret", raw, "md5").hexdigest().encode()
        kind, creds = x.respond(b64(b"u " + digest))
        self.assertTrue(creds.checkPassword(b"secret"))
        self.assertFalse(creds.checkPassword(b"other"))

    def test_noplaintext(self):
        """noplaintext leaves only CRAM-MD5."""
        self.assertEqual(offeredMechanisms({"noplaintext"}), ("CRAM-MD5",))
        self.assertEqual(offeredMechanisms(), ("PLAIN", "LOGIN", "CRAM-MD5"))


class PasswordFileTests(unittest.TestCase):
    """L{passwordChecker}."""

    def test_check(self):
        """The file's users authenticate; others do not."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# users\nu:secret\n")
        checker = passwordChecker(path)
        _, creds = SASLExchange("PLAIN", "mx").start(b64(b"\0u\0secret"))
        self.assertEqual(self.successResultOf(checker.requestAvatarId(creds)), b"u")
        _, creds = SASLExchange("PLAIN", "mx").start(b64(b"\0u\0wrong"))
        self.failureResultOf(checker.requestAvatarId(creds), UnauthorizedLogin)

    def test_missing(self):
        """A missing file is an OSError (reported as a configuration error)."""
        self.assertRaises(OSError, passwordChecker, "/nonexistent/passwords")
