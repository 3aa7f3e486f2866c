# -*- test-case-name: smx.mail.test.test_sasl_dovecot -*-
"""
Tests for L{smx.mail.sasl_dovecot}: the sans-I/O protocol core, the
authenticator on a L{MemoryReactorClock} playing Dovecot's side with a
L{StringTransport}, and SMTP sessions that authenticate through it.  The
real Dovecot is in L{smx.mail.test.test_integration_sasl}.
"""

import base64
import os

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python import failure
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.interfaces import ISASLAuthenticator, ISASLExchange
from smx.log import Logger, MemorySink
from smx.mail.auth import AuthError, Challenge, ClientInfo, Success
from smx.mail.sasl_dovecot import (
    RETRY_INTERVAL,
    DovecotAuthClient,
    DovecotAuthenticator,
    DovecotProtocolError,
    Handshake,
    Reply,
    escape,
    unescape,
)
from smx.mail.test.test_smtps import Harness

HANDSHAKE = (
    b"VERSION\t1\t2\n"
    b"MECH\tPLAIN\tplaintext\n"
    b"MECH\tLOGIN\tplaintext\n"
    b"MECH\tCRAM-MD5\tdictionary\tactive\n"
    b"MECH\tANONYMOUS\tanonymous\n"
    b"MECH\tSECRET\tprivate\n"
    b"SPID\t100\nCUID\t1\nCOOKIE\t0123456789abcdef\nDONE\n"
)

CLIENT = ClientInfo("192.0.2.1", 40000, "192.0.2.25", 25, True, "S42")


def b64(data):
    return base64.b64encode(data).decode("ascii")


class ClientCoreTests(unittest.TestCase):
    """L{DovecotAuthClient}, the sans-I/O protocol core."""

    def handshaken(self):
        c = DovecotAuthClient(77)
        events = [c.lineReceived(line) for line in HANDSHAKE.split(b"\n")[:-1]]
        return c, events

    def test_hello(self):
        """The client says VERSION 1 0 and its process id first."""
        c = DovecotAuthClient(77)
        self.assertEqual(c.dataToSend(), b"VERSION\t1\t0\nCPID\t77\n")
        self.assertEqual(c.dataToSend(), b"")

    def test_handshake(self):
        """MECH lines and their properties; DONE makes a L{Handshake}."""
        c, events = self.handshaken()
        self.assertEqual(events[:-1], [None] * (len(events) - 1))
        self.assertIsInstance(events[-1], Handshake)
        self.assertTrue(c.ready)
        self.assertEqual(
            dict(c.mechanisms)["CRAM-MD5"], frozenset(["dictionary", "active"])
        )
        self.assertEqual(
            c.mechanismNames(),
            frozenset(["PLAIN", "LOGIN", "CRAM-MD5", "ANONYMOUS", "SECRET"]),
        )

    def test_badHandshake(self):
        """Another major version, or lines before VERSION, are errors."""
        c = DovecotAuthClient(1)
        self.assertRaises(DovecotProtocolError, c.lineReceived, b"VERSION\t2\t0")
        c = DovecotAuthClient(1)
        self.assertRaises(DovecotProtocolError, c.lineReceived, b"MECH\tPLAIN")
        c = DovecotAuthClient(1)
        c.lineReceived(b"VERSION\t1\t2")
        self.assertRaises(DovecotProtocolError, c.lineReceived, b"MECH")
        self.assertRaises(DovecotProtocolError, c.lineReceived, b"\xff")

    def test_auth(self):
        """AUTH: id, mechanism, flags and escaped values, one line."""
        c, _ = self.handshaken()
        c.dataToSend()
        c.auth(5, "PLAIN", [("service", "smtp"), ("nologin", None), ("x", "a\tb\n")])
        self.assertEqual(
            c.dataToSend(),
            b"AUTH\t5\tPLAIN\tservice=smtp\tnologin\tx=a\x01tb\x01n\n",
        )
        c.cont(5, "AAAA")
        self.assertEqual(c.dataToSend(), b"CONT\t5\tAAAA\n")

    def test_replies(self):
        """OK, CONT and FAIL with their parameters; other lines are ignored."""
        c, _ = self.handshaken()
        r = c.lineReceived(b"OK\t3\tuser=al\x01tice")
        self.assertEqual(
            (r.kind, r.requestId, r.params), ("OK", 3, {"user": "al\tice"})
        )
        r = c.lineReceived(b"CONT\t3\tVXNlcm5hbWU6")
        self.assertEqual((r.kind, r.data), ("CONT", "VXNlcm5hbWU6"))
        r = c.lineReceived(b"FAIL\t4\tuser=a\tcode=temp_fail\ttemp")
        self.assertEqual(r.params, {"user": "a", "code": "temp_fail", "temp": None})
        self.assertIsNone(c.lineReceived(b"SOMETHING\tNEW"))
        self.assertRaises(DovecotProtocolError, c.lineReceived, b"OK\tx")

    def test_requestIdNotAsciiDigits(self):
        """
        A request id with a character that str.isdigit() takes but int()
        does not (superscript two) is a L{DovecotProtocolError}, not a
        ValueError.
        """
        c, _ = self.handshaken()
        line = "OK\t1\u00b2".encode("utf-8")
        self.assertRaises(DovecotProtocolError, c.lineReceived, line)

    def test_escaping(self):
        """Dovecot's tab-escaping both ways."""
        for text in ["plain", "a\tb", "\x01\x00\r\n", ""]:
            self.assertEqual(unescape(escape(text)), text)
        self.assertEqual(unescape("\x01x"), "x")


class FakeDovecot:
    """
    Dovecot's side of the connections a L{DovecotAuthenticator} opens on
    a L{MemoryReactorClock}.
    """

    def __init__(self, testCase, **kw):
        self.reactor = MemoryReactorClock()
        self.sink = MemorySink()
        self.auth = DovecotAuthenticator(
            path="/run/auth",
            timeout=10,
            reactor=self.reactor,
            log=Logger("smtps", sink=self.sink),
            **kw,
        )
        self.transport = None

    def accept(self, handshake=HANDSHAKE):
        """Connect the last attempt and answer the handshake."""
        path, factory, timeout, _ = self.reactor.unixClients[-1]
        self.assertPath = path
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        if handshake:
            self.protocol.dataReceived(handshake)
        return self.protocol

    def refuse(self):
        """Fail the last connection attempt."""
        _, factory, _, _ = self.reactor.unixClients[-1]
        factory.clientConnectionFailed(None, failure.Failure(ConnectionRefusedError()))

    def received(self):
        """The lines the client sent, and forget them."""
        data = self.transport.value()
        self.transport.clear()
        return data.decode().splitlines()

    def say(self, line):
        self.protocol.dataReceived(line.encode() + b"\n")

    def lose(self):
        self.protocol.connectionLost(failure.Failure(ConnectionRefusedError()))


class AuthenticatorTests(unittest.TestCase):
    """L{DovecotAuthenticator} and L{DovecotExchange}."""

    def test_interfaces(self):
        """It and its exchanges provide their interfaces."""
        f = FakeDovecot(self)
        self.assertTrue(verifyObject(ISASLAuthenticator, f.auth))
        self.assertTrue(verifyObject(ISASLExchange, f.auth.exchange("plain", CLIENT)))

    def test_mechanisms(self):
        """
        Before a handshake PLAIN and LOGIN are offered (and a connection is
        tried); after it, Dovecot's list without private mechanisms and
        filtered by the flags.
        """
        f = FakeDovecot(self, flags=["noanonymous"])
        self.assertEqual(f.auth.mechanisms(), ("PLAIN", "LOGIN"))
        self.assertEqual(len(f.reactor.unixClients), 1)
        self.assertEqual(f.reactor.unixClients[0][0], "/run/auth")
        f.accept()
        self.assertEqual(f.received(), ["VERSION\t1\t0", "CPID\t%d" % os.getpid()])
        self.assertEqual(f.auth.mechanisms(), ("PLAIN", "LOGIN", "CRAM-MD5"))
        f.auth.flags = frozenset(["noplaintext", "nodictionary"])
        self.assertEqual(f.auth.mechanisms(), ("ANONYMOUS",))

    def test_plain(self):
        """
        AUTH with the session's details and the initial response; OK gives
        L{Success} with Dovecot's user name.
        """
        f = FakeDovecot(self)
        f.auth.start()
        f.accept()
        f.received()
        d = f.auth.exchange("PLAIN", CLIENT).start(b64(b"\0u\0p"))
        [line] = f.received()
        fields = line.split("\t")
        self.assertEqual(fields[:3], ["AUTH", "1", "PLAIN"])
        self.assertEqual(
            fields[3:],
            [
                "service=smtp",
                "nologin",
                "lip=192.0.2.25",
                "rip=192.0.2.1",
                "lport=25",
                "rport=40000",
                "secured",
                "session=S42",
                "resp=" + b64(b"\0u\0p"),
            ],
        )
        self.assertNoResult(d)
        f.say("OK\t1\tuser=u@example.test")
        self.assertEqual(self.successResultOf(d), Success("u@example.test"))

    def test_multiStep(self):
        """
        An exchange waits for the handshake; CONT both ways; the client's
        base64 is checked and encoded again, so a TAB cannot reach Dovecot.
        """
        f = FakeDovecot(self)
        x = f.auth.exchange("LOGIN", CLIENT)
        d = x.start(None)
        self.assertNoResult(d)
        f.accept()
        lines = f.received()
        self.assertEqual(lines[2].split("\t")[:3], ["AUTH", "1", "LOGIN"])
        self.assertNotIn("resp=", lines[2])
        f.say("CONT\t1\tVXNlcm5hbWU6")
        self.assertEqual(self.successResultOf(d), Challenge("VXNlcm5hbWU6"))
        d = x.respond("dQ")
        self.assertEqual(self.failureResultOf(d, AuthError).value.code, 501)
        d = x.respond("dQ==")
        self.assertEqual(f.received(), ["CONT\t1\tdQ=="])
        f.say("FAIL\t1\tuser=u")
        e = self.failureResultOf(d, AuthError).value
        self.assertEqual((e.code, e.dsn), (535, "5.7.8"))
        e = self.failureResultOf(x.respond("dQ==\tuser=root"), AuthError).value
        self.assertEqual(e.code, 501)
        self.assertEqual(f.received(), [])

    def test_failures(self):
        """FAIL: temporary (both spellings) is 454, invalid base64 501."""
        f = FakeDovecot(self)
        f.auth.start()
        f.accept()
        for n, line, code in [
            (1, "FAIL\t1\tcode=temp_fail", 454),
            (2, "FAIL\t2\ttemp", 454),
            (3, "FAIL\t3\tcode=invalid_base64", 501),
            (4, "FAIL\t4\treason=Password expired", 535),
        ]:
            d = f.auth.exchange("PLAIN", CLIENT).start("=")
            f.say(line)
            self.assertEqual(self.failureResultOf(d, AuthError).value.code, code)
        self.assertIn("resp=\t", "\t".join(f.received()) + "\t")

    def test_unlisted(self):
        """A mechanism Dovecot did not list is 504, and nothing is sent."""
        f = FakeDovecot(self)
        f.auth.start()
        f.accept()
        f.received()
        d = f.auth.exchange("DIGEST-MD5", CLIENT).start(None)
        self.assertEqual(self.failureResultOf(d, AuthError).value.code, 504)
        self.assertEqual(f.received(), [])

    def test_down(self):
        """
        A refused connection: 454 for the waiting exchange, one warning.
        """
        f = FakeDovecot(self)
        d = f.auth.exchange("PLAIN", CLIENT).start(b64(b"\0u\0p"))
        d2 = f.auth.exchange("PLAIN", CLIENT).start(b64(b"\0u\0p"))
        self.assertEqual(len(f.reactor.unixClients), 1)
        f.refuse()
        e = self.failureResultOf(d, AuthError).value
        self.assertEqual((e.code, e.dsn), (454, "4.7.0"))
        self.assertIn("cannot connect to /run/auth", e.reason)
        self.failureResultOf(d2, AuthError)
        d = f.auth.exchange("PLAIN", CLIENT).start(b64(b"\0u\0p"))
        f.refuse()
        self.failureResultOf(d, AuthError)
        [warning] = f.sink.lines()
        self.assertIn("sev=WARN", warning)
        # back: one notice
        d = f.auth.exchange("PLAIN", CLIENT).start(b64(b"\0u\0p"))
        f.accept()
        self.assertIn("dovecot=connected", f.sink.lines()[-1])

    def test_lost(self):
        """
        Losing the connection fails what waits (454); a response for an
        exchange of the old connection is not sent on the new one.
        """
        f = FakeDovecot(self)
        f.auth.start()
        f.accept()
        x = f.auth.exchange("LOGIN", CLIENT)
        d = x.start(None)
        f.say("CONT\t1\tVXNlcm5hbWU6")
        self.successResultOf(d)
        y = f.auth.exchange("LOGIN", CLIENT)
        dy = y.start(None)
        f.lose()
        self.assertEqual(self.failureResultOf(dy, AuthError).value.code, 454)
        f.auth.start()
        f.accept()
        f.received()
        e = self.failureResultOf(x.respond("dQ=="), AuthError).value
        self.assertEqual(e.code, 454)
        self.assertEqual(f.received(), [])

    def test_timeouts(self):
        """
        No handshake, or no reply, within the timeout: 454; a late reply
        is ignored.
        """
        f = FakeDovecot(self)
        d = f.auth.exchange("PLAIN", CLIENT).start("=")
        f.accept(handshake=b"VERSION\t1\t2\n")
        f.reactor.advance(10)
        self.assertIn("no handshake", self.failureResultOf(d, AuthError).value.reason)
        self.assertTrue(f.transport.disconnecting)
        f.protocol.connectionLost(failure.Failure(ConnectionRefusedError()))
        d = f.auth.exchange("PLAIN", CLIENT).start("=")
        f.accept()
        f.reactor.advance(10)
        e = self.failureResultOf(d, AuthError).value
        self.assertEqual(e.code, 454)
        self.assertIn("no reply", e.reason)
        f.say("OK\t1\tuser=u")

    def test_connectTimeout(self):
        """A connection attempt that hangs is given up after the timeout."""
        f = FakeDovecot(self)
        d = f.auth.exchange("PLAIN", CLIENT).start("=")
        self.assertNoResult(d)
        f.reactor.advance(10)
        e = self.failureResultOf(d, AuthError).value
        self.assertEqual(e.code, 454)
        self.assertIn("timed out", e.reason)

    def test_protocolError(self):
        """A broken line drops the connection: 454, and a warning."""
        f = FakeDovecot(self)
        f.auth.start()
        d = f.auth.exchange("PLAIN", CLIENT).start("=")
        f.accept(handshake=b"VERSION\t9\t0\n")
        self.assertTrue(f.transport.disconnecting)
        f.lose()
        e = self.failureResultOf(d, AuthError).value
        self.assertIn("version 9.0", e.reason)

    def test_retryForEHLO(self):
        """EHLO tries to connect at most every RETRY_INTERVAL seconds."""
        f = FakeDovecot(self)
        f.auth.mechanisms()
        f.refuse()
        f.auth.mechanisms()
        self.assertEqual(len(f.reactor.unixClients), 1)
        f.reactor.advance(RETRY_INTERVAL)
        f.auth.mechanisms()
        self.assertEqual(len(f.reactor.unixClients), 2)

    def test_stop(self):
        """stop() closes the connection, quietly, and fires when it is closed."""
        f = FakeDovecot(self)
        f.auth.start()
        f.accept()
        d = f.auth.stop()
        self.assertNoResult(d)
        self.assertTrue(f.transport.disconnecting)
        f.protocol.connectionLost(failure.Failure(ConnectionRefusedError()))
        self.successResultOf(d)
        self.assertEqual(f.sink.lines(), [])
        self.successResultOf(f.auth.stop())


class SessionTests(unittest.TestCase):
    """SMTP sessions authenticating through Dovecot."""

    def harness(self, **kw):
        f = FakeDovecot(self)
        h = Harness(authenticator=f.auth, authRequiresTLS=False, **kw)
        h.factory.startFactory()
        f.accept()
        f.received()
        h.connect()
        return f, h

    def test_login(self):
        """
        AUTH LOGIN relayed step by step; every reply is sent when Dovecot's
        answer arrives; the trusted mechanism allows relaying.
        """
        f, h = self.harness(trustedMechanisms=("LOGIN",))
        out = h.send(b"EHLO c\r\n")
        self.assertIn(b"250-AUTH PLAIN LOGIN CRAM-MD5 ANONYMOUS\r\n", out)
        self.assertEqual(h.send(b"AUTH LOGIN\r\n"), b"")
        f.say("CONT\t1\tVXNlcm5hbWU6")
        self.assertEqual(h.take(), b"334 VXNlcm5hbWU6\r\n")
        self.assertEqual(h.send(b64(b"u").encode() + b"\r\n"), b"")
        f.say("CONT\t1\tUGFzc3dvcmQ6")
        self.assertEqual(h.take(), b"334 UGFzc3dvcmQ6\r\n")
        h.send(b64(b"p").encode() + b"\r\nMAIL FROM:<a@b.test>\r\n")
        self.assertEqual(f.received()[-1], "CONT\t1\t" + b64(b"p"))
        f.say("OK\t1\tuser=u")
        # the MAIL pipelined behind the response waited for the 235
        self.assertEqual(
            h.take(),
            b"235 2.7.0 Authentication successful\r\n"
            b"250 2.1.0 <a@b.test>... Sender ok\r\n",
        )
        self.assertEqual(h.protocol.authUser, "u")
        self.assertTrue(h.protocol.policy.relayClient)
        self.assertIn("user=u, relay=1, stat=0", "\n".join(h.sink.lines()))

    def test_trustedByDefault(self):
        """
        Without trusted_mechs (None) every mechanism Dovecot offers when
        the session opens allows relaying.
        """
        f, h = self.harness(trustedMechanisms=None)
        h.send(b"EHLO c\r\nAUTH PLAIN " + b64(b"\0u\0p").encode() + b"\r\n")
        f.say("OK\t1\tuser=u")
        self.assertTrue(h.protocol.policy.relayClient)

    def test_wrongAndDown(self):
        """535 for wrong credentials; 454 when Dovecot goes away; logged."""
        f, h = self.harness()
        h.send(b"EHLO c\r\n")
        h.send(b"AUTH PLAIN " + b64(b"\0u\0x").encode() + b"\r\n")
        f.say("FAIL\t1\tuser=u")
        self.assertEqual(h.take(), b"535 5.7.8 Authentication credentials invalid\r\n")
        h.send(b"AUTH PLAIN " + b64(b"\0u\0p").encode() + b"\r\n")
        f.lose()
        self.assertEqual(h.take(), b"454 4.7.0 Temporary authentication failure\r\n")
        log = "\n".join(h.sink.lines())
        self.assertIn("mech=PLAIN, stat=535", log)
        self.assertIn("mech=PLAIN, stat=454, reason=", log)
        self.assertNotIn("sev=ERR", log)

    def test_abort(self):
        """The client's * ends the exchange without asking Dovecot."""
        f, h = self.harness()
        h.send(b"EHLO c\r\nAUTH LOGIN\r\n")
        f.say("CONT\t1\tVXNlcm5hbWU6")
        h.take()
        f.received()
        self.assertEqual(h.send(b"*\r\n"), b"501 5.7.0 Authentication aborted\r\n")
        self.assertEqual(f.received(), [])
        self.assertEqual(h.send(b"NOOP\r\n"), b"250 2.0.0 OK\r\n")

    def test_factoryStops(self):
        """The factory starts and stops the connection with its listeners."""
        f, h = self.harness()
        h.factory.stopFactory()
        self.assertTrue(f.transport.disconnecting)
