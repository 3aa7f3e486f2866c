# -*- test-case-name: smx.tlspolicy.test.test_matching,smx.tlspolicy.test.test_integration_tlspolicy -*-
"""
NAME
    smx.tlspolicy.dane - DANE for SMTP (RFC 7672, RFC 7671, RFC 6698)

SYNOPSIS
    found = await tlsaForHost(dns, "mx.example.com")   # TLSAResult
    failure = matchTLSA(found.usable, chain, ["mx.example.com", "example.com"])

DESCRIPTION
    The TLSA records of an MX host are those of C{_25._tcp.<host>},
    looked up through smx's resolver (L{smx.maps.dns.DNSResolver.
    lookupTLSA}, which asks with the AD and DO bits).  They count only
    when the resolver says they are DNSSEC-validated (the AD bit, RFC
    7672 section 2.2); records without it are as good as none.

    Usable records (RFC 7672 section 3.1): certificate usages
    C{DANE-TA(2)} and C{DANE-EE(3)}, selectors C{Cert(0)} and
    C{SPKI(1)}, matching types C{Full(0)}, C{SHA2-256(1)} and
    C{SHA2-512(2)}.  C{PKIX-TA(0)} and C{PKIX-EE(1)} are not usable for
    SMTP.  A host whose secure TLSA records are all unusable gets
    mandatory TLS without authentication (RFC 7672 section 2.2).

    Matching (RFC 7671 section 5):

      - C{3 x x}: the server's own certificate (or its public key)
        matches; neither its names nor its dates are checked;
      - C{2 x x}: a certificate of the chain the server sent matches and
        is the trust anchor the server certificate is verified with
        (dates, key usage, names: the MX host name or the next-hop
        domain, RFC 7672 section 3.2.2).

CONFIGURATION PARAMETERS
    smtpc { tls_security_level = dane | dane-only; tls_policy_map }
    smar { nameserver }: must be a validating resolver.

SECURITY
    smx checks no DNSSEC signatures: the AD bit is trusted, so the
    resolver must be one the host trusts over a path it trusts (a local
    validating resolver such as unbound on 127.0.0.1).
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smx.maps.errors import DNSPermanentError

__all__ = [
    "PolicyFailure",
    "TLSARecord",
    "TLSAResult",
    "matchTLSA",
    "selectorData",
    "tlsaForHost",
]

#: the port of the TLSA base domain of SMTP (RFC 7672 section 2.2.1)
SMTP_PORT = 25


class PolicyFailure(NamedTuple):
    """
    A TLS policy not met.

    @ivar resultType: the RFC 8460 result type
        (L{smx.tlspolicy.policy.RESULT_TYPES}).
    @ivar reason: what was wrong, for the log and the reply.
    """

    resultType: str
    reason: str


class TLSARecord(NamedTuple):
    """
    One TLSA record (RFC 6698 section 2.1).
    """

    usage: int
    selector: int
    mtype: int
    data: bytes

    @classmethod
    def fromWire(cls, rdata: bytes) -> "TLSARecord":
        """
        @raise ValueError: if C{rdata} is shorter than the three fields.
        """
        if len(rdata) < 4:
            raise ValueError("TLSA record of %d octets" % (len(rdata),))
        return cls(rdata[0], rdata[1], rdata[2], bytes(rdata[3:]))

    @property
    def usable(self) -> bool:
        """Can SMTP use it (RFC 7672 section 3.1)?"""
        if self.usage not in (2, 3) or self.selector not in (0, 1):
            return False
        lengths = {0: None, 1: 32, 2: 64}
        if self.mtype not in lengths:
            return False
        length = lengths[self.mtype]
        return length is None or len(self.data) == length

    def matches(self, certificate: x509.Certificate) -> bool:
        """Does C{certificate} match this record's selector and data?"""
        data = selectorData(certificate, self.selector)
        if self.mtype == 1:
            data = hashlib.sha256(data).digest()
        elif self.mtype == 2:
            data = hashlib.sha512(data).digest()
        return data == self.data

    def __str__(self) -> str:
        return "%d %d %d %s" % (self.usage, self.selector, self.mtype, self.data.hex())


class TLSAResult(NamedTuple):
    """
    What DNS says about the TLSA records of one MX host.

    @ivar secure: the answer was DNSSEC-validated (AD).
    @ivar records: every record of the answer.
    """

    secure: bool
    records: Tuple[TLSARecord, ...]

    @property
    def usable(self) -> Tuple[TLSARecord, ...]:
        """The usable records of a secure answer."""
        if not self.secure:
            return ()
        return tuple(r for r in self.records if r.usable)


def selectorData(certificate: x509.Certificate, selector: int) -> bytes:
    """The DER of the certificate (0) or of its SubjectPublicKeyInfo (1)."""
    if selector == 0:
        return certificate.public_bytes(serialization.Encoding.DER)
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )


async def tlsaForHost(dns: Any, host: str, port: int = SMTP_PORT) -> TLSAResult:
    """
    The TLSA records of C{_<port>._tcp.<host>}.

    @param dns: an L{smx.maps.dns.DNSResolver}.
    @raise smx.maps.errors.DNSTemporaryError: the lookup failed (the
        host must not be used without them, RFC 7672 section 2.2).
    """
    name = "_%d._tcp.%s" % (port, host.lower().rstrip("."))
    try:
        rdatas, secure = await dns.lookupTLSA(name)
    except DNSPermanentError:
        return TLSAResult(False, ())
    records = []
    for rdata in rdatas:
        try:
            records.append(TLSARecord.fromWire(rdata))
        except ValueError:
            continue
    return TLSAResult(bool(secure), tuple(records))


def matchTLSA(
    records: Sequence[TLSARecord],
    chain: Sequence[x509.Certificate],
    names: Sequence[str],
    now: Optional[datetime.datetime] = None,
) -> Optional[PolicyFailure]:
    """
    Check the certificate chain a server sent against its usable TLSA
    records (see the module documentation).

    @param chain: the server's certificates, its own first.
    @param names: the reference identifiers of C{DANE-TA} (MX host name,
        next-hop domain).
    @return: C{None} if a record authenticates the server, else why not.
    """
    if not chain:
        return PolicyFailure("validation-failure", "the server sent no certificate")
    leaf = chain[0]
    for record in records:
        if record.usage == 3 and record.matches(leaf):
            return None
    why = None  # type: Optional[PolicyFailure]
    for record in records:
        if record.usage != 2:
            continue
        for anchor in chain:
            if not record.matches(anchor):
                continue
            failure = _verifyWithAnchor(leaf, anchor, list(chain[1:]), names, now)
            if failure is None:
                return None
            why = why or failure
    if why is not None:
        return why
    return PolicyFailure(
        "tlsa-invalid",
        "no TLSA record matches the certificate chain (%s)"
        % ("; ".join(str(r) for r in records),),
    )


def _verifyWithAnchor(
    leaf: x509.Certificate,
    anchor: x509.Certificate,
    intermediates: List[x509.Certificate],
    names: Sequence[str],
    now: Optional[datetime.datetime],
) -> Optional[PolicyFailure]:
    """
    Verify C{leaf} up to the trust anchor C{anchor} (DANE-TA, with
    OpenSSL's chain verification: the anchor need not be a root) for one
    of C{names} (service_identity).
    """
    from OpenSSL import crypto

    from smx.tlspolicy.matching import namesMatch

    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    if leaf == anchor:
        return PolicyFailure(
            "tlsa-invalid", "a DANE-TA record matches the server certificate itself"
        )
    expired = _expired(leaf, now) or _expired(anchor, now)
    if expired:
        return PolicyFailure("certificate-expired", expired)
    store = crypto.X509Store()
    store.add_cert(crypto.X509.from_cryptography(anchor))
    store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
    store.set_time(now.replace(tzinfo=None))
    context = crypto.X509StoreContext(
        store,
        crypto.X509.from_cryptography(leaf),
        [crypto.X509.from_cryptography(c) for c in intermediates if c != anchor],
    )
    try:
        context.verify_certificate()
    except crypto.X509StoreContextError as e:
        return PolicyFailure(
            "validation-failure", "the chain does not verify to the DANE-TA: %s" % (e,)
        )
    if not namesMatch(leaf, names):
        return PolicyFailure(
            "certificate-host-mismatch",
            "the certificate is for none of %s (DANE-TA)" % (", ".join(names),),
        )
    return None


def _expired(cert: x509.Certificate, now: datetime.datetime) -> str:
    if cert.not_valid_after_utc < now:
        return "certificate %s expired on %s" % (
            cert.subject.rfc4514_string(),
            cert.not_valid_after_utc.isoformat(),
        )
    if cert.not_valid_before_utc > now:
        return "certificate %s is not valid before %s" % (
            cert.subject.rfc4514_string(),
            cert.not_valid_before_utc.isoformat(),
        )
    return ""
