# -*- test-case-name: smx.scripts.test.test_programs -*-
"""
Tests of the programs of split mode (L{smx.scripts.programs}: C{smx-mcp},
C{smx-qmgr}, ...) and of C{smx runas} (L{smx.scripts.runas}), run as a
user runs them (real processes).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from smx.scripts.programs import twistdArguments

BIN = os.path.dirname(sys.executable)


def command(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


class ArgumentTests(SynchronousTestCase):
    """
    The seed's arguments become C{twistd smx} arguments.
    """

    def test_component(self) -> None:
        """
        C{-f}, C{-i}, C{-L}, C{-d} and smtps's C{-N}.
        """
        self.assertEqual(
            twistdArguments(
                "smtps", ["-f", "/etc/smx/smx.conf", "-i", "1", "-L", "/l", "-N", "MSA"]
            ),
            [
                "twistd",
                "-n",
                "--pidfile=",
                "--logfile",
                "/l/smtps1.log",
                "smx",
                "--component",
                "smtps",
                "--config",
                "/etc/smx/smx.conf",
                "--id",
                "1",
                "--smtps-options",
                "-N MSA",
            ],
        )

    def test_mcp(self) -> None:
        """
        C{smx-mcp -L DIR} is the log directory of the services.
        """
        self.assertEqual(
            twistdArguments("mcp", ["-f", "smx.conf", "-d", "/q", "-L", "/l"]),
            [
                "twistd",
                "-n",
                "--pidfile=",
                "smx",
                "--component",
                "mcp",
                "--config",
                "smx.conf",
                "--queue-directory",
                "/q",
                "--log-directory",
                "/l",
            ],
        )

    def test_programOptions(self) -> None:
        """
        The options of the seed's programs (doc/program-options.md): SMTPS
        C{-a}, C{-T}, C{-C address}; SMAR C{-U}; QMGR C{-C n}, C{-c n},
        C{-O R=n}, C{-x spec}: given to C{twistd smx} as it takes them.
        """
        self.assertEqual(
            twistdArguments(
                "smtps", ["-f", "c", "-a", "-C", "127.0.0.1", "-C", "::1", "-T"]
            )[-2:],
            ["--smtps-options", "-a -T -C 127.0.0.1 -C ::1"],
        )
        self.assertEqual(
            twistdArguments("smtps", ["-N", "MSA", "-a"])[-2:],
            ["--smtps-options", "-N MSA -a"],
        )
        self.assertEqual(
            twistdArguments("smar", ["-f", "c", "-U"])[-2:],
            ["--smar-options", "-U"],
        )
        self.assertEqual(
            twistdArguments(
                "qmgr",
                ["-f", "c", "-C", "9", "-c", "3", "-O", "R=200", "-O", "0=7"]
                + ["-x", "1-3.2", "-x", "5"],
            )[-12:],
            ["--max-connections", "9", "--initial-connections", "3"]
            + ["-O", "R=200", "-O", "0=7"]
            + ["--qmgr-options", "-x 1-3.2", "--qmgr-options", "-x 5"],
        )

    def test_badArgument(self) -> None:
        """
        A bad argument is EX_USAGE.
        """
        e = self.assertRaises(SystemExit, twistdArguments, "qmgr", ["-i", "x"])
        self.assertEqual(e.code, 64)


class ConfigurationErrorTests(SynchronousTestCase):
    """
    A program given a bad configuration says what is wrong in one line.
    """

    def test_oneLine(self) -> None:
        """
        C{smx-mcp -f F} with C{mcp_type = pass} and no C{pass_fd_socket}:
        one line naming the file, line and section, nothing else (not
        twistd's usage text), exit status 78 (EX_CONFIG: the MCP and the
        systemd unit do not restart it).
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "smx.conf")
        with open(path, "w") as f:
            f.write(
                "smtps { port = 2525; mcp_type = pass;\n"
                "  path = /bin/true; arguments = smtps; }\n"
            )
        result = subprocess.run(
            [os.path.join(BIN, "smx-mcp"), "-f", path],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=directory,
        )
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (
                78,
                "",
                "smx-mcp: %s:1:22: mcp_type = pass requires 'pass_fd_socket' in "
                "section 'smtps'\n" % (path,),
            ),
        )

    def test_badLimits(self) -> None:
        """
        QMGR's C{-C}, C{-c} and C{-O} are checked with the other
        arguments: EX_USAGE, not a configuration error.
        """
        for argv in (["-C", "x"], ["-c", "1x"], ["-O", "Q=1"], ["-O", "R=x"]):
            e = self.assertRaises(SystemExit, twistdArguments, "qmgr", argv)
            self.assertEqual(e.code, 64, argv)


class RootTests(SynchronousTestCase):
    """
    As root: the components refuse to run; C{smx runas} changes the user.
    """

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("needs root")

    def test_refuseRoot(self) -> None:
        """
        C{smx-qmgr}, C{smx-smtps}, C{smx-smtpc} and C{smx-smar} started as
        root exit with 64 and one line; so does C{twistd smx --component}.
        """
        for name in ("qmgr", "smtps", "smtpc", "smar"):
            result = command(os.path.join(BIN, "smx-" + name), "-f", "smx.conf")
            self.assertEqual(result.returncode, 64, result.stderr)
            self.assertEqual(len(result.stderr.splitlines()), 1)
            self.assertIn("smx-%s: refusing to run as root" % (name,), result.stderr)

    def test_helpAsRoot(self) -> None:
        """
        C{--help} works as root too (it runs nothing): the usage, exit 0.
        """
        for name in ("qmgr", "smtps", "smtpc", "smar"):
            result = command(os.path.join(BIN, "smx-" + name), "--help")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("usage: smx-%s" % (name,), result.stdout)

    def test_runas(self) -> None:
        """
        C{smx runas USER COMMAND} runs COMMAND as USER with USER's groups.
        """
        nobody = pwd.getpwnam("nobody")
        result = command(os.path.join(BIN, "smx"), "runas", "nobody", "id", "-u")
        self.assertEqual(
            (result.returncode, result.stdout), (0, "%d\n" % nobody.pw_uid)
        )
        result = command(os.path.join(BIN, "smx"), "runas", "nobody", "id", "-g")
        self.assertEqual(result.stdout, "%d\n" % (nobody.pw_gid,))

    def test_runasErrors(self) -> None:
        """
        An unknown user, an unknown command, a missing command: one line.
        """
        smx = os.path.join(BIN, "smx")
        result = command(smx, "runas", "smxnosuchuser", "id")
        self.assertEqual(
            (result.returncode, result.stderr),
            (67, "smx runas: no user 'smxnosuchuser' on this system\n"),
        )
        result = command(smx, "runas", "nobody", "/nonexistent/program")
        self.assertEqual(
            (result.returncode, result.stderr),
            (127, "smx runas: /nonexistent/program: command not found\n"),
        )
        result = command(smx, "runas", "nobody")
        self.assertEqual(result.returncode, 64)
