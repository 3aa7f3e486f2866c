# -*- test-case-name: smx.queue.test.test_qmgr,smx.queue.test.test_integration_crash -*-
"""
NAME
    smx.queue.recovery - rebuild the queue from IBDB, DEFEDB and CDB

SYNOPSIS
    result = recoverQueue(ibdbDirectory, defedb, contentStore, report)
    result.transactions      # id -> Transaction, not finished
    result.orphans           # CDB ids without an envelope
    result.finished          # ids found finished (their CDB can go)
    result.unacknowledged    # ids whose content was never completed
    merged = mergeDefedb(defedb.loadAll(), transactions, finished,
                         contentStore, report)   # DEFEDB opened late

DESCRIPTION
    Run by QMGR before it starts (seed §10, §6.10).  The IBDB records are
    read oldest first: a C{T} record (re)defines a transaction, an C{R}
    record sets recipient states, a C{D} record finishes it.  Then DEFEDB
    is overlaid: a recipient stored there is deferred with the state
    DEFEDB has, whatever IBDB says (the move to DEFEDB is committed before
    IBDB notes it).  A recipient IBDB marks C{deferred} that DEFEDB does not
    have is finished (it was removed from DEFEDB when it became final)
    unless DEFEDB could not be opened, in which case it is delivered again:
    a duplicate is better than a loss.  Recipients that were queued or
    being delivered at the crash are queued again.  For C{smx mailq},
    which reads DEFEDB as last checkpointed (C{defedbComplete} false), such
    a recipient is shown as deferred.

    When DEFEDB could not be opened at the start (a full disk), QMGR runs
    on what IBDB has and reads DEFEDB once it opens: L{mergeDefedb} adds
    the transactions only DEFEDB had, marks the recipients DEFEDB has as
    stored, and lists the records of recipients that are final by now.

    A transaction stored with C{contentPending} (its envelope and content
    were synced at the same time) whose content is missing, shorter than
    its envelope says or, written over a removed content
    (L{smx.queue.cdb}), not the one whose CRC-32 its envelope gives
    (C{contentCrc}), and to whose recipients nothing happened yet, was
    never acknowledged with 250: it is dropped (and a partial content file
    removed).  Any other transaction whose content is missing from CDB is
    reported and held;
    an empty CDB file without an envelope (made ahead for a transaction
    that never ended), or one beginning with the C{Received:} header of
    another transaction (a recycled file whose writer died before
    writing to it), is removed; any other CDB file without an envelope
    is reported and left alone (C{smx recover-from-log} can rebuild its
    envelope from the logs, §6.10.2).

CONFIGURATION PARAMETERS
    None of its own.

SECURITY
    None.

DIAGNOSTICS
    Each problem (a damaged IBDB record, a damaged DEFEDB record, a
    missing content file, an orphaned content file) is reported once
    through C{report}.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Set, Union

from smx.interfaces import IContentStore
from smx.mail.received import receivedId
from smx.queue import ibdb
from smx.queue.defedb import CheckpointedDEFEDB, DeferredEnvelopeDB
from smx.queue.envelope import FINAL, Recipient, Transaction


class RecoveryResult:
    def __init__(self) -> None:
        self.transactions = {}  # type: Dict[str, Transaction]
        self.orphans = []  # type: List[str]
        self.missing = []  # type: List[str]
        self.unacknowledged = []  # type: List[str]
        self.finished = set()  # type: Set[str]
        self.staleDefedb = []  # type: List[tuple]
        self.fromDefedb = 0


def recoverQueue(
    ibdbDirectory: str,
    defedb: Optional[Union[DeferredEnvelopeDB, CheckpointedDEFEDB]],
    contentStore: IContentStore,
    report: Callable[[str], None],
    defedbComplete: bool = True,
) -> RecoveryResult:
    """
    Rebuild the queue; see the module documentation.

    @param defedb: an open L{smx.queue.defedb.DeferredEnvelopeDB} (or what
        has its C{loadAll}), or C{None} if it could not be opened.
    @param defedbComplete: does C{defedb} hold every change (QMGR's
        recovery), or only the checkpointed ones (C{mailq})?
    """
    result = RecoveryResult()
    records = {}  # type: Dict[str, Dict[str, Any]]
    for rtype, payload in ibdb.readLog(ibdbDirectory, report):
        try:
            taId = payload["id"]
            if rtype == ibdb.TRANSACTION:
                records[taId] = {
                    "envelope": payload,
                    "states": {
                        int(r.get("index", i)): r.get("state") or "queued"
                        for i, r in enumerate(payload.get("recipients") or [])
                    },
                }
                result.finished.discard(taId)
            elif rtype == ibdb.RECIPIENTS:
                entry = records.get(taId)
                if entry is not None:
                    for index, state in payload.get("rcpts") or []:
                        entry["states"][int(index)] = state
            elif rtype == ibdb.DONE:
                records.pop(taId, None)
                result.finished.add(taId)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            report(
                "IBDB %s: malformed %r record skipped: %s" % (ibdbDirectory, rtype, e)
            )
    defedbRecipients = {}  # type: Dict[str, tuple]
    if defedb is not None:
        for envelope, rcpts in defedb.loadAll():
            taId = envelope.get("id")
            if not taId:
                continue
            if taId in result.finished:
                result.staleDefedb.append((taId, [r["index"] for r in rcpts]))
                continue
            defedbRecipients[taId] = (envelope, rcpts)
            result.fromDefedb += len(rcpts)
    for taId, entry in records.items():
        try:
            ta = Transaction.fromEnvelope(entry["envelope"])
        except (KeyError, TypeError, ValueError) as e:
            report("IBDB: transaction %s cannot be rebuilt: %s" % (taId, e))
            continue
        stored = {}  # type: Dict[int, Dict[str, Any]]
        if taId in defedbRecipients:
            stored = {r["index"]: r for r in defedbRecipients.pop(taId)[1]}
        for index, r in list(ta.recipients.items()):
            state = entry["states"].get(index, "queued")
            if index in stored:
                _fromDefedb(ta, stored.pop(index))
            elif state in FINAL:
                r.state = state
            elif state == "deferred" and defedb is not None and defedbComplete:
                r.state = "delivered"  # finished while in DEFEDB
            elif state == "deferred" and defedb is not None:
                r.state = "deferred"  # not checkpointed yet
            else:
                r.state = "queued"
        for data in stored.values():
            _fromDefedb(ta, data)
        _keep(result, ta)
    for taId, (envelope, rcpts) in defedbRecipients.items():
        try:
            ta = Transaction(envelope)
        except (KeyError, TypeError, ValueError) as e:
            report("DEFEDB: transaction %s cannot be rebuilt: %s" % (taId, e))
            continue
        for data in rcpts:
            _fromDefedb(ta, data)
        _keep(result, ta)
    known = set(result.transactions) | result.finished
    for taId, ta in list(result.transactions.items()):
        exists = getattr(contentStore, "exists", None)
        present = exists(taId) if exists else taId in contentStore.transactionIds()
        if _unacknowledged(ta, present, contentStore):
            # stored while its content was being synced, and the crash
            # came before the content was complete: SMTPS never said 250
            del result.transactions[taId]
            result.finished.add(taId)
            result.unacknowledged.append(taId)
            report(
                "CDB %s: content of transaction %s was not complete when smx "
                "stopped; it was never acknowledged and is dropped"
                % (contentStore.path(taId), taId)
            )
            continue
        if not present:
            result.missing.append(taId)
            report(
                "CDB %s: content of queued transaction %s is missing; held"
                % (contentStore.path(taId), taId)
            )
            for r in ta.live():
                r.state = "held"
                r.reply = "content missing"
    for taId in contentStore.transactionIds():
        if taId not in known:
            if _empty(contentStore, taId) or _anotherMessage(contentStore, taId):
                # made ahead for a transaction that never got to its
                # final dot (ContentWriter), or a recycled file its writer
                # never wrote to (what it holds names another
                # transaction): nothing to recover
                result.finished.add(taId)
                continue
            result.orphans.append(taId)
            report(
                "CDB %s: no envelope for this content; not removed (see smx "
                "recover-from-log)" % (contentStore.path(taId),)
            )
    return result


class MergeResult:
    """
    @ivar adopted: transactions only DEFEDB had (to be queued).
    @ivar added: C{(transaction, recipients)}: recipients DEFEDB had that
        a queued transaction did not (to be scheduled).
    @ivar marked: how many queued recipients are now known to be in
        DEFEDB.
    @ivar stale: C{(transaction id, indices)} of DEFEDB records of
        recipients that are final (to be removed).
    @ivar missing: ids of adopted transactions whose content is missing
        (held).
    """

    def __init__(self) -> None:
        self.adopted = []  # type: List[Transaction]
        self.added = []  # type: List[tuple]
        self.marked = 0
        self.stale = []  # type: List[tuple]
        self.missing = []  # type: List[str]


def mergeDefedb(
    records: List[tuple],
    transactions: Dict[str, Transaction],
    finished: Set[str],
    contentStore: IContentStore,
    report: Callable[[str], None],
) -> MergeResult:
    """
    Bring what DEFEDB holds into a queue rebuilt without it (DEFEDB could
    not be opened at the start).  The queue in memory is not changed
    except for the C{inDefedb} marks and recipients it did not have; the
    caller queues what the result lists.

    @param records: C{defedb.loadAll()}.
    @param transactions: the queued transactions, id -> L{Transaction}.
    @param finished: ids of transactions known to be finished.
    """
    result = MergeResult()
    for envelope, rcpts in records:
        taId = envelope.get("id")
        if not taId:
            continue
        ta = transactions.get(taId)
        if ta is None:
            indices = [r["index"] for r in rcpts]
            if taId in finished:
                result.stale.append((taId, indices))
                continue
            try:
                ta = Transaction(envelope)
            except (KeyError, TypeError, ValueError) as e:
                report("DEFEDB: transaction %s cannot be rebuilt: %s" % (taId, e))
                continue
            for data in rcpts:
                _fromDefedb(ta, data)
            if ta.isDone():
                result.stale.append((taId, indices))
                continue
            exists = getattr(contentStore, "exists", None)
            present = exists(taId) if exists else taId in contentStore.transactionIds()
            if not present:
                result.missing.append(taId)
                report(
                    "CDB %s: content of queued transaction %s is missing; held"
                    % (contentStore.path(taId), taId)
                )
                for r in ta.live():
                    r.state = "held"
                    r.reply = "content missing"
            result.adopted.append(ta)
            continue
        gone = []  # type: List[int]
        added = []  # type: List[Recipient]
        for data in rcpts:
            index = data["index"]
            known = ta.recipients.get(index)
            if known is None:
                _fromDefedb(ta, data)
                added.append(ta.recipients[index])
            elif known.final:
                gone.append(index)
            else:
                known.inDefedb = True
                known.tries = max(known.tries, int(data.get("tries") or 0))
                result.marked += 1
        if gone:
            result.stale.append((taId, gone))
        if added:
            result.added.append((ta, added))
    return result


def _ask(contentStore: IContentStore, what: str, taId: str) -> Optional[int]:
    """
    The C{size} or C{crc} of the content of C{taId}, C{None} if it cannot
    be read (neither is part of IContentStore: a store without them
    answers C{None}).
    """
    try:
        return int(getattr(contentStore, what)(taId))
    except (KeyError, OSError, AttributeError):
        return None


def _size(contentStore: IContentStore, taId: str) -> Optional[int]:
    return _ask(contentStore, "size", taId)


def _empty(contentStore: IContentStore, taId: str) -> bool:
    return _size(contentStore, taId) == 0


def _anotherMessage(contentStore: IContentStore, taId: str) -> bool:
    """
    Does the content stored under C{taId} begin with the C{Received:}
    header smx wrote for another transaction?  Then it is a removed
    content whose file a writer took for C{taId} (L{smx.queue.cdb}) and
    died before writing to it.
    """
    try:
        with contentStore.open(taId) as f:
            head = f.read(2048)
    except (KeyError, OSError):
        return False
    found = receivedId(head)
    return found is not None and found != taId


def _unacknowledged(
    ta: Transaction, present: bool, contentStore: IContentStore
) -> bool:
    """
    Was C{ta} stored with C{contentPending} and its content never
    completed?  Only while nothing happened to any recipient: a delivery
    attempt means the content had been committed.
    """
    if not ta.contentPending:
        return False
    if any(
        r.state != "queued" or r.tries or r.inDefedb for r in ta.recipients.values()
    ):
        return False
    if not present or _size(contentStore, ta.id) != ta.size:
        return True
    if ta.contentCrc is None:
        return False
    # not the content written (unreadable: kept, and reported if missing)
    crc = _ask(contentStore, "crc", ta.id)
    return crc is not None and crc != ta.contentCrc


def _fromDefedb(ta: Transaction, data: Dict[str, Any]) -> None:
    r = Recipient.fromDict(data)
    if r.state not in ("held",):
        r.state = "deferred"
    r.inDefedb = True
    ta.recipients[r.index] = r


def _keep(result: RecoveryResult, ta: Transaction) -> None:
    if ta.isDone():
        result.finished.add(ta.id)
    else:
        result.transactions[ta.id] = ta
