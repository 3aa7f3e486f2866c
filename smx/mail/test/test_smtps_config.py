# -*- test-case-name: smx.mail.test.test_smtps_config -*-
"""
Tests for building SMTPS from smx.conf text: L{ServerSettings.fromSection},
L{listenAddresses}, L{smtpsServices}.
"""

import os

from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from smx.config import configurationFromText
from smx.log import Logger, MemorySink
from smx.maps.testing import FakeAddressResolver
from smx.mail.listener import reloadCertificates
from smx.mail.smtps import (
    SMTPSConfigurationError,
    listenAddresses,
    ServerSettings,
    smtpsServices,
)
from smx.queue.testing import FakeQueueManager, MemoryContentStore
from smx.test.certs import makeCertificates

CONF = """
hostname = mx.example;
smtps MTA {
  daemon_address = { 127.0.0.1:2525, "[::1]:2525" };
  flags = { access, softbounce, delay_checks, 8bitmime };
  max_message_size = 100;
  io_timeout = 1m;
  max_hops = 5;
  max_threads = 10; processes = 2;
  max_recipients_per_transaction = 7;
  max_bad_commands_per_session = 9;
  id = 3;
}
smtps MSA {
  daemon_address = :2587;
  flags = { lmtp_does_not_imply_relaying };
  auth { trusted_mechs = { PLAIN }; flags = { noplaintext }; %s }
  %s
}
"""


class ConfigurationTests(unittest.TestCase):
    """Settings from a real configuration."""

    def config(self, auth="", tls=""):
        return configurationFromText(CONF % (auth, tls), queueDirectory=self.mktemp())

    def test_settings(self):
        """Every option lands in the settings."""
        cfg = self.config()
        mta = ServerSettings.fromSection(cfg.section("smtps", "MTA"))
        self.assertEqual(mta.hostname, "mx.example")
        self.assertEqual(mta.maxMessageSize, 100 * 1024)
        self.assertEqual(mta.ioTimeout, 60.0)
        self.assertEqual(mta.maxHops, 5)
        self.assertEqual(mta.maxSessions, 20)
        self.assertEqual(mta.maxRecipientsPerTransaction, 7)
        self.assertEqual(mta.maxBadCommands, 9)
        self.assertEqual(mta.processId, 3)
        self.assertTrue(mta.access and mta.softbounce and mta.delayChecks)
        self.assertTrue(mta.eightBitMime and mta.lmtpImpliesRelaying)
        self.assertIsNone(mta.tlsContextFactory)
        msa = ServerSettings.fromSection(cfg.section("smtps", "MSA"))
        self.assertFalse(msa.lmtpImpliesRelaying)
        self.assertEqual(msa.trustedMechanisms, ("PLAIN",))
        self.assertEqual(msa.authMechanisms, ())

    def test_addresses(self):
        """daemon_address forms."""
        cfg = self.config()
        self.assertEqual(
            listenAddresses(cfg.section("smtps", "MTA")),
            [("127.0.0.1", 2525), ("::1", 2525)],
        )
        self.assertEqual(
            listenAddresses(cfg.section("smtps", "MSA")), [("0.0.0.0", 2587)]
        )

    def test_tlsAndAuth(self):
        """TLS files and the password file make STARTTLS and AUTH work."""
        certs = makeCertificates(os.path.abspath(self.mktemp()))
        passwords = os.path.abspath(self.mktemp())
        with open(passwords, "w") as f:
            f.write("u:p\n")
        cfg = self.config(
            "password_file = %s;" % passwords,
            "tls { cert_file = %s; key_file = %s; CAcert_file = %s; "
            "flags = { allow_relaying_if_verified }; }"
            % (certs.serverCert, certs.serverKey, certs.caFile),
        )
        msa = ServerSettings.fromSection(cfg.section("smtps", "MSA"))
        self.assertTrue(msa.tlsContextFactory.requestsCertificate)
        self.assertTrue(msa.allowRelayingIfVerified)
        self.assertEqual(msa.authMechanisms, ("CRAM-MD5",))

    def test_serverNameCertificates(self):
        """
        C{certificate NAME} sections of C{tls} are chosen by server name;
        C{min_protocol} and the files reach the context factory, and
        L{reloadCertificates} reads them again, logging a failure with
        C{sev=ERR} and keeping the old certificates.
        """
        certs = makeCertificates(os.path.abspath(self.mktemp()))
        cfg = self.config(
            "",
            "tls { cert_file = %s; key_file = %s; min_protocol = TLSv1.3;\n"
            "  certificate client { cert_file = %s; key_file = %s;\n"
            "    server_names = { mx2.test, *.Example.ORG }; } }"
            % (certs.serverCert, certs.serverKey, certs.clientCert, certs.clientKey),
        )
        sink = MemorySink()
        [listener] = smtpsServices(
            cfg,
            FakeQueueManager(),
            MemoryContentStore(),
            FakeAddressResolver(),
            reactor=MemoryReactorClock(),
            log=Logger("smtps", sink=sink),
            names=["MSA"],
        )
        factory = listener.factory.settings.tlsContextFactory
        self.assertEqual(sorted(factory.serverNames), ["*.example.org", "mx2.test"])
        self.assertEqual(factory.serverNames["mx2.test"].keyFile, certs.clientKey)
        self.assertEqual(reloadCertificates([listener, listener]), 0)
        self.assertEqual(
            sink.lines(), ["section=MSA, stat=certificates reloaded, certificates=2"]
        )
        os.remove(certs.clientKey)
        self.assertEqual(reloadCertificates([listener]), 1)
        self.assertEqual(
            sink.lines()[-1],
            "sev=ERR, func=reloadCertificates, section=MSA, stat=certificates "
            "not reloaded; the old ones stay in use, reason=key_file %s: No such "
            "file or directory" % (certs.clientKey,),
        )
        self.assertEqual(sorted(factory.serverNames), ["*.example.org", "mx2.test"])

        def broken():
            raise RuntimeError("bug")

        factory.reload = broken
        self.assertEqual(reloadCertificates([listener]), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIn(
            "sev=ERR, func=reloadCertificates, section=MSA, error=RuntimeError: bug",
            sink.lines()[-1],
        )

    def test_badFiles(self):
        """Unusable files are one clear error naming section and file."""
        cfg = self.config("password_file = /nonexistent/pw;")
        e = self.assertRaises(
            SMTPSConfigurationError,
            ServerSettings.fromSection,
            cfg.section("smtps", "MSA"),
        )
        self.assertIn("smtps MSA", str(e))
        self.assertIn("/nonexistent/pw", str(e))
        empty = os.path.abspath(self.mktemp())
        with open(empty, "w"):
            pass
        cfg = self.config("", "tls { cert_file = %s; key_file = %s; }" % (empty, empty))
        e = self.assertRaises(
            SMTPSConfigurationError,
            ServerSettings.fromSection,
            cfg.section("smtps", "MSA"),
        )
        self.assertIn("cert_file " + empty, str(e))

    def test_services(self):
        """One listener per address; they listen when started."""
        cfg = self.config()
        reactor = MemoryReactorClock()
        services = smtpsServices(
            cfg,
            FakeQueueManager(),
            MemoryContentStore(),
            FakeAddressResolver(),
            reactor=reactor,
            log=Logger("smtps", sink=MemorySink()),
        )
        self.assertEqual(len(services), 3)
        for s in services:
            s.privilegedStartService()
            s.startService()
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(2525, "127.0.0.1"), (2525, "::1"), (2587, "0.0.0.0")],
        )
        self.assertIs(services[0].factory, services[1].factory)
        self.assertIsNot(services[0].factory.ids, services[2].factory.ids)
        cfg2 = configurationFromText(
            "smtps A { daemon_address = :1; } smtps B { daemon_address = :2; }",
            queueDirectory=self.mktemp(),
        )
        a, b = smtpsServices(cfg2, None, None, None, reactor)
        self.assertIs(a.factory.ids, b.factory.ids)
        self.assertEqual(
            len(smtpsServices(cfg, None, None, None, reactor, names=["MSA"])), 1
        )
