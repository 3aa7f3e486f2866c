# -*- test-case-name: smx.config.test.test_render -*-
"""
Tests for L{smx.config.render} (the C{-V} dumps) and
L{smx.config.reference} (C{doc/configuration.md}).
"""

import os

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

import smx
from smx.config import configurationFromText, loadConfiguration
from smx.config.commonoptions import MCP_ONLY
from smx.config.reference import renderReference
from smx.config.render import renderConfiguration
from smx.config.schema import NO_NAME

DATA = FilePath(__file__).sibling("data")


def options(section):
    """
    The effective value of every option of a section and its
    subsections, for comparing two configurations.
    """
    result = {}
    for option in section.spec.options:
        if option.aliasOf is None and option.dynamicDefault is None:
            result[option.name] = section[option.name]
    for spec in section.spec.subsections:
        found = section.sections(spec.keyword)
        if not spec.multiple or (
            not found and spec.naming != NO_NAME and spec.keyword != "map"
        ):
            found = found or [section.section(spec.keyword)]
        result[spec.keyword] = [(s.name, options(s)) for s in found]
    if not section.keyword:
        for child in section.sections():
            if section.spec.subsection(child.keyword) is None:
                result[(child.keyword, child.name)] = options(child)
    return result


class RenderTests(SynchronousTestCase):
    """
    Tests for L{renderConfiguration}.
    """

    def test_onlySet(self):
        """
        Without C{-V}: only the options set, normalised; those without
        effect in embedded mode say so.
        """
        c = configurationFromText(
            "SMTPS { IO_timeout = 300; max_message_size = 8192; "
            'arguments = "smtps -f /etc/smx/smx.conf"; type = wait; max_recipients = 5; }\n'
            "qmgr { IBDB { max_commit_delay = 20000; } }",
            queueDirectory="/q",
        )
        self.assertEqual(
            renderConfiguration(c),
            "smtps {\n"
            "    mcp_type = wait; # no effect: %s\n"
            '    arguments = "smtps -f /etc/smx/smx.conf"; # no effect: %s\n'
            "    io_timeout = 5m;\n"
            "    max_recipients_per_session = 5;\n"
            "    max_message_size = 8MB;\n"
            "}\n"
            "\n"
            "qmgr {\n"
            "    IBDB {\n"
            "        max_commit_delay = 20ms;\n"
            "    }\n"
            "}\n" % (MCP_ONLY, MCP_ONLY),
        )

    def test_empty(self):
        """
        An empty file prints nothing without C{-V}.
        """
        self.assertEqual(renderConfiguration(configurationFromText("")), "")

    def test_version(self):
        """
        C{-V} adds the version and, on one line, the directories relative
        path names were resolved against.
        """
        c = configurationFromText("", queueDirectory="/q", configDirectory="/c")
        self.assertEqual(
            renderConfiguration(c, 1),
            "# %s\n# configuration file: (none: built-in defaults)\n"
            "# paths relative to /c (configuration directory: maps, TLS files) "
            "and /q (queue directory: queue, sockets)\n" % (smx.versionString,),
        )
        c = configurationFromText("", queueDirectory="/q")
        self.assertEqual(
            renderConfiguration(c, 1).splitlines()[2],
            "# paths relative to /q (configuration and queue directory)",
        )

    def test_unusedAddress(self):
        """
        With C{daemon_address}, the C{address} and C{port} of an smtps
        section are not what smx listens on: not shown as if in force
        (unset), marked when set; the text reads back the same.
        """
        c = configurationFromText('smtps { daemon_address = "127.0.0.1:2525"; }')
        for verbosity in (2, 5):
            text = renderConfiguration(c, verbosity)
            smtps = text[text.index("smtps {") : text.index("\n}\n")]
            self.assertNotIn("address = 0.0.0.0", smtps)
            self.assertIn(
                "    # address has no effect: smx listens on its daemon_address",
                text,
                verbosity,
            )
            self.assertIn("    # port is not set", text)
            again = configurationFromText(text)
            self.assertEqual(options(again.globals), options(c.globals))
        c = configurationFromText(
            'smtps { port = 25; daemon_address = "127.0.0.1:2525"; }'
        )
        self.assertIn(
            "    port = 25; # no effect: smx listens on its daemon_address\n",
            renderConfiguration(c, 0),
        )
        self.assertIn(
            "(set; no effect: smx listens on its daemon_address)",
            renderConfiguration(c, 5),
        )
        c = configurationFromText("smtps { port = 2525; }")
        text = renderConfiguration(c, 2)
        self.assertIn("    address = 0.0.0.0; # default\n", text)
        self.assertIn("    port = 2525;\n", text)

    def test_defaultsOfPresentSections(self):
        """
        C{-VV} shows every option of the sections in the file, defaults
        marked, and not the sections that are not there.
        """
        text = renderConfiguration(configurationFromText("smtps { port = 25; }"), 2)
        self.assertIn("    port = 25;\n", text)
        self.assertIn("    io_timeout = 5m; # default\n", text)
        self.assertIn("    # user is not set\n", text)
        self.assertNotIn("qmgr", text)
        self.assertNotIn("tls {", text)

    def test_levels(self):
        """
        Each C{-V} shows more.
        """
        c = configurationFromText("smtps { port = 25; }")
        texts = [renderConfiguration(c, v) for v in range(6)]
        for less, more in zip(texts, texts[1:]):
            self.assertTrue(len(less) < len(more))
        self.assertIn("tls {", texts[3])
        self.assertIn("SMAR_socket = ", texts[3])
        self.assertNotIn("qmgr {", texts[3])
        self.assertIn("qmgr {", texts[4])
        self.assertIn("lmtpd {", texts[4])
        self.assertIn("# dnsbl { ... }", texts[5])
        self.assertIn("# map NAME { ... }", texts[5])
        self.assertIn("# time (s), >= 1s, default 5m, §5.9\n", texts[5])
        self.assertIn("max_message_size = 8MB;", texts[5])
        self.assertIn("# size (KB), 0 or >= 1KB, default 8MB, §5.9\n", texts[5])
        self.assertIn("    port = 25;", texts[5])
        self.assertIn("§5.2 (set)\n", texts[5])

    def test_roundTrip(self):
        """
        At every level, the output read again is the same configuration,
        for every seed example; from C{-VVVV} on, every path is written
        out, so it is the same wherever it is read.
        """
        for name in sorted(os.listdir(DATA.path)):
            if not name.endswith(".conf"):
                continue
            path = DATA.child(name).path
            original = loadConfiguration(path, queueDirectory="/q")
            for verbosity in range(6):
                text = renderConfiguration(original, verbosity)
                if verbosity >= 4:
                    directories = ("/elsewhere", "/x")
                else:
                    directories = ("/q", os.path.dirname(path))
                again = configurationFromText(text, "out", *directories)
                self.assertEqual(
                    options(again.globals), options(original.globals), (name, verbosity)
                )

    def test_roundTripQuoting(self):
        """
        Strings that need quotes are quoted.
        """
        c = configurationFromText('qmgr { log { ident = "a b;\\"c\\"#"; } }')
        text = renderConfiguration(c)
        self.assertIn('ident = "a b;\\"c\\"#";', text)
        self.assertEqual(
            configurationFromText(text).section("qmgr").section("log")["ident"],
            'a b;"c"#',
        )


class ReferenceTests(SynchronousTestCase):
    """
    Tests for L{renderReference}.
    """

    def test_everyOption(self):
        """
        The reference names every option and section of the table.
        """
        from smx.config import options as table

        text = renderReference()
        for path, spec in table.ROOT.walk():
            for option in spec.options:
                self.assertIn("| `%s` |" % (option.name,), text)
        self.assertIn("## smtps (§5.9)", text)
        self.assertIn("### qmgr › IBDB (§5.7)", text)
        self.assertIn("| `max_message_size` | size (KB) | `8MB` |", text)
        self.assertIn("| `max_commit_delay` | time (µs) | `10ms` |", text)

    def test_committedDocumentation(self):
        """
        C{doc/configuration.md} is the output of C{smx config --reference}
        (C{make doc}), so the documentation never disagrees with the code.
        """
        doc = (
            FilePath(smx.__file__)
            .parent()
            .parent()
            .child("doc")
            .child("configuration.md")
        )
        if not doc.exists():
            raise self.skipTest("not in a source tree")
        self.assertEqual(
            doc.getContent().decode("utf-8"),
            renderReference(),
            "doc/configuration.md is out of date: run make doc",
        )
