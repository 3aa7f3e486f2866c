# -*- test-case-name: smx.queue.test.test_defedbwatch -*-
"""
NAME
    smx.queue.defedbwatch - keep DEFEDB working while QMGR runs

SYNOPSIS
    watch = DefedbWatcher(reactor, defedb, store, scheduler, contentStore,
                          logger, finished=lambda: recovered.finished)
    watch.mergeNeeded = True    # DEFEDB could not be read at the start
    watch.start()               # every WATCH_INTERVAL seconds: watch()
    watch.stop()

DESCRIPTION
    A full disk must not stop QMGR (seed §6.10.1).  Every L{WATCH_INTERVAL}
    seconds L{DefedbWatcher.watch}:

        - while DEFEDB is usable, writes the pages changed since the last
          time to their files (so that a file must grow now, while there
          is room, not when the cache needs the page), and writes what
          DEFEDB could not take before (L{QueueStore.writePending});
        - when DEFEDB is closed or broken (it could not be opened, a
          commit failed, Berkeley DB said C{DB_RUNRECOVERY}), waits until
          its file systems have room again and then opens it again, with
          recovery, without a restart of smx; then catches up.  An open
          that fails (a damaged file, not a full disk) is tried again
          after L{WATCH_INTERVAL}, then after twice as long each time,
          up to L{MAX_REOPEN_DELAY}: recovery of a damaged DEFEDB is not
          repeated every two seconds.

    If DEFEDB could not be read when QMGR started, QMGR runs on what IBDB
    has (recipients IBDB knew as deferred are delivered again), and once
    DEFEDB opens its records are merged into the queue
    (L{smx.queue.recovery.mergeDefedb}): transactions only DEFEDB had are
    queued, records of recipients final by now are removed.

CONFIGURATION PARAMETERS
    None of its own (DEFEDB { ... } of qmgr).

SECURITY
    None.

DIAGNOSTICS
    Each change of the state of DEFEDB is logged once: C{sev=ERR} with
    C{stat=DEFEDB waits for disk space} or C{stat=DEFEDB unusable} and the
    error, then C{stat=DEFEDB reopened} (notice) with the records still
    waiting to be written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Set

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime

from smx.interfaces import IContentStore
from smx.log import Logger
from smx.queue.defedb import DefedbError, DeferredEnvelopeDB
from smx.queue.envelope import Recipient, Transaction
from smx.queue.recovery import mergeDefedb
from smx.queue.store import QueueStore

if TYPE_CHECKING:
    from smx.queue.scheduler import Scheduler

#: seconds between two looks at DEFEDB
WATCH_INTERVAL = 2.0
#: the longest wait between two failed opens of DEFEDB
MAX_REOPEN_DELAY = 300.0


class DefedbWatcher:
    """
    @ivar mergeNeeded: DEFEDB's records are not in the queue yet (it could
        not be read at the start).
    @ivar state: C{"ok"}, C{"waiting"} (for disk space) or C{"failed"}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        defedb: DeferredEnvelopeDB,
        store: QueueStore,
        scheduler: Scheduler,
        contentStore: IContentStore,
        logger: Logger,
        finished: Callable[[], Set[str]] = set,
        report: Optional[Callable[[str], None]] = None,
        interval: float = WATCH_INTERVAL,
    ) -> None:
        self.clock = clock
        self.defedb = defedb
        self.store = store
        self.scheduler = scheduler
        self.contentStore = contentStore
        self.logger = logger
        self.finished = finished
        self.report = report or (lambda text: None)
        self.interval = interval
        self.mergeNeeded = False
        self.state = "ok"
        self._call = None  # type: Optional[task.LoopingCall]
        #: when the next open may be tried, and the wait after the next failure
        self._nextOpen = 0.0
        self._reopenDelay = interval

    def start(self) -> None:
        if self._call is None:
            self._call = task.LoopingCall(self.watch)
            self._call.clock = self.clock
            self._call.start(self.interval, now=False)

    def stop(self) -> None:
        if self._call is not None and self._call.running:
            self._call.stop()
        self._call = None

    def _enter(self, state: str, **fields: Any) -> None:
        if state == self.state:
            return
        self.state = state
        if state == "ok":
            self.logger.notice(
                stat="DEFEDB reopened", pending=self.store.pendingCount(), **fields
            )
        else:
            self.logger.error("DefedbWatcher.watch", **fields)

    def watch(self) -> None:
        """
        Look after DEFEDB once (see the module documentation).
        """
        db = self.defedb
        if db.isOpen:
            try:
                db.flush()
            except DefedbError as e:
                self.logger.error("DefedbWatcher.flush", error=str(e))
            if db.isOpen:
                self.catchUp()
                return
        if not db.hasRoom():
            self._enter(
                "waiting",
                stat="DEFEDB waits for disk space",
                free=db.freeBytes(),
                needed=db.headroom,
                pending=self.store.pendingCount(),
            )
            return
        now = self.clock.seconds()
        if now < self._nextOpen:
            return
        try:
            db.open()
        except DefedbError as e:
            self._nextOpen = now + self._reopenDelay
            self._enter(
                "failed",
                stat="DEFEDB unusable",
                error=str(e),
                retry=int(self._reopenDelay),
            )
            self._reopenDelay = min(self._reopenDelay * 2, MAX_REOPEN_DELAY)
            return
        self._nextOpen = 0.0
        self._reopenDelay = self.interval
        self._enter("ok")
        self.catchUp()

    def catchUp(self) -> None:
        """
        Write what DEFEDB could not take, and merge its records into the
        queue if that is still to be done.
        """
        if not self.defedb.isOpen:
            return
        if self.store.pendingCount():
            self.store.writePending()
        if not self.mergeNeeded or self.store.pendingRemovals:
            return
        try:
            records = self.defedb.loadAll()
        except DefedbError as e:
            self.logger.error("DefedbWatcher.merge", error=str(e))
            return
        result = mergeDefedb(
            records,
            self.store.transactions,
            self.finished(),
            self.contentStore,
            self.report,
        )
        self.mergeNeeded = False
        self.store.defedbUnknown = False
        for ta in result.adopted:
            self.store.transactions[ta.id] = ta
            self._schedule(ta, list(ta.recipients.values()))
        for ta, rcpts in result.added:
            self._schedule(ta, rcpts)
        for taId, indices in result.stale:
            self.store.removeFromDefedb(taId, indices)
        self.logger.notice(
            stat="DEFEDB merged",
            adopted=len(result.adopted),
            stored=result.marked,
            stale=len(result.stale),
            missing=len(result.missing),
        )
        if self.store.pendingCount():
            self.store.writePending()

    def _schedule(self, ta: Transaction, rcpts: Iterable[Recipient]) -> None:
        for r in rcpts:
            if r.state == "deferred":
                self.scheduler.retryAt(ta, r)
        # recipients now known to be in DEFEDB free the IBDB record
        self.store.checkDone(ta)
