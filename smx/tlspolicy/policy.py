# -*- test-case-name: smx.tlspolicy.test.test_policy -*-
"""
NAME
    smx.tlspolicy.policy - the TLS policy of a destination (the contract)

SYNOPSIS
    from smx.tlspolicy.policy import TLSPolicy, ITLSPolicySource

    policy = TLSPolicy("verify", matchNames=(".example.com",), source="map")
    d = source.policyFor("example.com", ["mx1.example.com"])
    # -> Deferred firing with a TLSPolicy or None

DESCRIPTION
    What SMTPC must insist on when it delivers to a next-hop domain, and
    where that requirement came from.  This module is the contract
    between SMTPC (L{smx.mail.smtpc}), the policy sources (the policy
    map and default of the C{smtpc} section, DANE in
    L{smx.tlspolicy.dane}, MTA-STS in L{smx.tlspolicy.mtasts}), the
    REQUIRETLS flag of a queued transaction and TLS reporting
    (L{smx.tlspolicy.tlsrpt}), which counts SMTPC's log records.

    Levels (Postfix's C{smtp_tls_security_level}, L{LEVELS}):

      - C{none}: never STARTTLS;
      - C{may}: STARTTLS when offered, any certificate (the default,
        seed App. D opportunistic TLS); a failed handshake is a failure
        of that route, never a fallback to clear text;
      - C{encrypt}: STARTTLS required, any certificate;
      - C{verify}: STARTTLS required, a certificate that verifies against
        the CAs, with a name in L{TLSPolicy.matchNames} (default: the MX
        host name);
      - C{secure}: like C{verify}, default match names the next-hop
        domain and its subdomains (Postfix: C{nexthop:dot-nexthop});
      - C{fingerprint}: STARTTLS required, the SHA-256 digest of the
        certificate or of its public key (SubjectPublicKeyInfo) is one of
        L{TLSPolicy.fingerprints}; no CA, no names;
      - C{dane}: DANE (RFC 7672) where the MX host has DNSSEC-validated
        TLSA records, else C{may};
      - C{dane-only}: DANE required for every MX host.

    Match names (L{TLSPolicy.matchNames}): C{example.com} matches that
    name only; C{.example.com} any name below it (Postfix);
    C{*.example.com} one label below it (RFC 8461 C{mx:} patterns);
    C{hostname} the MX host name, C{nexthop} the next-hop domain,
    C{dot-nexthop} any name below it (Postfix's special words).  A
    certificate matches when one of its DNS-ID names (service_identity,
    RFC 6125) matches one of them.

    Where a policy comes from (L{SOURCES}), in the order SMTPC consults
    them for a next-hop domain (RFC 8461 section 2: DANE wins over
    MTA-STS):

      1. C{dane}: the MX host has usable DNSSEC-validated TLSA records
         and the map/default level is C{dane} or C{dane-only}, or the
         domain has an MTA-STS policy (whose sender, RFC 8461 section 2
         says, must let DANE win);
      2. C{mta-sts}: an L{ITLSPolicySource} (MTA-STS) has a policy for
         the domain: in C{enforce} mode an MX host that matches none of
         its C{mx:} patterns (L{TLSPolicy.matchNames}) is not used, and
         the certificate must verify and match the MX host name; in
         C{testing} mode (L{TLSPolicy.testing}) failures are only
         logged and the map/default policy applies;
      3. C{map}: the C{tls_policy_map} entry of the domain (seed §5.11.1
         lookup order), else C{default}: C{tls_security_level}.

    C{requiretls}: a transaction received with C{MAIL ... REQUIRETLS}
    (RFC 8689) has C{"requiretls": True} in the delivery transaction
    (L{REQUIRETLS}, set by QMGR from the queue).  Its policy is raised to
    at least C{verify} (source C{requiretls}) unless it is already
    verified (C{verify}, C{secure}, C{fingerprint}, DANE with TLSA,
    MTA-STS enforce); the next hop must offer REQUIRETLS, and C{MAIL}
    carries it.  A REQUIRETLS failure is permanent (RFC 8689 section 5):
    C{550 5.7.10} for a TLS failure, C{550 5.7.30} for a next hop without
    REQUIRETLS; QMGR bounces.

    C{TLS-Required: No} (RFC 8689 section 4.1): a transaction with
    C{"tlsRequiredNo": True} (L{TLS_REQUIRED_NO}; never together with
    REQUIRETLS) is delivered without the recipient domain's policies:
    no MTA-STS, no DANE (C{dane} and C{dane-only} act as C{may}); the
    policy map and C{tls_security_level} still apply.

    Other failures of a policy defer the recipients with C{451 4.7.4}
    (no STARTTLS offered) or C{451 4.7.5} (handshake, certificate, name,
    fingerprint or TLSA failure); nothing is sent in clear where the
    policy requires TLS.

    Sources: SMTPC builds its MTA-STS source with
    C{smx.tlspolicy.mtasts.mtastsSourceFromConfiguration(cfg, reactor,
    section, log, dns=dns)} when that function takes C{dns} (SMTPC's
    resolver, an L{smx.maps.dns.DNSResolver} made at its first lookup,
    shared with DANE, so that a configuration that never looks anything
    up starts no resolver), else with C{mtastsSource(MTASTSSettings.
    fromSection(section), reactor, dns, log)}; C{None} is no source.

DIAGNOSTICS
    SMTPC writes one record for each policy failure and each session
    that met a policy stronger than C{may} (L{FAILED_RECORD},
    L{OK_RECORD}); TLS reporting counts exactly these (RFC 8460)::

      sev=WARN, func=tls_policy_failed, da_sess=C..., domain=example.com,
          policy_domain=example.com, mx=mx1.example.com, ip=192.0.2.1,
          policy=verify, result_type=certificate-host-mismatch,
          testing=0, reason=...
      func=tls_policy_ok, da_sess=C..., domain=example.com,
          policy_domain=example.com, mx=mx1.example.com, ip=192.0.2.1,
          policy=dane, testing=0

    C{policy=} is the level, or C{mta-sts} / C{dane} for those sources
    (L{TLSPolicy.name}); C{result_type=} one of L{RESULT_TYPES}.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, Optional, Tuple

from zope.interface import Interface

__all__ = [
    "FAILED_RECORD",
    "ITLSPolicySource",
    "LEVELS",
    "OK_RECORD",
    "REQUIRETLS",
    "RESULT_TYPES",
    "SOURCES",
    "TLSPolicy",
    "TLS_REQUIRED_NO",
    "normalizeFingerprint",
]

#: the levels, weakest first (Postfix's smtp_tls_security_level)
LEVELS = (
    "none",
    "may",
    "encrypt",
    "dane",
    "dane-only",
    "fingerprint",
    "verify",
    "secure",
)

#: where a policy came from
SOURCES = ("map", "default", "mta-sts", "dane", "requiretls")

#: the RFC 8460 (section 4.3) result types of C{result_type=}
RESULT_TYPES = (
    "starttls-not-supported",
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "validation-failure",
    "tlsa-invalid",
    "dnssec-invalid",
    "dane-required",
    "sts-policy-fetch-error",
    "sts-policy-invalid",
    "sts-webpki-invalid",
)

#: the key of the delivery transaction (L{smx.interfaces.IDeliveryAgent})
#: that says the message was received with REQUIRETLS (RFC 8689)
REQUIRETLS = "requiretls"

#: the key of the delivery transaction that says the message has the
#: header field C{TLS-Required: No} and was not received with REQUIRETLS
#: (RFC 8689 section 4.1): the recipient domain's policies (MTA-STS,
#: DANE) are ignored, the configured ones are not
TLS_REQUIRED_NO = "tlsRequiredNo"

#: C{func=} of the record of a policy not met (with C{sev=WARN})
FAILED_RECORD = "tls_policy_failed"
#: C{func=} of the record of a session that met its policy
OK_RECORD = "tls_policy_ok"

#: levels that never send mail in clear
_TLS_REQUIRED = frozenset(["encrypt", "dane-only", "fingerprint", "verify", "secure"])
#: levels whose server certificate is authenticated
_VERIFIED = frozenset(["dane-only", "fingerprint", "verify", "secure"])


def normalizeFingerprint(text: str) -> str:
    """
    A SHA-256 fingerprint as compared: lower-case hex without colons.

    @param text: hex digits, with or without colons (C{AB:CD:...}).
    @raise ValueError: if it is not 32 octets of hex.
    """
    digits = text.replace(":", "").strip().lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError("bad SHA-256 fingerprint %r" % (text,))
    return digits


@dataclasses.dataclass(frozen=True)
class TLSPolicy:
    """
    The TLS policy of one next-hop domain.

    @ivar level: one of L{LEVELS}.
    @ivar matchNames: the names a certificate must match (C{verify},
        C{secure}); for MTA-STS the policy's C{mx:} patterns.  Empty: the
        level's default.
    @ivar fingerprints: SHA-256 digests of the accepted certificates or
        public keys (C{fingerprint}), lower-case hex without colons.
    @ivar source: one of L{SOURCES}.
    @ivar testing: MTA-STS C{mode: testing}: failures are logged, not
        enforced.
    @ivar policyDomain: the domain the policy was found for (the
        recipient domain for MTA-STS, the map key's domain, ...).
    """

    level: str
    matchNames: Tuple[str, ...] = ()
    fingerprints: Tuple[str, ...] = ()
    source: str = "default"
    testing: bool = False
    policyDomain: str = ""

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError("unknown TLS security level %r" % (self.level,))
        if self.source not in SOURCES:
            raise ValueError("unknown TLS policy source %r" % (self.source,))
        object.__setattr__(
            self, "matchNames", tuple(n.lower().rstrip(".") for n in self.matchNames)
        )
        object.__setattr__(
            self,
            "fingerprints",
            tuple(normalizeFingerprint(f) for f in self.fingerprints),
        )
        if self.level == "fingerprint" and not self.fingerprints:
            raise ValueError("TLS level fingerprint needs match=FINGERPRINT")

    @property
    def name(self) -> str:
        """What C{policy=} says: the source for MTA-STS and DANE, else
        the level."""
        if self.source in ("mta-sts", "dane"):
            return self.source
        return self.level

    @property
    def requiresTLS(self) -> bool:
        """Is mail never sent in clear under this policy?"""
        if self.source == "mta-sts":
            return not self.testing
        return self.level in _TLS_REQUIRED or (
            self.level == "dane" and self.source == "dane"
        )

    @property
    def verified(self) -> bool:
        """Is the server authenticated (what REQUIRETLS needs)?"""
        if self.source == "mta-sts":
            return not self.testing
        return self.level in _VERIFIED or (
            self.level == "dane" and self.source == "dane"
        )

    def toDict(self) -> Dict[str, Any]:
        """Plain data (for AMP, JSON, the cache of MTA-STS)."""
        return {
            "level": self.level,
            "matchNames": list(self.matchNames),
            "fingerprints": list(self.fingerprints),
            "source": self.source,
            "testing": self.testing,
            "policyDomain": self.policyDomain,
        }

    @classmethod
    def fromDict(cls, data: Dict[str, Any]) -> "TLSPolicy":
        """
        The inverse of L{toDict}.

        @raise ValueError: if a value is not allowed.
        """
        return cls(
            level=str(data["level"]),
            matchNames=tuple(data.get("matchNames") or ()),
            fingerprints=tuple(data.get("fingerprints") or ()),
            source=str(data.get("source") or "default"),
            testing=bool(data.get("testing")),
            policyDomain=str(data.get("policyDomain") or ""),
        )


class ITLSPolicySource(Interface):
    """
    Something that may have a TLS policy for a next-hop domain (MTA-STS,
    L{smx.tlspolicy.mtasts}).  SMTPC asks its sources before it connects
    for a delivery transaction, in the order the module documentation
    gives.
    """

    def policyFor(domain: str, mxHosts: Iterable[str]) -> Any:
        """
        The policy of C{domain} if this source has one.

        @param domain: the next-hop (recipient) domain, lower case, in
            A-labels.
        @param mxHosts: the MX host names of the routes SMTPC is about to
            try (lower case, without the trailing dot).
        @return: a L{Deferred} firing with a L{TLSPolicy} (with this
            source's C{source}) or C{None} when it has no policy; it
            never fails (a source that cannot answer logs why and answers
            C{None}, or a cached policy).
        """


def policyName(policy: Optional[TLSPolicy]) -> str:
    """C{policy=} of a record: L{TLSPolicy.name}, C{may} for none."""
    return "may" if policy is None else policy.name
