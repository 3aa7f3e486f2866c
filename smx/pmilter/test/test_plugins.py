# -*- test-case-name: smx.pmilter.test.test_plugins -*-
"""
Tests for L{smx.pmilter.plugins}: pmilters found as Twisted plugins, and
the host of an smtps section built from the configuration.
"""

import io
import os
import sys

from twisted.internet.task import Clock
from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import smx.plugins
from smx.config import ConfigError, configurationFromText
from smx.interfaces import IPolicyMilter
from smx.log import Logger, MemorySink
from smx.pmilter.host import HostChain, PolicyMilterHost
from smx.pmilter.plugins import (
    UnknownPolicyMilter,
    describePolicyMilters,
    findPolicyMilters,
    hostFromConfiguration,
    lookupPolicyMilter,
    pluginOptions,
)
from smx.pmilter.remote import RemotePolicyMilterHost

#: a pmilter dropped into a directory smx/plugins/ of someone else
DROPIN = """
from twisted.plugin import IPlugin
from zope.interface import implementer
from smx.interfaces import IPolicyMilter
from smx.pmilter import CONT, PERM, SMST_RCPT, Negotiation

@implementer(IPlugin, IPolicyMilter)
class NoRoot:
    name = "noroot"
    def negotiate(self, server):
        return Negotiation(stages={SMST_RCPT})
    def rcpt(self, session, address, args):
        if address.lower().startswith("<root@"):
            session.setreply("550 5.7.1 No mail to root")
            return PERM
        return CONT

noroot = NoRoot()
"""


def addDropin(case, text=DROPIN, module="pmtest_noroot"):
    """
    Make C{text} a plugin module of a directory C{smx/plugins/} outside
    smx, as a user installs one, for the duration of the test C{case}.

    @return: the directory to put on C{sys.path} (C{PYTHONPATH}).
    """
    base = os.path.abspath(case.mktemp())
    directory = os.path.join(base, "smx", "plugins")
    os.makedirs(directory)
    with open(os.path.join(directory, module + ".py"), "w") as f:
        f.write(text)
    smx.plugins.__path__.append(directory)
    case.addCleanup(smx.plugins.__path__.remove, directory)
    case.addCleanup(sys.modules.pop, "smx.plugins." + module, None)
    return base


class DiscoveryTests(SynchronousTestCase):
    """
    L{findPolicyMilters} and L{lookupPolicyMilter}.
    """

    def test_shipped(self):
        """
        The greylist and rules pmilters are found; they are plugins and
        pmilters.
        """
        found = findPolicyMilters()
        for name in ("greylist", "rules"):
            self.assertTrue(verifyObject(IPolicyMilter, found[name]))
            self.assertTrue(verifyObject(IPlugin, found[name]))

    def test_alias(self):
        """
        The rules pmilter is found as regex too.
        """
        self.assertIs(lookupPolicyMilter("regex"), lookupPolicyMilter("rules"))

    def test_unknown(self):
        """
        An unknown name says which are installed.
        """
        e = self.assertRaises(UnknownPolicyMilter, lookupPolicyMilter, "nosuch")
        self.assertIn("'nosuch'", str(e))
        self.assertIn("greylist, rules", str(e))

    def test_dropin(self):
        """
        A module in another C{smx/plugins/} directory is found.
        """
        addDropin(self)
        plugin = findPolicyMilters()["noroot"]
        self.assertTrue(verifyObject(IPolicyMilter, plugin))


class ConfigurationTests(SynchronousTestCase):
    """
    L{hostFromConfiguration} and L{describePolicyMilters}.
    """

    def host(self, text):
        cfg = configurationFromText(text, queueDirectory="/q")
        return hostFromConfiguration(
            cfg.section("smtps"),
            Clock(),
            Logger("smtps", sink=MemorySink()),
            "mx.example",
        )

    def test_none(self):
        """
        Without plugins or socket there is no host.
        """
        self.assertIsNone(self.host("smtps { }"))

    def test_plugins(self):
        """
        C{plugins} makes a host of those pmilters in that order, with the
        timeout, failure policy and their settings.
        """
        host = self.host(
            "smtps { pmilter { plugins = { regex, greylist }; timeout = 7s; "
            "on_failure = accept; greylist { delay = 1m; } } }"
        )
        self.assertIsInstance(host, PolicyMilterHost)
        self.assertEqual([a.name for a in host.attachments], ["rules", "greylist"])
        self.assertEqual((host.timeout, host.onFailure), (7, "accept"))
        greylist = host.attachments[1].options
        self.assertEqual(greylist["delay"], 60)
        self.assertEqual(greylist["database"], "/q/greylist.db")
        self.assertEqual(host.attachments[0].options["file"], "/q/pmilter.rules")
        self.assertEqual(host.hostname, "mx.example")

    def test_socket(self):
        """
        C{socket} makes a remote host; with plugins too, a chain.
        """
        host = self.host("smtps { pmilter { socket = pm.sock; } }")
        self.assertIsInstance(host, RemotePolicyMilterHost)
        self.assertEqual((host.path, host.timeout), ("/q/pm.sock", 60))
        host = self.host("smtps { pmilter { socket = pm.sock; plugins = greylist; } }")
        self.assertIsInstance(host, HostChain)
        self.assertIsInstance(host.hosts[0], PolicyMilterHost)

    def test_unknownPlugin(self):
        """
        A plugin that is not installed is a configuration error at the
        line of C{plugins}.
        """
        e = self.assertRaises(
            ConfigError,
            self.host,
            "smtps {\n pmilter {\n  plugins = { greylist, nosuch };\n }\n}\n",
        )
        self.assertIn("smx.conf:3", str(e))
        self.assertIn("'nosuch'", str(e))

    def test_options(self):
        """
        A plugin the table has no settings for gets none.
        """
        cfg = configurationFromText("smtps { }")
        section = cfg.section("smtps").section("pmilter")
        self.assertEqual(pluginOptions(section, "noroot"), {})
        self.assertEqual(pluginOptions(section, "rules")["file"][-13:], "pmilter.rules")

    def test_describe(self):
        """
        C{describePolicyMilters} lists what is installed and what each
        smtps section enables.
        """
        cfg = configurationFromText(
            "smtps MTA { pmilter { plugins = { greylist, nosuch }; } }\n"
            "smtps MSA { pmilter { socket = /run/pm.sock; } }\n"
        )
        text = describePolicyMilters(cfg)
        self.assertIn("#   greylist     smx.pmilter.greylist\n", text)
        self.assertIn("# smtps MTA: pmilters greylist, nosuch (NOT INSTALLED)\n", text)
        self.assertIn("# smtps MSA: pmilters socket /run/pm.sock\n", text)
        self.assertIn(
            "# smtps: pmilters none\n",
            describePolicyMilters(configurationFromText("")),
        )

    def test_configScript(self):
        """
        C{smx config -VVVVV} ends with the pmilters installed and enabled;
        less verbose output does not list them.
        """
        from smx.scripts import config

        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("smtps { pmilter { plugins = { greylist, regex }; } }\n")
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(config.run(["-VVVVV", "-f", path], out, err), 0)
        self.assertTrue(
            out.getvalue().endswith("# smtps: pmilters greylist, rules\n"),
            out.getvalue()[-300:],
        )
        out = io.StringIO()
        self.assertEqual(config.run(["-VVVV", "-f", path], out, err), 0)
        self.assertNotIn("pmilter plugins installed", out.getvalue())
