# -*- test-case-name: smx.mail.test.test_tls -*-
"""
TLS for SMTPS and SMTPC (seed §5.9 item 18, App. C.3, App. D): context
factories built from C{tls { cert_file; key_file; CAcert_file;
CAcert_path; }} with pyOpenSSL, the verification result of App. C.3
(C{OK}, C{NO}, C{NOT}, C{FAIL}) and the DN encoding of §5.9 18e used for
C{certissuer:} and C{certsubject:} access-map lookups.

A server with CA certificates requests a client certificate but never
fails the handshake because of it: the result is recorded and only
decides relaying (C{allow_relaying_if_verified}).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from OpenSSL import SSL, crypto
from twisted.internet import ssl

#: characters §5.9 18e replaces by "+XX" besides the non-printable ones
_SPECIAL = frozenset('<>()"+ ')


class TLSConfigurationError(Exception):
    """
    A certificate, key or CA file cannot be used; the message names the
    file and the reason (a user's mistake, reported without traceback).
    """


def encodeDN(text: str) -> str:
    """
    Encode a DN for an access-map key (seed §5.9 18e): every non-printable
    character and C{< > ( ) " + space} become C{+XX}.
    """
    out = []
    for byte in text.encode("utf-8"):
        c = chr(byte)
        if byte < 0x21 or byte > 0x7E or c in _SPECIAL:
            out.append("+%02X" % (byte,))
        else:
            out.append(c)
    return "".join(out)


def distinguishedName(name: Any) -> str:
    """
    The OpenSSL one-line form C{/C=US/O=Org/CN=Name/emailAddress=a@b} of an
    L{OpenSSL.crypto.X509Name}.
    """
    return "".join(
        "/%s=%s" % (key.decode("ascii", "replace"), value.decode("utf-8", "replace"))
        for key, value in name.get_components()
    )


def _verifyCallback(connection, certificate, errno, depth, ok) -> bool:
    if not ok:
        connection.smxVerifyFailed = True
    return True


class ServerContextFactory(ssl.ContextFactory):
    """
    The server side of STARTTLS.

    @ivar requestsCertificate: CA certificates are configured, so clients
        are asked for a certificate.
    """

    isClient = 0

    def __init__(
        self,
        certFile: str,
        keyFile: str,
        caFile: Optional[str] = None,
        caPath: Optional[str] = None,
    ) -> None:
        """
        @raise TLSConfigurationError: if a file cannot be loaded.
        """
        self.requestsCertificate = bool(caFile or caPath)
        self._context = makeContext(
            SSL.TLS_SERVER_METHOD, certFile, keyFile, caFile, caPath
        )
        if self.requestsCertificate:
            self._context.set_verify(SSL.VERIFY_PEER, _verifyCallback)
            if caFile:
                try:
                    self._context.set_client_ca_list(_loadCAs(caFile))
                except (OSError, crypto.Error, SSL.Error) as e:
                    raise TLSConfigurationError("CAcert_file %s: %s" % (caFile, e))
        self._context.set_session_id(b"smx-smtps")

    def getContext(self) -> SSL.Context:
        return self._context


def makeContext(method, certFile, keyFile, caFile, caPath) -> SSL.Context:
    """
    An OpenSSL context for either side of STARTTLS (SMTPS and SMTPC) from
    the C{tls} options: certificate chain, private key, CAs.

    @raise TLSConfigurationError: one line naming the option and file.
    """
    for option, path in [("cert_file", certFile), ("key_file", keyFile)]:
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as e:
                raise TLSConfigurationError("%s %s: %s" % (option, path, _why(e)))
    context = SSL.Context(method)
    context.set_options(SSL.OP_NO_SSLv2 | SSL.OP_NO_SSLv3 | SSL.OP_NO_COMPRESSION)
    if certFile:
        try:
            context.use_certificate_chain_file(certFile)
        except (OSError, SSL.Error) as e:
            raise TLSConfigurationError("cert_file %s: %s" % (certFile, _why(e)))
        try:
            context.use_privatekey_file(keyFile or certFile)
            context.check_privatekey()
        except (OSError, SSL.Error) as e:
            raise TLSConfigurationError("key_file %s: %s" % (keyFile, _why(e)))
    if caFile or caPath:
        try:
            context.load_verify_locations(
                caFile.encode() if caFile else None,
                caPath.encode() if caPath else None,
            )
        except (OSError, SSL.Error) as e:
            raise TLSConfigurationError(
                "CAcert_file %s / CAcert_path %s: %s" % (caFile, caPath, _why(e))
            )
    return context


def _loadCAs(caFile: str) -> list:
    with open(caFile, "rb") as f:
        data = f.read()
    names = []
    marker = b"-----END CERTIFICATE-----"
    for block in data.split(marker)[:-1]:
        cert = crypto.load_certificate(crypto.FILETYPE_PEM, block + marker)
        names.append(cert.get_subject())
    return names


def _why(error: Exception) -> str:
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error) or error.__class__.__name__


def tlsInfo(connection: Any, requested: bool) -> Dict[str, Any]:
    """
    What App. C.3 and C.2 show about an established TLS connection.

    @param connection: the L{OpenSSL.SSL.Connection}
        (C{transport.getHandle()}).
    @param requested: the server asked for a client certificate.
    @return: a C{dict} with C{"version"} (C{TLSv1.3}), C{"cipher"},
        C{"bits"}, C{"verify"} (C{OK}, C{NO}, C{NOT}, C{FAIL}),
        C{"issuer"} and C{"subject"} (encoded DNs, or C{None}).
    """
    peer = connection.get_peer_certificate()
    if not requested:
        verify = "NOT"
    elif peer is None:
        verify = "NO"
    elif getattr(connection, "smxVerifyFailed", False):
        verify = "FAIL"
    else:
        verify = "OK"
    issuer = subject = None
    if peer is not None:
        issuer = encodeDN(distinguishedName(peer.get_issuer()))
        subject = encodeDN(distinguishedName(peer.get_subject()))
    return {
        "version": connection.get_protocol_version_name(),
        "cipher": connection.get_cipher_name(),
        "bits": connection.get_cipher_bits(),
        "verify": verify,
        "issuer": issuer,
        "subject": subject,
    }
