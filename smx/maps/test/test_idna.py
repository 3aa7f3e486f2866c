# -*- test-case-name: smx.maps.test.test_idna -*-
"""
Internationalised domains (RFC 6531, IDNA 2008) in the maps: the
mailertable and the access map find an entry whether its key and the
address name the domain in U-labels or in A-labels (the lookup orders
themselves are in C{data/lookup-order.in}).
"""

from twisted.trial import unittest

from smx.log import Logger, MemorySink
from smx.maps.access import AccessMap
from smx.maps.errors import MapError
from smx.maps.mailertable import Mailertable
from smx.maps.testing import DictMap


class MailertableTests(unittest.TestCase):
    """U-label and A-label left-hand sides of the mailertable."""

    def test_bothForms(self):
        """
        A U-label key matches the A-label form of the domain and the other
        way round; subdomain keys too.
        """
        mt = Mailertable.fromText("bücher.test lmtp:\n.xn--fa-hia.test [127.0.0.2]\n")
        self.assertEqual(mt.find("xn--bcher-kva.test")[0], "bücher.test")
        self.assertEqual(mt.find("BÜCHER.test")[0], "bücher.test")
        self.assertTrue(mt.isLocal("xn--bcher-kva.test"))
        self.assertEqual(mt.find("mx.faß.test")[0], ".xn--fa-hia.test")

    def test_badDomain(self):
        """A key that is not valid IDNA is refused with its line."""
        e = self.assertRaises(MapError, Mailertable.fromText, "a\u200db.test lmtp:\n")
        self.assertIn("mt:1: bad domain", str(e))


class AccessTests(unittest.TestCase):
    """The access map with UTF-8 keys."""

    def test_recipient(self):
        """
        C{to:} keys with a UTF-8 local part and either form of the domain
        match addresses written in the other form.
        """
        m = DictMap(
            "access",
            {"to:jörg@xn--bcher-kva.test": "REJECT", "to:@faß.test": "RELAY"},
        )
        a = AccessMap(m, "+", log=Logger("smar", sink=MemorySink()))
        d = self.successResultOf(a.check("to", "Jörg@Bücher.test"))
        self.assertEqual(d["key"], "to:jörg@xn--bcher-kva.test")
        d = self.successResultOf(a.check("to", "x@xn--fa-hia.test"))
        self.assertEqual(d["key"], "to:@faß.test")
