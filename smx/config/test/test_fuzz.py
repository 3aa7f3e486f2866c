# -*- test-case-name: smx.config.test.test_fuzz -*-
"""
Whatever the input, reading a configuration raises nothing but
L{ConfigError}: random bytes, random tokens of the grammar, and mutations
of the seed's examples.
"""

import random

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from smx.config import ConfigError, configurationFromText, loadConfiguration
from smx.config.render import renderConfiguration

DATA = FilePath(__file__).sibling("data")

#: pieces of configuration text that random inputs are made of
PIECES = [
    "smtps",
    "qmgr",
    "smar",
    "smtpc",
    "lmtpd",
    "map",
    "tls",
    "auth",
    "log",
    "IBDB",
    "dnsbl",
    "port",
    "io_timeout",
    "flags",
    "type",
    "mcp_type",
    "pass",
    "maps",
    "name",
    "daemon_address",
    "nameserver",
    "max_message_size",
    "{",
    "}",
    ";",
    ",",
    "=",
    '"',
    '"x"',
    "#",
    "\n",
    " ",
    "\\",
    "\\x",
    "25",
    "5m",
    "8MB",
    "-1",
    "99999999999999999999",
    "1e9",
    "[::1]:25",
    ":25",
    "localhost",
    "\x00",
    "\u00e9",
    "\ufeff",
]


class FuzzTests(SynchronousTestCase):
    """
    Only L{ConfigError} comes out.
    """

    def check(self, text):
        try:
            cfg = configurationFromText(text)
        except ConfigError as e:
            self.assertNotIn("\n", str(e))
            return
        for verbosity in (0, 5):
            renderConfiguration(cfg, verbosity)

    def test_randomBytes(self):
        """
        Random bytes in a file.
        """
        rng = random.Random(5)
        directory = FilePath(self.mktemp())
        directory.makedirs()
        path = directory.child("smx.conf")
        for i in range(300):
            path.setContent(
                bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
            )
            try:
                loadConfiguration(path.path)
            except ConfigError:
                pass

    def test_hugeNumbers(self):
        """
        Numbers with thousands of digits are out of range, not a crash
        (Python refuses to convert more than 4300 decimal digits).
        """
        for text in (
            "smtps { port = %s; }" % ("9" * 5000,),
            "smtps { io_timeout = %s; }" % ("9" * 5000,),
            "smtps { max_message_size = %s; }" % ("9" * 5000,),
            "smtps { socket { umask = %s; } }" % ("7" * 5000,),
        ):
            e = self.assertRaises(ConfigError, configurationFromText, text)
            self.assertTrue(len(str(e)) < 200, str(e))
        cfg = configurationFromText("smtps { io_timeout = 1.%s; }" % ("9" * 5000,))
        self.assertEqual(cfg.section("smtps")["io_timeout"], 2.0)

    def test_randomTokens(self):
        """
        Random sequences of the grammar's tokens and option names.
        """
        rng = random.Random(7)
        for i in range(3000):
            self.check(
                "".join(
                    rng.choice(PIECES) + rng.choice(["", " "])
                    for _ in range(rng.randrange(40))
                )
            )

    def test_mutatedExamples(self):
        """
        The seed examples with characters deleted, doubled or replaced.
        """
        rng = random.Random(11)
        texts = [
            child.getContent().decode("utf-8")
            for child in DATA.children()
            if child.basename().endswith(".conf")
        ]
        for i in range(2000):
            text = list(rng.choice(texts))
            for _ in range(rng.randrange(1, 4)):
                at = rng.randrange(len(text))
                what = rng.randrange(3)
                if what == 0:
                    del text[at]
                elif what == 1:
                    text.insert(at, text[at])
                else:
                    text[at] = rng.choice('{};,="#\\ \nx0:')
            self.check("".join(text))
