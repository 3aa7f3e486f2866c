# -*- test-case-name: smx.milter.test.test_integration_milterconfig -*-
"""
Integration tests of the milter options as an administrator meets them:
C{smx config -f} and C{twistd -n smx --config} run as programs on an
smx.conf with a C{milter} section whose C{macros} lists name a macro
that cannot be one (C{"{bad"}, an unbalanced brace).  Both refuse it,
naming the file, line and column, the option and its section; no milter
is needed, since nothing starts.
"""

from __future__ import annotations

import os
import subprocess

from twisted.trial.unittest import TestCase

from smx.config import ConfigError, configurationFromText
from smx.test.mta import SMX, TWISTD, tempDirectory

CONFIG = """\
milter filter {
    socket = "inet:127.0.0.1:8891";
    macros {
        connect = { j, %s, client_addr };
    }
}
"""


class MacroNameTests(TestCase):
    """
    Macro names in C{milter NAME { macros { STAGE = {...}; } }}.
    """

    def setUp(self) -> None:
        self.root = tempDirectory(self, "smx-milterconf-")

    def write(self, name: str) -> str:
        path = os.path.join(self.root, "smx.conf")
        with open(path, "w") as f:
            f.write(CONFIG % (name,))
        return path

    def test_badNameRefused(self) -> None:
        """
        C{"{bad"}, an unbalanced brace: C{smx config} exits 2 with one
        line C{FILE:4:COLUMN:} naming the option C{connect} of C{milter
        filter.macros}, and C{twistd -n smx} does not start (exit 78,
        EX_CONFIG, the same line, no traceback).
        """
        path = self.write('"{bad"')
        p = subprocess.run(
            [SMX, "config", "-f", path], capture_output=True, text=True, timeout=30
        )
        self.assertEqual((p.returncode, p.stdout), (2, ""), p.stderr)
        self.assertEqual(p.stderr.count("\n"), 1, p.stderr)
        self.assertTrue(p.stderr.startswith(path + ":4:"), p.stderr)
        self.assertIn(
            "option 'connect' in section 'milter filter.macros': '{bad' is not "
            "a macro name",
            p.stderr,
        )
        p = subprocess.run(
            [TWISTD, "-n", "--pidfile=", "smx", "--config", path],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.root,
            timeout=30,
        )
        self.assertEqual(p.returncode, 78, p.stdout)
        self.assertIn(path + ":4:", p.stdout)
        self.assertIn("'{bad' is not a macro name", p.stdout)
        self.assertNotIn("Traceback", p.stdout)

    def test_otherBadNames(self) -> None:
        """
        A brace inside, an empty pair of braces, or a character other
        than letters, digits and underscores between them: refused by the
        same check (L{configurationFromText}, what both programs use).
        """
        for name in ('"bad}"', '"{}"', '"{a b}"', '"{a-b}"', '"x{y}"', '"{"'):
            e = self.assertRaises(
                ConfigError, configurationFromText, CONFIG % (name,), "smx.conf"
            )
            self.assertIn("%r is not a macro name" % (name.strip('"'),), str(e), name)

    def test_goodNamesAccepted(self) -> None:
        """
        One character, a word, and a word in braces are macro names.
        """
        names = 'i, _, client_addr, "{client_addr}", "{auth_type}"'
        p = subprocess.run(
            [SMX, "config", "-f", self.write(names)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        self.assertIn(
            'connect = {j, i, _, client_addr, "{client_addr}", "{auth_type}", '
            "client_addr};",
            p.stdout,
        )
