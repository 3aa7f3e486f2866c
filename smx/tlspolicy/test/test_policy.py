# -*- test-case-name: smx.tlspolicy.test.test_policy -*-
"""
Tests of L{smx.tlspolicy.policy}, the TLS policy value.
"""

from twisted.trial import unittest

from smx.tlspolicy.policy import TLSPolicy, normalizeFingerprint

FP = "AB:" * 31 + "CD"


class TLSPolicyTests(unittest.TestCase):
    """
    L{TLSPolicy} checks its values and says what it requires.
    """

    def test_levels(self) -> None:
        """
        Each level says whether it needs TLS and a verified server.
        """
        expect = {
            "none": (False, False),
            "may": (False, False),
            "encrypt": (True, False),
            "dane": (False, False),
            "dane-only": (True, True),
            "verify": (True, True),
            "secure": (True, True),
        }
        for level, (tls, verified) in expect.items():
            p = TLSPolicy(level)
            self.assertEqual((p.requiresTLS, p.verified), (tls, verified), level)
        p = TLSPolicy("fingerprint", fingerprints=(FP,))
        self.assertEqual((p.requiresTLS, p.verified), (True, True))

    def test_daneSource(self) -> None:
        """
        C{dane} from the DANE source (TLSA found) requires verified TLS;
        its name in records is C{dane}.
        """
        p = TLSPolicy("dane", source="dane")
        self.assertTrue(p.requiresTLS)
        self.assertTrue(p.verified)
        self.assertEqual(p.name, "dane")

    def test_mtaSts(self) -> None:
        """
        An MTA-STS policy in enforce mode requires verified TLS; in
        testing mode it requires nothing.
        """
        p = TLSPolicy("secure", matchNames=("*.example.com",), source="mta-sts")
        self.assertEqual((p.requiresTLS, p.verified, p.name), (True, True, "mta-sts"))
        t = TLSPolicy("secure", source="mta-sts", testing=True)
        self.assertEqual((t.requiresTLS, t.verified), (False, False))

    def test_bad(self) -> None:
        """
        Unknown levels and sources, bad fingerprints and C{fingerprint}
        without one raise L{ValueError}.
        """
        self.assertRaises(ValueError, TLSPolicy, "strict")
        self.assertRaises(ValueError, TLSPolicy, "may", source="dns")
        self.assertRaises(ValueError, TLSPolicy, "fingerprint")
        self.assertRaises(ValueError, TLSPolicy, "fingerprint", fingerprints=("AB",))

    def test_normalized(self) -> None:
        """
        Match names are lower case without the trailing dot, fingerprints
        lower-case hex without colons.
        """
        p = TLSPolicy(
            "fingerprint", matchNames=("MX.Example.COM.",), fingerprints=(FP,)
        )
        self.assertEqual(p.matchNames, ("mx.example.com",))
        self.assertEqual(p.fingerprints, (normalizeFingerprint(FP),))
        self.assertEqual(p.fingerprints[0], "ab" * 31 + "cd")

    def test_dict(self) -> None:
        """
        L{TLSPolicy.toDict} and L{TLSPolicy.fromDict} are inverses.
        """
        p = TLSPolicy(
            "secure",
            matchNames=(".example.com",),
            source="mta-sts",
            testing=True,
            policyDomain="example.com",
        )
        self.assertEqual(TLSPolicy.fromDict(p.toDict()), p)
