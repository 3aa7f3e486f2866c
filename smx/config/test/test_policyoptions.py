# -*- test-case-name: smx.config.test.test_policyoptions -*-
"""
Tests for the policy part of L{smx.config.filteroptions}: C{policy NAME}
sections and the smtps options that name them.
"""

from twisted.trial.unittest import SynchronousTestCase

from smx.config import ConfigError, configurationFromText
from smx.mail.listener import ServerSettings

POLICIES = """\
policy greylist { socket = "inet:127.0.0.1:10023"; default_action = dunno; }
policy spf { socket = "unix:private/spf"; timeout = 30s; }
"""


def error(test, text):
    return str(test.assertRaises(ConfigError, configurationFromText, text))


class PolicyOptionTests(SynchronousTestCase):
    """
    The policy section, its checks and the smtps stage options.
    """

    def test_values(self):
        """
        A relative Unix socket is relative to the queue directory; the
        defaults are a timeout of 10s and tempfail.
        """
        cfg = configurationFromText(POLICIES, queueDirectory="/var/spool/smx")
        spf = cfg.section("policy", "spf")
        self.assertEqual(spf["socket"], "unix:/var/spool/smx/private/spf")
        self.assertEqual(spf["default_action"], "tempfail")
        self.assertEqual(spf["policy_context"], "")
        grey = cfg.section("policy", "greylist")
        self.assertEqual((grey["timeout"], grey["default_action"]), (10.0, "dunno"))

    def test_stages(self):
        """
        The smtps options name the policies of each protocol state, in
        order; stages without any are left out.
        """
        cfg = configurationFromText(
            POLICIES + "smtps { policies = { spf, greylist }; mail_policies = spf; "
            "end_of_data_policies = { greylist }; }"
        )
        settings = ServerSettings.fromSection(cfg.section("smtps"))
        self.assertEqual(
            dict(settings.policies),
            {
                "MAIL": ("spf",),
                "RCPT": ("spf", "greylist"),
                "END-OF-MESSAGE": ("greylist",),
            },
        )

    def test_undeclared(self):
        """
        A policy no section declares: an error at the option naming it.
        """
        self.assertEqual(
            error(self, POLICIES + "smtps {\n  helo_policies = { spf, grey };\n}"),
            "smx.conf:4:3: helo_policies names policy 'grey', which is not "
            "declared (declare it with 'policy grey { socket = ...; }')",
        )

    def test_rcptPolicies(self):
        """
        C{rcpt_policies} is another spelling of C{policies}; an error
        names the option as written.
        """
        cfg = configurationFromText(POLICIES + "smtps { rcpt_policies = spf; }")
        self.assertEqual(cfg.section("smtps")["policies"], ["spf"])
        self.assertEqual(
            error(self, POLICIES + "smtps {\n  rcpt_policies = { nope };\n}"),
            "smx.conf:4:3: rcpt_policies names policy 'nope', which is not "
            "declared (declare it with 'policy nope { socket = ...; }')",
        )

    def test_badValues(self):
        """
        A socket that is neither unix: nor inet:, a bad port, an unknown
        default action, a policy without socket or without a name.
        """
        self.assertIn(
            "expected unix:/path or inet:host:port",
            error(self, 'policy p { socket = "tcp:x:1"; }'),
        )
        self.assertIn("bad port", error(self, 'policy p { socket = "inet:h:99999"; }'))
        self.assertIn(
            "unknown action 'maybe'",
            error(self, 'policy p { socket = "unix:/s"; default_action = maybe; }'),
        )
        self.assertIn("socket", error(self, "policy p { timeout = 1s; }"))
        self.assertIn("needs a name", error(self, 'policy { socket = "unix:/s"; }'))
