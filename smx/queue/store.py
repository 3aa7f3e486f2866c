# -*- test-case-name: smx.queue.test.test_qmgr -*-
"""
NAME
    smx.queue.store - what QMGR writes where: IBDB, DEFEDB and CDB together

SYNOPSIS
    store = QueueStore(ibdbLog, defedb, contentStore, logger)
    d = store.logNew(transaction)          # fires when durable
    store.defer(transaction, recipients)   # DEFEDB, then IBDB "deferred"
    store.defer(transaction, recipients, group=True)  # at the group commit
    store.finish(transaction, recipients)  # final states
    store.checkDone(transaction)           # D record, then CDB removal
    store.writePending()                   # what DEFEDB could not take

DESCRIPTION
    The order of writes is what makes recovery correct (seed §10):

        - a new transaction is in IBDB (fsynced) before SMTPS says 250;
        - a recipient is moved to DEFEDB (committed) before IBDB records
          C{deferred}; after a crash in between, DEFEDB wins;
        - IBDB C{deferred} means DEFEDB is responsible: a recipient so
          marked but absent from DEFEDB is finished;
        - a final recipient is removed from DEFEDB before anything else,
          so it is not retried;
        - the content is removed from CDB only after the C{D} record of the
          transaction is on stable storage.

    Group commit: the deferrals of the scheduler (C{defer(...,
    group=True)}) wait C{groupDelay} seconds (QMGR: IBDB's
    C{max_commit_delay}) or to the end of the reactor's turn, and those
    of that time are written to DEFEDB in one Berkeley DB transaction,
    with one flush of its log, instead of one each (or at once when
    L{GROUP_MAX} transactions wait).  The recipients stay as
    they were until then (not C{inDefedb}: IBDB keeps their transaction,
    and no C{deferred} record is written before the commit), so a crash
    before it loses nothing: recovery finds them in IBDB and tries them
    again.  What is written is the state at the commit; a recipient no
    longer deferred or held then (tried again, delivered, deleted) is
    left out.  L{writePending} (QMGR's stop) makes the commit at once.

    When DEFEDB cannot be used (closed, being recovered, a full disk, a
    failed commit), deferred recipients stay in memory and their
    transaction keeps its IBDB record, so nothing is lost; what DEFEDB
    should have recorded (new states, removals) is kept in L{pending} and
    written by L{writePending} once DEFEDB works again.  A removal whose
    commit was in doubt is done again then; a recipient whose write was in
    doubt is removed too when it becomes final.

CONFIGURATION PARAMETERS
    None of its own.

SECURITY
    None.

DIAGNOSTICS
    A failed DEFEDB write or IBDB commit is logged with C{sev=ERR} naming
    the transaction; the transaction stays queued.  Writes not tried
    because DEFEDB is closed are not logged again (QMGR logs the state of
    DEFEDB once).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

from twisted.internet import defer

from smx.interfaces import IContentStore
from smx.log import Logger
from smx.queue import ibdb as ibdbmod
from smx.queue.ibdb import IncomingBackupLog
from smx.queue.defedb import DefedbError, DeferredEnvelopeDB
from smx.queue.envelope import Recipient, Transaction

#: the most transactions whose deferrals wait for one group commit: one
#: more commits the group at once
GROUP_MAX = 64


class QueueStore:
    """
    @ivar transactions: id -> L{Transaction} of every queued transaction.
    """

    def __init__(
        self,
        log: IncomingBackupLog,
        defedb: DeferredEnvelopeDB,
        contentStore: IContentStore,
        logger: Logger,
        clock: Any = None,
        groupDelay: float = 0.0,
    ):
        """
        @param clock: the reactor (C{callLater}) the group commit of
            deferrals is scheduled with; C{None}: every deferral is
            written at once.
        @param groupDelay: seconds the first deferral of a group waits for
            others (0: the end of the reactor's turn).
        """
        self.clock = clock
        self.groupDelay = groupDelay
        self.log = log
        self.defedb = defedb
        self.contentStore = contentStore
        # a D record goes with the IBDB file holding it: the removals of
        # the contents it names, waiting for their batch, are made first
        log.beforeRemoving = getattr(contentStore, "removeWaitingNow", None)
        self.logger = logger
        self.transactions = {}  # type: Dict[str, Transaction]
        #: transaction id -> recipient indices whose state DEFEDB must get
        self.pending = {}  # type: Dict[str, Set[int]]
        #: transaction id -> recipient indices DEFEDB must forget
        self.pendingRemovals = {}  # type: Dict[str, Set[int]]
        #: DEFEDB could not be read at the start: any recipient may be in
        #: it, so every final one is removed from it
        self.defedbUnknown = False
        #: DEFEDB refused a write for want of disk space (logged once)
        self._defedbShort = False
        #: transaction id -> (transaction, recipient indices) of the
        #: deferrals waiting for the group commit
        self.grouped = {}  # type: Dict[str, Tuple[Transaction, Set[int]]]
        self._groupCall = None  # type: Any

    def logNew(self, ta: Transaction, content: Optional[str] = None) -> defer.Deferred:
        """
        Write the C{T} record of a transaction.

        @param content: the path of its content, when it is to be synced
            in the same commit (L{IncomingBackupLog.append}).
        @return: a L{Deferred} firing once it is on stable storage.
        """
        d = self.log.append(ibdbmod.TRANSACTION, ta.toRecord(), content)

        def _ebLog(failure: Any) -> Any:
            self.log.release(ta.id)
            return failure

        return d.addErrback(_ebLog)

    def _logStates(self, ta: Transaction, rcpts: List[Recipient]) -> defer.Deferred:
        d = self.log.append(
            ibdbmod.RECIPIENTS,
            {"id": ta.id, "rcpts": [[r.index, r.state] for r in rcpts]},
        )
        d.addErrback(self._ebLogged, ta.id)
        return d

    def _ebLogged(self, failure: Any, taId: str) -> None:
        self.logger.error(
            "QueueStore.log", ss_ta=taId, error=str(failure.value), file="IBDB"
        )

    def _defedbUsable(self) -> bool:
        return self.defedb is not None and self.defedb.isOpen

    def defer(
        self, ta: Transaction, rcpts: List[Recipient], group: bool = False
    ) -> None:
        """
        Store deferred recipients (their C{nextTry} set) in DEFEDB, then
        note in IBDB that DEFEDB has them.  If DEFEDB cannot take them they
        stay in memory (and in IBDB) and are kept for L{writePending}.

        @param group: write them at the group commit of this reactor turn
            (see the module docstring) rather than now.
        """
        if not rcpts:
            return
        if group and self.clock is not None and self._defedbUsable():
            entry = self.grouped.get(ta.id)
            if entry is None:
                entry = self.grouped[ta.id] = (ta, set())
            entry[1].update(r.index for r in rcpts)
            if len(self.grouped) >= GROUP_MAX:
                self.commitGroup()
            elif self._groupCall is None:
                self._groupCall = self.clock.callLater(
                    self.groupDelay, self.commitGroup
                )
            return
        failed = True
        if self._defedbUsable():
            failed = self._putRecipients(ta, rcpts, "defer") is not None
        if failed:
            self.pending.setdefault(ta.id, set()).update(r.index for r in rcpts)
        self._updateLiveness(ta)

    def commitGroup(self) -> None:
        """
        Write the deferrals waiting for the group commit (those still
        deferred or held) to DEFEDB in one transaction, then note in IBDB
        that DEFEDB has them; if DEFEDB cannot take them they are kept
        for L{writePending}, as L{defer} keeps them.
        """
        call, self._groupCall = self._groupCall, None
        if call is not None and call.active():
            call.cancel()
        grouped, self.grouped = self.grouped, {}
        changes = []  # type: List[Tuple[Transaction, List[Recipient]]]
        for ta, indices in grouped.values():
            if ta.finished or self.transactions.get(ta.id) is not ta:
                continue
            rcpts = [
                ta.recipients[i]
                for i in sorted(indices)
                if i in ta.recipients and ta.recipients[i].state in ("deferred", "held")
            ]
            if rcpts:
                changes.append((ta, rcpts))
        if not changes:
            return
        error = None  # type: Optional[DefedbError]
        if self._defedbUsable():
            try:
                self.defedb.putMany(
                    [
                        (ta.envelope(), [r.toDict() for r in rcpts])
                        for ta, rcpts in changes
                    ]
                )
            except DefedbError as e:
                error = e
        if error is None and self._defedbUsable():
            self._defedbWorks()
            for ta, rcpts in changes:
                self._stored(ta, rcpts)
                self._updateLiveness(ta)
            return
        for ta, rcpts in changes:
            if error is not None:
                self._defedbFailed("defer", ta.id, error)
            self.pending.setdefault(ta.id, set()).update(r.index for r in rcpts)
            self._updateLiveness(ta)

    def _putRecipients(
        self, ta: Transaction, rcpts: List[Recipient], func: str
    ) -> Optional[DefedbError]:
        """
        Write C{rcpts} to DEFEDB; on success mark them stored and log to
        IBDB that DEFEDB has them.

        @return: C{None} on success, else the L{DefedbError}.
        """
        try:
            self.defedb.putRecipients(ta.envelope(), [r.toDict() for r in rcpts])
        except DefedbError as e:
            self._defedbFailed(func, ta.id, e)
            return e
        self._defedbWorks()
        self._stored(ta, rcpts)
        return None

    def _stored(self, ta: Transaction, rcpts: List[Recipient]) -> None:
        """
        C{rcpts} are committed to DEFEDB: mark them stored and log to IBDB
        that DEFEDB has them.
        """
        waiting = self.pending.get(ta.id)
        for r in rcpts:
            r.inDefedb = True
            if waiting is not None:
                waiting.discard(r.index)
        if waiting is not None and not waiting:
            del self.pending[ta.id]
        self._logStates(ta, rcpts)

    def update(self, ta: Transaction, rcpts: List[Recipient]) -> None:
        """
        Rewrite recipients already in DEFEDB (e.g. after a delay warning).
        """
        stored = [r for r in rcpts if r.inDefedb]
        if not stored:
            return
        if not self._defedbUsable():
            self.pending.setdefault(ta.id, set()).update(r.index for r in stored)
            return
        try:
            self.defedb.putRecipients(ta.envelope(), [r.toDict() for r in stored])
        except DefedbError as e:
            self._defedbFailed("update", ta.id, e)
            self.pending.setdefault(ta.id, set()).update(r.index for r in stored)

    def finish(self, ta: Transaction, rcpts: List[Recipient]) -> None:
        """
        Recipients reached a final state: remove them from DEFEDB, log
        their state, and finish the transaction if it is done.
        """
        if not rcpts:
            return
        doubtful = self.pending.get(ta.id, set())
        stored = [
            r.index
            for r in rcpts
            if r.inDefedb or r.index in doubtful or self.defedbUnknown
        ]
        for r in rcpts:
            doubtful.discard(r.index)
        if not doubtful:
            self.pending.pop(ta.id, None)
        if stored:
            self.removeFromDefedb(ta.id, stored)
        for r in rcpts:
            r.inDefedb = False
        if not self._completes(ta):
            self._logStates(ta, rcpts)
        # else the D record that checkDone writes now says all: recovery
        # forgets a transaction at its D, whatever R records came before
        self.checkDone(ta)

    def removeFromDefedb(self, taId: str, indices: List[int]) -> bool:
        """
        Remove recipient records from DEFEDB, or keep them for
        L{writePending} if it cannot be done now.

        @return: whether they were removed.
        """
        if self._defedbUsable():
            try:
                self.defedb.removeRecipients(taId, indices)
                self._defedbWorks()
                return True
            except DefedbError as e:
                self._defedbFailed("finish", taId, e)
        self.pendingRemovals.setdefault(taId, set()).update(indices)
        return False

    def _defedbFailed(self, func: str, taId: str, e: DefedbError) -> None:
        """
        Log a write DEFEDB refused: with C{sev=ERR}, except the repeats of
        a refusal for want of disk space (those at level 11).
        """
        if e.full and not e.recover:
            if self._defedbShort:
                self.logger.info(
                    level=11, ss_ta=taId, stat="kept for DEFEDB", error=str(e)
                )
                return
            self._defedbShort = True
        self.logger.error("QueueStore." + func, ss_ta=taId, error=str(e))

    def _defedbWorks(self) -> None:
        if self._defedbShort:
            self._defedbShort = False
            self.logger.notice(
                stat="DEFEDB has room again", pending=self.pendingCount()
            )

    def pendingCount(self) -> int:
        """@return: how many recipient records DEFEDB still has to get."""
        return sum(len(v) for v in self.pending.values()) + sum(
            len(v) for v in self.pendingRemovals.values()
        )

    def writePending(self) -> int:
        """
        Write to DEFEDB what it could not take before: removals first, then
        the recipients still deferred or held (each then noted in IBDB as
        stored).  Stops at the first failure (the rest is kept).

        @return: how many records are still waiting.
        """
        if self.grouped:
            self.commitGroup()
        if not self._defedbUsable():
            return self.pendingCount()
        for taId in sorted(self.pendingRemovals):
            try:
                self.defedb.removeRecipients(taId, sorted(self.pendingRemovals[taId]))
            except DefedbError as e:
                self._defedbFailed("writePending", taId, e)
                return self.pendingCount()
            self._defedbWorks()
            del self.pendingRemovals[taId]
        for taId in sorted(self.pending):
            ta = self.transactions.get(taId)
            rcpts = []  # type: List[Recipient]
            if ta is not None and not ta.finished:
                rcpts = [
                    ta.recipients[i]
                    for i in sorted(self.pending[taId])
                    if i in ta.recipients
                    and ta.recipients[i].state in ("deferred", "held")
                ]
            if ta is None or not rcpts:
                # final, active again or gone meanwhile: finish() or the
                # next deferral takes care of it
                del self.pending[taId]
                continue
            if self._putRecipients(ta, rcpts, "writePending") is not None:
                return self.pendingCount()
            self.pending.pop(taId, None)
            self._updateLiveness(ta)
        return self.pendingCount()

    def _updateLiveness(self, ta: Transaction) -> None:
        if not ta.needsLog():
            self.log.release(ta.id)

    def _completes(self, ta: Transaction) -> bool:
        """Is every recipient of C{ta} final, and its C{D} not yet logged?"""
        return not ta.finished and ta.isDone()

    def checkDone(self, ta: Transaction) -> None:
        """
        If every recipient is final: log C{D}, then remove the content.
        """
        self._updateLiveness(ta)
        if not self._completes(ta):
            return
        ta.finished = True
        self.transactions.pop(ta.id, None)
        if ta.bounceTimer is not None and ta.bounceTimer.active():
            ta.bounceTimer.cancel()
        d = self.log.append(ibdbmod.DONE, {"id": ta.id})
        d.addCallback(lambda _: self.contentStore.remove(ta.id))
        d.addErrback(self._ebLogged, ta.id)
        self.logger.info(ss_ta=ta.id, stat="done")
