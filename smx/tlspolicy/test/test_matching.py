# -*- test-case-name: smx.tlspolicy.test.test_matching -*-
"""
Tests of L{smx.tlspolicy.matching} and the matching of
L{smx.tlspolicy.dane}: certificates from a test CA made with trustme.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any, List

import trustme
from cryptography import x509
from twisted.trial import unittest

from smx.tlspolicy.dane import TLSARecord, TLSAResult, matchTLSA, selectorData
from smx.tlspolicy.matching import (
    certificateFingerprints,
    checkPeer,
    namesMatch,
    referenceNames,
)
from smx.tlspolicy.policy import TLSPolicy


def _load(blob: Any) -> x509.Certificate:
    return x509.load_pem_x509_certificate(blob.bytes())


class _Certs:
    """A root CA, an intermediate, and server certificates."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.root = _load(self.ca.cert_pem)
        self.intermediate = self.ca.create_child_ca()
        mx = self.intermediate.issue_cert("mx1.example.com", "*.mail.example.com")
        self.chain = [_load(b) for b in mx.cert_chain_pems] + [self.root]
        self.leaf = self.chain[0]
        self.inter = self.chain[1]
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
        old = self.intermediate.issue_cert(
            "mx1.example.com",
            not_before=past,
            not_after=past + datetime.timedelta(days=30),
        )
        self.expiredChain = [_load(b) for b in old.cert_chain_pems] + [self.root]
        other = trustme.CA()
        self.strangerRoot = _load(other.cert_pem)
        self.strangerChain = [
            _load(b) for b in other.issue_cert("mx1.example.com").cert_chain_pems
        ]


CERTS = None  # type: Any


def certs() -> _Certs:
    global CERTS
    if CERTS is None:
        CERTS = _Certs()
    return CERTS


def tlsa(usage: int, selector: int, mtype: int, cert: x509.Certificate) -> TLSARecord:
    data = selectorData(cert, selector)
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    return TLSARecord(usage, selector, mtype, data)


class NameTests(unittest.TestCase):
    """
    Reference names and how a certificate matches them.
    """

    def test_referenceNames(self) -> None:
        """
        C{verify} defaults to the MX host name, C{secure} to the next-hop
        domain and its subdomains, C{match=} words are replaced, MTA-STS
        and REQUIRETLS always use the MX host name.
        """
        self.assertEqual(
            referenceNames(TLSPolicy("verify"), "example.com", "mx1.example.com"),
            ["mx1.example.com"],
        )
        self.assertEqual(
            referenceNames(TLSPolicy("secure"), "example.com", "mx1.example.com"),
            ["example.com", ".example.com"],
        )
        policy = TLSPolicy("secure", matchNames=("nexthop", "hostname", "x.test"))
        self.assertEqual(
            referenceNames(policy, "example.com", "mx1.example.com"),
            ["example.com", "mx1.example.com", "x.test"],
        )
        sts = TLSPolicy("verify", matchNames=("*.example.com",), source="mta-sts")
        self.assertEqual(
            referenceNames(sts, "example.com", "mx1.example.com"), ["mx1.example.com"]
        )

    def test_namesMatch(self) -> None:
        """
        A name matches exactly or through a wildcard of the certificate; a
        C{.domain} name matches any certificate name below it.
        """
        leaf = certs().leaf
        self.assertTrue(namesMatch(leaf, ["mx1.example.com"]))
        self.assertTrue(namesMatch(leaf, ["a.mail.example.com"]))
        self.assertTrue(namesMatch(leaf, [".example.com"]))
        self.assertFalse(namesMatch(leaf, ["example.com"]))
        self.assertFalse(namesMatch(leaf, ["mx2.example.com", ".example.net"]))
        self.assertFalse(namesMatch(leaf, ["b.a.mail.example.com"]))

    def test_addressMatch(self) -> None:
        """
        An IP address (the MX host of a route to an address literal)
        matches an iPAddress subjectAltName only.
        """
        ca = trustme.CA()
        cert = _load(ca.issue_cert("localhost", "127.0.0.1").cert_chain_pems[0])
        self.assertTrue(namesMatch(cert, ["127.0.0.1"]))
        self.assertTrue(namesMatch(cert, ["[127.0.0.1]"]))
        self.assertFalse(namesMatch(cert, ["127.0.0.2"]))
        self.assertFalse(namesMatch(certs().leaf, ["127.0.0.1"]))

    def test_fingerprints(self) -> None:
        """
        The SHA-256 digests of the certificate and of its public key.
        """
        leaf = certs().leaf
        cert, key = certificateFingerprints(leaf)
        self.assertEqual(cert, hashlib.sha256(selectorData(leaf, 0)).hexdigest())
        self.assertEqual(key, hashlib.sha256(selectorData(leaf, 1)).hexdigest())
        self.assertNotEqual(cert, key)


class CheckPeerTests(unittest.TestCase):
    """
    L{checkPeer} for each level.
    """

    def check(self, policy: TLSPolicy, chain: List[Any], verifyError: Any = None):
        return checkPeer(
            policy, "example.com", "mx1.example.com", (), chain, verifyError
        )

    def test_opportunistic(self) -> None:
        """
        C{may}, C{encrypt} and C{dane} without records accept anything.
        """
        for level in ("none", "may", "encrypt", "dane"):
            self.assertIsNone(
                self.check(TLSPolicy(level), certs().strangerChain, (20, 0, "x"))
            )

    def test_verify(self) -> None:
        """
        C{verify}: a trusted chain with the MX host name is fine; an
        untrusted one, an expired one and a wrong name are not, each with
        its RFC 8460 result type.
        """
        policy = TLSPolicy("verify")
        self.assertIsNone(self.check(policy, certs().chain))
        failure = self.check(
            policy, certs().chain, (20, 0, "unable to get local issuer certificate")
        )
        self.assertEqual(failure.resultType, "certificate-not-trusted")
        self.assertIn("unable to get local issuer", failure.reason)
        failure = self.check(policy, certs().chain, (10, 0, "certificate has expired"))
        self.assertEqual(failure.resultType, "certificate-expired")
        failure = checkPeer(
            policy, "example.com", "mx2.example.com", (), certs().chain, None
        )
        self.assertEqual(failure.resultType, "certificate-host-mismatch")
        self.assertIn("mx2.example.com", failure.reason)
        self.assertEqual(
            self.check(policy, []).resultType,  # type: ignore[union-attr]
            "validation-failure",
        )

    def test_secure(self) -> None:
        """
        C{secure} defaults to the next-hop domain and its subdomains, and
        takes its C{match=} names.
        """
        self.assertIsNone(self.check(TLSPolicy("secure"), certs().chain))
        policy = TLSPolicy("secure", matchNames=(".example.net",))
        failure = self.check(policy, certs().chain)
        self.assertEqual(failure.resultType, "certificate-host-mismatch")
        policy = TLSPolicy("secure", matchNames=(".example.net", "mx1.example.com"))
        self.assertIsNone(self.check(policy, certs().chain))

    def test_fingerprint(self) -> None:
        """
        C{fingerprint}: the digest of the certificate or of its key, no CA
        needed; any other is refused.
        """
        cert, key = certificateFingerprints(certs().leaf)
        for digest in (cert, key):
            policy = TLSPolicy("fingerprint", fingerprints=(digest,))
            self.assertIsNone(self.check(policy, certs().chain, (20, 0, "untrusted")))
        policy = TLSPolicy("fingerprint", fingerprints=("00" * 32,))
        failure = self.check(policy, certs().chain)
        self.assertEqual(failure.resultType, "certificate-not-trusted")

    def test_mtaSts(self) -> None:
        """
        An MTA-STS policy needs a trusted certificate with the MX host
        name.
        """
        policy = TLSPolicy("verify", matchNames=("*.example.com",), source="mta-sts")
        self.assertIsNone(self.check(policy, certs().chain))
        failure = checkPeer(
            policy, "example.com", "mx2.example.com", (), certs().chain, None
        )
        self.assertEqual(failure.resultType, "certificate-host-mismatch")


class DANETests(unittest.TestCase):
    """
    TLSA records matched against certificate chains (RFC 7671).
    """

    names = ["mx1.example.com", "example.com"]

    def test_usable(self) -> None:
        """
        Usages 2 and 3, selectors 0 and 1, matching types 0, 1, 2 of the
        right length are usable; PKIX usages are not; only a secure
        answer's records count.
        """
        leaf = certs().leaf
        self.assertTrue(tlsa(3, 1, 1, leaf).usable)
        self.assertTrue(tlsa(2, 0, 2, leaf).usable)
        self.assertTrue(tlsa(3, 0, 0, leaf).usable)
        self.assertFalse(tlsa(1, 1, 1, leaf).usable)
        self.assertFalse(tlsa(0, 1, 1, leaf).usable)
        self.assertFalse(TLSARecord(3, 1, 1, b"short").usable)
        self.assertFalse(TLSARecord(3, 2, 1, b"x" * 32).usable)
        result = TLSAResult(False, (tlsa(3, 1, 1, leaf),))
        self.assertEqual(result.usable, ())
        self.assertEqual(TLSAResult(True, result.records).usable, result.records)

    def test_wire(self) -> None:
        """
        A record is read from its wire form.
        """
        record = TLSARecord.fromWire(b"\x03\x01\x01" + b"\xab" * 32)
        self.assertEqual(record, TLSARecord(3, 1, 1, b"\xab" * 32))
        self.assertEqual(str(record), "3 1 1 " + "ab" * 32)
        self.assertRaises(ValueError, TLSARecord.fromWire, b"\x03\x01\x01")

    def test_daneEE(self) -> None:
        """
        C{3 1 1} and C{3 0 1} match the server's own certificate, whatever
        its names, issuer and dates.
        """
        c = certs()
        for selector in (0, 1):
            record = tlsa(3, selector, 1, c.leaf)
            self.assertIsNone(matchTLSA([record], c.chain, ["other.test"]))
        expired = c.expiredChain[0]
        self.assertIsNone(
            matchTLSA([tlsa(3, 1, 1, expired)], c.expiredChain, self.names)
        )
        self.assertIsNone(
            matchTLSA([tlsa(3, 1, 1, c.strangerChain[0])], c.strangerChain, [])
        )

    def test_daneTA(self) -> None:
        """
        C{2 1 1} and C{2 0 1} match a CA certificate the server sent, and
        its certificate must chain to it with one of the reference names.
        """
        c = certs()
        for anchor in (c.root, c.inter):
            for selector in (0, 1):
                record = tlsa(2, selector, 1, anchor)
                self.assertIsNone(matchTLSA([record], c.chain, self.names))

    def test_daneTAName(self) -> None:
        """
        With C{DANE-TA} the names count: a certificate for another host
        is a host mismatch.
        """
        c = certs()
        failure = matchTLSA([tlsa(2, 1, 1, c.root)], c.chain, ["mx9.example.org"])
        assert failure is not None
        self.assertEqual(failure.resultType, "certificate-host-mismatch")

    def test_daneTAExpired(self) -> None:
        """
        With C{DANE-TA} the dates count.
        """
        c = certs()
        failure = matchTLSA([tlsa(2, 1, 1, c.root)], c.expiredChain, self.names)
        assert failure is not None
        self.assertEqual(failure.resultType, "certificate-expired")

    def test_mismatch(self) -> None:
        """
        Records that match nothing the server sent: C{tlsa-invalid}.
        """
        c = certs()
        records = [tlsa(3, 1, 1, c.strangerChain[0]), tlsa(2, 0, 1, c.strangerRoot)]
        failure = matchTLSA(records, c.chain, self.names)
        assert failure is not None
        self.assertEqual(failure.resultType, "tlsa-invalid")
        self.assertIn("3 1 1", failure.reason)
        self.assertEqual(
            matchTLSA(records, [], self.names).resultType,  # type: ignore[union-attr]
            "validation-failure",
        )

    def test_checkPeerDANE(self) -> None:
        """
        L{checkPeer} of a DANE policy with records matches them.
        """
        c = certs()
        policy = TLSPolicy("dane", source="dane")
        good = (tlsa(3, 1, 1, c.leaf),)
        bad = (tlsa(3, 1, 1, c.strangerChain[0]),)
        self.assertIsNone(
            checkPeer(policy, "example.com", "mx1.example.com", good, c.chain, None)
        )
        failure = checkPeer(
            policy, "example.com", "mx1.example.com", bad, c.chain, None
        )
        assert failure is not None
        self.assertEqual(failure.resultType, "tlsa-invalid")
