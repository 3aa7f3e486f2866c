# -*- test-case-name: smx.scripts.test.test_setup -*-
"""
Tests for C{smx setup} (L{smx.scripts.setup}), run as root with the
configuration, queue and log directories in temporary directories and
throwaway users and groups (L{smx.scripts.test.throwaway}), deleted
afterwards: the users, groups and memberships of seed §4, the owners and
modes of §4.1 (checked with C{os.stat}), files never overwritten,
C{--dry-run}, the split-mode smx.conf, the sendmail links and the
check that the component users can run the programs.
"""

from __future__ import annotations

import grp
import io
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

from twisted.trial.unittest import TestCase

from smx.scripts import setup
from smx.scripts.test.throwaway import (
    accountEnvironment,
    canRunPython,
    needRoot,
    prefix,
    removeAccounts,
)


class _Base(TestCase):
    """
    Temporary SMXCONFDIR and SMXQDIR, throwaway account names.
    """

    def setUp(self) -> None:
        needRoot()
        self.root = tempfile.mkdtemp(prefix="smx-setup-")
        os.chmod(self.root, 0o755)
        self.addCleanup(shutil.rmtree, self.root, True)
        self.base = prefix()
        self.names = accountEnvironment(self.base)
        self.addCleanup(removeAccounts, list(self.names.values()))
        self.conf = os.path.join(self.root, "etc")
        # a parent that does not exist yet
        self.queue = os.path.join(self.root, "var", "spool")
        self.environ = dict(
            self.names, SMXCONFDIR=self.conf, SMXQDIR=self.queue, SMXLG="root"
        )
        self.postdrop = os.path.join(self.root, "smx-postdrop")

    def setup(self, *argv: str) -> Tuple[int, str]:
        out = io.StringIO()
        args = list(argv)
        if "--postdrop" not in args:
            args += ["--postdrop", self.postdrop]
        status = setup.run(args, out=out, environ=self.environ)
        return status, out.getvalue()

    def owner(self, path: str) -> Tuple[str, str, int]:
        st = os.lstat(path)
        return (
            pwd.getpwuid(st.st_uid).pw_name,
            grp.getgrgid(st.st_gid).gr_name,
            stat.S_IMODE(st.st_mode),
        )


class LayoutTests(_Base):
    """
    Users, groups, directories and files.
    """

    def test_dryRun(self) -> None:
        """
        C{--dry-run} says what it would do and does nothing: no user, no
        group, no directory.
        """
        status, out = self.setup("--users", "--dry-run")
        self.assertEqual(status, 0, out)
        s = self.names["SMXS"]
        self.assertIn("would create group %s (system)\n" % (s,), out)
        self.assertIn(
            "would create user %s (system, group %s, no login shell)\n" % (s, s), out
        )
        self.assertIn(
            "would create directory %s/ibdb (%s:%s 0700)\n"
            % (self.queue, self.names["SMXQ"], self.names["SMXQ"]),
            out,
        )
        self.assertIn("would write %s/smx.conf" % (self.conf,), out)
        self.assertIn("nothing was changed (dry run)", out)
        self.assertIn(
            "start the MCP with: cd %s && %s -f %s/smx.conf -L %s\n"
            % (
                self.queue,
                os.path.join(os.path.dirname(sys.executable), "smx-mcp"),
                self.conf,
                self.queue,
            ),
            out,
        )
        for name in self.names.values():
            self.assertRaises(KeyError, grp.getgrnam, name)
            self.assertRaises(KeyError, pwd.getpwnam, name)
        self.assertFalse(os.path.exists(self.conf))
        self.assertFalse(os.path.exists(self.queue))
        self.assertFalse(os.path.exists(self.postdrop))

    def test_missingUsers(self) -> None:
        """
        Without C{--users}, a missing user or group is a clear error (exit
        67) and nothing is made.
        """
        status, out = self.setup("--no-check")
        self.assertEqual(status, setup.EX_NOUSER)
        self.assertIn("there is no group %s: give --users" % (self.names["SMXS"],), out)
        self.assertFalse(os.path.exists(self.conf))

    def test_layout(self) -> None:
        """
        The users and groups of seed §4 (system users without a login
        shell, C{smxs} in C{smxc} and C{smxm}, C{smxq} in C{smxm} and the
        maildrop group), and the directories and files of §4.1 with their
        owners and modes.
        """
        status, out = self.setup("--users", "--no-check")
        self.assertEqual(status, 0, out)
        n = self.names
        s, q, c, m, x, d = (
            n[k] for k in ("SMXS", "SMXQ", "SMXC", "SMXM", "SMX", "SMXDROP")
        )
        for user in (s, q, c, m, x):
            entry = pwd.getpwnam(user)
            self.assertEqual(entry.pw_shell, "/usr/sbin/nologin")
            self.assertEqual(grp.getgrgid(entry.pw_gid).gr_name, user)
            self.assertLess(entry.pw_uid, 1000)
        self.assertEqual(sorted(grp.getgrnam(c).gr_mem), [s])
        self.assertEqual(sorted(grp.getgrnam(m).gr_mem), sorted([s, q]))
        self.assertEqual(grp.getgrnam(d).gr_mem, [q])
        expected: Dict[str, Tuple[str, str, int]] = {
            self.conf: (x, x, 0o755),
            self.conf + "/smx.conf": (x, x, 0o644),
            self.conf + "/mt": (m, m, 0o644),
            self.conf + "/mt.db": (m, m, 0o644),
            self.queue: (q, q, 0o755),
            self.queue + "/ibdb": (q, q, 0o700),
            self.queue + "/defedb": (q, q, 0o700),
            self.queue + "/qmsmar": (q, m, 0o2770),
            self.queue + "/qmsmtpc": (q, c, 0o2770),
            self.queue + "/qmsmtps": (q, s, 0o2770),
            self.queue + "/smtps": (s, s, 0o750),
            self.queue + "/maildrop": (q, d, 0o3730),
            self.queue + "/qmgr.log": (q, "root", 0o640),
            self.queue + "/smar.log": (m, "root", 0o640),
            self.queue + "/smtpc.log": (c, "root", 0o640),
            self.queue + "/smtps.log": (s, "root", 0o640),
            self.postdrop: ("root", d, 0o2755),
        }
        for name in "0123456789ABCDEF":
            expected[os.path.join(self.queue, name)] = (s, q, 0o2771)
        for path, wanted in sorted(expected.items()):
            self.assertEqual(self.owner(path), wanted, path)
        from smx.maps.mailertable import loadMailertable

        self.assertEqual(loadMailertable(self.conf + "/mt.db"), {})

    def test_contentFiles(self) -> None:
        """
        A file SMTPS's user makes in a CDB directory (mode 0640, as CDB
        does) gets QMGR's group and can be read by QMGR's and SMTPC's
        users (the default ACL), and by nobody else.
        """
        status, out = self.setup("--users", "--no-check")
        self.assertEqual(status, 0, out)
        path = os.path.join(self.queue, "7", "S0001")
        smxs, smxq, smxc = (self.names[k] for k in ("SMXS", "SMXQ", "SMXC"))

        def run(user: str, command: str) -> int:
            return subprocess.run(
                ["runuser", "-u", user, "--", "sh", "-c", command],
                capture_output=True,
                cwd="/",
            ).returncode

        self.assertEqual(run(smxs, "umask 027; echo content > " + path), 0)
        self.assertEqual(self.owner(path), (smxs, smxq, 0o640))
        self.assertEqual(run(smxq, "cat " + path), 0)
        self.assertEqual(run(smxc, "cat " + path), 0)
        self.assertNotEqual(run(smxc, "echo x >> " + path), 0)
        self.assertNotEqual(run("nobody", "cat " + path), 0)
        self.assertEqual(run(smxq, "rm " + path), 0)

    def test_configuration(self) -> None:
        """
        smx.conf is a valid configuration in the form of seed §5.3: each
        component under its user, started from its installed program with
        C{-f} and the file, QMGR restarting SMTPS, SMTPC and SMAR, port 25
        (on C{--address}) passed to two SMTPS processes, the maildrop group for pickup; it
        names the CDB directories and sockets setup made.
        """
        from smx.config import loadConfiguration

        status, out = self.setup(
            "--users", "--no-check", "--port", "2525", "--address", "127.0.0.1"
        )
        self.assertEqual(status, 0, out)
        path = os.path.join(self.conf, "smx.conf")
        cfg = loadConfiguration(path, queueDirectory=self.queue)
        # (options of the MCP do nothing until split mode uses them)
        self.assertEqual([w for w in cfg.warnings if "has no effect" not in w], [])
        programs = setup.Layout.fromEnvironment(self.environ).programs
        for keyword, role, script in (
            ("qmgr", "SMXQ", "smx-qmgr"),
            ("smtps", "SMXS", "smx-smtps"),
            ("smtpc", "SMXC", "smx-smtpc"),
            ("smar", "SMXM", "smx-smar"),
        ):
            section = cfg.section(keyword)
            self.assertEqual(section["user"], self.names[role])
            self.assertEqual(section["path"], os.path.join(programs, script))
            self.assertEqual(section["arguments"], "%s -f %s" % (script, path))
        self.assertEqual(cfg.section("qmgr")["mcp_type"], "wait")
        self.assertEqual(
            sorted(cfg.section("qmgr")["restartdependencies"]),
            ["smar", "smtpc", "smtps"],
        )
        smtps = cfg.section("smtps")
        self.assertEqual(
            (smtps["mcp_type"], smtps["address"], smtps["port"]),
            ("pass", "127.0.0.1", 2525),
        )
        self.assertEqual((smtps["min_processes"], smtps["max_processes"]), (2, 2))
        self.assertEqual(
            smtps["pass_fd_socket"], os.path.join(self.queue, "smtps/smtpsfd")
        )
        self.assertEqual(cfg.globals["CDB_base_directory"], self.queue + "/")
        self.assertEqual(
            cfg.globals["SMAR_socket"], os.path.join(self.queue, "qmsmar/smarsock")
        )
        self.assertEqual(
            cfg.section("smar").section("mailertable")["name"],
            os.path.join(self.conf, "mt.db"),
        )
        self.assertEqual(cfg.section("pickup")["maildrop_group"], self.names["SMXDROP"])
        # absolute, so that smx sendmail and smx mailq, which do not run
        # in the queue directory, find them
        with open(path) as f:
            text = f.read()
        self.assertIn('maildrop_directory = "%s/maildrop";' % (self.queue,), text)
        self.assertIn('control_socket = "%s/qmgrctl.sock";' % (self.queue,), text)
        from smx.queue.pickupsettings import PickupSettings
        from smx.scripts.sendmail import SendmailOptions, loadSubmissionConfiguration

        cfg, used, known = loadSubmissionConfiguration(
            SendmailOptions(), {"SMXCONFDIR": self.conf, "SMXQDIR": self.queue}
        )
        self.assertEqual((used, known), (path, True))
        settings = PickupSettings.fromConfiguration(cfg)
        self.assertEqual(settings.directory, os.path.join(self.queue, "maildrop"))
        self.assertEqual(settings.submissionAddress, ("127.0.0.1", 2525))

    def test_neverOverwrites(self) -> None:
        """
        An existing file is kept, and setup says so; an existing directory
        keeps its owner and mode, and setup says what it would have made
        it.  A second run changes nothing.
        """
        os.makedirs(self.conf)
        with open(os.path.join(self.conf, "smx.conf"), "w") as f:
            f.write("# mine\n")
        os.makedirs(os.path.join(self.queue, "ibdb"), 0o755)
        os.chmod(os.path.join(self.queue, "ibdb"), 0o755)
        status, out = self.setup("--users", "--no-check")
        self.assertEqual(status, 0, out)
        with open(os.path.join(self.conf, "smx.conf")) as f:
            self.assertEqual(f.read(), "# mine\n")
        self.assertIn(
            "kept %s/smx.conf (exists: root:root 0644; not overwritten)\n"
            % (self.conf,),
            out,
        )
        q = self.names["SMXQ"]
        self.assertIn(
            "kept directory %s/ibdb (root:root 0755; smx setup would make it "
            "%s:%s 0700)\n" % (self.queue, q, q),
            out,
        )
        self.assertEqual(
            self.owner(os.path.join(self.queue, "ibdb")), ("root", "root", 0o755)
        )
        again, out = self.setup("--users", "--no-check")
        self.assertEqual(again, 0, out)
        changes = [
            line
            for line in out.splitlines()
            if not line.startswith(("kept ", "smx setup: done"))
        ]
        self.assertEqual(changes, [])

    def test_notADirectory(self) -> None:
        """
        A file where a directory belongs is an error naming it (exit 78),
        not a traceback.
        """
        os.makedirs(self.queue)
        with open(os.path.join(self.queue, "ibdb"), "w"):
            pass
        status, out = self.setup("--users", "--no-check")
        self.assertEqual(status, setup.EX_CONFIG)
        self.assertIn(
            "smx setup: %s/ibdb exists and is not a directory\n" % (self.queue,), out
        )

    def test_check(self) -> None:
        """
        Setup checks that every component user can run the interpreter
        and import smx: done when they can; when the interpreter lives
        where they cannot enter (pyenv's under /root) exit status 1 and a
        line per user that says why and what to do.
        """
        status, out = self.setup("--users")
        users = [self.names[k] for k in ("SMXS", "SMXQ", "SMXC", "SMXM")]
        if canRunPython(users[0]):
            self.assertEqual(status, 0, out)
            for user in users:
                self.assertIn("checked: user %s can run " % (user,), out)
            self.assertIn("smx setup: done", out)
        else:
            self.assertEqual(status, 1, out)
            for user in users:
                self.assertIn(
                    "smx setup: user %s cannot run the programs: " % (user,), out
                )
            if os.path.realpath(setup.sys.executable).startswith("/root/"):
                self.assertIn("under /root, which other users cannot enter", out)
            self.assertNotIn("smx setup: done", out)


class ReachTests(_Base):
    """
    A directory made before setup, which it keeps as it is.
    """

    def test_temporaryQueue(self) -> None:
        """
        A queue directory made by C{mktemp -d} (root, 0700) is kept, and
        setup says that the component users cannot enter it (QMGR: nor
        write to it) and what to do, and exits 1 instead of "done".
        """
        os.makedirs(self.queue, 0o700)
        os.chmod(self.queue, 0o700)
        status, out = self.setup("--users")
        self.assertEqual(status, 1, out)
        for key in ("SMXS", "SMXQ", "SMXC", "SMXM"):
            self.assertIn(
                "smx setup: user %s cannot enter the queue directory %s: it is "
                "root:root 0700; smx setup does not change what exists: give it "
                "the owner and mode it says above, or remove it and run smx "
                "setup again\n" % (self.names[key], self.queue),
                out,
            )
        self.assertNotIn("smx setup: done", out)
        os.chmod(self.queue, 0o755)
        status, out = self.setup("--users")
        self.assertIn(
            "smx setup: user %s cannot write to the queue directory %s: it is "
            "root:root 0755;" % (self.names["SMXQ"], self.queue),
            out,
        )
        self.assertNotIn("cannot enter the queue directory", out)


class SendmailLinkTests(_Base):
    """
    C{--install-sendmail} into temporary directories.
    """

    def setUp(self) -> None:
        _Base.setUp(self)
        self.sbin = os.path.join(self.root, "sbin")
        self.bin = os.path.join(self.root, "bin")
        self.target = os.path.join(
            setup.Layout.fromEnvironment(self.environ).programs, "smx-sendmail"
        )

    def install(self, *more: str) -> Tuple[int, str]:
        return self.setup(
            "--users",
            "--no-check",
            "--install-sendmail",
            "--sbindir",
            self.sbin,
            "--bindir",
            self.bin,
            *more,
        )

    def links(self) -> List[str]:
        return [
            os.readlink(p) if os.path.islink(p) else "file"
            for p in (
                os.path.join(self.sbin, "sendmail"),
                os.path.join(self.bin, "mailq"),
                os.path.join(self.bin, "newaliases"),
            )
        ]

    def test_links(self) -> None:
        """
        sendmail, mailq and newaliases become links to smx-sendmail; a
        second run keeps them.
        """
        if not os.path.exists(self.target):
            self.skipTest("%s is not installed" % (self.target,))
        status, out = self.install()
        self.assertEqual(status, 0, out)
        self.assertEqual(self.links(), [self.target] * 3)
        self.assertIn("linked %s/sendmail to %s\n" % (self.sbin, self.target), out)
        status, out = self.install()
        self.assertEqual(status, 0, out)
        self.assertIn(
            "kept %s/mailq (already a link to %s)\n" % (self.bin, self.target), out
        )

    def test_foreignFile(self) -> None:
        """
        Another MTA's sendmail is not replaced (exit 1, the file named and
        what it is); with C{--force} it is.
        """
        if not os.path.exists(self.target):
            self.skipTest("%s is not installed" % (self.target,))
        os.makedirs(self.sbin)
        foreign = os.path.join(self.sbin, "sendmail")
        with open(foreign, "w") as f:
            f.write("#!/bin/sh\n# postfix\n")
        status, out = self.install()
        self.assertEqual(status, 1, out)
        self.assertIn(
            "smx setup: %s is in the way (a file): not replaced; remove it or "
            "give --force\n" % (foreign,),
            out,
        )
        with open(foreign) as f:
            self.assertEqual(f.read(), "#!/bin/sh\n# postfix\n")
        self.assertEqual(self.links()[1:], [self.target] * 2)
        status, out = self.install("--force")
        self.assertEqual(status, 0, out)
        self.assertIn(
            "replaced %s (a file) with a link to %s\n" % (foreign, self.target), out
        )
        self.assertEqual(self.links(), [self.target] * 3)

    def test_foreignLinkDryRun(self) -> None:
        """
        A link to another program is described as such; C{--dry-run
        --force} says it would replace it and does not.
        """
        os.makedirs(self.sbin)
        foreign = os.path.join(self.sbin, "sendmail")
        os.symlink("../lib/sendmail", foreign)
        status, out = self.install("--dry-run", "--force")
        self.assertEqual(status, 0, out)
        self.assertIn(
            "would replace %s (a link to ../lib/sendmail) with a link to " % (foreign,),
            out,
        )
        self.assertEqual(os.readlink(foreign), "../lib/sendmail")


class SystemConfigurationTests(TestCase):
    """
    C{smx sendmail} without C{-C} or C{SMXCONF} uses the installed
    system's smx.conf (C{$SMXCONFDIR}, C{/etc/smx}) when it exists, so
    that C{/usr/sbin/sendmail} finds smx.
    """

    def test_systemConfiguration(self) -> None:
        """
        C{$SMXCONFDIR/smx.conf} with the queue in C{$SMXQDIR}; without it
        the embedded default configuration as before.
        """
        from smx.scripts.sendmail import SendmailOptions, loadSubmissionConfiguration

        conf = os.path.abspath(self.mktemp())
        os.makedirs(conf)
        environ = {"SMXCONFDIR": conf, "SMXQDIR": "/q"}
        cfg, used, known = loadSubmissionConfiguration(SendmailOptions(), environ)
        self.assertEqual((used, known), (None, False))
        with open(os.path.join(conf, "smx.conf"), "w") as f:
            f.write('smtps { daemon_address = "127.0.0.1:2600"; }\n')
        cfg, used, known = loadSubmissionConfiguration(SendmailOptions(), environ)
        self.assertEqual((used, known), (os.path.join(conf, "smx.conf"), True))
        self.assertEqual(cfg.queueDirectory, "/q")


class LayoutFromEnvironmentTests(TestCase):
    """
    L{setup.Layout.fromEnvironment} and L{setup.run}'s usage errors (no
    root needed).
    """

    def test_defaults(self) -> None:
        """
        The defaults of seed §4: /etc/smx, /var/spool/smx, logs in the
        queue directory, users smxs, smxq, smxc, smxm, smx.
        """
        layout = setup.Layout.fromEnvironment({})
        self.assertEqual(
            (layout.confDir, layout.queueDir, layout.logDir),
            ("/etc/smx", "/var/spool/smx", "/var/spool/smx"),
        )
        self.assertEqual(
            dict(layout.users),
            {
                "smtps": "smxs",
                "qmgr": "smxq",
                "smtpc": "smxc",
                "smar": "smxm",
                "smx": "smx",
            },
        )
        self.assertEqual(layout.dropGroup, "smxdrop")

    def test_overrides(self) -> None:
        """
        SMXCONFDIR, SMXQDIR, SMXLOGDIR (relative to SMXQDIR), SMXS...
        """
        layout = setup.Layout.fromEnvironment(
            {
                "SMXCONFDIR": "/c",
                "SMXQDIR": "/q",
                "SMXLOGDIR": "log",
                "SMXS": "a",
                "SMXQ": "b",
                "SMXC": "c",
                "SMXM": "d",
                "SMX": "e",
                "SMXLG": "adm",
            }
        )
        self.assertEqual(
            (layout.confDir, layout.queueDir, layout.logDir), ("/c", "/q", "/q/log")
        )
        self.assertEqual(sorted(layout.users.values()), ["a", "b", "c", "d", "e"])
        self.assertEqual(layout.logGroup, "adm")
        # the MCP is told where the log files setup makes are (-L)
        self.assertIn(
            "#     cd /q && %s -f /c/smx.conf -L /q/log\n" % (layout.program("mcp"),),
            setup.splitConfiguration(layout),
        )

    def test_badPort(self) -> None:
        """
        A port out of range is a usage error (64), as is an unknown option.
        """
        out = io.StringIO()
        self.assertEqual(setup.run(["--port", "0", "--dry-run"], out=out), 64)
        self.assertIn("--port: 0 is not a port", out.getvalue())
        out = io.StringIO()
        self.assertEqual(setup.run(["--address", "x", "--dry-run"], out=out), 64)
        self.assertIn("--address: 'x' is not an IP address", out.getvalue())
        self.assertEqual(setup.run(["--bogus"], out=io.StringIO()), 64)
