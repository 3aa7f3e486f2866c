# -*- test-case-name: smx.tlspolicy.test.test_destination -*-
"""
Tests of L{smx.tlspolicy.destination}: the order of the policy sources
(RFC 8461 section 2), DANE per MX host, REQUIRETLS, the records.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from smx.log import Logger, MemorySink
from smx.maps.errors import DNSTemporaryError
from smx.tlspolicy.dane import PolicyFailure
from smx.tlspolicy.destination import (
    Destination,
    PolicyRefused,
    SessionPolicy,
    TLSPolicies,
    groupByDestination,
    stsMatches,
)
from smx.tlspolicy.policy import ITLSPolicySource, TLSPolicy

EE = b"\x03\x01\x01" + b"\xab" * 32
PKIX = b"\x01\x01\x01" + b"\xab" * 32


class FakeTLSA:
    """
    TLSA answers by name: C{(rdatas, ad)} or an exception; MX answers
    (C{lookupMXSecure}) by domain, secure and empty unless given.
    """

    def __init__(self, answers: Dict[str, Any], mx: Any = None) -> None:
        self.answers = answers
        self.mx = mx or {}
        self.asked = []  # type: list

    def lookupMXSecure(self, name: str) -> defer.Deferred:
        answer = self.mx.get(name, ([], True))
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed(answer)

    def lookupTLSA(self, name: str) -> defer.Deferred:
        self.asked.append(name)
        answer = self.answers.get(name, ([], True))
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed(answer)


@implementer(ITLSPolicySource)
class FakeSource:
    """An MTA-STS-like source with fixed policies."""

    def __init__(self, policies: Dict[str, TLSPolicy]) -> None:
        self.policies = policies

    def policyFor(self, domain: str, mxHosts: Iterable[str]) -> defer.Deferred:
        return defer.succeed(self.policies.get(domain))


def sts(testing: bool = False) -> TLSPolicy:
    return TLSPolicy(
        "verify",
        matchNames=("*.example.com",),
        source="mta-sts",
        testing=testing,
        policyDomain="example.com",
    )


class PoliciesTests(unittest.TestCase):
    """
    L{TLSPolicies} finds the policy of destinations and sessions.
    """

    def setUp(self) -> None:
        self.sink = MemorySink()
        self.log = Logger("smtpc", sink=self.sink)

    def policies(self, level: str = "may", **kw: Any) -> TLSPolicies:
        return TLSPolicies(level, log=self.log, **kw)

    def session(
        self, policies: TLSPolicies, dest: Destination, host: str = "mx1.example.com"
    ) -> SessionPolicy:
        return self.successResultOf(
            defer.Deferred.fromCoroutine(
                policies.sessionPolicy(dest, host, "192.0.2.1")
            )
        )

    def refused(
        self, policies: TLSPolicies, dest: Destination, host: str = "mx1.example.com"
    ) -> PolicyRefused:
        f = self.failureResultOf(
            defer.Deferred.fromCoroutine(
                policies.sessionPolicy(dest, host, "192.0.2.1")
            ),
            PolicyRefused,
        )
        return f.value

    def dest(self, policies: TLSPolicies, domain: str = "example.com", rt=False):
        return self.successResultOf(
            defer.Deferred.fromCoroutine(
                policies.destination(domain, ["mx1.example.com"], rt)
            )
        )

    def test_fakeSource(self) -> None:
        """
        The fake source of these tests provides L{ITLSPolicySource}.
        """
        self.assertTrue(verifyObject(ITLSPolicySource, FakeSource({})))

    def test_trivial(self) -> None:
        """
        Without a map and sources, C{may} is trivial.
        """
        self.assertTrue(self.policies("may").trivial)
        self.assertFalse(self.policies("none").trivial)
        self.assertFalse(self.policies("encrypt").trivial)
        self.assertFalse(self.policies(sources=[FakeSource({})]).trivial)

    def test_default(self) -> None:
        """
        Without a map entry or a source policy, the default applies.
        """
        policies = self.policies("encrypt")
        session = self.session(policies, self.dest(policies))
        self.assertEqual(session.policy, TLSPolicy("encrypt", source="default"))
        self.assertTrue(session.requiresTLS)
        self.assertTrue(session.reported)

    def test_stsEnforce(self) -> None:
        """
        An MTA-STS policy in enforce mode replaces the configured one; an
        MX host outside its patterns is refused before connecting.
        """
        policies = self.policies("may", sources=[FakeSource({"example.com": sts()})])
        dest = self.dest(policies)
        self.assertEqual(self.session(policies, dest).policy, sts())
        refused = self.refused(policies, dest, "mx.elsewhere.test")
        self.assertEqual(refused.failure.resultType, "validation-failure")
        self.assertIn("mx.elsewhere.test", refused.failure.reason)

    def test_stsTesting(self) -> None:
        """
        In testing mode the configured policy is enforced and MTA-STS
        only audited; an MX outside its patterns is only logged.
        """
        policies = self.policies(
            "may", sources=[FakeSource({"example.com": sts(testing=True)})]
        )
        dest = self.dest(policies)
        session = self.session(policies, dest, "mx.elsewhere.test")
        self.assertEqual(session.policy.level, "may")
        self.assertEqual(session.audit, sts(testing=True))
        self.assertFalse(session.reported)
        [line] = self.sink.lines()
        self.assertIn("func=tls_policy_failed", line)
        self.assertIn("testing=1", line)
        self.assertIn("policy=mta-sts", line)

    def test_daneWins(self) -> None:
        """
        With level C{dane} and usable secure TLSA records, DANE is used
        even where an MTA-STS policy exists (RFC 8461 section 2).
        """
        dns = FakeTLSA({"_25._tcp.mx1.example.com": ([EE], True)})
        policies = self.policies(
            "dane", dns=dns, sources=[FakeSource({"example.com": sts()})]
        )
        session = self.session(policies, self.dest(policies))
        self.assertEqual(session.policy.source, "dane")
        self.assertEqual(len(session.tlsa), 1)
        self.assertTrue(session.requiresTLS)
        self.assertEqual(dns.asked, ["_25._tcp.mx1.example.com"])

    def test_daneWinsOverStsAtMay(self) -> None:
        """
        With level C{may}, a domain with an MTA-STS policy gets DANE where
        its MX host has usable secure TLSA records; records that are not
        secure, or a lookup that fails, leave it to MTA-STS.
        """
        source = FakeSource({"example.com": sts()})
        dns = FakeTLSA({"_25._tcp.mx1.example.com": ([EE], True)})
        policies = self.policies("may", dns=dns, sources=[source])
        self.assertEqual(
            self.session(policies, self.dest(policies)).policy.source, "dane"
        )
        for answer in (([EE], False), DNSTemporaryError("timeout")):
            dns = FakeTLSA({"_25._tcp.mx1.example.com": answer})
            policies = self.policies("may", dns=dns, sources=[source])
            self.assertEqual(self.session(policies, self.dest(policies)).policy, sts())
        dns = FakeTLSA({})
        plain = self.policies("may", dns=dns)
        self.session(plain, self.dest(plain))
        self.assertEqual(dns.asked, [])

    def test_daneFallsBack(self) -> None:
        """
        C{dane}: without records, or with records not validated (no AD
        bit), the MTA-STS policy or the configured fallback C{may}
        applies.
        """
        dns = FakeTLSA({"_25._tcp.mx1.example.com": ([EE], False)})
        policies = self.policies("dane", dns=dns)
        session = self.session(policies, self.dest(policies))
        self.assertEqual(session.policy.level, "dane")
        self.assertFalse(session.requiresTLS)
        self.assertEqual(session.tlsa, ())
        withSts = self.policies(
            "dane", dns=dns, sources=[FakeSource({"example.com": sts()})]
        )
        self.assertEqual(self.session(withSts, self.dest(withSts)).policy, sts())

    def test_daneOnly(self) -> None:
        """
        C{dane-only} refuses an MX host without secure TLSA records.
        """
        dns = FakeTLSA({"_25._tcp.mx1.example.com": ([EE], False)})
        policies = self.policies("dane-only", dns=dns)
        refused = self.refused(policies, self.dest(policies))
        self.assertEqual(refused.failure.resultType, "dane-required")

    def test_insecureMX(self) -> None:
        """
        MX records that are not DNSSEC-validated (or a failed lookup):
        DANE does not trust the MX host names (RFC 7672 section 2.2.1):
        C{dane} falls back, C{dane-only} refuses; a host that is not an
        MX host (a mailertable relay) keeps its TLSA records.
        """
        answers = {
            "_25._tcp.mx1.example.com": ([EE], True),
            "_25._tcp.relay.test": ([EE], True),
        }
        for mx in (
            (["mx1.example.com"], False),
            DNSTemporaryError("timeout"),
        ):
            dns = FakeTLSA(answers, {"example.com": mx})
            dane = self.policies("dane", dns=dns)
            session = self.session(dane, self.dest(dane))
            self.assertEqual((session.policy.level, session.tlsa), ("dane", ()))
            only = self.policies("dane-only", dns=dns)
            refused = self.refused(only, self.dest(only))
            self.assertEqual(refused.failure.resultType, "dane-required")
            relay = self.session(only, self.dest(only), "relay.test")
            self.assertEqual(relay.policy.source, "dane")

    def test_daneUnusable(self) -> None:
        """
        Secure records that are all unusable (PKIX usages) mean TLS
        without authentication (RFC 7672 section 2.2).
        """
        dns = FakeTLSA({"_25._tcp.mx1.example.com": ([PKIX], True)})
        policies = self.policies("dane-only", dns=dns)
        session = self.session(policies, self.dest(policies))
        self.assertEqual(session.policy.level, "encrypt")
        self.assertEqual(session.policy.name, "dane")
        self.assertTrue(session.requiresTLS)

    def test_daneLookupFails(self) -> None:
        """
        A TLSA lookup that fails refuses the MX host (C{dnssec-invalid}):
        it might have records.
        """
        dns = FakeTLSA({"_25._tcp.mx1.example.com": DNSTemporaryError("timeout")})
        policies = self.policies("dane", dns=dns)
        refused = self.refused(policies, self.dest(policies))
        self.assertEqual(refused.failure.resultType, "dnssec-invalid")

    def test_daneAddress(self) -> None:
        """
        An address literal has no TLSA records to look up.
        """
        dns = FakeTLSA({})
        policies = self.policies("dane", dns=dns)
        session = self.session(policies, self.dest(policies), "192.0.2.1")
        self.assertEqual(session.policy.level, "dane")
        self.assertEqual(dns.asked, [])

    def test_requireTLS(self) -> None:
        """
        REQUIRETLS raises an unauthenticated policy to C{verify} of the
        MX host; its failures are permanent 5.7.10.
        """
        policies = self.policies("none")
        session = self.session(policies, self.dest(policies, rt=True))
        self.assertEqual(session.policy.level, "verify")
        self.assertEqual(session.policy.source, "requiretls")
        self.assertTrue(session.wantsTLS and session.requiresTLS)
        code, reply = session.reply(PolicyFailure("certificate-not-trusted", "x"))
        self.assertEqual(code, 550)
        self.assertTrue(reply.startswith("550 5.7.10 "), reply)
        fingerprint = self.policies("verify")
        session = self.session(fingerprint, self.dest(fingerprint, rt=True))
        self.assertEqual(session.policy.source, "default")

    def test_replies(self) -> None:
        """
        No STARTTLS is 4.7.4, every other failure 4.7.5.
        """
        session = SessionPolicy(TLSPolicy("encrypt"), "example.com", "mx", "192.0.2.1")
        self.assertTrue(
            session.reply(PolicyFailure("starttls-not-supported", "x"))[1].startswith(
                "451 4.7.4 "
            )
        )
        self.assertTrue(
            session.reply(PolicyFailure("tlsa-invalid", "x"))[1].startswith(
                "451 4.7.5 "
            )
        )

    def test_records(self) -> None:
        """
        The records TLS reporting counts have the fields it reads.
        """
        session = SessionPolicy(
            TLSPolicy("dane", source="dane", policyDomain="example.com"),
            "example.com",
            "mx1.example.com",
            "192.0.2.1",
        )
        session.logFailure(self.log, "C1", PolicyFailure("tlsa-invalid", "no match"))
        session.logOk(self.log, "C2")
        failed, ok = self.sink.lines()
        for field in (
            "sev=WARN",
            "func=tls_policy_failed",
            "da_sess=C1",
            "domain=example.com",
            "mx=mx1.example.com",
            "ip=192.0.2.1",
            "policy=dane",
            "result_type=tlsa-invalid",
            "reason=no",
        ):
            self.assertIn(field, failed)
        for field in ("func=tls_policy_ok", "domain=example.com", "policy=dane"):
            self.assertIn(field, ok)

    def test_group(self) -> None:
        """
        Plain destinations share a transaction; the others go by domain.
        """
        may = TLSPolicy("may")
        enc = TLSPolicy("encrypt")
        dests = [
            Destination("a.test", may),
            Destination("b.test", may),
            Destination("c.test", enc),
            Destination("c.test", enc),
            Destination("d.test", enc),
        ]
        groups = [members for _, members in groupByDestination(dests)]
        self.assertEqual(groups, [[0, 1], [2, 3], [4]])

    def test_stsMatches(self) -> None:
        """
        MTA-STS patterns: exact, or one label for C{*.}.
        """
        self.assertTrue(stsMatches("mx.example.com", "MX.example.com."))
        self.assertTrue(stsMatches("*.example.com", "mx.example.com"))
        self.assertFalse(stsMatches("*.example.com", "example.com"))
        self.assertFalse(stsMatches("*.example.com", "a.mx.example.com"))


@implementer(ITLSPolicySource)
class BrokenSource:
    """A source that breaks its contract and fails."""

    def policyFor(self, domain: str, mxHosts: Iterable[str]) -> defer.Deferred:
        return defer.fail(RuntimeError("oops"))


class MapFailureTests(unittest.TestCase):
    """
    A policy map that cannot answer makes the destination fail.
    """

    def test_sourceFails(self) -> None:
        """
        A source that fails makes the policy unknown (never weaker): a
        L{PolicyMapError}, and the failure logged.
        """
        from smx.tlspolicy.policymap import PolicyMapError

        sink = MemorySink()
        policies = TLSPolicies(
            "may", sources=[BrokenSource()], log=Logger("smtpc", sink=sink)
        )
        self.failureResultOf(
            defer.Deferred.fromCoroutine(policies.destination("a.test", [])),
            PolicyMapError,
        )
        self.assertTrue(any("oops" in line for line in sink.lines()))
        self.flushLoggedErrors(RuntimeError)

    def test_mapError(self) -> None:
        """
        L{TLSPolicies.destination} fails with the map's error.
        """
        from smx.tlspolicy.policymap import PolicyMap, PolicyMapError

        policies = TLSPolicies("may", PolicyMap(self.mktemp() + ".db"), log=None)
        self.failureResultOf(
            defer.Deferred.fromCoroutine(policies.destination("a.test", [])),
            PolicyMapError,
        )
