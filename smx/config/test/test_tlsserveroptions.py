# -*- test-case-name: smx.config.test.test_tlsserveroptions -*-
"""
Tests for L{smx.config.tlsserveroptions}: SMTPS's C{min_protocol} and the
C{certificate} sections chosen by server name, as smx.conf text.
"""

from twisted.trial.unittest import SynchronousTestCase

from smx.config import ConfigError, configurationFromText


def tls(text: str) -> str:
    return "smtps {\n  tls {\n    %s\n  }\n}\n" % (text,)


class ServerTLSOptionTests(SynchronousTestCase):
    """The options as C{smx config} reads them."""

    def load(self, text: str):
        return configurationFromText(text, queueDirectory="/q")

    def test_defaults(self) -> None:
        """TLS 1.2 at least, no certificate sections."""
        t = self.load("").section("smtps").section("tls")
        self.assertEqual(t["min_protocol"], "TLSv1.2")
        self.assertEqual(t.sections("certificate"), [])

    def test_certificates(self) -> None:
        """
        Named C{certificate} sections with their files (relative to the
        configuration directory) and server names; C{min_protocol} any
        case.
        """
        c = self.load(
            tls(
                "min_protocol = tlsv1.3;\n"
                "    certificate a { cert_file = a.pem; key_file = a.key;\n"
                "      server_names = { MX.example.org, *.example.net. }; }\n"
                "    certificate b { cert_file = b.pem; key_file = b.key; }"
            )
        )
        t = c.section("smtps").section("tls")
        self.assertEqual(t["min_protocol"], "TLSv1.3")
        a, b = t.sections("certificate")
        self.assertEqual(
            (a.name, a["cert_file"], a["key_file"], a["server_names"]),
            ("a", "/q/a.pem", "/q/a.key", ["MX.example.org", "*.example.net."]),
        )
        self.assertEqual(b["server_names"], [])

    def test_errors(self) -> None:
        """
        A name that is no DNS name, a wildcard of more than a label, a
        section without a name or without key_file, an unknown version:
        one error naming file, line and column.
        """
        for text, message in [
            (
                "certificate a { cert_file = a.pem; key_file = a.key;"
                ' server_names = { "a b" }; }',
                "smx.conf:3:75: invalid value for option 'server_names' in "
                "section 'smtps.tls.certificate a': 'a b' is not a server "
                "name (a DNS name in A-labels, or *.domain)",
            ),
            (
                "certificate a { cert_file = a.pem; key_file = a.key;"
                " server_names = { *.*.example.org }; }",
                "is not a server name",
            ),
            (
                "certificate a { cert_file = a.pem; key_file = a.key;"
                " server_names = { bücher.example }; }",
                "is not a server name",
            ),
            ("certificate { cert_file = a.pem; key_file = a.key; }", "needs a name"),
            (
                "certificate a { cert_file = a.pem; }",
                "'key_file'",
            ),
            ("min_protocol = SSLv3;", "'SSLv3' is not one of TLSv1, TLSv1.1"),
        ]:
            e = self.assertRaises(ConfigError, self.load, tls(text))
            self.assertIn(message, str(e))
            self.assertTrue(str(e).startswith("smx.conf:3:"), str(e))
