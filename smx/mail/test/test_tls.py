# -*- test-case-name: smx.mail.test.test_tls -*-
"""
Tests for L{smx.mail.tls}: context factories, the certificates chosen
by server name (SNI) and their reload, and the DN encoding.
"""

import os

import trustme
from OpenSSL import SSL
from twisted.trial import unittest

from smx.mail.tls import (
    ServerCertificate,
    ServerContextFactory,
    TLSConfigurationError,
    certificateNames,
    encodeDN,
    makeContext,
    tlsInfo,
)
from smx.test.certs import issueCertificate as issue
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

            def get_servername(self):
                return None

        info = tlsInfo(FakeConnection(), False)
        self.assertEqual(
            (info["version"], info["bits"], info["verify"]), ("TLSv1.3", 256, "NOT")
        )
        self.assertEqual(tlsInfo(FakeConnection(), True)["verify"], "NO")


def handshake(serverContext, serverName=None, clientMax=None, clientCert=None):
    """
    A TLS handshake in memory between a server with C{serverContext} and
    a client that asks for C{serverName} (SNI).

    @param clientCert: C{(certificate file, key file)} the client
        presents, or C{None}.
    @return: the client and server L{SSL.Connection}s, connected.
    @raise SSL.Error: the handshake failed.
    """
    clientContext = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if clientMax is not None:
        clientContext.set_max_proto_version(clientMax)
    if clientCert is not None:
        clientContext.use_certificate_file(clientCert[0])
        clientContext.use_privatekey_file(clientCert[1])
    client = SSL.Connection(clientContext, None)
    client.set_connect_state()
    if serverName is not None:
        client.set_tlsext_host_name(serverName.encode("ascii"))
    server = SSL.Connection(serverContext, None)
    server.set_accept_state()
    pump(client, server, handshake=True)
    return client, server


def pump(client, server, handshake=False):
    """Move bytes both ways until nothing moves (and the handshake is done)."""
    for _ in range(20):
        moved = False
        for conn in (client, server):
            if handshake:
                try:
                    conn.do_handshake()
                except SSL.WantReadError:
                    pass
        for a, b in ((client, server), (server, client)):
            try:
                data = a.bio_read(65536)
            except SSL.WantReadError:
                continue
            if data:
                b.bio_write(data)
                moved = True
        if not moved and (
            not handshake
            or (client.get_protocol_version() and server.get_protocol_version())
        ):
            break


def commonName(connection):
    """The CN of the certificate the server presented."""
    return connection.get_peer_certificate().get_subject().CN


class ServerNameTests(unittest.TestCase):
    """
    L{ServerContextFactory} chooses among several certificates by the
    client's server name (SNI), real handshakes in memory.
    """

    def setUp(self):
        self.directory = self.mktemp()
        self.ca = trustme.CA()
        self.default = issue(self.ca, self.directory, "default", "mx.test")
        self.mx2 = issue(self.ca, self.directory, "mx2", "mx2.test", "alt.test")
        self.wild = issue(self.ca, self.directory, "wild", "*.wild.test")

    def factory(self, **kw):
        return ServerContextFactory(
            *self.default,
            certificates=[
                ServerCertificate(*self.mx2),
                ServerCertificate(*self.wild),
                ServerCertificate(*self.mx2, names=("named.test",)),
            ],
            **kw,
        )

    def test_chosenByName(self):
        """
        A name of a certificate's subjectAltName chooses it; a wildcard
        matches one label; C{names} given override the certificate's.
        """
        context = self.factory().getContext()
        for name, expected in [
            ("mx2.test", "mx2"),
            ("ALT.test.", "mx2"),
            ("a.wild.test", "wild"),
            ("named.test", "mx2"),
            ("mx.test", "default"),
        ]:
            client, server = handshake(context, name)
            self.assertEqual(commonName(client), expected, name)

    def test_default(self):
        """
        No server name, an unknown one, or one a wildcard matches only
        across two labels: the default certificate.
        """
        context = self.factory().getContext()
        for name in [None, "unknown.test", "a.b.wild.test", "wild.test"]:
            client, _ = handshake(context, name)
            self.assertEqual(commonName(client), "default", name)

    def test_serverNames(self):
        """L{ServerContextFactory.serverNames} lists the names served."""
        self.assertEqual(
            sorted(self.factory().serverNames),
            ["*.wild.test", "alt.test", "mx2.test", "named.test"],
        )

    def test_minimumVersion(self):
        """
        TLS 1.2 and newer by default; C{minimumVersion} raises the floor.
        """
        client, _ = handshake(self.factory().getContext(), clientMax=SSL.TLS1_2_VERSION)
        self.assertEqual(client.get_protocol_version_name(), "TLSv1.2")
        self.assertRaises(
            SSL.Error,
            handshake,
            self.factory(minimumVersion="TLSv1.3").getContext(),
            clientMax=SSL.TLS1_2_VERSION,
        )

    def test_tlsInfoServerName(self):
        """L{tlsInfo} says which server name the client asked for."""
        _, server = handshake(self.factory().getContext(), "mx2.test")
        self.assertEqual(tlsInfo(server, False)["servername"], "mx2.test")
        _, server = handshake(self.factory().getContext())
        self.assertIsNone(tlsInfo(server, False)["servername"])

    def test_clientCertificates(self):
        """
        With CA certificates, a certificate chosen by server name asks
        for the client's certificate and verifies it as the default one
        does (C{allow_relaying_if_verified} and C{certissuer:} work with
        SNI too): one from the CA is C{OK}, one from another CA C{FAIL}.
        """
        certs = makeCertificates(self.mktemp())
        factory = ServerContextFactory(
            *self.default,
            caFile=certs.caFile,
            certificates=[ServerCertificate(*self.mx2)],
        )
        for clientCert, verify in [
            ((certs.clientCert, certs.clientKey), "OK"),
            ((certs.strangerCert, certs.strangerKey), "FAIL"),
        ]:
            client, server = handshake(
                factory.getContext(), "mx2.test", clientCert=clientCert
            )
            self.assertEqual(commonName(client), "mx2")
            info = tlsInfo(server, factory.requestsCertificate)
            self.assertEqual(info["verify"], verify)

    def test_certificateNames(self):
        """
        The DNS names of a certificate's subjectAltName, else its CN; a
        file without a certificate is a L{TLSConfigurationError}.
        """
        self.assertEqual(certificateNames(self.mx2[0]), ["mx2.test", "alt.test"])
        e = self.assertRaises(TLSConfigurationError, certificateNames, self.mx2[1])
        self.assertIn("cert_file %s" % (self.mx2[1],), str(e))


class ReloadTests(unittest.TestCase):
    """
    L{ServerContextFactory.reload}: renewed files for new sessions, the
    sessions in progress untouched, a broken renewal changes nothing.
    """

    def setUp(self):
        self.directory = self.mktemp()
        self.ca = trustme.CA()
        self.cert, self.key = issue(self.ca, self.directory, "mx", "mx.test")
        self.factory = ServerContextFactory(self.cert, self.key)

    def renew(self, name):
        """Replace the files with a new certificate (CN C{name})."""
        cert, key = issue(self.ca, self.directory, name, "mx.test")
        os.rename(cert, self.cert)
        os.rename(key, self.key)

    def test_newSessions(self):
        """
        After a reload new sessions get the renewed certificate; one
        established before goes on with the old one and still carries
        data both ways.
        """
        oldClient, oldServer = handshake(self.factory.getContext())
        self.renew("renewed")
        self.factory.reload()
        client, _ = handshake(self.factory.getContext())
        self.assertEqual(commonName(client), "renewed")
        oldClient.send(b"MAIL FROM:<a@b.test>\r\n")
        pump(oldClient, oldServer)
        self.assertEqual(oldServer.recv(100), b"MAIL FROM:<a@b.test>\r\n")
        oldServer.send(b"250 ok\r\n")
        pump(oldClient, oldServer)
        self.assertEqual(oldClient.recv(100), b"250 ok\r\n")
        self.assertEqual(commonName(oldClient), "mx")

    def test_failedReload(self):
        """
        A key that does not belong to the certificate, or a missing file:
        L{TLSConfigurationError}, and the old certificate stays.
        """
        other = issue(self.ca, self.directory, "other", "other.test")
        os.rename(other[1], self.key)
        e = self.assertRaises(TLSConfigurationError, self.factory.reload)
        self.assertEqual(
            str(e),
            "key_file %s does not belong to the certificate in cert_file %s "
            "(key values mismatch)" % (self.key, self.cert),
        )
        os.remove(self.cert)
        e = self.assertRaises(TLSConfigurationError, self.factory.reload)
        self.assertIn("cert_file %s" % (self.cert,), str(e))
        client, _ = handshake(self.factory.getContext())
        self.assertEqual(commonName(client), "mx")

    def test_serverNamesReloaded(self):
        """The SNI certificates are read again too."""
        mx2 = issue(self.ca, self.directory, "mx2", "mx2.test")
        factory = ServerContextFactory(
            self.cert, self.key, certificates=[ServerCertificate(*mx2)]
        )
        renewed = issue(self.ca, self.directory, "mx2new", "mx2.test", "mx3.test")
        os.rename(renewed[0], mx2[0])
        os.rename(renewed[1], mx2[1])
        factory.reload()
        client, _ = handshake(factory.getContext(), "mx3.test")
        self.assertEqual(commonName(client), "mx2new")
