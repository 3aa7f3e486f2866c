# -*- test-case-name: smx.mail.test.test_integration_sasl -*-
"""
Integration tests of the SMTP AUTH back ends against the real servers:
Dovecot's authentication service (Debian package dovecot-core) and Cyrus
saslauthd (sasl2-bin), each a private instance started and stopped by the
test (L{smx.mail.test.saslpeers}); then end to end, C{twistd -n smx}
configured with each back end, swaks authenticating over STARTTLS, and
Postfix's smtp-sink receiving what an authenticated client relays.
"""

from __future__ import annotations

import base64
import hmac
import os
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase

from smx.mail.auth import (
    AuthError,
    Challenge,
    CheckerAuthenticator,
    ClientInfo,
    Success,
)
from smx.mail.sasl_dovecot import DovecotAuthenticator
from smx.mail.saslauthd import SaslauthdChecker
from smx.mail.test.saslpeers import DovecotAuthServer, Saslauthd
from smx.test.certs import makeCertificates
from smx.test.mta import (
    MTA,
    SMTP_SINK,
    SWAKS,
    SmtpSink,
    configuration,
    missing,
    swaks,
    tempDirectory,
    until,
)

USERS = {"alice": "secret"}
CLIENT = ClientInfo("127.0.0.1", 40000, "127.0.0.1", 25, True, "S1")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class DovecotTests(TestCase):
    """
    L{DovecotAuthenticator} against a real Dovecot auth service.
    """

    def setUp(self) -> None:
        reason = DovecotAuthServer.missing()
        if reason:
            raise SkipTest(reason)
        self.server = DovecotAuthServer(
            self, os.path.join(tempDirectory(self, "smx-sasl-"), "dovecot"), USERS
        )
        self.server.start()
        self.auth = DovecotAuthenticator(path=self.server.socket, timeout=5)
        self.addCleanup(self.auth.stop)

    @defer.inlineCallbacks
    def ready(self) -> Any:
        """Start the authenticator and wait for the handshake."""
        self.auth.start()
        yield self.auth._connection()

    @defer.inlineCallbacks
    def test_mechanisms(self) -> Any:
        """
        After the handshake EHLO offers what Dovecot lists, after the flags.
        """
        yield self.ready()
        self.assertEqual(self.auth.mechanisms(), ("PLAIN", "LOGIN", "CRAM-MD5"))
        self.auth.flags = frozenset(["noplaintext"])
        self.assertEqual(self.auth.mechanisms(), ("CRAM-MD5",))

    @defer.inlineCallbacks
    def test_plain(self) -> Any:
        """
        PLAIN with an initial response: the right password succeeds with
        Dovecot's user name, a wrong one is 535, both on one connection.
        """
        yield self.ready()
        x = self.auth.exchange("PLAIN", CLIENT)
        result = yield x.start(b64(b"\0alice\0secret"))
        self.assertEqual(result, Success("alice"))
        x = self.auth.exchange("PLAIN", CLIENT)
        e = yield self.assertFailure(x.start(b64(b"\0alice\0wrong")), AuthError)
        self.assertEqual((e.code, e.dsn), (535, "5.7.8"))
        x = self.auth.exchange("PLAIN", CLIENT)
        e = yield self.assertFailure(x.start("!!!"), AuthError)
        self.assertEqual(e.code, 501)

    @defer.inlineCallbacks
    def test_login(self) -> Any:
        """
        LOGIN is relayed step by step: Dovecot's challenges come back.
        """
        yield self.ready()
        x = self.auth.exchange("LOGIN", CLIENT)
        step = yield x.start(None)
        self.assertEqual(step, Challenge(b64(b"Username:")))
        step = yield x.respond(b64(b"alice"))
        self.assertEqual(step, Challenge(b64(b"Password:")))
        step = yield x.respond(b64(b"secret"))
        self.assertEqual(step, Success("alice"))

    @defer.inlineCallbacks
    def test_cramMD5(self) -> Any:
        """
        CRAM-MD5, a mechanism smx does not run itself here, works through
        Dovecot's challenge.
        """
        yield self.ready()
        x = self.auth.exchange("CRAM-MD5", CLIENT)
        step = yield x.start(None)
        challenge = base64.b64decode(step.text)
        digest = hmac.new(b"secret", challenge, "md5").hexdigest().encode()
        step = yield x.respond(b64(b"alice " + digest))
        self.assertEqual(step, Success("alice"))

    @defer.inlineCallbacks
    def test_unlistedMechanism(self) -> Any:
        """
        A mechanism Dovecot did not list is 504 and not sent (Dovecot would
        drop the connection): the next exchange works on the same one.
        """
        yield self.ready()
        proto = self.auth._proto
        x = self.auth.exchange("DIGEST-MD5", CLIENT)
        e = yield self.assertFailure(x.start(None), AuthError)
        self.assertEqual(e.code, 504)
        x = self.auth.exchange("PLAIN", CLIENT)
        self.assertEqual((yield x.start(b64(b"\0alice\0secret"))), Success("alice"))
        self.assertIs(self.auth._proto, proto)

    @defer.inlineCallbacks
    def test_restart(self) -> Any:
        """
        While Dovecot is down AUTH is 454; when it is back the next AUTH
        reconnects and works.
        """
        yield self.ready()
        self.server.stop()
        yield until(lambda: self.auth._proto is None)
        x = self.auth.exchange("PLAIN", CLIENT)
        e = yield self.assertFailure(x.start(b64(b"\0alice\0secret")), AuthError)
        self.assertEqual((e.code, e.dsn), (454, "4.7.0"))
        self.assertIn("cannot connect", e.reason)
        self.server.start()
        x = self.auth.exchange("PLAIN", CLIENT)
        self.assertEqual((yield x.start(b64(b"\0alice\0secret"))), Success("alice"))


class SaslauthdTests(TestCase):
    """
    L{SaslauthdChecker} against a real saslauthd (C{-a sasldb}).
    """

    def setUp(self) -> None:
        reason = Saslauthd.missing()
        if reason:
            raise SkipTest(reason)
        self.server = Saslauthd(
            self, os.path.join(tempDirectory(self, "smx-sasl-"), "saslauthd"), USERS
        )
        self.server.start()
        checker = SaslauthdChecker(self.server.socket, timeout=5)
        self.auth = CheckerAuthenticator(checker, ("PLAIN", "LOGIN"))

    @defer.inlineCallbacks
    def test_plainAndLogin(self) -> Any:
        """
        PLAIN and LOGIN: the right password succeeds, a wrong one or an
        unknown user is 535.
        """
        x = self.auth.exchange("PLAIN", CLIENT)
        self.assertEqual((yield x.start(b64(b"\0alice\0secret"))), Success("alice"))
        for response in (b"\0alice\0wrong", b"\0bob\0secret"):
            x = self.auth.exchange("PLAIN", CLIENT)
            e = yield self.assertFailure(x.start(b64(response)), AuthError)
            self.assertEqual(e.code, 535)
        x = self.auth.exchange("LOGIN", CLIENT)
        yield x.start(None)
        yield x.respond(b64(b"alice"))
        self.assertEqual((yield x.respond(b64(b"secret"))), Success("alice"))

    @defer.inlineCallbacks
    def test_nul(self) -> Any:
        """
        A LOGIN password with a NUL after the right one is refused: saslauthd
        itself would compare only up to the NUL.
        """
        x = self.auth.exchange("LOGIN", CLIENT)
        yield x.start(None)
        yield x.respond(b64(b"alice"))
        e = yield self.assertFailure(x.respond(b64(b"secret\0junk")), AuthError)
        self.assertEqual(e.code, 535)

    @defer.inlineCallbacks
    def test_down(self) -> Any:
        """
        When saslauthd is not running AUTH is 454, with the reason logged.
        """
        self.server.stop()
        x = self.auth.exchange("PLAIN", CLIENT)
        e = yield self.assertFailure(x.start(b64(b"\0alice\0secret")), AuthError)
        self.assertEqual((e.code, e.dsn), (454, "4.7.0"))
        self.assertIn(self.server.socket, e.reason)


class EndToEndTests(TestCase):
    """
    C{twistd -n smx} with each back end; swaks authenticates after
    STARTTLS and relays to smtp-sink.
    """

    def setUp(self) -> None:
        reason = missing(SWAKS, SMTP_SINK)
        if reason:
            raise SkipTest(reason)
        self.root = tempDirectory(self, "smx-sasl-")
        self.mta = MTA(self, os.path.join(self.root, "smx"))
        self.sink = SmtpSink(self, self.root)

    def startMTA(self, auth: str) -> None:
        certs = makeCertificates(os.path.join(self.root, "certs"))
        smtps = (
            'tls { cert_file = "%s"; key_file = "%s"; }\n'
            "    auth { %s trusted_mechs = { PLAIN, LOGIN }; }"
            % (certs.serverCert, certs.serverKey, auth)
        )
        self.sink.start()
        self.mta.write(
            configuration(
                self.mta.port,
                smtps=smtps,
                smtpc="remote_port = %d;" % (self.sink.port,),
            ),
            mt="localhost lmtp:\nremote.test [%s]\n" % (self.sink.address,),
            access="",
        )
        self.mta.start()

    def swaks(self, mechanism: str, password: str, marker: str) -> Any:
        return swaks(
            self.mta.port,
            "--tls",
            "--auth",
            mechanism,
            "--auth-user",
            "alice",
            "--auth-password",
            password,
            "--from",
            "alice@client.test",
            "--to",
            "bob@remote.test",
            "--body",
            "relayed %s END" % (marker,),
        )

    @defer.inlineCallbacks
    def scenario(self, server: Any) -> Any:
        """
        PLAIN and LOGIN with the right password relay (235, then 250 for a
        remote recipient) and the message reaches the sink; a wrong
        password is 535; with the server stopped AUTH is 454.
        """
        for mechanism in ("PLAIN", "LOGIN"):
            out, err, status = yield self.swaks(mechanism, "secret", mechanism)
            text = out.decode()
            self.assertEqual(status, 0, text + err.decode() + self.mta.log())
            self.assertIn("235 2.7.0 Authentication successful", text)
            ok = yield until(
                lambda: self.sink.containing(b"relayed %s END" % mechanism.encode())
            )
            self.assertTrue(ok, "nothing reached the sink:\n" + self.mta.log())
        out, err, status = yield self.swaks("LOGIN", "wrong", "wrong")
        self.assertNotEqual(status, 0)
        self.assertIn("535 5.7.8 Authentication credentials invalid", out.decode())
        server.stop()
        out, err, status = yield self.swaks("PLAIN", "secret", "down")
        self.assertNotEqual(status, 0)
        self.assertIn("454 4.7.0 Temporary authentication failure", out.decode())
        log = self.mta.logWith("stat=454")
        self.assertIn("where=auth, mech=PLAIN, user=alice, relay=1, stat=0", log)
        self.assertIn("stat=454", log)
        self.assertNotIn("Traceback", log)

    def test_dovecot(self) -> Any:
        """
        C{auth { type = dovecot; path = ...; }}: see L{scenario}.
        """
        reason = DovecotAuthServer.missing()
        if reason:
            raise SkipTest(reason)
        server = DovecotAuthServer(self, os.path.join(self.root, "dovecot"), USERS)
        server.start()
        self.startMTA('type = dovecot; path = "%s";' % (server.socket,))
        return self.scenario(server)

    def test_saslauthd(self) -> Any:
        """
        C{auth { type = saslauthd; path = ...; }}: see L{scenario}.
        """
        reason = Saslauthd.missing()
        if reason:
            raise SkipTest(reason)
        server = Saslauthd(self, os.path.join(self.root, "saslauthd"), USERS)
        server.start()
        self.startMTA('type = saslauthd; path = "%s";' % (server.socket,))
        return self.scenario(server)
