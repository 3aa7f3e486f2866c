# -*- test-case-name: smx.queue.test.test_maildrop -*-
"""
Tests for L{smx.queue.maildrop}: the files C{smx sendmail} leaves for
pickup, with real files in a temporary directory.
"""

from __future__ import annotations

import grp
import json
import os
import stat

from twisted.trial import unittest

from smx.queue import maildrop
from smx.queue.maildrop import (
    MAGIC,
    DropEnvelope,
    DropRecipient,
    MaildropError,
    dropMessage,
    isDropName,
    preparedDirectory,
    readDrop,
    removeDrop,
    rewriteDrop,
    staleTemporaryNames,
    validAddress,
    waitingNames,
)

CONTENT = b"Subject: hi\r\n\r\nhello\r\n"


def envelope(**kw) -> DropEnvelope:
    values = dict(
        sender="alice@example.test",
        recipients=(
            DropRecipient("bob@example.test", "SUCCESS,FAILURE"),
            DropRecipient("carol@example.test"),
        ),
        ret="HDRS",
        envid="id+1",
        bodyType="8BITMIME",
        created=1700000000.5,
        user="alice",
    )
    values.update(kw)
    return DropEnvelope(**values)  # type: ignore[arg-type]


class MaildropTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def writeRaw(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path


class DropTests(MaildropTestCase):
    """
    Writing and reading maildrop files.
    """

    def test_roundTrip(self) -> None:
        """
        A dropped message reads back with the same envelope and content,
        the owner's uid, under a name that L{waitingNames} lists; no
        temporary file is left and the file is mode 0640.
        """
        name = dropMessage(self.dir, envelope(), CONTENT)
        self.assertTrue(isDropName(name), name)
        self.assertEqual(waitingNames(self.dir), [name])
        self.assertEqual(os.listdir(self.dir), [name])
        mode = stat.S_IMODE(os.stat(os.path.join(self.dir, name)).st_mode)
        self.assertEqual(mode, 0o640)
        got, content, uid = readDrop(self.dir, name, 1 << 20)
        self.assertEqual(got, envelope())
        self.assertEqual(content, CONTENT)
        self.assertEqual(uid, os.getuid())

    def test_format(self) -> None:
        """
        The file is the magic line, the envelope as one JSON line, then the
        content as it is.
        """
        name = dropMessage(self.dir, envelope(), CONTENT)
        with open(os.path.join(self.dir, name), "rb") as f:
            data = f.read()
        first, line, content = data.split(b"\n", 2)
        self.assertEqual(first + b"\n", MAGIC)
        self.assertEqual(json.loads(line)["recipients"][0]["notify"], "SUCCESS,FAILURE")
        self.assertEqual(content, CONTENT)

    def test_namesSortByAge(self) -> None:
        """
        Names start with the time of the message, so that the oldest is
        listed first; temporary and corrupt files are not listed.
        """
        late = dropMessage(self.dir, envelope(created=1800000000.0), CONTENT)
        early = dropMessage(self.dir, envelope(created=1700000000.0), CONTENT)
        self.writeRaw(".tmp.x", b"partial")
        self.writeRaw("corrupt." + early, b"junk")
        self.assertEqual(waitingNames(self.dir), [early, late])

    def test_failedWriteLeavesNothing(self) -> None:
        """
        A message that cannot be renamed into place leaves no temporary
        file behind and raises the error.
        """
        self.patch(maildrop, "newName", lambda now=None: "taken")
        os.mkdir(os.path.join(self.dir, "taken"))
        os.mkdir(os.path.join(self.dir, "taken", "x"))
        self.assertRaises(OSError, dropMessage, self.dir, envelope(), CONTENT)
        self.assertEqual(os.listdir(self.dir), ["taken"])

    def test_rewriteAndRemove(self) -> None:
        """
        L{rewriteDrop} replaces the envelope in place; L{removeDrop}
        removes the file, and a file already gone is not an error.
        """
        name = dropMessage(self.dir, envelope(), CONTENT)
        fewer = envelope().withRecipients(
            [DropRecipient("carol@example.test", None, "550 5.1.1 unknown")]
        )
        rewriteDrop(self.dir, name, fewer, CONTENT)
        got, content, _ = readDrop(self.dir, name, 1 << 20)
        self.assertEqual(got, fewer)
        self.assertEqual([r.address for r in got.failed()], ["carol@example.test"])
        self.assertEqual(got.pending(), [])
        self.assertEqual(os.listdir(self.dir), [name])
        removeDrop(self.dir, name)
        removeDrop(self.dir, name)
        self.assertEqual(os.listdir(self.dir), [])

    def test_staleTemporaryFiles(self) -> None:
        """
        Temporary files older than the age given are stale; newer ones
        and complete files are not.
        """
        old = self.writeRaw(".tmp.old", b"x")
        self.writeRaw(".tmp.new", b"x")
        dropMessage(self.dir, envelope(), CONTENT)
        os.utime(old, (1000, 1000))
        self.assertEqual(staleTemporaryNames(self.dir, 100000, 3600), [".tmp.old"])


class UntrustedFileTests(MaildropTestCase):
    """
    L{readDrop} trusts nothing in a file: the directory may be writable by
    local users.
    """

    def assertRefused(self, name: str, message: str, maxSize: int = 1 << 20) -> None:
        e = self.assertRaises(MaildropError, readDrop, self.dir, name, maxSize)
        self.assertIn(message, str(e))

    def test_symlink(self) -> None:
        """
        A symbolic link (to a file the user could not read) is refused,
        not followed.
        """
        target = self.writeRaw("target", MAGIC + b"{}\n")
        os.symlink(target, os.path.join(self.dir, "1.000000.1.0000000000000000"))
        self.assertRefused("1.000000.1.0000000000000000", "symbolic link")

    def test_hardLink(self) -> None:
        """
        A file with a second link (a hard link to someone else's file) is
        refused.
        """
        name = dropMessage(self.dir, envelope(), CONTENT)
        os.link(os.path.join(self.dir, name), os.path.join(self.dir, "other"))
        self.assertRefused(name, "2 links")

    def test_notRegular(self) -> None:
        """
        A FIFO is refused without blocking.
        """
        os.mkfifo(os.path.join(self.dir, "fifo"))
        self.assertRefused("fifo", "not a regular file")

    def test_tooLarge(self) -> None:
        """
        A file larger than the limit is refused.
        """
        name = dropMessage(self.dir, envelope(), CONTENT * 100)
        self.assertRefused(name, "more than the 100 accepted", maxSize=100)

    def test_garbage(self) -> None:
        """
        A file without the magic line, with an envelope that is not JSON,
        or whose envelope line does not end is refused.
        """
        self.writeRaw("a", b"From: x\r\n\r\nbody")
        self.assertRefused("a", "not a maildrop file")
        self.writeRaw("b", MAGIC + b"{not json\n")
        self.assertRefused("b", "not JSON")
        self.writeRaw("c", MAGIC + b"{}")
        self.assertRefused("c", "does not end")

    def test_deeplyNested(self) -> None:
        """
        An envelope line nested deeper than the JSON parser recurses is
        refused like any other that is not JSON, not a RecursionError that
        would stop pickup.
        """
        self.writeRaw("d", MAGIC + b"[" * 200000 + b"\n" + CONTENT)
        self.assertRefused("d", "not JSON")

    def test_injection(self) -> None:
        """
        Addresses that could inject commands into the SMTP dialogue (CR,
        LF, angle brackets, spaces), bad DSN values and other types are
        refused field by field.
        """
        good = envelope().toPlain()
        cases = [
            ({"sender": "a@b>\r\nRCPT TO:<x@y"}, "bad sender"),
            ({"recipients": [{"address": "x@y\r\nDATA"}]}, "bad recipient"),
            ({"recipients": [{"address": "<x@y>"}]}, "bad recipient"),
            ({"recipients": [{"address": ""}]}, "bad recipient"),
            ({"recipients": []}, "no recipients"),
            ({"recipients": [{"address": "x@y", "notify": "ALWAYS"}]}, "NOTIFY"),
            ({"ret": "ALL"}, "RET"),
            ({"envid": "a b"}, "ENVID"),
            ({"bodyType": "BINARYMIME"}, "body type"),
            ({"created": "yesterday"}, "creation time"),
            ({"created": float("nan")}, "creation time"),
            ({"created": float("inf")}, "creation time"),
            ({"created": 1e300}, "creation time"),
            ({"created": -1}, "creation time"),
            ({"created": True}, "creation time"),
            ({"user": "x\ny"}, "user"),
        ]
        for change, message in cases:
            plain = dict(good, **change)
            self.writeRaw("f", MAGIC + json.dumps(plain).encode() + b"\n" + CONTENT)
            self.assertRefused("f", message)

    def test_validAddress(self) -> None:
        """
        Addresses may be UTF-8 but have no controls, spaces or brackets.
        """
        self.assertTrue(validAddress("jörg@example.test"))
        self.assertTrue(validAddress("", allowNull=True))
        for bad in ("", "a b@c", "a\x00@b", "a>@b", "x" * 600, None):
            self.assertFalse(validAddress(bad), bad)


class DirectoryTests(MaildropTestCase):
    """
    L{preparedDirectory}: the maildrop directory and its group.
    """

    def test_created(self) -> None:
        """
        A missing directory is created mode 0700.
        """
        path = os.path.join(self.dir, "maildrop")
        mode, warnings = preparedDirectory(path)
        self.assertEqual((mode, warnings), (0o700, []))

    def test_existingKeepsItsMode(self) -> None:
        """
        Without a group, an existing directory keeps its mode (an
        administrator may have made it 1733).
        """
        path = os.path.join(self.dir, "maildrop")
        os.mkdir(path)
        os.chmod(path, 0o1733)
        self.assertEqual(preparedDirectory(path)[0], 0o1733)

    def test_group(self) -> None:
        """
        With a group, the directory gets it and mode 3730 (setgid, sticky,
        group may write but not list), so that a file written there by a
        member belongs to the group.
        """
        if os.getuid() != 0:
            raise unittest.SkipTest("needs root to change the group")
        group = grp.getgrnam("mail")
        path = os.path.join(self.dir, "maildrop")
        mode, warnings = preparedDirectory(path, "mail")
        self.assertEqual((mode, warnings), (0o3730, []))
        self.assertEqual(os.stat(path).st_gid, group.gr_gid)
        name = dropMessage(path, envelope(), CONTENT)
        self.assertEqual(os.stat(os.path.join(path, name)).st_gid, group.gr_gid)

    def test_groupMembersWriteOnly(self) -> None:
        """
        With mode 3730, an unprivileged member of the group can create a
        file in the directory but cannot list it or remove another's
        file, and a user outside the group cannot create one (a real
        process run as nobody with C{setpriv}).
        """
        if os.getuid() != 0 or not os.access("/usr/bin/setpriv", os.X_OK):
            raise unittest.SkipTest("needs root and setpriv (util-linux)")
        for d in (self.dir, os.path.dirname(self.dir)):
            os.chmod(d, 0o755)
        path = os.path.join(self.dir, "maildrop")
        preparedDirectory(path, "mail")
        other = dropMessage(path, envelope(), CONTENT)

        def asNobody(groups: str, script: str) -> int:
            import subprocess

            argv = ["/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup"]
            argv += ["--groups=" + groups, "/bin/sh", "-c", script]
            return subprocess.run(argv, capture_output=True, timeout=10).returncode

        self.assertEqual(asNobody("mail", "echo x > %s/member" % (path,)), 0)
        self.assertNotEqual(asNobody("mail", "ls %s" % (path,)), 0)
        self.assertNotEqual(asNobody("mail", "rm -f %s/%s" % (path, other)), 0)
        self.assertNotEqual(asNobody("nogroup", "echo x > %s/outsider" % (path,)), 0)
        self.assertEqual(sorted(os.listdir(path)), sorted(["member", other]))
        gid = grp.getgrnam("mail").gr_gid
        self.assertEqual(os.stat(os.path.join(path, "member")).st_gid, gid)

    def test_unknownGroup(self) -> None:
        """
        A group that does not exist raises L{KeyError}.
        """
        self.assertRaises(
            KeyError, preparedDirectory, os.path.join(self.dir, "m"), "no-such-group-x"
        )
