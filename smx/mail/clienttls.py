# -*- test-case-name: smx.mail.test.test_smtpc_integration -*-
"""
The TLS client side of SMTPC's STARTTLS (seed App. D): an
C{IOpenSSLClientConnectionCreator} that presents the configured client
certificate and accepts any server certificate (opportunistic TLS) while
recording whether the server's chain verified against the configured CAs.
"""

from __future__ import annotations

from typing import Any, Optional

from OpenSSL import SSL
from twisted.internet import interfaces
from zope.interface import implementer

from smx.mail.tls import TLSConfigurationError, makeContext


@implementer(interfaces.IOpenSSLClientConnectionCreator)
class ClientTLSCreator:
    """
    The TLS side of STARTTLS for SMTPC: presents the client certificate
    (if configured), sends SNI, and accepts any server certificate
    (opportunistic TLS) while recording whether it verified against the
    configured CAs.

    @ivar verified: did the last handshake's server chain verify?
    """

    def __init__(
        self,
        certFile: Optional[str] = None,
        keyFile: Optional[str] = None,
        caFile: Optional[str] = None,
        caPath: Optional[str] = None,
        where: str = "smtpc tls",
    ) -> None:
        """
        @param where: the section, for error messages.
        @raise ValueError: if a file cannot be loaded (a user mistake).
        """
        try:
            ctx = makeContext(SSL.TLS_CLIENT_METHOD, certFile, keyFile, caFile, caPath)
        except TLSConfigurationError as e:
            raise ValueError("%s: %s" % (where, e))
        self.verified = True
        ctx.set_verify(SSL.VERIFY_PEER, self._verify)
        self._context = ctx

    def _verify(self, connection: Any, x509: Any, errno: int, depth: int, ok: int):
        if not ok:
            self.verified = False
        return True

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        self.verified = True
        connection = SSL.Connection(self._context, None)
        connection.set_connect_state()
        return connection
