# -*- test-case-name: smx.queue.test.test_defedb -*-
"""
NAME
    smx.queue.defedb - DEFEDB, the deferred envelope database

SYNOPSIS
    db = DeferredEnvelopeDB.fromSettings(queueSettings)
    db = DeferredEnvelopeDB(baseDirectory, logDirectory, pageSize, cacheSize,
                            checkpointKBytes)
    db.open()
    db.putRecipients(envelope, [recipient, ...])
    db.putMany([(envelope, [recipient, ...]), ...])  # one commit
    db.removeRecipients(transactionId, [index, ...])
    for nextTry, transactionId, index in db.due(now): ...
    db.checkpoint()
    db.broken, db.hasRoom()          # after a failure: reopen when True
    readCheckpointed(baseDirectory)  # what mailq shows, QMGR running or not

DESCRIPTION
    Recipients that could not be delivered at the first attempt are kept in
    a transactional Berkeley DB environment (seed §5.7 DEFEDB, §10) with
    three B-tree databases:

        - C{transactions}: transaction id -> envelope (JSON, without
          recipients);
        - C{recipients}: transaction id, NUL, index (4 bytes) -> recipient
          state (JSON: address, tries, next-time-to-try, last reply, ...);
        - C{due}: next-time-to-try in ms (8 bytes, big-endian), transaction
          id, NUL, index -> empty: an ordered scan of this database lists
          the recipients due now, earliest first.

    Every change is one Berkeley DB transaction committed durably
    (L{DeferredEnvelopeDB.putMany}: the deferrals of several transactions
    in one, QMGR's group commit, one flush of the log).  The
    environment is opened with C{DB_RECOVER}, so that a crash leaves it
    consistent.  Checkpoints are taken every C{delay_between_2_checkpoints}
    seconds when more than C{KBytes_written_for_checkpointing} KB of log
    were written (or always when that is 0); log files no longer needed are
    removed automatically.

    A full disk.  Berkeley DB maps its region files (C{__db.001} ...)
    into memory; a page of a sparse region file that the file system
    cannot allocate any more kills the process with SIGBUS when it is
    touched.  So the region files are written in full when they are made
    (C{DB_REGION_INIT}), and room for the regions to grow into is
    allocated beyond their end right after the environment is opened
    (C{fallocate} with C{FALLOC_FL_KEEP_SIZE}; Berkeley DB extends a region
    file by writing its last byte only).  Log files are C{LOG_FILE_SIZE}
    bytes and written in full when they are created (C{DB_LOG_ZERO}), so
    that a full disk shows as an error of the write that needs a new log
    file, never in the middle of one.  No change is started with less
    than L{DeferredEnvelopeDB.headroom} bytes free on the file systems of
    DEFEDB (a cache full of pages that cannot be written makes Berkeley DB
    wait for the disk forever); such a change fails with L{DefedbError}
    (C{full}) without touching the environment.  A commit that fails is
    never followed by an abort of the same transaction (the handle is gone
    either way); it leaves the environment L{broken}: its owner reopens it
    (with recovery) once L{hasRoom} says there is space again, and so after
    C{DB_RUNRECOVERY}.

    C{smx mailq} does not join the environment: L{readCheckpointed} opens
    the database files read-only on their own and so sees what the last
    checkpoint (or close) wrote, never interfering with a running QMGR
    (seed §6.6.2).

CONFIGURATION PARAMETERS
    DEFEDB { base_directory; log_directory; page_size; cache_size;
             KBytes_written_for_checkpointing; delay_between_2_checkpoints }

SECURITY
    The directory is created mode 0700 (seed §4.1).

DIAGNOSTICS
    L{DefedbError} names the directory and the Berkeley DB error when the
    environment cannot be opened even with C{DB_RECOVER_FATAL}, or a change
    cannot be committed; C{full} and C{recover} say whether the disk was
    short and whether the environment must be recovered.  A record that
    cannot be decoded is reported with its key and skipped.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import struct
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from smx import compactjson, libc
from smx.bdb import db
from smx.queue.diskspace import leastFreeBytes

#: the size of each DEFEDB log file (written in full when it is created)
LOG_FILE_SIZE = 1 << 20

#: room left for a region file to grow into: at least this, and four
#: times its size when it was made (the memory pool region: what its
#: statistics give as its maximum)
REGION_RESERVE = 1 << 20

#: the free space wanted besides the cache size before a change is made
#: (two log files: the current one may be replaced at any time)
HEADROOM = 2 * LOG_FILE_SIZE

#: errors of a full file system
_FULL = frozenset([errno.ENOSPC, errno.EDQUOT])


class DefedbError(Exception):
    """
    DEFEDB cannot be used; the message names the directory and the cause.

    @ivar full: the file system of DEFEDB is full (or short of
        L{DeferredEnvelopeDB.headroom}).
    @ivar recover: the environment must be reopened with recovery.
    """

    def __init__(self, message: str, full: bool = False, recover: bool = False):
        Exception.__init__(self, message)
        self.full = full
        self.recover = recover


def recipientKey(transactionId: str, index: int) -> bytes:
    return transactionId.encode("ascii") + b"\0" + struct.pack(">I", index)


def splitRecipientKey(key: bytes) -> Tuple[str, int]:
    if len(key) < 6 or key[-5:-4] != b"\0":
        raise ValueError("bad recipient key %r" % (key,))
    return key[:-5].decode("ascii"), struct.unpack(">I", key[-4:])[0]


def dueKey(nextTry: float, transactionId: str, index: int) -> bytes:
    ms = max(0, int(nextTry * 1000))
    return struct.pack(">Q", ms) + recipientKey(transactionId, index)


def splitDueKey(key: bytes) -> Tuple[float, str, int]:
    (ms,) = struct.unpack(">Q", key[:8])
    ta, idx = splitRecipientKey(key[8:])
    return ms / 1000.0, ta, idx


def _errorNumber(e: Exception) -> Optional[int]:
    args = list(getattr(e, "args", ()))
    if args and isinstance(args[0], int):
        return args[0]
    return None


def _dbError(e: Exception) -> str:
    args = list(getattr(e, "args", ()))
    if len(args) >= 2:
        return "%s (%s)" % (args[1], args[0])
    return str(e)


def _isFull(e: Exception) -> bool:
    return _errorNumber(e) in _FULL or isinstance(e, getattr(db, "DBNoSpaceError", ()))


def _needsRecovery(e: Exception) -> bool:
    return isinstance(e, db.DBRunRecoveryError) or _errorNumber(e) == getattr(
        db, "DB_RUNRECOVERY", None
    )


_fallocate = libc.function(
    ("fallocate64", "fallocate"),
    [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64],
)

#: from <linux/falloc.h>
FALLOC_FL_KEEP_SIZE = 1


def reserveBeyondEnd(path: str, length: int) -> bool:
    """
    Allocate the blocks of the first C{length} bytes of the file C{path}
    without changing its size (Linux C{fallocate(2)} with
    C{FALLOC_FL_KEEP_SIZE}): holes are filled and the file can grow to
    C{length} bytes, through a memory map too, without needing a block
    the file system may not have any more.

    @return: C{False} where this is not supported (another system or file
        system); nothing was done.
    @raise OSError: for other errors, C{ENOSPC} among them.
    """
    if _fallocate is None:
        return False
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        if _fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, length) == 0:
            return True
        code = ctypes.get_errno()
    finally:
        os.close(fd)
    if code in (errno.EOPNOTSUPP, errno.ENOSYS):
        return False
    raise OSError(code, os.strerror(code), path)


def _loadRecords(
    tas: Any, rcpts: Any, path: str, report: Callable[[str], None]
) -> List[Tuple[Dict[str, Any], List[Dict[str, Any]]]]:
    """
    Read every transaction with its recipients from the two databases.
    """
    envelopes = {}  # type: Dict[str, Dict[str, Any]]
    cursor = tas.cursor()
    try:
        rec = cursor.first()
        while rec is not None:
            key, value = rec
            try:
                envelopes[key.decode("ascii")] = json.loads(value.decode())
            except ValueError:
                report(
                    "DEFEDB %s: transaction record %r cannot be decoded, "
                    "skipped" % (path, key)
                )
            rec = cursor.next()
    finally:
        cursor.close()
    recipients = {}  # type: Dict[str, List[Dict[str, Any]]]
    cursor = rcpts.cursor()
    try:
        rec = cursor.first()
        while rec is not None:
            key, value = rec
            try:
                ta, idx = splitRecipientKey(key)
                rcpt = json.loads(value.decode())
                rcpt["index"] = idx
            except (ValueError, struct.error):
                report(
                    "DEFEDB %s: recipient record %r cannot be decoded, "
                    "skipped" % (path, key)
                )
            else:
                recipients.setdefault(ta, []).append(rcpt)
            rec = cursor.next()
    finally:
        cursor.close()
    out = []
    for ta, found in recipients.items():
        if ta not in envelopes:
            report("DEFEDB %s: recipients of %s have no envelope, skipped" % (path, ta))
            continue
        out.append((envelopes[ta], found))
    return out


class CheckpointedDEFEDB:
    """
    What the database files of DEFEDB hold (see L{readCheckpointed}), with
    the C{loadAll} of L{DeferredEnvelopeDB} for
    L{smx.queue.recovery.recoverQueue}.
    """

    def __init__(
        self, records: List[Tuple[Dict[str, Any], List[Dict[str, Any]]]]
    ) -> None:
        self.records = records

    def loadAll(self) -> List[Tuple[Dict[str, Any], List[Dict[str, Any]]]]:
        return list(self.records)


def readCheckpointed(
    baseDirectory: str, report: Callable[[str], None]
) -> CheckpointedDEFEDB:
    """
    Read the DEFEDB database files on their own, read-only, without
    joining (or recovering) the environment: what the last checkpoint
    wrote (seed §6.6.2).  Safe while QMGR runs.

    @raise DefedbError: if the files cannot be read.
    """
    path = os.path.abspath(baseDirectory)
    opened = []  # type: List[Any]
    try:
        for name in ("transactions", "recipients"):
            d = db.DB()
            opened.append(d)
            d.open(
                os.path.join(path, name + ".db"),
                dbtype=db.DB_BTREE,
                flags=db.DB_RDONLY,
            )
        return CheckpointedDEFEDB(_loadRecords(opened[0], opened[1], path, report))
    except db.DBNoSuchFileError:
        return CheckpointedDEFEDB([])
    except db.DBError as e:
        raise DefedbError("DEFEDB %s: %s" % (path, _dbError(e)))
    finally:
        for d in opened:
            try:
                d.close()
            except db.DBError:
                pass


class DeferredEnvelopeDB:
    """
    The deferred envelope database.

    @ivar path: the environment's home directory.
    @ivar broken: a change failed in a way that leaves the environment in
        doubt (a failed commit, C{DB_RUNRECOVERY}): it must be closed and
        opened again (with recovery) before it is used.
    @ivar headroom: the free bytes wanted on the file systems of DEFEDB
        before a change is made.
    """

    def __init__(
        self,
        baseDirectory: str,
        logDirectory: Optional[str],
        pageSize: int,
        cacheSize: int,
        checkpointKBytes: int,
        report: Optional[Callable[[str], None]] = None,
        statvfs: Callable[[str], Any] = os.statvfs,
    ) -> None:
        """
        @param baseDirectory: the home of the environment
            (C{DEFEDB { base_directory }}).
        @param logDirectory: its log directory, or C{None} for the home.
        @param pageSize: the Berkeley DB page size in bytes (0: Berkeley
            DB's choice).
        @param cacheSize: the cache size in bytes (0: Berkeley DB's).
        @param checkpointKBytes: a checkpoint is due after this many KB of
            log (0: whenever one is asked for).
        @param report: called with the text of a problem found.
        @param statvfs: measures free disk space (tests).
        """
        self.path = os.path.abspath(baseDirectory)
        self.logDirectory = logDirectory
        self.pageSize = pageSize
        self.cacheSize = cacheSize
        self.checkpointKBytes = checkpointKBytes
        self.statvfs = statvfs
        self.headroom = max(cacheSize, 256 * 1024) + HEADROOM
        self._report = report or (lambda text: None)
        self.env = None  # type: Any
        self._tas = None  # type: Any
        self._rcpts = None  # type: Any
        self._due = None  # type: Any
        self.broken = False
        #: pages were changed since the last L{flush}
        self._dirty = False

    @classmethod
    def fromSettings(
        cls,
        settings: Any,
        report: Optional[Callable[[str], None]] = None,
        statvfs: Callable[[str], Any] = os.statvfs,
    ) -> "DeferredEnvelopeDB":
        """
        @param settings: the L{smx.queue.settings.QueueSettings}.
        """
        base = settings.defedbDirectory
        logDirectory = settings.defedbLogDirectory
        return cls(
            base,
            None if logDirectory == base else logDirectory,
            pageSize=settings.defedbPageSize,
            cacheSize=settings.defedbCacheSize,
            checkpointKBytes=settings.checkpointBytes // 1024,
            report=report,
            statvfs=statvfs,
        )

    def open(self) -> None:
        """
        Open (creating and recovering) the environment and its databases.

        @raise DefedbError: if it cannot be opened; with C{full} set when
            the disk is short (nothing was touched then, or the open was
            undone).
        """
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            if self.logDirectory:
                os.makedirs(self.logDirectory, mode=0o700, exist_ok=True)
        except OSError as e:
            raise DefedbError(
                "DEFEDB %s: %s" % (self.path, e.strerror), full=e.errno in _FULL
            )
        self.close()
        self._checkRoom()
        try:
            self._openEnvironment(db.DB_RECOVER)
        except (db.DBError, OSError) as e:
            self.close()
            if _isFull(e) or not self.hasRoom():
                raise DefedbError(
                    "DEFEDB %s: %s" % (self.path, _describe(e)), full=True
                )
            self._report(
                "DEFEDB %s: normal recovery failed: %s; trying catastrophic "
                "recovery" % (self.path, _describe(e))
            )
            try:
                self._openEnvironment(db.DB_RECOVER_FATAL)
            except (db.DBError, OSError) as e2:
                self.close()
                raise DefedbError(
                    "DEFEDB %s: %s" % (self.path, _describe(e2)), full=_isFull(e2)
                )
        self.broken = False

    def _openEnvironment(self, recover: int) -> None:
        env = db.DBEnv()
        self.env = env
        if self.logDirectory:
            env.set_lg_dir(os.path.abspath(self.logDirectory))
        if self.cacheSize:
            env.set_cachesize(0, self.cacheSize)
        # regions written in full, log files too: see the module docstring
        env.set_flags(db.DB_REGION_INIT, 1)
        env.set_lg_max(LOG_FILE_SIZE)
        env.log_set_config(db.DB_LOG_ZERO, 1)
        env.open(
            self.path,
            db.DB_CREATE
            | db.DB_INIT_TXN
            | db.DB_INIT_LOG
            | db.DB_INIT_MPOOL
            | db.DB_INIT_LOCK
            | recover,
            0o600,
        )
        try:
            env.log_set_config(db.DB_LOG_AUTO_REMOVE, 1)
        except (AttributeError, db.DBError):
            pass
        self._reserveRegions()
        self._tas = self._openDB("transactions")
        self._rcpts = self._openDB("recipients")
        self._due = self._openDB("due")

    def _reserveRegions(self) -> None:
        """
        Allocate the holes of the region files and room for them to grow
        into (see L{reserveBeyondEnd}).

        @raise OSError: C{ENOSPC} if the file system has no room for it.
        """
        mpool = self.env.memp_stat()[0]
        for name in sorted(os.listdir(self.path)):
            if not (name.startswith("__db.") and name[5:].isdigit()):
                continue
            path = os.path.join(self.path, name)
            size = os.stat(path).st_size
            length = max(4 * size, REGION_RESERVE)
            if size == mpool.get("regsize"):
                length = max(length, int(mpool.get("regmax", 0)) + REGION_RESERVE)
            reserveBeyondEnd(path, length)

    def _openDB(self, name: str) -> Any:
        d = db.DB(self.env)
        if self.pageSize:
            d.set_pagesize(self.pageSize)
        d.open(
            name + ".db",
            dbtype=db.DB_BTREE,
            flags=db.DB_CREATE | db.DB_AUTO_COMMIT,
            mode=0o600,
        )
        return d

    @property
    def isOpen(self) -> bool:
        """Is DEFEDB open and usable (not L{broken})?"""
        return self.env is not None and self._rcpts is not None and not self.broken

    # -- disk space -----------------------------------------------------------

    def freeBytes(self) -> int:
        """
        @return: the least free space on the file systems of DEFEDB (its
            directory and its log directory).
        """
        return leastFreeBytes((self.path, self.logDirectory), self.statvfs)

    def hasRoom(self) -> bool:
        """
        Are at least L{headroom} bytes free for DEFEDB?
        """
        return self.freeBytes() >= self.headroom

    def _checkRoom(self) -> None:
        free = self.freeBytes()
        if free < self.headroom:
            raise DefedbError(
                "DEFEDB %s: disk space short: %d bytes free, %d needed"
                % (self.path, free, self.headroom),
                full=True,
            )

    # -- changes --------------------------------------------------------------

    def _failed(self, e: Exception, committing: bool = False) -> DefedbError:
        """
        The L{DefedbError} for the Berkeley DB error C{e}; marks the
        environment L{broken} if it is in doubt.
        """
        recover = _needsRecovery(e) or committing
        if recover:
            self.broken = True
        what = "commit failed: " if committing else ""
        return DefedbError(
            "DEFEDB %s: %s%s" % (self.path, what, _dbError(e)),
            full=_isFull(e),
            recover=recover,
        )

    def _change(self, work: Callable[[Any], Any]) -> Any:
        """
        Run C{work(txn)} in one durable transaction.

        @raise DefedbError: if DEFEDB is not usable, the disk is short, or
            the change failed (then nothing of it is kept, or, after a
            failed commit, it is in doubt and the environment L{broken}).
        """
        if not self.isOpen:
            raise DefedbError(
                "DEFEDB %s: not open%s"
                % (self.path, " (waiting for recovery)" if self.broken else ""),
                recover=self.broken,
            )
        self._checkRoom()
        try:
            txn = self.env.txn_begin()
        except db.DBError as e:
            raise self._failed(e)
        self._dirty = True
        try:
            result = work(txn)
        except BaseException as e:
            try:
                txn.abort()
            except db.DBError as e2:
                self._failed(e2)
            if isinstance(e, db.DBError):
                raise self._failed(e)
            raise
        try:
            txn.commit()
        except db.DBError as e:
            # the handle is gone whether the commit was written or not:
            # never abort it; the outcome is known after recovery
            raise self._failed(e, committing=True)
        if not self._logWritten():
            self.broken = True
            raise DefedbError(
                "DEFEDB %s: commit not on disk: the log file could not be "
                "written (disk full?)" % (self.path,),
                full=True,
                recover=True,
            )
        return result

    def _logWritten(self) -> bool:
        """
        Is the log on disk up to its current end?  Berkeley DB 5.3 reports
        a commit as done when the new log file it needed could not be
        written (C{ENOSPC}): the records stay in its log buffer only, and
        the file is shorter than the log (a log file is written in full
        when it is made, see L{LOG_FILE_SIZE}, so a complete one never
        is).
        """
        try:
            stat = self.env.log_stat()
            name = "log.%010d" % (stat["cur_file"],)
            path = os.path.join(self.logDirectory or self.path, name)
            return os.stat(path).st_size >= stat["cur_offset"]
        except (db.DBError, OSError, KeyError):
            return False

    def putRecipients(
        self, envelope: Dict[str, Any], recipients: List[Dict[str, Any]]
    ) -> None:
        """
        Store (or update) the envelope of a transaction and the state of
        some of its recipients, each with its C{"nextTry"}, in one durable
        Berkeley DB transaction.

        @raise DefedbError: if the change could not be committed.
        """
        self.putMany([(envelope, recipients)])

    def putMany(
        self, changes: List[Tuple[Dict[str, Any], List[Dict[str, Any]]]]
    ) -> None:
        """
        L{putRecipients} for several transactions (C{(envelope,
        recipients)} each) in one durable Berkeley DB transaction: one
        commit, one flush of the log (a group commit).  All of them are
        stored, or (L{DefedbError}) none.

        @raise DefedbError: if the change could not be committed.
        """

        def work(txn: Any) -> None:
            for envelope, recipients in changes:
                taId = envelope["id"]
                env = {k: v for k, v in envelope.items() if k != "recipients"}
                self._tas.put(
                    taId.encode("ascii"), compactjson.dumps(env).encode(), txn=txn
                )
                for rcpt in recipients:
                    index = rcpt["index"]
                    key = recipientKey(taId, index)
                    old = self._rcpts.get(key, txn=txn)
                    if old is not None:
                        self._deleteDue(old, taId, index, txn)
                    self._rcpts.put(key, compactjson.dumps(rcpt).encode(), txn=txn)
                    self._due.put(
                        dueKey(rcpt.get("nextTry", 0), taId, index), b"", txn=txn
                    )

        if changes:
            self._change(work)

    def _deleteDue(self, old: bytes, taId: str, index: int, txn: Any) -> None:
        try:
            nextTry = json.loads(old.decode()).get("nextTry", 0)
        except ValueError:
            return
        try:
            self._due.delete(dueKey(nextTry, taId, index), txn=txn)
        except db.DBNotFoundError:
            pass

    def removeRecipients(self, transactionId: str, indices: List[int]) -> bool:
        """
        Remove recipients (delivered, bounced or deleted); the envelope goes
        too when no recipient of the transaction is left.

        @return: C{True} if the transaction has no recipient left in DEFEDB.
        @raise DefedbError: if the change could not be committed.
        """

        def work(txn: Any) -> bool:
            for index in indices:
                key = recipientKey(transactionId, index)
                old = self._rcpts.get(key, txn=txn)
                if old is None:
                    continue
                self._deleteDue(old, transactionId, index, txn)
                self._rcpts.delete(key, txn=txn)
            empty = not self._recipientKeys(transactionId, txn)
            if empty:
                try:
                    self._tas.delete(transactionId.encode("ascii"), txn=txn)
                except db.DBNotFoundError:
                    pass
            return empty

        return bool(self._change(work))

    def _recipientKeys(self, transactionId: str, txn: Any = None) -> List[bytes]:
        prefix = transactionId.encode("ascii") + b"\0"
        cursor = self._rcpts.cursor(txn=txn)
        keys = []
        try:
            rec = cursor.set_range(prefix)
            while rec is not None and rec[0].startswith(prefix):
                keys.append(rec[0])
                rec = cursor.next()
        finally:
            cursor.close()
        return keys

    # -- reading --------------------------------------------------------------

    def due(self, now: float, limit: int = 0) -> Iterator[Tuple[float, str, int]]:
        """
        @return: C{(nextTry, transactionId, index)} of recipients whose
            next-time-to-try is not after C{now}, earliest first, at most
            C{limit} of them (0: no limit).
        """
        cursor = self._due.cursor()
        count = 0
        try:
            rec = cursor.first()
            while rec is not None:
                nextTry, ta, idx = splitDueKey(rec[0])
                if nextTry > now:
                    break
                yield nextTry, ta, idx
                count += 1
                if limit and count >= limit:
                    break
                rec = cursor.next()
        finally:
            cursor.close()

    def loadAll(self) -> List[Tuple[Dict[str, Any], List[Dict[str, Any]]]]:
        """
        Read every stored transaction with its recipients (for recovery).
        Damaged records are reported and skipped.

        @return: a C{list} of C{(envelope, recipients)}.
        @raise DefedbError: if the databases cannot be read.
        """
        if not self.isOpen:
            raise DefedbError("DEFEDB %s: not open" % (self.path,))
        try:
            return _loadRecords(self._tas, self._rcpts, self.path, self._report)
        except db.DBError as e:
            raise self._failed(e)

    # -- upkeep ---------------------------------------------------------------

    def checkpoint(self, force: bool = False) -> None:
        """
        Take a checkpoint if more than C{checkpointKBytes} KB of log were
        written since the last one (or C{force}).

        @raise DefedbError: if it failed (a full disk: pages that cannot
            be written stay in the cache until the next one).
        """
        if not self.isOpen:
            return
        try:
            if force:
                self.env.txn_checkpoint(0, 0, db.DB_FORCE)
            else:
                self.env.txn_checkpoint(self.checkpointKBytes, 0)
        except db.DBError as e:
            raise self._failed(e)
        self._dirty = False

    def flush(self) -> None:
        """
        Write the pages changed since the last call to their files (no
        sync, no checkpoint): a file that must grow does so now, while the
        disk has room, not when the cache needs the page for another one.

        @raise DefedbError: if they could not be written.
        """
        if not self._dirty or not self.isOpen:
            return
        try:
            self.env.memp_trickle(100)
        except db.DBError as e:
            raise self._failed(e)
        self._dirty = False

    def close(self) -> None:
        """
        Close the databases and the environment (errors of a broken one
        are ignored: recovery at the next open sets it right).
        """
        for name in ("_due", "_rcpts", "_tas"):
            d = getattr(self, name)
            if d is not None:
                try:
                    d.close()
                except db.DBError:
                    pass
                setattr(self, name, None)
        if self.env is not None:
            try:
                self.env.close()
            except db.DBError:
                pass
            self.env = None
        self._dirty = False


def _describe(e: Exception) -> str:
    if isinstance(e, OSError) and e.strerror:
        return "%s: %s" % (e.filename, e.strerror) if e.filename else e.strerror
    return _dbError(e)
