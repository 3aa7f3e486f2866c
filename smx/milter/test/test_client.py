# -*- test-case-name: smx.milter.test.test_client -*-
"""
Tests of L{smx.milter.client}, the Twisted adapter of the milter protocol,
with a L{Clock} and an in-memory transport: the test plays the milter.
Real milters are in L{smx.milter.test.test_integration_milter}.
"""

from __future__ import annotations

import struct
from typing import Any, List, Optional, Tuple

from twisted.internet import defer, error
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.interfaces import IMilterClient, IMilterSession
from smx.log import Logger, MemorySink
from smx.milter import codec
from smx.milter.client import (
    MilterClient,
    MilterSession,
    MilterSettings,
    MilterSocket,
    endpointFor,
    parseSocket,
)
from smx.milter.macros import MacroLists
from smx.milter.modifications import AddHeader
from smx.milter.protocol import (
    ACCEPT,
    CONTINUE,
    REJECT,
    ConnectInfo,
    Decision,
    failureDecision,
)
from smx.milter.testing import FakeMilterClient, FakeMilterSession

CLIENT = ConnectInfo(None, "inet", "192.0.2.1", 4711)


def reply(command: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + command + data


def negotiation(protocol: int = 0) -> bytes:
    return reply(b"O", struct.pack("!III", 6, codec.SMFIF_ALL, protocol))


class FakeEndpoint:
    """
    Connects to an in-memory transport, or fails, or never answers.

    @ivar transports: every transport made.
    @ivar result: C{"connect"}, C{"refuse"} or C{"hang"}.
    """

    def __init__(self) -> None:
        self.transports = []  # type: List[StringTransportWithDisconnection]
        self.result = "connect"
        self.attempts = []  # type: List[defer.Deferred]

    def connect(self, factory: Any) -> defer.Deferred:
        if self.result == "refuse":
            return defer.fail(error.ConnectionRefusedError("no milter"))
        if self.result == "hang":
            d = defer.Deferred()  # type: defer.Deferred
            self.attempts.append(d)
            return d
        p = factory.buildProtocol(None)
        transport = StringTransportWithDisconnection()
        transport.protocol = p
        p.makeConnection(transport)
        self.transports.append(transport)
        return defer.succeed(p)


SETTINGS = MilterSettings(
    "test",
    MilterSocket("unix", path="/run/milter.sock"),
    connectTimeout=3,
    commandTimeout=10,
    contentTimeout=100,
    defaultAction="tempfail",
    macros=MacroLists(),
)


class ClientTestCase(unittest.SynchronousTestCase):
    """
    A client on a clock, a fake endpoint and a log in memory.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.sink = MemorySink()
        self.log = Logger("smtps", sink=self.sink)
        self.client = self.makeClient(SETTINGS)

    def makeClient(self, settings: MilterSettings) -> MilterClient:
        return MilterClient(settings, self.clock, self.log, lambda: self.endpoint)

    @property
    def transport(self) -> StringTransportWithDisconnection:
        return self.endpoint.transports[-1]

    def sent(self) -> List[Tuple[bytes, bytes]]:
        data = self.transport.value()
        self.transport.clear()
        return codec.PacketParser(10**8).feed(data)

    def milter(self, data: bytes) -> None:
        self.transport.protocol.dataReceived(data)

    def opened(self, protocol: int = 0) -> MilterSession:
        session = self.client.session("S1")
        d = session.connect(CLIENT)
        self.assertEqual([c for c, _ in self.sent()], [b"O"])
        self.milter(negotiation(protocol))
        if protocol & codec.SMFIP_NOCONNECT == 0:
            self.milter(reply(b"c"))
        self.assertEqual(self.successResultOf(d), CONTINUE)
        self.sent()
        return session

    def warnings(self) -> List[str]:
        return [line for line in self.sink.lines() if "sev=WARN" in line]


class InterfaceTests(ClientTestCase):
    """
    The client, its sessions and the fakes provide their interfaces.
    """

    def test_interfaces(self) -> None:
        """
        L{MilterClient} and L{FakeMilterClient} provide L{IMilterClient};
        their sessions L{IMilterSession}.
        """
        self.assertTrue(verifyObject(IMilterClient, self.client))
        self.assertTrue(verifyObject(IMilterSession, self.client.session("S")))
        fake = FakeMilterClient()
        self.assertTrue(verifyObject(IMilterClient, fake))
        self.assertTrue(verifyObject(IMilterSession, fake.session("S")))
        self.assertEqual(self.client.name, "test")

    def test_fake(self) -> None:
        """
        The fake answers from its script and records the calls.
        """
        client = FakeMilterClient(decisions={"rcpt": REJECT})
        session = client.session("S")
        self.assertEqual(self.successResultOf(session.connect(CLIENT)), CONTINUE)
        self.assertEqual(self.successResultOf(session.rcpt("a@b")), REJECT)
        session.abort()
        self.assertIsNone(self.successResultOf(session.quit()))
        self.assertEqual(
            [stage for stage, args in client.sessions[0].calls],
            ["connect", "rcpt", "abort", "quit"],
        )
        session = FakeMilterSession()
        for d in [
            session.helo("h"),
            session.mail("a@b"),
            session.data(),
            session.header("A", " b"),
            session.eoh(),
            session.body(b"x"),
            session.endOfMessage(),
            session.unknown("X"),
        ]:
            self.assertEqual(self.successResultOf(d), CONTINUE)


class SocketTests(unittest.SynchronousTestCase):
    """
    Milter sockets in sendmail and Postfix notation.
    """

    def test_forms(self) -> None:
        """
        C{unix:}, C{local:}, C{inet:port@host}, C{inet6:port@host},
        C{inet:host:port}, C{inet:[address]:port}.
        """
        self.assertEqual(
            parseSocket("unix:/run/m.sock"), MilterSocket("unix", path="/run/m.sock")
        )
        self.assertEqual(
            parseSocket("local:/run/m.sock"), MilterSocket("unix", path="/run/m.sock")
        )
        self.assertEqual(
            parseSocket("inet:8891@127.0.0.1"),
            MilterSocket("inet", host="127.0.0.1", port=8891),
        )
        self.assertEqual(
            parseSocket("inet:localhost:8891"),
            MilterSocket("inet", host="localhost", port=8891),
        )
        self.assertEqual(
            parseSocket("inet6:8891@::1"), MilterSocket("inet6", host="::1", port=8891)
        )
        self.assertEqual(
            parseSocket("inet:[::1]:8891"), MilterSocket("inet6", host="::1", port=8891)
        )
        self.assertEqual(
            parseSocket("inet:8891@[::1]"), MilterSocket("inet6", host="::1", port=8891)
        )
        self.assertEqual(str(parseSocket("inet:127.0.0.1:25")), "inet:25@127.0.0.1")
        self.assertEqual(str(parseSocket("unix:/x")), "unix:/x")

    def test_mistakes(self) -> None:
        """
        Mistakes are named in the message.
        """
        for text, words in [
            ("/run/m.sock", "expected unix:/path"),
            ("unix:run/m.sock", "absolute"),
            ("tcp:1@h", "expected unix:/path"),
            ("inet:0@127.0.0.1", "port '0'"),
            ("inet:99999@127.0.0.1", "port '99999'"),
            ("inet:x@127.0.0.1", "port 'x'"),
            ("inet:\u00b2@127.0.0.1", "port '\u00b2'"),
            ("inet:127.0.0.1:\u0661\u0662", "port '\u0661\u0662'"),
            ("inet:8891", "no host"),
            ("inet:8891@", "no host"),
            ("inet6:25@127.0.0.1", "not an IPv6 address"),
            ("inet:[::1]8891", "[address]:port"),
            ("unix:", "expected"),
        ]:
            e = self.assertRaises(ValueError, parseSocket, text)
            self.assertIn(words, str(e))
            self.assertIn(repr(text), str(e))

    def test_endpoints(self) -> None:
        """
        Each socket has its kind of endpoint.
        """
        clock = Clock()
        self.assertIsInstance(
            endpointFor(clock, parseSocket("unix:/run/m"), 3), UNIXClientEndpoint
        )
        self.assertIsInstance(
            endpointFor(clock, parseSocket("inet:1@127.0.0.1"), 3), TCP4ClientEndpoint
        )
        self.assertIsInstance(
            endpointFor(clock, parseSocket("inet6:1@::1"), 3), TCP6ClientEndpoint
        )
        self.assertIsInstance(
            endpointFor(clock, parseSocket("inet:1@localhost"), 3), HostnameEndpoint
        )

    def test_settings(self) -> None:
        """
        An unknown default action is refused when the settings are made.
        """
        self.assertRaises(
            ValueError,
            MilterSettings,
            "m",
            MilterSocket("unix", path="/x"),
            1,
            1,
            1,
            "quarantine",
        )


class SessionTests(ClientTestCase):
    """
    A session with a milter that behaves.
    """

    def test_wholeSession(self) -> None:
        """
        Every stage's Deferred fires with the milter's decision; the end
        of the message carries the modifications; C{quit} closes.
        """
        session = self.client.session("S1")
        d = session.connect(CLIENT, {"j": "mx.example"})
        self.assertNoResult(d)
        self.milter(negotiation(codec.SMFIP_RCPT_REJ))
        self.assertTrue(session.wantsRejectedRecipients)
        self.assertEqual([c for c, _ in self.sent()], [b"O", b"C"])
        self.milter(reply(b"c"))
        self.assertEqual(self.successResultOf(d), CONTINUE)
        steps = [
            (lambda: session.helo("client.example"), b"H", reply(b"c"), CONTINUE),
            (
                lambda: session.mail("a@example.org", ["SIZE=5"]),
                b"M",
                reply(b"c"),
                CONTINUE,
            ),
            (lambda: session.rcpt("b@example.net"), b"R", reply(b"r"), REJECT),
            (lambda: session.rcpt("c@example.net"), b"R", reply(b"c"), CONTINUE),
            (session.data, b"T", reply(b"c"), CONTINUE),
            (lambda: session.header("Subject", " hi"), b"L", reply(b"c"), CONTINUE),
            (session.eoh, b"N", reply(b"c"), CONTINUE),
        ]
        for call, command, answer, decision in steps:
            d = call()
            self.assertEqual([c for c, _ in self.sent()], [command])
            self.assertNoResult(d)
            self.milter(answer)
            self.assertEqual(self.successResultOf(d), decision)
        self.assertEqual(self.successResultOf(session.body(b"text\r\n")), CONTINUE)
        d = session.endOfMessage()
        self.assertEqual([c for c, _ in self.sent()], [b"B"])
        self.milter(reply(b"c"))
        self.assertEqual([c for c, _ in self.sent()], [b"E"])
        self.milter(reply(b"h", b"X-Milter\0yes\0") + reply(b"a"))
        self.assertEqual(
            self.successResultOf(d),
            Decision("accept", modifications=(AddHeader("X-Milter", " yes"),)),
        )
        d = session.unknown("XFOO")
        self.assertEqual(self.sent(), [(b"U", b"XFOO\0")])
        self.milter(reply(b"c"))
        self.assertEqual(self.successResultOf(d), CONTINUE)
        session.abort()
        self.assertEqual(self.sent(), [])
        closed = session.quit()
        self.assertEqual([c for c, _ in self.sent()], [b"Q"])
        self.assertIsNone(self.successResultOf(closed))
        self.assertFalse(self.transport.connected)
        self.assertEqual(self.warnings(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_abort(self) -> None:
        """
        C{abort} in a transaction writes C{SMFIC_ABORT}.
        """
        session = self.opened()
        d = session.mail("a@b")
        self.milter(reply(b"c"))
        self.successResultOf(d)
        self.sent()
        session.abort()
        self.assertEqual(self.sent(), [(b"A", b"")])

    def test_acceptSession(self) -> None:
        """
        A milter accepting the session at connect: QUIT, the connection
        is closed, nothing is logged, later stages continue.
        """
        session = self.client.session("S1")
        d = session.connect(CLIENT)
        self.milter(negotiation() + reply(b"a"))
        self.assertEqual(self.successResultOf(d), ACCEPT)
        self.assertEqual([c for c, _ in self.sent()], [b"O", b"C", b"Q"])
        self.assertFalse(self.transport.connected)
        self.assertEqual(self.successResultOf(session.helo("h")), CONTINUE)
        self.assertEqual(self.warnings(), [])
        self.assertIsNone(self.successResultOf(session.quit()))

    def test_callWhileWaiting(self) -> None:
        """
        A stage called while another waits is the caller's bug.
        """
        session = self.opened()
        session.helo("h")
        self.assertRaises(RuntimeError, session.mail, "a@b")

    def test_noReply(self) -> None:
        """
        Steps the milter does not answer fire at once.
        """
        session = self.opened(codec.SMFIP_NR_HELO)
        self.assertEqual(self.successResultOf(session.helo("h")), CONTINUE)
        self.assertEqual([c for c, _ in self.sent()], [b"H"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_quitWhileWaiting(self) -> None:
        """
        C{quit} while a stage waits: the stage gets the default action at
        once, without a log record.
        """
        session = self.opened()
        d = session.helo("h")
        closed = session.quit()
        decision = self.successResultOf(d)
        self.assertEqual(decision.action, "tempfail")
        self.assertIn("session ended", decision.failure)
        self.successResultOf(closed)
        self.assertEqual(self.warnings(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FailureTests(ClientTestCase):
    """
    A milter that is down, slow, gone or broken gets the default action,
    logged once.
    """

    def assertLoggedOnce(self, *words: str) -> None:
        [line] = self.warnings()
        self.assertIn("sev=WARN", line)
        self.assertIn("func=MilterSession", line)
        self.assertIn("milter=test", line)
        self.assertIn("socket=unix:/run/milter.sock", line)
        self.assertIn("ss_sess=S1", line)
        self.assertIn("default_action=tempfail", line)
        for word in words:
            self.assertIn(word, line)

    def test_down(self) -> None:
        """
        The milter cannot be reached: tempfail, and every later stage
        too, without another attempt or record.
        """
        self.endpoint.result = "refuse"
        session = self.client.session("S1")
        decision = self.successResultOf(session.connect(CLIENT))
        self.assertEqual(
            decision.reply(), "451 4.7.1 Service unavailable - try again later"
        )
        self.assertIn("cannot connect", decision.failure)
        self.assertEqual(self.successResultOf(session.helo("h")), decision)
        self.assertEqual(self.successResultOf(session.mail("a@b")), decision)
        self.assertLoggedOnce("stage=connect", "no milter")
        self.successResultOf(session.quit())

    def test_defaultAccept(self) -> None:
        """
        With the default action C{accept}, a failed milter is ignored.
        """
        self.endpoint.result = "refuse"
        client = self.makeClient(
            MilterSettings("m", SETTINGS.socket, 1, 1, 1, "accept", MacroLists())
        )
        session = client.session("S")
        decision = self.successResultOf(session.connect(CLIENT))
        self.assertEqual(decision.action, "continue")
        self.assertIsNotNone(decision.failure)

    def test_defaultReject(self) -> None:
        """
        With the default action C{reject}: 550 5.5.0.
        """
        self.endpoint.result = "refuse"
        client = self.makeClient(
            MilterSettings("m", SETTINGS.socket, 1, 1, 1, "reject", MacroLists())
        )
        decision = self.successResultOf(client.session("S").connect(CLIENT))
        self.assertEqual(decision.reply(), "550 5.5.0 Service unavailable")

    def test_connectTimeout(self) -> None:
        """
        No connection within C{connectTimeout}: the default action.
        """
        self.endpoint.result = "hang"
        session = self.client.session("S1")
        d = session.connect(CLIENT)
        self.clock.advance(2.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.assertIn("no connection within 3s", self.successResultOf(d).failure)
        self.assertLoggedOnce("stage=connect")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_negotiationTimeout(self) -> None:
        """
        No answer to the negotiation within C{commandTimeout}.
        """
        session = self.client.session("S1")
        d = session.connect(CLIENT)
        self.clock.advance(9.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.assertIn("no reply to optneg within 10s", self.successResultOf(d).failure)
        self.assertFalse(self.transport.connected)
        self.assertLoggedOnce("stage=connect")

    def test_commandTimeout(self) -> None:
        """
        Each command's reply is waited for C{commandTimeout}.
        """
        session = self.opened()
        d = session.rcpt("a@b")
        self.clock.advance(10)
        self.assertIn("no reply to rcpt within 10s", self.successResultOf(d).failure)
        self.assertLoggedOnce("stage=rcpt")

    def test_contentTimeout(self) -> None:
        """
        The header, body and end of message are waited for
        C{contentTimeout}; each reply restarts it, and so does
        C{SMFIR_PROGRESS}.
        """
        session = self.opened()
        for call in (lambda: session.mail("a@b"), session.data):
            d = call()
            self.milter(reply(b"c"))
        d = session.headers([("A", " 1"), ("B", " 2")])
        self.clock.advance(60)
        self.milter(reply(b"c"))
        self.clock.advance(60)
        self.assertNoResult(d)
        self.milter(reply(b"c"))
        self.successResultOf(d)
        d = session.endOfMessage()
        self.clock.advance(90)
        self.milter(reply(b"p"))
        self.clock.advance(90)
        self.assertNoResult(d)
        self.clock.advance(10)
        self.assertIn("no reply to eom within 100s", self.successResultOf(d).failure)
        self.assertLoggedOnce("stage=eom")

    def test_closedMidMessage(self) -> None:
        """
        The milter closes the connection while a reply is awaited.
        """
        session = self.opened()
        d = session.mail("a@b")
        self.transport.loseConnection()
        decision = self.successResultOf(d)
        self.assertIn("connection closed by the milter", decision.failure)
        self.assertEqual(self.successResultOf(session.rcpt("c@d")), decision)
        self.assertLoggedOnce("stage=mail")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.successResultOf(session.quit())

    def test_closedBetweenStages(self) -> None:
        """
        The milter closes the connection between stages: the next stage
        gets the default action.
        """
        session = self.opened()
        self.transport.loseConnection()
        decision = self.successResultOf(session.helo("h"))
        self.assertEqual(decision.action, "tempfail")
        self.assertLoggedOnce("connection closed")

    def test_malformed(self) -> None:
        """
        A malformed packet: the default action, the connection closed.
        """
        session = self.opened()
        d = session.helo("h")
        self.milter(reply(b"Z"))
        self.assertIn("unknown reply", self.successResultOf(d).failure)
        self.assertFalse(self.transport.connected)
        self.assertLoggedOnce("stage=helo", "unknown reply")

    def test_oversize(self) -> None:
        """
        A packet longer than 1 MB is refused from its length field.
        """
        session = self.opened()
        d = session.helo("h")
        self.milter(struct.pack("!I", 1 << 30) + b"b")
        self.assertIn("longer than", self.successResultOf(d).failure)
        self.assertFalse(self.transport.connected)
        self.assertLoggedOnce("stage=helo")

    def test_unencodable(self) -> None:
        """
        A header the protocol cannot carry (longer than 64 KB): the
        default action.
        """
        session = self.opened()
        for call in (lambda: session.mail("a@b"), session.data):
            call()
            self.milter(reply(b"c"))
        decision = self.successResultOf(session.header("X-Long", " " + "x" * 70000))
        self.assertIn("header", decision.failure)
        self.assertLoggedOnce("stage=header")

    def test_badConnectInfo(self) -> None:
        """
        A connect info that cannot be sent: the default action, without
        connecting.
        """
        session = self.client.session("S1")
        decision = self.successResultOf(session.connect(ConnectInfo("h", "x25", "a")))
        self.assertIn("unknown address family", decision.failure)
        self.assertEqual(self.endpoint.transports, [])
        self.assertLoggedOnce("stage=connect")

    def test_unixNameTooLong(self) -> None:
        """
        A Unix socket path that cannot be used is a failure to connect.
        """
        client = MilterClient(
            MilterSettings(
                "test",
                MilterSocket("unix", path="/nonexistent/" + "d" * 200 + "/s"),
                1,
                1,
                1,
                "tempfail",
            ),
            self.clock,
            self.log,
        )
        decision = self.successResultOf(client.session("S1").connect(CLIENT))
        self.assertIn("cannot connect", decision.failure)
        self.assertEqual(len(self.warnings()), 1)
