# -*- test-case-name: smx.mail.test.test_auth -*-
"""
Tests for L{smx.mail.auth}: SASL exchanges and the password file.
"""

import base64
import hmac
import os

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.config import ConfigError, configurationFromText
from smx.interfaces import ISASLAuthenticator, ISASLExchange
from smx.mail.auth import (
    AuthConfigurationError,
    AuthError,
    Challenge,
    CheckerAuthenticator,
    ClientInfo,
    SASLExchange,
    Success,
    authenticatorFromSection,
    filterMechanisms,
    offeredMechanisms,
    passwordChecker,
)
from smx.mail.sasl_dovecot import DovecotAuthenticator
from smx.mail.saslauthd import SaslauthdChecker


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

    def test_securityFlags(self):
        """
        The Cyrus SASL flags judge the mechanisms by Dovecot's properties:
        no* flags remove, forward_secrecy and mutual_auth require; private
        mechanisms and EXTERNAL are never offered.
        """
        mechs = [
            ("PLAIN", {"plaintext"}),
            ("CRAM-MD5", {"dictionary", "active"}),
            ("ANONYMOUS", {"anonymous"}),
            ("GSSAPI", {"mutual-auth"}),
            ("SCRAM-SHA-256", set()),
            ("EXTERNAL", set()),
            ("OTP", {"private"}),
            ("plain", {"plaintext"}),
        ]
        self.assertEqual(
            filterMechanisms(mechs),
            ("PLAIN", "CRAM-MD5", "ANONYMOUS", "GSSAPI", "SCRAM-SHA-256"),
        )
        self.assertEqual(
            filterMechanisms(mechs, {"noanonymous", "nodictionary", "noplaintext"}),
            ("GSSAPI", "SCRAM-SHA-256"),
        )
        self.assertEqual(
            filterMechanisms(mechs, {"noactive"}),
            ("PLAIN", "ANONYMOUS", "GSSAPI", "SCRAM-SHA-256"),
        )
        self.assertEqual(filterMechanisms(mechs, {"mutual_auth"}), ("GSSAPI",))
        self.assertEqual(filterMechanisms(mechs, {"forward_secrecy"}), ())
        self.assertEqual(offeredMechanisms({"nodictionary"}), ("PLAIN", "LOGIN"))


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


class CheckerAuthenticatorTests(unittest.TestCase):
    """L{CheckerAuthenticator}: built-in mechanisms and a C{twisted.cred} checker."""

    def setUp(self):
        checker = InMemoryUsernamePasswordDatabaseDontUse(u=b"secret")
        self.auth = CheckerAuthenticator(checker, ("PLAIN", "LOGIN"), "mx")

    def test_interfaces(self):
        """It and its exchanges provide their interfaces."""
        self.assertTrue(verifyObject(ISASLAuthenticator, self.auth))
        x = self.auth.exchange("PLAIN", ClientInfo())
        self.assertTrue(verifyObject(ISASLExchange, x))
        self.assertEqual(self.auth.mechanisms(), ("PLAIN", "LOGIN"))
        self.assertIsNone(self.successResultOf(self.auth.stop()))

    def test_exchange(self):
        """Challenges, success with the user name, 535 and 501."""
        x = self.auth.exchange("LOGIN", ClientInfo())
        self.assertEqual(
            self.successResultOf(x.start(None)), Challenge(b64(b"Username:"))
        )
        self.successResultOf(x.respond(b64(b"u")))
        self.assertEqual(self.successResultOf(x.respond(b64(b"secret"))), Success("u"))
        x = self.auth.exchange("PLAIN", ClientInfo())
        e = self.failureResultOf(x.start(b64(b"\0u\0wrong")), AuthError).value
        self.assertEqual((e.code, e.dsn), (535, "5.7.8"))
        x = self.auth.exchange("PLAIN", ClientInfo())
        self.assertEqual(self.failureResultOf(x.start("!"), AuthError).value.code, 501)

    def test_otherFailures(self):
        """A checker's other failure passes through (the session logs it)."""
        self.auth.checker = type(
            "Broken", (), {"requestAvatarId": lambda self, c: defer.fail(KeyError())}
        )()
        x = self.auth.exchange("PLAIN", ClientInfo())
        self.failureResultOf(x.start(b64(b"\0u\0secret")), KeyError)


class SectionTests(unittest.TestCase):
    """L{authenticatorFromSection}: the C{auth} options."""

    def auth(self, text):
        cfg = configurationFromText(
            "smtps {\n  auth {\n    %s\n  }\n}\n" % (text,),
            filename="smx.conf",
            queueDirectory=self.mktemp(),
        )
        return cfg.section("smtps").section("auth")

    def build(self, text):
        return authenticatorFromSection(self.auth(text), "mx", MemoryReactorClock())

    def test_file(self):
        """type file (the default): AUTH only with a password file."""
        self.assertIsNone(self.build(""))
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("u:p\n")
        auth = self.build('password_file = "%s"; flags = { noplaintext };' % path)
        self.assertIsInstance(auth, CheckerAuthenticator)
        self.assertEqual(auth.mechanisms(), ("CRAM-MD5",))

    def test_dovecot(self):
        """type dovecot: path (default Dovecot's), or address; service."""
        auth = self.build("type = dovecot;")
        self.assertIsInstance(auth, DovecotAuthenticator)
        self.assertEqual(auth.path, "/run/dovecot/auth-client")
        auth = self.build(
            'type = dovecot; address = "127.0.0.1:12345"; service = submission; '
            "timeout = 5s; flags = { noanonymous };"
        )
        self.assertEqual(
            (auth.path, auth.address, auth.service, auth.timeout, auth.flags),
            (None, "127.0.0.1:12345", "submission", 5.0, frozenset(["noanonymous"])),
        )
        self.assertEqual(auth.describe(), "inet:127.0.0.1:12345")

    def test_saslauthd(self):
        """type saslauthd: PLAIN and LOGIN checked over its mux socket."""
        auth = self.build('type = saslauthd; realm = "example.test";')
        self.assertIsInstance(auth, CheckerAuthenticator)
        self.assertIsInstance(auth.checker, SaslauthdChecker)
        self.assertEqual(auth.mechanisms(), ("PLAIN", "LOGIN"))
        self.assertEqual(
            (auth.checker.path, auth.checker.realm, auth.checker.service),
            ("/run/saslauthd/mux", "example.test", "smtp"),
        )

    def test_mistakes(self):
        """
        Options that do not fit the type: an error at their line, found
        when the configuration is read (L{ConfigError}, as C{smx config}
        reports it) or, for a file that cannot be read, when the back end
        is built (L{AuthConfigurationError}).
        """
        for text, option, words in [
            ("type = saslauthd;\n    flags = { noplaintext };", "flags", "plaintext"),
            (
                'type = dovecot;\n    password_file = "/etc/passwd";',
                "password_file",
                "type = file",
            ),
            ('path = "/run/x";', "path", "type = dovecot"),
            (
                'type = dovecot; path = "/x";\n    address = "127.0.0.1:1";',
                "address",
                "not both",
            ),
            ('type = saslauthd;\n    address = "127.0.0.1:1";', "address", "Unix"),
            ("type = dovecot;\n    realm = x;", "realm", "saslauthd"),
            ('password_file = "/nonexistent/pw";', "password_file", "/nonexistent/pw"),
        ]:
            e = self.assertRaises(
                (ConfigError, AuthConfigurationError), self.build, text
            )
            self.assertTrue(
                str(e).startswith("smx.conf:%d:" % (text.count("\n") + 3)),
                (text, str(e)),
            )
            self.assertIn(option, str(e))
            self.assertIn(words, str(e))
