# -*- test-case-name: smx.tlspolicy.test.test_settings -*-
"""
Tests of SMTPC's TLS policy options (L{smx.config.tlsoptions}) as
C{smx.conf} gives them to SMTPC.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from smx.config import loadConfiguration
from smx.config.errors import ConfigError
from smx.mail.deliverysettings import DeliverySettings
from smx.mail.smtpc import deliveryAgentFromConfiguration
from smx.queue.testing import MemoryContentStore


class OptionTests(unittest.TestCase):
    """
    The options are checked when the file is read and reach SMTPC.
    """

    def load(self, smtpc: str) -> Any:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "smx.conf")
        with open(path, "w") as f:
            f.write("smtpc { %s }\n" % (smtpc,))
        return loadConfiguration(path, queueDirectory=directory)

    def test_defaults(self) -> None:
        """
        By default: C{may}, no map.
        """
        settings = DeliverySettings.fromSection(self.load("").section("smtpc"))
        self.assertEqual(
            (settings.tlsSecurityLevel, settings.tlsPolicyMap), ("may", None)
        )
        self.assertIsNotNone(settings.tlsCreator)

    def test_values(self) -> None:
        """
        The level, the map (relative to the configuration directory) and
        the protocol version are SMTPC's.
        """
        cfg = self.load(
            'tls_security_level = dane-only; tls_policy_map = "tp.db";'
            " tls_min_protocol = TLSv1.3;"
        )
        settings = DeliverySettings.fromSection(cfg.section("smtpc"))
        self.assertEqual(settings.tlsSecurityLevel, "dane-only")
        self.assertEqual(os.path.basename(settings.tlsPolicyMap), "tp.db")
        agent = deliveryAgentFromConfiguration(cfg, MemoryContentStore(), reactor)
        self.assertEqual(agent.policies.default.level, "dane-only")
        self.assertIsNotNone(agent.policies.policyMap)
        agent.policies.policyMap.close()

    def test_bad(self) -> None:
        """
        An unknown level, C{fingerprint} as the default (it needs the
        fingerprints of a destination), an unknown protocol and a cipher
        list OpenSSL refuses are errors naming the option.
        """
        for text, words in [
            ("tls_security_level = strict;", "tls_security_level"),
            ("tls_security_level = fingerprint;", "tls_policy_map"),
            ("tls_min_protocol = SSLv3;", "tls_min_protocol"),
            ('tls_ciphers = "NOTHING-AT-ALL";', "cipher"),
        ]:
            e = self.assertRaises(ConfigError, self.load, text)
            self.assertIn(words, str(e), text)
            self.assertNotIn("None)", str(e), text)
