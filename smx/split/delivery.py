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
    in-process delivery agent.  Transactions and results are checked and
    converted with L{smx.values} on both sides.

    When no SMTPC process is connected, a delivery waits at most
    C{waitForClient} seconds (QMGR's C{wait_for_client}) for one.  A
    delivery that cannot be handed over, or whose SMTPC process goes away
    before it answers, gives a temporary result (C{451 4.4.0}) for every
    recipient: QMGR defers them and tries again.  A delivery cut off that
    way may have reached the next hop, so such a message may be
    delivered twice, never lost.

DIAGNOSTICS
    A delivery that gets no answer is logged with C{sev=WARN}; the
    connections of SMTPC processes with C{sev=NOTICE}.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.internet.protocol import Factory, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from smx.interfaces import IDeliveryAgent
from smx.log import Logger
from smx.split import commands as c
from smx.split.peer import PeerConnection, QuietAMP, listenSocket
from smx.values import DeliveryTransaction, Result, checked, checkedList


class DeliveryAgentServer(QuietAMP):
    """
    SMTPC's connection to QMGR: answers L{c.Deliver} with C{agent}.
    """

    def __init__(self, agent: IDeliveryAgent) -> None:
        QuietAMP.__init__(self)
        self.agent = agent

    @c.Deliver.responder
    def deliver(self, transaction: Any) -> Any:
        data = checked(DeliveryTransaction, transaction)
        d = defer.maybeDeferred(self.agent.deliver, data)
        return d.addCallback(lambda results: {"results": checkedList(Result, results)})


def deliveryAgentClient(
    reactor: Any,
    path: str,
    agent: IDeliveryAgent,
    waitForServer: float,
    logger: Optional[Logger] = None,
) -> PeerConnection:
    """
    SMTPC's connection to QMGR's C{SMTPC_socket}, kept open (and opened
    again after QMGR restarts) so that QMGR can hand it deliveries.
    """
    return PeerConnection(
        reactor,
        path,
        lambda: DeliveryAgentServer(agent),
        waitForServer,
        "qmgr",
        logger or Logger("smtpc"),
    )


class _AgentConnection(QuietAMP):
    """
    One SMTPC process's connection, on QMGR's side.

    @ivar busy: deliveries handed to it and not answered yet.
    """

    def __init__(self, agents: "RemoteDeliveryAgents") -> None:
        QuietAMP.__init__(self)
        self.agents = agents
        self.busy = 0

    def connectionMade(self) -> None:
        QuietAMP.connectionMade(self)
        self.agents._connected(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # type: ignore[assignment]
        self.agents._lost(self)
        QuietAMP.connectionLost(self, reason)


@implementer(IDeliveryAgent)
class RemoteDeliveryAgents(service.Service):
    """
    The SMTPC processes connected to QMGR's C{SMTPC_socket} (see the
    module docstring).

    @ivar connections: the connected SMTPC processes.
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
        self._waiting = []  # type: List[defer.Deferred]
        self._port = None  # type: Any

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

    def _connected(self, conn: _AgentConnection) -> None:
        self.connections.append(conn)
        self.logger.notice(peer="smtpc", stat="connected", smtpc=len(self.connections))
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if not d.called:
                d.callback(conn)

    def _lost(self, conn: _AgentConnection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
            self.logger.notice(peer="smtpc", stat="lost", smtpc=len(self.connections))

    def _agent(self) -> defer.Deferred:
        if self.connections:
            return defer.succeed(min(self.connections, key=lambda a: a.busy))
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

    def deliver(self, transaction):
        try:
            data = checked(DeliveryTransaction, transaction)
        except ValueError as e:
            return defer.fail(e)
        return defer.Deferred.fromCoroutine(self._deliver(data))

    async def _deliver(self, data: Dict[str, Any]) -> List[Dict[str, Any]]:
        try:
            conn = await self._agent()
        except Exception as e:
            return self._unavailable(data, str(e))
        conn.busy += 1
        try:
            answer = await conn.callRemote(c.Deliver, transaction=data)
            return checkedList(Result, answer["results"])
        except Exception as e:
            return self._unavailable(data, "%s: %s" % (type(e).__name__, e))
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
                reply="451 4.4.0 delivery agent unavailable",
                where="connect",
            ).toData()
            for i, r in enumerate(data["recipients"])
        ]
