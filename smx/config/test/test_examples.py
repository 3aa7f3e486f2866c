# -*- test-case-name: smx.config.test.test_examples -*-
"""
The example configurations of the seed README (§5.2, §5.3, §5.5, §5.8.1,
§5.8.2, §5.9.1), stored in C{smx/config/test/data/seed-*.conf}, are
accepted with the values they show; the broken configurations in
C{data/broken/NAME.conf} are rejected with exactly the message in
C{NAME.err} (C{FILE} stands for the file name).
"""

import io
import os
import re

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from smx.config import ConfigError, loadConfiguration
from smx.scripts.config import run

DATA = FilePath(__file__).sibling("data")
QUEUE = "/var/spool/smx"


def load(name):
    return loadConfiguration(DATA.child(name).path, queueDirectory=QUEUE)


def withoutEffect(configuration):
    """
    The C{(section, option)} of each "has no effect" warning, in order;
    any other warning fails the test that uses it.
    """
    found = []
    for line in configuration.warnings:
        m = re.match(
            r".*: warning: option '(\w+)' in section '([^']+)' has no effect: ", line
        )
        assert m is not None, line
        found.append((m.group(2), m.group(1)))
    return found


#: the options of seed §5.2 that MCP uses in split mode
MCP = ["mcp_type", "pass_fd_socket", "user", "path", "arguments"]


class SeedExampleTests(SynchronousTestCase):
    """
    The seed's examples, value by value.
    """

    def test_section52(self):
        """
        §5.2: the abbreviated example (both fragments joined).
        """
        c = load("seed-5.2.conf")
        s = c.section("smtps")
        self.assertEqual(s["port"], 25)
        self.assertEqual(s["mcp_type"], "pass")
        self.assertEqual(s["pass_fd_socket"], QUEUE + "/smtps/smtpsfd")
        self.assertEqual(s["user"], "smxs")
        self.assertEqual(s["path"], "/usr/libexec/smtps")
        self.assertEqual(s["arguments"], "smtps -f /etc/smx/smx.conf")
        q = c.section("qmgr")
        self.assertEqual(q["mcp_type"], "wait")
        self.assertEqual(q["user"], "smxq")
        self.assertEqual(q["restartdependencies"], ["smtps", "smtpc", "smar"])
        self.assertEqual(q["path"], "/usr/libexec/qmgr")
        self.assertEqual(q["arguments"], "qmgr -f /etc/smx/smx.conf")
        # the sections set path: split mode, the MCP uses them all
        self.assertEqual(withoutEffect(c), [])

    def test_section52PassId(self):
        """
        §5.2 item 13: four smtpc processes with C{pass_id}.
        """
        s = load("seed-5.2-pass-id.conf").section("smtpc")
        self.assertEqual(s["pass_id"], "-i")
        self.assertEqual((s["min_processes"], s["max_processes"]), (4, 4))
        self.assertEqual(s["path"], "/usr/libexec/smtpc")
        self.assertEqual(s["arguments"], "smtpc -f smx.conf")

    def test_section53(self):
        """
        §5.3: the example configuration file.
        """
        c = load("seed-5.3.conf")
        self.assertEqual(c.globals["CDB_base_directory"], "/var/spool/smx/")
        q = c.section("qmgr")
        self.assertEqual(q["AQ_max_entries"], 8192)
        self.assertEqual(q["smtpc_initial_connections"], 19)
        self.assertEqual(q["smtpc_max_connections"], 101)
        self.assertEqual(q["smtps_max_open_connections"], 5)
        self.assertEqual(q["smtps_max_connection_rate"], 160)
        self.assertEqual(q["max_errors_per_bounce"], 16)
        self.assertEqual((q["wait_for_server"], q["wait_for_client"]), (4.0, 4.0))
        self.assertEqual(q["restartdependencies"], ["smtps", "smtpc", "smar"])
        s = c.section("smtps")
        self.assertEqual(s["flags"], frozenset({"8bitmime"}))
        self.assertEqual(s["CDB_gid"], 261)
        self.assertEqual(s["io_timeout"], 61.0)
        self.assertEqual(s["pass_fd_socket"], QUEUE + "/smtps/smtpsf")
        self.assertEqual(s["path"], "/usr/libexec/smtps")
        t = c.section("smtpc")
        self.assertEqual((t["log_level"], t["debug_level"]), (12, 1))
        self.assertEqual((t["io_timeout"], t["wait_for_server"]), (66.0, 4.0))
        self.assertEqual(t["user"], "smxc")
        m = c.section("smar")
        self.assertEqual(m["log_level"], 12)
        self.assertEqual(m["nameserver"], ["10.10.10.9", "127.0.0.1"])
        self.assertEqual(m["DNS_timeout"], 6.0)
        self.assertEqual(m["restartdependencies"], ["smtps", "qmgr"])
        self.assertEqual(m["user"], "smxm")
        # split mode: the MCP uses the options of §5.2
        self.assertEqual(
            [w for w in withoutEffect(c) if w[1] in MCP + ["restartdependencies"]],
            [],
        )

    def test_section55(self):
        """
        §5.5: log sections.
        """
        c = load("seed-5.5.conf")
        log = c.section("qmgr").section("log")
        self.assertEqual((log["facility"], log["ident"]), ("daemon", "smX-qmgr"))
        log = c.section("smtps").section("log")
        self.assertEqual((log["facility"], log["ident"]), ("mail", "smX-MTA"))
        self.assertEqual(log["options"], frozenset())

    def checkMaps(self, c):
        maps = {m.name: m for m in c.section("smar").sections("map")}
        self.assertEqual(
            list(maps), ["localusers", "otherusers", "password", "seq1", "seq2"]
        )
        self.assertEqual(maps["localusers"]["type"], "hash")
        self.assertEqual(maps["localusers"]["file"], "/etc/smx/localusr.db")
        self.assertEqual(maps["otherusers"]["file"], "/etc/smx/otherusr.db")
        self.assertEqual(maps["password"]["type"], "passwd")
        self.assertEqual(maps["seq1"]["type"], "sequence")
        self.assertEqual(maps["seq1"]["maps"], ["localusers", "otherusers"])
        self.assertEqual(maps["seq2"]["maps"], ["password", "otherusers"])
        self.assertEqual([m.name for m in c.sections("map")], list(maps))

    def test_section581(self):
        """
        §5.8.1: map declarations inside smar.
        """
        self.checkMaps(load("seed-5.8.1.conf"))

    def test_section581TopLevel(self):
        """
        §5.8.1: map declarations at the top level, as the seed prints them.
        """
        self.checkMaps(load("seed-5.8.1-toplevel.conf"))

    def test_section582(self):
        """
        §5.8.2: a DNS blacklist; without the access map it is a warning.
        """
        c = load("seed-5.8.2.conf")
        [dnsbl] = c.section("smar").sections("dnsbl")
        self.assertEqual((dnsbl["domain"], dnsbl["tag"]), ("dnsbl.tld", "dnsbltld"))
        self.assertEqual(len(c.warnings), 1)
        self.assertIn("dnsbl needs the access map", c.warnings[0])

    def test_section591(self):
        """
        §5.9.1: two SMTP servers, MTA and MSA, with the §5.9.1 spellings
        C{type}, C{trusted_auth_mechs} and C{auth_flags}.
        """
        c = load("seed-5.9.1.conf")
        self.assertEqual([s.name for s in c.sections("smtps")], ["MTA", "MSA"])
        mta, msa = c.section("smtps", "MTA"), c.section("smtps", "MSA")
        self.assertEqual((mta["port"], msa["port"]), (25, 587))
        self.assertEqual((mta["mcp_type"], msa["type"]), ("pass", "pass"))
        self.assertEqual(mta["pass_fd_socket"], QUEUE + "/smtps/mtafd")
        self.assertEqual(msa["pass_fd_socket"], QUEUE + "/smtps/msafd")
        self.assertEqual(mta["user"], "sm9s")
        self.assertEqual(msa["arguments"], "smtps -N MSA -f /etc/smx/smx.conf")
        self.assertEqual(mta.section("log")["ident"], "smX-MTA")
        self.assertEqual(msa.section("log")["ident"], "smX-MSA")
        self.assertEqual(
            msa.section("auth")["trusted_mechs"], ["CRAM-MD5", "DIGEST-MD5"]
        )
        self.assertEqual(msa.section("auth")["flags"], frozenset({"noplaintext"}))
        self.assertEqual(msa["trusted_auth_mechs"], ["CRAM-MD5", "DIGEST-MD5"])
        self.assertIsNone(mta.section("auth")["trusted_mechs"])
        # split mode: the MCP uses the options of §5.2
        self.assertEqual(withoutEffect(c), [])

    def test_defaultConfiguration(self):
        """
        The embedded default configuration that C{smx default-config}
        writes (C{smx/default/smx.conf}) is valid.
        """
        path = (
            FilePath(__file__)
            .parent()
            .parent()
            .parent()
            .child("default")
            .child("smx.conf")
        )
        if not path.exists():
            raise self.skipTest("no smx/default/smx.conf")
        c = loadConfiguration(path.path, queueDirectory=QUEUE)
        self.assertEqual(c.warnings, [])

    def test_allAcceptedByCommand(self):
        """
        C{smx config -f} accepts every example (exit status 0).
        """
        names = sorted(n for n in os.listdir(DATA.path) if n.endswith(".conf"))
        self.assertEqual(len(names), 8)
        for name in names:
            out, err = io.StringIO(), io.StringIO()
            status = run(["-f", DATA.child(name).path], out, err)
            self.assertEqual(status, 0, (name, err.getvalue()))
            self.assertTrue(out.getvalue(), name)


class BrokenExampleTests(SynchronousTestCase):
    """
    Broken configurations and their exact messages.
    """

    def test_broken(self):
        """
        Every C{broken/NAME.conf} is rejected with C{NAME.err}, by
        L{loadConfiguration} and by C{smx config} (exit status 2, the one
        line on standard error, nothing on standard output).
        """
        broken = DATA.child("broken")
        names = sorted(n[:-5] for n in os.listdir(broken.path) if n.endswith(".conf"))
        self.assertTrue(len(names) >= 10)
        for name in names:
            path = broken.child(name + ".conf").path
            expected = broken.child(name + ".err").getContent().decode("utf-8")
            expected = expected.replace("FILE", path)
            e = self.assertRaises(ConfigError, loadConfiguration, path)
            self.assertEqual(str(e) + "\n", expected, name)
            out, err = io.StringIO(), io.StringIO()
            self.assertEqual(run(["-f", path], out, err), 2, name)
            self.assertEqual(err.getvalue(), expected)
            self.assertEqual(out.getvalue(), "")
