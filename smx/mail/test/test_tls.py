# -*- test-case-name: smx.mail.test.test_tls -*-
"""
Tests for L{smx.mail.tls}: context factories and the DN encoding.
"""

from OpenSSL import SSL
from twisted.trial import unittest

from smx.mail.tls import (
    ServerContextFactory,
    TLSConfigurationError,
    encodeDN,
    makeContext,
    tlsInfo,
)
from smx.test.certs import makeCertificates


class EncodeDNTests(unittest.TestCase):
    """L{encodeDN} (seed §5.9 18e)."""

    def test_seedExample(self):
        """The example of the seed README."""
        self.assertEqual(
            encodeDN(
                "/C=US/ST=California/O=endmail.org/OU=private/CN="
                "Darth Mail (Cert)/emailAddress=darth+cert@endmail.org"
            ),
            "/C=US/ST=California/O=endmail.org/OU=private/CN="
            "Darth+20Mail+20+28Cert+29/emailAddress=darth+2Bcert@endmail.org",
        )

    def test_controls(self):
        """Control characters, <, > and quotes are encoded; UTF-8 bytewise."""
        self.assertEqual(encodeDN('a<b>"\n\xe9'), "a+3Cb+3E+22+0A+C3+A9")


class ContextFactoryTests(unittest.TestCase):
    """L{ServerContextFactory} and L{ClientContextFactory}."""

    def setUp(self):
        self.certs = makeCertificates(self.mktemp())

    def test_server(self):
        """A server context with CAs requests client certificates."""
        f = ServerContextFactory(
            self.certs.serverCert, self.certs.serverKey, self.certs.caFile
        )
        self.assertTrue(f.requestsCertificate)
        self.assertEqual(f.getContext().get_verify_mode(), SSL.VERIFY_PEER)
        f = ServerContextFactory(self.certs.serverCert, self.certs.serverKey)
        self.assertFalse(f.requestsCertificate)

    def test_missingFiles(self):
        """Unreadable or mismatched files raise a clear error naming them."""
        e = self.assertRaises(
            TLSConfigurationError, ServerContextFactory, "/nonexistent.pem", "k"
        )
        self.assertIn("cert_file /nonexistent.pem", str(e))
        e = self.assertRaises(
            TLSConfigurationError,
            ServerContextFactory,
            self.certs.serverCert,
            self.certs.clientKey,
        )
        self.assertIn("key_file", str(e))

    def test_clientContext(self):
        """A client context can present a certificate (SMTPC)."""
        context = makeContext(
            SSL.TLS_CLIENT_METHOD,
            self.certs.clientCert,
            self.certs.clientKey,
            self.certs.caFile,
            None,
        )
        self.assertIsInstance(context, SSL.Context)

    def test_tlsInfoNotRequested(self):
        """Without CAs the result is NOT."""

        class FakeConnection:
            def get_peer_certificate(self):
                return None

            def get_protocol_version_name(self):
                return "TLSv1.3"

            def get_cipher_name(self):
                return "TLS_AES_256_GCM_SHA384"

            def get_cipher_bits(self):
                return 256

        info = tlsInfo(FakeConnection(), False)
        self.assertEqual(
            (info["version"], info["bits"], info["verify"]), ("TLSv1.3", 256, "NOT")
        )
        self.assertEqual(tlsInfo(FakeConnection(), True)["verify"], "NO")
