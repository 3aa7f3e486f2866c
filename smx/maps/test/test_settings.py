# -*- test-case-name: smx.maps.test.test_settings -*-
"""
Tests for L{smx.maps.settings.ResolverSettings} with real smx.conf text.
"""

from twisted.trial import unittest

from smx.config import configurationFromText
from smx.maps.settings import ResolverSettings


class ResolverSettingsTests(unittest.TestCase):
    """
    The options SMAR uses, read from smx.conf by their seed names.
    """

    def settings(self, text):
        return ResolverSettings.fromConfiguration(configurationFromText(text))

    def test_defaults(self):
        """
        Without options: the table's defaults.
        """
        s = self.settings("")
        self.assertEqual(s.delimiter, "+")
        self.assertEqual(s.aliasFlags, frozenset(["localpart"]))
        self.assertEqual(s.dnsbl, ())
        self.assertEqual(s.remotePort, 25)
        self.assertEqual((s.cacheTTL, s.dnsTimeout), (5.0, 10.0))
        self.assertEqual((s.nameservers, s.dnsUseTCP), ((), False))

    def test_options(self):
        """
        Every option lands in its field, units converted.
        """
        s = self.settings(
            "hostname = mx.example;\n"
            "smar { address_delimiter = -; cache_ttl = 1m; DNS_timeout = 3s;\n"
            "  nameserver = { 127.0.0.53, [::1]:5353 }; DNS_flags = { use_tcp };\n"
            "  dnsbl { domain = a.test; tag = a; } dnsbl { domain = b.test; tag = b; }\n"
            "  aliases { flags = { preserve_domain }; } }\n"
            "qmgr { aliases = all_domains; }\n"
            "smtpc { remote_port = 2525; }\n"
        )
        self.assertEqual(s.hostname, "mx.example")
        self.assertEqual(s.delimiter, "-")
        self.assertEqual((s.cacheTTL, s.dnsTimeout), (60.0, 3.0))
        self.assertEqual(s.nameservers, ("127.0.0.53", "[::1]:5353"))
        self.assertTrue(s.dnsUseTCP)
        self.assertEqual(s.dnsbl, (("a.test", "a"), ("b.test", "b")))
        self.assertEqual(s.aliasFlags, frozenset(["preserve_domain", "all_domains"]))
        self.assertEqual(s.remotePort, 2525)

    def test_remotePortOfNamedSections(self):
        """
        The C{remote_port} of routes is that of the first C{smtpc}
        section, named or not (all must agree).
        """
        s = self.settings(
            "smtpc A { remote_port = 2526; }\nsmtpc B { remote_port = 2526; }\n"
        )
        self.assertEqual(s.remotePort, 2526)
