# -*- test-case-name: smx.queue.test.test_scheduler,smx.queue.test.test_qmgr -*-
"""
NAME
    smx.queue.scheduler - the scheduler of QMGR: IQDB, AQ, retries and
    bounces together

SYNOPSIS
    s = Scheduler(clock, store, resolver, agent, bouncer, slowStart, logger,
                  idGenerator, queueSettings)
    s.enqueue(transaction, recipients)   # IQDB -> AQ now
    s.retryAt(transaction, recipient)    # DEFEDB -> AQ when due
    s.flush()                            # every deferred recipient now
    s.stop()

DESCRIPTION
    The scheduler only coordinates; each queue and each timing has its
    own module, in the manner of Postfix's qmgr:

        - L{smx.queue.iqdb}: IQDB, the recipients waiting for room in AQ;
        - L{smx.queue.active}: AQ (at most C{AQ_max_entries} recipients),
          where recipients are resolved by SMAR, grouped by sender and
          routes into delivery transactions and delivered by SMTPC;
        - L{smx.queue.destinations}: the delivery transactions waiting
          for a slow-start slot of their destination (seed §5.7.1);
        - L{smx.queue.retry}: the next-time-to-try of deferred recipients
          (C{retry_min_delay} doubled per attempt up to
          C{retry_max_delay}, until C{queuereturn_timeout});
        - L{smx.queue.bounceschedule}: bounces, collected per transaction
          for at most C{DSN_max_delay}, and the delay warning after
          C{queuedelay_timeout}.

    Recipients go from IQDB to AQ whenever AQ has room: when they are
    queued, and whenever an attempt ends.  When the recipients of an
    attempt leave AQ the scheduler decides what each becomes: deleted
    (a delete was requested meanwhile), deferred (a temporary failure
    before C{queuereturn_timeout}: stored in DEFEDB, retried at its
    next-time-to-try, perhaps a delay warning), bouncing (a permanent
    failure, or a temporary one too late), or delivered.

CONFIGURATION PARAMETERS
    AQ_max_entries, SMAR_timeout, delivery_timeout, retry_min_delay,
    retry_max_delay, queuereturn_timeout, queuedelay_timeout, DSN_max_delay,
    wait_for_server

SECURITY
    None.

DIAGNOSTICS
    Every attempt is logged (C{ss_ta}, C{da_ta}, C{rcpt}, C{stat},
    C{reply}); unexpected failures with C{sev=ERR} and the function name.
    Debug category 6 (C{qmgr -x 6.1}, C{6.2}) shows the deferrals.
"""

from __future__ import annotations

from typing import Callable, Deque, List, Optional, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from smx.interfaces import IAddressResolver, IDeliveryAgent
from smx.log import Logger
from smx.queue import debug as dbg
from smx.queue.active import OK, PERM, TEMP, ActiveQueue, TempFailure
from smx.queue.bounce import Bouncer
from smx.queue.bounceschedule import BounceSchedule
from smx.queue.connections import SlowStart
from smx.queue.destinations import DestinationQueues
from smx.queue.envelope import Recipient, Transaction
from smx.queue.iqdb import WaitingQueue
from smx.queue.retry import RetrySchedule
from smx.queue.settings import QueueSettings
from smx.queue.store import QueueStore

__all__ = ["OK", "PERM", "TEMP", "Scheduler"]


class Scheduler:
    """
    The coordinator of IQDB, AQ, retries and bounces.

    @ivar waiting: IQDB, the L{WaitingQueue}.
    @ivar activeQueue: AQ, the L{ActiveQueue}.
    @ivar destinations: the L{DestinationQueues} (slow start).
    @ivar retries: the L{RetrySchedule}.
    @ivar bounces: the L{BounceSchedule}.
    @ivar delivered: number of recipients delivered.
    @ivar deferred: number of deferrals.
    """

    def __init__(
        self,
        clock: IReactorTime,
        store: QueueStore,
        resolver: IAddressResolver,
        agent: IDeliveryAgent,
        bouncer: Bouncer,
        slowStart: SlowStart,
        logger: Logger,
        nextDeliveryId: Callable[[], str],
        settings: QueueSettings,
    ) -> None:
        """
        @param store: the L{smx.queue.store.QueueStore}.
        @param resolver: an L{smx.interfaces.IAddressResolver} (SMAR).
        @param agent: an L{smx.interfaces.IDeliveryAgent} (SMTPC).
        @param bouncer: the L{smx.queue.bounce.Bouncer}.
        @param slowStart: the L{smx.queue.connections.SlowStart}.
        @param nextDeliveryId: returns a new delivery transaction id.
        @param settings: the L{smx.queue.settings.QueueSettings}.
        """
        s = settings
        self.clock = clock
        self.store = store
        self.logger = logger
        self.running = True
        self.delivered = 0
        self.deferred = 0
        self.waiting = WaitingQueue()
        self.destinations = DestinationQueues(clock, slowStart, s.waitForServer)
        self.destinations.onRoom = self._retryParked
        self.activeQueue = ActiveQueue(
            clock,
            resolver,
            agent,
            self.destinations,
            logger,
            nextDeliveryId,
            self._attemptDone,
            maxEntries=s.aqMaxEntries,
            smarTimeout=s.smarTimeout,
            deliveryTimeout=s.deliveryTimeout,
        )
        self.retries = RetrySchedule(
            clock,
            store,
            self.enqueue,
            retryMinDelay=s.retryMinDelay,
            retryMaxDelay=s.retryMaxDelay,
            queuereturnTimeout=s.queuereturnTimeout,
        )
        self.bounces = BounceSchedule(
            clock,
            store,
            bouncer,
            logger,
            dsnMaxDelay=s.dsnMaxDelay,
            queuedelayTimeout=s.queuedelayTimeout,
            queuereturnTimeout=s.queuereturnTimeout,
            retryDelay=s.retryMinDelay,
        )

    # -- what QMGR reads -----------------------------------------------------

    @property
    def ready(self) -> Deque[Tuple[Transaction, Recipient]]:
        """IQDB's entries (see L{WaitingQueue.entries})."""
        return self.waiting.entries

    @property
    def active(self) -> int:
        """Number of recipients in AQ."""
        return self.activeQueue.count

    @property
    def aqMaxEntries(self) -> int:
        """The most recipients in AQ (C{AQ_max_entries})."""
        return self.activeQueue.maxEntries

    @aqMaxEntries.setter
    def aqMaxEntries(self, value: int) -> None:
        self.activeQueue.maxEntries = max(1, value)

    @property
    def deliveries(self) -> int:
        """Number of delivery transactions started."""
        return self.activeQueue.deliveries

    @property
    def failed(self) -> int:
        """Number of recipients bounced."""
        return self.bounces.failed

    def queuedCount(self) -> int:
        """Recipients waiting for AQ."""
        return self.waiting.count()

    def iqdbFull(self, limit: int) -> bool:
        """Are at least C{limit} recipients waiting for AQ?"""
        return self.waiting.reaches(limit)

    def retryDelay(self, tries: int) -> float:
        """See L{RetrySchedule.retryDelay}."""
        return self.retries.retryDelay(tries)

    # -- IQDB -> AQ ----------------------------------------------------------

    def enqueue(self, ta: Transaction, rcpts: List[Recipient]) -> None:
        """
        Recipients are ready for delivery now.
        """
        self.waiting.add(ta, rcpts)
        self.pump()

    def pump(self) -> None:
        """
        Move ready recipients into AQ while there is room, grouped by
        transaction.
        """
        if not self.running:
            return
        groups = self.waiting.take(self.activeQueue.room())
        if groups:
            self.activeQueue.create(groups)

    # -- DEFEDB -> AQ --------------------------------------------------------

    def retryAt(self, ta: Transaction, r: Recipient) -> None:
        """
        Schedule a deferred recipient for its C{nextTry}.
        """
        self.retries.retryAt(ta, r)

    def flush(self, ta: Optional[Transaction] = None) -> int:
        """
        Retry deferred recipients (of C{ta}, or all) now.

        @return: the number of recipients requeued.
        """
        return self.retries.flush(ta)

    def _retryParked(self, entries: List[Tuple[str, str, int, str]]) -> None:
        """
        Try again now the recipients whose wait for a slot of their
        destination expired (L{DestinationQueues.park}), the destination
        having room: those still deferred with that reply.  One whose
        transaction is still in AQ (another of its destinations is being
        delivered) is parked again.
        """
        now = self.clock.seconds()
        for dest, taId, index, reply in entries:
            ta = self.store.transactions.get(taId)
            r = ta.recipients.get(index) if ta is not None else None
            if ta is None or r is None:
                continue
            if r.state == "active":
                self.destinations.park(dest, [(dest, taId, index, reply)])
            elif r.state == "deferred" and r.reply == reply and r.nextTry > now:
                r.nextTry = now
                try:
                    self.retries.retryAt(ta, r)
                except Exception:
                    # called from the end of a delivery, which must go on
                    self.logger.failure("Scheduler.retryParked", Failure(), ss_ta=taId)

    def sendBounce(self, ta: Transaction) -> None:
        """
        Queue the bounce of C{ta}'s pending failures now (see
        L{BounceSchedule.send}).
        """
        self.bounces.send(ta)

    # -- AQ -> final, DEFEDB or bounce ---------------------------------------

    def _attemptDone(
        self, ta: Transaction, left: List[Tuple[Recipient, TempFailure]], now: float
    ) -> None:
        final = []  # type: List[Recipient]
        deferred = []  # type: List[Recipient]
        bounced = []  # type: List[Recipient]
        for r, temp in left:
            if r.deleteRequested:
                r.state = "deleted"
                final.append(r)
            elif temp is not None and not self.retries.expired(ta, now):
                r.state = "deferred"
                r.nextTry = now + self.retries.retryDelay(r.tries)
                deferred.append(r)
                if self.logger.debugLevels is not None:
                    dbg.debug(
                        self.logger,
                        dbg.DEFEDB,
                        2,
                        ss_ta=ta.id,
                        idx=r.index,
                        tries=r.tries,
                        next=int(r.nextTry - now),
                    )
            elif temp is not None:
                address, res = temp
                r.failures.append(dict(res, address=address, lastAttempt=now))
                r.state = "bouncing"
                bounced.append(r)
            elif r.failures:
                r.state = "bouncing"
                bounced.append(r)
            else:
                r.state = "delivered"
                self.delivered += 1
                final.append(r)
        if deferred:
            if self.logger.debugLevels is not None:
                dbg.debug(
                    self.logger, dbg.DEFEDB, 1, ss_ta=ta.id, deferred=len(deferred)
                )
            self.deferred += len(deferred)
            self.store.defer(ta, deferred, group=True)
            for r in deferred:
                self.retries.retryAt(ta, r)
            self.bounces.warn(ta, deferred, now)
        if bounced:
            self.bounces.add(ta, bounced)
        notices, ta.successNotices = ta.successNotices, []
        self.bounces.success(ta, notices)
        self.store.finish(ta, final)
        self.pump()

    def stop(self) -> None:
        """Stop scheduling: cancel timers (state stays for a restart)."""
        self.running = False
        self.retries.stop()
        self.destinations.stop()
        self.bounces.stop()
