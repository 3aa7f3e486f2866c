# -*- test-case-name: smx.config.test.test_script -*-
"""
Tests for C{smx config} (L{smx.scripts.config}).
"""

import io
import os
import re
import subprocess
import sys

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

import smx
from smx.config.reference import renderReference
from smx.scripts.config import run

DATA = FilePath(__file__).sibling("data")


class RunTests(SynchronousTestCase):
    """
    Tests for L{run}, with captured output.
    """

    def setUp(self):
        self.dir = FilePath(self.mktemp())
        self.dir.makedirs()

    def run_(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        status = run(list(argv), out, err)
        return status, out.getvalue(), err.getvalue()

    def write(self, text):
        path = self.dir.child("smx.conf")
        path.setContent(text.encode("utf-8"))
        return path.path

    def test_valid(self):
        """
        A valid file: exit 0 and the options set.
        """
        path = self.write("smtps { port = 2525; io_timeout = 120; }\n")
        status, out, err = self.run_("-f", path)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, "smtps {\n    port = 2525;\n    io_timeout = 2m;\n}\n")

    def test_verbose(self):
        """
        C{-V} adds the version; C{-VVVVV} (or -V five times) the table.
        """
        path = self.write("smtps { port = 2525; }\n")
        status, out, err = self.run_("-V", "-f", path)
        self.assertEqual(status, 0)
        self.assertTrue(out.startswith("# %s\n" % (smx.versionString,)))
        self.assertIn("# configuration file: %s\n" % (os.path.abspath(path),), out)
        status, five, err = self.run_("-VVVVV", "-f", path)
        self.assertEqual(status, 0)
        self.assertIn("queuereturn_timeout = 5d;", five)
        self.assertIn("# time (s), >= 1s, default 5d, §5.7", five)
        self.assertEqual(self.run_("-V", "-V", "-V", "-V", "-V", "-f", path)[1], five)
        self.assertEqual(self.run_("-VVVVVVV", "-f", path)[1], five)

    def test_queueDirectory(self):
        """
        C{-Q} sets the queue directory for relative socket names.
        """
        path = self.write("smtps { pass_fd_socket = smtps/fd; }\n")
        status, out, err = self.run_("-f", path, "-Q", "/var/spool/smx")
        self.assertEqual(status, 0)
        self.assertIn("pass_fd_socket = /var/spool/smx/smtps/fd;", out)

    def test_defaultQueueDirectory(self):
        """
        Without C{-Q}, relative socket and queue names are resolved against
        the directory of the file (where twistd smx runs in the embedded
        layout), not the current directory; C{-V} says so on one line.
        """
        path = self.write("qmgr { control_socket = qmgr.ctl; }\n")
        self.assertNotEqual(os.getcwd(), self.dir.path)
        status, out, err = self.run_("-V", "-f", path)
        self.assertEqual((status, err), (0, ""))
        self.assertIn("control_socket = %s;" % (self.dir.child("qmgr.ctl").path,), out)
        self.assertIn(
            "\n# paths relative to %s (configuration and queue directory)\n"
            % (self.dir.path,),
            out,
        )

    def test_dOption(self):
        """
        C{-d DIRECTORY}, as given to twistd smx, is the same as C{-Q}.
        """
        path = self.write("qmgr { control_socket = qmgr.ctl; }\n")
        status, out, err = self.run_("-V", "-d", "/var/spool/smx", "-f", path)
        self.assertEqual(status, 0)
        self.assertIn("control_socket = /var/spool/smx/qmgr.ctl;", out)
        self.assertIn(
            "# paths relative to %s (configuration directory: maps, TLS files) "
            "and /var/spool/smx (queue directory: queue, sockets)\n" % (self.dir.path,),
            out,
        )

    def test_tlsFiles(self):
        """
        TLS files that cannot be used: exit 2, nothing on standard output,
        one line per problem at the option.
        """
        path = self.write(
            "smtps { tls { cert_file = c.pem; key_file = k.pem; } }\n"
            "smtpc {\n  tls { cert_file = c.pem; key_file = k.pem; } }\n"
        )
        status, out, err = self.run_("-f", path)
        self.assertEqual((status, out), (2, ""))
        cert, key = self.dir.child("c.pem").path, self.dir.child("k.pem").path
        self.assertEqual(
            err.splitlines(),
            [
                "%s:1:15: cert_file %s: No such file or directory" % (path, cert),
                "%s:1:34: key_file %s: No such file or directory" % (path, key),
                "%s:3:9: cert_file %s: No such file or directory" % (path, cert),
                "%s:3:28: key_file %s: No such file or directory" % (path, key),
            ],
        )

    def test_invalid(self):
        """
        An invalid file: exit 2 and one line on standard error.
        """
        path = self.write("smtps {\n  io_timout = 5;\n}\n")
        status, out, err = self.run_("-f", path)
        self.assertEqual(status, 2)
        self.assertEqual(out, "")
        self.assertEqual(
            err,
            "%s:2:3: unknown option 'io_timout' in section 'smtps'; did you mean "
            "'io_timeout'?\n" % (path,),
        )

    def test_warnings(self):
        """
        Warnings go to standard error; the exit status stays 0.
        """
        path = self.write("smtps { max_recipients = 10; }\n")
        status, out, err = self.run_("-f", path)
        self.assertEqual(status, 0)
        self.assertEqual(
            err,
            "%s:1:9: warning: option 'max_recipients' is deprecated, use "
            "'max_recipients_per_session'\n" % (path,),
        )

    def test_missingFile(self):
        """
        A file that does not exist: exit 2, one line.
        """
        path = self.dir.child("none.conf").path
        status, out, err = self.run_("-f", path)
        self.assertEqual(status, 2)
        self.assertEqual(err, "%s: cannot read: No such file or directory\n" % (path,))

    def test_usageErrors(self):
        """
        Wrong command lines: exit 2, one line naming the usage.
        """
        for argv in ([], ["-x"], ["smx.conf"], ["-f"], ["--reference", "-f", "x"]):
            status, out, err = self.run_(*argv)
            self.assertEqual(status, 2, argv)
            self.assertEqual(out, "")
            self.assertEqual(err.count("\n"), 1, argv)
            self.assertTrue(err.startswith("smx config: "), err)
            self.assertIn("usage: smx config -f FILE", err)

    def test_help(self):
        """
        C{-h} prints the manual page.
        """
        status, out, err = self.run_("-h")
        self.assertEqual(status, 0)
        self.assertTrue(out.startswith("NAME\n    smx config"))

    def test_reference(self):
        """
        C{--reference} prints the Markdown reference.
        """
        status, out, err = self.run_("--reference")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, renderReference())


class CommandTests(SynchronousTestCase):
    """
    C{smx config} as a program, through the dispatcher
    L{smx.scripts.main}.
    """

    def command(self, *argv):
        env = dict(os.environ)
        root = FilePath(smx.__file__).parent().parent().path
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        return subprocess.run(
            [sys.executable, "-m", "smx.scripts.main", "config"] + list(argv),
            capture_output=True,
            text=True,
            env=env,
        )

    def test_seedExample(self):
        """
        The §5.3 example is accepted; it is in split mode (its sections set
        C{path}), so the MCP options are in force; the options it sets that
        smx does not use (C{Debug_Level}, ...) are warnings, one line each.
        """
        path = DATA.child("seed-5.3.conf").path
        result = self.command("-f", path)
        self.assertEqual(result.returncode, 0)
        lines = result.stderr.splitlines()
        for line in lines:
            self.assertRegex(
                line,
                r"^%s:\d+:\d+: warning: option '\w+' in section '\w+' "
                "has no effect: " % (re.escape(path),),
            )
        self.assertIn(
            "%s:24:21: warning: option 'Debug_Level' in section 'smtpc' has no "
            "effect: smx's SMTPC writes no debug records; qmgr's "
            "debug_categories 5 (smtpc) shows deliveries as QMGR sees them" % (path,),
            lines,
        )
        self.assertEqual([line for line in lines if "'user'" in line], [])
        self.assertIn("nameserver = {10.10.10.9, 127.0.0.1};", result.stdout)

    def test_broken(self):
        """
        A broken file exits 2 with the message and no traceback.
        """
        path = DATA.child("broken").child("typo-option.conf").path
        result = self.command("-f", path)
        self.assertEqual(result.returncode, 2)
        self.assertEqual(
            result.stderr,
            "%s:3:5: unknown option 'IO_timout' in section 'smtps'; did you mean "
            "'io_timeout'?\n" % (path,),
        )
