# -*- test-case-name: smx.scripts.test.test_integration_postdrop -*-
"""
Integration tests of the maildrop group and the set-group-id helper
C{smx-postdrop} (C{contrib/smx-postdrop.c}), run as root with a throwaway
plain user and group: the real helper, compiled with cc and made
set-group-id, run by the plain user with C{runuser}; and C{smx sendmail}
run by that user while smx is stopped, the message delivered once smx
(C{twistd -n smx}, L{smx.test.mta}) starts.
"""

from __future__ import annotations

import grp
import json
import os
import stat
import subprocess
from typing import List, Tuple

from twisted.trial.unittest import SkipTest, TestCase

from smx.queue.maildrop import (
    MAGIC,
    DropEnvelope,
    DropRecipient,
    preparedDirectory,
    readDrop,
    waitingNames,
)
from smx.scripts.test.test_integration_sendmail import _Base as SendmailBase
from smx.scripts.test.throwaway import (
    addGroup,
    addUser,
    buildPostdrop,
    canRunPython,
    needRoot,
    prefix,
)
from smx.test.mta import tempDirectory, waitFor


def maildropFile(sender: str, recipient: str) -> bytes:
    envelope = DropEnvelope(sender, (DropRecipient(recipient),), created=1.0)
    return (
        MAGIC
        + json.dumps(envelope.toPlain()).encode("ascii")
        + b"\nSubject: x\r\n\r\nhello\r\n"
    )


class HelperTests(TestCase):
    """
    C{smx-postdrop} as a plain user who is not in the maildrop group.
    """

    def setUp(self) -> None:
        needRoot()
        base = prefix()
        self.group = base + "d"
        self.user = base + "u"
        self.gid = addGroup(self, self.group)
        self.uid = addUser(self, self.user)
        self.helper = buildPostdrop(self, self.group)
        self.root = tempDirectory(self, "smx-postdrop-")
        self.maildrop = os.path.join(self.root, "maildrop")
        mode, warnings = preparedDirectory(self.maildrop, self.group)
        self.assertEqual((mode, warnings), (0o3730, []))

    def drop(self, data: bytes, directory: str) -> Tuple[int, str, str]:
        p = subprocess.run(
            ["runuser", "-u", self.user, "--", self.helper, directory],
            input=data,
            capture_output=True,
            timeout=30,
        )
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def test_drop(self) -> None:
        """
        The helper writes the file: the name of L{smx.queue.maildrop},
        the user as owner (what pickup logs), the maildrop group, mode
        0640, no temporary file left; pickup reads it.  The user cannot
        list the directory or read the file himself.
        """
        data = maildropFile("u@example.org", "bob@example.org")
        status, out, err = self.drop(data, self.maildrop)
        self.assertEqual((status, err), (0, ""))
        name = out.strip()
        self.assertEqual(waitingNames(self.maildrop), [name])
        self.assertEqual(os.listdir(self.maildrop), [name])
        st = os.stat(os.path.join(self.maildrop, name))
        self.assertEqual(
            (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
            (self.uid, self.gid, 0o640),
        )
        envelope, content, uid = readDrop(self.maildrop, name, 1 << 20)
        self.assertEqual(uid, self.uid)
        self.assertEqual(envelope.recipients[0].address, "bob@example.org")
        self.assertEqual(content, b"Subject: x\r\n\r\nhello\r\n")
        for argv in (["ls", self.maildrop], ["cat", os.path.join(self.maildrop, name)]):
            p = subprocess.run(
                ["runuser", "-u", self.user, "--"] + argv, capture_output=True
            )
            self.assertNotEqual(p.returncode, 0, argv)

    def test_notAMaildrop(self) -> None:
        """
        The helper writes into no other directory: not one of another
        group, not one without the sticky bit, not one the group may
        list (exit 77, EX_NOPERM, one line); nothing is created.
        """
        other = os.path.join(self.root, "other")
        for mode, gid in ((0o3730, 0), (0o2730, self.gid), (0o3770, self.gid)):
            os.mkdir(other)
            os.chown(other, 0, gid)
            os.chmod(other, mode)
            status, out, err = self.drop(b"x", other)
            self.assertEqual(status, 77, (oct(mode), err))
            self.assertIn("not a maildrop directory", err)
            self.assertEqual(os.listdir(other), [])
            os.rmdir(other)

    def test_notSetGroupId(self) -> None:
        """
        A helper that is not set-group-id (as C{tools/bootstrap.sh} builds
        it, before C{smx setup}) says so and that C{smx setup} makes it
        so: exit 77 (EX_NOPERM), one line; nothing is created.
        """
        os.chmod(self.helper, 0o755)
        status, out, err = self.drop(b"x", self.maildrop)
        self.assertEqual(status, 77, err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertTrue(err.startswith("smx-postdrop: not set-group-id: "), err)
        self.assertIn("smx setup", err)
        self.assertEqual(os.listdir(self.maildrop), [])

    def test_noDirectory(self) -> None:
        """
        A directory that does not exist (smx never ran): exit 75
        (EX_TEMPFAIL), one line naming it.
        """
        missing = os.path.join(self.root, "none")
        status, out, err = self.drop(b"x", missing)
        self.assertEqual(status, 75)
        self.assertEqual(
            err, "smx-postdrop: %s: No such file or directory\n" % (missing,)
        )

    def test_usage(self) -> None:
        """
        No directory: a usage line and exit 64.
        """
        p = subprocess.run([self.helper], capture_output=True, input=b"")
        self.assertEqual(p.returncode, 64)
        self.assertIn(b"usage: smx-postdrop DIRECTORY", p.stderr)


class PlainUserSendmailTests(SendmailBase):
    """
    A plain user (not in the maildrop group) runs C{smx sendmail} while
    smx is stopped; smx starts and delivers the message.
    """

    def setUp(self) -> None:
        needRoot()
        SendmailBase.setUp(self)
        base = prefix()
        self.group = base + "d"
        self.user = base + "u"
        self.gid = addGroup(self, self.group)
        self.uid = addUser(self, self.user)
        if not canRunPython(self.user):
            raise SkipTest(
                "a plain user cannot run this interpreter (%s); build the "
                "environment with tools/bootstrap.sh from /usr/bin/python3"
                % (os.path.realpath(os.sys.executable),)
            )
        self.helper = buildPostdrop(self, self.group)
        with open(self.mta.config) as f:
            text = f.read()
        with open(self.mta.config, "w") as f:
            f.write(
                text.replace(
                    "pickup {", "pickup { maildrop_group = %s;" % (self.group,)
                )
            )
        self.maildrop = self.mta.path("maildrop")
        # as "smx setup" makes it (pickup would, when smx first starts)
        preparedDirectory(self.maildrop, self.group)

    def runAsUser(self, *args: str, helper: bool = True) -> Tuple[int, str]:
        environ = ["SMXCONF=" + self.mta.config, "HOME=/", "PATH=/usr/bin:/bin"]
        if helper:
            environ.append("SMXPOSTDROP=" + self.helper)
        else:
            environ.append("SMXPOSTDROP=/nonexistent")
        p = subprocess.run(
            ["runuser", "-u", self.user, "--", "env", "-i"]
            + environ
            + [os.path.join(self.bin, "sendmail")]
            + list(args),
            input=b"Subject: from a plain user\n\nhello\n",
            capture_output=True,
            timeout=30,
            cwd="/",
        )
        err = p.stderr.decode("utf-8", "replace")
        self.assertNotIn("Traceback", err)
        return p.returncode, err

    def test_dropThenDeliver(self) -> None:
        """
        With smx stopped the user's message is kept through smx-postdrop
        (exit 0), owned by the user; smx starts and delivers it, and
        pickup logs the user's uid.
        """
        status, err = self.runAsUser("bob@smx.test")
        self.assertEqual((status, err), (0, ""))
        [name] = waitingNames(self.maildrop)
        st = os.stat(os.path.join(self.maildrop, name))
        self.assertEqual((st.st_uid, st.st_gid), (self.uid, self.gid))
        self.mta.start()
        [m] = self.delivered("bob")
        self.assertIn(b"Subject: from a plain user", m)
        self.assertIn(b"from userid %d" % (self.uid,), m)
        self.assertTrue(waitFor(lambda: not os.listdir(self.maildrop), 5))

        def records() -> List[str]:
            return [r for r in self.mta.records("pickup") if "nrcpts=" in r]

        self.assertTrue(waitFor(lambda: records(), 5), self.mta.log())
        self.assertIn("uid=%d" % (self.uid,), records()[0])

    def test_withoutHelper(self) -> None:
        """
        Without the helper the user cannot keep the message: exit 75
        (EX_TEMPFAIL) with one line saying why; nothing is left behind.
        """
        status, err = self.runAsUser("bob@smx.test", helper=False)
        self.assertEqual(status, 75, err)
        self.assertIn("cannot keep the message: ", err)
        self.assertIn("Permission denied", err)
        self.assertEqual(os.listdir(self.maildrop), [])


class PlainUserWithoutGroupTests(SendmailBase):
    """
    A plain user runs C{smx sendmail} while smx is stopped, and the
    configuration has no C{maildrop_group} (as C{make run}'s).
    """

    def setUp(self) -> None:
        needRoot()
        SendmailBase.setUp(self)
        base = prefix()
        self.group = base + "d"
        self.user = base + "u"
        addGroup(self, self.group)
        addUser(self, self.user)
        if not canRunPython(self.user):
            raise SkipTest(
                "a plain user cannot run this interpreter (%s); build the "
                "environment with tools/bootstrap.sh from /usr/bin/python3"
                % (os.path.realpath(os.sys.executable),)
            )
        self.helper = buildPostdrop(self, self.group)
        self.maildrop = self.mta.path("maildrop")
        preparedDirectory(self.maildrop, None)

    def test_saysWhy(self) -> None:
        """
        The message cannot be kept (exit 75) and the one line says that
        without maildrop_group only root and smx's user may keep mail,
        with the helper and without it; nothing is left behind.
        """
        for helper in (self.helper, "/nonexistent"):
            p = subprocess.run(
                ["runuser", "-u", self.user, "--", "env", "-i"]
                + ["SMXCONF=" + self.mta.config, "HOME=/", "SMXPOSTDROP=" + helper]
                + [os.path.join(self.bin, "sendmail"), "bob@smx.test"],
                input=b"Subject: s\n\nhello\n",
                capture_output=True,
                timeout=30,
                cwd="/",
            )
            err = p.stderr.decode("utf-8", "replace")
            self.assertEqual(p.returncode, 75, err)
            self.assertNotIn("Traceback", err)
            [line] = [x for x in err.splitlines() if "cannot keep" in x]
            self.assertIn("without maildrop_group in the pickup section", line)
            self.assertEqual(os.listdir(self.maildrop), [])
