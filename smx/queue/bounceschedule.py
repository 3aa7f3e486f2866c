# -*- test-case-name: smx.queue.test.test_scheduler -*-
"""
NAME
    smx.queue.bounceschedule - when bounces and delay warnings are sent

SYNOPSIS
    bounces = BounceSchedule(clock, store, bouncer, logger, dsnMaxDelay=60,
                             queuedelayTimeout=4h, queuereturnTimeout=5d,
                             retryDelay=300)
    bounces.add(transaction, recipients)       # state "bouncing"
    bounces.send(transaction)                  # now
    bounces.warn(transaction, recipients, now) # deferred ones, once
    bounces.stop()

DESCRIPTION
    Permanent failures, and temporary ones past C{queuereturn_timeout},
    are returned to the sender in one bounce per transaction (RFC 3464,
    built and queued by L{smx.queue.bounce.Bouncer}).  While other
    recipients of the transaction are still queued or being delivered,
    its failures are collected for at most C{DSN_max_delay} seconds so
    that they share one bounce; with none busy (or C{DSN_max_delay} 0) the
    bounce goes at once.  A recipient becomes final (C{failed}) only once
    its bounce is on stable storage; a bounce that cannot be queued is
    tried again after C{retry_min_delay}.

    A recipient still deferred C{queuedelay_timeout} after its
    transaction arrived gets one delay warning (C{warned} is then stored
    with it in DEFEDB); none are sent if C{queuedelay_timeout} is not
    below C{queuereturn_timeout}.

    The recipient's DSN C{NOTIFY=} (RFC 3461 §4.1) decides which reports
    it gets: none with C{NEVER}; a bounce only with C{FAILURE}, a delay
    warning only with C{DELAY}, a success notice (L{BounceSchedule.
    success}) only with C{SUCCESS}.  Without C{NOTIFY} it gets bounces
    and delay warnings, as before.  A recipient whose failure is not
    reported becomes C{failed} at once (logged with C{dsn=none}).

CONFIGURATION PARAMETERS
    DSN_max_delay, queuedelay_timeout, queuereturn_timeout,
    retry_min_delay (the retry of a bounce that could not be queued)

SECURITY
    Reports go only to the envelope sender (L{smx.queue.bounce}).

DIAGNOSTICS
    A bounce or warning that cannot be queued is logged with C{sev=ERR}
    and C{BounceSchedule.send} or C{BounceSchedule.warn}.
"""

from __future__ import annotations

from typing import List

from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from smx.log import Logger
from smx.queue import debug as dbg
from smx.queue.bounce import Bouncer
from smx.queue.envelope import FailureData, Recipient, Transaction, wants
from smx.queue.store import QueueStore


class BounceSchedule:
    """
    Bounces and delay warnings, per transaction.

    @ivar failed: number of recipients whose bounce was queued.
    """

    def __init__(
        self,
        clock: IReactorTime,
        store: QueueStore,
        bouncer: Bouncer,
        logger: Logger,
        dsnMaxDelay: float,
        queuedelayTimeout: float,
        queuereturnTimeout: float,
        retryDelay: float,
    ) -> None:
        """
        @param store: a L{smx.queue.store.QueueStore} (C{transactions},
            C{update}, C{finish}).
        @param bouncer: a L{smx.queue.bounce.Bouncer}.
        @param retryDelay: seconds before a bounce that could not be queued
            is tried again.
        """
        self.clock = clock
        self.store = store
        self.bouncer = bouncer
        self.logger = logger
        self.dsnMaxDelay = dsnMaxDelay
        self.queuedelayTimeout = queuedelayTimeout
        self.queuereturnTimeout = queuereturnTimeout
        self.retryDelay = retryDelay
        self.running = True
        self.failed = 0

    def add(self, ta: Transaction, rcpts: List[Recipient]) -> None:
        """
        Recipients of C{ta} (state C{bouncing}, their C{failures} set) are
        to be bounced: now if nothing else of C{ta} is queued or active,
        else within C{DSN_max_delay}.
        """
        ta.pendingFailures.extend(rcpts)
        busy = any(r.state in ("queued", "active") for r in ta.recipients.values())
        if not busy or self.dsnMaxDelay <= 0:
            self.send(ta)
        elif ta.bounceTimer is None or not ta.bounceTimer.active():
            ta.bounceTimer = self.clock.callLater(self.dsnMaxDelay, self.send, ta)

    def send(self, ta: Transaction) -> None:
        """
        Queue one bounce for every pending failure of C{ta}; the recipients
        become final once it is on stable storage.
        """
        if ta.bounceTimer is not None and ta.bounceTimer.active():
            ta.bounceTimer.cancel()
        ta.bounceTimer = None
        rcpts = [r for r in ta.pendingFailures if r.state == "bouncing"]
        ta.pendingFailures = []
        if not rcpts:
            return
        failures = []  # type: List[FailureData]
        for r in rcpts:
            if wants(r, "FAILURE"):
                failures.extend(r.failures)
        if len(failures) < sum(len(r.failures) for r in rcpts):
            self.logger.info(
                ss_ta=ta.id,
                dsn="none",
                rcpts=len([r for r in rcpts if not wants(r, "FAILURE")]),
            )
        dbg.debug(self.logger, dbg.DSN, 1, ss_ta=ta.id, dsn="failed", rcpts=len(rcpts))
        d = self.bouncer.report("failed", ta, failures)

        def _cbBounced(_: object) -> None:
            for r in rcpts:
                r.state = "failed"
            self.failed += len(rcpts)
            self.store.finish(ta, rcpts)

        def _ebBounced(failure: Failure) -> None:
            self.logger.error(
                "BounceSchedule.send", ss_ta=ta.id, error=str(failure.value)
            )
            ta.pendingFailures.extend(rcpts)
            if self.running:
                ta.bounceTimer = self.clock.callLater(self.retryDelay, self.send, ta)

        d.addCallbacks(_cbBounced, _ebBounced)

    def warn(self, ta: Transaction, rcpts: List[Recipient], now: float) -> None:
        """
        Send a delay warning for the deferred C{rcpts} of C{ta} that have
        none yet, if C{queuedelay_timeout} has passed.
        """
        if (
            self.queuedelayTimeout >= self.queuereturnTimeout
            or now - ta.received < self.queuedelayTimeout
        ):
            return
        late = [r for r in rcpts if not r.warned]
        if not late:
            return
        for r in late:
            r.warned = True
        self.store.update(ta, late)
        late = [r for r in late if wants(r, "DELAY")]
        if not late:
            return
        dbg.debug(self.logger, dbg.DSN, 1, ss_ta=ta.id, dsn="delayed", rcpts=len(late))
        d = self.bouncer.report("delayed", ta, [r.failureInfo() for r in late])
        d.addErrback(
            lambda f: self.logger.error(
                "BounceSchedule.warn", ss_ta=ta.id, error=str(f.value)
            )
        )

    def success(self, ta: Transaction, notices: List[FailureData]) -> None:
        """
        Send a success notice (RFC 3464 C{Action: delivered} or
        C{relayed}) for C{notices}: the result C{dict}s of the delivered
        addresses of recipients that asked for one (C{NOTIFY=SUCCESS}).
        """
        if not notices:
            return
        dbg.debug(
            self.logger, dbg.DSN, 1, ss_ta=ta.id, dsn="success", rcpts=len(notices)
        )
        d = self.bouncer.report("success", ta, notices)
        d.addErrback(
            lambda f: self.logger.error(
                "BounceSchedule.success", ss_ta=ta.id, error=str(f.value)
            )
        )

    def stop(self) -> None:
        """Cancel the bounce timers (the failures stay for a restart)."""
        self.running = False
        for ta in self.store.transactions.values():
            if ta.bounceTimer is not None and ta.bounceTimer.active():
                ta.bounceTimer.cancel()
