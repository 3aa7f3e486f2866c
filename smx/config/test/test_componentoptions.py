# -*- test-case-name: smx.config.test.test_componentoptions -*-
"""
Tests for L{smx.config.componentoptions}: the options of the SMTPS, SMAR
and QMGR programs, applied to a configuration.
"""

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from smx.config import configurationFromText
from smx.config.componentoptions import (
    QMGR_DEBUG_CATEGORIES,
    QMGROptions,
    SMAROptions,
    SMTPSOptions,
    applyComponentOptions,
    parseDebugOptions,
    selectedSMTPS,
)

TWO = """
smtps MTA { daemon_address = { "127.0.0.1:2525" }; }
smtps MSA {
    daemon_address = { "127.0.0.1:2587" };
    flags = { lmtp_does_not_imply_relaying };
}
"""


def applied(text, *args, **kw):
    """A configuration from C{text} with option sets applied."""
    cfg = configurationFromText(text)
    applyComponentOptions(cfg, *args, **kw)
    cfg.reconcile()
    return cfg


class DebugOptionTests(SynchronousTestCase):
    """The App. E syntax of C{-x}."""

    def test_grammar(self):
        """Ranges, levels (default 1), several options, the last wins."""
        self.assertEqual(
            parseDebugOptions("1-3.4,5.3,7"), {1: 4, 2: 4, 3: 4, 5: 3, 7: 1}
        )
        self.assertEqual(parseDebugOptions("2.5,2.1"), {2: 1})
        self.assertEqual(parseDebugOptions("8"), {8: 1})

    def test_errors(self):
        """Bad syntax and unknown categories are errors that say why."""
        for text, message in [
            ("", "is not a debug option"),
            ("a.1", "is not a debug option"),
            ("1-.2", "is not a debug option"),
            ("1.2.3", "is not a debug option"),
            ("3-1", "categories are 1 to 8"),
            ("0.1", "categories are 1 to 8"),
            ("9-11", "categories are 1 to 8"),
        ]:
            e = self.assertRaises(ValueError, parseDebugOptions, text)
            self.assertIn(message, str(e), text)

    def test_categoriesNamed(self):
        """Every category has a name and a description."""
        self.assertEqual(sorted(QMGR_DEBUG_CATEGORIES), list(range(1, 9)))
        for name, text in QMGR_DEBUG_CATEGORIES.values():
            self.assertTrue(name and text)


class SMTPSOptionsTests(SynchronousTestCase):
    """C{-a}, C{-C}, C{-N}, C{-T}."""

    def test_parse(self):
        """The options and their values."""
        o = SMTPSOptions()
        o.parseOptions(["-a", "-T", "-C", "10.2.3.4", "-C", "::1", "-N", "MSA"])
        self.assertEqual(
            (o["access"], o["relay-local"], o["relay-clients"], o["name"]),
            (True, True, ["10.2.3.4", "::1"], "MSA"),
        )

    def test_badAddress(self):
        """C{-C} takes an IP address."""
        e = self.assertRaises(
            usage.UsageError, SMTPSOptions().parseOptions, ["-C", "host.test"]
        )
        self.assertIn("'host.test' is not an IP address", str(e))

    def test_everySection(self):
        """A set without C{-N} applies to every smtps section."""
        cfg = applied(TWO, smtps=["-a -C 10.2.3.4"])
        for name in ("MTA", "MSA"):
            s = cfg.section("smtps", name)
            self.assertIn("access", s["flags"])
            self.assertEqual(s["relay_clients"], ["10.2.3.4"])
        self.assertIsNone(selectedSMTPS(cfg))

    def test_unnamedSection(self):
        """A set applies to the unnamed section, or to the defaults."""
        cfg = applied("smtps { flags = { 8bitmime }; }", smtps=["-a"])
        self.assertEqual(cfg.section("smtps")["flags"], {"8bitmime", "access"})
        cfg = applied("", smtps=["-a"])
        self.assertEqual(cfg.section("smtps")["flags"], {"access"})

    def test_named(self):
        """
        With C{-N}, the set applies to that section only, and only the
        sections named are selected to run.
        """
        cfg = applied(TWO, smtps=["-N msa -T -C 10.2.3.4"])
        self.assertEqual(selectedSMTPS(cfg), ["MSA"])
        msa, mta = cfg.section("smtps", "MSA"), cfg.section("smtps", "MTA")
        self.assertEqual(msa["flags"], frozenset())
        self.assertEqual(msa["relay_clients"], ["10.2.3.4"])
        self.assertEqual(mta["relay_clients"], [])
        cfg = applied(TWO, smtps=["-N MTA", "-N MSA -a"])
        self.assertEqual(selectedSMTPS(cfg), ["MSA", "MTA"])
        self.assertEqual(cfg.section("smtps", "MTA")["flags"], frozenset())

    def test_unknownName(self):
        """C{-N} of a section that does not exist is a usage error."""
        e = self.assertRaises(
            usage.UsageError, applied, TWO, smtps=["-N MX"], environ={}
        )
        self.assertEqual(
            str(e),
            "--smtps-options '-N MX': smx.conf: no section 'smtps MX' in the "
            "configuration",
        )

    def test_relayClientsAdded(self):
        """C{-C} adds to the relay_clients of the file, once each."""
        cfg = applied(
            "smtps { relay_clients = { 10.0.0.1 }; }",
            smtps=["-C 10.0.0.1 -C 10.0.0.2"],
        )
        self.assertEqual(
            cfg.section("smtps")["relay_clients"], ["10.0.0.1", "10.0.0.2"]
        )

    def test_environment(self):
        """
        C{SM_SERVER_OPTIONS} is applied first, then C{--smtps-options};
        a bad one is an error that names the variable.
        """
        cfg = applied(
            TWO,
            smtps=["-N MTA -a"],
            environ={"SM_SERVER_OPTIONS": "-C 10.2.3.4"},
        )
        self.assertEqual(cfg.section("smtps", "MSA")["relay_clients"], ["10.2.3.4"])
        self.assertEqual(selectedSMTPS(cfg), ["MTA"])
        e = self.assertRaises(
            usage.UsageError,
            applied,
            TWO,
            environ={"SM_SERVER_OPTIONS": "-q"},
        )
        self.assertTrue(str(e).startswith("SM_SERVER_OPTIONS '-q': "), str(e))
        self.assertIsNone(selectedSMTPS(applied(TWO, environ={"SMAROPTS": " "})))

    def test_extraArguments(self):
        """Words that are no options, and bad quoting, are errors."""
        for text in ["-a stray", '-C "10.2.3.4']:
            e = self.assertRaises(
                usage.UsageError, applied, TWO, smtps=[text], environ={}
            )
            self.assertIn("--smtps-options", str(e))


class SMAROptionsTests(SynchronousTestCase):
    """C{-U}."""

    def test_useTCP(self):
        """C{-U} adds use_TCP to DNS_flags, from the command line or SMAROPTS."""
        cfg = applied("smar { DNS_flags = { use_connect }; }", smar=["-U"])
        self.assertEqual(cfg.section("smar")["DNS_flags"], {"use_connect", "use_tcp"})
        cfg = applied("", environ={"SMAROPTS": "-U"})
        self.assertEqual(cfg.section("smar")["DNS_flags"], {"use_tcp"})
        self.assertEqual(applied("").section("smar")["DNS_flags"], frozenset())

    def test_unknown(self):
        """Another option is a usage error."""
        self.assertRaises(usage.UsageError, SMAROptions().parseOptions, ["-x"])


class QMGROptionsTests(SynchronousTestCase):
    """C{-x}."""

    def test_debug(self):
        """C{-x} adds to debug_categories; several may be given."""
        cfg = applied(
            "qmgr { debug_categories = { 4.2 }; }",
            qmgr=["-x 1-3.4,5.3", "-x7"],
        )
        self.assertEqual(
            cfg.section("qmgr")["debug_categories"], ["4.2", "1-3.4", "5.3", "7"]
        )

    def test_bad(self):
        """A bad C{-x} is a usage error that says why."""
        e = self.assertRaises(usage.UsageError, QMGROptions().parseOptions, ["-x9"])
        self.assertIn("categories are 1 to 8", str(e))

    def test_file(self):
        """debug_categories in the file is checked as -x is."""
        from smx.config import ConfigError

        e = self.assertRaises(
            ConfigError,
            configurationFromText,
            "qmgr {\n  debug_categories = { 1.2, x };\n}\n",
        )
        self.assertIn(":2:", str(e))
        self.assertIn("'x' is not a debug option", str(e))
