# -*- test-case-name: smx.mail.test.test_smtpc_integration,smx.tlspolicy.test.test_integration_tlspolicy -*-
"""
The TLS client side of SMTPC's STARTTLS (seed App. D, doc/tls.md):
L{ClientTLSCreator} holds the one OpenSSL context of an C{smtpc} section
(client certificate, CAs, lowest protocol version, ciphers) and makes a
L{ClientTLSSession} for each connection, which sends the MX host name as
SNI and records what the handshake showed: OpenSSL's first error
verifying the server's chain against the CAs (C{tls { CAcert_file;
CAcert_path }}, else the system's) and the chain itself.  Whether that
is good enough is the session's TLS policy's business
(L{smx.tlspolicy.destination.SessionPolicy.check}): the handshake itself
never fails on a certificate, so that C{may} still encrypts.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from OpenSSL import SSL
from twisted.internet import interfaces
from zope.interface import implementer

from smx.mail.tls import TLSConfigurationError, makeContext
from smx.net import isIPAddress

#: C{tls_min_protocol} -> the OpenSSL version constant
PROTOCOL_VERSIONS = {
    "TLSv1": SSL.TLS1_VERSION,
    "TLSv1.1": SSL.TLS1_1_VERSION,
    "TLSv1.2": SSL.TLS1_2_VERSION,
    "TLSv1.3": SSL.TLS1_3_VERSION,
}


#: the texts of the usual OpenSSL verification errors (X509_V_ERR_*)
VERIFY_ERRORS = {
    2: "unable to get issuer certificate",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
}


def _verifyCallback(connection: Any, x509: Any, errno: int, depth: int, ok: int):
    session = getattr(connection, "smxClientSession", None)
    if not ok and session is not None and session.verifyError is None:
        text = VERIFY_ERRORS.get(errno, "certificate verify error %d" % (errno,))
        session.verifyError = (errno, depth, text)
    return True


@implementer(interfaces.IOpenSSLClientConnectionCreator)
class ClientTLSCreator:
    """
    The TLS side of STARTTLS for SMTPC: presents the client certificate
    (if configured) and accepts any server certificate at the handshake,
    recording whether it verified against the CAs.

    @ivar verified: did the last handshake's server chain verify (of a
        connection made with L{clientConnectionForTLS} directly)?
    """

    def __init__(
        self,
        certFile: Optional[str] = None,
        keyFile: Optional[str] = None,
        caFile: Optional[str] = None,
        caPath: Optional[str] = None,
        where: str = "smtpc tls",
        minProtocol: str = "TLSv1.2",
        ciphers: Optional[str] = None,
    ) -> None:
        """
        @param caFile: the CAs of verified levels; without C{caFile} and
            C{caPath}, the system's.
        @param where: the section, for error messages.
        @param minProtocol: C{tls_min_protocol}.
        @param ciphers: C{tls_ciphers} (an OpenSSL cipher list).
        @raise ValueError: if a file cannot be loaded (a user mistake).
        """
        try:
            ctx = makeContext(SSL.TLS_CLIENT_METHOD, certFile, keyFile, caFile, caPath)
        except TLSConfigurationError as e:
            raise ValueError("%s: %s" % (where, e))
        if not caFile and not caPath:
            ctx.set_default_verify_paths()
        try:
            ctx.set_min_proto_version(PROTOCOL_VERSIONS[minProtocol])
        except KeyError:
            raise ValueError("%s: unknown tls_min_protocol %r" % (where, minProtocol))
        if ciphers:
            try:
                ctx.set_cipher_list(ciphers.encode("ascii"))
            except (SSL.Error, UnicodeError) as e:
                raise ValueError("%s: tls_ciphers %r: %s" % (where, ciphers, e))
        ctx.set_verify(SSL.VERIFY_PEER, _verifyCallback)
        self._context = ctx
        self._last = None  # type: Optional[ClientTLSSession]

    @property
    def verified(self) -> bool:
        return self._last is None or self._last.verified

    def forSession(self, serverName: Optional[str] = None) -> "ClientTLSSession":
        """
        The TLS side of one connection.

        @param serverName: the MX host name, sent as SNI (not for an IP
            address).
        """
        return ClientTLSSession(self._context, serverName)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        self._last = self.forSession()
        return self._last.clientConnectionForTLS(tlsProtocol)


@implementer(interfaces.IOpenSSLClientConnectionCreator)
class ClientTLSSession:
    """
    The TLS side of one SMTPC connection.

    @ivar serverName: the SNI name, or C{None}.
    @ivar verifyError: C{(errno, depth, text)} of the first error
        verifying the server's chain, or C{None}.
    @ivar connection: the C{SSL.Connection}, once made.
    """

    def __init__(self, context: SSL.Context, serverName: Optional[str]) -> None:
        self._context = context
        self.serverName = serverName
        self.verifyError = None  # type: Optional[Tuple[int, int, str]]
        self.connection = None  # type: Optional[SSL.Connection]

    @property
    def verified(self) -> bool:
        """Did the server's chain verify against the CAs?"""
        return self.verifyError is None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        self.verifyError = None
        connection = SSL.Connection(self._context, None)
        connection.smxClientSession = self  # type: ignore[attr-defined]
        name = self.serverName
        if name and not isIPAddress(name):
            try:
                connection.set_tlsext_host_name(name.encode("idna"))
            except UnicodeError:
                pass
        connection.set_connect_state()
        self.connection = connection
        return connection

    def peerChain(self) -> List[Any]:
        """
        The server's certificates (C{cryptography} objects), its own
        first; empty if it sent none.
        """
        if self.connection is None:
            return []
        chain = self.connection.get_peer_cert_chain(as_cryptography=True)
        if chain:
            return list(chain)
        leaf = self.connection.get_peer_certificate(as_cryptography=True)
        return [leaf] if leaf is not None else []

    def describe(self) -> Tuple[Optional[str], Optional[str]]:
        """The protocol version and cipher of the session."""
        if self.connection is None:
            return None, None
        return (
            self.connection.get_protocol_version_name(),
            self.connection.get_cipher_name(),
        )
