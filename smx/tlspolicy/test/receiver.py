# -*- test-case-name: smx.tlspolicy.test.test_integration_tlspolicy -*-
"""
Receivers for the integration tests of SMTPC's TLS policy: a small
Twisted ESMTP server on 127.0.0.1 that offers STARTTLS with a chosen
certificate (or not at all), REQUIRETLS after TLS when asked to, and
records every command with whether it came over TLS, and every message.

    pki = TestPKI()                        # a CA and certificates, trustme
    port, factory = listenReceiver(self, pki.context("good"))
    ... deliver to 127.0.0.1:port ...
    factory.messages                       # [(tls, mail command, lines)]
    clearMail(factory)                     # MAIL/RCPT/DATA sent in clear
"""

from __future__ import annotations

import datetime
import hashlib
import os
from typing import Any, Dict, List, Optional, Tuple

import trustme
from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet import protocol, reactor
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.protocols.basic import LineReceiver

from zope.interface import implementer

from smx.tlspolicy.dane import selectorData

#: the MX host name the good certificate is for
MX = "mx.example.com"


class TestPKI:
    """
    A test CA and the server certificates of the tests, made with
    trustme (nothing committed):

      - C{good}: for L{MX}, by the CA;
      - C{wrongname}: for C{other.example.net}, by the CA;
      - C{untrusted}: for L{MX}, by another CA;
      - C{expired}: for L{MX}, by the CA, expired in 2020.

    @ivar caFile: the CA certificate (PEM), for C{CAcert_file}.
    """

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.ca = trustme.CA(organization_name="smx tlspolicy test CA")
        self.other = trustme.CA(organization_name="smx stranger CA")
        self.caFile = os.path.join(directory, "ca.pem")
        self.ca.cert_pem.write_to_path(self.caFile)
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
        self.certs = {
            "good": self.ca.issue_cert(MX),
            "wrongname": self.ca.issue_cert("other.example.net"),
            "untrusted": self.other.issue_cert(MX),
            "expired": self.ca.issue_cert(
                MX, not_before=past, not_after=past + datetime.timedelta(days=30)
            ),
        }
        self.directory = directory

    @property
    def root(self) -> x509.Certificate:
        """The CA certificate."""
        return x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())

    def leaf(self, name: str) -> x509.Certificate:
        """The server certificate C{name}."""
        return x509.load_pem_x509_certificate(
            self.certs[name].cert_chain_pems[0].bytes()
        )

    def context(self, name: str, withRoot: bool = False) -> "ServerContext":
        """
        A server context with certificate C{name} (and the CA
        certificate in the chain it sends, for DANE-TA).
        """
        ctx = SSL.Context(SSL.TLS_METHOD)
        self.certs[name].configure_cert(ctx)
        if withRoot:
            ctx.add_extra_chain_cert(crypto.X509.from_cryptography(self.root))
        return ServerContext(ctx)

    def files(self, name: str, withRoot: bool = False) -> Tuple[str, str]:
        """
        The certificate chain and key of C{name} as PEM files (for
        Postfix).
        """
        chain = os.path.join(self.directory, name + ".pem")
        key = os.path.join(self.directory, name + ".key")
        with open(chain, "wb") as f:
            for blob in self.certs[name].cert_chain_pems:
                f.write(blob.bytes())
            if withRoot:
                f.write(self.ca.cert_pem.bytes())
        self.certs[name].private_key_pem.write_to_path(key)
        os.chmod(key, 0o600)
        return chain, key


def tlsaHex(cert: x509.Certificate, selector: int = 1, mtype: int = 1) -> str:
    """The association data of a TLSA record for C{cert}, in hex."""
    data = selectorData(cert, selector)
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    return data.hex()


@implementer(IOpenSSLContextFactory)
class ServerContext:
    """A context factory for C{startTLS}."""

    def __init__(self, ctx: SSL.Context) -> None:
        self.ctx = ctx

    def getContext(self) -> SSL.Context:
        return self.ctx


class Receiver(LineReceiver):
    """
    One ESMTP session of the receiver (see the module documentation).
    """

    delimiter = b"\r\n"
    MAX_LENGTH = 65536

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        self.tls = False
        self.data = None  # type: Optional[List[bytes]]
        self.mail = b""
        self.transport.write(b"220 receiver.test ESMTP\r\n")

    def lineReceived(self, line: bytes) -> None:
        factory = self.factory
        if self.data is not None:
            if line == b".":
                factory.messages.append((self.tls, self.mail, self.data))
                self.data = None
                self.sendLine(b"250 2.0.0 accepted")
            else:
                self.data.append(line)
            return
        factory.commands.append((self.tls, line))
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            caps = [b"receiver.test", b"PIPELINING"]
            if factory.context is not None and not self.tls:
                caps.append(b"STARTTLS")
            if factory.requiretls and self.tls:
                caps.append(b"REQUIRETLS")
            for cap in caps[:-1]:
                self.sendLine(b"250-" + cap)
            self.sendLine(b"250 " + caps[-1])
        elif verb == b"STARTTLS":
            if factory.context is None or self.tls:
                self.sendLine(b"502 5.5.1 no STARTTLS here")
                return
            self.sendLine(b"220 2.0.0 go ahead")
            self.transport.startTLS(factory.context)
            self.tls = True
        elif verb == b"MAIL":
            self.mail = line
            self.sendLine(b"250 2.1.0 ok")
        elif verb == b"DATA":
            self.data = []
            self.sendLine(b"354 go ahead")
        elif verb == b"QUIT":
            self.sendLine(b"221 2.0.0 bye")
            self.transport.loseConnection()
        else:
            self.sendLine(b"250 2.0.0 ok")


def listenReceiver(
    testCase: Any, context: Optional[ServerContext], requiretls: bool = False
) -> Tuple[int, Any]:
    """
    Start a receiver on 127.0.0.1 (stopped by a cleanup of C{testCase}).

    @param context: the TLS context of STARTTLS, or C{None}: STARTTLS is
        not offered.
    @param requiretls: offer REQUIRETLS after STARTTLS.
    @return: the port and the factory (C{messages}, C{commands},
        C{connections}).
    """
    factory = protocol.Factory.forProtocol(Receiver)
    factory.noisy = False
    factory.context = context  # type: ignore[attr-defined]
    factory.requiretls = requiretls  # type: ignore[attr-defined]
    factory.connections = []  # type: ignore[attr-defined]
    factory.messages = []  # type: ignore[attr-defined]
    factory.commands = []  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")

    def stop() -> Any:
        for c in factory.connections:  # type: ignore[attr-defined]
            c.transport.abortConnection()
        return port.stopListening()

    testCase.addCleanup(stop)
    return port.getHost().port, factory


def clearMail(factory: Any) -> List[bytes]:
    """The mail commands (MAIL, RCPT, DATA, BDAT) a receiver got in clear."""
    return [
        line
        for tls, line in factory.commands
        if not tls and line.split(b" ", 1)[0].upper() in (b"MAIL", b"RCPT", b"DATA")
    ]


def recordsOf(lines: List[str], func: str) -> List[Dict[str, str]]:
    """The log records with C{func=} C{func}, as dicts of their fields."""
    out = []
    for line in lines:
        if "func=%s" % (func,) not in line:
            continue
        fields = {}
        for part in line.split(", "):
            name, sep, value = part.partition("=")
            if sep:
                fields[name.strip()] = value
        out.append(fields)
    return out
