# -*- test-case-name: smx.queue.test.test_maildrop -*-
"""
NAME
    smx.queue.maildrop - messages waiting in the maildrop directory

SYNOPSIS
    name = dropMessage(directory, envelope, content)        # smx sendmail
    name = dropThroughHelper(postdropProgram(), directory, envelope, content)
    for name in waitingNames(directory): ...                 # pickup
        envelope, content, uid = readDrop(directory, name)
        rewriteDrop(directory, name, envelope, content)
        removeDrop(directory, name)

DESCRIPTION
    When C{smx sendmail} cannot hand a message to SMTPS (smx does not run,
    or answers 4xx), it keeps the message in the maildrop directory, as
    Postfix's C{postdrop} does; the pickup service (L{smx.queue.pickup})
    submits it later.  One file holds one message:

        smx-maildrop 1 LF
        the envelope, a JSON object on one line, LF
        the content: CR LF line ends, not dot-stuffed

    The envelope (L{DropEnvelope}) has the sender, the recipients (each
    with its DSN C{NOTIFY} and, once refused for good, the reply), the
    DSN C{RET} and C{ENVID}, the body type, the creation time and the user
    who wrote it.

    A file is written under a temporary name (starting with C{.tmp.}),
    fsynced, renamed to its final name (C{SECONDS.MICROSECONDS.PID.RANDOM},
    so that names sort by age) and the directory is fsynced: a file with a
    final name is complete and durable.  Only then does C{smx sendmail}
    exit with status 0.  Pickup rewrites a file the same way (to a new
    temporary name renamed over it), so a crash leaves the old or the new
    version, never a mix.

SECURITY
    The directory may be writable by a group of users (C{maildrop_group});
    a user outside the group writes through the set-group-id helper
    C{smx-postdrop} (L{dropThroughHelper}, C{contrib/smx-postdrop.c}).
    Pickup therefore trusts nothing in a file: L{readDrop} opens it
    without following a symbolic link, refuses anything but a regular
    file with one link and a bounded size, and L{DropEnvelope.fromPlain}
    checks every field (no control characters, spaces or angle brackets
    in an address, so that nothing can be injected into the SMTP
    dialogue).  The user a message came from is the owner of the file,
    not what the envelope says.

DIAGNOSTICS
    L{MaildropError} says what is wrong with a file in one line.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Tuple

from smx.queue.cdb import fsyncDirectory

#: the first line of every maildrop file
MAGIC = b"smx-maildrop 1\n"

#: the prefix of a file that is still being written
TEMPORARY = ".tmp."

#: the longest envelope line accepted
MAX_ENVELOPE = 1024 * 1024

#: the longest address accepted (RFC 5321 says 256 for a path)
MAX_ADDRESS = 512

_NAME = re.compile(r"^\d{1,12}\.\d{6}\.\d{1,10}\.[0-9a-f]{16}$")
_NOTIFY = re.compile(r"^(NEVER|(SUCCESS|FAILURE|DELAY)(,(SUCCESS|FAILURE|DELAY))*)$")
_BAD_ADDRESS = re.compile(r"[\x00-\x20\x7f<>]")


class MaildropError(Exception):
    """
    A maildrop file that cannot be used; the text says why, in one line.
    """


def validAddress(address: Any, allowNull: bool = False) -> bool:
    """
    Is C{address} a path smx may put into C{MAIL FROM:<...>} or C{RCPT
    TO:<...>}: text without control characters, spaces or angle brackets,
    at most L{MAX_ADDRESS} characters, not empty unless C{allowNull}?
    """
    if not isinstance(address, str) or len(address) > MAX_ADDRESS:
        return False
    if not address:
        return allowNull
    return _BAD_ADDRESS.search(address) is None and address.isprintable()


def validNotify(value: Any) -> bool:
    """
    Is C{value} a C{NOTIFY=} value (RFC 3461): C{NEVER} or a list of
    C{SUCCESS}, C{FAILURE}, C{DELAY}?
    """
    return isinstance(value, str) and _NOTIFY.match(value) is not None


def validEnvid(value: Any) -> bool:
    """
    Is C{value} an envelope id smx passes on: printable ASCII, at most 100
    characters (as Postfix's sendmail -V)?
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= 100
        and all(" " < c <= "~" for c in value)
    )


@dataclass(frozen=True)
class DropRecipient:
    """
    One recipient of a dropped message.

    @ivar address: the forward path, without angle brackets.
    @ivar notify: the DSN C{NOTIFY=} value, or C{None}.
    @ivar failed: the reply that refused it for good (C{"550 5.1.1 ..."}),
        or C{None} while it is still to be submitted; pickup sends a bounce
        for the failed ones.
    """

    address: str
    notify: Optional[str] = None
    failed: Optional[str] = None

    def toPlain(self) -> Dict[str, Any]:
        plain = {"address": self.address}  # type: Dict[str, Any]
        if self.notify is not None:
            plain["notify"] = self.notify
        if self.failed is not None:
            plain["failed"] = self.failed
        return plain

    @classmethod
    def fromPlain(cls, plain: Any) -> "DropRecipient":
        """
        @raise MaildropError: for anything but a well-formed recipient.
        """
        if not isinstance(plain, dict):
            raise MaildropError("a recipient is not an object")
        address = plain.get("address")
        if not validAddress(address):
            raise MaildropError("bad recipient address %r" % (address,))
        notify = plain.get("notify")
        if notify is not None and not validNotify(notify):
            raise MaildropError("bad NOTIFY %r" % (notify,))
        failed = plain.get("failed")
        if failed is not None and not (
            isinstance(failed, str) and failed.isprintable()
        ):
            raise MaildropError("bad reply of a failed recipient")
        assert isinstance(address, str)
        return cls(address, notify, failed)


@dataclass(frozen=True)
class DropEnvelope:
    """
    The envelope of a dropped message.

    @ivar sender: the reverse path without angle brackets (C{""}: null).
    @ivar recipients: a tuple of L{DropRecipient}s.
    @ivar ret: the DSN C{RET=} value (C{FULL} or C{HDRS}), or C{None}.
    @ivar envid: the DSN C{ENVID=} value (not xtext-encoded), or C{None}.
    @ivar bodyType: C{"7BIT"} or C{"8BITMIME"}.
    @ivar created: when C{smx sendmail} accepted the message (POSIX time).
    @ivar user: the login name of the user who ran it (as it said).
    """

    sender: str
    recipients: Tuple[DropRecipient, ...]
    ret: Optional[str] = None
    envid: Optional[str] = None
    bodyType: str = "7BIT"
    created: float = 0.0
    user: str = ""

    def pending(self) -> List[DropRecipient]:
        """
        @return: the recipients still to be submitted.
        """
        return [r for r in self.recipients if r.failed is None]

    def failed(self) -> List[DropRecipient]:
        """
        @return: the recipients refused for good, waiting for their bounce.
        """
        return [r for r in self.recipients if r.failed is not None]

    def withRecipients(self, recipients: List[DropRecipient]) -> "DropEnvelope":
        """
        @return: this envelope with other recipients.
        """
        return replace(self, recipients=tuple(recipients))

    def toPlain(self) -> Dict[str, Any]:
        plain = {
            "sender": self.sender,
            "recipients": [r.toPlain() for r in self.recipients],
            "bodyType": self.bodyType,
            "created": self.created,
            "user": self.user,
        }  # type: Dict[str, Any]
        if self.ret is not None:
            plain["ret"] = self.ret
        if self.envid is not None:
            plain["envid"] = self.envid
        return plain

    @classmethod
    def fromPlain(cls, plain: Any) -> "DropEnvelope":
        """
        @raise MaildropError: for anything but a well-formed envelope.
        """
        if not isinstance(plain, dict):
            raise MaildropError("the envelope is not an object")
        sender = plain.get("sender")
        if not validAddress(sender, allowNull=True):
            raise MaildropError("bad sender address %r" % (sender,))
        recipients = plain.get("recipients")
        if not isinstance(recipients, list) or not recipients:
            raise MaildropError("no recipients")
        ret = plain.get("ret")
        if ret is not None and ret not in ("FULL", "HDRS"):
            raise MaildropError("bad RET %r" % (ret,))
        envid = plain.get("envid")
        if envid is not None and not validEnvid(envid):
            raise MaildropError("bad ENVID %r" % (envid,))
        bodyType = plain.get("bodyType", "7BIT")
        if bodyType not in ("7BIT", "8BITMIME"):
            raise MaildropError("bad body type %r" % (bodyType,))
        created = plain.get("created", 0.0)
        # a number of seconds since 1970, not NaN, infinite or so large
        # that formatting it as a date (Arrival-Date) would fail
        if (
            not isinstance(created, (int, float))
            or isinstance(created, bool)
            or not 0 <= created < 1e11
        ):
            raise MaildropError("bad creation time")
        user = plain.get("user", "")
        if not isinstance(user, str) or not user.isprintable():
            raise MaildropError("bad user name")
        assert isinstance(sender, str)
        return cls(
            sender,
            tuple(DropRecipient.fromPlain(r) for r in recipients),
            ret,
            envid,
            bodyType,
            float(created),
            user,
        )


def newName(now: Optional[float] = None) -> str:
    """
    A new file name: C{SECONDS.MICROSECONDS.PID.RANDOM}, sorting by age.
    """
    if now is None:
        now = time.time()
    seconds = int(now)
    micro = int((now - seconds) * 1000000)
    return "%d.%06d.%d.%s" % (seconds, micro, os.getpid(), secrets.token_hex(8))


def isDropName(name: str) -> bool:
    """
    Is C{name} the name of a complete maildrop file?
    """
    return _NAME.match(name) is not None


def _encode(envelope: DropEnvelope, content: bytes) -> bytes:
    line = json.dumps(envelope.toPlain(), ensure_ascii=True, sort_keys=True)
    return MAGIC + line.encode("ascii") + b"\n" + content


def _writeDurably(directory: str, name: str, data: bytes, mode: int) -> None:
    """
    Write C{data} to C{directory/name} through a temporary file: write,
    fsync, rename, fsync the directory.
    """
    temporary = os.path.join(directory, TEMPORARY + name + "." + secrets.token_hex(4))
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, os.path.join(directory, name))
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    fsyncDirectory(directory)


def dropMessage(
    directory: str, envelope: DropEnvelope, content: bytes, mode: int = 0o640
) -> str:
    """
    Keep a message in the maildrop directory, durably (see the module
    docstring): when this returns, the file is on stable storage.

    @param content: the message with CR LF line ends.
    @return: the file name.
    @raise OSError: if it cannot be written (the temporary file is
        removed).
    """
    name = newName(envelope.created or None)
    _writeDurably(directory, name, _encode(envelope, content), mode)
    return name


#: the set-group-id helper that writes into a group's maildrop directory
POSTDROP = "smx-postdrop"


def postdropProgram() -> Optional[str]:
    """
    The C{smx-postdrop} helper: C{$SMXPOSTDROP}, else the one beside the
    running interpreter (C{.venv/bin}, where C{tools/bootstrap.sh} builds
    it and C{smx setup} makes it set-group-id); C{None} if there is none.
    (The helper takes its rights from its own mode, not from who names
    it, so the environment may choose it.)
    """
    import sys

    path = os.environ.get("SMXPOSTDROP") or os.path.join(
        os.path.dirname(sys.executable), POSTDROP
    )
    return path if os.access(path, os.X_OK) else None


def dropThroughHelper(
    program: str, directory: str, envelope: DropEnvelope, content: bytes
) -> str:
    """
    Keep a message in the maildrop directory through the set-group-id
    helper C{contrib/smx-postdrop.c} (as Postfix's C{postdrop}), for a
    user who may not write the directory: it writes the file as
    L{dropMessage} does (temporary name, fsync, rename).

    @return: the file name.
    @raise OSError: if the helper fails (its message in C{strerror}).
    """
    import subprocess

    try:
        result = subprocess.run(
            [program, directory],
            input=_encode(envelope, content),
            capture_output=True,
            env={},
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise OSError(errno.EIO, "%s: %s" % (program, e))
    name = result.stdout.decode("ascii", "replace").strip()
    if result.returncode != 0 or not isDropName(name):
        why = result.stderr.decode("utf-8", "replace").strip()
        raise OSError(errno.EACCES, why or "%s failed" % (program,))
    return name


def rewriteDrop(
    directory: str, name: str, envelope: DropEnvelope, content: bytes
) -> None:
    """
    Replace the envelope of a maildrop file, durably and atomically.
    """
    _writeDurably(directory, name, _encode(envelope, content), 0o600)


def removeDrop(directory: str, name: str) -> None:
    """
    Remove a maildrop file (and make the removal durable); a file already
    gone is not an error.
    """
    try:
        os.unlink(os.path.join(directory, name))
    except FileNotFoundError:
        return
    fsyncDirectory(directory)


def waitingNames(directory: str) -> List[str]:
    """
    @return: the names of the complete files in C{directory}, oldest first.
    """
    return sorted(n for n in os.listdir(directory) if isDropName(n))


def staleTemporaryNames(directory: str, now: float, age: float) -> List[str]:
    """
    @return: the names of temporary files older than C{age} seconds: left
        by a C{smx sendmail} that was killed before it finished, so never
        accepted.
    """
    stale = []
    for n in os.listdir(directory):
        if not n.startswith(TEMPORARY):
            continue
        try:
            st = os.lstat(os.path.join(directory, n))
        except OSError:
            continue
        if now - st.st_mtime > age:
            stale.append(n)
    return sorted(stale)


def readDrop(
    directory: str, name: str, maxSize: int
) -> Tuple[DropEnvelope, bytes, int]:
    """
    Read a maildrop file.

    @param maxSize: the largest file accepted, in bytes.
    @return: C{(envelope, content, uid of the file's owner)}.
    @raise FileNotFoundError: if it is gone.
    @raise MaildropError: if it is not a usable maildrop file.
    """
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise
        if e.errno == errno.ELOOP:
            raise MaildropError("is a symbolic link")
        raise MaildropError("cannot open: %s" % (e.strerror,))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MaildropError("not a regular file")
        if st.st_nlink != 1:
            raise MaildropError("has %d links" % (st.st_nlink,))
        if st.st_size > maxSize:
            raise MaildropError(
                "%d bytes, more than the %d accepted" % (st.st_size, maxSize)
            )
        chunks = []
        left = maxSize + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > maxSize:
        raise MaildropError("more than %d bytes" % (maxSize,))
    if not data.startswith(MAGIC):
        raise MaildropError("not a maildrop file (no %r line)" % (MAGIC.strip(),))
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_ENVELOPE)
    if end < 0:
        raise MaildropError("the envelope line does not end")
    try:
        plain = json.loads(data[len(MAGIC) : end].decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        # RecursionError: nested deeper than the parser recurses
        raise MaildropError("the envelope is not JSON: %s" % (e,))
    envelope = DropEnvelope.fromPlain(plain)
    return envelope, data[end + 1 :], st.st_uid


def preparedDirectory(
    directory: str, group: Optional[str] = None
) -> Tuple[int, List[str]]:
    """
    Create the maildrop directory if it is missing and, with a group, give
    it that group and mode 3730 (setgid, so that files get the group;
    sticky, so that nobody removes another user's file; no read for the
    group, so that nobody lists them), like Postfix's maildrop and
    C{postdrop} group.  Without a group a new directory is mode 0700 and
    an existing one keeps its mode.

    @return: C{(mode, warnings)}: the directory's mode and one line per
        change that could not be made.
    @raise KeyError: if the group does not exist.
    @raise OSError: if the directory cannot be created.
    """
    import grp

    warnings = []  # type: List[str]
    gid = grp.getgrnam(group).gr_gid if group else None
    try:
        os.mkdir(directory, 0o700)
        os.chmod(directory, 0o700)
    except FileExistsError:
        pass
    if gid is not None:
        try:
            st = os.stat(directory)
            if st.st_gid != gid:
                os.chown(directory, -1, gid)
            if stat.S_IMODE(st.st_mode) != 0o3730:
                os.chmod(directory, 0o3730)
        except OSError as e:
            warnings.append(
                "cannot give %s group %s and mode 3730: %s"
                % (directory, group, e.strerror)
            )
    return stat.S_IMODE(os.stat(directory).st_mode), warnings


__all__ = [
    "MaildropError",
    "DropRecipient",
    "DropEnvelope",
    "dropMessage",
    "dropThroughHelper",
    "postdropProgram",
    "rewriteDrop",
    "removeDrop",
    "readDrop",
    "waitingNames",
    "staleTemporaryNames",
    "preparedDirectory",
    "validAddress",
    "validNotify",
    "validEnvid",
    "isDropName",
    "newName",
]
