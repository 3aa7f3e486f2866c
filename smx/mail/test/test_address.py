# -*- test-case-name: smx.mail.test.test_address -*-
"""
Tests for L{smx.mail.address}: path syntax and the normalisation made
before relay decisions.
"""

from twisted.trial import unittest

from smx.mail.address import (
    PathSyntaxError,
    effectiveAddress,
    isRoutingTrick,
    parsePath,
)


class ParsePathTests(unittest.TestCase):
    """L{parsePath}."""

    def test_valid(self):
        """Dot-strings, quoted strings, literals, parameters."""
        cases = {
            "<a@b.test>": ("a@b.test", []),
            "<a.b+c@b-c.test> SIZE=10 BODY=8BITMIME": (
                "a.b+c@b-c.test",
                [("SIZE", "10"), ("BODY", "8BITMIME")],
            ),
            '<"a b"@c.test>': ('"a b"@c.test', []),
            '<"a@b"@c.test>': ('"a@b"@c.test', []),
            "<a@[127.0.0.1]>": ("a@[127.0.0.1]", []),
            "<a@[IPv6:::1]>": ("a@[IPv6:::1]", []),
            "<@r1.test,@r2.test:a@b.test>": ("a@b.test", []),
            "<a@b.test> auth=<>": ("a@b.test", [("AUTH", "<>")]),
        }
        for text, expected in cases.items():
            self.assertEqual(parsePath(text, allowNull=False), expected, text)

    def test_null(self):
        """<> only where allowed."""
        self.assertEqual(parsePath("<>", allowNull=True), ("", []))
        self.assertRaises(PathSyntaxError, parsePath, "<>", False)

    def test_postmaster(self):
        """<postmaster> only where allowed."""
        self.assertEqual(parsePath("<PostMaster>", False, True)[0], "PostMaster")
        self.assertRaises(PathSyntaxError, parsePath, "<postmaster>", False)

    def test_invalid(self):
        """Every malformed path raises with 501."""
        for text in [
            " <a@b.test>",
            "a@b.test",
            "<a@b.test",
            "<a@b..test>",
            "<a..b@c.test>",
            "<a@-b.test>",
            "<a@b.test>SIZE=1",
            "<a@b.test> SIZE=",
            "<a@b.test>  SIZE=1",
            "<a\x00b@c.test>",
            "<a@b.test\r>",
            "<%s@b.test>" % ("x" * 65,),
            "<a@%s>" % (".".join(["b" * 60] * 5),),
        ]:
            e = self.assertRaises(PathSyntaxError, parsePath, text, True)
            self.assertEqual(e.code, 501, text)


class EffectiveAddressTests(unittest.TestCase):
    """L{effectiveAddress} and L{isRoutingTrick}."""

    def test_tricks(self):
        """Percent hack, bang path and quoted @ name the inner address."""
        cases = {
            "user%evil.test@local.test": "user@evil.test",
            "evil.test!user@local.test": "user@evil.test",
            '"user@evil.test"@local.test': "user@evil.test",
            '"user%evil.test"@local.test': "user@evil.test",
            "a%b%evil.test@local.test": "a@b",
            "plain@Local.TEST": "plain@local.test",
            '"john doe"@x.test': '"john doe"@x.test',
        }
        for address, expected in cases.items():
            self.assertEqual(effectiveAddress(address), expected, address)

    def test_isRoutingTrick(self):
        """Only the tricks are tricks."""
        self.assertTrue(isRoutingTrick("a%b@c"))
        self.assertTrue(isRoutingTrick('"a@b"@c'))
        self.assertFalse(isRoutingTrick("a.b@c"))
