# -*- test-case-name: smx.mail.test.test_smtpc -*-
"""
Unit tests for L{smx.mail.smtpc}: the routing loop, the Twisted adapter,
timeouts and the connection cache, with a L{MemoryReactorClock} and
L{StringTransport}s (no sockets).
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from smx.interfaces import IDeliveryAgent
from smx.log import Logger, MemorySink, parseRecord
from smx.mail import client, smtpc
from smx.mail.clientprotocol import SessionError
from smx.mail.smtpc import (
    ClientProtocol,
    DeliveryAgent,
    DeliveryAgentPool,
    _ConnectFactory,
    deliveryAgentFromConfiguration,
)
from smx.mail.testing import defaultDeliverySettings
from smx.maps.routing import localRoute
from smx.queue.testing import MemoryContentStore

EHLO = b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100000\r\n"


def route(address: str = "192.0.2.1", port: int = 0, mailer: str = "esmtp"):
    return {
        "mailer": mailer,
        "host": "mx-" + address,
        "address": address,
        "port": port,
        "preference": 10,
    }


class _Transport(StringTransport):
    def abortConnection(self) -> None:
        self.loseConnection()


class AgentTests(SynchronousTestCase):
    """
    Tests for L{DeliveryAgent} over fake connections.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.store = MemoryContentStore()
        self.store.contents["S1"] = b"Subject: x\n\n.hi\n"
        self.sink = MemorySink()
        self.agent = DeliveryAgent(
            self.store,
            defaultDeliverySettings(heloName="me.test", ioTimeout=30, tlsCreator=None),
            self.reactor,
            logger=Logger("smtpc", sink=self.sink),
        )

    def transaction(self, routes: List[Dict[str, Any]], n: int = 1) -> Dict[str, Any]:
        return {
            "id": "C0100000001000000",
            "ss_ta": "S1",
            "sender": "a@b.test",
            "recipients": [
                {"address": "r%d@d.test" % (i,), "index": i + 3} for i in range(n)
            ],
            "routes": routes,
            "size": 16,
            "bodyType": "7BIT",
        }

    def connect(self, i: int = -1) -> tuple:
        """Accept the last (or C{i}th) TCP connection attempt."""
        host, port, factory, timeout, _ = self.reactor.tcpClients[i]
        proto = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = _Transport()
        proto.makeConnection(transport)
        return proto, transport

    def refuse(self, i: int = -1) -> None:
        _, _, factory, _, _ = self.reactor.tcpClients[i]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))

    def converse(self, proto: ClientProtocol, transport: _Transport, *replies: bytes):
        for reply in replies:
            proto.dataReceived(reply)

    def test_interface(self) -> None:
        """L{DeliveryAgent} provides L{IDeliveryAgent}."""
        self.assertTrue(verifyObject(IDeliveryAgent, self.agent))

    def test_deliver(self) -> None:
        """
        A transaction is delivered with pipelining, the content encoded,
        and the results and App. C.2 records are as the seed shows.
        """
        d = self.agent.deliver(self.transaction([route(port=2525)], 2))
        self.assertEqual(self.reactor.tcpClients[0][:2], ("192.0.2.1", 2525))
        proto, t = self.connect()
        self.converse(proto, t, b"220 mx ESMTP\r\n", EHLO)
        self.assertEqual(
            t.value(),
            b"EHLO me.test\r\nMAIL FROM:<a@b.test> SIZE=16\r\n"
            b"RCPT TO:<r0@d.test>\r\nRCPT TO:<r1@d.test>\r\nDATA\r\n",
        )
        t.clear()
        self.converse(
            proto, t, b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 unknown\r\n354 go\r\n"
        )
        self.assertEqual(t.value(), b"Subject: x\r\n\r\n..hi\r\n.\r\n")
        self.assertNoResult(d)
        t.clear()
        self.converse(proto, t, b"250 2.0.0 queued\r\n")
        results = self.successResultOf(d)
        self.assertEqual(
            results,
            [
                {
                    "index": 3,
                    "address": "r0@d.test",
                    "status": "ok",
                    "code": 250,
                    "reply": "250 2.0.0 queued",
                    "remoteMTA": "mx-192.0.2.1",
                    "where": "final_dot",
                },
                {
                    "index": 4,
                    "address": "r1@d.test",
                    "status": "perm",
                    "code": 550,
                    "reply": "550 5.1.1 unknown",
                    "remoteMTA": "mx-192.0.2.1",
                    "where": "rcpt",
                },
            ],
        )
        self.assertEqual(t.value(), b"QUIT\r\n")
        records = [parseRecord(line) for line in self.sink.lines()]
        sess = records[0]["da_sess"]
        self.assertEqual(
            self.sink.lines(),
            [
                "da_sess=%s, status=connected, port=2525, addr=192.0.2.1" % sess,
                "da_sess=%s, da_ta=C0100000001000000, ss_ta=S1, mail=<a@b.test>, "
                "stat=0, reply=250 2.1.0 ok" % sess,
                "da_sess=%s, da_ta=C0100000001000000, ss_ta=S1, rcpt=<r0@d.test>, "
                "stat=0, reply=250 2.1.5 ok" % sess,
                "da_sess=%s, da_ta=C0100000001000000, ss_ta=S1, rcpt=<r1@d.test>, "
                "stat=550, reply=550 5.1.1 unknown" % sess,
                "da_sess=%s, da_ta=C0100000001000000, ss_ta=S1, where=final_dot, "
                "size=16, stat=0" % sess,
            ],
        )

    def test_largeBody(self) -> None:
        """
        Content of several chunks is streamed whole, dot-stuffed, with
        lone LFs made CRLF, whichever chunk a line is cut by.
        """
        line = b".line of text\n"
        count = 3 * smtpc.CHUNK_SIZE // len(line) + 7
        self.store.contents["S1"] = line * count
        d = self.agent.deliver(self.transaction([route()]))
        proto, t = self.connect()
        self.converse(proto, t, b"220 mx ESMTP\r\n", EHLO)
        t.clear()
        self.converse(proto, t, b"250 ok\r\n250 ok\r\n354 go\r\n")
        self.assertEqual(t.value(), b"..line of text\r\n" * count + b".\r\n")
        self.converse(proto, t, b"250 2.0.0 queued\r\n")
        self.assertEqual(self.successResultOf(d)[0]["status"], "ok")

    def test_defaultPort(self) -> None:
        """A route without a port uses C{remote_port}."""
        self.agent.remotePort = 2600
        self.agent.deliver(self.transaction([route()]))
        self.assertEqual(self.reactor.tcpClients[0][1], 2600)

    def test_nextRouteOnRefused(self) -> None:
        """A refused connection moves on to the next route."""
        d = self.agent.deliver(
            self.transaction([route("192.0.2.1"), route("192.0.2.2")])
        )
        self.refuse()
        self.assertEqual(self.reactor.tcpClients[1][0], "192.0.2.2")
        proto, t = self.connect()
        self.converse(proto, t, b"220 mx\r\n", EHLO, b"250 ok\r\n250 ok\r\n354 go\r\n")
        self.converse(proto, t, b"250 ok\r\n")
        [result] = self.successResultOf(d)
        self.assertEqual(result["status"], "ok")
        self.assertEqual(result["remoteMTA"], "mx-192.0.2.2")

    def test_allRoutesRefused(self) -> None:
        """Every route refused: a temporary failure at C{connect}."""
        d = self.agent.deliver(
            self.transaction([route("192.0.2.1"), route("192.0.2.2")])
        )
        self.refuse(0)
        self.refuse(1)
        [result] = self.successResultOf(d)
        self.assertEqual(result["status"], "temp")
        self.assertEqual(result["where"], "connect")
        self.assertIsNone(result["remoteMTA"])

    def test_greeting421NextRoute(self) -> None:
        """A 421 greeting moves on to the next route."""
        d = self.agent.deliver(
            self.transaction([route("192.0.2.1"), route("192.0.2.2")])
        )
        proto, t = self.connect()
        self.converse(proto, t, b"421 4.3.2 busy\r\n")
        self.assertTrue(t.disconnecting)
        proto.connectionLost(Failure(Exception("closed")))
        self.assertEqual(len(self.reactor.tcpClients), 2)
        proto2, t2 = self.connect()
        self.converse(proto2, t2, b"554 go away\r\n")
        [result] = self.successResultOf(d)
        # a refused greeting is never a bounce
        self.assertEqual((result["status"], result["where"]), ("temp", "greeting"))

    def test_temporaryRecipientTriesNextRoute(self) -> None:
        """
        A recipient answered 4xx is tried at the next route; one answered
        5xx is not.
        """
        d = self.agent.deliver(
            self.transaction([route("192.0.2.1"), route("192.0.2.2")], 2)
        )
        proto, t = self.connect()
        self.converse(
            proto,
            t,
            b"220 mx\r\n",
            EHLO,
            b"250 ok\r\n451 later\r\n550 no\r\n554 no\r\n",
        )
        proto2, t2 = self.connect()
        t2.clear()
        self.converse(proto2, t2, b"220 mx\r\n", EHLO)
        self.assertIn(b"RCPT TO:<r0@d.test>", t2.value())
        self.assertNotIn(b"r1@d.test", t2.value())
        self.converse(proto2, t2, b"250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n")
        results = self.successResultOf(d)
        self.assertEqual([r["status"] for r in results], ["ok", "perm"])

    def test_timeout(self) -> None:
        """
        A server that stops answering ends the attempt after io_timeout:
        a temporary failure, not a delivery.
        """
        d = self.agent.deliver(self.transaction([route()]))
        proto, t = self.connect()
        self.converse(proto, t, b"220 mx\r\n", EHLO, b"250 ok\r\n250 ok\r\n354 go\r\n")
        self.reactor.advance(29)
        self.assertNoResult(d)
        self.reactor.advance(2)
        [result] = self.successResultOf(d)
        self.assertEqual(result["status"], "temp")
        self.assertEqual(result["where"], "final_dot")
        self.assertTrue(t.disconnecting)

    def test_timeoutAtGreeting(self) -> None:
        """A server that never greets times out and the next route is tried."""
        d = self.agent.deliver(
            self.transaction([route("192.0.2.1"), route("192.0.2.2")])
        )
        proto, t = self.connect()
        self.reactor.advance(31)
        proto.connectionLost(Failure(Exception("aborted")))
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.refuse()
        [result] = self.successResultOf(d)
        self.assertEqual(result["status"], "temp")

    def test_garbage(self) -> None:
        """A reply that is not SMTP ends the attempt with a temporary failure."""
        d = self.agent.deliver(self.transaction([route()]))
        proto, t = self.connect()
        self.converse(proto, t, b"220 mx\r\n", EHLO, b"250 ok\r\nHELLO WORLD\r\n")
        [result] = self.successResultOf(d)
        self.assertEqual((result["status"], result["where"]), ("temp", "rcpt"))
        self.assertTrue(t.disconnecting)

    def test_lostMidData(self) -> None:
        """A connection lost during DATA is a temporary failure."""
        d = self.agent.deliver(self.transaction([route()]))
        proto, t = self.connect()
        self.converse(proto, t, b"220 mx\r\n", EHLO, b"250 ok\r\n250 ok\r\n")
        proto.connectionLost(Failure(Exception("reset")))
        [result] = self.successResultOf(d)
        self.assertEqual((result["status"], result["where"]), ("temp", "data"))

    def test_missingContent(self) -> None:
        """Content missing from the store: a temporary failure, no crash."""
        tx = self.transaction([route()])
        tx["ss_ta"] = "S2"
        d = self.agent.deliver(tx)
        proto, t = self.connect()
        self.converse(proto, t, b"220 mx\r\n", EHLO)
        [result] = self.successResultOf(d)
        self.assertEqual(result["status"], "temp")

    def test_noRoutes(self) -> None:
        """A transaction without routes fails temporarily."""
        [result] = self.successResultOf(self.agent.deliver(self.transaction([])))
        self.assertEqual(result["status"], "temp")

    def test_lmtpRoute(self) -> None:
        """
        An lmtp route connects to C{LMTP_socket}, speaks LHLO, and maps
        one reply per recipient after the final dot.
        """
        self.agent.lmtpSocket = "/tmp/lmtp.sock"
        d = self.agent.deliver(self.transaction([localRoute()], 2))
        path, factory, timeout, _ = self.reactor.unixClients[0]
        self.assertEqual(path, "/tmp/lmtp.sock")
        proto = factory.buildProtocol(None)
        t = _Transport()
        proto.makeConnection(t)
        self.converse(proto, t, b"220 lmtp\r\n")
        self.assertEqual(t.value(), b"LHLO me.test\r\n")
        self.converse(proto, t, b"250-lmtp\r\n250 PIPELINING\r\n")
        self.converse(proto, t, b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
        self.converse(proto, t, b"250 2.0.0 saved\r\n552 5.2.2 quota\r\n")
        results = self.successResultOf(d)
        self.assertEqual([r["status"] for r in results], ["ok", "perm"])
        self.assertEqual([r["where"] for r in results], ["final_dot", "final_dot"])
        lines = self.sink.lines()
        self.assertIn("port=0, addr=/tmp/lmtp.sock", lines[0])
        self.assertTrue(any("rcpt=<r1@d.test>, where=final_dot" in x for x in lines))

    def test_lmtpOverTCP(self) -> None:
        """
        An lmtp route with a host (mailertable C{2724^lmtp:[192.0.2.7]})
        speaks LMTP over TCP to its address and port, not over
        C{LMTP_socket}.
        """
        self.agent.lmtpSocket = "/tmp/lmtp.sock"
        lmtp = route("192.0.2.7", 2724, mailer="lmtp")
        d = self.agent.deliver(self.transaction([lmtp]))
        self.assertEqual(self.reactor.unixClients, [])
        self.assertEqual(self.reactor.tcpClients[0][:2], ("192.0.2.7", 2724))
        proto, t = self.connect()
        self.converse(proto, t, b"220 lmtp\r\n")
        self.assertEqual(t.value(), b"LHLO me.test\r\n")
        self.converse(proto, t, b"250-lmtp\r\n250 PIPELINING\r\n")
        self.converse(proto, t, b"250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 saved\r\n")
        [result] = self.successResultOf(d)
        self.assertEqual((result["status"], result["where"]), ("ok", "final_dot"))
        self.assertEqual(result["remoteMTA"], "mx-192.0.2.7")

    def test_eightBitConverted(self) -> None:
        """
        Content with 8-bit octets, though not declared, goes to a server
        that does not offer 8BITMIME converted to quoted-printable
        (L{smx.mail.downgrade}): MAIL without BODY=, with the converted
        size; the conversion is logged.
        """
        self.store.contents["S1"] = b"Subject: x\n\ncaf\xc3\xa9\n"
        d = self.agent.deliver(self.transaction([route()], 2))
        proto, t = self.connect()
        self.converse(proto, t, b"220 mx\r\n", EHLO)
        converted = (
            b"Subject: x\nMIME-Version: 1.0\n"
            b"Content-Type: text/plain; charset=unknown-8bit\n"
            b"Content-Transfer-Encoding: quoted-printable\n\ncaf=C3=A9\n"
        )
        self.assertTrue(
            t.value().endswith(
                b"MAIL FROM:<a@b.test> SIZE=%d\r\n" % len(converted)
                + b"RCPT TO:<r0@d.test>\r\nRCPT TO:<r1@d.test>\r\nDATA\r\n"
            ),
            t.value(),
        )
        t.clear()
        self.converse(proto, t, b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
        self.assertEqual(t.value(), converted.replace(b"\n", b"\r\n") + b".\r\n")
        self.converse(proto, t, b"250 queued\r\n")
        results = self.successResultOf(d)
        self.assertEqual([r["status"] for r in results], ["ok", "ok"])
        self.assertTrue(
            any("body=8bit converted to 7bit" in x for x in self.sink.lines())
        )

    def test_eightBitNotConvertible(self) -> None:
        """
        Content that cannot be made 7-bit (8-bit octets in a header) is
        not sent to a server that does not offer 8BITMIME: 554 5.6.3 and
        the reason for every recipient, without MAIL.
        """
        self.store.contents["S1"] = b"Subject: caf\xc3\xa9\n\nx\n"
        d = self.agent.deliver(self.transaction([route()], 2))
        proto, t = self.connect()
        self.converse(proto, t, b"220 mx\r\n", EHLO)
        results = self.successResultOf(d)
        self.assertEqual([r["status"] for r in results], ["perm", "perm"])
        self.assertEqual([r["code"] for r in results], [554, 554])
        self.assertEqual(
            results[0]["reply"],
            "554 5.6.3 Conversion required and not possible: 8-bit data in "
            "a header; the server does not offer 8BITMIME",
        )
        self.assertNotIn(b"MAIL", t.value())

    def test_eightBitUndeclared(self) -> None:
        """
        Undeclared 8-bit content goes with BODY=8BITMIME to a server that
        offers 8BITMIME.
        """
        self.store.contents["S1"] = b"caf\xc3\xa9\n"
        self.agent.deliver(self.transaction([route()]))
        proto, t = self.connect()
        self.converse(
            proto,
            t,
            b"220 mx\r\n",
            b"250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
        )
        self.assertIn(b"MAIL FROM:<a@b.test> BODY=8BITMIME\r\nRCPT", t.value())

    def test_tooManyRecipients(self) -> None:
        """
        Recipients refused with 452 4.5.3 go at once in a new transaction
        on the same session; the answer for them is that of the second
        transaction.
        """
        d = self.agent.deliver(self.transaction([route()], 3))
        proto, t = self.connect()
        self.converse(proto, t, b"220 mx\r\n", EHLO)
        t.clear()
        self.converse(
            proto,
            t,
            b"250 ok\r\n250 ok\r\n452 4.5.3 too many\r\n452 4.5.3 too many\r\n",
            b"354 go\r\n",
            b"250 queued\r\n",
        )
        self.assertNoResult(d)
        self.assertTrue(
            t.value().endswith(
                b"MAIL FROM:<a@b.test> SIZE=16\r\nRCPT TO:<r1@d.test>\r\n"
                b"RCPT TO:<r2@d.test>\r\nDATA\r\n"
            ),
            t.value(),
        )
        self.converse(proto, t, b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n")
        self.converse(proto, t, b"250 queued again\r\n")
        results = self.successResultOf(d)
        self.assertEqual([r["status"] for r in results], ["ok", "ok", "perm"])
        self.assertEqual(results[1]["reply"], "250 queued again")
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_tooManyRecipientsNewConnection(self) -> None:
        """
        When the session cannot carry another transaction (DATA was
        refused), the recipients refused with 452 go on a new connection.
        """
        d = self.agent.deliver(self.transaction([route()], 2))
        proto, t = self.connect()
        self.converse(proto, t, b"220 mx\r\n", EHLO)
        self.converse(proto, t, b"250 ok\r\n250 ok\r\n452 4.5.3 too many\r\n")
        self.converse(proto, t, b"451 4.3.0 try later\r\n")
        self.assertEqual(len(self.reactor.tcpClients), 2)
        proto2, t2 = self.connect()
        self.converse(proto2, t2, b"220 mx\r\n", EHLO)
        self.assertIn(b"RCPT TO:<r1@d.test>\r\nDATA", t2.value())
        self.converse(proto2, t2, b"250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n")
        results = self.successResultOf(d)
        self.assertEqual([r["status"] for r in results], ["temp", "ok"])

    def test_tooManyForTheFirstRecipient(self) -> None:
        """
        452 for the first recipient of a transaction ends the attempt: a
        temporary failure, no further transaction.
        """
        d = self.agent.deliver(self.transaction([route()], 2))
        proto, t = self.connect()
        self.converse(proto, t, b"220 mx\r\n", EHLO)
        self.converse(proto, t, b"250 ok\r\n452 4.5.3 no\r\n452 4.5.3 no\r\n")
        self.converse(proto, t, b"554 5.5.1 no valid recipients\r\n")
        results = self.successResultOf(d)
        self.assertEqual([r["status"] for r in results], ["temp", "temp"])
        self.assertEqual(t.value().count(b"MAIL FROM"), 1)


class PoolTests(SynchronousTestCase):
    """
    Tests for L{DeliveryAgentPool}: several smtpc sections in one process.
    """

    def agents(self, *names: str) -> List[DeliveryAgent]:
        out = []
        for name in names:
            agent = DeliveryAgent(
                MemoryContentStore(),
                defaultDeliverySettings(heloName="me.test", tlsCreator=None),
                MemoryReactorClock(),
            )
            agent.name = name
            out.append(agent)
        return out

    def test_interface(self) -> None:
        """L{DeliveryAgentPool} provides L{IDeliveryAgent}."""
        self.assertTrue(
            verifyObject(IDeliveryAgent, DeliveryAgentPool(self.agents("a")))
        )

    def test_leastBusy(self) -> None:
        """
        A transaction goes to the agent with the fewest in progress, the
        first on a tie.
        """
        a, b = self.agents("smtpc A", "smtpc B")
        pool = DeliveryAgentPool([a, b])
        calls = []  # type: List[str]
        for agent in (a, b):
            agent.deliver = (  # type: ignore[method-assign]
                lambda tx, agent=agent: calls.append(agent.name)
            )
        pool.deliver({})
        b.busy = 1
        pool.deliver({})
        a.busy = 2
        pool.deliver({})
        self.assertEqual(calls, ["smtpc A", "smtpc A", "smtpc B"])

    def test_services(self) -> None:
        """
        The agents are child services with unique names; stopping the pool
        stops them.
        """
        pool = DeliveryAgentPool(self.agents("smtpc", "smtpc"))
        self.assertEqual([s.name for s in pool], ["smtpc", "smtpc #2"])
        pool.startService()
        self.assertTrue(all(a.running for a in pool.agents))
        pool.stopService()
        self.assertFalse(any(a.running for a in pool.agents))


class ConnectionReuseTests(AgentTests.__bases__[0]):  # type: ignore[misc]
    """
    Tests for reuse of sessions through the open connection cache.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.store = MemoryContentStore()
        self.store.contents["S1"] = b"body\n"
        self.agent = DeliveryAgent(
            self.store,
            defaultDeliverySettings(
                heloName="me.test",
                ioTimeout=30,
                tlsCreator=None,
                reuseConnection=True,
                cacheSize=1,
            ),
            self.reactor,
            logger=Logger("smtpc", sink=MemorySink()),
            cacheTimeout=10,
        )
        self.tx = {
            "id": "C0100000001000000",
            "ss_ta": "S1",
            "sender": "a@b.test",
            "recipients": [{"address": "r@d.test", "index": 0}],
            "routes": [route()],
            "size": 5,
        }

    def answerLast(self, d: Any) -> tuple:
        """
        The newest connection is a server that takes the transaction of
        C{d}, which succeeds.
        """
        host, port, factory, _, _ = self.reactor.tcpClients[-1]
        proto = factory.buildProtocol(IPv4Address("TCP", host, port))
        t = _Transport()
        proto.makeConnection(t)
        for data in [b"220 mx\r\n", EHLO, b"250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n"]:
            proto.dataReceived(data)
        self.assertEqual(self.successResultOf(d)[0]["status"], "ok")
        return proto, t

    def first(self) -> tuple:
        return self.answerLast(self.agent.deliver(self.tx))

    def test_reuse(self) -> None:
        """
        A second transaction to the same destination uses the cached
        session at once (no RSET: the final dot's reply reset the server),
        without a new connection.
        """
        proto, t = self.first()
        self.assertEqual(len(self.agent.cache), 1)
        t.clear()
        d = self.agent.deliver(self.tx)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertTrue(t.value().startswith(b"MAIL FROM:<a@b.test>"), t.value())
        proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n")
        self.assertEqual(self.successResultOf(d)[0]["status"], "ok")

    def test_expiry(self) -> None:
        """An idle cached session is closed after the cache timeout."""
        proto, t = self.first()
        self.reactor.advance(11)
        self.assertEqual(len(self.agent.cache), 0)
        self.assertTrue(t.value().endswith(b"QUIT\r\n"))
        self.assertTrue(t.disconnecting)

    def test_deadCachedSession(self) -> None:
        """
        When the server has closed a cached session (421 or the
        connection gone before the reply to MAIL), the transaction starts
        again on a new connection and succeeds there.
        """
        proto, t = self.first()
        d = self.agent.deliver(self.tx)
        proto.dataReceived(b"421 bye\r\n")
        proto.connectionLost(Failure(Exception("closed")))
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertNoResult(d)
        self.answerLast(d)

    def test_cachedSessionRefusesMail(self) -> None:
        """
        A definitive reply to MAIL on a cached session is the answer: no
        second attempt.
        """
        proto, t = self.first()
        d = self.agent.deliver(self.tx)
        proto.dataReceived(b"451 later\r\n451 later\r\n503 no\r\n")
        [result] = self.successResultOf(d)
        self.assertEqual(result["status"], "temp")
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_stopServiceClosesCache(self) -> None:
        """Stopping the service closes every cached session."""
        proto, t = self.first()
        self.agent.startService()
        self.agent.stopService()
        self.assertEqual(len(self.agent.cache), 0)
        self.assertTrue(t.disconnecting)


class QuietFactoryTests(SynchronousTestCase):
    """
    The factory made for each delivery session does not log "Starting
    factory" and "Stopping factory" lines around every connection.
    """

    def test_notNoisy(self) -> None:
        """
        C{_ConnectFactory.noisy} is false.
        """
        self.assertFalse(_ConnectFactory(lambda: None).noisy)


class ConfigurationTests(SynchronousTestCase):
    """
    Tests for L{DeliveryAgent.fromConfiguration} with smx.conf text.
    """

    def parse(self, text: str) -> Any:
        from smx.config import parseConfiguration

        return parseConfiguration(text, filename="smx.conf")

    def test_options(self) -> None:
        """
        C{io_timeout}, C{remote_port}, C{LMTP_socket} (smtpc), the
        C{reuse_connection} flag and C{OCC_max_entries} (qmgr) and the
        global C{hostname} are used.
        """
        cfg = self.parse(
            "hostname = mx.example.test;\n"
            "smtpc { io_timeout = 42s; remote_port = 2525; LMTP_socket = /tmp/l; }\n"
            "qmgr { flags = reuse_connection; OCC_max_entries = 3; }\n"
        )
        agent = DeliveryAgent.fromConfiguration(
            cfg, MemoryContentStore(), MemoryReactorClock()
        )
        self.assertEqual(agent.ioTimeout, 42.0)
        self.assertEqual(agent.remotePort, 2525)
        self.assertEqual(agent.lmtpSocket, "/tmp/l")
        self.assertEqual(agent.heloName, "mx.example.test")
        self.assertTrue(agent.reuseConnection)
        self.assertEqual(agent.cache.maxEntries, 3)
        self.assertIsNotNone(agent.tlsCreator)

    def test_defaults(self) -> None:
        """Without options: port 25, no connection reuse."""
        agent = DeliveryAgent.fromConfiguration(
            self.parse(""), MemoryContentStore(), MemoryReactorClock()
        )
        self.assertEqual(agent.remotePort, 25)
        self.assertFalse(agent.reuseConnection)
        self.assertTrue(agent.lmtpSocket.endswith("lmtpsock"))

    def test_namedSections(self) -> None:
        """
        Several smtpc sections, named or not: one agent per section, each
        with its own options, in file order.
        """
        cfg = self.parse(
            "smtpc MTA { io_timeout = 10s; LMTP_socket = /tmp/a; }\n"
            "smtpc { io_timeout = 20s; LMTP_socket = /tmp/b; log_level = 12; }\n"
            "smtpc LAST { }\n"
        )
        pool = deliveryAgentFromConfiguration(
            cfg, MemoryContentStore(), MemoryReactorClock()
        )
        self.assertIsInstance(pool, DeliveryAgentPool)
        self.assertEqual(
            [(a.name, a.ioTimeout) for a in pool.agents],
            [("smtpc MTA", 10.0), ("smtpc", 20.0), ("smtpc LAST", 300.0)],
        )
        self.assertEqual(pool.agents[1].lmtpSocket, "/tmp/b")
        self.assertEqual(pool.agents[1].log.level, 12)
        self.assertEqual(pool.agents[0].log.level, 9)
        self.assertIs(pool.agents[0].ids, pool.agents[2].ids)

    def test_oneSection(self) -> None:
        """One smtpc section (named or not, or none) is one agent."""
        for text in ("", "smtpc { }", "smtpc MTA { io_timeout = 10s; }"):
            agent = deliveryAgentFromConfiguration(
                self.parse(text), MemoryContentStore(), MemoryReactorClock()
            )
            self.assertIsInstance(agent, DeliveryAgent)
        self.assertEqual((agent.name, agent.ioTimeout), ("smtpc MTA", 10.0))

    def test_badCertificate(self) -> None:
        """A tls cert_file that cannot be loaded is a ValueError naming it."""
        cfg = self.parse(
            "smtpc { tls { cert_file = /nonexistent/c.pem; key_file = /nonexistent/k.pem; } }"
        )
        e = self.assertRaises(
            ValueError,
            DeliveryAgent.fromConfiguration,
            cfg,
            MemoryContentStore(),
            MemoryReactorClock(),
        )
        self.assertIn("/nonexistent/c.pem", str(e))


class ConnectReasonTests(TestCase):
    """
    The reply of a connection that could not be made names the reason in
    one line (L{smx.mail.clientprotocol.connectReason}), never Twisted's
    repr of a L{Failure}.
    """

    def connectFailed(self, connect: Any) -> Any:
        from twisted.internet import reactor

        factory = _ConnectFactory(lambda: None)
        connect(reactor, factory)
        return self.assertFailure(factory.deferred, SessionError).addCallback(
            lambda e: e.reply
        )

    def test_refused(self) -> Any:
        """A loopback port nobody listens on: C{Connection refused}."""
        from smx.test.mta import freePort

        port = freePort()
        d = self.connectFailed(lambda r, f: r.connectTCP("127.0.0.1", port, f))
        return d.addCallback(
            self.assertEqual, "451 4.4.1 cannot connect: Connection refused"
        )

    def test_noSocket(self) -> Any:
        """A Unix socket (LMTP) that is not there: the system's reason."""
        path = self.mktemp()
        d = self.connectFailed(lambda r, f: r.connectUNIX(path, f))
        return d.addCallback(
            self.assertEqual, "451 4.4.1 cannot connect: No such file or directory"
        )

    def test_closedWhileConnecting(self) -> None:
        """
        A connection lost before it was made (Twisted's C{ConnectError}
        holding the L{Failure} of C{ConnectionDone}, seen with LMTP
        around restarts): C{connection closed}.
        """
        factory = _ConnectFactory(lambda: None)
        reason = Failure(ConnectError(string=Failure(ConnectionDone())))
        factory.clientConnectionFailed(None, reason)
        e = self.failureResultOf(factory.deferred, SessionError).value
        self.assertEqual(e.reply, "451 4.4.1 cannot connect: connection closed")
