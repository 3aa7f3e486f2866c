# -*- test-case-name: smx.milter.test.test_policyclient -*-
"""
Unit tests of L{smx.milter.policyclient}: the policy socket, and
L{PolicyClient} against fake connections of a memory reactor with a
clock: reuse, serialisation, and every way a server can fail; and the
fake L{smx.milter.policytesting.FakePolicyClient}.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet import defer, error
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.interfaces import IPolicyClient
from smx.log import Logger, MemorySink
from smx.milter import policyclient
from smx.milter.policy import PolicyDecision, policyAttributes
from smx.milter.policyclient import PolicyClient, PolicySocket, parsePolicySocket
from smx.milter.policytesting import FakePolicyClient
from smx.milter.test.test_policy import SESSION, TRANSACTION


class SocketTests(unittest.TestCase):
    """
    The C{socket} of a policy.
    """

    def test_forms(self):
        """
        C{unix:/path}, C{inet:host:port}, C{inet:[v6]:port}.
        """
        self.assertEqual(
            parsePolicySocket("unix:/run/policy"),
            PolicySocket("unix", path="/run/policy"),
        )
        self.assertEqual(
            parsePolicySocket("inet:127.0.0.1:10023"),
            PolicySocket("inet", host="127.0.0.1", port=10023),
        )
        self.assertEqual(
            parsePolicySocket("INET:[::1]:10023"),
            PolicySocket("inet", host="::1", port=10023),
        )
        self.assertEqual(str(parsePolicySocket("inet:[::1]:7")), "inet:[::1]:7")
        self.assertEqual(str(parsePolicySocket("inet:localhost:7")), "inet:localhost:7")
        self.assertEqual(str(parsePolicySocket("unix:/x")), "unix:/x")

    def test_bad(self):
        """
        Bad forms are C{ValueError}s that say what is expected.
        """
        for text in (
            "/run/policy",
            "tcp:1.2.3.4:5",
            "unix:",
            "inet:127.0.0.1",
            "inet::10023",
            "inet:127.0.0.1:0",
            "inet:127.0.0.1:65536",
            "inet:127.0.0.1:x",
            "inet:::1:25",
            "inet:[::1]25",
            "inet:[::1",
            "inet:127.0.0.1:\u00b2",
            "inet:127.0.0.1:\u0661\u0662",
        ):
            e = self.assertRaises(ValueError, parsePolicySocket, text)
            self.assertIn("policy socket %r: " % (text,), str(e))

    def test_endpoints(self):
        """
        Each form gets its endpoint.
        """
        reactor = MemoryReactorClock()
        for text, kind in (
            ("unix:/run/p", UNIXClientEndpoint),
            ("inet:127.0.0.1:1", TCP4ClientEndpoint),
            ("inet:[::1]:1", TCP6ClientEndpoint),
            ("inet:localhost:1", HostnameEndpoint),
        ):
            self.assertIsInstance(parsePolicySocket(text).endpoint(reactor, 5), kind)


class Server:
    """
    The server side of one fake connection made through a memory reactor.
    """

    def __init__(self, reactor: MemoryReactorClock, index: int) -> None:
        self.factory = reactor.unixClients[index][1]
        self.connector = reactor.connectors[index]
        self.protocol = None  # type: Any
        self.transport = StringTransport()

    def accept(self) -> "Server":
        self.protocol = self.factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        return self

    def refuse(self) -> None:
        self.factory.clientConnectionFailed(
            self.connector, Failure(error.ConnectionRefusedError())
        )

    def requests(self) -> List[dict]:
        data = self.transport.value()
        return [
            dict(line.split("=", 1) for line in block.split("\n"))
            for block in data.decode("utf-8").split("\n\n")
            if block
        ]

    def reply(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def close(self) -> None:
        self.protocol.connectionLost(Failure(error.ConnectionDone()))

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


class ClientTests(unittest.TestCase):
    """
    L{PolicyClient} against fake connections.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.sink = MemorySink()
        self.client = PolicyClient(
            "grey",
            "unix:/run/policy",
            10.0,
            "tempfail",
            self.reactor,
            Logger("smtps", sink=self.sink, level=14),
        )

    def request(self, state="RCPT", recipient="bob@example.org"):
        return self.client.check(
            policyAttributes(state, SESSION, TRANSACTION, recipient=recipient)
        )

    def server(self, index=-1):
        return Server(self.reactor, index)

    def errors(self):
        return [line for line in self.sink.lines() if "sev=" in line]

    def assertDefault(self, d, why):
        decision = self.successResultOf(d)
        self.assertTrue(decision.default)
        self.assertEqual(decision.code, 451)
        self.assertEqual(decision.dsn, "4.3.5")
        errors = self.errors()
        self.assertTrue(errors, self.sink.lines())
        self.assertIn("sev=ERR", errors[-1])
        self.assertIn("func=PolicyClient.check", errors[-1])
        self.assertIn("policy=grey", errors[-1])
        self.assertIn("socket=unix:/run/policy", errors[-1])
        self.assertIn(why, errors[-1])
        return decision

    def test_interface(self):
        """
        The client and the fake provide L{IPolicyClient}.
        """
        self.assertTrue(verifyObject(IPolicyClient, self.client))
        self.assertTrue(verifyObject(IPolicyClient, FakePolicyClient()))

    def test_badSettings(self):
        """
        A bad socket, timeout or default action is refused at once.
        """
        self.assertRaises(
            ValueError, PolicyClient, "p", "x", 1, "tempfail", self.reactor
        )
        self.assertRaises(
            ValueError, PolicyClient, "p", "unix:/x", 0, "tempfail", self.reactor
        )
        self.assertRaises(
            ValueError, PolicyClient, "p", "unix:/x", 1, "maybe", self.reactor
        )

    def test_decision(self):
        """
        A request is sent, its reply is the decision.
        """
        d = self.request()
        server = self.server().accept()
        (sent,) = server.requests()
        self.assertEqual(sent["request"], "smtpd_access_policy")
        self.assertEqual(sent["recipient"], "bob@example.org")
        self.assertNoResult(d)
        server.reply(b"action=DEFER_IF_PERMIT Greylisted\n\n")
        decision = self.successResultOf(d)
        self.assertEqual(decision.action, "DEFER_IF_PERMIT")
        self.assertFalse(decision.default)
        self.assertEqual(self.errors(), [])
        self.assertIn("policy=grey", self.sink.lines()[-1])

    def test_reuseAndSerialise(self):
        """
        One connection serves request after request; the second is sent
        only after the first reply.
        """
        d1 = self.request(recipient="one@example.org")
        d2 = self.request(recipient="two@example.org")
        server = self.server().accept()
        self.assertEqual(
            [r["recipient"] for r in server.requests()], ["one@example.org"]
        )
        server.reply(b"action=OK\n")
        self.assertNoResult(d1)
        server.reply(b"\n")
        self.assertEqual(self.successResultOf(d1).action, "OK")
        self.assertEqual(
            [r["recipient"] for r in server.requests()],
            ["one@example.org", "two@example.org"],
        )
        server.reply(b"action=REJECT no\n\n")
        self.assertEqual(self.successResultOf(d2).action, "REJECT")
        d3 = self.request()
        self.assertEqual(len(server.requests()), 3)
        server.reply(b"action=DUNNO\n\n")
        self.assertEqual(self.successResultOf(d3).action, "DUNNO")
        self.assertEqual(len(self.reactor.unixClients), 1)

    def test_refused(self):
        """
        A server that is down: every waiting request gets the default
        action (451 4.3.5), logged; the next request tries again.
        """
        d1 = self.request()
        d2 = self.request()
        self.server().refuse()
        self.assertDefault(d1, "cannot connect")
        self.assertDefault(d2, "cannot connect")
        d3 = self.request()
        self.assertEqual(len(self.reactor.unixClients), 2)
        self.server().accept().reply(b"action=OK\n\n")
        self.assertEqual(self.successResultOf(d3).action, "OK")

    def test_askAgainAfterRefused(self):
        """
        A caller that asks again from the callback of a refused request
        (the server is being restarted) gets a new connection attempt,
        not the old refusal.
        """
        again = []  # type: List[defer.Deferred]
        d = self.request()
        d.addCallback(lambda result: again.append(self.request()) or result)
        self.server().refuse()
        self.assertDefault(d, "cannot connect")
        self.assertNoResult(again[0])
        self.assertEqual(len(self.reactor.unixClients), 2)
        self.server().accept().reply(b"action=OK\n\n")
        self.assertEqual(self.successResultOf(again[0]).action, "OK")

    def test_askAgainAtMaxTtl(self):
        """
        A caller that asks again from the callback of the last reply on a
        connection past C{MAX_TTL} gets its answer on a new connection.
        """
        self.patch(policyclient, "MAX_TTL", 5.0)
        d = self.request()
        server = self.server().accept()
        server.reply(b"action=DUNNO\n\n")
        self.successResultOf(d)
        self.reactor.advance(5)
        d = self.request()
        again = []  # type: List[defer.Deferred]
        d.addCallback(lambda result: again.append(self.request()) or result)
        server.reply(b"action=DUNNO\n\n")
        self.assertTrue(server.closed)
        self.assertEqual(len(server.requests()), 2)
        self.server().accept().reply(b"action=OK\n\n")
        self.assertEqual(self.successResultOf(again[0]).action, "OK")

    def test_timeoutInFlight(self):
        """
        A server that does not answer within the timeout: the default
        action, the connection is dropped, and a late reply is ignored;
        the next request uses a new connection.
        """
        d = self.request()
        server = self.server().accept()
        self.reactor.advance(9.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.assertDefault(d, "timeout after 10s")
        self.assertTrue(server.transport.disconnected)
        server.reply(b"action=REJECT late\n\n")
        server.close()
        d2 = self.request()
        self.assertEqual(len(self.reactor.unixClients), 2)
        self.server().accept().reply(b"action=OK\n\n")
        self.assertEqual(self.successResultOf(d2).action, "OK")

    def test_timeoutWaiting(self):
        """
        The timeout counts from the call: a request waiting for a
        connection that does not come, or behind a slow one, gets the
        default action.
        """
        d1 = self.request()
        self.reactor.advance(5)
        d2 = self.request()
        self.reactor.advance(5)
        self.assertDefault(d1, "timeout after 10s waiting for the connection")
        self.assertNoResult(d2)
        server = self.server().accept()
        self.assertEqual(len(server.requests()), 1)
        server.reply(b"action=DUNNO\n\n")
        self.assertEqual(self.successResultOf(d2).action, "DUNNO")

    def test_timeoutQueued(self):
        """
        A request queued behind a slow one times out on its own; the slow
        one's connection is then dropped when its own time is up.
        """
        d1 = self.request()
        server = self.server().accept()
        self.reactor.advance(4)
        d2 = self.request()
        self.reactor.advance(6)
        self.assertDefault(d1, "timeout after 10s")
        # d2 is now sent on a new connection
        self.assertNoResult(d2)
        self.assertTrue(server.transport.disconnected)
        second = self.server().accept()
        second.reply(b"action=OK\n\n")
        self.assertEqual(self.successResultOf(d2).action, "OK")

    def test_closedMidReply(self):
        """
        A server that closes the connection in the middle of a reply: the
        default action.
        """
        d = self.request()
        server = self.server().accept()
        server.reply(b"action=REJ")
        server.close()
        self.assertDefault(d, "in the middle of a reply")

    def test_closedBeforeReply(self):
        """
        A new connection closed before the reply: the default action, no
        second try (the server is broken, not idle).
        """
        d = self.request()
        self.server().accept().close()
        self.assertDefault(d, "connection closed before the reply")
        self.assertEqual(len(self.reactor.unixClients), 1)

    def test_retryReused(self):
        """
        A reused connection lost before the reply (the server closed it as
        the request went out): the request is sent once more on a new one.
        """
        d1 = self.request()
        server = self.server().accept()
        server.reply(b"action=DUNNO\n\n")
        self.successResultOf(d1)
        d2 = self.request()
        server.close()
        self.assertNoResult(d2)
        second = self.server().accept()
        self.assertEqual(len(second.requests()), 1)
        second.reply(b"action=OK\n\n")
        self.assertEqual(self.successResultOf(d2).action, "OK")
        self.assertEqual(self.errors(), [])

    def test_retryOnce(self):
        """
        The second try on a new connection is the last.
        """
        d1 = self.request()
        server = self.server().accept()
        server.reply(b"action=DUNNO\n\n")
        d2 = self.request()
        server.close()
        self.server().accept().close()
        self.assertDefault(d2, "connection closed before the reply")

    def test_idleClosedByServer(self):
        """
        A server that closes an idle connection: the next request opens a
        new one.
        """
        d1 = self.request()
        server = self.server().accept()
        server.reply(b"action=DUNNO\n\n")
        self.successResultOf(d1)
        server.close()
        d2 = self.request()
        self.assertEqual(len(self.reactor.unixClients), 2)
        self.server().accept().reply(b"action=OK\n\n")
        self.assertEqual(self.successResultOf(d2).action, "OK")
        self.assertEqual(self.errors(), [])

    def test_garbageLongLine(self):
        """
        A reply line over 4 KB: the default action and the connection is
        dropped; the next request reconnects.
        """
        d = self.request()
        server = self.server().accept()
        server.reply(b"action=" + b"x" * 5000)
        self.assertDefault(d, "longer than 4096 bytes")
        self.assertTrue(server.transport.disconnected)
        server.close()
        self.request()
        self.assertEqual(len(self.reactor.unixClients), 2)

    def test_garbageNoAction(self):
        """
        A reply without C{action=}: the default action.
        """
        d = self.request()
        self.server().accept().reply(b"hello there\n\n")
        self.assertDefault(d, "not name=value")

    def test_unknownAction(self):
        """
        An unknown action: the default action, logged with what came.
        """
        d = self.request()
        self.server().accept().reply(b"action=MAYBE later\n\n")
        self.assertDefault(d, "unknown action")
        self.assertIn("MAYBE later", self.errors()[-1])

    def test_filterWarning(self):
        """
        FILTER is DUNNO with a warning naming the policy.
        """
        d = self.request()
        self.server().accept().reply(b"action=FILTER smtp:[127.0.0.1]:10025\n\n")
        decision = self.successResultOf(d)
        self.assertEqual(decision.action, "DUNNO")
        (warning,) = self.errors()
        self.assertIn("sev=WARN", warning)
        self.assertIn("policy=grey", warning)
        self.assertIn("FILTER is not supported", warning)

    def test_prependAtEndOfMessage(self):
        """
        The client tells the parser the protocol state of the request.
        """
        d = self.request("END-OF-MESSAGE")
        self.server().accept().reply(b"action=PREPEND X-A: b\n\n")
        self.assertEqual(self.successResultOf(d).action, "DUNNO")
        self.assertIn("END-OF-MESSAGE", self.errors()[0])

    def test_unsolicited(self):
        """
        A reply nobody asked for drops the connection with a warning.
        """
        d = self.request()
        server = self.server().accept()
        server.reply(b"action=OK\n\n")
        self.successResultOf(d)
        server.reply(b"action=REJECT\n\n")
        self.assertTrue(server.transport.disconnected)
        self.assertIn("reply without a request", self.errors()[0])

    def test_otherDefaults(self):
        """
        With C{default_action = dunno} a failed request is DUNNO.
        """
        client = PolicyClient(
            "spf",
            "unix:/run/spf",
            2,
            "dunno",
            self.reactor,
            Logger("smtps", sink=self.sink),
        )
        d = client.check({"protocol_state": "MAIL"})
        self.server().refuse()
        decision = self.successResultOf(d)
        self.assertEqual((decision.action, decision.default), ("DUNNO", True))

    def test_maxIdle(self):
        """
        An unused connection is closed after C{MAX_IDLE} seconds.
        """
        d = self.request()
        server = self.server().accept()
        server.reply(b"action=OK\n\n")
        self.successResultOf(d)
        self.reactor.advance(policyclient.MAX_IDLE - 1)
        self.assertFalse(server.closed)
        self.reactor.advance(1)
        self.assertTrue(server.closed)
        server.close()
        self.request()
        self.assertEqual(len(self.reactor.unixClients), 2)

    def test_maxTtl(self):
        """
        A connection older than C{MAX_TTL} is closed after its reply.
        """
        server = None
        for i in range(int(policyclient.MAX_TTL // 100) + 1):
            d = self.request()
            if server is None:
                server = self.server().accept()
            server.reply(b"action=OK\n\n")
            self.successResultOf(d)
            if server.closed:
                break
            self.reactor.advance(100)
        self.assertTrue(server.closed)
        self.assertEqual(i, policyclient.MAX_TTL // 100)

    def test_close(self):
        """
        L{PolicyClient.close} answers waiting requests with the default
        action and fires when the connection is closed; later requests get
        the default action at once.
        """
        d1 = self.request()
        server = self.server().accept()
        d2 = self.request()
        closed = self.client.close()
        self.assertDefault(d1, "client closed")
        self.assertDefault(d2, "client closed")
        self.assertTrue(server.closed)
        self.assertNoResult(closed)
        server.close()
        self.successResultOf(closed)
        self.assertDefault(self.request(), "client closed")
        self.successResultOf(self.client.close())

    def test_closeConnecting(self):
        """
        Closing while connecting cancels the connection attempt.
        """
        d = self.request()
        closed = self.client.close()
        self.successResultOf(closed)
        self.assertDefault(d, "client closed")
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)


class FakeTests(unittest.TestCase):
    """
    L{FakePolicyClient}.
    """

    def test_answers(self):
        """
        Answers by protocol state, C{"*"} for the rest, DUNNO otherwise;
        requests are recorded.
        """
        fake = FakePolicyClient(
            "p",
            {
                "RCPT": "DEFER_IF_PERMIT Greylisted",
                "MAIL": PolicyDecision("OK"),
                "DATA": lambda request: defer.succeed("REJECT " + request["sender"]),
            },
        )
        rcpt = self.successResultOf(fake.check({"protocol_state": "RCPT"}))
        self.assertEqual(rcpt.action, "DEFER_IF_PERMIT")
        self.assertEqual(
            self.successResultOf(fake.check({"protocol_state": "MAIL"})).action, "OK"
        )
        data = self.successResultOf(
            fake.check({"protocol_state": "DATA", "sender": "a@b"})
        )
        self.assertEqual(data.text, "a@b")
        self.assertEqual(
            self.successResultOf(fake.check({"protocol_state": "HELO"})).action, "DUNNO"
        )
        self.assertEqual(len(fake.requests), 4)
        fake.answers["*"] = "bogus"
        self.assertTrue(
            self.successResultOf(fake.check({"protocol_state": "HELO"})).default
        )
        self.successResultOf(fake.close())
        self.assertTrue(fake.closed)
