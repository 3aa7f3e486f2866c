# -*- test-case-name: smx.config.test.test_options -*-
"""
Tests for the option table L{smx.config.options}: it is complete (every
option of seed §5.2-§5.10), consistent, and its defaults, units and bounds
are what the seed and the documentation say.
"""

from twisted.trial.unittest import SynchronousTestCase

from smx.config import ConfigError, configurationFromText, defaultConfiguration
from smx.config import options as table
from smx.config.grammar import parseValueText

#: every option and subsection the seed lists, by section path
SEED = {
    (): [
        "hostname",
        "CDB_base_directory",
        "SMAR_socket",
        "SMTPC_socket",
        "SMTPS_socket",
    ],
    ("qmgr",): [
        "AQ_max_entries",
        "SMAR_timeout",
        "debug_level",
        "control_socket",
        "DEFEDB",
        "delivery_timeout",
        "DSN_max_delay",
        "aliases",
        "flags",
        "IBDB",
        "IQDB",
        "log_level",
        "max_errors_per_bounce",
        "min_disk_space",
        "OCC_max_entries",
        "ok_disk_space",
        "queuereturn_timeout",
        "queuedelay_timeout",
        "retry_max_delay",
        "retry_min_delay",
        "smtpc_initial_connections",
        "smtpc_max_connections",
        "smtps_max_connection_rate",
        "smtps_max_open_connections",
        "tests",
        "wait_for_client",
        "wait_for_server",
        "conf",
        "log",
    ],
    ("qmgr", "DEFEDB"): [
        "base_directory",
        "log_directory",
        "page_size",
        "cache_size",
        "KBytes_written_for_checkpointing",
        "delay_between_2_checkpoints",
    ],
    ("qmgr", "IBDB"): ["max_commit_delay", "size", "max_open_TAs"],
    ("qmgr", "IQDB"): ["max_cache_entries", "hash_table_entries"],
    ("smar",): [
        "dnsbl",
        "DNS_flags",
        "DNS_timeout",
        "log_level",
        "nameserver",
        "local_user_map",
        "address_delimiter",
        "aliases",
        "mailertable",
        "access",
        "map",
        "log",
    ],
    ("smar", "dnsbl"): ["domain", "tag"],
    ("smar", "aliases"): ["name", "flags"],
    ("smar", "mailertable"): ["name"],
    ("smar", "access"): ["name"],
    ("smar", "map"): ["type", "file", "mapname", "path", "address", "port", "maps"],
    ("map",): ["type", "file", "mapname", "path", "address", "port", "maps"],
    ("smtps",): [
        "CDB_gid",
        "daemon_address",
        "pass_fd_socket",
        "flags",
        "id",
        "io_timeout",
        "max_threads",
        "max_wait_threads",
        "min_wait_threads",
        "max_bad_commands_per_session",
        "max_recipients",
        "max_recipients_per_session",
        "max_recipients_per_transaction",
        "max_hops",
        "max_message_size",
        "processes",
        "max_transactions",
        "tls",
        "auth",
        "pmilter",
        "trusted_auth_mechs",
        "auth_flags",
        "log",
        "log_level",
    ],
    ("smtps", "tls"): ["cert_file", "key_file", "CAcert_file", "CAcert_path", "flags"],
    ("smtps", "auth"): ["flags", "trusted_mechs"],
    ("smtps", "pmilter"): ["socket", "timeout"],
    ("smtpc",): [
        "debug_level",
        "io_timeout",
        "LMTP_socket",
        "log_level",
        "max_wait_threads",
        "min_wait_threads",
        "remote_port",
        "processes",
        "wait_for_server",
        "tls",
        "log",
    ],
    ("smtpc", "tls"): ["cert_file", "key_file", "CAcert_file", "CAcert_path"],
}

#: the options of seed §5.2, in every component section
MCP = [
    "mcp_type",
    "type",
    "port",
    "address",
    "socket",
    "min_processes",
    "max_processes",
    "pass_fd_socket",
    "user",
    "group",
    "restartdependencies",
    "path",
    "arguments",
    "pass_id",
    "use_id_in_logfile_name",
]


def spec(path):
    s = table.ROOT
    for keyword in path:
        s = s.subsection(keyword)
    return s


class CompletenessTests(SynchronousTestCase):
    """
    Every option of the seed is in the table.
    """

    def test_seedOptions(self):
        """
        Each section has the options and subsections the seed lists.
        """
        for path, names in SEED.items():
            s = spec(path)
            self.assertIsNotNone(s, path)
            for name in names:
                self.assertTrue(
                    s.option(name) is not None or s.subsection(name) is not None,
                    "%s missing in %s" % (name, path),
                )

    def test_mcpOptions(self):
        """
        The options of seed §5.2 are valid in every component section.
        """
        for keyword in ("qmgr", "smar", "smtps", "smtpc"):
            s = table.ROOT.subsection(keyword)
            for name in MCP:
                self.assertTrue(
                    s.option(name) is not None or s.subsection(name) is not None,
                    "%s missing in %s" % (name, keyword),
                )
        self.assertEqual(
            [o.name for o in spec(("smtps", "socket")).options],
            ["name", "umask", "user", "group"],
        )

    def test_logSection(self):
        """
        C{log} has the options of seed §5.5 (and smx's C{file}).
        """
        for keyword in ("qmgr", "smar", "smtps", "smtpc", "lmtpd"):
            self.assertEqual(
                [o.name for o in spec((keyword, "log")).options],
                ["facility", "ident", "options", "file"],
            )

    def test_flags(self):
        """
        The flag sets are those of the seed.
        """
        self.assertEqual(
            set(spec(("smtps",)).option("flags").type.choices),
            {
                "8bitmime",
                "background",
                "delay_checks",
                "lmtp_does_not_imply_relaying",
                "serialize_accept",
                "softbounce",
                "access",
            },
        )
        self.assertEqual(
            set(spec(("smtps", "auth")).option("flags").type.choices),
            {
                "noplaintext",
                "noactive",
                "nodictionary",
                "forward_secrecy",
                "noanonymous",
                "pass_credentials",
                "mutual_auth",
                "allow_plaintext_without_tls",
            },
        )
        self.assertEqual(
            set(spec(("qmgr",)).option("flags").type.choices),
            {"reuse_connection", "header_only_in_bounce", "dsn_in_mime_format"},
        )
        self.assertEqual(
            set(spec(("smar", "aliases")).option("flags").type.choices),
            {
                "localpart",
                "local_domains",
                "all_domains",
                "replace_macros",
                "preserve_domain",
            },
        )
        self.assertEqual(
            set(spec(("smar",)).option("DNS_flags").type.choices),
            {"use_tcp", "use_connect"},
        )
        self.assertEqual(
            set(spec(("smtps", "tls")).option("flags").type.choices),
            {"allow_relaying_if_verified", "check_access_map_for_relaying"},
        )


class ConsistencyTests(SynchronousTestCase):
    """
    The table is well-formed.
    """

    def test_everyOptionDocumented(self):
        """
        Every option and section has a seed reference and documentation.
        """
        for path, s in table.ROOT.walk():
            self.assertTrue(s.doc, path)
            self.assertTrue(s.ref, path)
            for o in s.options:
                self.assertTrue(o.doc, (path, o.name))
                self.assertTrue(o.ref.startswith("§") or o.ref == "smx", (path, o.name))

    def test_defaultsConvert(self):
        """
        Every default is valid for its own type and within its bounds.
        """
        for path, s in table.ROOT.walk():
            for o in s.options:
                if o.default is not None:
                    o.type.convert(parseValueText(o.default))

    def test_aliasesPointToOptions(self):
        """
        Every alias names an existing option of the same kind of value.
        """
        for path, s in table.ROOT.walk():
            for o in s.options:
                if o.aliasOf is None:
                    continue
                target = s
                for keyword in o.aliasOf[:-1]:
                    target = target.subsection(keyword)
                option = target.option(o.aliasOf[-1])
                self.assertIsNotNone(option, (path, o.name))
                self.assertEqual(option.type.typeName, o.type.typeName)
                self.assertIsNone(o.default)


class DefaultTests(SynchronousTestCase):
    """
    The defaults in force without a configuration file.
    """

    def setUp(self):
        self.cfg = defaultConfiguration(
            queueDirectory="/var/spool/smx", configDirectory="/etc/smx"
        )

    def test_seedDefaults(self):
        """
        The defaults the seed gives.
        """
        c = self.cfg
        self.assertEqual(c.section("smtps")["max_bad_commands_per_session"], 3)
        self.assertEqual(c.section("smtps")["max_hops"], 21)
        self.assertEqual(c.section("smtps")["max_message_size"], 8 * 1024 * 1024)
        self.assertEqual(c.section("smtps")["min_processes"], 1)
        self.assertEqual(c.section("smtps")["max_processes"], 1)
        self.assertEqual(c.section("smtps")["address"], "0.0.0.0")
        self.assertEqual(c.section("smtpc")["LMTP_socket"], "/var/spool/smx/lmtpsock")
        self.assertEqual(c.section("smtpc")["remote_port"], 25)
        self.assertEqual(c.section("smar")["address_delimiter"], "+")
        self.assertEqual(
            c.section("smar").section("aliases")["name"], "/etc/smx/aliases.db"
        )
        self.assertEqual(
            c.section("smar").section("mailertable")["name"], "/etc/smx/mt"
        )
        self.assertEqual(
            c.section("smar").section("access")["name"], "/etc/smx/access.db"
        )
        self.assertEqual(c.section("qmgr")["conf"], "/etc/smx/conf.db")
        self.assertEqual(c.globals["CDB_base_directory"], "/var/spool/smx/")
        # §5.7.1: -C 100, -c 10, -O R=100, -O 0=100
        self.assertEqual(c.section("qmgr")["smtpc_max_connections"], 100)
        self.assertEqual(c.section("qmgr")["smtpc_initial_connections"], 10)
        self.assertEqual(c.section("qmgr")["smtps_max_connection_rate"], 100)
        self.assertEqual(c.section("qmgr")["smtps_max_open_connections"], 100)

    def test_smxDefaults(self):
        """
        The defaults smx chose where the seed gives none.
        """
        q = self.cfg.section("qmgr")
        self.assertEqual(q["queuereturn_timeout"], 5 * 86400.0)
        self.assertEqual(q["queuedelay_timeout"], 4 * 3600.0)
        self.assertEqual(q["retry_min_delay"], 300.0)
        self.assertEqual(q["retry_max_delay"], 3600.0)
        self.assertEqual(q["AQ_max_entries"], 8192)
        self.assertEqual(q["min_disk_space"], 100 * 1024 * 1024)
        self.assertEqual(q["ok_disk_space"], 200 * 1024 * 1024)
        self.assertEqual(q.section("IBDB")["max_commit_delay"], 0.01)
        self.assertEqual(q.section("IBDB")["max_open_TAs"], 100)
        self.assertEqual(q.section("DEFEDB")["base_directory"], "/var/spool/smx/defedb")
        self.assertEqual(q["flags"], frozenset())
        self.assertEqual(q["aliases"], "localpart")
        s = self.cfg.section("smtps")
        self.assertEqual(s["io_timeout"], 300.0)
        self.assertEqual(s["daemon_address"], [])
        self.assertEqual(s["flags"], frozenset())
        self.assertIsNone(s["port"])
        self.assertIsNone(s.section("tls")["cert_file"])
        self.assertEqual(self.cfg.section("smar")["nameserver"], [])
        self.assertEqual(
            self.cfg.section("smar").section("aliases")["flags"],
            frozenset({"localpart"}),
        )
        self.assertEqual(self.cfg.section("lmtpd")["socket"], "/var/spool/smx/lmtpsock")
        self.assertEqual(
            self.cfg.globals["SMAR_socket"], "/var/spool/smx/qmsmar/smarsock"
        )

    def test_logDefaults(self):
        """
        Components log at level 9 (seed §5.5) to Twisted's log.
        """
        for keyword in ("qmgr", "smar", "smtps", "smtpc", "lmtpd"):
            section = self.cfg.section(keyword)
            self.assertEqual(section["log_level"], 9)
            self.assertIsNone(section.section("log")["facility"])
            self.assertFalse(section.section("log").isSet("facility"))
            self.assertEqual(section.section("log")["options"], frozenset())

    def test_hostname(self):
        """
        The default host name is the machine's, computed when asked for.
        """
        self.assertTrue(self.cfg.globals["hostname"])
        self.assertFalse(self.cfg.globals.isSet("hostname"))


class ValueErrorTests(SynchronousTestCase):
    """
    A value that does not fit its option is an error naming the option,
    its section and the exact position of the value.
    """

    def error(self, text):
        return str(self.assertRaises(ConfigError, configurationFromText, text))

    def test_typeErrors(self):
        """
        Wrong types.
        """
        self.assertEqual(
            self.error("smtps { port = abc; }"),
            "smx.conf:1:16: invalid value for option 'port' in section 'smtps': "
            "'abc' is not an integer",
        )
        self.assertEqual(
            self.error("qmgr {\n  queuereturn_timeout = 5 days;\n}"),
            "smx.conf:2:25: invalid value for option 'queuereturn_timeout' in "
            "section 'qmgr': unknown time unit 'days' in '5 days' "
            "(valid: w, d, h, m, s, ms, us)",
        )
        self.assertEqual(
            self.error("smtps { max_message_size = big; }"),
            "smx.conf:1:28: invalid value for option 'max_message_size' in "
            "section 'smtps': 'big' is not a size (e.g. 8MB)",
        )
        self.assertEqual(
            self.error("smtps { mcp_type = spawn; }"),
            "smx.conf:1:20: invalid value for option 'mcp_type' in section "
            "'smtps': 'spawn' is not one of nostartaccept, accept, pass, wait",
        )
        self.assertEqual(
            self.error("smtps { io_timeout = { 1, 2 }; }"),
            "smx.conf:1:22: invalid value for option 'io_timeout' in section "
            "'smtps': expected a single value, not a list",
        )
        self.assertEqual(
            self.error("smtps { user = smx s; }"),
            "smx.conf:1:20: invalid value for option 'user' in section "
            "'smtps': expected ';' after 'smx' (quote a value that contains spaces)",
        )

    def test_messageSizeZero(self):
        """
        C{max_message_size = 0} is no limit (as the smtps documentation
        says); it does not ask for a C{min_disk_space} larger than it, and
        SMTPS gets 0 (EHLO offers SIZE without a number).
        """
        from smx.mail.listener import ServerSettings

        c = configurationFromText("smtps { max_message_size = 0; }")
        self.assertEqual(c.section("smtps")["max_message_size"], 0)
        self.assertEqual(c.warnings, [])
        settings = ServerSettings.fromSection(c.section("smtps"))
        self.assertEqual(settings.maxMessageSize, 0)
        self.assertEqual(
            self.error("smtps { max_message_size = 512B; }"),
            "smx.conf:1:28: invalid value for option 'max_message_size' in "
            "section 'smtps': 512B is out of range (0 or >= 1KB)",
        )

    def test_boundErrors(self):
        """
        Values out of bounds.
        """
        self.assertEqual(
            self.error("smtps { port = 70000; }"),
            "smx.conf:1:16: invalid value for option 'port' in section 'smtps': "
            "70000 is out of range (1..65535)",
        )
        self.assertEqual(
            self.error("smtps { io_timeout = 0; }"),
            "smx.conf:1:22: invalid value for option 'io_timeout' in section "
            "'smtps': 0 is out of range (>= 1s)",
        )
        self.assertEqual(
            self.error(
                "smtps { daemon_address = {%s}; }"
                % (", ".join(":%d" % (2500 + i) for i in range(17)),)
            ),
            "smx.conf:1:139: invalid value for option 'daemon_address' in section "
            "'smtps': at most 16 values are allowed, not 17",
        )
        self.assertEqual(
            self.error(
                "smar { nameserver = {1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4, 5.5.5.5}; }"
            ),
            "smx.conf:1:58: invalid value for option 'nameserver' in section "
            "'smar': at most 4 values are allowed, not 5",
        )
        self.assertEqual(
            self.error("qmgr { IBDB { max_commit_delay = 11s; } }"),
            "smx.conf:1:34: invalid value for option 'max_commit_delay' in "
            "section 'qmgr.IBDB': 11s is out of range (0s..10s)",
        )

    def test_addressErrors(self):
        """
        Daemon addresses and nameservers are checked.
        """
        self.assertEqual(
            self.error('smtps { daemon_address = { "127.0.0.1:", ":25" }; }'),
            "smx.conf:1:28: invalid value for option 'daemon_address' in section "
            "'smtps': missing port after ':' in '127.0.0.1:'",
        )
        self.assertEqual(
            self.error("smar { nameserver = { 10.10.10.9, ns.example.com }; }"),
            "smx.conf:1:35: invalid value for option 'nameserver' in section "
            "'smar': 'ns.example.com' is not an IP address",
        )

    def test_flagError(self):
        """
        An unknown flag names the flag and the valid ones.
        """
        self.assertEqual(
            self.error("smtps { flags = {8bitmime, acces}; }"),
            "smx.conf:1:28: invalid value for option 'flags' in section 'smtps': "
            "unknown flag 'acces' (valid: 8bitmime, background, delay_checks, "
            "lmtp_does_not_imply_relaying, serialize_accept, softbounce, "
            "access); did you mean 'access'?",
        )

    def test_addressDelimiter(self):
        """
        C{address_delimiter} is one character.
        """
        self.assertEqual(
            configurationFromText('smar { address_delimiter = "-"; }').section("smar")[
                "address_delimiter"
            ],
            "-",
        )
        self.assertIn(
            "is not a single character",
            self.error("smar { address_delimiter = ++; }"),
        )

    def test_units(self):
        """
        Units in the file become seconds and bytes.
        """
        c = configurationFromText(
            "qmgr { queuereturn_timeout = 4d 12h; min_disk_space = 1GB; "
            "ok_disk_space = 2097152; IBDB { max_commit_delay = 5000; size = 1MB; } }\n"
            'smtps { max_message_size = 8192; io_timeout = "1h 5m 12s"; }'
        )
        q = c.section("qmgr")
        self.assertEqual(q["queuereturn_timeout"], 4.5 * 86400)
        self.assertEqual(q["min_disk_space"], 1024**3)
        self.assertEqual(q["ok_disk_space"], 2 * 1024**3)
        self.assertEqual(q.section("IBDB")["max_commit_delay"], 0.005)
        self.assertEqual(q.section("IBDB")["size"], 1024 * 1024)
        self.assertEqual(c.section("smtps")["max_message_size"], 8 * 1024 * 1024)
        self.assertEqual(c.section("smtps")["io_timeout"], 3912.0)

    def test_smtpsIdIs8Bits(self):
        """
        The smtps C{id} is the 8-bit process identifier of App. C.1:
        0..255; a larger one is an error naming the option (it was taken
        and cut to its low byte).
        """
        for good in ("0", "255"):
            c = configurationFromText("smtps { id = %s; }" % (good,))
            self.assertEqual(c.section("smtps")["id"], int(good))
        self.assertIn(
            "invalid value for option 'id' in section 'smtps': 256 is out of "
            "range (0..255)",
            self.error("smtps { id = 256; }"),
        )
        self.assertIn("out of range", self.error("smtps MSA { id = -1; }"))


class SMTPSIdProgramTests(SynchronousTestCase):
    """
    C{smx config}, the program, on an smtps C{id} out of range.
    """

    def test_idOutOfRange(self):
        """
        C{smx config -f} exits with status 2 and one line naming the
        file, line and column of the value.
        """
        import os
        import subprocess
        import sys

        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "smx.conf")
        with open(path, "w") as f:
            f.write(
                'smtps {\n  daemon_address = { "127.0.0.1:2599" };\n  id = 300;\n}\n'
            )
        smx = os.path.join(os.path.dirname(sys.executable), "smx")
        p = subprocess.run(
            [smx, "config", "-f", path], capture_output=True, text=True, timeout=30
        )
        self.assertEqual(p.returncode, 2)
        self.assertEqual(
            p.stderr,
            "%s:3:8: invalid value for option 'id' in section 'smtps': 300 is "
            "out of range (0..255)\n" % (path,),
        )


class ReferenceTextTests(SynchronousTestCase):
    """
    The reference text of options whose meaning depends on the mode.
    """

    def test_smtpcProcesses(self):
        """
        C{processes} of C{smtpc} does not say that split mode has no SMTPC
        processes: it names what starts them (the MCP, C{min_processes}).
        """

        [option] = [o for o in table.SMTPC.options if o.name == "processes"]
        self.assertNotIn("does not have", option.inert)
        self.assertIn("min_processes", option.inert)
