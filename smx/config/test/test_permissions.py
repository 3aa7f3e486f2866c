# -*- test-case-name: smx.config.test.test_permissions -*-
"""
Tests for L{smx.config.permissions}: the owner and mode checks of seed
§9.2, on real files in a temporary directory, and C{twistd smx} refusing
to start (a real process) when a map is writable by everyone.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

from twisted.trial import unittest

from smx.config import loadConfiguration
from smx.config.permissions import (
    EX_CONFIG,
    Trust,
    checkFile,
    refuseUnsafeFiles,
    unsafeFiles,
)

NOBODY = 65534


def writeFile(path: str, text: str = "", mode: int = 0o644) -> str:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


class PermissionTestsMixin:
    """
    A configuration directory with smx.conf, a mailertable and a key.
    """

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.trust = Trust(frozenset([0, os.geteuid()]), frozenset([0, os.getegid()]))
        self.mt = writeFile(os.path.join(self.dir, "mt"), "localhost lmtp:\n")
        self.key = writeFile(os.path.join(self.dir, "k.pem"), "", 0o600)
        self.conf = writeFile(
            os.path.join(self.dir, "smx.conf"),
            'smar { mailertable { name = "mt"; } }\n'
            'smtps { tls { key_file = "k.pem"; cert_file = "k.pem"; } }\n'
            'map users { type = hash; file = "users.db"; }\n',
        )

    def load(self):  # type: ignore[no-untyped-def]
        return loadConfiguration(self.conf, queueDirectory=self.dir)

    def problems(self, component=None):  # type: ignore[no-untyped-def]
        return [str(p) for p in unsafeFiles(self.load(), component, self.trust)]


class UnsafeFilesTests(PermissionTestsMixin, unittest.TestCase):
    """
    L{unsafeFiles} on real files.
    """

    def test_safe(self) -> None:
        """
        Files of the running user (or root), mode 0644 (a key 0600), in a
        directory only they may write: no problem.
        """
        self.assertEqual(self.problems(), [])

    def test_worldWritableMap(self) -> None:
        """
        A mailertable everybody may write is refused with its path, the
        option that names it and the mode.
        """
        os.chmod(self.mt, 0o666)
        self.assertEqual(
            self.problems(),
            [
                "%s:1:22: mailertable: %s is writable by everyone (mode 0666)"
                % (self.conf, self.mt)
            ],
        )

    def test_declaredMap(self) -> None:
        """
        A C{map NAME { file = ...; }} is checked too (for SMAR).
        """
        users = writeFile(os.path.join(self.dir, "users.db"), "", 0o646)
        self.assertEqual(
            self.problems("smar"),
            [
                "%s:3:26: map users: %s is writable by everyone (mode 0646)"
                % (self.conf, users)
            ],
        )

    def test_configurationFile(self) -> None:
        """
        The configuration file itself, read by every component.
        """
        os.chmod(self.conf, 0o622)
        self.assertEqual(
            self.problems("qmgr"),
            [
                "%s: configuration file %s is writable by everyone (mode 0622)"
                % (self.conf, self.conf)
            ],
        )

    def test_keyReadable(self) -> None:
        """
        A private key everybody may read is refused; one its group may
        read (App. D: a key shared by server and client) is not.
        """
        os.chmod(self.key, 0o644)
        self.assertEqual(
            self.problems(),
            [
                "%s:2:15: key_file %s is a private key readable by everyone "
                "(mode 0644); make it 0600 (0640 for a key shared by server "
                "and client, App. D)" % (self.conf, self.key)
            ],
        )
        os.chmod(self.key, 0o640)
        self.assertEqual(self.problems(), [])

    def test_component(self) -> None:
        """
        Each component checks the files it reads: QMGR does not refuse
        SMAR's mailertable, SMTPS not SMTPC's.
        """
        os.chmod(self.mt, 0o666)
        os.chmod(self.key, 0o644)
        self.assertEqual(self.problems("qmgr"), [])
        self.assertEqual(len(self.problems("smar")), 1)
        self.assertEqual(len(self.problems("smtps")), 1)
        self.assertEqual(self.problems("smtpc"), [])

    def test_directory(self) -> None:
        """
        A directory everybody may write (someone could replace the file)
        is refused, unless it has the sticky bit (as /tmp).
        """
        os.chmod(self.dir, 0o777)
        self.addCleanup(os.chmod, self.dir, 0o755)
        self.assertEqual(
            self.problems("smar"),
            [
                "%s: configuration file %s: its directory %s is writable by "
                "everyone (mode 0777)" % (self.conf, self.conf, self.dir),
                "%s:1:22: mailertable: %s: its directory %s is writable by "
                "everyone (mode 0777)" % (self.conf, self.mt, self.dir),
            ],
        )
        os.chmod(self.dir, 0o1777)
        self.assertEqual(self.problems("smar"), [])

    def test_notOurs(self) -> None:
        """
        A file that belongs to another user (who can change its mode) or
        that another group may write is refused.
        """
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to give a file away")
        os.chown(self.mt, NOBODY, -1)
        self.assertEqual(len(self.problems("smar")), 1)
        self.assertIn("belongs to ", self.problems("smar")[0])
        os.chown(self.mt, 0, NOBODY)
        os.chmod(self.mt, 0o664)
        [problem] = self.problems("smar")
        self.assertRegex(problem, r"is writable by group \S+ \(mode 0664\)$")

    def test_configurationUsers(self) -> None:
        """
        The users the configuration runs its components as (C{user}) are
        smx's own: a map of SMAR's user is not refused, whatever its name.
        """
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to give a file away")
        os.chown(self.mt, NOBODY, NOBODY)
        cfg = self.load()
        self.assertEqual(len(unsafeFiles(cfg, "smar")), 1)
        with open(self.conf) as f:
            text = f.read()
        with open(self.conf, "w") as f:
            f.write(
                text.replace(
                    "smar {",
                    'smar { user = nobody; mcp_type = wait; path = "/bin/true"; '
                    'arguments = "true";',
                )
            )
        self.assertEqual([str(p) for p in unsafeFiles(self.load(), "smar")], [])

    def test_missingAndSocket(self) -> None:
        """
        A file that does not exist is not this check's business, nor is
        a socket.
        """
        self.assertEqual(checkFile(os.path.join(self.dir, "none"), self.trust), [])
        import shutil
        import socket
        import tempfile

        short = tempfile.mkdtemp(dir="/tmp")
        self.addCleanup(shutil.rmtree, short)
        path = os.path.join(short, "s")
        s = socket.socket(socket.AF_UNIX)
        self.addCleanup(s.close)
        s.bind(path)
        os.chmod(path, 0o777)
        self.assertEqual(checkFile(path, self.trust), [])

    def test_smxUsersTrusted(self) -> None:
        """
        L{Trust.forProcess} trusts root, the running user and the users
        named by C{SMXS}... that exist.
        """
        trust = Trust.forProcess({"SMXM": "nobody", "SMX": "no-such-user-smx"})
        self.assertIn(NOBODY, trust.uids)
        self.assertIn(0, trust.uids)
        self.assertIn(os.geteuid(), trust.uids)


class RefuseTests(PermissionTestsMixin, unittest.TestCase):
    """
    L{refuseUnsafeFiles} and C{twistd smx}.
    """

    def test_refuse(self) -> None:
        """
        A problem is one line on standard error and C{SystemExit(78)}.
        """
        os.chmod(self.mt, 0o666)
        err = io.StringIO()
        e = self.assertRaises(
            SystemExit, refuseUnsafeFiles, self.load(), None, "smx", err, self.trust
        )
        self.assertEqual(e.code, EX_CONFIG)
        self.assertEqual(
            err.getvalue(),
            "smx: refusing to start: %s:1:22: mailertable: %s is writable by "
            "everyone (mode 0666)\n" % (self.conf, self.mt),
        )

    def test_nothingToRefuse(self) -> None:
        """
        Safe files: it returns.
        """
        refuseUnsafeFiles(self.load(), None, "smx", io.StringIO(), self.trust)

    def test_twistd(self) -> None:
        """
        C{twistd -n smx} with a mailertable everybody may write exits with
        status 78 and one line naming it, no traceback.
        """
        os.chmod(self.mt, 0o666)
        with open(self.conf, "w") as f:
            f.write(
                'smar { mailertable { name = "mt"; } }\n'
                'smtps { daemon_address = "127.0.0.1:1"; }\n'
            )
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        result = subprocess.run(
            [twistd, "-n", "smx", "--config", "smx.conf"],
            cwd=self.dir,
            capture_output=True,
            timeout=30,
        )
        self.assertEqual(result.returncode, EX_CONFIG, result.stderr)
        self.assertEqual(
            result.stderr.decode(),
            "smx: refusing to start: smx.conf:1:22: mailertable: %s is "
            "writable by everyone (mode 0666)\n" % (os.path.abspath(self.mt),),
        )

    def test_componentProgram(self) -> None:
        """
        A component of split mode (C{twistd -n smx --component NAME}, what
        C{smx-smar} runs) checks the files it relies on at start: SMAR
        refuses a mailertable everybody may write (78, one line named
        C{smx-smar}); QMGR does not read it and goes on to its next check
        (as root: it refuses to run as root, 64).
        """
        os.chmod(self.mt, 0o666)
        with open(self.conf, "w") as f:
            f.write(
                'smar { mailertable { name = "mt"; } }\n'
                'smtps { daemon_address = "127.0.0.1:1"; }\n'
            )
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")

        def component(name: str) -> "subprocess.CompletedProcess[bytes]":
            return subprocess.run(
                [twistd, "-n", "smx", "--config", "smx.conf", "--component", name],
                cwd=self.dir,
                capture_output=True,
                timeout=30,
            )

        smar = component("smar")
        self.assertEqual(smar.returncode, EX_CONFIG, smar.stderr)
        self.assertEqual(
            smar.stderr.decode(),
            "smx-smar: refusing to start: smx.conf:1:22: mailertable: %s is "
            "writable by everyone (mode 0666)\n" % (os.path.abspath(self.mt),),
        )
        if os.geteuid() == 0:
            qmgr = component("qmgr")
            self.assertEqual(qmgr.returncode, 64, qmgr.stderr)
            self.assertNotIn(b"refusing to start", qmgr.stderr)
