# -*- test-case-name: smx.queue.test.test_defedb -*-
"""
NAME
    smx.queue.defedb - DEFEDB, the deferred envelope database

SYNOPSIS
    db = DeferredEnvelopeDB(baseDirectory, logDirectory=None)
    db.open()
    db.putRecipients(envelope, [recipient, ...])
    db.removeRecipients(transactionId, [index, ...])
    for nextTry, transactionId, index in db.due(now): ...
    db.checkpoint()

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

    Every change is one Berkeley DB transaction committed durably.  The
    environment is opened with C{DB_RECOVER}, so that a crash leaves it
    consistent.  Checkpoints are taken every C{delay_between_2_checkpoints}
    seconds when more than C{KBytes_written_for_checkpointing} KB of log
    were written (or always when that is 0); log files no longer needed are
    removed automatically.

CONFIGURATION PARAMETERS
    DEFEDB { base_directory; log_directory; page_size; cache_size;
             KBytes_written_for_checkpointing; delay_between_2_checkpoints }

SECURITY
    The directory is created mode 0700 (seed §4.1).

DIAGNOSTICS
    L{DefedbError} names the directory and the Berkeley DB error when the
    environment cannot be opened even with C{DB_RECOVER_FATAL}.  A record
    that cannot be decoded is reported with its key and skipped.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from smx.bdb import db


class DefedbError(Exception):
    """
    DEFEDB cannot be used; the message names the directory and the cause.
    """


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


def _dbError(e: Exception) -> str:
    args = list(getattr(e, "args", ()))
    if len(args) >= 2:
        return "%s (%s)" % (args[1], args[0])
    return str(e)


class DeferredEnvelopeDB:
    """
    The deferred envelope database.

    @ivar path: the environment's home directory.
    """

    def __init__(
        self,
        baseDirectory: str,
        logDirectory: Optional[str] = None,
        pageSize: int = 0,
        cacheSize: int = 0,
        checkpointKBytes: int = 0,
        report: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.path = os.path.abspath(baseDirectory)
        self.logDirectory = logDirectory
        self.pageSize = pageSize
        self.cacheSize = cacheSize
        self.checkpointKBytes = checkpointKBytes
        self._report = report or (lambda text: None)
        self.env = None  # type: Any
        self._tas = None  # type: Any
        self._rcpts = None  # type: Any
        self._due = None  # type: Any

    def open(self) -> None:
        """
        Open (creating and recovering) the environment and its databases.

        @raise DefedbError: if it cannot be opened.
        """
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            if self.logDirectory:
                os.makedirs(self.logDirectory, mode=0o700, exist_ok=True)
        except OSError as e:
            raise DefedbError("DEFEDB %s: %s" % (self.path, e.strerror))
        try:
            self._openEnvironment(db.DB_RECOVER)
        except db.DBError as e:
            self._report(
                "DEFEDB %s: normal recovery failed: %s; trying catastrophic "
                "recovery" % (self.path, _dbError(e))
            )
            self.close()
            try:
                self._openEnvironment(db.DB_RECOVER_FATAL)
            except db.DBError as e2:
                self.close()
                raise DefedbError("DEFEDB %s: %s" % (self.path, _dbError(e2)))

    def _openEnvironment(self, recover: int) -> None:
        env = db.DBEnv()
        if self.logDirectory:
            env.set_lg_dir(os.path.abspath(self.logDirectory))
        if self.cacheSize:
            env.set_cachesize(0, self.cacheSize)
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
        self.env = env
        try:
            env.log_set_config(db.DB_LOG_AUTO_REMOVE, 1)
        except (AttributeError, db.DBError):
            pass
        self._tas = self._openDB("transactions")
        self._rcpts = self._openDB("recipients")
        self._due = self._openDB("due")

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
        return self.env is not None and self._rcpts is not None

    def putRecipients(
        self, envelope: Dict[str, Any], recipients: List[Dict[str, Any]]
    ) -> None:
        """
        Store (or update) the envelope of a transaction and the state of
        some of its recipients, each with its C{"nextTry"}, in one durable
        Berkeley DB transaction.

        @raise DefedbError: if the change could not be committed.
        """
        taId = envelope["id"]
        env = {k: v for k, v in envelope.items() if k != "recipients"}
        txn = self.env.txn_begin()
        try:
            self._tas.put(taId.encode("ascii"), json.dumps(env).encode(), txn=txn)
            for rcpt in recipients:
                key = recipientKey(taId, rcpt["index"])
                old = self._rcpts.get(key, txn=txn)
                if old is not None:
                    self._deleteDue(old, taId, rcpt["index"], txn)
                self._rcpts.put(key, json.dumps(rcpt).encode(), txn=txn)
                self._due.put(
                    dueKey(rcpt.get("nextTry", 0), taId, rcpt["index"]), b"", txn=txn
                )
            txn.commit()
        except db.DBError as e:
            txn.abort()
            raise DefedbError("DEFEDB %s: %s" % (self.path, _dbError(e)))

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
        txn = self.env.txn_begin()
        try:
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
            txn.commit()
        except db.DBError as e:
            txn.abort()
            raise DefedbError("DEFEDB %s: %s" % (self.path, _dbError(e)))
        return empty

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
        Read every stored transaction with its recipients (for recovery and
        C{mailq}).  Damaged records are reported and skipped.

        @return: a C{list} of C{(envelope, recipients)}.
        """
        envelopes = {}  # type: Dict[str, Dict[str, Any]]
        cursor = self._tas.cursor()
        try:
            rec = cursor.first()
            while rec is not None:
                key, value = rec
                try:
                    envelopes[key.decode("ascii")] = json.loads(value.decode())
                except ValueError:
                    self._report(
                        "DEFEDB %s: transaction record %r cannot be decoded, "
                        "skipped" % (self.path, key)
                    )
                rec = cursor.next()
        finally:
            cursor.close()
        recipients = {}  # type: Dict[str, List[Dict[str, Any]]]
        cursor = self._rcpts.cursor()
        try:
            rec = cursor.first()
            while rec is not None:
                key, value = rec
                try:
                    ta, idx = splitRecipientKey(key)
                    rcpt = json.loads(value.decode())
                    rcpt["index"] = idx
                except (ValueError, struct.error):
                    self._report(
                        "DEFEDB %s: recipient record %r cannot be decoded, "
                        "skipped" % (self.path, key)
                    )
                else:
                    recipients.setdefault(ta, []).append(rcpt)
                rec = cursor.next()
        finally:
            cursor.close()
        out = []
        for ta, rcpts in recipients.items():
            if ta not in envelopes:
                self._report(
                    "DEFEDB %s: recipients of %s have no envelope, skipped"
                    % (self.path, ta)
                )
                continue
            out.append((envelopes[ta], rcpts))
        return out

    def checkpoint(self, force: bool = False) -> None:
        """
        Take a checkpoint if more than C{checkpointKBytes} KB of log were
        written since the last one (or C{force}).
        """
        if self.env is None:
            return
        if force:
            self.env.txn_checkpoint(0, 0, db.DB_FORCE)
        else:
            self.env.txn_checkpoint(self.checkpointKBytes, 0)

    def close(self) -> None:
        """
        Close the databases and the environment.
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
