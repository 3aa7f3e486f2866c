# -*- test-case-name: smx.mail.test.test_smtpc_integration -*-
"""
Integration tests for SMTPC (L{smx.mail.smtpc}) and lmtpd: real loopback
sockets and real peers started and stopped by each test.

  - Postfix's C{smtp-sink} as the remote MTA (also rejecting and
    disconnecting on chosen commands);
  - Dovecot's LMTP server on a Unix socket as the local delivery agent;
  - smx's own lmtpd on a Unix socket;
  - small Twisted servers on 127.0.0.1 for what the others cannot do:
    hanging, garbage, STARTTLS with a client certificate, a broken TLS
    handshake.

Tests that need a Debian program skip when it is missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Optional

from OpenSSL import SSL
from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SkipTest, TestCase

from smx.log import Logger, MemorySink
from smx.mail.lmtpd import LMTPDeliveryService
from smx.mail.smtpc import ClientTLSCreator, DeliveryAgent
from smx.mail.testing import defaultDeliverySettings, defaultLMTPServerSettings
from smx.queue.testing import MemoryContentStore
from smx.test.mta import (
    DOVECOT_CONF,
    canConnect,
    freePort,
    signalPidFile,
    waitFor,
)

SMTP_SINK = "/usr/sbin/smtp-sink"
DOVECOT = "/usr/sbin/dovecot"

BODY = b"Subject: integration\n\n.leading dot\nline two\r\nend"


def esmtpRoute(port: int, address: str = "127.0.0.1") -> Dict[str, Any]:
    return {
        "mailer": "esmtp",
        "host": "mx.test",
        "address": address,
        "port": port,
        "preference": 10,
    }


LMTP_ROUTE = {"mailer": "lmtp", "host": "", "address": "", "port": 0, "preference": 0}


class _Base(TestCase):
    def setUp(self) -> None:
        # a short path under /tmp: Unix socket names are limited to 108
        # bytes, and smtp-sink and Dovecot (running as nobody) must be able
        # to reach the directory
        self.dir = tempfile.mkdtemp(prefix="smx-smtpc-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        os.chmod(self.dir, 0o755)
        self.store = MemoryContentStore()
        self.store.contents["S1"] = BODY
        self.sink = MemorySink()

    def agent(self, **kw: Any) -> DeliveryAgent:
        kw.setdefault("ioTimeout", 5)
        return DeliveryAgent(
            self.store,
            defaultDeliverySettings(heloName="client.test", **kw),
            reactor,
            logger=Logger("smtpc", sink=self.sink),
        )

    def transaction(self, routes: List[Dict[str, Any]], *addresses: str):
        return {
            "id": "C0100000001000000",
            "ss_ta": "S1",
            "sender": "sender@client.test",
            "recipients": [{"address": a, "index": i} for i, a in enumerate(addresses)],
            "routes": routes,
            "size": len(BODY),
            "bodyType": "8BITMIME",
        }


class SmtpSinkTests(_Base):
    """
    Delivery to Postfix's smtp-sink over loopback TCP.
    """

    def setUp(self) -> None:
        if not os.access(SMTP_SINK, os.X_OK):
            raise SkipTest("smtp-sink (Debian package postfix) is not installed")
        _Base.setUp(self)
        self.dump = os.path.join(self.dir, "sink")
        os.makedirs(self.dump)
        os.chmod(self.dump, 0o777)

    def startSink(self, *options: str) -> int:
        port = freePort()
        args = [SMTP_SINK]
        if os.getuid() == 0:
            args += ["-u", "nobody"]
        args += ["-d", self.dump + "/%H%M%S."] + list(options)
        args += ["127.0.0.1:%d" % (port,), "64"]
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def stop() -> None:
            proc.kill()
            proc.wait()

        self.addCleanup(stop)
        if not waitFor(lambda: canConnect(port)):
            self.fail("smtp-sink did not start")
        return port

    def dumps(self) -> List[bytes]:
        out = []
        for name in sorted(glob.glob(self.dump + "/*")):
            with open(name, "rb") as f:
                out.append(f.read())
        return out

    @defer.inlineCallbacks
    def test_deliver(self) -> Any:
        """
        Two recipients in one transaction reach smtp-sink with the content
        intact; the App. C.2 records are written.
        """
        port = self.startSink()
        results = yield self.agent().deliver(
            self.transaction([esmtpRoute(port)], "a@remote.test", "b@remote.test")
        )
        self.assertEqual([r["status"] for r in results], ["ok", "ok"])
        self.assertEqual(results[0]["where"], "final_dot")
        [dump] = self.dumps()
        self.assertIn(b"X-Rcpt-Args: <a@remote.test>", dump)
        self.assertIn(b"X-Rcpt-Args: <b@remote.test>", dump)
        self.assertIn(b"BODY=8BITMIME", dump)
        # smtp-sink stores the lines with LF and adds an empty line
        self.assertIn(b"Subject: integration\n\n.leading dot\nline two\nend\n", dump)
        lines = self.sink.lines()
        self.assertIn("status=connected, port=%d, addr=127.0.0.1" % (port,), lines[0])
        self.assertIn("where=final_dot, size=%d, stat=0" % (len(BODY),), lines[-1])

    @defer.inlineCallbacks
    def test_largeMessage(self) -> Any:
        """
        A message of several megabytes is streamed in chunks (the
        transport's flow control pauses and resumes the sender) and
        arrives complete, without pipelining (C{-p}).
        """
        port = self.startSink("-p")
        line = b"x" * 70 + b"\n"
        self.store.contents["S1"] = b"Subject: big\n\n" + line * 60000
        tx = self.transaction([esmtpRoute(port)], "a@r.test")
        tx["size"] = len(self.store.contents["S1"])
        [result] = yield self.agent().deliver(tx)
        self.assertEqual(result["status"], "ok")
        [dump] = self.dumps()
        self.assertEqual(dump.count(line), 60000)

    @defer.inlineCallbacks
    def test_nextMX(self) -> Any:
        """The first route refuses connections; the second gets the mail."""
        port = self.startSink()
        results = yield self.agent().deliver(
            self.transaction([esmtpRoute(freePort()), esmtpRoute(port)], "a@r.test")
        )
        self.assertEqual(results[0]["status"], "ok")
        self.assertEqual(len(self.dumps()), 1)

    @defer.inlineCallbacks
    def test_rejectRcptHard(self) -> Any:
        """RCPT rejected with 5xx: a permanent failure, nothing sent."""
        port = self.startSink("-f", "RCPT")
        [result] = yield self.agent().deliver(
            self.transaction([esmtpRoute(port)], "a@r.test")
        )
        self.assertEqual((result["status"], result["where"]), ("perm", "rcpt"))
        self.assertEqual(result["code"], 500)

    @defer.inlineCallbacks
    def test_rejectRcptSoft(self) -> Any:
        """RCPT rejected with 4xx: a temporary failure."""
        port = self.startSink("-r", "RCPT")
        [result] = yield self.agent().deliver(
            self.transaction([esmtpRoute(port)], "a@r.test")
        )
        self.assertEqual((result["status"], result["where"]), ("temp", "rcpt"))

    @defer.inlineCallbacks
    def test_disconnectAfterDot(self) -> Any:
        """
        A server that drops the connection after the final dot without a
        reply: the recipient is not marked delivered.
        """
        port = self.startSink("-q", ".")
        [result] = yield self.agent().deliver(
            self.transaction([esmtpRoute(port)], "a@r.test")
        )
        self.assertEqual(result["status"], "temp")
        self.assertEqual(result["where"], "final_dot")

    @defer.inlineCallbacks
    def test_disconnectAtData(self) -> Any:
        """A server that drops the connection at DATA: temporary failure."""
        port = self.startSink("-q", "DATA")
        [result] = yield self.agent().deliver(
            self.transaction([esmtpRoute(port)], "a@r.test")
        )
        self.assertEqual((result["status"], result["where"]), ("temp", "data"))

    @defer.inlineCallbacks
    def test_greeting421(self) -> Any:
        """A 421 greeting on the first route: the next route is used."""
        bad = self.startSink("-Q", "CONNECT")
        good = self.startSink()
        results = yield self.agent().deliver(
            self.transaction([esmtpRoute(bad), esmtpRoute(good)], "a@r.test")
        )
        self.assertEqual(results[0]["status"], "ok")

    @defer.inlineCallbacks
    def test_reuseConnection(self) -> Any:
        """With reuse_connection, two transactions share one session."""
        port = self.startSink()
        agent = self.agent(reuseConnection=True)
        for _ in range(2):
            [result] = yield agent.deliver(
                self.transaction([esmtpRoute(port)], "a@r.test")
            )
            self.assertEqual(result["status"], "ok")
        self.assertEqual(len(self.dumps()), 2)
        connected = [x for x in self.sink.lines() if "status=connected" in x]
        self.assertEqual(len(connected), 1)
        agent.cache.closeAll()
        yield deferLater(reactor, 0.05, lambda: None)


class _FakeServer(LineReceiver):
    """A scriptable SMTP server for behaviour real peers do not offer."""

    delimiter = b"\r\n"

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        mode = self.factory.mode
        if mode == "hang":
            return
        if mode == "garbage":
            self.transport.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            return
        self.transport.write(b"220 fake ESMTP\r\n")
        self.data = None  # type: Optional[List[bytes]]

    def lineReceived(self, line: bytes) -> None:
        if self.data is not None:
            if line == b".":
                self.factory.messages.append(b"\n".join(self.data))
                self.data = None
                self.sendLine(b"250 2.0.0 accepted")
                self.transactions = getattr(self, "transactions", 0) + 1
            else:
                self.data.append(line)
            return
        verb = line.split(b" ", 1)[0].upper()
        if self.factory.mode == "idleclose" and getattr(self, "transactions", 0):
            # like a server whose idle timeout struck just as the client
            # reused the session
            self.sendLine(b"421 4.4.2 fake closing idle connection")
            self.transport.loseConnection()
            return
        if verb == b"EHLO":
            self.sendLine(b"250-fake\r\n250-PIPELINING\r\n250 STARTTLS")
        elif verb == b"STARTTLS":
            self.sendLine(b"220 2.0.0 go ahead")
            if self.factory.mode == "badtls":
                self.transport.write(b"this is not a TLS server hello\r\n" * 4)
                return
            self.transport.startTLS(self.factory.tlsContext)
        elif verb == b"DATA":
            self.data = []
            self.sendLine(b"354 go")
        elif verb == b"QUIT":
            self.sendLine(b"221 bye")
            self.transport.loseConnection()
        else:
            self.sendLine(b"250 ok")


class _ServerContext:
    def __init__(self, certs: Any) -> None:
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.use_certificate_chain_file(certs.serverCert)
        ctx.use_privatekey_file(certs.serverKey)
        ctx.load_verify_locations(certs.caFile)
        ctx.set_verify(SSL.VERIFY_PEER, lambda *a: True)
        self.ctx = ctx

    def getContext(self) -> SSL.Context:
        return self.ctx


class FakeServerTests(_Base):
    """
    SMTPC against small Twisted servers on 127.0.0.1: hanging, garbage,
    STARTTLS with a client certificate, a broken handshake.
    """

    def listen(self, mode: str, tlsContext: Any = None) -> int:
        factory = protocol.Factory.forProtocol(_FakeServer)
        factory.mode = mode  # type: ignore[attr-defined]
        factory.connections = []  # type: ignore[attr-defined]
        factory.messages = []  # type: ignore[attr-defined]
        factory.tlsContext = tlsContext  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.factory = factory

        def stop() -> Any:
            for c in factory.connections:  # type: ignore[attr-defined]
                c.transport.abortConnection()
            return port.stopListening()

        self.addCleanup(stop)
        return port.getHost().port

    @defer.inlineCallbacks
    def test_reusedSessionClosed(self) -> Any:
        """
        A cached session that the server closes when it is reused (421 to
        MAIL): the transaction goes through on a new connection, at once.
        """
        port = self.listen("idleclose")
        agent = self.agent(reuseConnection=True, tlsCreator=None)
        for _ in range(2):
            [result] = yield agent.deliver(
                self.transaction([esmtpRoute(port)], "a@r.test")
            )
            self.assertEqual(result["status"], "ok")
        self.assertEqual(len(self.factory.messages), 2)
        self.assertEqual(len(self.factory.connections), 2)
        agent.cache.closeAll()

    @defer.inlineCallbacks
    def test_hang(self) -> Any:
        """A server that never answers: io_timeout ends the attempt."""
        port = self.listen("hang")
        start = time.monotonic()
        [result] = yield self.agent(ioTimeout=0.5, tlsCreator=None).deliver(
            self.transaction([esmtpRoute(port)], "a@r.test")
        )
        self.assertLess(time.monotonic() - start, 3)
        self.assertEqual((result["status"], result["where"]), ("temp", "greeting"))

    @defer.inlineCallbacks
    def test_garbage(self) -> Any:
        """A server that answers garbage: temporary failure."""
        port = self.listen("garbage")
        [result] = yield self.agent(tlsCreator=None).deliver(
            self.transaction([esmtpRoute(port)], "a@r.test")
        )
        self.assertEqual(result["status"], "temp")

    def certificates(self) -> Any:
        try:
            from smx.test.certs import makeCertificates
        except ImportError as e:
            raise SkipTest("smx.test.certs is not available: %s" % (e,))
        return makeCertificates(os.path.join(self.dir, "certs"))

    @defer.inlineCallbacks
    def test_starttlsWithClientCertificate(self) -> Any:
        """
        STARTTLS is used when offered, the client certificate is presented
        and the starttls record is written.
        """
        certs = self.certificates()
        port = self.listen("tls", _ServerContext(certs))
        creator = ClientTLSCreator(
            certs.clientCert, certs.clientKey, certs.caFile, None
        )
        [result] = yield self.agent(tlsCreator=creator).deliver(
            self.transaction([esmtpRoute(port)], "a@r.test")
        )
        self.assertEqual(result["status"], "ok")
        self.assertEqual(len(self.factory.messages), 1)  # type: ignore[attr-defined]
        server = self.factory.connections[0]  # type: ignore[attr-defined]
        peer = server.transport.getPeerCertificate()
        self.assertIsNotNone(peer)
        self.assertTrue(creator.verified)
        self.assertTrue(
            any("where=connection, starttls=successful" in x for x in self.sink.lines())
        )

    @defer.inlineCallbacks
    def test_brokenHandshake(self) -> Any:
        """
        A failed TLS handshake never falls back to clear text: the
        recipient fails temporarily and the next route is tried.
        """
        certs = self.certificates()
        bad = self.listen("badtls")
        badFactory = self.factory
        good = self.listen("tls", _ServerContext(certs))
        results = yield self.agent().deliver(
            self.transaction([esmtpRoute(bad), esmtpRoute(good)], "a@r.test")
        )
        self.assertEqual(results[0]["status"], "ok")
        self.assertEqual(badFactory.messages, [])  # type: ignore[attr-defined]
        [result] = yield self.agent().deliver(
            self.transaction([esmtpRoute(bad)], "a@r.test")
        )
        self.assertEqual(result["status"], "temp")
        self.assertEqual(badFactory.messages, [])  # type: ignore[attr-defined]

    def test_badCertificateFile(self) -> None:
        """A certificate file that cannot be loaded is a clear ValueError."""
        e = self.assertRaises(
            ValueError, ClientTLSCreator, os.path.join(self.dir, "missing.pem")
        )
        self.assertIn("missing.pem", str(e))


class LMTPTests(_Base):
    """
    LMTP delivery to smx's lmtpd and to Dovecot over Unix sockets.
    """

    @defer.inlineCallbacks
    def test_ownLmtpd(self) -> Any:
        """
        SMTPC delivers over LMTP to smx's lmtpd: one result per recipient,
        files in the Maildirs.
        """
        sock = os.path.join(self.dir, "lmtp")
        base = os.path.join(self.dir, "mail")
        svc = LMTPDeliveryService(
            defaultLMTPServerSettings(socketPath=sock, maildirBase=base), reactor
        )
        svc.startService()
        self.addCleanup(svc.stopService)
        results = yield self.agent(lmtpSocket=sock).deliver(
            self.transaction(
                [LMTP_ROUTE], "Alice+x@local.test", "bob@local.test", "../x@l"
            )
        )
        self.assertEqual([r["status"] for r in results], ["ok", "ok", "perm"])
        [name] = os.listdir(os.path.join(base, "alice", "Maildir", "new"))
        with open(os.path.join(base, "alice", "Maildir", "new", name), "rb") as f:
            message = f.read()
        self.assertTrue(message.startswith(b"Return-Path: <sender@client.test>\n"))
        self.assertTrue(message.endswith(b"\n.leading dot\nline two\nend\n"))

    @defer.inlineCallbacks
    def test_dovecot(self) -> Any:
        """
        SMTPC delivers over LMTP to Dovecot's LMTP server, which stores
        the message in the recipient's Maildir.
        """
        if not os.access(DOVECOT, os.X_OK) or shutil.which("doveconf") is None:
            raise SkipTest("dovecot (Debian package dovecot-lmtpd) is not installed")
        root = self.dir
        mail = os.path.join(root, "mail")
        os.makedirs(mail)
        if os.getuid() == 0:
            shutil.chown(mail, "nobody", "nogroup")
        conf = os.path.join(root, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(DOVECOT_CONF.replace("@ROOT@", root))
        subprocess.run([DOVECOT, "-c", conf], check=True, timeout=10)

        self.addCleanup(
            signalPidFile,
            os.path.join(root, "run", "master.pid"),
            "dovecot",
            signal.SIGTERM,
        )
        sock = os.path.join(root, "lmtp")
        if not waitFor(lambda: os.path.exists(sock)):
            self.fail("dovecot did not create its LMTP socket")
        results = yield self.agent(lmtpSocket=sock).deliver(
            self.transaction([LMTP_ROUTE], "alice@local.test", "bob@local.test")
        )
        self.assertEqual([r["status"] for r in results], ["ok", "ok"])
        new = os.path.join(mail, "alice", "Maildir", "new")
        [name] = os.listdir(new)
        with open(os.path.join(new, name), "rb") as f:
            self.assertIn(b"\n.leading dot\nline two\nend", f.read())

    @defer.inlineCallbacks
    def test_noLmtpServer(self) -> Any:
        """No server on the LMTP socket: a temporary failure."""
        [result] = yield self.agent(lmtpSocket=os.path.join(self.dir, "none")).deliver(
            self.transaction([LMTP_ROUTE], "alice@local.test")
        )
        self.assertEqual((result["status"], result["where"]), ("temp", "connect"))
