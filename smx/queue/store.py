# -*- test-case-name: smx.queue.test.test_qmgr -*-
"""
NAME
    smx.queue.store - what QMGR writes where: IBDB, DEFEDB and CDB together

SYNOPSIS
    store = QueueStore(ibdbLog, defedb, contentStore, logger)
    d = store.logNew(transaction)          # fires when durable
    store.defer(transaction, recipients)   # DEFEDB, then IBDB "deferred"
    store.finish(transaction, recipients)  # final states
    store.checkDone(transaction)           # D record, then CDB removal

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

    When DEFEDB cannot be used, deferred recipients stay in memory and their
    transaction keeps its IBDB record, so nothing is lost.

CONFIGURATION PARAMETERS
    None of its own.

SECURITY
    None.

DIAGNOSTICS
    A failed DEFEDB write or IBDB commit is logged with C{sev=ERR} naming
    the transaction; the transaction stays queued.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet import defer

from smx.queue import ibdb as ibdbmod
from smx.queue.defedb import DefedbError
from smx.queue.envelope import Recipient, Transaction


class QueueStore:
    """
    @ivar transactions: id -> L{Transaction} of every queued transaction.
    """

    def __init__(self, log: Any, defedb: Any, contentStore: Any, logger: Any):
        self.log = log
        self.defedb = defedb
        self.contentStore = contentStore
        self.logger = logger
        self.transactions = {}  # type: Dict[str, Transaction]

    def logNew(self, ta: Transaction) -> defer.Deferred:
        """
        Write the C{T} record of a transaction.

        @return: a L{Deferred} firing once it is on stable storage.
        """
        d = self.log.append(ibdbmod.TRANSACTION, ta.toRecord())

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

    def defer(self, ta: Transaction, rcpts: List[Recipient]) -> None:
        """
        Store deferred recipients (their C{nextTry} set) in DEFEDB, then
        note in IBDB that DEFEDB has them.
        """
        if self.defedb is None or not self.defedb.isOpen:
            self._updateLiveness(ta)
            return
        try:
            self.defedb.putRecipients(ta.envelope(), [r.toDict() for r in rcpts])
        except DefedbError as e:
            self.logger.error("QueueStore.defer", ss_ta=ta.id, error=str(e))
            self._updateLiveness(ta)
            return
        for r in rcpts:
            r.inDefedb = True
        self._logStates(ta, rcpts)
        self._updateLiveness(ta)

    def update(self, ta: Transaction, rcpts: List[Recipient]) -> None:
        """
        Rewrite recipients already in DEFEDB (e.g. after a delay warning).
        """
        stored = [r for r in rcpts if r.inDefedb]
        if not stored or self.defedb is None or not self.defedb.isOpen:
            return
        try:
            self.defedb.putRecipients(ta.envelope(), [r.toDict() for r in stored])
        except DefedbError as e:
            self.logger.error("QueueStore.update", ss_ta=ta.id, error=str(e))

    def finish(self, ta: Transaction, rcpts: List[Recipient]) -> None:
        """
        Recipients reached a final state: remove them from DEFEDB, log
        their state, and finish the transaction if it is done.
        """
        if not rcpts:
            return
        stored = [r.index for r in rcpts if r.inDefedb]
        if stored and self.defedb is not None and self.defedb.isOpen:
            try:
                self.defedb.removeRecipients(ta.id, stored)
            except DefedbError as e:
                self.logger.error("QueueStore.finish", ss_ta=ta.id, error=str(e))
        for r in rcpts:
            r.inDefedb = False
        self._logStates(ta, rcpts)
        self.checkDone(ta)

    def _updateLiveness(self, ta: Transaction) -> None:
        if not ta.needsLog():
            self.log.release(ta.id)

    def checkDone(self, ta: Transaction) -> None:
        """
        If every recipient is final: log C{D}, then remove the content.
        """
        self._updateLiveness(ta)
        if ta.finished or not ta.isDone():
            return
        ta.finished = True
        self.transactions.pop(ta.id, None)
        if ta.bounceTimer is not None and ta.bounceTimer.active():
            ta.bounceTimer.cancel()
        d = self.log.append(ibdbmod.DONE, {"id": ta.id})
        d.addCallback(lambda _: self.contentStore.remove(ta.id))
        d.addErrback(self._ebLogged, ta.id)
        self.logger.info(ss_ta=ta.id, stat="done")
