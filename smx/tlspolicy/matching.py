# -*- test-case-name: smx.tlspolicy.test.test_matching -*-
"""
NAME
    smx.tlspolicy.matching - does a TLS session meet a TLS policy?

SYNOPSIS
    failure = checkPeer(policy, domain, mxHost, tlsa, chain, verifyError)

DESCRIPTION
    The checks SMTPC makes once a STARTTLS handshake is complete, on what
    the handshake gave (the server's certificate chain, own certificate
    first, and OpenSSL's first verification error against the CAs of
    C{tls { CAcert_file; CAcert_path }}, the system's CAs without them):

      - C{none}, C{may}, C{encrypt}, C{dane} without TLSA records: none;
      - C{fingerprint}: the SHA-256 digest of the server certificate or
        of its public key (SubjectPublicKeyInfo) is one of the policy's
        (Postfix matches both too);
      - C{verify}, C{secure}, MTA-STS, REQUIRETLS: the chain verified
        (else C{certificate-expired} or C{certificate-not-trusted}) and
        the certificate has a DNS name (subjectAltName, RFC 6125 rules
        by service_identity) that matches the policy's names: for
        C{verify} the MX host name unless C{match=} says otherwise, for
        C{secure} the next-hop domain and its subdomains
        (C{nexthop:dot-nexthop}), for MTA-STS and REQUIRETLS the MX host
        name (else C{certificate-host-mismatch});
      - DANE (TLSA records of the MX host): L{smx.tlspolicy.dane.matchTLSA}.

    Match names: C{name} is that name (a wildcard certificate may match
    it; an IP address, the MX host of a route to an address literal,
    matches an iPAddress subjectAltName), C{.domain} any DNS name of the certificate below the domain,
    C{hostname}, C{nexthop} and C{dot-nexthop} stand for the MX host
    name, the next-hop domain and any name below it.
"""

from __future__ import annotations

import hashlib
from typing import List, Optional, Sequence, Tuple

from cryptography import x509
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    extract_patterns,
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from service_identity.hazmat import DNSPattern

from smx.net import isIPAddress
from smx.tlspolicy.dane import PolicyFailure, TLSARecord, matchTLSA, selectorData
from smx.tlspolicy.policy import TLSPolicy

__all__ = [
    "VerifyError",
    "certificateFingerprints",
    "checkPeer",
    "classifyVerifyError",
    "namesMatch",
    "referenceNames",
]

#: OpenSSL's X509_V_ERR_CERT_NOT_YET_VALID and X509_V_ERR_CERT_HAS_EXPIRED
_DATE_ERRORS = (9, 10)

#: (OpenSSL error number, depth, its text)
VerifyError = Tuple[int, int, str]


def certificateFingerprints(certificate: x509.Certificate) -> Tuple[str, str]:
    """
    @return: the SHA-256 digests of the certificate and of its public key
        (SubjectPublicKeyInfo), lower-case hex.
    """
    return (
        hashlib.sha256(selectorData(certificate, 0)).hexdigest(),
        hashlib.sha256(selectorData(certificate, 1)).hexdigest(),
    )


def referenceNames(policy: TLSPolicy, domain: str, mxHost: str) -> List[str]:
    """
    The names the server certificate must match under C{policy}, the
    special words replaced (see the module documentation).
    """
    if policy.source in ("mta-sts", "requiretls"):
        words = ["hostname"]  # type: Sequence[str]
    elif policy.matchNames:
        words = policy.matchNames
    elif policy.level == "secure":
        words = ["nexthop", "dot-nexthop"]
    else:
        words = ["hostname"]
    names = []
    for word in words:
        if word == "hostname":
            name = mxHost
        elif word == "nexthop":
            name = domain
        elif word == "dot-nexthop":
            name = "." + domain
        else:
            name = word
        name = name.lower().rstrip(".")
        if name and name not in names:
            names.append(name)
    return names


def namesMatch(certificate: x509.Certificate, names: Sequence[str]) -> bool:
    """
    Does C{certificate} match one of C{names} (see the module
    documentation)?
    """
    certNames = None  # type: Optional[List[str]]
    for name in names:
        if name.startswith("."):
            if certNames is None:
                certNames = _dnsNames(certificate)
            if any(n.endswith(name) for n in certNames):
                return True
            continue
        try:
            if isIPAddress(name):
                verify_certificate_ip_address(certificate, name.strip("[]"))
            else:
                verify_certificate_hostname(certificate, name)
        except (VerificationError, CertificateError, ValueError):
            continue
        return True
    return False


def _dnsNames(certificate: x509.Certificate) -> List[str]:
    try:
        patterns = extract_patterns(certificate)
    except CertificateError:
        return []
    return [
        p.pattern.decode("ascii", "replace").lower()
        for p in patterns
        if isinstance(p, DNSPattern)
    ]


def classifyVerifyError(error: VerifyError) -> PolicyFailure:
    """The RFC 8460 result type of an OpenSSL verification error."""
    errno, depth, text = error
    where = "certificate" if depth == 0 else "certificate %d of the chain" % (depth,)
    if errno in _DATE_ERRORS:
        return PolicyFailure("certificate-expired", "%s: %s" % (where, text))
    return PolicyFailure("certificate-not-trusted", "%s: %s" % (where, text))


def checkPeer(
    policy: TLSPolicy,
    domain: str,
    mxHost: str,
    tlsa: Sequence[TLSARecord],
    chain: Sequence[x509.Certificate],
    verifyError: Optional[VerifyError],
) -> Optional[PolicyFailure]:
    """
    Does a TLS session with a server that sent C{chain} meet C{policy}?

    @param domain: the next-hop domain.
    @param mxHost: the MX host name of the route.
    @param tlsa: its usable TLSA records (for DANE).
    @param chain: the server's certificates, its own first.
    @param verifyError: OpenSSL's first error verifying C{chain}, or
        C{None}.
    @return: C{None} if the policy is met, else why not.
    """
    if policy.source == "dane" and tlsa:
        return matchTLSA(tlsa, chain, _daneNames(mxHost, domain))
    level = policy.level
    if policy.source != "mta-sts" and level in ("none", "may", "encrypt", "dane"):
        return None
    if level == "dane-only":
        return PolicyFailure("dane-required", "no usable DNSSEC-validated TLSA records")
    if not chain:
        return PolicyFailure("validation-failure", "the server sent no certificate")
    leaf = chain[0]
    if level == "fingerprint" and policy.source != "mta-sts":
        certDigest, keyDigest = certificateFingerprints(leaf)
        if certDigest in policy.fingerprints or keyDigest in policy.fingerprints:
            return None
        return PolicyFailure(
            "certificate-not-trusted",
            "fingerprint %s (public key %s) is not one of the policy's"
            % (_colons(certDigest), _colons(keyDigest)),
        )
    if verifyError is not None:
        return classifyVerifyError(verifyError)
    names = referenceNames(policy, domain, mxHost)
    if not namesMatch(leaf, names):
        return PolicyFailure(
            "certificate-host-mismatch",
            "the certificate (%s) matches none of %s"
            % (", ".join(_dnsNames(leaf)) or "no DNS names", ", ".join(names)),
        )
    return None


def _daneNames(mxHost: str, domain: str) -> List[str]:
    names = [mxHost.lower().rstrip(".")]
    if domain and domain not in names:
        names.append(domain)
    return [n for n in names if n]


def _colons(digest: str) -> str:
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)).upper()
