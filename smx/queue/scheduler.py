# -*- test-case-name: smx.queue.test.test_qmgr -*-
"""
NAME
    smx.queue.scheduler - AQ and the scheduler of QMGR

SYNOPSIS
    s = Scheduler(clock, store, resolver, agent, bouncer, slowStart, logger,
                  idGenerator, aqMaxEntries=..., retryMinDelay=..., ...)
    s.enqueue(transaction, recipients)   # IQDB -> AQ now
    s.retryAt(transaction, recipient)    # DEFEDB -> AQ when due

DESCRIPTION
    Recipients wait in IQDB (the C{ready} queue) until AQ has room (at most
    C{AQ_max_entries} recipients are active).  An active recipient is
    resolved by SMAR (C{resolveRecipient}: aliases, mailertable, MX),
    and the recipients of one transaction that share their routes and
    sender become one delivery transaction for the delivery agent (SMTPC).

    Slow start (seed §5.7.1) limits the concurrent deliveries to the first
    route's address; a delivery transaction waits for a slot at most
    C{wait_for_server} seconds, then counts as a temporary failure.  A
    delivery agent that gives no result within C{delivery_timeout} counts
    as a temporary failure too.

    Temporary failures are retried after C{retry_min_delay}, doubled per
    attempt up to C{retry_max_delay}, until C{queuereturn_timeout} after
    arrival, when they bounce; after C{queuedelay_timeout} the sender gets
    one delay warning.  Permanent failures are collected per transaction
    for at most C{DSN_max_delay} and bounced together.

CONFIGURATION PARAMETERS
    AQ_max_entries, SMAR_timeout, delivery_timeout, retry_min_delay,
    retry_max_delay, queuereturn_timeout, queuedelay_timeout, DSN_max_delay,
    wait_for_server

SECURITY
    None.

DIAGNOSTICS
    Every attempt is logged (C{ss_ta}, C{da_ta}, C{rcpt}, C{stat},
    C{reply}); unexpected failures with C{sev=ERR} and the function name.
"""

from __future__ import annotations

import collections
import heapq
from typing import Any, Deque, Dict, List, Optional, Tuple

from twisted.internet import defer

from smx.fastdefer import settled
from smx.queue import debug as dbg
from smx.queue.envelope import Recipient, Transaction

TEMP = "temp"
PERM = "perm"
OK = "ok"


def _reply(code: int, dsnCode: str, text: str) -> Dict[str, Any]:
    return {"code": code, "dsn": dsnCode, "text": text}


class _Attempt:
    """One delivery attempt of some recipients of one transaction."""

    def __init__(self, ta: Transaction, rcpts: List[Recipient]) -> None:
        self.ta = ta
        self.rcpts = rcpts
        # recipient index -> list of (expanded address, result dict)
        self.outcomes = {
            r.index: [] for r in rcpts
        }  # type: Dict[int, List[Tuple[str, Dict[str, Any]]]]
        self.pending = 0


class Scheduler:
    """
    @ivar ready: recipients waiting for room in AQ.
    @ivar active: number of recipients in AQ.
    @ivar deliveries: number of delivery transactions started.
    """

    def __init__(
        self,
        clock: Any,
        store: Any,
        resolver: Any,
        agent: Any,
        bouncer: Any,
        slowStart: Any,
        logger: Any,
        nextDeliveryId: Any,
        aqMaxEntries: int = 1000,
        smarTimeout: float = 60.0,
        deliveryTimeout: float = 3600.0,
        retryMinDelay: float = 300.0,
        retryMaxDelay: float = 14400.0,
        queuereturnTimeout: float = 5 * 86400.0,
        queuedelayTimeout: float = 4 * 3600.0,
        dsnMaxDelay: float = 60.0,
        waitForServer: float = 60.0,
    ) -> None:
        self.clock = clock
        self.store = store
        self.resolver = resolver
        self.agent = agent
        self.bouncer = bouncer
        self.slowStart = slowStart
        self.logger = logger
        self.nextDeliveryId = nextDeliveryId
        self.aqMaxEntries = max(1, aqMaxEntries)
        self.smarTimeout = smarTimeout
        self.deliveryTimeout = deliveryTimeout
        self.retryMinDelay = retryMinDelay
        self.retryMaxDelay = max(retryMinDelay, retryMaxDelay)
        self.queuereturnTimeout = queuereturnTimeout
        self.queuedelayTimeout = queuedelayTimeout
        self.dsnMaxDelay = dsnMaxDelay
        self.waitForServer = waitForServer
        self.ready = collections.deque()  # type: Deque[Tuple[Transaction, Recipient]]
        self.active = 0
        self.deliveries = 0
        self.delivered = 0
        self.failed = 0
        self.deferred = 0
        self._heap = []  # type: List[Tuple[float, str, int]]
        self._timer = None  # type: Any
        self._waiting = {}  # type: Dict[str, Deque[List[Any]]]
        self.running = True

    # -- IQDB -> AQ -------------------------------------------------------

    def enqueue(self, ta: Transaction, rcpts: List[Recipient]) -> None:
        """
        Recipients are ready for delivery now.
        """
        for r in rcpts:
            r.state = "queued"
            self.ready.append((ta, r))
        self.pump()

    def pump(self) -> None:
        """
        Move ready recipients into AQ while there is room, grouped by
        transaction.
        """
        if not self.running:
            return
        groups = (
            collections.OrderedDict()
        )  # type: Dict[str, Tuple[Transaction, List[Recipient]]]
        while self.ready and self.active < self.aqMaxEntries:
            ta, r = self.ready.popleft()
            if r.state != "queued" or ta.finished:
                continue
            r.state = "active"
            self.active += 1
            groups.setdefault(ta.id, (ta, []))[1].append(r)
        for ta, rcpts in groups.values():
            self._startAttempt(ta, rcpts)

    def queuedCount(self) -> int:
        """Recipients waiting for AQ."""
        return sum(1 for _, r in self.ready if r.state == "queued")

    # -- DEFEDB -> AQ -----------------------------------------------------

    def retryAt(self, ta: Transaction, r: Recipient) -> None:
        """
        Schedule a deferred recipient for its C{nextTry}.
        """
        heapq.heappush(self._heap, (r.nextTry, ta.id, r.index))
        self._arm()

    def _arm(self) -> None:
        if not self._heap or not self.running:
            return
        when = self._heap[0][0]
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= when:
                return
            self._timer.cancel()
        delay = max(0.0, when - self.clock.seconds())
        self._timer = self.clock.callLater(delay, self._runDue)

    def _runDue(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        due = (
            collections.OrderedDict()
        )  # type: Dict[str, Tuple[Transaction, List[Recipient]]]
        while self._heap and self._heap[0][0] <= now:
            _, taId, index = heapq.heappop(self._heap)
            ta = self.store.transactions.get(taId)
            if ta is None:
                continue
            r = ta.recipients.get(index)
            if r is None or r.state != "deferred" or r.nextTry > now:
                continue
            due.setdefault(taId, (ta, []))[1].append(r)
        for ta, rcpts in due.values():
            self.enqueue(ta, rcpts)
        self._arm()

    def flush(self, ta: Optional[Transaction] = None) -> int:
        """
        Retry deferred recipients (of C{ta}, or all) now.

        @return: the number of recipients requeued.
        """
        now = self.clock.seconds()
        tas = [ta] if ta is not None else list(self.store.transactions.values())
        n = 0
        for t in tas:
            for r in t.recipients.values():
                if r.state == "deferred":
                    r.nextTry = now
                    self.retryAt(t, r)
                    n += 1
        return n

    # -- one attempt ------------------------------------------------------

    def _startAttempt(self, ta: Transaction, rcpts: List[Recipient]) -> None:
        attempt = _Attempt(ta, rcpts)
        dbg.debug(self.logger, dbg.SCHED, 1, ss_ta=ta.id, attempt=len(rcpts))
        ds = []
        for r in rcpts:
            d = defer.maybeDeferred(self.resolver.resolveRecipient, r.address)
            if self.smarTimeout and not d.called:
                d.addTimeout(self.smarTimeout, self.clock)
            ds.append(d)
        dl = settled(ds)
        dl.addCallback(self._cbResolved, attempt)
        dl.addErrback(self._ebAttempt, attempt)

    def _cbResolved(self, results: List[Tuple[bool, Any]], attempt: _Attempt) -> None:
        groups = collections.OrderedDict()  # type: Dict[Any, Dict[str, Any]]
        for r, (ok, value) in zip(attempt.rcpts, results):
            if not ok:
                self.logger.error(
                    "Scheduler.resolve",
                    ss_ta=attempt.ta.id,
                    rcpt=r.address,
                    error=str(value.value),
                )
                self._record(
                    attempt,
                    r,
                    r.address,
                    TEMP,
                    451,
                    "451 4.4.3 address resolver failed",
                    None,
                    "resolve",
                )
                continue
            for item in value or []:
                address = item.get("address") or r.address
                if address in r.done:
                    continue
                error = item.get("error")  # type: Optional[Dict[str, Any]]
                routes = item.get("routes") or []
                if error is not None or not routes:
                    if error is None:
                        error = _reply(554, "5.4.4", "no route to host")
                    code = int(error.get("code") or 554)
                    text = "%d %s %s" % (code, error.get("dsn") or "", error["text"])
                    status = PERM if code >= 500 else TEMP
                    self._record(
                        attempt, r, address, status, code, text, None, "resolve"
                    )
                    continue
                sender = item.get("sender") or attempt.ta.sender
                key = (
                    sender,
                    tuple(
                        (
                            x.get("mailer"),
                            x.get("host"),
                            x.get("address"),
                            x.get("port"),
                        )
                        for x in routes
                    ),
                )
                dbg.debug(
                    self.logger,
                    dbg.SMAR,
                    2,
                    ss_ta=attempt.ta.id,
                    rcpt="<%s>" % (address,),
                    route=" ".join(
                        "%s:%s" % (x.get("mailer"), x.get("address") or x.get("host"))
                        for x in routes
                    ),
                )
                group = groups.setdefault(
                    key, {"sender": sender, "routes": routes, "members": []}
                )
                group["members"].append((r, address))
        attempt.pending = len(groups)
        if not groups:
            self._finishAttempt(attempt)
            return
        for group in groups.values():
            self._schedule(attempt, group)

    def _destination(self, group: Dict[str, Any]) -> str:
        first = group["routes"][0]
        return first.get("address") or first.get("host") or ""

    def _schedule(self, attempt: _Attempt, group: Dict[str, Any]) -> None:
        dest = self._destination(group)
        if self.slowStart.mayOpen(dest):
            self._deliver(attempt, group, dest)
            return
        dbg.debug(self.logger, dbg.CONN, 1, ss_ta=attempt.ta.id, wait=dest)
        waiting = self._waiting.setdefault(dest, collections.deque())
        entry = [attempt, group, None]  # type: List[Any]
        entry[2] = self.clock.callLater(
            self.waitForServer, self._waitExpired, dest, entry
        )
        waiting.append(entry)

    def _waitExpired(self, dest: str, entry: List[Any]) -> None:
        waiting = self._waiting.get(dest)
        if waiting is not None and entry in waiting:
            waiting.remove(entry)
        attempt, group, _ = entry
        for r, address in group["members"]:
            self._record(
                attempt,
                r,
                address,
                TEMP,
                451,
                "451 4.4.5 too many concurrent deliveries to %s" % (dest,),
                None,
                "connect",
            )
        self._groupDone(attempt)

    def _startWaiting(self, dest: str) -> None:
        waiting = self._waiting.get(dest)
        while waiting and self.slowStart.mayOpen(dest):
            attempt, group, timer = waiting.popleft()
            if timer is not None and timer.active():
                timer.cancel()
            self._deliver(attempt, group, dest)
        if waiting is not None and not waiting:
            del self._waiting[dest]

    def _deliver(self, attempt: _Attempt, group: Dict[str, Any], dest: str) -> None:
        ta = attempt.ta
        members = group["members"]
        daId = self.nextDeliveryId()
        transaction = {
            "id": daId,
            "ss_ta": ta.id,
            "sender": group["sender"],
            "recipients": [
                {"address": address, "index": i, "routes": group["routes"]}
                for i, (_, address) in enumerate(members)
            ],
            "routes": group["routes"],
            "size": ta.size,
            "bodyType": ta.bodyType,
        }
        self.slowStart.opened(dest)
        self.deliveries += 1
        dbg.debug(
            self.logger,
            dbg.SMTPC,
            1,
            ss_ta=ta.id,
            da_ta=daId,
            deliver=dest,
            nrcpts=len(members),
        )
        d = defer.maybeDeferred(self.agent.deliver, transaction)
        if self.deliveryTimeout:
            d.addTimeout(self.deliveryTimeout, self.clock)
        d.addCallbacks(
            self._cbDelivered,
            self._ebDelivered,
            callbackArgs=(attempt, members, dest, daId),
            errbackArgs=(attempt, members, dest, daId),
        )
        d.addErrback(self._ebAttempt, attempt)

    def _cbDelivered(
        self,
        results: List[Dict[str, Any]],
        attempt: _Attempt,
        members: List[Tuple[Recipient, str]],
        dest: str,
        daId: str,
    ) -> None:
        byIndex = {}
        for res in results or []:
            try:
                byIndex[int(res["index"])] = res
            except (KeyError, TypeError, ValueError):
                continue
        success = True
        for i, (r, address) in enumerate(members):
            found = byIndex.get(i)
            if found is None:
                self._record(
                    attempt,
                    r,
                    address,
                    TEMP,
                    451,
                    "451 4.4.0 no result from delivery agent",
                    None,
                    "final_dot",
                    daId,
                )
                continue
            res = found
            status = res.get("status")
            if status not in (OK, TEMP, PERM):
                status = TEMP
            if status == TEMP and res.get("where") in ("connect", "greeting"):
                success = False
            self._record(
                attempt,
                r,
                address,
                status,
                int(res.get("code") or 0),
                str(res.get("reply") or ""),
                res.get("remoteMTA"),
                res.get("where"),
                daId,
            )
        self.slowStart.closed(dest, success)
        self._startWaiting(dest)
        self._groupDone(attempt)

    def _ebDelivered(
        self,
        failure: Any,
        attempt: _Attempt,
        members: List[Tuple[Recipient, str]],
        dest: str,
        daId: str,
    ) -> None:
        if failure.check(defer.TimeoutError, defer.CancelledError):
            text = "451 4.4.7 delivery timeout"
        else:
            self.logger.failure("Scheduler.deliver", failure, ss_ta=attempt.ta.id)
            text = "451 4.3.0 delivery agent failed"
        for r, address in members:
            self._record(attempt, r, address, TEMP, 451, text, None, "connect", daId)
        self.slowStart.closed(dest, False)
        self._startWaiting(dest)
        self._groupDone(attempt)

    def _record(
        self,
        attempt: _Attempt,
        r: Recipient,
        address: str,
        status: str,
        code: int,
        reply: str,
        remoteMTA: Optional[str],
        where: Optional[str],
        daId: Optional[str] = None,
    ) -> None:
        dbg.debug(
            self.logger,
            dbg.SMTPC,
            2,
            ss_ta=attempt.ta.id,
            da_ta=daId,
            rcpt="<%s>" % (address,),
            result=code,
        )
        attempt.outcomes[r.index].append(
            (
                address,
                {
                    "status": status,
                    "code": code,
                    "reply": reply,
                    "remoteMTA": remoteMTA,
                    "where": where,
                },
            )
        )
        self.logger.info(
            ss_ta=attempt.ta.id,
            da_ta=daId,
            rcpt="<%s>" % (address,),
            idx=r.index,
            stat=status,
            reply=reply,
        )

    def _groupDone(self, attempt: _Attempt) -> None:
        attempt.pending -= 1
        if attempt.pending <= 0:
            self._finishAttempt(attempt)

    def _ebAttempt(self, failure: Any, attempt: _Attempt) -> None:
        self.logger.failure("Scheduler.attempt", failure, ss_ta=attempt.ta.id)

    # -- results ----------------------------------------------------------

    def _finishAttempt(self, attempt: _Attempt) -> None:
        ta = attempt.ta
        now = self.clock.seconds()
        final = []  # type: List[Recipient]
        deferred = []  # type: List[Recipient]
        bounced = []  # type: List[Recipient]
        for r in attempt.rcpts:
            self.active -= 1
            r.tries += 1
            r.lastAttempt = now
            outcomes = attempt.outcomes[r.index]
            temp = None
            for address, res in outcomes:
                if res["status"] == OK:
                    r.done.append(address)
                elif res["status"] == PERM:
                    r.done.append(address)
                    r.failures.append(
                        dict(
                            res,
                            address=address,
                            lastAttempt=now,
                            orcpt=r.orcpt,
                        )
                    )
                else:
                    temp = (address, res)
            if outcomes:
                address, res = temp or outcomes[-1]
                r.code = res["code"]
                r.reply = res["reply"]
                r.remoteMTA = res["remoteMTA"]
                r.where = res["where"]
            if r.deleteRequested:
                r.state = "deleted"
                final.append(r)
            elif temp is not None and now - ta.received < self.queuereturnTimeout:
                r.state = "deferred"
                r.nextTry = now + self.retryDelay(r.tries)
                deferred.append(r)
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
            dbg.debug(self.logger, dbg.DEFEDB, 1, ss_ta=ta.id, deferred=len(deferred))
            self.deferred += len(deferred)
            self.store.defer(ta, deferred)
            for r in deferred:
                self.retryAt(ta, r)
            self._maybeWarn(ta, deferred, now)
        if bounced:
            ta.pendingFailures.extend(bounced)
            self._scheduleBounce(ta)
        self.store.finish(ta, final)
        self.pump()

    def retryDelay(self, tries: int) -> float:
        """
        @return: the delay before the next attempt after C{tries} attempts:
            C{retry_min_delay} doubled per attempt, at most
            C{retry_max_delay}.
        """
        delay = self.retryMinDelay * (2 ** max(0, min(tries - 1, 30)))
        return float(min(self.retryMaxDelay, max(self.retryMinDelay, delay)))

    def _maybeWarn(self, ta: Transaction, rcpts: List[Recipient], now: float) -> None:
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
        dbg.debug(self.logger, dbg.DSN, 1, ss_ta=ta.id, dsn="delayed", rcpts=len(late))
        d = self.bouncer.report("delayed", ta, [r.failureInfo() for r in late])
        d.addErrback(
            lambda f: self.logger.error(
                "Scheduler.warn", ss_ta=ta.id, error=str(f.value)
            )
        )

    def _scheduleBounce(self, ta: Transaction) -> None:
        busy = any(r.state in ("queued", "active") for r in ta.recipients.values())
        if not busy or self.dsnMaxDelay <= 0:
            self.sendBounce(ta)
        elif ta.bounceTimer is None or not ta.bounceTimer.active():
            ta.bounceTimer = self.clock.callLater(self.dsnMaxDelay, self.sendBounce, ta)

    def sendBounce(self, ta: Transaction) -> None:
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
        failures = []  # type: List[Dict[str, Any]]
        for r in rcpts:
            failures.extend(r.failures)
        dbg.debug(self.logger, dbg.DSN, 1, ss_ta=ta.id, dsn="failed", rcpts=len(rcpts))
        d = self.bouncer.report("failed", ta, failures)

        def _cbBounced(_: Any) -> None:
            for r in rcpts:
                r.state = "failed"
            self.failed += len(rcpts)
            self.store.finish(ta, rcpts)

        def _ebBounced(failure: Any) -> None:
            self.logger.error(
                "Scheduler.sendBounce", ss_ta=ta.id, error=str(failure.value)
            )
            ta.pendingFailures.extend(rcpts)
            if self.running:
                ta.bounceTimer = self.clock.callLater(
                    self.retryMinDelay, self.sendBounce, ta
                )

        d.addCallbacks(_cbBounced, _ebBounced)

    def stop(self) -> None:
        """Stop scheduling: cancel timers (state stays for a restart)."""
        self.running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for waiting in self._waiting.values():
            for _, _, timer in waiting:
                if timer is not None and timer.active():
                    timer.cancel()
        self._waiting = {}
        for ta in self.store.transactions.values():
            if ta.bounceTimer is not None and ta.bounceTimer.active():
                ta.bounceTimer.cancel()
