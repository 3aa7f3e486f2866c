# -*- test-case-name: smx.split.test.test_delivery -*-
"""
NAME
    smx.split.delivery - SMTPC over C{SMTPC_socket}: the delivery agents
    QMGR uses, and SMTPC's side of the connection

SYNOPSIS
    agents = RemoteDeliveryAgents(reactor, path, waitForClient=10)  # QMGR
    agents.deliver(transaction)                      # IDeliveryAgent

    client = deliveryAgentClient(reactor, path, agent, waitForServer=10)
    client.startService()                            # SMTPC

DESCRIPTION
    QMGR listens on C{SMTPC_socket} (seed §5.4) and each SMTPC process
    connects to it (again and again while QMGR restarts).
    L{RemoteDeliveryAgents} provides L{smx.interfaces.IDeliveryAgent} in
    QMGR: it hands each delivery transaction to the connected SMTPC
    process with the fewest deliveries in progress, as the L{Deliver}
    command, which SMTPC's L{DeliveryAgentServer} answers with its
    in-process delivery agent.  Transactions are checked
    (L{smx.values.checked}) by QMGR, which makes them, and by SMTPC, which
    receives them; results once, by QMGR, which receives them.

    When no SMTPC process is connected, a delivery waits at most
    C{waitForClient} seconds (QMGR's C{wait_for_client}) for one.  A
    delivery whose SMTPC process goes away before it answers (killed: the
    MCP starts another) is handed over once more, to the next SMTPC
    process.  A delivery that cannot be handed over, or whose SMTPC
    process goes away again, gives a temporary result (C{451 4.4.0}) for
    every recipient: QMGR defers them and tries again, at once when an
    SMTPC process connects (L{RemoteDeliveryAgents.onConnected}), not
    after C{retry_min_delay}.

    An SMTPC process goes on with the deliveries it has when QMGR goes
    away (killed, restarting): the successful results it could not give,
    and those it gave in the last L{RECENT} seconds (QMGR may have died
    before acting on them), are L{LateResults}; its first command on the
    next connection (L{c.Ready}) hands them to the new QMGR, which
    answers those recipients from them instead of delivering them again.
    Only a delivery cut off in SMTPC itself (SMTPC killed after the next
    hop said 250) may still be made twice, never lost.

DIAGNOSTICS
    A delivery that gets no answer is logged with C{sev=WARN}; the
    connections of SMTPC processes with C{sev=NOTICE}.
"""

from __future__ import annotations

import collections
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from twisted.application import service
from twisted.internet import defer
from twisted.internet.protocol import Factory, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from smx.interfaces import IDeliveryAgent
from smx.log import Logger
from smx.queue.active import AGENT_UNAVAILABLE
from smx.split import commands as c
from smx.split.peer import GONE, PeerConnection, QuietAMP, listenSocket
from smx.values import DeliveryTransaction, Result, checked, checkedList

#: the most late results either side keeps
MAX_LATE = 10000
#: seconds before its connection is lost within which a delivery's answer
#: may not have been acted on by QMGR (killed with the answer unread, or
#: before it logged it): its results are given to the next QMGR as well
RECENT = 10.0


def _describe(e: Any) -> str:
    """C{"ConnectionLost: ..."}: an exception in a delivery's reply."""
    return "%s: %s" % (type(e).__name__, e)


def _index(recipient: Dict[str, Any], position: int) -> int:
    """A recipient's index in its transaction (its position without one)."""
    index = recipient.get("index")
    return position if index is None else index


class LateResults:
    """
    SMTPC's results of deliveries that ended after the connection they
    came over was lost (QMGR was killed or restarts): they are given to
    the next QMGR (L{c.Ready}), which would otherwise deliver those
    recipients again.  Only successful results are kept, at most
    L{MAX_LATE}.
    """

    def __init__(self) -> None:
        self.entries = []  # type: List[Dict[str, Any]]

    def add(self, transaction: Dict[str, Any], results: List[Dict[str, Any]]) -> None:
        ok = [r for r in results if r.get("status") == "ok"]
        if ok:
            self.entries.append({"ss_ta": transaction["ss_ta"], "results": ok})
            del self.entries[:-MAX_LATE]

    def take(self) -> List[Dict[str, Any]]:
        entries, self.entries = self.entries, []
        return entries

    def putBack(self, entries: List[Dict[str, Any]]) -> None:
        self.entries[:0] = entries
        del self.entries[:-MAX_LATE]


class DeliveryAgentServer(QuietAMP):
    """
    SMTPC's connection to QMGR: says L{c.Ready} (with the late results)
    and answers L{c.Deliver} with C{agent}.
    """

    def __init__(
        self,
        agent: IDeliveryAgent,
        late: Optional[LateResults] = None,
        clock: Callable[[], float] = time.monotonic,
        inFlight: Optional[Set[defer.Deferred]] = None,
        handedOver: Optional[Callable[[], None]] = None,
        kept: Optional[Callable[[], None]] = None,
    ) -> None:
        """
        @param late: where results go that QMGR may not have acted on.
        @param clock: the time in seconds (tests).
        @param inFlight: where the deliveries in progress are kept.
        @param handedOver: called when QMGR has taken the late results.
        @param kept: called when results were added to the late ones.
        """
        QuietAMP.__init__(self)
        self.agent = agent
        self.late = late if late is not None else LateResults()
        self.clock = clock
        self.inFlight = inFlight if inFlight is not None else set()
        self.handedOver = handedOver
        self.kept = kept
        self.gone = False
        #: (when, transaction, results) of the last RECENT seconds
        self.recent = (
            collections.deque()
        )  # type: collections.deque[Tuple[float, Dict[str, Any], List[Any]]]

    def connectionMade(self) -> None:
        QuietAMP.connectionMade(self)
        entries = self.late.take()
        d = self.callRemote(c.Ready, late=entries)
        d.addCallbacks(self._taken, lambda f: self.late.putBack(entries), (entries,))

    def _taken(self, answer: Any, entries: List[Dict[str, Any]]) -> None:
        """
        QMGR has the late results: they count as given now (a QMGR killed
        within L{RECENT} seconds gets them again from L{connectionLost}).
        """
        now = self.clock()
        for entry in entries:
            self.recent.append((now, {"ss_ta": entry["ss_ta"]}, entry["results"]))
        if self.handedOver is not None:
            self.handedOver()

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # type: ignore[assignment]
        self.gone = True
        cutoff = self.clock() - RECENT
        for when, data, results in self.recent:
            if when >= cutoff:
                self.late.add(data, results)
        self.recent.clear()
        self._kept()
        QuietAMP.connectionLost(self, reason)

    def _kept(self) -> None:
        if self.kept is not None and self.late.entries:
            self.kept()

    @c.Deliver.responder
    def deliver(self, transaction: Any) -> Any:
        data = checked(DeliveryTransaction, transaction)
        d = defer.maybeDeferred(self.agent.deliver, data)
        self.inFlight.add(d)

        def done(result: Any) -> Any:
            self.inFlight.discard(d)
            return result

        d.addBoth(done)

        def delivered(results: Any) -> Dict[str, Any]:
            # checked once, by QMGR, which receives them
            if self.gone:
                # nobody hears the answer: the next QMGR will
                self.late.add(data, results)
                self._kept()
            elif any(r.get("status") == "ok" for r in results):
                now = self.clock()
                self.recent.append((now, data, results))
                while self.recent and self.recent[0][0] < now - RECENT:
                    self.recent.popleft()
            return {"results": results}

        return d.addCallback(delivered)


#: seconds SMTPC waits at its stop for the deliveries it is making
STOP_WAIT = 5.0


class DeliveryAgentClient(service.MultiService):
    """
    SMTPC's connection to QMGR's C{SMTPC_socket}, kept open (and opened
    again after QMGR restarts) so that QMGR can hand it deliveries.

    With a C{stateFile}, the late results (L{LateResults}) outlive the
    process: at its stop SMTPC waits at most L{STOP_WAIT} seconds for the
    deliveries it is making and writes the late results there; at its
    start it reads the file, for the next QMGR, and removes it once a QMGR
    has taken them (an SMTPC killed before that leaves it to the next
    one).  Late results are also written there as soon as they are kept
    (QMGR went away), for an SMTPC killed while it waits for the next
    QMGR.  (The MCP restarts SMTPC with QMGR, its restart dependency.)

    @ivar peer: the L{PeerConnection}.
    @ivar late: the L{LateResults}.
    """

    name = "qmgr connection"  # type: ignore[assignment]

    def __init__(
        self,
        reactor: Any,
        path: str,
        agent: IDeliveryAgent,
        waitForServer: float,
        logger: Optional[Logger] = None,
        stateFile: Optional[str] = None,
    ) -> None:
        service.MultiService.__init__(self)
        self.reactor = reactor
        self.stateFile = stateFile
        self.logger = logger or Logger("smtpc")
        self.late = LateResults()
        #: a write of the late results waits for the end of the turn
        self._savePending = False
        self.inFlight = set()  # type: Set[defer.Deferred]
        self.peer = PeerConnection(
            reactor,
            path,
            lambda: DeliveryAgentServer(
                agent,
                self.late,
                inFlight=self.inFlight,
                handedOver=self._handedOver,
                kept=self._kept,
            ),
            waitForServer,
            "qmgr",
            self.logger,
        )
        self.peer.setServiceParent(self)

    def startService(self) -> None:
        if self.stateFile is not None:
            self._load(self.stateFile)
        service.MultiService.startService(self)

    def _load(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                entries = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            self.logger.error("DeliveryAgentClient", file=path, error=str(e))
            return
        if isinstance(entries, list):
            self.late.putBack([e for e in entries if isinstance(e, dict)])

    def _kept(self) -> None:
        """
        Late results were added (QMGR went away): on disk at the end of
        the reactor's turn (with the others of the turn), so that an
        SMTPC killed before the next QMGR comes does not lose them.
        """
        if self.stateFile is not None and not self._savePending:
            self._savePending = True
            self.reactor.callLater(0, self._saveKept)

    def _saveKept(self) -> None:
        # without an fsync: the file is for a killed process, whose
        # writes the system keeps (after a crash of the system a
        # duplicate is allowed; the stop still syncs it)
        self._savePending = False
        if self.stateFile is not None and self.late.entries:
            self._save(self.stateFile, list(self.late.entries), sync=False)

    def _handedOver(self) -> None:
        """A QMGR has the late results: the state file has served."""
        if self.stateFile is None:
            return
        try:
            os.unlink(self.stateFile)
        except FileNotFoundError:
            pass
        except OSError as e:
            self.logger.error("DeliveryAgentClient", file=self.stateFile, error=str(e))

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        if self.inFlight:
            # not cancelled after STOP_WAIT: only no longer waited for
            waiting = defer.Deferred()  # type: defer.Deferred

            def enough(_: Any = None) -> None:
                if not waiting.called:
                    waiting.callback(None)

            timer = self.reactor.callLater(STOP_WAIT, enough)
            defer.DeferredList(list(self.inFlight), consumeErrors=True).addBoth(enough)
            yield waiting
            if timer.active():
                timer.cancel()
        yield service.MultiService.stopService(self)
        if self.stateFile is not None and self.late.entries:
            self._save(self.stateFile, self.late.take())

    def _save(
        self, path: str, entries: List[Dict[str, Any]], sync: bool = True
    ) -> None:
        temporary = path + ".tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as f:
                json.dump(entries, f)
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(temporary, path)
        except OSError as e:
            self.logger.error("DeliveryAgentClient", file=path, error=str(e))


def deliveryAgentClient(
    reactor: Any,
    path: str,
    agent: IDeliveryAgent,
    waitForServer: float,
    logger: Optional[Logger] = None,
    stateFile: Optional[str] = None,
) -> DeliveryAgentClient:
    """
    SMTPC's side of C{SMTPC_socket} (a L{DeliveryAgentClient}).
    """
    return DeliveryAgentClient(reactor, path, agent, waitForServer, logger, stateFile)


class _AgentConnection(QuietAMP):
    """
    One SMTPC process's connection, on QMGR's side.

    @ivar busy: deliveries handed to it and not answered yet.
    """

    def __init__(self, agents: "RemoteDeliveryAgents") -> None:
        QuietAMP.__init__(self)
        self.agents = agents
        self.busy = 0

    @c.Ready.responder
    def ready(self, late: Any) -> Dict[str, Any]:
        self.agents._ready(self, late)
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # type: ignore[assignment]
        self.agents._lost(self)
        QuietAMP.connectionLost(self, reason)


@implementer(IDeliveryAgent)
class RemoteDeliveryAgents(service.Service):
    """
    The SMTPC processes connected to QMGR's C{SMTPC_socket} (see the
    module docstring).

    @ivar connections: the connected SMTPC processes.
    @ivar onConnected: called (without arguments) when an SMTPC process
        has connected and said L{c.Ready}: QMGR tries again the
        recipients deferred with L{AGENT_UNAVAILABLE}.
    """

    name = "smtpc socket"  # type: ignore[assignment]

    def __init__(
        self,
        reactor: Any,
        path: str,
        waitForClient: float,
        logger: Optional[Logger] = None,
    ) -> None:
        self.reactor = reactor
        self.path = path
        self.waitForClient = waitForClient
        self.logger = logger or Logger("qmgr")
        self.connections = []  # type: List[_AgentConnection]
        #: turns of L{_pick} among equally busy connections
        self._turn = 0
        #: (ss_ta, address) -> the successful result an SMTPC process
        #: gave after its connection was lost (L{LateResults})
        self.late = (
            collections.OrderedDict()
        )  # type: collections.OrderedDict[Tuple[str, str], Dict[str, Any]]
        self._waiting = []  # type: List[defer.Deferred]
        self._port = None  # type: Any
        self.onConnected = None  # type: Optional[Callable[[], Any]]

    def startService(self) -> None:
        service.Service.startService(self)
        factory = Factory.forProtocol(lambda: _AgentConnection(self))  # type: ignore[arg-type]
        factory.noisy = False
        self._port = listenSocket(self.reactor, self.path, factory)

    def stopService(self) -> Any:
        service.Service.stopService(self)
        port, self._port = self._port, None
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.loseConnection()
        if port is not None:
            return port.stopListening()
        return None

    def _ready(self, conn: _AgentConnection, late: Any) -> None:
        """
        An SMTPC process connected and said L{c.Ready}: keep its late
        results, and hand it deliveries from now on.
        """
        try:
            for entry in late or []:
                for result in checkedList(Result, entry["results"]):
                    if result.get("status") == "ok":
                        key = (str(entry["ss_ta"]), result["address"])
                        self.late[key] = result
        except (KeyError, TypeError, ValueError) as e:
            self.logger.warn("RemoteDeliveryAgents.ready", error=str(e))
        while len(self.late) > MAX_LATE:
            self.late.popitem(last=False)
        if late:
            self.logger.notice(peer="smtpc", stat="late results", late=len(late))
        self._connected(conn)

    def _connected(self, conn: _AgentConnection) -> None:
        self.connections.append(conn)
        self.logger.notice(peer="smtpc", stat="connected", smtpc=len(self.connections))
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if not d.called:
                d.callback(conn)
        if self.onConnected is not None:
            try:
                self.onConnected()
            except Exception:
                self.logger.failure("RemoteDeliveryAgents.onConnected", Failure())

    def _lost(self, conn: _AgentConnection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
            self.logger.notice(peer="smtpc", stat="lost", smtpc=len(self.connections))

    def _agent(self) -> defer.Deferred:
        if self.connections:
            return defer.succeed(self._pick())
        d = defer.Deferred()  # type: defer.Deferred
        self._waiting.append(d)

        def timedOut() -> None:
            if not d.called:
                self._waiting.remove(d)
                d.errback(
                    RuntimeError(
                        "no delivery agent (SMTPC) connected for %gs"
                        % (self.waitForClient,)
                    )
                )

        timer = self.reactor.callLater(self.waitForClient, timedOut)

        def stopTimer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(stopTimer)

    def _pick(self) -> _AgentConnection:
        """
        The least busy SMTPC connection; among equally busy ones, each in
        turn (so that deliveries that never overlap still go to every
        SMTPC process, not always to the first).
        """
        conns = self.connections
        n = len(conns)
        start = self._turn % n
        self._turn += 1
        best = conns[start]
        for i in range(1, n):
            conn = conns[(start + i) % n]
            if conn.busy < best.busy:
                best = conn
        return best

    def deliver(self, transaction):
        try:
            data = checked(DeliveryTransaction, transaction)
        except ValueError as e:
            return defer.fail(e)
        if self.connections and not self.late:
            # the usual case, without a coroutine: what _deliver does
            conn = self._pick()
            conn.busy += 1
            try:
                d = conn.callRemote(c.Deliver, transaction=data)
            except Exception:
                d = defer.fail()
            return d.addBoth(self._answered, conn, data)
        return defer.Deferred.fromCoroutine(self._deliver(data))

    def _answered(
        self, answer: Any, conn: _AgentConnection, data: Dict[str, Any]
    ) -> Any:
        """
        The answer to a L{c.Deliver} sent without L{_deliver}: its
        results, checked, or what L{_deliver} makes of a failure.
        """
        conn.busy -= 1
        if isinstance(answer, Failure):
            e = answer.value
            if answer.check(*GONE) and self.running:
                self._handOverAgain(data, e)
                return defer.Deferred.fromCoroutine(self._deliver(data, again=False))
            return self._unavailable(data, _describe(e))
        try:
            return checkedList(Result, answer["results"])
        except Exception as e:
            return self._unavailable(data, _describe(e))

    def _handOverAgain(self, data: Dict[str, Any], e: Any) -> None:
        """
        Log that the SMTPC process of C{data}'s delivery went away (killed)
        and that the delivery goes to the next one: the MCP starts
        another, and waiting for it (at most C{wait_for_client}) is better
        than deferring for C{retry_min_delay}.
        """
        self.logger.warn(
            "RemoteDeliveryAgents.deliver",
            da_ta=data["id"],
            ss_ta=data["ss_ta"],
            error=_describe(e),
            action="again",
        )

    def _fromLate(self, data: Dict[str, Any]) -> List[Dict[str, Any]]:
        """
        The results of recipients of C{data} that an SMTPC process had
        delivered when its connection was lost (they are not delivered
        again), taken out of L{late}.
        """
        found = []
        if self.late:
            for i, r in enumerate(data["recipients"]):
                result = self.late.pop((data["ss_ta"], r["address"]), None)
                if result is not None:
                    found.append(dict(result, index=_index(r, i)))
        return found

    async def _deliver(
        self, data: Dict[str, Any], again: bool = True
    ) -> List[Dict[str, Any]]:
        try:
            conn = await self._agent()
        except Exception as e:
            return self._unavailable(data, str(e))
        # after an SMTPC process said Ready: its late results are known
        known = self._fromLate(data)
        if known:
            done = {r["index"] for r in known}
            rest = [
                r for i, r in enumerate(data["recipients"]) if _index(r, i) not in done
            ]
            self.logger.info(
                da_ta=data["id"], ss_ta=data["ss_ta"], late=len(known), stat="late"
            )
            if not rest:
                return known
            data = dict(data, recipients=rest)
        conn.busy += 1
        try:
            answer = await conn.callRemote(c.Deliver, transaction=data)
            return known + checkedList(Result, answer["results"])
        except GONE as e:
            if not again or not self.running:
                return known + self._unavailable(data, _describe(e))
            self._handOverAgain(data, e)
            return known + await self._deliver(data, again=False)
        except Exception as e:
            return known + self._unavailable(data, _describe(e))
        finally:
            conn.busy -= 1

    def _unavailable(self, data: Dict[str, Any], why: str) -> List[Dict[str, Any]]:
        self.logger.warn(
            "RemoteDeliveryAgents.deliver",
            da_ta=data["id"],
            ss_ta=data["ss_ta"],
            error=why,
        )
        return [
            Result(
                index=r["index"] if r.get("index") is not None else i,
                address=r["address"],
                status="temp",
                code=451,
                reply=AGENT_UNAVAILABLE,
                # not "connect": no next hop was tried, none is suspended
                where="agent",
            ).toData()
            for i, r in enumerate(data["recipients"])
        ]
