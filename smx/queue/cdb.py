# -*- test-case-name: smx.queue.test.test_cdb -*-
"""
NAME
    smx.queue.cdb - CDB, the content database: message contents as files

SYNOPSIS
    store = FileContentStore("/var/spool/smx")
    writer = store.createWriter("S00000000407CE49200")
    writer.write(chunk); ...
    d = writer.commit()        # fires when file and directory are synced

DESCRIPTION
    Every message is stored exactly as received, in one file named by the
    SMTPS transaction id in one of the sixteen directories C{0}-C{9},
    C{A}-C{F} under the base directory (seed §4.1, §10).  The directory is
    chosen by the last hexadecimal digit of the counter part of the id, so
    consecutive transactions spread over all sixteen directories.

    The sixteen directories are spread over the file system: on ext2, ext3
    and ext4 the base directory gets the "top of directory hierarchy"
    flag (C{chattr +T}) before they are made, so that each lands in a
    block group of its own with free inodes, as home directories do.
    Creating a file then does not contend with the files of other
    programs, or with their recent mass deletions: ext4 without a journal
    steps over every inode freed in the last minutes of the group one by
    one, and a create after a large C{rm -r} nearby was measured at 1 ms
    of CPU instead of 0.015.  Where the flag is not supported, nothing
    changes.

    Writes are buffered and go to the file in large chunks.  C{commit()}
    flushes the buffer, C{fsync}s the file and then its directory: only
    then is the content on stable storage.  On ext4, XFS and btrfs the
    fsync of a new file already makes its directory entry durable (see
    L{ENTRY_SYNCED_BY_FSYNC}); there the directory is not synced again,
    which halves the cache flushes the disk does per message.  The sync
    runs in the thread pool given to the store (so that the reactor keeps
    serving other clients), or synchronously when no pool is given.

    SMTPS does not sync what it receives itself: its store is
    C{syncedByQueueManager}, its writers write the content out with
    C{finish()} (in the reactor thread: page cache writes), and QMGR
    makes it durable in the IBDB commit of the envelopes
    (L{ContentSync}): with C{IBDB { content_sync = filesystem }} one
    C{syncfs(2)} of the queue's file system covers every content and the
    IBDB records of that commit, however many; with C{file}, an fsync of
    each content file.

    Removed contents are recycled: QMGR renames the file of a removed
    content of at most L{RECYCLE_MAX_SIZE} bytes to C{.free.ID} in its
    directory (at most L{RECYCLE_PER_DIRECTORY} such files in each)
    instead of unlinking it, and a writer that creates its file at once
    (SMTPS) takes one of them by renaming it to its transaction id
    (C{renameat2(RENAME_NOREPLACE)}), overwrites it in place and cuts it
    to the length written.  Overwriting blocks the file already has costs
    the file system far less than a new file and an unlink: no inode or
    block is allocated or freed, so there is nothing to journal beyond the
    size and times, and nothing to discard (measured on this project's
    ext4 with C{discard}: half the time and CPU per message synced).
    Names starting with a dot are not contents (L{transactionIds}).  The
    kept files are removed once none was kept for L{PURGE_AFTER} seconds,
    and when the store's service stops (L{ContentStoreService}).
    Two guards keep an old message from ever going out as a new one:

      - readers (L{open}) take a shared C{flock} and check that the path
        still names the file they opened; a writer takes a recycled file
        only with an exclusive C{flock} (not while anybody still reads
        it: it makes a new file instead);
      - a recycled file's writer gives the CRC-32 of what it wrote
        (L{ContentWriter.recycledCrc}); SMTPS puts it in the envelope
        (C{contentCrc}), and recovery drops a transaction never
        acknowledged whose content does not match it (a power failure
        may keep the rename and not the overwrite).

CONFIGURATION PARAMETERS
    CDB_base_directory (global, seed §5.4); IBDB { content_sync } (qmgr)

SECURITY
    Files are created with mode 0640 and O_EXCL, and recycled files are
    renamed without replacing: an existing content is never overwritten.
    A recycled file keeps old content until it is overwritten, in the
    same directories as the contents (at most 16 x 32 files of at most
    64 KiB).  Transaction ids are checked before they become file names.

DIAGNOSTICS
    A failed write (a full disk: ENOSPC, EDQUOT) does not raise from
    C{write()}: it is remembered, the partial file is removed and
    C{commit()} errbacks with the L{OSError}, which SMTPS answers with 451.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import random
import struct
import sys
import time
import zlib
from typing import Any, Dict, List, Optional, Tuple

from twisted.application import service
from twisted.internet import defer, threads
from twisted.python.failure import Failure
from zope.interface import implementer

from smx import libc
from smx.ids import isServerId
from smx.interfaces import IContentStore

#: the sixteen CDB directories (seed §4.1)
DIRECTORIES = tuple("0123456789ABCDEF")

#: bytes gathered before one write(2)
CHUNK_SIZE = 128 * 1024

#: the write(2) used (tests replace it to simulate a full disk)
_write = os.write

#: the name prefix of a removed content file kept for reuse
FREE_PREFIX = ".free."
#: a removed content larger than this is unlinked, not kept for reuse
RECYCLE_MAX_SIZE = 64 * 1024
#: at most this many files kept for reuse in each CDB directory
RECYCLE_PER_DIRECTORY = 32
#: the shortest and longest time in seconds between two listings of a
#: directory: by a writer looking for free files, by removals counting
#: them once there seem to be enough (writers take them meanwhile);
#: doubled each time a listing finds none, or still enough
LIST_DELAY_MIN = 0.01
LIST_DELAY_MAX = 1.0
#: seconds without a file kept for reuse after which the kept ones go
PURGE_AFTER = 2.0
#: seconds a removal waits in the reactor for others to go to the thread
#: pool with it (one hand-over to a thread costs more than an unlink)
REMOVAL_DELAY = 0.05

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
#: Linux C{renameat2(2)}, or C{None} where there is none
_renameat2 = libc.function(
    ("renameat2",),
    [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint],
)


def renameNoReplace(source: str, target: str) -> None:
    """
    Rename C{source} to C{target} unless C{target} exists.

    @raise OSError: C{EEXIST} if it does, C{ENOENT} if C{source} is gone,
        C{ENOSYS} where the system cannot rename without replacing.
    """
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if (
        _renameat2(
            _AT_FDCWD,
            os.fsencode(source),
            _AT_FDCWD,
            os.fsencode(target),
            _RENAME_NOREPLACE,
        )
        != 0
    ):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), source)


#: from <linux/fs.h>: FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_TOPDIR_FL
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000

#: the ioctl(2) used (tests replace it to simulate other file systems)
_ioctl = fcntl.ioctl


def spreadSubdirectories(path: str) -> bool:
    """
    Ask the file system to spread the directories made in C{path} over
    its block groups: the flag C{chattr +T} sets (Linux, ext2/3/4).  It
    changes only where directories made afterwards are placed.

    @return: whether the flag is set; C{False} where it is not supported
        (another system or file system, or a directory of another user).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return False
    try:
        (flags,) = struct.unpack("i", _ioctl(fd, _FS_IOC_GETFLAGS, b"\0" * 4))
        if not flags & _FS_TOPDIR_FL:
            _ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags | _FS_TOPDIR_FL))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


#: file systems on which fsync(2) of a newly created file also puts its
#: directory entry on stable storage, so that the directory need not be
#: synced as well: ext4 (the journal commit holds the create; without a
#: journal, ext4_sync_parent() writes the parent directory), XFS (the log
#: force covers the create transaction) and btrfs (its log tree records
#: new names).  Everywhere else the directory is fsynced too, as POSIX
#: asks.
ENTRY_SYNCED_BY_FSYNC = frozenset(["ext4", "xfs", "btrfs"])

#: where the mounts are listed (tests point it at a file of their own)
MOUNTINFO = "/proc/self/mountinfo"


def fileSystemType(path: str) -> Optional[str]:
    """
    @return: the type of the file system C{path} is on (as in
        C{/proc/self/mountinfo}: C{"ext4"}, C{"xfs"}, C{"tmpfs"}, ...), or
        C{None} where it cannot be told (another OS, no such mount).
    """
    try:
        device = os.stat(path).st_dev
        with open(MOUNTINFO) as f:
            lines = f.readlines()
    except OSError:
        return None
    wanted = "%d:%d" % (os.major(device), os.minor(device))
    for line in lines:
        # id parent major:minor root mountpoint options [tags...] - type ...
        fields = line.split()
        if len(fields) > 2 and fields[2] == wanted and "-" in fields[3:]:
            rest = fields[fields.index("-", 3) + 1 :]
            if rest:
                return rest[0]
    return None


def entrySyncedByFileSync(path: str) -> bool:
    """
    Does an fsync(2) of a file newly created in directory C{path} also
    make its directory entry durable (see L{ENTRY_SYNCED_BY_FSYNC})?
    C{False} when in doubt.
    """
    return fileSystemType(path) in ENTRY_SYNCED_BY_FSYNC


def fsyncDirectory(path: str) -> None:
    """
    C{fsync} a directory, so that a file created or removed in it is on
    stable storage.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_REUSE_FLAGS = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


def _writeAll(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = _write(fd, view)
        view = view[n:]


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _commitBatch(work: List[Tuple[Any, Optional[int], bytes, bool]]) -> List[Any]:
    """
    In the thread pool (or, without one, the caller's thread): write and
    fsync each content, then fsync each directory that needs it.

    @return: per content, C{None} or the L{OSError} that failed it.
    """
    errors = []  # type: List[Any]
    directories = {}  # type: Dict[str, List[int]]
    for i, (writer, fd, data, syncDirectory) in enumerate(work):
        try:
            writer._writeAndSync(fd, data)
        except OSError as e:
            errors.append(e)
            continue
        errors.append(None)
        if syncDirectory:
            directories.setdefault(os.path.dirname(writer.path), []).append(i)
    for directory, indices in directories.items():
        try:
            fsyncDirectory(directory)
        except OSError as e:
            for i in indices:
                errors[i] = e
    return errors


#: Linux C{syncfs(2)}, or C{None} where there is none
_syncfs = libc.function(("syncfs",), [ctypes.c_int])


def syncFileSystem(fd: int) -> None:
    """
    C{syncfs(2)} the file system of the open file C{fd}: every file
    written on it, and its journal, go to stable storage.

    @raise OSError: the sync failed, or a write-back on that file system
        failed since the last call with C{fd} (Linux 5.8 and later).
    """
    if _syncfs is None:
        raise OSError(errno.ENOSYS, "syncfs is not available")
    if _syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


#: values of C{IBDB { content_sync }}
SYNC_FILESYSTEM = "filesystem"
SYNC_FILE = "file"


class ContentSync:
    """
    Makes the contents that SMTPS wrote without syncing them durable in
    QMGR's IBDB commit (L{FileContentStore.syncedByQueueManager}, the
    envelope's C{syncContent}), before the C{T}
    records of their envelopes are on stable storage (in the reactor's
    thread, as IBDB commits):

      - C{"filesystem"}: one C{syncfs(2)} of each file system a CDB
        directory is on, however many contents the commit carries (and,
        on the same file system, the IBDB file itself: its own fsync is
        then not needed);
      - C{"file"}: an fsync of each content file (and of its directory
        where the file system needs it), as SMTPS would do itself; for a
        queue on a file system that other programs write much to, which
        a C{syncfs} would flush as well.  Also where C{syncfs} is missing.

    @ivar mode: C{"filesystem"} or C{"file"}.
    """

    def __init__(self, store: "FileContentStore", mode: str):
        """
        @param mode: C{IBDB { content_sync }} (its default is in the
            option table, L{smx.config.options}).
        """
        self.store = store
        self.mode = mode if _syncfs is not None else SYNC_FILE
        #: per file system (st_dev) holding a CDB directory: an open
        #: descriptor of one of those directories
        self._fileSystems = None  # type: Optional[Dict[int, int]]

    def _openFileSystems(self) -> Dict[int, int]:
        found = {}  # type: Dict[int, int]
        try:
            for name in DIRECTORIES:
                path = os.path.join(self.store.baseDirectory, name)
                device = os.stat(path).st_dev
                if device not in found:
                    found[device] = os.open(
                        path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_DIRECTORY", 0)
                    )
        except OSError:
            for fd in found.values():
                os.close(fd)
            raise
        return found

    def sync(self, paths: List[str], fd: int) -> bool:
        """
        Make the contents C{paths} durable.

        @param fd: the IBDB file being committed.
        @return: whether C{fd} is on stable storage too.
        @raise OSError: the sync failed (the commit fails: nothing of it
            is acknowledged).
        """
        if self.mode == SYNC_FILE:
            directories = set()
            for path in paths:
                content = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(content)
                finally:
                    os.close(content)
                if self.store.mustSyncDirectory(path):
                    directories.add(os.path.dirname(path))
            for directory in directories:
                fsyncDirectory(directory)
            return False
        if self._fileSystems is None:
            self._fileSystems = self._openFileSystems()
        for opened in self._fileSystems.values():
            syncFileSystem(opened)
        return os.fstat(fd).st_dev in self._fileSystems

    def close(self) -> None:
        """Close the descriptors of the file systems."""
        opened, self._fileSystems = self._fileSystems or {}, None
        for fd in opened.values():
            os.close(fd)


def _listed(
    directory: str,
    now: float,
    nextListing: Dict[str, float],
    delays: Dict[str, float],
    found: Any = bool,
) -> Optional[List[str]]:
    """
    The free files of C{directory}, or C{None} when it was listed less
    than its delay ago.  The delay is L{LIST_DELAY_MIN} after a listing
    that C{found} what it looked for, and doubles after one that did not.
    """
    if now < nextListing.get(directory, 0.0):
        return None
    try:
        names = [n for n in os.listdir(directory) if n.startswith(FREE_PREFIX)]
    except OSError:
        names = []
    delay = delays.get(directory, LIST_DELAY_MIN / 2)
    delay = LIST_DELAY_MIN if found(names) else min(delay * 2, LIST_DELAY_MAX)
    delays[directory] = delay
    nextListing[directory] = now + delay
    return names


def directoryFor(transactionId: str) -> str:
    """
    @return: the CDB directory (C{"0"}..C{"F"}) of a transaction id.
    """
    # S + 16 hex digits of counter + 2 hex digits of process id
    if len(transactionId) >= 17:
        return transactionId[16].upper()
    return transactionId[-1:].upper() or "0"


#: seconds without a content job after which a writer creates its file
#: ahead (see L{ContentWriter}); back-to-back messages come faster than this
AHEAD_AFTER_IDLE = 0.005


class ContentWriter:
    """
    Writes the content of one transaction (see L{IContentStore.createWriter}).

    Without a thread pool the file is created at once, written in chunks
    and synced in L{commit}.  With one, there are two ways, chosen when the
    writer is made (SMTPS makes it at the first accepted recipient):

      - ahead, when no content job ran for a while (a message on its
        own, where latency is what counts): the file is created and its
        directory synced in the pool at once, while the client sends DATA
        and the content; L{commit} then writes what is left and fsyncs the
        file: the 250 waits for one fsync, not a create and two (latency);
      - at commit, under load: the content is buffered and
        L{commit} creates, writes and syncs the file in one pool job (one
        hand-off to a thread per message instead of two: throughput).

    Content that outgrows a chunk before that is written early either way.

    @ivar size: bytes written so far.

    Bytes given to L{write} and not yet written to the file are counted in
    the store's C{bytesInFlight}.
    """

    def __init__(self, store: "FileContentStore", transactionId: str) -> None:
        self._store = store
        self.transactionId = transactionId
        self.path = store.path(transactionId)
        self._buffer = []  # type: List[bytes]
        self._buffered = 0
        self.size = 0
        self._error = None  # type: Optional[OSError]
        self._fd = None  # type: Optional[int]
        self._done = False
        self._aborted = False
        self._created = False
        self._opening = None  # type: Optional[defer.Deferred]
        self._whenOpened = None  # type: Optional[defer.Deferred]
        self._dirSynced = False
        #: the file is a recycled one (L{FileContentStore.takeFree})
        self.recycled = False
        self._crc = 0
        if store.threadPool is None or store.syncedByQueueManager:
            self._create()
        elif store.idle():
            self._opening = store._inPool(self._createSynced)
            self._opening.addBoth(self._opened)

    @property
    def recycledCrc(self) -> Optional[int]:
        """
        The CRC-32 of the content written to a recycled file (for recovery
        to tell it from what the file held before), or C{None}.
        """
        return self._crc if self.recycled else None

    def _create(self) -> None:
        if self._store.syncedByQueueManager:
            fd = self._store.takeFree(self.path)
            if fd is not None:
                self._fd = fd
                self._created = True
                self.recycled = True
                return
        try:
            self._fd = os.open(self.path, _CREATE_FLAGS, 0o640)
            self._created = True
        except OSError as e:
            self._error = e

    def _createSynced(self) -> int:
        """
        In the thread pool: create the file and sync its directory entry.

        @return: the open descriptor.
        """
        fd = os.open(self.path, _CREATE_FLAGS, 0o640)
        try:
            if self._store.mustSyncDirectory(self.path):
                fsyncDirectory(os.path.dirname(self.path))
        except OSError:
            os.close(fd)
            _unlink(self.path)
            raise
        return fd

    def _opened(self, result: Any) -> None:
        self._opening = None
        if isinstance(result, Failure):
            e = result.value
            self._error = e if isinstance(e, OSError) else OSError(str(e))
        else:
            self._fd = result
            self._created = True
            self._dirSynced = True
            if self._aborted:
                self._removeFile()
            elif not self._done and self._buffered >= self._store.chunkSize:
                self._flush()
        waiting, self._whenOpened = self._whenOpened, None
        if waiting is not None:
            waiting.callback(None)
        return None

    def write(self, data: bytes) -> None:
        """
        Add C{data} to the content.  Errors are kept for L{commit}.
        """
        if self._error is not None or self._done:
            return
        self._buffer.append(data)
        if self.recycled:
            self._crc = zlib.crc32(data, self._crc)
        self._buffered += len(data)
        self._store.bytesInFlight += len(data)
        self.size += len(data)
        if self._buffered >= self._store.chunkSize and self._opening is None:
            self._flush()

    def _flush(self) -> None:
        if self._fd is None and self._error is None and not self._created:
            self._create()
        if not self._buffer or self._fd is None:
            return
        data = b"".join(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        self._buffer = []
        self._buffered = 0
        self._store.bytesInFlight -= len(data)
        try:
            _writeAll(self._fd, data)
        except OSError as e:
            self._error = e

    def _writeAndSync(self, fd: Optional[int], data: bytes) -> None:
        """
        From L{_commitBatch} (in the thread pool, if there is one):
        create the file if C{fd} is C{None}, write the rest, fsync and
        close the file.
        """
        if fd is None:
            fd = os.open(self.path, _CREATE_FLAGS, 0o640)
            self._created = True
        try:
            _writeAll(fd, data)
            if self.recycled:
                os.ftruncate(fd, self.size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def finish(self) -> None:
        """
        Write what is left and close the file, without syncing it: the
        content of a store whose contents QMGR syncs
        (L{FileContentStore.syncedByQueueManager}; the envelope then
        carries C{syncContent}).  Instead of L{commit}.

        @raise OSError: a failed create or write (the file is removed).
        """
        if self._done or self._opening is not None:
            raise RuntimeError("finish after commit or abort, or with a pool job")
        self._done = True
        self._flush()
        fd, self._fd = self._fd, None
        error = self._error
        if fd is not None and self.recycled and error is None:
            # what the file held before goes
            try:
                os.ftruncate(fd, self.size)
            except OSError as e:
                error = e
        if fd is not None:
            try:
                os.close(fd)
            except OSError as e:
                error = error or e
        if error is not None:
            self._dropBuffer()
            self._removeFile()
            raise error

    def commit(self) -> defer.Deferred:
        """
        @return: a L{Deferred} firing with C{None} once the content and its
            directory entry are on stable storage; it errbacks with the
            L{OSError} of a failed write or sync (the file is removed).
        """
        if self._done:
            return defer.fail(RuntimeError("commit after commit or abort"))
        self._done = True
        if self._opening is not None:
            self._whenOpened = defer.Deferred()
            return self._whenOpened.addCallback(lambda _: self._commitOpened())
        return self._commitOpened()

    def _commitOpened(self) -> defer.Deferred:
        if self._error is not None:
            error = self._error
            self._dropBuffer()
            self._removeFile()
            return defer.fail(error)
        data = b"".join(self._buffer)
        self._buffer = []
        self._buffered = 0
        fd, self._fd = self._fd, None
        syncDirectory = not self._dirSynced and self._store.mustSyncDirectory(self.path)
        work = (self, fd, data, syncDirectory)
        if self._store.threadPool is not None:
            d = self._store._commitInBatch(*work)
        else:
            [error] = _commitBatch([work])
            d = defer.fail(error) if error is not None else defer.succeed(None)
        d.addBoth(self._written, len(data))
        d.addErrback(self._ebSync)
        return d

    def _written(self, result: Any, length: int) -> Any:
        self._store.bytesInFlight -= length
        return result

    def _dropBuffer(self) -> None:
        self._store.bytesInFlight -= self._buffered
        self._buffer = []
        self._buffered = 0

    def _ebSync(self, failure: Any) -> Any:
        self._removeFile()
        return failure

    def _removeFile(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        if not self._created:
            return
        self._created = False
        self._store._unlinkPath(self.path)

    def abort(self) -> None:
        """
        Give up: the partial file is removed (once it exists, if it is
        still being created).
        """
        self._done = True
        self._aborted = True
        self._dropBuffer()
        self._removeFile()


@implementer(IContentStore)
class FileContentStore:
    """
    L{IContentStore} on files (seed §4.1).

    @ivar baseDirectory: the directory holding C{0}..C{F}.
    @ivar threadPool: a L{twisted.python.threadpool.ThreadPool} for the
        syncs, or C{None} to sync in the calling thread.
    """

    def __init__(
        self,
        baseDirectory: str,
        threadPool: Any = None,
        reactor: Any = None,
        chunkSize: int = CHUNK_SIZE,
        create: bool = True,
        syncDirectories: Optional[bool] = None,
    ) -> None:
        self.baseDirectory = os.path.abspath(baseDirectory)
        self.threadPool = threadPool
        #: SMTPS writes contents with L{ContentWriter.finish}, unsynced,
        #: and QMGR syncs them with their envelopes (L{ContentSync}); its
        #: writers create their files at once, not in the pool
        self.syncedByQueueManager = False
        if reactor is None and threadPool is not None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
        self.chunkSize = chunkSize
        self._doomed = []  # type: List[str]
        #: a removal job pending (L{_removalCall}) or in the thread pool
        self._unlinking = False
        self._removalCall = None  # type: Any
        #: per CDB directory: names of free files to take (reactor thread)
        self._free = {}  # type: Dict[str, List[str]]
        #: per CDB directory: when it may be listed again for free files,
        #: and the delay after that
        self._nextListing = {}  # type: Dict[str, float]
        self._listDelay = {}  # type: Dict[str, float]
        #: per CDB directory: free files it holds (as far as removals
        #: know: writers take them meanwhile), when it may be counted
        #: again and the delay after that (the removal job's thread)
        self._freeCount = {}  # type: Dict[str, int]
        self._nextCount = {}  # type: Dict[str, float]
        self._countDelay = {}  # type: Dict[str, float]
        #: the clock of the listings and counts (tests)
        self.clock = time.monotonic
        #: when a removed file was last kept for reuse (L{clock}), or
        #: C{None} since the last purge
        self.lastKept = None  # type: Optional[float]
        #: the files of the unlink job under way in the pool
        self._handed = []  # type: List[str]
        #: content jobs (create, write and sync) running in the thread pool
        self.jobsInFlight = 0
        #: content bytes received by writers and not yet written to their
        #: files (QMGR counts them against the free disk space)
        self.bytesInFlight = 0
        #: commits waiting for the next group commit, and whether one runs
        self._batch = (
            []
        )  # type: List[Tuple[Any, Optional[int], bytes, bool, defer.Deferred]]
        self._batchRunning = False
        self._idleSince = 0.0
        if create:
            self.createDirectories()
        #: per CDB directory: must it be fsynced after a file is created
        #: in it? (see L{ENTRY_SYNCED_BY_FSYNC}; each may be a link to
        #: another disk, seed §5.4)
        self._syncDirectory = {}  # type: Dict[str, bool]
        for name in DIRECTORIES:
            directory = os.path.join(self.baseDirectory, name)
            if syncDirectories is None:
                self._syncDirectory[directory] = not entrySyncedByFileSync(directory)
            else:
                self._syncDirectory[directory] = syncDirectories

    def mustSyncDirectory(self, path: str) -> bool:
        """
        Must the directory of the new file C{path} be fsynced for its entry
        to be durable, besides the file itself?
        """
        return self._syncDirectory.get(os.path.dirname(path), True)

    def createDirectories(self) -> None:
        """
        Create the base directory and its sixteen subdirectories (mode 0771,
        seed §4.1) if they are missing, spread over the file system (see
        L{spreadSubdirectories}).
        """
        os.makedirs(self.baseDirectory, exist_ok=True)
        missing = [
            path
            for path in (os.path.join(self.baseDirectory, n) for n in DIRECTORIES)
            if not os.path.isdir(path)
        ]
        if missing:
            spreadSubdirectories(self.baseDirectory)
        for path in missing:
            try:
                os.mkdir(path, 0o771)
            except FileExistsError:
                # made meanwhile by another process starting at once
                if not os.path.isdir(path):
                    raise

    def _checkId(self, transactionId: str) -> None:
        if not isServerId(transactionId) and not (
            transactionId
            and transactionId.isalnum()
            and transactionId.isascii()
            and len(transactionId) < 64
        ):
            raise ValueError("bad transaction id %r" % (transactionId,))

    def createWriter(self, transactionId):
        self._checkId(transactionId)
        return ContentWriter(self, transactionId)

    def open(self, transactionId):
        """
        Open the content of C{transactionId} to read it, with a shared
        C{flock} held while it is open: a writer does not take the file
        for reuse meanwhile (L{takeFree}).

        @raise KeyError: there is no such content, or its file is being
            reused (it was removed and taken by a writer).
        """
        self._checkId(transactionId)
        path = self.path(transactionId)
        try:
            # unbuffered: SMTPC reads in large chunks anyway
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise KeyError(transactionId)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            opened = os.fstat(f.fileno())
            named = os.stat(path)
        except OSError:
            # locked by a writer reusing it, or no longer at that name
            f.close()
            raise KeyError(transactionId)
        if (opened.st_ino, opened.st_dev) != (named.st_ino, named.st_dev):
            f.close()
            raise KeyError(transactionId)
        return f

    def crc(self, transactionId: str) -> int:
        """
        @return: the CRC-32 of the stored content (recovery compares it
            with the envelope's C{contentCrc}).
        @raise KeyError: there is no such content.
        """
        crc = 0
        with self.open(transactionId) as f:
            while True:
                chunk = f.read(CHUNK_SIZE)
                if not chunk:
                    return crc
                crc = zlib.crc32(chunk, crc)

    def takeFree(self, path: str) -> Optional[int]:
        """
        Take a removed content file of C{path}'s directory for reuse: rename
        it to C{path} and open it to write, with an exclusive C{flock}
        (not a file that a reader still has open).  The writer overwrites
        it and cuts it to the length it wrote.

        @return: the open descriptor, or C{None} when there is no free
            file (the writer makes a new one).
        """
        directory = os.path.dirname(path)
        names = self._free.get(directory)
        if not names:
            names = self._listFree(directory)
        while names:
            source = os.path.join(directory, names.pop())
            try:
                renameNoReplace(source, path)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    # taken by another process
                    continue
                # EEXIST: the create fails as it would have; ENOSYS: no reuse
                return None
            try:
                # (not blocking on a FIFO, not following a link)
                fd = os.open(path, _REUSE_FLAGS)
            except OSError:
                _unlink(path)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                # still read by somebody: left to them, a new file instead
                os.close(fd)
                _unlink(path)
                continue
            return fd
        return None

    def _listFree(self, directory: str) -> List[str]:
        """
        The free files of C{directory}, listed at most every
        L{LIST_DELAY_MIN} seconds, less often while there are none.
        """
        names = _listed(directory, self.clock(), self._nextListing, self._listDelay)
        if names is None:
            return []
        # another process may list the same names: not all in one order
        random.shuffle(names)
        self._free[directory] = names
        return names

    def _dispose(self, paths: List[str]) -> List[Tuple[str, str]]:
        """
        In the removal job: recycle or unlink each of C{paths}.

        @return: C{(directory, name)} of each file kept for reuse.
        """
        kept = []
        for path in paths:
            try:
                name = self._recycle(path)
                if name is None:
                    _unlink(path)
                else:
                    kept.append((os.path.dirname(path), name))
            except OSError:
                # left for recovery, which removes content no envelope names
                pass
        return kept

    def _recycle(self, path: str) -> Optional[str]:
        """
        Keep the removed content C{path} for reuse, if it is small and its
        directory has room.

        @return: its new name, or C{None} (to be unlinked).
        """
        if _renameat2 is None:
            # no writer could take it without the risk of replacing a file
            return None
        directory, name = os.path.split(path)
        count = self._freeCount.get(directory, RECYCLE_PER_DIRECTORY)
        if count >= RECYCLE_PER_DIRECTORY:
            names = _listed(
                directory,
                self.clock(),
                self._nextCount,
                self._countDelay,
                lambda names: len(names) < RECYCLE_PER_DIRECTORY,
            )
            if names is None:
                return None
            count = self._freeCount[directory] = len(names)
            if count >= RECYCLE_PER_DIRECTORY:
                return None
        if os.stat(path).st_size > RECYCLE_MAX_SIZE:
            return None
        free = FREE_PREFIX + name
        os.rename(path, os.path.join(directory, free))
        self._freeCount[directory] = count + 1
        self.lastKept = self.clock()
        return free

    def purgeIfIdle(self) -> None:
        """
        L{purgeKept}, in the thread pool, if a file was kept for reuse and
        none for L{PURGE_AFTER} seconds.
        """
        if self.lastKept is None or self.clock() - self.lastKept < PURGE_AFTER:
            return
        if self._unlinking:
            # a removal job under way may keep files: next time
            return
        if self.threadPool is None:
            self.purgeKept()
            return
        self._free = {}
        self._unlinking = True
        d = threads.deferToThreadPool(self.reactor, self.threadPool, self._purge)
        d.addBoth(self._unlinked)

    def purgeKept(self) -> None:
        """Unlink every file kept for reuse, now, in the calling thread."""
        self._free = {}
        self._purge()

    def _purge(self) -> None:
        """
        Unlink every file kept for reuse (not those a writer took
        meanwhile).  In the removal job's thread, or with none running.
        """
        self.lastKept = None
        for name in DIRECTORIES:
            directory = os.path.join(self.baseDirectory, name)
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            for entry in names:
                if entry.startswith(FREE_PREFIX):
                    try:
                        _unlink(os.path.join(directory, entry))
                    except OSError:
                        pass
            self._freeCount[directory] = 0

    def path(self, transactionId):
        return os.path.join(
            self.baseDirectory, directoryFor(transactionId), transactionId
        )

    def remove(self, transactionId):
        """
        Remove the content of C{transactionId}.  With a thread pool the
        file is unlinked there, L{REMOVAL_DELAY} seconds later, together
        with the others removed meanwhile (an unlink is a journal update
        that would otherwise hold up the reactor); a file whose unlink a
        crash prevented is an orphan that recovery removes.
        """
        self._checkId(transactionId)
        self._unlinkPath(self.path(transactionId))

    def _commitInBatch(
        self, writer: ContentWriter, fd: Optional[int], data: bytes, syncDirectory: bool
    ) -> defer.Deferred:
        """
        Write and sync C{writer}'s content with the others committed at the
        same time: one pool job for them all (group commit; the first fsync
        commits the file system journal for all of them, the others find
        little left to do).
        """
        d = defer.Deferred()  # type: defer.Deferred
        self._batch.append((writer, fd, data, syncDirectory, d))
        if not self._batchRunning:
            self._runBatch()
        return d

    def _runBatch(self) -> None:
        batch, self._batch = self._batch, []
        self._batchRunning = True
        work = [item[:4] for item in batch]
        job = self._inPool(_commitBatch, work)
        job.addBoth(self._batchDone, [item[4] for item in batch])

    def _batchDone(self, results: Any, waiting: List[defer.Deferred]) -> None:
        self._batchRunning = False
        if isinstance(results, Failure):
            for d in waiting:
                d.errback(results)
        else:
            for d, error in zip(waiting, results):
                if error is None:
                    d.callback(None)
                else:
                    d.errback(error)
        if self._batch and not self._batchRunning:
            self._runBatch()

    def idle(self) -> bool:
        """
        Has no content job run for L{AHEAD_AFTER_IDLE} seconds?
        """
        return (
            not self.jobsInFlight
            and self.reactor.seconds() - self._idleSince >= AHEAD_AFTER_IDLE
        )

    def _inPool(self, f: Any, *args: Any) -> defer.Deferred:
        """Run a content job in the thread pool, counted in L{jobsInFlight}."""
        self.jobsInFlight += 1
        d = threads.deferToThreadPool(self.reactor, self.threadPool, f, *args)

        def done(result: Any) -> Any:
            self.jobsInFlight -= 1
            if not self.jobsInFlight:
                self._idleSince = self.reactor.seconds()
            return result

        return d.addBoth(done)

    def _unlinkPath(self, path: str) -> None:
        if self.threadPool is None:
            self._keep(self._dispose([path]))
            return
        self._doomed.append(path)
        if not self._unlinking:
            self._removeLater()

    def _removeLater(self) -> None:
        """
        Hand the files doomed by then to the thread pool in
        L{REMOVAL_DELAY} seconds (a removal job is pending meanwhile).
        """
        self._unlinking = True
        self._removalCall = self.reactor.callLater(REMOVAL_DELAY, self._unlinkDoomed)

    def _unlinkDoomed(self) -> None:
        self._removalCall = None
        paths, self._doomed = self._doomed, []
        self._unlinking = True
        self._handed = paths
        d = threads.deferToThreadPool(
            self.reactor, self.threadPool, self._dispose, paths
        )
        d.addBoth(self._unlinked)

    def _unlinked(self, result: Any) -> None:
        self._unlinking = False
        self._handed = []
        if isinstance(result, list):
            self._keep(result)
        if self._doomed:
            self._removeLater()

    def _keep(self, kept: List[Tuple[str, str]]) -> None:
        """The files kept for reuse: this process's writers take them first."""
        for directory, name in kept:
            self._free.setdefault(directory, []).append(name)

    def removeWaitingNow(self) -> None:
        """
        Recycle or unlink now, in the calling thread, the files waiting
        for the next removal job (L{REMOVAL_DELAY}): IBDB calls this
        before it removes a file whose C{D} records name them, so that a
        crash cannot leave a content that neither an envelope nor a C{D}
        record names.  A job already in the pool goes on.
        """
        if not self._doomed:
            return
        paths, self._doomed = self._doomed, []
        self._cancelRemoval()
        self._keep(self._dispose(paths))

    def _cancelRemoval(self) -> None:
        """
        No removal job is to be handed to the pool after all (its files
        are removed here): if one was only pending, none is under way.
        """
        if self._removalCall is not None:
            self._removalCall.cancel()
            self._removalCall = None
            self._unlinking = False

    def flushRemovals(self) -> None:
        """
        Unlink now, in the calling thread, the files still waiting for
        the thread pool (at stop: the pool may stop before it runs them,
        and each would be an orphan the next QMGR reports).
        """
        paths, self._doomed = self._handed + self._doomed, []
        self._cancelRemoval()
        self._handed = []
        self._dispose(paths)

    def exists(self, transactionId: str) -> bool:
        """Is content stored under C{transactionId}?"""
        return os.path.exists(self.path(transactionId))

    def size(self, transactionId: str) -> int:
        """@return: the size of the stored content in bytes."""
        try:
            return os.stat(self.path(transactionId)).st_size
        except FileNotFoundError:
            raise KeyError(transactionId)

    def transactionIds(self):
        ids = []  # type: List[str]
        for name in DIRECTORIES:
            try:
                entries = os.listdir(os.path.join(self.baseDirectory, name))
            except FileNotFoundError:
                continue
            ids.extend(e for e in entries if not e.startswith("."))
        return sorted(ids)


class ContentStoreService(service.Service):
    """
    Removes, when it stops, the content files still waiting to be removed
    (L{FileContentStore.flushRemovals}).  Put it before the services that
    use the store in their parent, so that it stops after them.

    Removes the files its store kept for reuse once it kept none for
    L{PURGE_AFTER} seconds (no mail was delivered meanwhile), and when it
    stops: no old content lingers in a queue at rest.
    """

    name = "cdb"

    def __init__(self, store: FileContentStore) -> None:
        self.store = store
        self._purge = None  # type: Any

    def startService(self) -> None:
        service.Service.startService(self)
        if self.store.reactor is not None:
            from twisted.internet import task

            self._purge = task.LoopingCall(self.store.purgeIfIdle)
            self._purge.clock = self.store.reactor
            self._purge.start(PURGE_AFTER, now=False)

    def stopService(self) -> None:
        service.Service.stopService(self)
        if self._purge is not None and self._purge.running:
            self._purge.stop()
        self._purge = None
        self.store.flushRemovals()
        if self.store.lastKept is not None:
            self.store.purgeKept()
