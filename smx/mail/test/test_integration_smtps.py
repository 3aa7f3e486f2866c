# -*- test-case-name: smx.mail.test.test_integration_smtps -*-
"""
Integration tests of SMTPS: real loopback sockets on 127.0.0.1 and ::1,
the real reactor, real clients (Python's smtplib and ssl, swaks, Postfix's
smtp-source) and certificates made at run time; QMGR, CDB and SMAR are the
in-memory fakes.
"""

import base64
import os
import shutil
import smtplib
import socket
import ssl

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import reactor, threads, utils
from twisted.trial import unittest

from smx.log import Logger, MemorySink
from smx.mail.testing import defaultServerSettings
from smx.maps.testing import FakeAddressResolver
from smx.mail.smtps import SMTPServerFactory
from smx.mail.tls import ServerContextFactory
from smx.queue.testing import FakeQueueManager, MemoryContentStore
from smx.test.certs import makeCertificates

SWAKS = shutil.which("swaks") or "/usr/bin/swaks"
SMTP_SOURCE = "/usr/sbin/smtp-source"


class ServerMixin:
    """Starts an SMTPS listener on a free loopback port."""

    interface = "127.0.0.1"

    def startServer(self, **settings):
        settings.setdefault("hostname", "mx.test")
        self.qmgr = FakeQueueManager()
        self.store = MemoryContentStore()
        self.resolver = FakeAddressResolver()
        self.resolver.localDomains.add("local.test")
        self.sink = MemorySink()
        self.factory = SMTPServerFactory(
            defaultServerSettings(**settings),
            self.qmgr,
            self.store,
            self.resolver,
            reactor=reactor,
            log=Logger("smtps", sink=self.sink),
        )
        port = reactor.listenTCP(0, self.factory, interface=self.interface)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        return self.port


def rawSession(port, chunks, family=socket.AF_INET, host="127.0.0.1"):
    """
    Send each chunk and read what the server answers (until it is quiet
    for a moment); returns the list of answers.
    """
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect((host, port))
    answers = [_read(s)]
    for chunk in chunks:
        s.sendall(chunk)
        answers.append(_read(s))
    s.close()
    return answers


def _read(s, quiet=0.3):
    data = b""
    s.settimeout(5)
    while True:
        try:
            more = s.recv(65536)
        except socket.timeout:
            break
        if not more:
            break
        data += more
        s.settimeout(quiet)
    return data


class SmtplibTests(ServerMixin, unittest.TestCase):
    """Conversations with Python's smtplib and raw sockets."""

    def test_sendmail(self):
        """smtplib sends a message that is queued and stored."""
        port = self.startServer()

        def client():
            with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test") as s:
                code, text = s.ehlo()
                assert b"PIPELINING" in text, text
                return s.sendmail(
                    "a@b.test", ["u@local.test"], b"Subject: x\r\n\r\nhi\r\n"
                )

        d = threads.deferToThread(client)

        def check(refused):
            self.assertEqual(refused, {})
            [envelope] = self.qmgr.envelopes
            content = self.store.contents[envelope["id"]]
            self.assertTrue(
                content.startswith(b"Received: from client.test ([127.0.0.1])")
            )
            self.assertTrue(content.endswith(b"Subject: x\r\n\r\nhi\r\n"))

        return d.addCallback(check)

    def test_duplicateRecipients(self):
        """
        A recipient named twice in one transaction (the domain in another
        case) gets 250 both times but is queued once; another address is
        kept.
        """
        port = self.startServer()

        def client():
            with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test") as s:
                return s.sendmail(
                    "a@b.test",
                    ["u@local.test", "u@LOCAL.test", "v@local.test", "u@local.test"],
                    b"Subject: x\r\n\r\nhi\r\n",
                )

        d = threads.deferToThread(client)

        def check(refused):
            self.assertEqual(refused, {})
            [envelope] = self.qmgr.envelopes
            self.assertEqual(
                [r["address"] for r in envelope["recipients"]],
                ["u@local.test", "v@local.test"],
            )

        return d.addCallback(check)

    def test_smuggling(self):
        """
        A message with <LF>.<LF> and a smuggled second transaction is one
        message, rejected; nothing queued.
        """
        port = self.startServer()
        data = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n"
        body = (
            b"Subject: one\r\n\r\nhello\n.\nMAIL FROM:<evil@x.test>\r\n"
            b"RCPT TO:<u@local.test>\r\nDATA\r\nSubject: smuggled\r\n\r\n.\r\n"
        )
        d = threads.deferToThread(rawSession, port, [data, body, b"QUIT\r\n"])

        def check(answers):
            self.assertTrue(answers[2].startswith(b"554 5.6.11 "), answers)
            self.assertEqual(answers[2].count(b"\r\n"), 1)
            self.assertEqual(self.qmgr.envelopes, [])

        return d.addCallback(check)

    def test_pipelined(self):
        """A whole pipelined transaction in one packet."""
        port = self.startServer()
        data = (
            b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\n"
            b"RCPT TO:<x@remote.test>\r\nDATA\r\n"
        )
        d = threads.deferToThread(rawSession, port, [data, b"hi\r\n.\r\nQUIT\r\n"])

        def check(answers):
            lines = answers[1].split(b"\r\n")
            self.assertEqual(
                [l[:3] for l in lines[-5:-1]], [b"250", b"250", b"550", b"354"]
            )
            self.assertTrue(answers[2].startswith(b"250 2.0.0 "))
            self.assertTrue(
                answers[2].endswith(b"221 2.0.0 mx.test closing connection\r\n")
            )
            self.assertEqual(len(self.qmgr.envelopes), 1)

        return d.addCallback(check)


class IPv6Tests(ServerMixin, unittest.TestCase):
    """A listener on [::1]."""

    interface = "::1"

    def setUp(self):
        try:
            s = socket.socket(socket.AF_INET6)
            s.bind(("::1", 0))
            s.close()
        except OSError:
            raise unittest.SkipTest("no IPv6 loopback")

    def test_ipv6(self):
        """The client is logged as client_ipv6 and shown as IPv6: literal."""
        port = self.startServer()
        data = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n"
        d = threads.deferToThread(
            rawSession, port, [data, b"x\r\n.\r\n"], socket.AF_INET6, "::1"
        )

        def check(answers):
            self.assertTrue(answers[2].startswith(b"250 "))
            self.assertIn("client_ipv6=::1", self.sink.lines()[0])
            [content] = self.store.contents.values()
            self.assertTrue(content.startswith(b"Received: from c ([IPv6:::1])"))

        return d.addCallback(check)


class TLSTests(ServerMixin, unittest.TestCase):
    """STARTTLS with certificates made at run time."""

    def setUp(self):
        self.certs = makeCertificates(self.mktemp())

    def startTLSServer(self, **settings):
        factory = ServerContextFactory(
            self.certs.serverCert, self.certs.serverKey, self.certs.caFile
        )
        return self.startServer(tlsContextFactory=factory, **settings)

    def clientContext(self, cert=None, key=None):
        context = ssl.create_default_context(cafile=self.certs.caFile)
        if cert:
            context.load_cert_chain(cert, key)
        return context

    def send(self, port, cert=None, key=None, to="x@remote.test"):
        context = self.clientContext(cert, key)

        def client():
            with smtplib.SMTP("localhost", port, local_hostname="client.test") as s:
                s.starttls(context=context)
                return s.sendmail("a@b.test", [to], b"Subject: tls\r\n\r\nhi\r\n")

        return threads.deferToThread(client)

    def test_verified(self):
        """
        A client certificate signed by the CA verifies (verify=OK) and,
        with allow_relaying_if_verified, may relay.
        """
        port = self.startTLSServer(allowRelayingIfVerified=True)
        d = self.send(port, self.certs.clientCert, self.certs.clientKey)

        def check(refused):
            [content] = self.store.contents.values()
            header = content.split(b"\r\nSubject")[0]
            self.assertIn(b"with ESMTPS\r\n\t(TLS=TLSv1.", header)
            self.assertIn(b", verify=OK)\r\n\tid S", header)
            self.assertIn("starttls=successful", "\n".join(self.sink.lines()))

        return d.addCallback(check)

    def test_stranger(self):
        """A certificate from another CA is FAIL and does not relay."""
        port = self.startTLSServer(allowRelayingIfVerified=True)
        d = self.send(port, self.certs.strangerCert, self.certs.strangerKey)
        d = self.assertFailure(d, smtplib.SMTPRecipientsRefused)

        def check(_):
            self.assertIn("verify=FAIL", "\n".join(self.sink.lines()))

        return d.addCallback(check)

    def test_noCertificate(self):
        """No client certificate is verify=NO; local mail is accepted."""
        port = self.startTLSServer()
        d = self.send(port, to="u@local.test")

        def check(_):
            [content] = self.store.contents.values()
            self.assertIn(b", verify=NO)", content)

        return d.addCallback(check)

    def test_certissuer(self):
        """check_access_map_for_relaying: certissuer: cont, certsubject: relay."""
        port = self.startTLSServer(checkAccessMapForRelaying=True, access=True)
        issuer = None

        def lookupAccess(tag, key):
            self.resolver.calls.append(("lookupAccess", tag, key))
            action = {"certissuer": "cont", "certsubject": "relay"}[tag]
            from twisted.internet import defer

            return defer.succeed({"action": action, "quick": False, "reply": None})

        self.resolver.lookupAccess = lookupAccess
        d = self.send(port, self.certs.clientCert, self.certs.clientKey)

        def check(_):
            tags = [c for c in self.resolver.calls if c[0] == "lookupAccess"]
            self.assertEqual([c[1] for c in tags], ["certissuer", "certsubject"])
            self.assertIn("/O=smx/", tags[1][2])
            self.assertIn("CN=Client+20+28Test+29+20one", tags[1][2])
            self.assertEqual(len(self.qmgr.envelopes), 1)

        return d.addCallback(check)

    def test_injection(self):
        """
        Commands pipelined with STARTTLS are discarded: after the
        handshake, RCPT is out of sequence (CVE-2011-0411).
        """
        port = self.startTLSServer()
        context = self.clientContext()

        def client():
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            _read(s)
            s.sendall(b"EHLO c\r\n")
            _read(s)
            s.sendall(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n")
            first = _read(s)
            t = context.wrap_socket(s, server_hostname="localhost")
            t.sendall(b"EHLO c\r\n")
            _read(t)
            t.sendall(b"RCPT TO:<u@local.test>\r\n")
            second = _read(t)
            t.close()
            return first, second

        d = threads.deferToThread(client)

        def check(result):
            first, second = result
            self.assertEqual(first, b"220 2.0.0 Ready to start TLS\r\n")
            self.assertTrue(second.startswith(b"503 5.5.1 "), second)

        return d.addCallback(check)

    def test_badHandshake(self):
        """A failed handshake ends only that session."""
        port = self.startTLSServer()

        def client():
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            _read(s)
            s.sendall(b"STARTTLS\r\n")
            _read(s)
            s.sendall(b"\x16\x03\x01\x00\x05garbage-not-tls\r\n")
            rest = _read(s)
            s.close()
            return rawSession(port, [b"NOOP\r\n"])

        d = threads.deferToThread(client)
        d.addCallback(lambda answers: self.assertEqual(answers[1], b"250 2.0.0 OK\r\n"))
        return d


class ProgramTests(ServerMixin, unittest.TestCase):
    """swaks and smtp-source."""

    def needs(self, path):
        if not os.access(path, os.X_OK):
            raise unittest.SkipTest("%s is not installed" % (path,))

    def test_swaksAuthOverTLS(self):
        """swaks authenticates with PLAIN over TLS and relays."""
        self.needs(SWAKS)
        certs = makeCertificates(self.mktemp())
        port = self.startServer(
            tlsContextFactory=ServerContextFactory(certs.serverCert, certs.serverKey),
            authChecker=InMemoryUsernamePasswordDatabaseDontUse(u=b"p"),
            authMechanisms=("PLAIN", "LOGIN", "CRAM-MD5"),
            trustedMechanisms=("PLAIN", "CRAM-MD5"),
        )
        d = utils.getProcessOutputAndValue(
            SWAKS,
            [
                "--server",
                "127.0.0.1:%d" % port,
                "--tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                "u",
                "--auth-password",
                "p",
                "--from",
                "a@b.test",
                "--to",
                "x@remote.test",
                "--header",
                "X-Test: 1",
            ],
            env={"PATH": "/usr/bin:/bin"},
        )

        def check(result):
            out, err, code = result
            if b"requires Net::SSLeay" in out + err:
                raise unittest.SkipTest("swaks needs libnet-ssleay-perl for TLS")
            self.assertEqual(code, 0, out + err)
            [content] = self.store.contents.values()
            self.assertIn(b" with ESMTPSA\r\n\t(TLS=", content)
            self.assertIn(b"X-Test: 1", content)

        return d.addCallback(check)

    def test_swaksCramMD5(self):
        """swaks authenticates with CRAM-MD5 (no TLS required here)."""
        self.needs(SWAKS)
        port = self.startServer(
            authChecker=InMemoryUsernamePasswordDatabaseDontUse(u=b"p"),
            authMechanisms=("CRAM-MD5",),
            trustedMechanisms=("CRAM-MD5",),
            authRequiresTLS=False,
        )
        d = utils.getProcessOutputAndValue(
            SWAKS,
            [
                "--server",
                "127.0.0.1:%d" % port,
                "--auth",
                "CRAM-MD5",
                "--auth-user",
                "u",
                "--auth-password",
                "p",
                "--from",
                "a@b.test",
                "--to",
                "x@remote.test",
            ],
            env={"PATH": "/usr/bin:/bin"},
        )

        def check(result):
            out, err, code = result
            if b"Digest::MD5" in out + err or b"Authen::" in out + err:
                raise unittest.SkipTest("swaks lacks the Perl module for CRAM-MD5")
            self.assertEqual(code, 0, out + err)
            self.assertEqual(len(self.qmgr.envelopes), 1)

        return d.addCallback(check)

    def test_smtpSource(self):
        """smtp-source: 20 messages over 4 sessions, pipelined, all queued."""
        self.needs(SMTP_SOURCE)
        port = self.startServer()
        d = utils.getProcessOutputAndValue(
            SMTP_SOURCE,
            [
                "-s",
                "4",
                "-m",
                "20",
                "-l",
                "2048",
                "-f",
                "a@b.test",
                "-t",
                "u@local.test",
                "-M",
                "client.test",
                "127.0.0.1:%d" % port,
            ],
        )

        def check(result):
            out, err, code = result
            self.assertEqual(code, 0, out + err)
            self.assertEqual(len(self.qmgr.envelopes), 20)

        return d.addCallback(check)
