# -*- test-case-name: smx.tlspolicy.test.test_destination -*-
"""
NAME
    smx.tlspolicy.destination - the TLS policy SMTPC applies to a
    destination and to each of its sessions

SYNOPSIS
    policies = TLSPolicies("may", PolicyMap("tls_policy.db"), [mtasts], dns, log)
    dest = await policies.destination("example.com", ["mx1.example.com"], False)
    session = await policies.sessionPolicy(dest, route)   # or PolicyRefused

DESCRIPTION
    For the recipients of one next-hop domain, L{TLSPolicies.destination}
    finds the configured policy (the C{tls_policy_map} entry, else
    C{tls_security_level}) and asks the L{ITLSPolicySource}s (MTA-STS)
    for theirs.  For each route (MX host and address) SMTPC tries,
    L{TLSPolicies.sessionPolicy} then decides what that session must
    meet, in the order of RFC 8461 section 2 (see
    L{smx.tlspolicy.policy}):

      1. with the level C{dane} or C{dane-only}: the TLSA records of the
         MX host (L{smx.tlspolicy.dane}), if the domain's MX records are
         DNSSEC-validated (else as if it had none; a host that is not
         among them, a mailertable relay, is the configuration's word); usable secure records make it
         a DANE session, secure records that are all unusable make TLS
         mandatory without authentication; none (or not secure) is a
         refusal for C{dane-only} (C{dane-required}), nothing for
         C{dane}; a failed lookup is a refusal (C{dnssec-invalid});
         with another level, for a domain with an MTA-STS policy only:
         usable secure records make it a DANE session, anything else
         leaves it to MTA-STS;
      2. an MTA-STS policy in C{enforce} mode: an MX host that matches
         none of its C{mx:} patterns is refused (C{validation-failure}),
         else the session must verify the MX host name; in C{testing}
         mode it is only checked and logged (L{SessionPolicy.audit});
      3. the configured policy.

    REQUIRETLS raises a policy that does not authenticate the server to
    C{verify} of the MX host name (source C{requiretls}).

    A L{SessionPolicy} is a frozen value: SMTPC keys its connection cache
    with it, so that a session is only reused under the policy it was
    checked against.
"""

from __future__ import annotations

import dataclasses
from typing import Any, FrozenSet, Iterable, List, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.python.failure import Failure

from smx.maps.errors import DNSTemporaryError
from smx.net import isIPAddress
from smx.tlspolicy.dane import PolicyFailure, TLSARecord, tlsaForHost
from smx.tlspolicy.matching import VerifyError, checkPeer
from smx.tlspolicy.policy import FAILED_RECORD, OK_RECORD, TLSPolicy
from smx.tlspolicy.policymap import PolicyMap, PolicyMapError

__all__ = [
    "Destination",
    "PolicyMapError",
    "PolicyRefused",
    "SessionPolicy",
    "TLSPolicies",
    "stsMatches",
]


def stsMatches(pattern: str, host: str) -> bool:
    """
    An MTA-STS C{mx:} pattern (RFC 8461 section 4.1): C{mx.example.com}
    matches itself, C{*.example.com} one label below C{example.com}.
    """
    pattern = pattern.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return host == pattern


@dataclasses.dataclass(frozen=True)
class Destination:
    """
    The TLS policies of one next-hop domain for one delivery.

    @ivar domain: the next-hop (recipient) domain.
    @ivar base: the configured policy (C{map} or C{default}).
    @ivar sts: the MTA-STS policy, or C{None}.
    @ivar requireTLS: the message was received with REQUIRETLS.
    @ivar insecureMX: the MX hosts of the domain when its MX records are
        not DNSSEC-validated (or could not be looked up): DANE does not
        trust their names (RFC 7672 section 2.2.1).
    """

    domain: str
    base: TLSPolicy
    sts: Optional[TLSPolicy] = None
    requireTLS: bool = False
    insecureMX: FrozenSet[str] = frozenset()

    @property
    def plain(self) -> bool:
        """Does the policy log nothing and depend on no domain (C{may} or
        C{none} from the configuration only)?  Then recipients of
        several domains may share a transaction."""
        return (
            self.base.level in ("none", "may")
            and self.sts is None
            and not self.requireTLS
        )


@dataclasses.dataclass(frozen=True)
class SessionPolicy:
    """
    What one SMTP session (one route) must meet.

    @ivar policy: the policy enforced.
    @ivar domain: the next-hop domain.
    @ivar mxHost: the MX host name of the route.
    @ivar address: its IP address.
    @ivar tlsa: the usable TLSA records (DANE).
    @ivar audit: an MTA-STS policy in testing mode: checked and logged,
        not enforced.
    @ivar requireTLS: REQUIRETLS (failures are permanent).
    """

    policy: TLSPolicy
    domain: str
    mxHost: str
    address: str
    tlsa: Tuple[TLSARecord, ...] = ()
    audit: Optional[TLSPolicy] = None
    requireTLS: bool = False

    @property
    def wantsTLS(self) -> bool:
        """Is STARTTLS used when offered?"""
        return self.policy.level != "none" or self.requireTLS

    @property
    def requiresTLS(self) -> bool:
        """Is mail never sent in clear in this session?"""
        return self.policy.requiresTLS or self.requireTLS

    @property
    def reported(self) -> bool:
        """Is a session that met the policy logged (C{tls_policy_ok})?
        (A testing-mode MTA-STS policy has a record of its own.)"""
        return self.requiresTLS

    def check(
        self, chain: Sequence[Any], verifyError: Optional[VerifyError]
    ) -> Optional[PolicyFailure]:
        """Does a session whose server sent C{chain} meet L{policy}?"""
        return checkPeer(
            self.policy, self.domain, self.mxHost, self.tlsa, chain, verifyError
        )

    def checkAudit(
        self, chain: Sequence[Any], verifyError: Optional[VerifyError]
    ) -> Optional[PolicyFailure]:
        """Would it meet the testing-mode policy L{audit}?"""
        assert self.audit is not None
        return checkPeer(self.audit, self.domain, self.mxHost, (), chain, verifyError)

    def reply(self, failure: PolicyFailure) -> Tuple[int, str]:
        """
        The reply code and text of recipients deferred (or, with
        REQUIRETLS, bounced) because of C{failure}.
        """
        what = "%s (policy %s, %s)" % (
            failure.reason,
            self.policy.name,
            self.mxHost or self.address,
        )
        if self.requireTLS:
            return 550, "550 5.7.10 REQUIRETLS: %s" % (what,)
        if failure.resultType == "starttls-not-supported":
            return 451, "451 4.7.4 TLS is required: %s" % (what,)
        return 451, "451 4.7.5 TLS policy not met: %s" % (what,)

    def logFailure(
        self,
        log: Any,
        sessionId: Optional[str],
        failure: PolicyFailure,
        testing: bool = False,
        localAddress: Optional[str] = None,
    ) -> None:
        """
        The C{tls_policy_failed} record of C{failure}.

        @param localAddress: smx's address of the session (C{local_ip=},
            the report's C{sending-mta-ip}), if it was connected.
        """
        policy = self.audit if testing and self.audit is not None else self.policy
        log.warn(
            FAILED_RECORD,
            da_sess=sessionId,
            domain=self.domain,
            policy_domain=policy.policyDomain or self.domain,
            mx=self.mxHost or None,
            ip=self.address or None,
            policy=policy.name,
            local_ip=localAddress,
            result_type=failure.resultType,
            testing=int(testing),
            reason=failure.reason,
        )

    def logOk(
        self,
        log: Any,
        sessionId: Optional[str],
        testing: bool = False,
        localAddress: Optional[str] = None,
    ) -> None:
        """The C{tls_policy_ok} record of a session that met the policy."""
        policy = self.audit if testing and self.audit is not None else self.policy
        log.info(
            func=OK_RECORD,
            da_sess=sessionId,
            domain=self.domain,
            policy_domain=policy.policyDomain or self.domain,
            mx=self.mxHost or None,
            ip=self.address or None,
            local_ip=localAddress,
            policy=policy.name,
            testing=int(testing),
        )


class PolicyRefused(Exception):
    """
    A route must not be used under its policy (before connecting).

    @ivar failure: the L{PolicyFailure}.
    @ivar session: the L{SessionPolicy} it was refused under.
    """

    def __init__(self, failure: PolicyFailure, session: SessionPolicy) -> None:
        Exception.__init__(self, failure.reason)
        self.failure = failure
        self.session = session


class TLSPolicies:
    """
    The TLS policies of one SMTPC (see the module documentation).

    @ivar defaultLevel: C{tls_security_level}.
    @ivar policyMap: the L{PolicyMap} of C{tls_policy_map}, or C{None}.
    @ivar sources: the L{smx.tlspolicy.policy.ITLSPolicySource}s
        (MTA-STS).
    @ivar dns: the resolver of TLSA records (C{lookupTLSA}), or C{None}:
        no host has TLSA records.
    """

    def __init__(
        self,
        defaultLevel: str,
        policyMap: Optional[PolicyMap] = None,
        sources: Iterable[Any] = (),
        dns: Any = None,
        log: Any = None,
    ) -> None:
        self.defaultLevel = defaultLevel
        self.default = TLSPolicy(defaultLevel, source="default")
        self.policyMap = policyMap
        self.sources = list(sources)
        self.dns = dns
        self.log = log

    @property
    def trivial(self) -> bool:
        """Is every destination plain C{may} (nothing to look up or
        check)?"""
        return (
            self.default.level == "may" and self.policyMap is None and not self.sources
        )

    async def destination(
        self,
        domain: str,
        mxHosts: Sequence[str],
        requireTLS: bool = False,
        ignoreRecipientPolicies: bool = False,
    ) -> Destination:
        """
        The policies of the next-hop C{domain}.

        @param ignoreRecipientPolicies: C{TLS-Required: No} (RFC 8689
            section 4.1): no MTA-STS, and C{dane}/C{dane-only} act as
            C{may}.
        @raise PolicyMapError: the configured policy cannot be known now.
        """
        domain = domain.lower().rstrip(".")
        base = None  # type: Optional[TLSPolicy]
        if self.policyMap is not None and domain:
            base = self.policyMap.find(domain)
        if base is None:
            base = self.default
        if ignoreRecipientPolicies and not requireTLS:
            if base.level in ("dane", "dane-only"):
                base = TLSPolicy("may", source=base.source, policyDomain=domain)
            return Destination(domain, base, None, False)
        sts = None  # type: Optional[TLSPolicy]
        if domain and not domain.startswith("[") and base.level != "none":
            for source in self.sources:
                try:
                    found = await defer.maybeDeferred(source.policyFor, domain, mxHosts)
                except Exception as e:
                    # the contract says it never fails: a bug, and the
                    # policy unknown (never weaker): the mail waits
                    if self.log is not None:
                        self.log.failure(
                            "TLSPolicies.destination", Failure(), domain=domain
                        )
                    raise PolicyMapError("TLS policy source failed: %s" % (e,))
                if found is not None:
                    sts = found
                    break
        insecure = frozenset()  # type: FrozenSet[str]
        if (
            self.dns is not None
            and domain
            and not domain.startswith("[")
            and (base.level in ("dane", "dane-only") or sts is not None)
        ):
            insecure = await self._insecureMX(domain, mxHosts)
        return Destination(domain, base, sts, requireTLS, insecure)

    async def _insecureMX(self, domain: str, mxHosts: Sequence[str]) -> FrozenSet[str]:
        """
        The MX hosts of C{domain} if its MX records are not
        DNSSEC-validated (all of C{mxHosts} if the lookup fails), else
        none.
        """
        try:
            hosts, secure = await self.dns.lookupMXSecure(domain)
        except DNSTemporaryError:
            hosts, secure = list(mxHosts), False
        if secure:
            return frozenset()
        return frozenset(h.lower().rstrip(".") for h in hosts)

    async def sessionPolicy(
        self, dest: Destination, host: str, address: str
    ) -> SessionPolicy:
        """
        What a session with C{address} (MX host C{host}) for C{dest} must
        meet.

        @raise PolicyRefused: the route must not be used.
        """
        host = (host or "").lower().rstrip(".")
        base = dest.base
        named = bool(host) and not isIPAddress(host)
        if base.level in ("dane", "dane-only"):
            session = await self._dane(dest, host, address, named)
            if session is not None:
                return session
        elif dest.sts is not None and named and self.dns is not None:
            # a domain with an MTA-STS policy: DANE wins where the MX host
            # has usable secure TLSA records (RFC 8461 section 2)
            session = await self._daneOverSts(dest, host, address)
            if session is not None:
                return session
        audit = None  # type: Optional[TLSPolicy]
        policy = base
        sts = dest.sts
        if sts is not None:
            if not sts.testing:
                policy = sts
                if not any(stsMatches(p, host) for p in sts.matchNames):
                    raise PolicyRefused(
                        PolicyFailure(
                            "validation-failure",
                            "MX host %s matches no mx of the MTA-STS policy (%s)"
                            % (host or address, ", ".join(sts.matchNames)),
                        ),
                        SessionPolicy(sts, dest.domain, host, address),
                    )
            else:
                audit = sts
        if base.level == "dane-only" and policy is base:
            raise PolicyRefused(
                PolicyFailure(
                    "dane-required",
                    "no usable DNSSEC-validated TLSA records for %s"
                    % (host or address,),
                ),
                SessionPolicy(base, dest.domain, host, address, (), None, False),
            )
        if dest.requireTLS and not policy.verified:
            policy = TLSPolicy("verify", source="requiretls", policyDomain=dest.domain)
        session = SessionPolicy(
            policy, dest.domain, host, address, (), audit, dest.requireTLS
        )
        if audit is not None and not any(stsMatches(p, host) for p in audit.matchNames):
            session.logFailure(
                self.log,
                None,
                PolicyFailure(
                    "validation-failure",
                    "MX host %s matches no mx of the MTA-STS policy (%s)"
                    % (host or address, ", ".join(audit.matchNames)),
                ),
                testing=True,
            )
        return session

    async def _dane(
        self, dest: Destination, host: str, address: str, named: bool
    ) -> Optional[SessionPolicy]:
        """
        The DANE session policy of C{host}, C{None} if it has no secure
        TLSA records (and C{dane} falls back).

        @raise PolicyRefused: the TLSA lookup failed, or C{dane-only}
            without records.
        """
        base = dest.base
        danePolicy = TLSPolicy("dane", source="dane", policyDomain=dest.domain)
        if not named or self.dns is None:
            return None
        if host in dest.insecureMX:
            if base.level == "dane-only":
                raise PolicyRefused(
                    PolicyFailure(
                        "dane-required",
                        "the MX records of %s are not DNSSEC-validated"
                        % (dest.domain,),
                    ),
                    SessionPolicy(base, dest.domain, host, address, (), None, False),
                )
            return None
        try:
            found = await tlsaForHost(self.dns, host)
        except DNSTemporaryError as e:
            raise PolicyRefused(
                PolicyFailure("dnssec-invalid", "TLSA lookup failed: %s" % (e,)),
                SessionPolicy(danePolicy, dest.domain, host, address),
            )
        usable = found.usable
        if usable:
            return SessionPolicy(
                danePolicy, dest.domain, host, address, usable, None, dest.requireTLS
            )
        if found.secure and found.records:
            # RFC 7672 section 2.2: TLS, but nothing to authenticate with
            policy = TLSPolicy("encrypt", source="dane", policyDomain=dest.domain)
            if dest.requireTLS:
                raise PolicyRefused(
                    PolicyFailure(
                        "tlsa-invalid", "no usable TLSA records for %s" % (host,)
                    ),
                    SessionPolicy(policy, dest.domain, host, address, (), None, True),
                )
            return SessionPolicy(policy, dest.domain, host, address)
        if base.level == "dane-only":
            raise PolicyRefused(
                PolicyFailure(
                    "dane-required",
                    "no %sTLSA records for %s"
                    % ("DNSSEC-validated " if found.records else "", host),
                ),
                SessionPolicy(base, dest.domain, host, address, (), None, False),
            )
        return None

    async def _daneOverSts(
        self, dest: Destination, host: str, address: str
    ) -> Optional[SessionPolicy]:
        """
        The DANE session policy of C{host} if it has usable secure TLSA
        records, else C{None} (the MTA-STS policy applies; a failed
        lookup does not stop it).
        """
        if host in dest.insecureMX:
            return None
        try:
            found = await tlsaForHost(self.dns, host)
        except DNSTemporaryError:
            return None
        usable = found.usable
        if not usable:
            return None
        policy = TLSPolicy("dane", source="dane", policyDomain=dest.domain)
        return SessionPolicy(
            policy, dest.domain, host, address, usable, None, dest.requireTLS
        )

    def logRefusal(self, refused: PolicyRefused) -> None:
        """The C{tls_policy_failed} record of a route refused."""
        refused.session.logFailure(self.log, None, refused.failure)

    def reopen(self) -> None:
        """Open the policy map again (SIGUSR1)."""
        if self.policyMap is not None:
            self.policyMap.reopen()


def groupByDestination(
    destinations: List[Destination],
) -> List[Tuple[Destination, List[int]]]:
    """
    Group the recipients (by index) whose destinations may share a
    transaction: plain ones together, the others by destination.
    """
    groups = []  # type: List[Tuple[Destination, List[int]]]
    for i, dest in enumerate(destinations):
        for j, (other, members) in enumerate(groups):
            if other == dest or (
                other.plain and dest.plain and other.base == dest.base
            ):
                members.append(i)
                break
        else:
            groups.append((dest, [i]))
    return groups
