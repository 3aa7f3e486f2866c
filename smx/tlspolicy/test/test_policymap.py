# -*- test-case-name: smx.tlspolicy.test.test_policymap -*-
"""
Tests of L{smx.tlspolicy.policymap}: Postfix's policy syntax and a real
Berkeley DB map made by C{smx createmap}'s code.
"""

from __future__ import annotations

import os

from twisted.trial import unittest

from smx.log import Logger, MemorySink
from smx.maps.createmap import createMap
from smx.tlspolicy.policy import TLSPolicy
from smx.config import configurationFromText
from smx.tlspolicy.policymap import (
    PolicyMap,
    PolicyMapError,
    checkPolicyMaps,
    parsePolicy,
)

FP1 = ":".join(["AB"] * 32)
FP2 = ":".join(["12"] * 32)


class ParseTests(unittest.TestCase):
    """
    L{parsePolicy} reads Postfix's smtp_tls_policy_maps values.
    """

    def test_levels(self) -> None:
        """
        Every level alone.
        """
        for level in (
            "none",
            "may",
            "encrypt",
            "dane",
            "dane-only",
            "verify",
            "secure",
        ):
            self.assertEqual(parsePolicy(level), TLSPolicy(level, source="map"))
        self.assertEqual(parsePolicy("VERIFY").level, "verify")

    def test_match(self) -> None:
        """
        C{match=} names are separated by colons, and may be repeated.
        """
        policy = parsePolicy("secure match=.example.com:nexthop match=mx.test", "a.b")
        self.assertEqual(policy.matchNames, (".example.com", "nexthop", "mx.test"))
        self.assertEqual(policy.policyDomain, "a.b")

    def test_fingerprint(self) -> None:
        """
        Fingerprints are separated by C{|} (they have colons) or given
        in several C{match=}.
        """
        policy = parsePolicy("fingerprint match=%s|%s" % (FP1, FP2))
        self.assertEqual(policy.fingerprints, ("ab" * 32, "12" * 32))
        policy = parsePolicy("fingerprint match=%s match=%s" % (FP1, FP2))
        self.assertEqual(len(policy.fingerprints), 2)

    def test_ignored(self) -> None:
        """
        Postfix attributes smx does not use are accepted.
        """
        policy = parsePolicy("encrypt protocols=!SSLv2:!SSLv3 ciphers=high")
        self.assertEqual(policy.level, "encrypt")

    def test_errors(self) -> None:
        """
        Unknown levels and attributes, C{match=} where it means nothing,
        a fingerprint level without fingerprints or with a bad one are
        errors naming the problem.
        """
        for text, words in [
            ("", "empty"),
            ("strict", "unknown TLS security level"),
            ("verify tafile", "not an attribute"),
            ("verify colour=red", "unknown TLS policy attribute"),
            ("encrypt match=x.test", "only for verify"),
            ("fingerprint", "needs match"),
            ("fingerprint match=AB:CD", "fingerprint"),
        ]:
            e = self.assertRaises(ValueError, parsePolicy, text)
            self.assertIn(words, str(e), text)


class MapTests(unittest.TestCase):
    """
    L{PolicyMap} looks the next-hop domain up in the order of seed
    §5.11.1.
    """

    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "tls_policy.db")
        self.sink = MemorySink()
        createMap(
            self.path,
            [
                "example.com verify\n",
                ".example.com secure match=.example.com\n",
                ".test encrypt\n",
                "broken.test strict\n",
            ],
        )
        self.map = PolicyMap(self.path, Logger("smtpc", sink=self.sink))
        self.addCleanup(self.map.close)

    def test_order(self) -> None:
        """
        The domain itself, then its parents with a leading dot; no
        implicit subdomain match and no C{.} default.
        """
        self.assertEqual(self.map.find("Example.COM.").level, "verify")
        found = self.map.find("mx.sub.example.com")
        self.assertEqual(found.level, "secure")
        self.assertEqual(found.policyDomain, "mx.sub.example.com")
        self.assertEqual(self.map.find("a.test").level, "encrypt")
        self.assertIsNone(self.map.find("example.org"))
        self.assertIsNone(self.map.find("test"))

    def test_badEntry(self) -> None:
        """
        An entry that does not parse is a L{PolicyMapError} naming the
        map and key, and is logged: its mail waits.
        """
        e = self.assertRaises(PolicyMapError, self.map.find, "broken.test")
        self.assertIn("broken.test", str(e))
        self.assertIn("tls_policy.db", str(e))
        self.assertTrue(any("PolicyMap.find" in x for x in self.sink.lines()))

    def test_missing(self) -> None:
        """
        A map file that cannot be opened makes every lookup a
        L{PolicyMapError} (never "no entry", which would weaken the
        policy).
        """
        missing = PolicyMap(os.path.join(self.dir, "missing.db"), None)
        e = self.assertRaises(PolicyMapError, missing.find, "example.com")
        self.assertIn("missing.db", str(e))

    def test_checkPolicyMaps(self) -> None:
        """
        L{checkPolicyMaps} warns at the C{tls_policy_map} of each
        C{smtpc} section whose file cannot be opened as a hash map
        (missing, or not a Berkeley DB file), naming the file and the
        reason; a good map and a section without one give no warning.
        """
        notMap = os.path.join(self.dir, "text")
        with open(notMap, "w") as f:
            f.write("example.com verify\n")
        cfg = configurationFromText(
            'smtpc { tls_policy_map = "%s"; }\n'
            'smtpc a { tls_policy_map = "%s"; }\n'
            'smtpc b { tls_policy_map = "%s"; }\n'
            "smtpc c { }\n" % (self.path, os.path.join(self.dir, "missing.db"), notMap),
            filename="smx.conf",
        )
        checkPolicyMaps(cfg)
        [missing, broken] = cfg.warnings
        self.assertTrue(missing.startswith("smx.conf:2:11: warning: "), missing)
        self.assertIn("'smtpc a'", missing)
        self.assertIn("missing.db: cannot open hash map: No such file", missing)
        self.assertTrue(broken.startswith("smx.conf:3:11: warning: "), broken)
        self.assertIn("%s: cannot open hash map" % (notMap,), broken)
