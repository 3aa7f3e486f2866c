# -*- test-case-name: smx.queue.test.test_scheduler,smx.queue.test.test_suspended -*-
"""
NAME
    smx.queue.active - AQ, the recipients being resolved and delivered

SYNOPSIS
    aq = ActiveQueue(clock, resolver, agent, destinations, logger,
                     nextDeliveryId, done, maxEntries=1000, ...)
    aq.room()                          # how many more may enter
    aq.create([(transaction, recipients), ...])
    # later: done(transaction, [(recipient, temporaryFailure), ...], now)

DESCRIPTION
    AQ (seed §10) holds at most C{AQ_max_entries} recipients.  The
    recipients of one transaction that enter together make one
    I{attempt}:

        1. each is resolved by SMAR (C{resolveRecipient}: aliases,
           mailertable, MX), within C{SMAR_timeout};
        2. the resolved addresses that share their sender and routes
           become one delivery transaction, which waits for a connection
           slot of its first route's address
           (L{smx.queue.destinations.DestinationQueues});
        3. the delivery agent (SMTPC) gets it, and has C{delivery_timeout}
           seconds to give one result per recipient.

    Every result of every address is logged and recorded.  When the last
    delivery transaction of an attempt has ended, its recipients leave AQ
    with the outcome applied (C{tries}, C{lastAttempt}, the addresses
    done, the permanent failures, the last reply) and C{done} is called
    with the temporary failure of each recipient, if any: what happens
    next (delivered, deferred, bounced) is the scheduler's decision.

    A resolver failure, a resolver or agent that does not answer in time,
    an agent that fails, a missing result and a slot that did not free
    within C{wait_for_server} are temporary failures (451).

    Dead destinations (as Postfix's queue manager): when every result of
    a delivery transaction is a temporary failure at C{connect} or
    C{greeting} (the agent tried every route of the group and none took
    the connection), its route set is suspended for C{retry_min_delay}
    (L{smx.queue.connections.SlowStart.unreachable}).  Meanwhile the
    groups over those routes do not go to the agent, neither new ones
    nor those waiting for a slot when they start: each address is a
    temporary failure at C{connect}, "451 4.4.1 delivery temporarily
    suspended: " and the reply of the failure, deferred as any.  Then
    the next group is the probe; its success ends the suspension, its
    failure renews it.  A failure of the agent itself or a timeout is no
    verdict on the routes.

CONFIGURATION PARAMETERS
    AQ_max_entries, SMAR_timeout, delivery_timeout, wait_for_server

SECURITY
    None.

DIAGNOSTICS
    Every result is logged (C{ss_ta}, C{da_ta}, C{rcpt}, C{idx}, C{stat},
    C{reply}); a route set suspended or reached again with C{routes} and
    C{status=suspended} (C{delay}, C{reply}) or C{status=resumed}; a
    failing resolver or agent with C{sev=ERR} and
    C{ActiveQueue.resolve}, C{ActiveQueue.deliver} or
    C{ActiveQueue.attempt}.  Debug categories (C{qmgr -x}): 3 (attempts),
    4 (routes), 5 (deliveries and results), 8 (waits for a slot).
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from smx.fastdefer import settled
from smx.queue import debug as dbg
from smx.interfaces import IAddressResolver, IDeliveryAgent
from smx.log import Logger
from smx.queue.destinations import DestinationQueues
from smx.queue.envelope import Recipient, Transaction, wants
from smx.values import ReplyData, ResolvedData, ResultData, RouteData

TEMP = "temp"
PERM = "perm"
OK = "ok"

#: the reply of a recipient whose address SMAR did not resolve (it
#: failed, timed out, or went away)
RESOLVER_FAILED = "451 4.4.3 address resolver failed"
#: the reply of every recipient of a delivery no SMTPC process took
AGENT_UNAVAILABLE = "451 4.4.0 delivery agent unavailable"
#: the reply of a recipient whose wait for a slot of its destination
#: expired, before the destination's address
SLOT_WAIT_EXPIRED = "451 4.4.5 too many concurrent deliveries to "
#: the replies of temporary failures inside smx, which say nothing of the
#: next hop: a QMGR that starts tries their recipients again at once
LOCAL_FAILURES = (RESOLVER_FAILED, AGENT_UNAVAILABLE, SLOT_WAIT_EXPIRED)


def localFailure(reply: Optional[str]) -> bool:
    """Is C{reply} one of L{LOCAL_FAILURES}?"""
    return bool(reply) and str(reply).startswith(LOCAL_FAILURES)


#: C{(address, result)} of a temporary failure, or C{None}
TempFailure = Optional[Tuple[str, ResultData]]
Done = Callable[[Transaction, List[Tuple[Recipient, TempFailure]], float], None]


def _reply(code: int, dsnCode: str, text: str) -> ReplyData:
    return {"code": code, "dsn": dsnCode, "text": text}


class _Attempt:
    """One delivery attempt of some recipients of one transaction."""

    def __init__(self, ta: Transaction, rcpts: List[Recipient]) -> None:
        self.ta = ta
        self.rcpts = rcpts
        # recipient index -> list of (expanded address, result dict)
        self.outcomes = {
            r.index: [] for r in rcpts
        }  # type: Dict[int, List[Tuple[str, ResultData]]]
        self.pending = 0


#: the delivery agent reached none of the routes with such a result
UNREACHED = ("connect", "greeting")


class _Group:
    """
    The addresses of an attempt that go in one delivery transaction.

    @ivar routeKey: the route set (mailer, host, address, port of each
        route): the key of a suspension.
    @ivar probe: whether it is the first delivery over a route set whose
        suspension expired.
    """

    __slots__ = ("sender", "routes", "members", "routeKey", "probe")

    def __init__(
        self, sender: str, routes: List[RouteData], routeKey: Tuple[Any, ...] = ()
    ) -> None:
        self.sender = sender
        self.routes = routes
        self.members = []  # type: List[Tuple[Recipient, str]]
        self.routeKey = routeKey
        self.probe = False

    def name(self) -> str:
        """The route set as the status and the log show it."""
        return ",".join(
            str(x.get("address") or x.get("host") or "") for x in self.routes
        )

    def destination(self) -> str:
        """The address (or host) of the first route: slow start's key."""
        first = self.routes[0]
        return first.get("address") or first.get("host") or ""


class ActiveQueue:
    """
    AQ: the recipients being resolved and delivered.

    @ivar count: number of recipients in AQ.
    @ivar maxEntries: the most recipients AQ takes (C{AQ_max_entries}).
    @ivar deliveries: number of delivery transactions started.
    """

    def __init__(
        self,
        clock: IReactorTime,
        resolver: IAddressResolver,
        agent: IDeliveryAgent,
        destinations: DestinationQueues,
        logger: Logger,
        nextDeliveryId: Callable[[], str],
        done: Done,
        maxEntries: int,
        smarTimeout: float,
        deliveryTimeout: float,
    ) -> None:
        """
        @param resolver: an L{smx.interfaces.IAddressResolver}.
        @param agent: an L{smx.interfaces.IDeliveryAgent}.
        @param destinations: the
            L{smx.queue.destinations.DestinationQueues}.
        @param done: called when the recipients of an attempt leave AQ.
        """
        self.clock = clock
        self.resolver = resolver
        self.agent = agent
        self.destinations = destinations
        self.logger = logger
        self.nextDeliveryId = nextDeliveryId
        self.done = done
        self.maxEntries = max(1, maxEntries)
        self.smarTimeout = smarTimeout
        self.deliveryTimeout = deliveryTimeout
        self.count = 0
        self.deliveries = 0
        #: the deliveries under way (their results not recorded yet)
        self.inFlight = set()  # type: Set[defer.Deferred[Any]]
        self._settled = []  # type: List[defer.Deferred[None]]

    def room(self) -> int:
        """@return: how many more recipients AQ takes now."""
        return max(0, self.maxEntries - self.count)

    def create(self, groups: List[Tuple[Transaction, List[Recipient]]]) -> None:
        """
        Recipients (C{active}) enter AQ: one attempt per transaction.
        All of them are counted before the first attempt starts.
        """
        for _, rcpts in groups:
            self.count += len(rcpts)
        for ta, rcpts in groups:
            self._startAttempt(ta, rcpts)

    # -- resolving -----------------------------------------------------------

    def _startAttempt(self, ta: Transaction, rcpts: List[Recipient]) -> None:
        attempt = _Attempt(ta, rcpts)
        if self.logger.debugLevels is not None:
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
        groups = collections.OrderedDict()  # type: Dict[Any, _Group]
        for r, (ok, value) in zip(attempt.rcpts, results):
            if not ok:
                self.logger.error(
                    "ActiveQueue.resolve",
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
                    RESOLVER_FAILED,
                    None,
                    "resolve",
                )
                continue
            for item in value or []:
                self._addResolved(attempt, r, item, groups)
        attempt.pending = len(groups)
        if not groups:
            self._finishAttempt(attempt)
            return
        for group in groups.values():
            self._schedule(attempt, group)

    def _addResolved(
        self,
        attempt: _Attempt,
        r: Recipient,
        item: ResolvedData,
        groups: Dict[Any, _Group],
    ) -> None:
        """
        Record the failure of one resolved address of C{r}, or add it to
        the group of its sender and routes.
        """
        address = item.get("address") or r.address
        if address in r.done:
            return
        error = item.get("error")  # type: Optional[ReplyData]
        routes = item.get("routes") or []
        if error is not None or not routes:
            if error is None:
                error = _reply(554, "5.4.4", "no route to host")
            code = int(error.get("code") or 554)
            text = "%d %s %s" % (code, error.get("dsn") or "", error["text"])
            status = PERM if code >= 500 else TEMP
            self._record(attempt, r, address, status, code, text, None, "resolve")
            return
        sender = item.get("sender") or attempt.ta.sender
        key = (
            sender,
            tuple(
                (x.get("mailer"), x.get("host"), x.get("address"), x.get("port"))
                for x in routes
            ),
        )
        if self.logger.debugLevels is not None:
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
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(sender, routes, key[1])
        group.members.append((r, address))

    # -- delivering ----------------------------------------------------------

    def _schedule(self, attempt: _Attempt, group: _Group) -> None:
        reply = self.destinations.slowStart.suspended(group.routeKey)
        if reply is not None:
            self._suspend(attempt, group, reply)
            return
        dest = group.destination()
        started = self.destinations.request(
            dest,
            lambda: self._deliver(attempt, group, dest),
            lambda: self._waitExpired(attempt, group, dest),
        )
        if not started:
            if self.logger.debugLevels is not None:
                dbg.debug(self.logger, dbg.CONN, 1, ss_ta=attempt.ta.id, wait=dest)

    def _waitExpired(self, attempt: _Attempt, group: _Group, dest: str) -> None:
        reply = SLOT_WAIT_EXPIRED + dest
        for r, address in group.members:
            self._record(attempt, r, address, TEMP, 451, reply, None, "connect")
        # deferred, and tried again as soon as dest has room
        self.destinations.park(
            dest, [(dest, attempt.ta.id, r.index, reply) for r, _ in group.members]
        )
        self._groupDone(attempt)

    def _suspend(self, attempt: _Attempt, group: _Group, reply: str) -> None:
        """
        The routes of C{group} are suspended: each address is deferred
        with the reply of the failure that suspended them, not sent.
        """
        code, _, rest = reply.partition(" ")
        if code.isdigit() and len(code) == 3:
            # the failure's own code and enhanced code give way to 4.4.1
            first, _, after = rest.partition(" ")
            if first[:1].isdigit() and first.count(".") == 2:
                rest = after
        else:
            rest = reply
        text = "451 4.4.1 delivery temporarily suspended: " + rest
        mailer = group.routes[0].get("mailer") if group.routes else None
        if self.logger.debugLevels is not None:
            dbg.debug(
                self.logger, dbg.CONN, 1, ss_ta=attempt.ta.id, suspended=group.name()
            )
        for r, address in group.members:
            self._record(
                attempt, r, address, TEMP, 451, text, None, "connect", None, mailer
            )
        self._groupDone(attempt)

    def _deliver(self, attempt: _Attempt, group: _Group, dest: str) -> None:
        slowStart = self.destinations.slowStart
        reply = slowStart.suspended(group.routeKey)
        if reply is not None:
            # suspended while it waited for its slot
            self.destinations.release(dest)
            self._suspend(attempt, group, reply)
            return
        group.probe = slowStart.probe(group.routeKey)
        ta = attempt.ta
        members = group.members
        daId = self.nextDeliveryId()
        transaction = {
            "id": daId,
            "ss_ta": ta.id,
            "sender": group.sender,
            "recipients": [
                {
                    "address": address,
                    "index": i,
                    "routes": group.routes,
                    "notify": r.notify,
                    "orcpt": r.orcpt,
                }
                for i, (r, address) in enumerate(members)
            ],
            "routes": group.routes,
            "size": ta.size,
            "bodyType": ta.bodyType,
            "smtputf8": ta.smtputf8,
            "ret": ta.ret,
            "envid": ta.envid,
            "requiretls": ta.requiretls,
            "tlsRequiredNo": ta.tlsRequiredNo,
        }
        self.deliveries += 1
        if self.logger.debugLevels is not None:
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
        # the mailer of the first route names the results (smx.metrics)
        mailer = group.routes[0].get("mailer") if group.routes else None
        d.addCallbacks(
            self._cbDelivered,
            self._ebDelivered,
            callbackArgs=(attempt, members, dest, daId, mailer, group),
            errbackArgs=(attempt, members, dest, daId, mailer, group),
        )
        d.addErrback(self._ebAttempt, attempt)
        self.inFlight.add(d)
        d.addBoth(self._landed, d)

    def _landed(self, result: Any, d: "defer.Deferred[Any]") -> Any:
        """A delivery's results are recorded."""
        self.inFlight.discard(d)
        if not self.inFlight:
            waiting, self._settled = self._settled, []
            for w in waiting:
                if not w.called:
                    w.callback(None)
        return result

    def settle(self, timeout: float) -> "defer.Deferred[None]":
        """
        Wait for the deliveries under way (QMGR stops): fires when each
        has its results recorded, or after C{timeout} seconds.
        """
        if not self.inFlight:
            return defer.succeed(None)
        d = defer.Deferred()  # type: defer.Deferred[None]
        self._settled.append(d)
        timer = self.clock.callLater(
            timeout, lambda: None if d.called else d.callback(None)
        )

        def cancel(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(cancel)

    def _cbDelivered(
        self,
        results: List[ResultData],
        attempt: _Attempt,
        members: List[Tuple[Recipient, str]],
        dest: str,
        daId: str,
        mailer: Optional[str],
        group: _Group,
    ) -> None:
        byIndex = {}  # type: Dict[int, ResultData]
        # reached: a route took the connection; unreached: the reply of a
        # failure of every route, if every result says so
        reached = False
        unreached = None  # type: Optional[str]
        allUnreached = bool(members)
        for found in results or []:
            try:
                byIndex[int(found["index"])] = found
            except (KeyError, TypeError, ValueError):
                continue
        success = True
        for i, (r, address) in enumerate(members):
            res = byIndex.get(i)
            if res is None:
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
                    mailer,
                )
                allUnreached = False
                continue
            status = res.get("status")
            if status not in (OK, TEMP, PERM):
                status = TEMP
            if status == TEMP and res.get("where") in UNREACHED:
                success = False
                unreached = str(res.get("reply") or "")
            else:
                reached = True
                allUnreached = False
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
                mailer,
                bool(res.get("dsnPassed")),
            )
        self._verdict(group, reached, unreached if allUnreached else None)
        self.destinations.done(dest, success)
        self._groupDone(attempt)

    def _verdict(self, group: _Group, reached: bool, unreached: Optional[str]) -> None:
        """
        What a delivery over the routes of C{group} says of them: a route
        C{reached} ends their suspension, a failure of every route
        (C{unreached}: its reply) suspends them; else no verdict.
        """
        slowStart = self.destinations.slowStart
        if reached:
            if slowStart.reachable(group.routeKey):
                self.logger.info(routes=group.name(), status="resumed")
        elif unreached is not None:
            if slowStart.unreachable(group.routeKey, group.name(), unreached):
                self.logger.info(
                    routes=group.name(),
                    status="suspended",
                    delay=slowStart.deadTime,
                    reply=unreached,
                )
        elif group.probe:
            slowStart.probeEnded(group.routeKey)

    def _ebDelivered(
        self,
        failure: Failure,
        attempt: _Attempt,
        members: List[Tuple[Recipient, str]],
        dest: str,
        daId: str,
        mailer: Optional[str],
        group: _Group,
    ) -> None:
        if group.probe:
            # the agent failed or timed out: no verdict on the routes
            self.destinations.slowStart.probeEnded(group.routeKey)
        if failure.check(defer.TimeoutError, defer.CancelledError):
            text = "451 4.4.7 delivery timeout"
        else:
            self.logger.failure("ActiveQueue.deliver", failure, ss_ta=attempt.ta.id)
            text = "451 4.3.0 delivery agent failed"
        for r, address in members:
            self._record(
                attempt, r, address, TEMP, 451, text, None, "connect", daId, mailer
            )
        self.destinations.done(dest, False)
        self._groupDone(attempt)

    # -- results -------------------------------------------------------------

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
        mailer: Optional[str] = None,
        dsnPassed: bool = False,
    ) -> None:
        if self.logger.debugLevels is not None:
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
                    "mailer": mailer,
                    "dsnPassed": dsnPassed,
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
            mailer=mailer,
        )

    def _groupDone(self, attempt: _Attempt) -> None:
        attempt.pending -= 1
        if attempt.pending <= 0:
            self._finishAttempt(attempt)

    def _ebAttempt(self, failure: Failure, attempt: _Attempt) -> None:
        self.logger.failure("ActiveQueue.attempt", failure, ss_ta=attempt.ta.id)

    def _finishAttempt(self, attempt: _Attempt) -> None:
        """
        The recipients of C{attempt} leave AQ with its outcome applied.
        """
        now = self.clock.seconds()
        left = []  # type: List[Tuple[Recipient, TempFailure]]
        for r in attempt.rcpts:
            self.count -= 1
            r.tries += 1
            r.lastAttempt = now
            outcomes = attempt.outcomes[r.index]
            temp = None  # type: TempFailure
            for address, res in outcomes:
                if res["status"] == OK:
                    r.done.append(address)
                    # RFC 3461 §4.1: smx reports success unless it passed
                    # NOTIFY on to a next hop that offers DSN
                    if wants(r, "SUCCESS") and not res.get("dsnPassed"):
                        attempt.ta.successNotices.append(
                            dict(
                                res,
                                address=address,
                                lastAttempt=now,
                                orcpt=r.orcpt,
                                action=(
                                    "delivered"
                                    if res.get("mailer") == "lmtp"
                                    else "relayed"
                                ),
                            )
                        )
                elif res["status"] == PERM:
                    r.done.append(address)
                    r.failures.append(
                        dict(res, address=address, lastAttempt=now, orcpt=r.orcpt)
                    )
                else:
                    temp = (address, res)
            if outcomes:
                _, res = temp or outcomes[-1]
                r.code = res["code"]
                r.reply = res["reply"]
                r.remoteMTA = res["remoteMTA"]
                r.where = res["where"]
            left.append((r, temp))
        self.done(attempt.ta, left, now)
