# -*- test-case-name: smx.maps.test.test_createmap -*-
"""
Tests for L{smx.maps.createmap} and C{smx createmap}
(L{smx.scripts.createmap}).  These write real Berkeley DB files in
temporary directories and, where Debian's C{db5.3-util} is installed,
check them with C{db5.3_dump}.
"""

import io
import os
import shutil
import subprocess

from twisted.trial import unittest

from smx.maps.createmap import CreateMapError, createMap, parseMapText
from smx.maps.errors import MapTemporaryError
from smx.maps.hashmap import HashMap
from smx.log import Logger, MemorySink
from smx.scripts import createmap as script

DB_DUMP = shutil.which("db5.3_dump")


class ParseTests(unittest.TestCase):
    """
    The text formats accepted by createmap.
    """

    def test_bothFormats(self):
        """
        C{key value} and C{key: value} lines both work; keys are
        lower-cased, values kept; comments and blank lines are skipped.
        """
        entries, warnings = parseMapText(
            [
                "# comment\n",
                "\n",
                "MyAlias:  LocalUser\n",
                "mylist:  <user1@my.dom> <user2@my.dom>\n",
                "From:@Spammer.Domain  error:551 5.7.1 No spammers\n",
            ]
        )
        self.assertEqual(
            entries,
            [
                ("myalias", "LocalUser"),
                ("mylist", "<user1@my.dom> <user2@my.dom>"),
                ("from:@spammer.domain", "error:551 5.7.1 No spammers"),
            ],
        )
        self.assertEqual(warnings, [])

    def test_continuation(self):
        """
        A line starting with white space continues the previous value.
        """
        entries, _ = parseMapText(["list: <a@b>\n", "   <c@d>\n"])
        self.assertEqual(entries, [("list", "<a@b> <c@d>")])

    def test_malformedLine(self):
        """
        A key without a value is reported with its file name and line.
        """
        e = self.assertRaises(
            CreateMapError, parseMapText, ["a b\n", "\n", "lonely\n"], "access"
        )
        self.assertIn("access:3:", str(e))

    def test_aliasesMode(self):
        """
        With C{aliases=True} lines are split at their first colon, and a
        line without a colon is malformed.
        """
        entries, _ = parseMapText(["user:local:\n"], aliases=True)
        self.assertEqual(entries, [("user", "local:")])
        e = self.assertRaises(CreateMapError, parseMapText, ["x y\n"], "f", True)
        self.assertIn("f:1:", str(e))

    def test_duplicate(self):
        """
        A duplicate key keeps the first value and produces a warning naming
        both lines.
        """
        entries, warnings = parseMapText(["a 1\n", "A 2\n"], "m")
        self.assertEqual(entries, [("a", "1")])
        self.assertEqual(len(warnings), 1)
        self.assertIn("m:2:", warnings[0])
        self.assertIn("line 1", warnings[0])


class CreateAndReadTests(unittest.TestCase):
    """
    Maps written by createmap and read by L{HashMap} (integration: real
    Berkeley DB files).
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "access.db")

    def test_roundTrip(self):
        """
        What createmap writes, L{HashMap} reads back; unknown keys are
        C{None}.
        """
        createMap(self.path, ["to:Root  error:551 5.7.1 No mail to root\n"])
        m = HashMap("access", self.path)
        self.addCleanup(m.close)
        self.assertEqual(
            self.successResultOf(m.lookup("to:root")), "error:551 5.7.1 No mail to root"
        )
        self.assertIsNone(self.successResultOf(m.lookup("to:nobody")))

    def test_nulKeys(self):
        """
        Keys stored with a trailing NUL (makemap -N) are found too, and the
        NUL is not part of the value.
        """
        createMap(self.path, ["key value\n"], nul=True)
        m = HashMap("m", self.path)
        self.addCleanup(m.close)
        self.assertEqual(self.successResultOf(m.lookup("key")), "value")

    def test_atomicReplace(self):
        """
        Rewriting a map leaves no temporary file behind and a reopened map
        sees the new content.
        """
        createMap(self.path, ["a 1\n"])
        m = HashMap("m", self.path)
        self.addCleanup(m.close)
        createMap(self.path, ["a 2\n"])
        self.assertEqual(os.listdir(self.dir), ["access.db"])
        m.reopen()
        self.assertEqual(self.successResultOf(m.lookup("a")), "2")

    def test_cachedUntilReopen(self):
        """
        Answers, "not found" included, come from the cache until the map is
        reopened; then the new file's answers count.
        """
        createMap(self.path, ["a 1\n"])
        m = HashMap("m", self.path)
        self.addCleanup(m.close)
        self.assertEqual(m.get("a"), "1")
        self.assertIsNone(m.get("b"))
        createMap(self.path, ["a 2\n", "b 3\n"])
        self.assertEqual((m.get("a"), m.get("b")), ("1", None))
        m.reopen()
        self.assertEqual((m.get("a"), m.get("b")), ("2", "3"))

    def test_cacheBounded(self):
        """The cache holds at most CACHE_ENTRIES answers."""
        from smx.maps import hashmap

        createMap(self.path, ["a 1\n"])
        m = HashMap("m", self.path)
        self.addCleanup(m.close)
        for i in range(hashmap.CACHE_ENTRIES + 10):
            m.get("k%d" % (i,))
        self.assertLessEqual(len(m._cache), hashmap.CACHE_ENTRIES)
        self.assertEqual(m.get("a"), "1")

    def test_missingFile(self):
        """
        A missing map is logged and every lookup fails temporarily (never
        "not found"); reopening after the file appears works.
        """
        sink = MemorySink()
        m = HashMap("m", self.path, log=Logger("smar", sink=sink))
        self.addCleanup(m.close)
        self.failureResultOf(m.lookup("a"), MapTemporaryError)
        self.assertTrue(sink.records)
        createMap(self.path, ["a 1\n"])
        m.reopen()
        self.assertEqual(self.successResultOf(m.lookup("a")), "1")

    def test_notADatabase(self):
        """
        A file that is not a hash database fails temporarily.
        """
        with open(self.path, "w") as f:
            f.write("this is not a database\n" * 100)
        m = HashMap("m", self.path, log=Logger("smar", sink=MemorySink()))
        self.addCleanup(m.close)
        self.failureResultOf(m.lookup("a"), MapTemporaryError)

    def test_dbDump(self):
        """
        C{db5.3_dump -p} shows a hash database with the keys as written,
        lower-cased, without NUL.
        """
        if DB_DUMP is None:
            raise unittest.SkipTest("db5.3_dump (Debian db5.3-util) not installed")
        createMap(self.path, ["MyAlias: localuser\n"])
        out = subprocess.run(
            [DB_DUMP, "-p", self.path], capture_output=True, check=True, text=True
        ).stdout
        self.assertIn("type=hash", out)
        self.assertIn(" myalias\n", out)
        self.assertIn(" localuser\n", out)


class ScriptTests(unittest.TestCase):
    """
    C{smx createmap} as a user runs it.
    """

    def run_(self, argv, text=""):
        out, err = io.StringIO(), io.StringIO()
        code = script.run(argv, stdin=io.StringIO(text), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def test_stdin(self):
        """
        C{smx createmap -F map.db < map} writes the map and exits 0.
        """
        path = os.path.join(self.mktemp() + "d")
        os.makedirs(path)
        target = os.path.join(path, "aliases.db")
        code, _, err = self.run_(["-t", "hash", "-F", target], "postmaster: root\n")
        self.assertEqual((code, err), (0, ""))
        m = HashMap("aliases", target)
        self.addCleanup(m.close)
        self.assertEqual(self.successResultOf(m.lookup("postmaster")), "root")

    def test_malformed(self):
        """
        A malformed entry is one line naming the line number, exit 65, and
        the map is not written.
        """
        path = self.mktemp()
        code, _, err = self.run_(["-F", path], "good value\nbad\n")
        self.assertEqual(code, 65)
        self.assertIn("<stdin>:2:", err)
        self.assertNotIn("Traceback", err)
        self.assertFalse(os.path.exists(path))

    def test_usage(self):
        """
        A missing C{-F}, an unknown option or type is a usage error (64);
        C{-h} and C{--help} (as for the other smx commands) print the help.
        """
        self.assertEqual(self.run_([])[0], 64)
        self.assertEqual(self.run_(["-x"])[0], 64)
        self.assertEqual(self.run_(["-F", "x.db", "-t", "btree"])[0], 64)
        code, out, _ = self.run_(["-h"])
        self.assertEqual(code, 0)
        self.assertIn("createmap", out)
        self.assertEqual(self.run_(["--help"])[:2], (0, out))

    def test_unwritable(self):
        """
        A target in a missing directory is an I/O error (74), no traceback.
        """
        code, _, err = self.run_(["-F", "/nonexistent/dir/m.db"], "a b\n")
        self.assertEqual(code, 74)
        self.assertIn("/nonexistent/dir/m.db", err)
