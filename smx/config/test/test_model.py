# -*- test-case-name: smx.config.test.test_model -*-
"""
Tests for the API of L{smx.config} (L{smx.config.model}): loading files,
sections, typed options, path resolution (seed §5.6) and command-line
overrides.
"""

import os

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

import smx.config
from smx.config import (
    ConfigError,
    Configuration,
    Section,
    SectionNotFound,
    configurationFromText,
    defaultConfiguration,
    loadConfiguration,
    parseConfiguration,
)


class LoadTests(SynchronousTestCase):
    """
    Tests for L{loadConfiguration}.
    """

    def setUp(self):
        self.dir = FilePath(self.mktemp())
        self.dir.makedirs()

    def write(self, data, name="smx.conf"):
        path = self.dir.child(name)
        path.setContent(data)
        return path.path

    def test_load(self):
        """
        A file is read; its directory is the configuration directory and
        the current directory the queue directory.
        """
        path = self.write(b"smtps { port = 2525; }\n")
        cfg = loadConfiguration(path)
        self.assertIsInstance(cfg, Configuration)
        self.assertEqual(cfg.path, os.path.abspath(path))
        self.assertEqual(cfg.configDirectory, self.dir.path)
        self.assertEqual(cfg.queueDirectory, os.getcwd())
        self.assertEqual(cfg.section("smtps")["port"], 2525)

    def test_queueDirectory(self):
        """
        The queue directory can be given.
        """
        path = self.write(b"")
        cfg = loadConfiguration(path, queueDirectory="/var/spool/smx")
        self.assertEqual(cfg.queueDirectory, "/var/spool/smx")
        self.assertEqual(cfg.globals["SMAR_socket"], "/var/spool/smx/qmsmar/smarsock")

    def test_missing(self):
        """
        A missing file is a one-line error naming it.
        """
        path = self.dir.child("nope.conf").path
        e = self.assertRaises(ConfigError, loadConfiguration, path)
        self.assertEqual(str(e), "%s: cannot read: No such file or directory" % (path,))

    def test_directory(self):
        """
        A directory is not a configuration file.
        """
        e = self.assertRaises(ConfigError, loadConfiguration, self.dir.path)
        self.assertEqual(
            str(e), "%s: is a directory, not a configuration file" % (self.dir.path,)
        )

    def test_unreadable(self):
        """
        A file that cannot be opened is an error naming it.
        """
        if os.getuid() == 0:
            raise self.skipTest("root can read any file")
        path = self.write(b"")
        os.chmod(path, 0)
        e = self.assertRaises(ConfigError, loadConfiguration, path)
        self.assertEqual(str(e), "%s: cannot read: Permission denied" % (path,))

    def test_notUTF8(self):
        """
        A file that is not UTF-8 is an error naming the line and column.
        """
        path = self.write(b"hostname = x;\n  ident = \xff;\n")
        e = self.assertRaises(ConfigError, loadConfiguration, path)
        self.assertEqual(str(e), "%s:2:11: not valid UTF-8 text" % (path,))

    def test_notUTF8LineEnds(self):
        """
        The line of a byte that is not UTF-8 counts CR, CR LF and LF line
        ends, as the grammar does.
        """
        for end in (b"\n", b"\r\n", b"\r"):
            path = self.write(
                b"# x\nhostname = x;\n  ident = \xff;\n".replace(b"\n", end)
            )
            e = self.assertRaises(ConfigError, loadConfiguration, path)
            self.assertEqual(str(e), "%s:3:11: not valid UTF-8 text" % (path,), end)

    def test_utf8(self):
        """
        UTF-8 text (and a byte order mark) is fine.
        """
        path = self.write(
            '\ufeffqmgr { log { ident = "smX-\u00e9"; } }'.encode("utf-8")
        )
        cfg = loadConfiguration(path)
        self.assertEqual(cfg.section("qmgr").section("log")["ident"], "smX-\u00e9")

    def test_errorNamesFileAsGiven(self):
        """
        Errors name the file as it was given.
        """
        path = self.write(b"qmgr ;")
        e = self.assertRaises(ConfigError, loadConfiguration, path)
        self.assertEqual(str(e), "%s:1:6: expected '=' or '{' after 'qmgr'" % (path,))
        self.assertEqual(e.filename, path)


class PathTests(SynchronousTestCase):
    """
    Relative paths are resolved as seed §5.6 says.
    """

    def setUp(self):
        self.cfg = configurationFromText(
            "CDB_base_directory = cdb/;\n"
            "SMAR_socket = smar/sock;\n"
            "qmgr { conf = qconf.db; control_socket = ctl; "
            "DEFEDB { base_directory = defedb; log_directory = /fast/log; } }\n"
            "smar { aliases { name = aliases.db; } mailertable { name = maps/mt; } "
            "access { name = /abs/access.db; } }\n"
            "map users { type = hash; file = users.db; }\n"
            "smtps { pass_fd_socket = smtps/fd; path = bin/smtps; "
            "tls { cert_file = tls/cert.pem; key_file = tls/key.pem; CAcert_path = ca; } "
            "pmilter { socket = pm.sock; } }\n"
            "smtpc { LMTP_socket = lmtp; tls { CAcert_file = ca.pem; } }\n"
            "qmgr2 { mcp_type = wait; path = x; arguments = x; socket { name = q2; } }\n",
            queueDirectory="/var/spool/smx",
            configDirectory="/etc/smx",
        )

    def test_configRelative(self):
        """
        Maps, the conf map and TLS files are relative to the configuration
        directory.
        """
        c = self.cfg
        self.assertEqual(c.section("qmgr")["conf"], "/etc/smx/qconf.db")
        smar = c.section("smar")
        self.assertEqual(smar.section("aliases")["name"], "/etc/smx/aliases.db")
        self.assertEqual(smar.section("mailertable")["name"], "/etc/smx/maps/mt")
        self.assertEqual(smar.section("access")["name"], "/abs/access.db")
        self.assertEqual(c.section("map", "users")["file"], "/etc/smx/users.db")
        tls = c.section("smtps").section("tls")
        self.assertEqual(tls["cert_file"], "/etc/smx/tls/cert.pem")
        self.assertEqual(tls["key_file"], "/etc/smx/tls/key.pem")
        self.assertEqual(tls["CAcert_path"], "/etc/smx/ca")
        self.assertEqual(
            c.section("smtpc").section("tls")["CAcert_file"], "/etc/smx/ca.pem"
        )

    def test_queueRelative(self):
        """
        Sockets, databases and programs are relative to the queue
        directory.
        """
        c = self.cfg
        self.assertEqual(c.globals["CDB_base_directory"], "/var/spool/smx/cdb/")
        self.assertEqual(c.globals["SMAR_socket"], "/var/spool/smx/smar/sock")
        self.assertEqual(c.globals["SMTPS_socket"], "/var/spool/smx/qmsmtps/smtpssock")
        q = c.section("qmgr")
        self.assertEqual(q["control_socket"], "/var/spool/smx/ctl")
        self.assertEqual(q.section("DEFEDB")["base_directory"], "/var/spool/smx/defedb")
        self.assertEqual(q.section("DEFEDB")["log_directory"], "/fast/log")
        s = c.section("smtps")
        self.assertEqual(s["pass_fd_socket"], "/var/spool/smx/smtps/fd")
        self.assertEqual(s["path"], "/var/spool/smx/bin/smtps")
        self.assertEqual(s.section("pmilter")["socket"], "/var/spool/smx/pm.sock")
        self.assertEqual(c.section("smtpc")["LMTP_socket"], "/var/spool/smx/lmtp")
        self.assertEqual(
            c.section("qmgr2").section("socket")["name"], "/var/spool/smx/q2"
        )

    def test_defaultDirectories(self):
        """
        Without directories, both are the current directory.
        """
        c = configurationFromText("")
        self.assertEqual(c.queueDirectory, os.getcwd())
        self.assertEqual(c.configDirectory, os.getcwd())
        self.assertIsNone(c.path)
        c = defaultConfiguration(queueDirectory="/q")
        self.assertEqual((c.configDirectory, c.queueDirectory), ("/q", "/q"))
        self.assertIsNone(c.filename)


class SectionTests(SynchronousTestCase):
    """
    Tests for L{Section} and L{Configuration.section}.
    """

    def test_unnamedAndNamed(self):
        """
        C{section(kw)} is the unnamed section; C{section(kw, name)} a
        named one, case-insensitively.
        """
        c = configurationFromText("smtps { port = 1; }\nsmtps MSA { port = 587; }")
        self.assertEqual(c.section("smtps")["port"], 1)
        self.assertEqual(c.section("smtps", "MSA")["port"], 587)
        self.assertIs(c.section("smtps", "msa"), c.section("smtps", "MSA"))
        self.assertEqual(c.section("smtps", "MSA").name, "MSA")
        self.assertEqual(c.section("smtps", "MSA").keyword, "smtps")
        self.assertEqual([s.name for s in c.sections("smtps")], [None, "MSA"])

    def test_onlyNamed(self):
        """
        With one named section, C{section(kw)} is that one; with several,
        the defaults.
        """
        c = configurationFromText("smtps MTA { port = 25; }")
        self.assertEqual(c.section("smtps").name, "MTA")
        c = configurationFromText("smtps A { port = 25; } smtps B { port = 26; }")
        self.assertIsNone(c.section("smtps")["port"])
        self.assertIsNone(c.section("smtps").position)

    def test_absent(self):
        """
        An absent section has its defaults, and is always the same object.
        """
        c = configurationFromText("")
        s = c.section("qmgr")
        self.assertIsInstance(s, Section)
        self.assertIs(c.section("qmgr"), s)
        self.assertEqual(s["AQ_max_entries"], 8192)
        self.assertFalse(s.isSet("AQ_max_entries"))
        self.assertEqual(c.sections("qmgr"), [])
        self.assertEqual(s.section("IBDB")["max_open_TAs"], 100)
        self.assertEqual(c.section("smar").sections("dnsbl"), [])

    def test_notFound(self):
        """
        A named section that is not there is a L{ConfigError} (and a
        C{KeyError}).
        """
        c = configurationFromText("smtps MTA { }")
        e = self.assertRaises(SectionNotFound, c.section, "smtps", "MSA")
        self.assertIsInstance(e, ConfigError)
        self.assertIsInstance(e, KeyError)
        self.assertEqual(
            str(e), "smx.conf: no section 'smtps MSA' in the configuration"
        )

    def test_unknownNames(self):
        """
        Asking for an option or section kind the table does not have is a
        C{KeyError}.
        """
        c = configurationFromText("")
        self.assertRaises(KeyError, c.section("smtps").__getitem__, "nonsense")
        self.assertRaises(KeyError, c.section("smtps").isSet, "nonsense")
        self.assertRaises(KeyError, c.section, "nonsense")
        self.assertRaises(KeyError, c.section("smtps").section, "IBDB")
        self.assertEqual(c.section("smtps").get("nonsense", 7), 7)

    def test_maps(self):
        """
        Map declarations are listed by the global section and by smar,
        wherever they were declared.
        """
        c = configurationFromText(
            "map a { type = passwd; }\nsmar { map b { type = passwd; } }"
        )
        self.assertEqual([m.name for m in c.sections("map")], ["a", "b"])
        self.assertEqual(
            [m.name for m in c.section("smar").sections("map")], ["a", "b"]
        )
        self.assertEqual(c.section("smar").section("map", "A").name, "a")
        c = configurationFromText("map a { type = passwd; }")
        self.assertEqual([m.name for m in c.section("smar").sections("map")], ["a"])

    def test_allSections(self):
        """
        C{sections()} lists the top-level sections in file order.
        """
        c = configurationFromText(
            "smtpc { } qmgr { } smtps X { } map m { type = passwd; }"
        )
        self.assertEqual(
            [(s.keyword, s.name) for s in c.sections()],
            [("smtpc", None), ("qmgr", None), ("smtps", "X"), ("map", "m")],
        )

    def test_positions(self):
        """
        Sections and options know where they were written, for the errors
        of the components.
        """
        c = configurationFromText(
            "\nsmtps {\n  tls { cert_file = c; key_file = k; }\n}", "my.conf"
        )
        tls = c.section("smtps").section("tls")
        self.assertEqual(tls.position, (3, 3))
        self.assertEqual(tls.positionOf("key_file"), (3, 24))
        self.assertEqual(tls.where("key_file"), "my.conf:3:24")
        self.assertEqual(tls.where(), "my.conf:3:3")
        e = tls.error("cannot load the key", "key_file")
        self.assertEqual(str(e), "my.conf:3:24: cannot load the key")
        self.assertEqual(tls.describe(), "section 'smtps.tls'")
        self.assertEqual(c.globals.describe(), "the global section")
        self.assertEqual(c.section("smtps").setOptions(), [])
        self.assertEqual(tls.setOptions(), ["cert_file", "key_file"])

    def test_reexports(self):
        """
        The API is re-exported from L{smx.config}.
        """
        for name in (
            "loadConfiguration",
            "defaultConfiguration",
            "configurationFromText",
            "parseConfiguration",
            "ConfigError",
            "Configuration",
            "Section",
            "splitAddress",
        ):
            self.assertTrue(hasattr(smx.config, name), name)
        self.assertIs(parseConfiguration, configurationFromText)


class OverrideTests(SynchronousTestCase):
    """
    Tests for L{Section.override}: command-line options after the file.
    """

    def test_override(self):
        """
        An override replaces the value from the file.
        """
        c = configurationFromText("qmgr { smtpc_max_connections = 50; }")
        q = c.section("qmgr")
        q.override("smtpc_max_connections", 200)
        self.assertEqual(q["smtpc_max_connections"], 200)
        q.override("retry_min_delay", "10m")
        self.assertEqual(q["retry_min_delay"], 600.0)
        self.assertTrue(q.isSet("retry_min_delay"))

    def test_badOverride(self):
        """
        A bad value or a contradiction is a L{ConfigError}.
        """
        q = configurationFromText("").section("qmgr")
        e = self.assertRaises(ConfigError, q.override, "smtpc_max_connections", 0)
        self.assertEqual(
            str(e),
            "command line: invalid value '0' for option "
            "'smtpc_max_connections' in section 'qmgr': 0 is out of range (1..100000)",
        )
        q.override("smtpc_initial_connections", 500)
        e = self.assertRaises(ConfigError, q.configuration.reconcile)
        self.assertEqual(
            str(e),
            "smx.conf: smtpc_initial_connections (500) must not be larger than "
            "smtpc_max_connections (100, the default)",
        )

    def test_overridesTogether(self):
        """
        Overrides are checked together: C{-C 7 -c 3}.
        """
        c = configurationFromText("")
        q = c.section("qmgr")
        q.override("smtpc_max_connections", 7)
        q.override("smtpc_initial_connections", 3)
        c.reconcile()
        self.assertEqual(q["smtpc_initial_connections"], 3)
