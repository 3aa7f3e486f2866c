# -*- test-case-name: smx.test.test_interfaces -*-
"""
In-memory fakes of L{IQueueManager} and L{IContentStore} for unit tests of
the components that use them (like C{twisted.internet.testing}), and the
settings of QMGR as users run it (L{defaultQueueSettings}).
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import defer
from zope.interface import implementer

from smx.interfaces import IContentStore, IQueueManager
from smx.queue.settings import QueueSettings
from smx.values import EnvelopeData, ReplyData


def defaultQueueSettings(
    queueDirectory: Optional[str] = None, **changes: Any
) -> QueueSettings:
    """
    The L{QueueSettings} of the default configuration (the option table's
    defaults), with some fields changed.

    @param queueDirectory: the execution directory (default: the current
        directory); the paths of the defaults are under it.
    @param changes: fields to change, as for C{dataclasses.replace}.
    """
    from smx.config import defaultConfiguration

    cfg = defaultConfiguration(
        queueDirectory=os.path.abspath(queueDirectory or os.getcwd())
    )
    settings = QueueSettings.fromConfiguration(cfg)
    return dataclasses.replace(settings, **changes) if changes else settings


def defaultDefedb(
    baseDirectory: str,
    report: Any = None,
    statvfs: Any = os.statvfs,
    **changes: Any,
) -> Any:
    """
    A L{smx.queue.defedb.DeferredEnvelopeDB} in C{baseDirectory} (its log
    files too) with the settings of L{defaultQueueSettings}.

    @param changes: fields of the L{QueueSettings} to change.
    """
    from smx.queue.defedb import DeferredEnvelopeDB

    base = os.path.abspath(baseDirectory)
    settings = defaultQueueSettings(
        defedbDirectory=base, defedbLogDirectory=base, **changes
    )
    return DeferredEnvelopeDB.fromSettings(settings, report=report, statvfs=statvfs)


def defaultIncomingBackupLog(
    directory: str,
    reactor: Any,
    sync: Any = os.fsync,
    **changes: Any,
) -> Any:
    """
    An L{smx.queue.ibdb.IncomingBackupLog} in C{directory} with the
    settings of L{defaultQueueSettings}.

    @param changes: fields of the L{QueueSettings} to change.
    """
    from smx.queue.ibdb import IncomingBackupLog

    return IncomingBackupLog.fromSettings(
        defaultQueueSettings(**changes),
        reactor,
        os.path.abspath(directory),
        sync=sync,
    )


class StoppedPool:
    """
    A thread pool that keeps the jobs it is given, C{(f, args)}, and runs
    none (one that is stopping).
    """

    def __init__(self) -> None:
        self.jobs = []  # type: List[Tuple[Any, Tuple[Any, ...]]]

    def callInThreadWithCallback(
        self, onResult: Any, f: Any, *args: Any, **kw: Any
    ) -> None:
        self.jobs.append((f, args))


def stoppedPoolContentStore(directory: str) -> Tuple[StoppedPool, Any, Any]:
    """
    @return: a L{StoppedPool}, a L{Clock<twisted.internet.task.Clock>} and
        a L{FileContentStore<smx.queue.cdb.FileContentStore>} in
        C{directory} using both (its removals wait for the pool).
    """
    from twisted.internet.task import Clock

    from smx.queue.cdb import FileContentStore

    pool, clock = StoppedPool(), Clock()
    return pool, clock, FileContentStore(directory, threadPool=pool, reactor=clock)


class _MemoryWriter:
    def __init__(self, store: "MemoryContentStore", transactionId: str) -> None:
        self._store = store
        self._id = transactionId
        self._chunks = []  # type: List[bytes]

    def write(self, data: bytes) -> None:
        self._chunks.append(data)

    def commit(self) -> defer.Deferred:
        if self._store.failCommit is not None:
            return defer.fail(self._store.failCommit)
        self._store.contents[self._id] = b"".join(self._chunks)
        if self._store.pending is not None:
            d = defer.Deferred()  # type: defer.Deferred
            self._store.pending.append(d)
            return d
        return defer.succeed(None)

    def abort(self) -> None:
        self._chunks = []
        self._store.aborted.append(self._id)


@implementer(IContentStore)
class MemoryContentStore:
    """
    Message contents in a C{dict}.

    @ivar contents: transaction id -> committed bytes.
    @ivar failCommit: if set, an exception every C{commit()} fails with.
    @ivar aborted: ids whose writer was aborted.
    @ivar pending: if set to a list, C{commit()} returns an unfired
        Deferred appended here (to test waiting for the sync).
    """

    def __init__(self) -> None:
        self.contents = {}  # type: Dict[str, bytes]
        self.failCommit = None  # type: Optional[Exception]
        self.aborted = []  # type: List[str]
        self.pending = None  # type: Optional[List[defer.Deferred]]

    def createWriter(self, transactionId):
        return _MemoryWriter(self, transactionId)

    def open(self, transactionId):
        return io.BytesIO(self.contents[transactionId])

    def path(self, transactionId):
        return "memory:" + transactionId

    def remove(self, transactionId):
        self.contents.pop(transactionId, None)

    def transactionIds(self):
        return sorted(self.contents)

    def exists(self, transactionId: str) -> bool:
        return transactionId in self.contents

    def size(self, transactionId: str) -> int:
        return len(self.contents[transactionId])


@implementer(IQueueManager)
class FakeQueueManager:
    """
    A queue manager that records what it is given.

    @ivar envelopes: every committed envelope, in order.
    @ivar sessions: open session ids -> client address.
    @ivar refuseSession: a reply to refuse new sessions with, or C{None}.
    @ivar refuseTransaction: a reply for C{checkAcceptance}, or C{None}.
    @ivar failCommit: an exception C{commitTransaction} fails with, or
        C{None}.
    @ivar pending: if set to a list, C{commitTransaction} returns an
        unfired Deferred appended here (to test waiting for the commit).
    @ivar contents: C{(transactionId, stored)} of every
        C{contentCommitted} call.
    """

    def __init__(self) -> None:
        self.envelopes = []  # type: List[EnvelopeData]
        self.sessions = {}  # type: Dict[str, str]
        self.closed = []  # type: List[str]
        self.refuseSession = None  # type: Optional[ReplyData]
        self.refuseTransaction = None  # type: Optional[ReplyData]
        self.failCommit = None  # type: Optional[Exception]
        self.pending = None  # type: Optional[List[defer.Deferred]]
        self.controls = []  # type: List[tuple]
        self.contents = []  # type: List[Tuple[str, bool]]

    def sessionOpen(self, sessionId, clientAddress):
        if self.refuseSession is not None:
            return defer.succeed(self.refuseSession)
        self.sessions[sessionId] = clientAddress
        return defer.succeed(None)

    def sessionClose(self, sessionId, clientAddress):
        self.sessions.pop(sessionId, None)
        self.closed.append(sessionId)

    def checkAcceptance(self, size, sessionId=None):
        return defer.succeed(self.refuseTransaction)

    def commitTransaction(self, envelope):
        if self.failCommit is not None:
            return defer.fail(self.failCommit)
        self.envelopes.append(envelope)
        if self.pending is not None:
            d = defer.Deferred()  # type: defer.Deferred
            self.pending.append(d)
            return d
        return defer.succeed(None)

    def contentCommitted(self, transactionId, stored):
        if not any(e["id"] == transactionId for e in self.envelopes):
            return defer.fail(KeyError(transactionId))
        self.contents.append((transactionId, stored))
        return defer.succeed(None)

    def status(self):
        return defer.succeed(
            {"transactions": len(self.envelopes), "sessions": len(self.sessions)}
        )

    def listQueue(self):
        return defer.succeed([dict(e) for e in self.envelopes])

    def control(self, command, transactionId=None, recipient=None):
        self.controls.append((command, transactionId, recipient))
        if transactionId is not None and not any(
            e["id"] == transactionId for e in self.envelopes
        ):
            return defer.fail(KeyError(transactionId))
        return defer.succeed({"command": command, "id": transactionId})
