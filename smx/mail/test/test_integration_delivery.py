# -*- test-case-name: smx.mail.test.test_integration_delivery -*-
"""
Integration tests for SMTPC's delivery rules (L{smx.mail.smtpc}) over
real loopback sockets, with real peers started and stopped by each test:

  - LMTP over TCP to Dovecot's LMTP server (mailertable
    C{2724^lmtp:[127.0.0.73]}), not to the local C{LMTP_socket};
  - 8-bit content and Postfix's C{smtp-sink} with and without 8BITMIME
    (RFC 6152 section 3);
  - "452 too many recipients" (RFC 5321 4.5.3.1.10) from a small Twisted
    server on 127.0.0.1 that takes a limited number of recipients per
    transaction;
  - named C{smtpc} sections read with the real configuration loader,
    their C{io_timeout} against a server that never greets.

Tests that need a Debian program skip when it is missing.
"""

from __future__ import annotations

import email
import os
import socket
import time
from typing import Any, Dict, List, Optional

from twisted.internet import defer, protocol, reactor
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SkipTest, TestCase

from smx.log import Logger, MemorySink
from smx.mail.lmtpd import LMTPDeliveryService
from smx.mail.smtpc import DeliveryAgent, DeliveryAgentPool
from smx.mail.smtpc import deliveryAgentFromConfiguration
from smx.mail.testing import defaultDeliverySettings, defaultLMTPServerSettings
from smx.maps.routing import localRoute
from smx.queue.testing import MemoryContentStore
from smx.test.mta import (
    SMTP_SINK,
    Dovecot,
    SmtpSink,
    freePort,
    missing,
    readMaildir,
    tempDirectory,
)

BODY = b"Subject: test\n\nplain text\n"
BODY8 = "Subject: caf\u00e9\n\nna\u00efve body \u00e9t\u00e9\n".encode("utf-8")
#: 8-bit octets in the body only: convertible to quoted-printable
BODY8Q = "Subject: test\n\nna\u00efve \n.\nbody \u00e9t\u00e9\n".encode("utf-8")


def route(
    address: str, port: int, mailer: str = "esmtp", host: Optional[str] = None
) -> Dict[str, Any]:
    return {
        "mailer": mailer,
        "host": address if host is None else host,
        "address": address,
        "port": port,
        "preference": 0,
    }


class _Base(TestCase):
    def setUp(self) -> None:
        self.dir = tempDirectory(self, "smx-delivery-")
        self.store = MemoryContentStore()
        self.store.contents["S1"] = BODY
        self.store.contents["S8"] = BODY8
        self.store.contents["S8Q"] = BODY8Q
        self.sink = MemorySink()

    def agent(self, **kw: Any) -> DeliveryAgent:
        kw.setdefault("ioTimeout", 5)
        kw.setdefault("tlsCreator", None)
        return DeliveryAgent(
            self.store,
            defaultDeliverySettings(heloName="client.test", **kw),
            reactor,
            logger=Logger("smtpc", sink=self.sink),
        )

    def transaction(
        self,
        routes: List[Dict[str, Any]],
        addresses: List[str],
        content: str = "S1",
        bodyType: str = "7BIT",
    ) -> Dict[str, Any]:
        return {
            "id": "C0100000001000000",
            "ss_ta": content,
            "sender": "sender@client.test",
            "recipients": [{"address": a, "index": i} for i, a in enumerate(addresses)],
            "routes": routes,
            "size": len(self.store.contents[content]),
            "bodyType": bodyType,
        }


class LMTPOverTCPTests(_Base):
    """
    An C{lmtp} route with a host speaks LMTP over TCP to that host.
    """

    @defer.inlineCallbacks
    def test_dovecotOverTCP(self) -> Any:
        """
        The route of C{2724^lmtp:[127.0.0.73]} delivers to Dovecot's LMTP
        listener on 127.0.0.73 over TCP; nothing reaches the LMTP server
        on the agent's own C{LMTP_socket}.
        """
        if not Dovecot.available():
            raise SkipTest("dovecot (Debian package dovecot-lmtpd) is not installed")
        port = freePort("127.0.0.73")
        dovecot = Dovecot(self, os.path.join(self.dir, "dovecot"), ("127.0.0.73", port))
        dovecot.start()
        local = LMTPDeliveryService(
            defaultLMTPServerSettings(
                socketPath=os.path.join(self.dir, "lmtpsock"),
                maildirBase=os.path.join(self.dir, "mail"),
            ),
            reactor,
        )
        local.startService()
        self.addCleanup(local.stopService)
        agent = self.agent(lmtpSocket=local.socketPath)
        results = yield agent.deliver(
            self.transaction(
                [route("127.0.0.73", port, "lmtp")],
                ["alice@dove.test", "bob@dove.test"],
            )
        )
        self.assertEqual([r["status"] for r in results], ["ok", "ok"])
        self.assertEqual([r["where"] for r in results], ["final_dot"] * 2)
        self.assertEqual(results[0]["remoteMTA"], "127.0.0.73")
        [message] = dovecot.maildir("alice")
        self.assertIn(b"plain text", message)
        self.assertEqual(len(dovecot.maildir("bob")), 1)
        self.assertEqual(
            readMaildir(os.path.join(self.dir, "mail", "alice", "Maildir")), []
        )
        self.assertTrue(
            any(
                "status=connected, port=%d, addr=127.0.0.73" % (port,) in x
                for x in self.sink.lines()
            ),
            self.sink.lines(),
        )

    @defer.inlineCallbacks
    def test_ownLmtpdOverTCP(self) -> Any:
        """
        An lmtpd section with C{port} and C{address} (read by the real
        configuration loader) listens for LMTP on TCP too; an lmtp route
        to that address delivers into its Maildirs.
        """
        from smx.config import loadConfiguration
        from smx.mail.lmtpd import lmtpdServices

        port = freePort("127.0.0.74")
        path = os.path.join(self.dir, "smx.conf")
        with open(path, "w") as f:
            f.write(
                'lmtpd LDA { socket = "lmtpsock"; maildir_base = "mail";\n'
                "  address = 127.0.0.74; port = %d; }\n" % (port,)
            )
        [server] = lmtpdServices(loadConfiguration(path, queueDirectory=self.dir))
        server.startService()
        self.addCleanup(server.stopService)
        results = yield self.agent().deliver(
            self.transaction(
                [route("127.0.0.74", port, "lmtp")], ["alice@lda.test", "../x@lda.test"]
            )
        )
        self.assertEqual([r["status"] for r in results], ["ok", "perm"])
        [message] = readMaildir(os.path.join(self.dir, "mail", "alice", "Maildir"))
        self.assertIn(b"plain text", message)

    @defer.inlineCallbacks
    def test_localRouteUsesSocket(self) -> Any:
        """
        The route of C{lmtp:} without hosts still goes to C{LMTP_socket}.
        """
        local = LMTPDeliveryService(
            defaultLMTPServerSettings(
                socketPath=os.path.join(self.dir, "lmtpsock"),
                maildirBase=os.path.join(self.dir, "mail"),
            ),
            reactor,
        )
        local.startService()
        self.addCleanup(local.stopService)
        [result] = yield self.agent(lmtpSocket=local.socketPath).deliver(
            self.transaction([localRoute()], ["alice@local.test"])
        )
        self.assertEqual(result["status"], "ok")
        maildir = os.path.join(self.dir, "mail", "alice", "Maildir")
        self.assertEqual(len(readMaildir(maildir)), 1)


class EightBitTests(_Base):
    """
    8-bit content and Postfix's smtp-sink with and without 8BITMIME.
    """

    def setUp(self) -> None:
        reason = missing(SMTP_SINK)
        if reason:
            raise SkipTest(reason)
        _Base.setUp(self)

    def startSink(self, *options: str) -> SmtpSink:
        sink = SmtpSink(self, self.dir, "127.0.0.2")
        sink.start(*options)
        return sink

    @defer.inlineCallbacks
    def test_eightBitToSevenBitPeer(self) -> Any:
        """
        8-bit content (declared or not) that cannot be converted (an 8-bit
        header) is not sent to a next hop that does not offer 8BITMIME
        (C{smtp-sink -8}): every recipient fails permanently with 554
        5.6.3, and nothing reaches the sink.
        """
        sink = self.startSink("-8")
        for bodyType in ("8BITMIME", "7BIT"):
            results = yield self.agent().deliver(
                self.transaction(
                    [route(sink.address, sink.port)],
                    ["a@remote.test", "b@remote.test"],
                    "S8",
                    bodyType,
                )
            )
            self.assertEqual([r["status"] for r in results], ["perm", "perm"])
            self.assertEqual(results[0]["code"], 554)
            self.assertTrue(results[0]["reply"].startswith("554 5.6.3 "), results)
            self.assertIn("8BITMIME", results[0]["reply"])
            self.assertEqual(results[0]["remoteMTA"], sink.address)
        self.assertEqual(sink.messages(), [])

    @defer.inlineCallbacks
    def test_convertedForSevenBitPeer(self) -> Any:
        """
        An 8-bit body (declared or not) goes to a next hop that does not
        offer 8BITMIME (C{smtp-sink -8}) converted to quoted-printable
        (RFC 6152 section 3), without BODY=: 7-bit, and it decodes to
        the original text.
        """
        sink = self.startSink("-8")
        for bodyType in ("8BITMIME", "7BIT"):
            [result] = yield self.agent().deliver(
                self.transaction(
                    [route(sink.address, sink.port)], ["a@remote.test"], "S8Q", bodyType
                )
            )
            self.assertEqual(result["status"], "ok")
        messages = sink.messages()
        self.assertEqual(len(messages), 2)
        for message in messages:
            self.assertTrue(message.isascii(), message)
            self.assertIn(b"X-Mail-Args: <sender@client.test>\n", message)
            self.assertIn(b"Content-Transfer-Encoding: quoted-printable\n", message)
            parsed = email.message_from_bytes(message)
            # (smtp-sink's dump ends with one more newline)
            self.assertEqual(
                parsed.get_payload(decode=True).replace(b"\r\n", b"\n"),
                BODY8Q.split(b"\n\n", 1)[1] + b"\n",
            )
        self.assertTrue(
            any("body=8bit converted to 7bit" in x for x in self.sink.lines())
        )

    @defer.inlineCallbacks
    def test_sevenBitToSevenBitPeer(self) -> Any:
        """
        7-bit content goes to the same next hop, even when it was declared
        BODY=8BITMIME (it has no 8-bit octets); no BODY= parameter.
        """
        sink = self.startSink("-8")
        [result] = yield self.agent().deliver(
            self.transaction(
                [route(sink.address, sink.port)], ["a@remote.test"], "S1", "8BITMIME"
            )
        )
        self.assertEqual(result["status"], "ok")
        [message] = sink.messages()
        self.assertIn(b"X-Mail-Args: <sender@client.test>\n", message)

    @defer.inlineCallbacks
    def test_undeclaredEightBit(self) -> Any:
        """
        8-bit content the client did not declare goes with BODY=8BITMIME
        to a next hop that offers 8BITMIME.
        """
        sink = self.startSink()
        [result] = yield self.agent().deliver(
            self.transaction(
                [route(sink.address, sink.port)], ["a@remote.test"], "S8", "7BIT"
            )
        )
        self.assertEqual(result["status"], "ok")
        [message] = sink.messages()
        self.assertRegex(message, rb"X-Mail-Args: <sender@client.test> .*BODY=8BITMIME")
        self.assertIn("na\u00efve".encode("utf-8"), message)

    @defer.inlineCallbacks
    def test_nextMXOffers8BitMime(self) -> Any:
        """
        When the first MX does not offer 8BITMIME and the message cannot
        be converted, the next one that does gets it.
        """
        seven = self.startSink("-8")
        eight = SmtpSink(self, os.path.join(self.dir, "eight"), "127.0.0.3")
        eight.start()
        [result] = yield self.agent().deliver(
            self.transaction(
                [route(seven.address, seven.port), route(eight.address, eight.port)],
                ["a@remote.test"],
                "S8",
                "8BITMIME",
            )
        )
        self.assertEqual(result["status"], "ok")
        self.assertEqual(seven.messages(), [])
        self.assertEqual(len(eight.messages()), 1)


class _LimitedServer(LineReceiver):
    """
    An ESMTP server with PIPELINING that accepts at most C{factory.limit}
    recipients per transaction and answers the others 452 4.5.3, as
    Postfix's smtpd_recipient_limit does.
    """

    delimiter = b"\r\n"

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        self.rcpts = []  # type: List[bytes]
        self.data = None  # type: Optional[List[bytes]]
        self.sendLine(b"220 limited ESMTP")

    def lineReceived(self, line: bytes) -> None:
        if self.data is not None:
            if line == b".":
                self.factory.transactions.append((self.rcpts, b"\n".join(self.data)))
                self.data = None
                self.rcpts = []
                self.sendLine(b"250 2.0.0 accepted")
            else:
                self.data.append(line)
            return
        verb = line[:4].upper()
        if verb == b"EHLO":
            self.sendLine(b"250-limited\r\n250-PIPELINING\r\n250 8BITMIME")
        elif verb == b"MAIL":
            self.rcpts = []
            self.sendLine(b"250 2.1.0 ok")
        elif verb == b"RCPT":
            if len(self.rcpts) >= self.factory.limit:
                self.sendLine(b"452 4.5.3 Error: too many recipients")
            else:
                self.rcpts.append(line[8:])
                self.sendLine(b"250 2.1.5 ok")
        elif verb == b"DATA":
            if not self.rcpts:
                self.sendLine(b"554 5.5.1 Error: no valid recipients")
            else:
                self.data = []
                self.sendLine(b"354 go")
        elif verb == b"QUIT":
            self.sendLine(b"221 bye")
            self.transport.loseConnection()
        else:
            self.sendLine(b"250 ok")


def listenLimited(testCase: TestCase, limit: int) -> Any:
    """
    Start a L{_LimitedServer} on 127.0.0.1.

    @return: its factory, with C{port}, C{connections}, C{transactions}.
    """
    factory = protocol.Factory.forProtocol(_LimitedServer)
    factory.limit = limit  # type: ignore[attr-defined]
    factory.connections = []  # type: ignore[attr-defined]
    factory.transactions = []  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    factory.port = port.getHost().port  # type: ignore[attr-defined]

    def stop() -> Any:
        for c in factory.connections:  # type: ignore[attr-defined]
            c.transport.abortConnection()
        return port.stopListening()

    testCase.addCleanup(stop)
    return factory


class TooManyRecipientsTests(_Base):
    """
    Recipients refused with 452 4.5.3 go at once in a new transaction
    (RFC 5321 4.5.3.1.10).
    """

    @defer.inlineCallbacks
    def test_hundredRecipientsFiftyPerTransaction(self) -> Any:
        """
        100 recipients to a server that takes 50 per transaction: all are
        delivered by one call, in two transactions on one connection.
        """
        server = listenLimited(self, 50)
        addresses = ["r%03d@remote.test" % (i,) for i in range(100)]
        results = yield self.agent().deliver(
            self.transaction([route("127.0.0.1", server.port)], addresses)
        )
        self.assertEqual([r["status"] for r in results], ["ok"] * 100)
        self.assertEqual([r["index"] for r in results], list(range(100)))
        self.assertEqual([len(r) for r, _ in server.transactions], [50, 50])
        delivered = [a for rcpts, _ in server.transactions for a in rcpts]
        self.assertEqual(delivered, [b"<%s>" % (a.encode(),) for a in addresses])
        self.assertEqual(len(server.connections), 1)
        self.assertTrue(
            any("too_many_recipients=50" in x for x in self.sink.lines()),
            self.sink.lines(),
        )

    @defer.inlineCallbacks
    def test_onePerTransaction(self) -> Any:
        """
        A server that takes one recipient per transaction gets three
        transactions for three recipients.
        """
        server = listenLimited(self, 1)
        results = yield self.agent().deliver(
            self.transaction(
                [route("127.0.0.1", server.port)],
                ["a@remote.test", "b@remote.test", "c@remote.test"],
            )
        )
        self.assertEqual([r["status"] for r in results], ["ok"] * 3)
        self.assertEqual([len(r) for r, _ in server.transactions], [1, 1, 1])

    @defer.inlineCallbacks
    def test_firstRecipientRefused(self) -> Any:
        """
        452 for the first recipient of a transaction is a temporary
        failure of every recipient refused so: no further transaction.
        """
        server = listenLimited(self, 0)
        results = yield self.agent().deliver(
            self.transaction(
                [route("127.0.0.1", server.port)], ["a@remote.test", "b@remote.test"]
            )
        )
        self.assertEqual([r["status"] for r in results], ["temp", "temp"])
        self.assertTrue(results[0]["reply"].startswith("452 4.5.3"))
        self.assertEqual(server.transactions, [])
        self.assertEqual(
            sum("mail=<sender@client.test>" in x for x in self.sink.lines()), 1
        )


class ConfigurationTests(_Base):
    """
    SMTPC built from smx.conf files by the real configuration loader.
    """

    def load(self, text: str) -> Any:
        from smx.config import loadConfiguration

        path = os.path.join(self.dir, "smx.conf")
        with open(path, "w") as f:
            f.write(text)
        return loadConfiguration(path, queueDirectory=self.dir)

    def silentServer(self) -> int:
        """
        A TCP port on 127.0.0.2 that accepts connections (the kernel
        completes them) and never says a word.
        """
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.listen(8)
        self.addCleanup(s.close)
        return s.getsockname()[1]

    @defer.inlineCallbacks
    def test_namedSectionIoTimeout(self) -> Any:
        """
        With two named smtpc sections, each is one delivery agent with its
        own options; the first, with C{io_timeout = 2s}, times out a next
        hop that never greets after about 2 seconds.
        """
        port = self.silentServer()
        cfg = self.load(
            "hostname = client.test;\n"
            "smtpc MTA { io_timeout = 2s; remote_port = %d; LMTP_socket = a; }\n"
            "smtpc LOCAL { io_timeout = 30s; remote_port = %d; LMTP_socket = b; }\n"
            % (port, port)
        )
        pool = deliveryAgentFromConfiguration(cfg, self.store, reactor)
        self.assertIsInstance(pool, DeliveryAgentPool)
        self.assertEqual(
            [(a.name, a.ioTimeout, a.remotePort) for a in pool.agents],
            [("smtpc MTA", 2.0, port), ("smtpc LOCAL", 30.0, port)],
        )
        self.assertEqual(
            [a.lmtpSocket for a in pool.agents],
            [os.path.join(self.dir, "a"), os.path.join(self.dir, "b")],
        )
        self.assertEqual(pool.agents[0].heloName, "client.test")
        start = time.monotonic()
        [result] = yield pool.deliver(
            self.transaction([route("127.0.0.2", port)], ["a@remote.test"])
        )
        elapsed = time.monotonic() - start
        self.assertEqual((result["status"], result["where"]), ("temp", "greeting"))
        self.assertIn("timeout after 2s", result["reply"])
        self.assertTrue(1.5 < elapsed < 4, elapsed)

    def test_oneNamedSection(self) -> None:
        """
        One named smtpc section is the delivery agent, with its options
        (io_timeout, remote_port, LMTP_socket, TLS files).
        """
        from smx.test.certs import makeCertificates

        certs = makeCertificates(os.path.join(self.dir, "certs"))
        cfg = self.load(
            "smtpc MTA { io_timeout = 7s; remote_port = 2526; LMTP_socket = l;\n"
            '  tls { cert_file = "%s"; key_file = "%s"; CAcert_file = "%s"; } }\n'
            % (certs.clientCert, certs.clientKey, certs.caFile)
        )
        agent = deliveryAgentFromConfiguration(cfg, self.store, reactor)
        self.assertIsInstance(agent, DeliveryAgent)
        self.assertEqual(
            (agent.name, agent.ioTimeout, agent.remotePort, agent.lmtpSocket),
            ("smtpc MTA", 7.0, 2526, os.path.join(self.dir, "l")),
        )
        assert agent.tlsCreator is not None
        connection = agent.tlsCreator.clientConnectionForTLS(None)
        self.assertEqual(
            connection.get_certificate().get_subject().CN,
            "Client (Test) one",
        )

    def test_badCertificateNamesSection(self) -> None:
        """
        A TLS file of a named section that cannot be loaded is an error
        naming that section.
        """
        cfg = self.load(
            "smtpc A { }\nsmtpc B { tls { cert_file = /nonexistent/c.pem;\n"
            "  key_file = /nonexistent/k.pem; } }\n"
        )
        e = self.assertRaises(
            ValueError, deliveryAgentFromConfiguration, cfg, self.store, reactor
        )
        self.assertIn("smtpc B tls", str(e))
        self.assertIn("/nonexistent/c.pem", str(e))
