# -*- test-case-name: smx.mail.test.test_tls -*-
"""
Test certificates made at run time (never committed private keys): a CA,
a server certificate for C{localhost}/C{127.0.0.1}/C{::1}, and a client
certificate, written as PEM files into a directory.

    certs = makeCertificates(self.mktemp())
    certs.caFile, certs.serverCert, certs.serverKey,
    certs.clientCert, certs.clientKey, certs.otherCaFile,
    certs.strangerCert, certs.strangerKey  (a client cert from another CA)
"""

from __future__ import annotations

import os
from typing import Any, Tuple

import trustme


class Certificates:
    """Paths of the PEM files L{makeCertificates} wrote, plus the CAs."""

    ca = None  # type: Any
    otherCa = None  # type: Any
    directory = ""
    caFile = ""
    otherCaFile = ""
    serverCert = ""
    serverKey = ""
    clientCert = ""
    clientKey = ""
    strangerCert = ""
    strangerKey = ""


def makeCertificates(directory: str) -> Certificates:
    """
    Make a CA with a server and a client certificate, and a second CA
    with a "stranger" client certificate.

    @param directory: created if missing.
    """
    os.makedirs(directory, exist_ok=True)
    certs = Certificates()
    certs.directory = directory
    ca = trustme.CA(organization_name="smx test CA")
    other = trustme.CA(organization_name="smx other CA")
    certs.ca = ca
    certs.otherCa = other

    def write(name: str, blob: Any) -> str:
        path = os.path.join(directory, name)
        blob.write_to_path(path)
        if name.endswith(".key"):
            # smx refuses a private key everybody may read (seed §9.2)
            os.chmod(path, 0o600)
        return path

    certs.caFile = write("ca.pem", ca.cert_pem)
    certs.otherCaFile = write("other-ca.pem", other.cert_pem)
    server = ca.issue_cert("localhost", "127.0.0.1", "::1", common_name="localhost")
    certs.serverCert = os.path.join(directory, "server.pem")
    with open(certs.serverCert, "wb") as f:
        for blob in server.cert_chain_pems:
            f.write(blob.bytes())
    certs.serverKey = write("server.key", server.private_key_pem)
    client = ca.issue_cert(
        "client@smx.test", common_name="Client (Test) one", organization_name="smx"
    )
    certs.clientCert = write("client.pem", client.cert_chain_pems[0])
    certs.clientKey = write("client.key", client.private_key_pem)
    stranger = other.issue_cert("stranger@smx.test", common_name="stranger")
    certs.strangerCert = write("stranger.pem", stranger.cert_chain_pems[0])
    certs.strangerKey = write("stranger.key", stranger.private_key_pem)
    return certs


def issueCertificate(
    ca: Any, directory: str, name: str, *hostnames: str, **kw: Any
) -> Tuple[str, str]:
    """
    Write a certificate of C{ca} (a C{trustme.CA}) for C{hostnames}, with
    the common name C{name}, as C{directory/name.pem} (with its chain)
    and its key as C{directory/name.key} (mode 0600).

    @param kw: more arguments of C{trustme.CA.issue_cert} (C{not_after}).
    @return: the certificate and key file names.
    """
    os.makedirs(directory, exist_ok=True)
    leaf = ca.issue_cert(*hostnames, common_name=name, **kw)
    cert = os.path.join(directory, name + ".pem")
    key = os.path.join(directory, name + ".key")
    with open(cert, "wb") as f:
        for blob in leaf.cert_chain_pems:
            f.write(blob.bytes())
    leaf.private_key_pem.write_to_path(key)
    os.chmod(key, 0o600)
    return cert, key
