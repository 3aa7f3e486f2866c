# -*- test-case-name: smx.mail.test.test_tls -*-
"""
TLS for SMTPS and SMTPC (seed §5.9 item 18, App. C.3, App. D): context
factories built from C{tls { cert_file; key_file; CAcert_file;
CAcert_path; }} with pyOpenSSL, the verification result of App. C.3
(C{OK}, C{NO}, C{NOT}, C{FAIL}) and the DN encoding of §5.9 18e used for
C{certissuer:} and C{certsubject:} access-map lookups.

The server's L{ServerContextFactory} holds a default certificate and
more chosen by the client's server name (SNI), accepts TLS 1.2 and newer
unless told otherwise (C{min_protocol}), and reloads its files for new
sessions (L{ServerContextFactory.reload}: SIGUSR1, C{smx qmgrctl
reload}) without touching the sessions in progress.

A server with CA certificates requests a client certificate but never
fails the handshake because of it: the result is recorded and only
decides relaying (C{allow_relaying_if_verified}).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

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


#: C{min_protocol} values -> OpenSSL's version constants
TLS_VERSIONS = {
    "TLSv1": SSL.TLS1_VERSION,
    "TLSv1.1": SSL.TLS1_1_VERSION,
    "TLSv1.2": SSL.TLS1_2_VERSION,
    "TLSv1.3": SSL.TLS1_3_VERSION,
}


@dataclasses.dataclass(frozen=True)
class ServerCertificate:
    """
    One certificate of the server and the names it is chosen for (SNI).

    @ivar certFile: the certificate chain, PEM.
    @ivar keyFile: its private key, PEM.
    @ivar names: the server names (RFC 6066 C{server_name}) it serves;
        C{*.example.org} matches one label; empty: the DNS names of the
        certificate (subjectAltName, else its CN).
    """

    certFile: str
    keyFile: str
    names: Tuple[str, ...] = ()


class ServerContextFactory(ssl.ContextFactory):
    """
    The server side of STARTTLS: the default certificate and those chosen
    by the client's server name (SNI, RFC 6066 §3), all reloadable.

    Every session takes the context current when its STARTTLS begins;
    L{reload} builds new contexts from the files and puts them in place
    only when all of them load, so sessions in progress keep theirs and a
    broken renewal changes nothing.

    @ivar requestsCertificate: CA certificates are configured, so clients
        are asked for a certificate.
    @ivar serverNames: lower-case server name (or C{*.domain}) -> the
        L{ServerCertificate} chosen for it (the default is not listed).
    """

    isClient = 0

    def __init__(
        self,
        certFile: str,
        keyFile: str,
        caFile: Optional[str] = None,
        caPath: Optional[str] = None,
        certificates: Sequence[ServerCertificate] = (),
        minimumVersion: str = "TLSv1.2",
    ) -> None:
        """
        @param certificates: more certificates, chosen by server name.
        @param minimumVersion: a key of L{TLS_VERSIONS}.
        @raise TLSConfigurationError: if a file cannot be loaded.
        """
        self.requestsCertificate = bool(caFile or caPath)
        self.default = ServerCertificate(certFile, keyFile)
        self.certificates = tuple(certificates)
        self._caFile = caFile
        self._caPath = caPath
        self._minimumVersion = TLS_VERSIONS[minimumVersion]
        self._context, self.serverNames = self._build()

    def _serverContext(self, certificate: ServerCertificate) -> SSL.Context:
        context = makeContext(
            SSL.TLS_SERVER_METHOD,
            certificate.certFile,
            certificate.keyFile,
            self._caFile,
            self._caPath,
        )
        context.set_min_proto_version(self._minimumVersion)
        if self.requestsCertificate:
            context.set_verify(SSL.VERIFY_PEER, _verifyCallback)
            if self._caFile:
                try:
                    context.set_client_ca_list(_loadCAs(self._caFile))
                except (OSError, crypto.Error, SSL.Error) as e:
                    raise TLSConfigurationError(
                        "CAcert_file %s: %s" % (self._caFile, _why(e))
                    )
        context.set_session_id(b"smx-smtps")
        return context

    def _build(self) -> Tuple[SSL.Context, Dict[str, ServerCertificate]]:
        """
        Load every certificate and key.

        @return: the default context (which chooses the others by server
            name) and the server names.
        @raise TLSConfigurationError: a file cannot be used.
        """
        default = self._serverContext(self.default)
        contexts = {}  # type: Dict[str, SSL.Context]
        names = {}  # type: Dict[str, ServerCertificate]
        for certificate in self.certificates:
            context = self._serverContext(certificate)
            for name in certificate.names or certificateNames(certificate.certFile):
                name = name.lower().rstrip(".")
                if name not in contexts:
                    contexts[name] = context
                    names[name] = certificate
        if contexts:
            default.set_tlsext_servername_callback(_serverNameCallback(contexts))
        return default, names

    def reload(self) -> None:
        """
        Read every certificate and key file again; new sessions use them.

        @raise TLSConfigurationError: a file cannot be used: nothing
            changed.
        """
        self._context, self.serverNames = self._build()

    def getContext(self) -> SSL.Context:
        return self._context


def _serverNameCallback(contexts: Mapping[str, SSL.Context]) -> Any:
    """
    The SNI callback of a default context: switch the connection to the
    context of the name the client asked for, if there is one.
    """

    def _cbServerName(connection: SSL.Connection) -> None:
        name = connection.get_servername()
        if not name:
            return
        context = matchServerName(contexts, name.decode("ascii", "replace"))
        if context is not None:
            connection.set_context(context)

    return _cbServerName


def matchServerName(table: Mapping[str, Any], name: str) -> Any:
    """
    The entry of C{table} for server name C{name}: its own, else that of
    C{*.} and its parent domain (one label, RFC 6125 §6.4.3); C{None}
    when there is neither.
    """
    name = name.lower().rstrip(".")
    found = table.get(name)
    if found is None and "." in name:
        found = table.get("*." + name.split(".", 1)[1])
    return found


def certificateNames(certFile: str) -> List[str]:
    """
    The DNS names of the first certificate in C{certFile}: its
    subjectAltName DNS entries, else its common name.

    @raise TLSConfigurationError: the file holds no certificate.
    """
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        with open(certFile, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as e:
        raise TLSConfigurationError("cert_file %s: %s" % (certFile, _why(e)))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [
            str(a.value)
            for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    return names


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
            why = _why(e)
            if "mismatch" in why:
                why = " does not belong to the certificate in cert_file %s (%s)" % (
                    certFile,
                    why,
                )
            else:
                why = ": " + why
            raise TLSConfigurationError("key_file %s%s" % (keyFile, why))
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
    """One line for an OpenSSL or OS error: OpenSSL's reasons only."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    if isinstance(error, (SSL.Error, crypto.Error)) and error.args:
        reasons = [
            str(item[2])
            for item in error.args[0]
            if isinstance(item, tuple) and item[2:] and item[2]
        ]
        if reasons:
            return "; ".join(reasons)
    return str(error) or error.__class__.__name__


def tlsInfo(connection: Any, requested: bool) -> Dict[str, Any]:
    """
    What App. C.3 and C.2 show about an established TLS connection.

    @param connection: the L{OpenSSL.SSL.Connection}
        (C{transport.getHandle()}).
    @param requested: the server asked for a client certificate.
    @return: a C{dict} with C{"version"} (C{TLSv1.3}), C{"cipher"},
        C{"bits"}, C{"verify"} (C{OK}, C{NO}, C{NOT}, C{FAIL}),
        C{"issuer"} and C{"subject"} (encoded DNs, or C{None}), and
        C{"servername"}, the name the client asked for (SNI), or C{None}.
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
    servername = connection.get_servername()
    return {
        "servername": servername.decode("ascii", "replace") if servername else None,
        "version": connection.get_protocol_version_name(),
        "cipher": connection.get_cipher_name(),
        "bits": connection.get_cipher_bits(),
        "verify": verify,
        "issuer": issuer,
        "subject": subject,
    }
