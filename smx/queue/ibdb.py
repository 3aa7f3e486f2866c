# -*- test-case-name: smx.queue.test.test_ibdb -*-
"""
NAME
    smx.queue.ibdb - IBDB, the incoming backup database: an envelope log

SYNOPSIS
    log = IncomingBackupLog.fromSettings(queueSettings, reactor)
    log = IncomingBackupLog(directory, reactor, maxCommitDelay=0.01,
                            maxOpenTransactions=100, fileSize=1 << 26)
    log.start()
    d = log.append(TRANSACTION, envelope)   # fires once on stable storage
    log.release(transactionId)              # no longer needs its record
    for record in readLog(directory, report): ...

DESCRIPTION
    IBDB is a sequence of append-only files C{ibdb.NNNNNNNNNN} in one
    directory (seed §10).  Each record is::

        magic "SMXI" | version (1) | type (1) | length (4) | crc32 (4) | payload

    with a JSON payload.  The CRC covers the version, type, length and
    payload, so that a record torn by a crash (the last one of a file) or
    damaged later is detected and skipped, never misread.  The types are

        - C{T}: a new transaction: the envelope with its recipients;
        - C{R}: recipient states of a transaction (delivered, failed,
          deferred = moved to DEFEDB, deleted);
        - C{D}: the transaction is finished.

    Group commit: the records of a reactor turn are gathered in memory
    and written at the end of the turn with one write(2), where a QMGR
    killed with SIGKILL no longer loses them.  A C{T} record (SMTPS waits
    for it to say 250) is synced as well: one fsync(2) for every record
    of the turn, and the records written unsynced before.  Other records
    (recipient states, C{D}) are only written: they reach stable storage
    with the next C{T} record's sync, or at the latest C{maxCommitDelay}
    after they were written, or when C{maxOpenTransactions} records wait
    (seed §10: after a delivery "a record is written to IBDB").  A power
    failure before that sync may thus deliver a message again, never lose
    one.  The writes and syncs run in the reactor's thread: what comes
    while a sync holds the reactor up waits in the sockets and goes in the
    next commit.  (A commit in a pool thread cost QMGR more CPU in the
    thread hand-off than the hold-up costs: see doc/architecture.md.)
    The Deferred of a C{T} record fires after its sync, and SMTPS answers
    250 only then; that of another record once it is written.  A C{T}
    record may name the content file of its transaction, written by SMTPS
    and not synced: the commit syncs it first (C{contentSync},
    L{smx.queue.cdb.ContentSync}: one C{syncfs} covers the contents and,
    on the same file system, the IBDB file).

    When the current file reaches C{fileSize} bytes a new file is started.
    A file is removed when it is not the current one and no transaction
    whose C{T} record it holds is still referenced (L{release}).

CONFIGURATION PARAMETERS
    IBDB { max_commit_delay; size; max_open_TAs }   (qmgr, seed §5.7)
    IBDB { content_sync }                          (qmgr, smx)

SECURITY
    Files are created mode 0600 in a directory only QMGR uses (0700).

DIAGNOSTICS
    A failed write or fsync (a full disk) fails the Deferreds of exactly
    the records of that commit; the file is truncated back to its last
    good record and the log goes on.  Damaged records are reported once
    each with the file and offset by the C{report} callable of the reader.
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from twisted.internet import defer

from smx import compactjson
from smx.queue.cdb import fsyncDirectory
from smx.turn import atEndOfTurn

MAGIC = b"SMXI"
VERSION = 1
_HEADER = struct.Struct(">4sBcII")
HEADER_SIZE = _HEADER.size

#: record types
TRANSACTION = b"T"
RECIPIENTS = b"R"
DONE = b"D"
TYPES = (TRANSACTION, RECIPIENTS, DONE)

FILE_PREFIX = "ibdb."


def encodeRecord(recordType: bytes, payload: Any) -> bytes:
    """
    @return: the bytes of one record with a JSON C{payload}.
    """
    body = compactjson.dumps(payload).encode("utf-8")
    head = struct.pack(">BcI", VERSION, recordType, len(body))
    crc = zlib.crc32(body, zlib.crc32(head))
    return MAGIC + head + struct.pack(">I", crc) + body


def _fileNumber(name: str) -> Optional[int]:
    if not name.startswith(FILE_PREFIX):
        return None
    digits = name[len(FILE_PREFIX) :]
    if not digits.isdigit():
        return None
    return int(digits)


def logFiles(directory: str) -> List[Tuple[int, str]]:
    """
    @return: C{(number, path)} of every IBDB file in C{directory}, oldest
        first.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        n = _fileNumber(name)
        if n is not None:
            out.append((n, os.path.join(directory, name)))
    out.sort()
    return out


def readLogFile(
    path: str, report: Callable[[str], None]
) -> Iterator[Tuple[bytes, Any]]:
    """
    Read the records of one IBDB file.

    @param report: called with a one-line description of each damaged
        record (naming the file and offset); reading goes on after it.
    @return: an iterator of C{(type, payload)}.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        report("%s: cannot read: %s" % (path, e.strerror))
        return
    offset = 0
    end = len(data)
    while offset < end:
        if end - offset < HEADER_SIZE:
            report("%s: offset %d: torn record at end of file skipped" % (path, offset))
            return
        magic, version, rtype, length, crc = _HEADER.unpack_from(data, offset)
        problem = None
        if magic != MAGIC:
            problem = "bad record marker"
        elif version != VERSION:
            problem = "unknown record version %d" % (version,)
        elif offset + HEADER_SIZE + length > end:
            report("%s: offset %d: torn record at end of file skipped" % (path, offset))
            return
        else:
            body = data[offset + HEADER_SIZE : offset + HEADER_SIZE + length]
            head = data[offset + 4 : offset + 10]
            if zlib.crc32(body, zlib.crc32(head)) != crc:
                problem = "checksum mismatch"
            elif rtype not in TYPES:
                problem = "unknown record type %r" % (rtype,)
            else:
                try:
                    payload = json.loads(body.decode("utf-8"))
                except ValueError:
                    problem = "undecodable payload"
                else:
                    yield rtype, payload
                    offset += HEADER_SIZE + length
                    continue
        # resynchronise at the next record marker
        following = data.find(MAGIC, offset + 1)
        if following < 0:
            report(
                "%s: offset %d: %s, %d bytes skipped to end of file"
                % (path, offset, problem, end - offset)
            )
            return
        report(
            "%s: offset %d: %s, %d bytes skipped"
            % (path, offset, problem, following - offset)
        )
        offset = following


def readLog(
    directory: str, report: Callable[[str], None]
) -> Iterator[Tuple[bytes, Any]]:
    """
    Read every record of every IBDB file in C{directory}, oldest first.
    """
    for _, path in logFiles(directory):
        yield from readLogFile(path, report)


class IncomingBackupLog:
    """
    The writer of IBDB, with group commit and rotation.

    @ivar commits: number of fsyncs done (for status and tests).
    @ivar records: number of records committed (synced: a record written
        unsynced counts once the commit after it has synced it).
    """

    def __init__(
        self,
        directory: str,
        reactor: Any,
        maxCommitDelay: float,
        maxOpenTransactions: int,
        fileSize: int,
        sync: Callable[[int], None] = os.fsync,
    ) -> None:
        """
        @param directory: the IBDB directory.
        @param maxCommitDelay: C{IBDB { max_commit_delay }} in seconds.
        @param maxOpenTransactions: C{IBDB { max_open_TAs }}.
        @param fileSize: C{IBDB { size }} in bytes.
        @param sync: the fsync to use (tests).
        """
        self.directory = os.path.abspath(directory)
        self.reactor = reactor
        self.maxCommitDelay = maxCommitDelay
        self.maxOpenTransactions = max(1, maxOpenTransactions)
        self.fileSize = fileSize
        self._syncFile = sync
        self._fd = None  # type: Optional[int]
        self._number = 0
        self._size = 0
        self._pending = []  # type: List[bytes]
        self._waiting = []  # type: List[defer.Deferred]
        #: contents to sync with the waiting records (L{append}'s C{content})
        self._contents = []  # type: List[str]
        #: how contents are synced (a L{smx.queue.cdb.ContentSync}), or
        #: C{None}: no record may name one
        self.contentSync = None  # type: Any
        #: the write (and sync) at the end of this turn
        self._turnEnd = False
        #: a waiting record must be synced, not only written (a C{T})
        self._syncWanted = False
        #: records written and not yet synced (counted in L{records} once
        #: synced)
        self._unsyncedRecords = 0
        #: the sync of written records, C{maxCommitDelay} after the first
        self._syncTimer = None  # type: Any
        self._live = {}  # type: Dict[int, Set[str]]
        self._fileOf = {}  # type: Dict[str, int]
        self.commits = 0
        self.records = 0
        # called as commitObserver(records, fsync seconds) after each
        # group commit (smx.metrics)
        self.commitObserver = None  # type: Optional[Callable[[int, float], None]]
        self._syncSeconds = 0.0
        #: called before a file is removed: the contents of the C{D}
        #: records it holds must be gone first (L{smx.queue.store})
        self.beforeRemoving = None  # type: Optional[Callable[[], None]]

    @classmethod
    def fromSettings(
        cls,
        settings: Any,
        reactor: Any,
        directory: Optional[str] = None,
        sync: Callable[[int], None] = os.fsync,
    ) -> "IncomingBackupLog":
        """
        @param settings: the L{smx.queue.settings.QueueSettings}.
        @param directory: the IBDB directory (default: C{ibdb} in the
            queue directory).
        """
        return cls(
            directory or os.path.join(settings.queueDirectory, "ibdb"),
            reactor,
            maxCommitDelay=settings.maxCommitDelay,
            maxOpenTransactions=settings.maxOpenTransactions,
            fileSize=settings.ibdbFileSize,
            sync=sync,
        )

    def start(self) -> None:
        """
        Open a new current file after the existing ones.
        """
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        existing = logFiles(self.directory)
        self._number = existing[-1][0] if existing else 0
        for n, _ in existing:
            self._live.setdefault(n, set())
        self._openNext()

    @property
    def currentPath(self) -> str:
        return os.path.join(self.directory, "%s%010d" % (FILE_PREFIX, self._number))

    def _openNext(self) -> None:
        self._number += 1
        self._fd = os.open(
            self.currentPath,
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
            0o600,
        )
        self._size = os.fstat(self._fd).st_size
        self._live.setdefault(self._number, set())
        fsyncDirectory(self.directory)

    def append(
        self, recordType: bytes, payload: Any, content: Optional[str] = None
    ) -> defer.Deferred:
        """
        Add a record; for a C{T} record the transaction C{payload["id"]}
        becomes referenced by the current file until L{release}.

        @param content: the path of a content file written and not synced:
            it is synced (by L{contentSync}) in the same commit, before
            the record is on stable storage.

        @return: a L{Deferred} firing with C{None} once the record is on
            stable storage, or errbacking with the L{OSError} that kept it
            from getting there.
        """
        if self._fd is None:
            return defer.fail(OSError("IBDB is not open"))
        if content is not None:
            if self.contentSync is None:
                return defer.fail(OSError("IBDB cannot sync contents"))
            self._contents.append(content)
        record = encodeRecord(recordType, payload)
        if recordType == TRANSACTION:
            taId = payload["id"]
            old = self._fileOf.get(taId)
            if old is not None:
                self._live.get(old, set()).discard(taId)
            self._fileOf[taId] = self._number
            self._live[self._number].add(taId)
        d = defer.Deferred()  # type: defer.Deferred
        self._pending.append(record)
        self._waiting.append(d)
        if recordType == TRANSACTION or content is not None:
            self._syncWanted = True
        if len(self._pending) >= self.maxOpenTransactions:
            self.commit()
        elif not self._turnEnd:
            self._turnEnd = True
            atEndOfTurn(self.reactor, self._endOfTurn)
        return d

    def _endOfTurn(self) -> None:
        if self._turnEnd:
            self._turnEnd = False
            self.write()

    def _takeBatch(self) -> Any:
        # the write at the end of the turn has nothing left to do
        self._turnEnd = False
        self._syncWanted = False
        data = b"".join(self._pending)
        waiting = self._waiting
        contents = self._contents
        self._pending = []
        self._waiting = []
        self._contents = []
        return data, waiting, contents

    def write(self) -> None:
        """
        Write every waiting record now, without a sync, then fire their
        Deferreds; the sync follows at the latest C{maxCommitDelay}
        later.  A record that must be synced (a C{T}) makes it a
        L{commit}.
        """
        if self._syncWanted:
            self.commit()
            return
        if not self._pending or self._fd is None:
            return
        data, waiting, _ = self._takeBatch()
        try:
            self._write(self._fd, data, self._size)
        except OSError as e:
            for d in waiting:
                d.errback(e)
            return
        self._unsyncedRecords += len(waiting)
        if self._syncTimer is None:
            self._syncTimer = self.reactor.callLater(self.maxCommitDelay, self.commit)
        for d in waiting:
            d.callback(None)

    def _write(self, fd: int, data: bytes, size: int) -> None:
        """
        Append C{data} to C{fd}; on failure cut the file back to C{size}.
        """
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except OSError:
            self._cutBack(fd, size)
            raise
        self._size = size + len(data)

    def _cutBack(self, fd: int, size: int) -> None:
        """After a failed write or sync: the file back to C{size} bytes."""
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass
        self._size = size

    def _writeAndSync(
        self, fd: int, data: bytes, size: int, contents: List[str]
    ) -> None:
        """
        Append C{data} to C{fd}, sync C{contents} and fsync C{fd}; on
        failure cut the file back to C{size}.
        """
        self._write(fd, data, size)
        try:
            started = time.monotonic()
            if not contents or not self.contentSync.sync(contents, fd):
                self._syncFile(fd)
            self._syncSeconds = time.monotonic() - started
        except OSError:
            self._cutBack(fd, size)
            raise

    def _committed(self, length: int, waiting: List) -> None:
        # the records of this commit and those written unsynced before
        records = len(waiting) + self._unsyncedRecords
        self._unsyncedRecords = 0
        self.commits += 1
        self.records += records
        if self.commitObserver is not None:
            self.commitObserver(records, self._syncSeconds)
        if self._size >= self.fileSize:
            self._rotate()
        for d in waiting:
            d.callback(None)

    def commit(self) -> None:
        """
        Write and fsync every waiting record now (and those written
        before without a sync), then fire their Deferreds.
        """
        if self._syncTimer is not None:
            if self._syncTimer.active():
                self._syncTimer.cancel()
            self._syncTimer = None
        if (not self._pending and not self._unsyncedRecords) or self._fd is None:
            return
        data, waiting, contents = self._takeBatch()
        error = None  # type: Optional[OSError]
        try:
            self._writeAndSync(self._fd, data, self._size, contents)
        except OSError as e:
            error = e
        if error is None:
            self._committed(len(data), waiting)
        else:
            if self._unsyncedRecords:
                # retry the sync of the records written before
                self._syncTimer = self.reactor.callLater(
                    self.maxCommitDelay, self.commit
                )
            for d in waiting:
                d.errback(error)

    def _rotate(self) -> None:
        oldFd, old = self._fd, self._number
        try:
            self._openNext()
        except OSError:
            # keep appending to the old file; try again after the next commit
            self._number = old
            self._fd = oldFd
            return
        if oldFd is not None:
            os.close(oldFd)
        self._maybeRemove(old)

    def release(self, transactionId: str) -> None:
        """
        The C{T} record of C{transactionId} is no longer needed: every
        recipient is final or safely in DEFEDB.  Removes its file if that
        was the last reference and the file is not the current one.
        """
        n = self._fileOf.pop(transactionId, None)
        if n is None:
            return
        live = self._live.get(n)
        if live is not None:
            live.discard(transactionId)
            self._maybeRemove(n)

    def _maybeRemove(self, number: int) -> None:
        if number == self._number or self._live.get(number):
            return
        self._live.pop(number, None)
        path = os.path.join(self.directory, "%s%010d" % (FILE_PREFIX, number))
        if self.beforeRemoving is not None:
            self.beforeRemoving()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def removeOlderFiles(self) -> None:
        """
        Remove every file older than the current one whose transactions are
        not referenced (after recovery rewrote the live ones).
        """
        for n in list(self._live):
            self._maybeRemove(n)

    def fileCount(self) -> int:
        """@return: the number of IBDB files in use."""
        return len(self._live)

    def stop(self) -> None:
        """
        Commit what is waiting and close the current file.
        """
        self.commit()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
