# -*- test-case-name: smx.maps.test.test_lookup -*-
"""
Table tests of the lookup orders of seed §5.11.1 (L{smx.maps.lookup}):
C{data/lookup-order.in} is turned into text and compared with
C{data/lookup-order.ref}.
"""

import os

from twisted.trial import unittest

from smx.maps import lookup

DATA = os.path.join(os.path.dirname(__file__), "data")


def renderLookupTable(lines):
    """
    Render every entry of a C{lookup-order.in} file as its input line
    followed by the keys tried, indented.
    """
    out = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip() or line.startswith("#"):
            continue
        words = line.split()
        kind, item, extra = words[0], words[1], words[2:]
        if kind == "domain":
            keys = lookup.domainKeys(item, withDefault="default" in extra)
        elif kind in ("ipv4", "ipv6"):
            keys = lookup.ipKeys(item)
        elif kind == "address":
            keys = lookup.addressKeys(item, extra[0] if extra else "+")
        elif kind == "localpart":
            keys = lookup.addressKeys(item, domains=False)
        else:
            raise ValueError(kind)
        out.append(line)
        out.extend("    " + k for k in keys)
    return "\n".join(out) + "\n"


class LookupOrderTableTests(unittest.TestCase):
    """
    The key sequences of domains, IP addresses and addresses.
    """

    def test_table(self):
        """
        Every input of C{lookup-order.in} yields the keys listed in
        C{lookup-order.ref}, in that order.
        """
        with open(os.path.join(DATA, "lookup-order.in"), encoding="utf-8") as f:
            got = renderLookupTable(f)
        with open(os.path.join(DATA, "lookup-order.ref"), encoding="utf-8") as f:
            expected = f.read()
        self.assertEqual(got.splitlines(), expected.splitlines())

    def test_seedDomainExample(self):
        """
        The seed's example: C{sub2.sub1.tld} never tries C{sub1.tld} or
        C{tld}, only the dotted forms, and C{.} only when asked.
        """
        self.assertEqual(
            lookup.domainKeys("sub2.sub1.tld"), ["sub2.sub1.tld", ".sub1.tld", ".tld"]
        )
        self.assertEqual(lookup.domainKeys("sub2.sub1.tld", True)[-1], ".")

    def test_seedAddressOrder(self):
        """
        C{user+detail@hostname}: verbatim, C{user++}, C{user+*}, C{user*},
        C{@hostname}, then the local part alone; C{user@hostname} is not
        tried because a detail exists.
        """
        self.assertEqual(
            lookup.addressKeys("user+detail@hostname"),
            [
                "user+detail@hostname",
                "user++@hostname",
                "user+*@hostname",
                "user*@hostname",
                "@hostname",
                "user+detail",
                "user++",
                "user+*",
                "user*",
            ],
        )

    def test_subdomainOfPattern(self):
        """
        A key with a dotted domain pattern records the subdomain it matched
        (for the C{{subdomain}} macro of seed §5.11.3).
        """
        keys = lookup.addressLookupKeys("alias+x@host.domain")
        match = [k for k in keys if k.key == "alias*@.domain"][0]
        self.assertEqual(
            (match.user, match.detail, match.subdomain), ("alias", "x", "host")
        )

    def test_notAnAddress(self):
        """
        Text that is no IP address is looked up as itself.
        """
        self.assertEqual(lookup.ipKeys("unknown"), ["unknown"])
