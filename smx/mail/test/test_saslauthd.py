# -*- test-case-name: smx.mail.test.test_saslauthd -*-
"""
Tests for L{smx.mail.saslauthd}: the request and reply encoding, and the
checker on a L{MemoryReactorClock} playing saslauthd's side.  The real
saslauthd is in L{smx.mail.test.test_integration_sasl}.
"""

import struct

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python import failure
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.mail.auth import AuthUnavailable
from smx.mail.saslauthd import (
    SaslauthdChecker,
    SaslauthdProtocolError,
    decodeReply,
    encodeQuery,
)


class EncodingTests(unittest.TestCase):
    """L{encodeQuery} and L{decodeReply}."""

    def test_query(self):
        """Each field is a 2-byte big-endian length and its bytes."""
        self.assertEqual(
            encodeQuery([b"alice", b"pw", b"smtp", b""]),
            b"\x00\x05alice\x00\x02pw\x00\x04smtp\x00\x00",
        )
        self.assertRaises(ValueError, encodeQuery, [b"x" * 65536])

    def test_reply(self):
        """OK and NO with their text; partial replies need more bytes."""
        self.assertEqual(decodeReply(b"\x00\x02OK"), (True, ""))
        self.assertEqual(
            decodeReply(b"\x00\x18NO authentication failed"),
            (False, "authentication failed"),
        )
        self.assertIsNone(decodeReply(b"\x00"))
        self.assertIsNone(decodeReply(b"\x00\x05OK"))
        self.assertRaises(SaslauthdProtocolError, decodeReply, b"\x00\x03WHY")


class CheckerTests(unittest.TestCase):
    """L{SaslauthdChecker}."""

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.checker = SaslauthdChecker(
            "/run/mux",
            service="smtp",
            realm="example.test",
            timeout=5,
            reactor=self.reactor,
        )

    def connect(self):
        path, factory, timeout, _ = self.reactor.unixClients[-1]
        self.assertEqual(path, "/run/mux")
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def check(self, user=b"alice", password=b"secret"):
        return self.checker.requestAvatarId(UsernamePassword(user, password))

    def test_interface(self):
        """It is a C{twisted.cred} checker."""
        self.assertTrue(verifyObject(ICredentialsChecker, self.checker))

    def test_ok(self):
        """One connection per check: the query, then OK gives the user."""
        d = self.check()
        proto, transport = self.connect()
        self.assertEqual(
            transport.value(),
            encodeQuery([b"alice", b"secret", b"smtp", b"example.test"]),
        )
        self.assertNoResult(d)
        proto.dataReceived(b"\x00")
        proto.dataReceived(b"\x02OK")
        self.assertEqual(self.successResultOf(d), b"alice")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(self.reactor.getDelayedCalls())

    def test_no(self):
        """NO is a wrong password."""
        d = self.check()
        proto, _ = self.connect()
        proto.dataReceived(struct.pack("!H", 2) + b"NO")
        self.failureResultOf(d, UnauthorizedLogin)

    def test_nul(self):
        """A NUL in the credentials is refused without asking saslauthd."""
        self.failureResultOf(self.check(password=b"secret\0x"), UnauthorizedLogin)
        self.failureResultOf(self.check(user=b"alice\0"), UnauthorizedLogin)
        self.assertEqual(self.reactor.unixClients, [])

    def test_unavailable(self):
        """
        Refused connection, garbage, a closed connection or no answer in
        time: L{AuthUnavailable} naming the socket.
        """
        d = self.check()
        _, factory, _, _ = self.reactor.unixClients[-1]
        factory.clientConnectionFailed(None, failure.Failure(ConnectionRefusedError()))
        e = self.failureResultOf(d, AuthUnavailable).value
        self.assertIn("/run/mux", e.reason)
        d = self.check()
        proto, transport = self.connect()
        proto.dataReceived(b"\x00\x03WHY")
        self.failureResultOf(d, AuthUnavailable)
        d = self.check()
        proto, transport = self.connect()
        proto.connectionLost(failure.Failure(ConnectionRefusedError()))
        self.failureResultOf(d, AuthUnavailable)
        d = self.check()
        proto, transport = self.connect()
        self.reactor.advance(5)
        e = self.failureResultOf(d, AuthUnavailable).value
        self.assertIn("no answer within 5s", e.reason)
        self.assertTrue(transport.disconnecting)

    def test_connectTimeout(self):
        """A connection that never completes is given up after the timeout."""
        d = self.check()
        self.reactor.advance(5)
        self.failureResultOf(d, AuthUnavailable)
