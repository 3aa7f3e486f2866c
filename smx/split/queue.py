# -*- test-case-name: smx.split.test.test_queue -*-
"""
NAME
    smx.split.queue - QMGR over C{SMTPS_socket}: its AMP server and the
    proxy SMTPS uses

SYNOPSIS
    port = listenSocket(reactor, path, queueManagerFactory(qmgr))  # QMGR
    qmgr = QueueManagerProxy(reactor, path, waitForServer=10)     # SMTPS
    qmgr.startService()
    qmgr.sessionOpen(sessionId, clientAddress)        # IQueueManager

DESCRIPTION
    L{QueueManagerProxy} provides L{smx.interfaces.IQueueManager} by
    calling the queue manager of another process over AMP
    (L{smx.split.commands}); L{QueueManagerServer} answers those calls
    with the in-process queue manager.  Every reply is checked with
    L{smx.values} on both sides; an envelope once, by the server (the
    trust boundary), which hands it to C{QueueManager.commitChecked}
    without a second check.

    A relayed message costs two round trips: C{sessionOpen} (QMGR
    applies the connection limits of all SMTPS processes) and
    C{commitTransaction}; C{contentCommitted} and C{sessionClose} are
    one-way (SMTPS has answered 250 already, or the session is over;
    QMGR logs a C{contentCommitted} that fails, e.g. of an unknown
    transaction), and C{checkAcceptance} is mostly answered by the proxy
    itself: QMGR pushes each SMTPS connection a budget
    (L{smx.split.commands.Acceptance}) when it connects and when the
    budget changes by more than an eighth, measured (the free disk
    space, IQDB) at most every 0.1 s when a session opens or a
    transaction is committed: a quarter of the bytes free above
    C{min_disk_space} (less those reserved and in flight), shared by the
    SMTPS processes, and 0 while QMGR refuses (disk short, IQDB full) or
    IQDB is half full.  The proxy accepts a MAIL whose C{SIZE=}, with
    those it admitted for its other sessions, fits in its budget, and
    asks QMGR otherwise (QMGR then measures and reserves as in one
    process: C{452 4.3.1} for a short disk, C{452 4.3.2} for a full
    IQDB).

    When QMGR cannot be reached within C{waitForServer} (it is being
    restarted), the proxy refuses instead of accepting: C{sessionOpen}
    answers 421 4.3.2 and C{checkAcceptance} 451 4.3.0 (SMTPS sends them
    to the client), C{commitTransaction} fails (SMTPS answers 451 to the
    final dot, and removes the content): a message is answered with 250
    only once the QMGR that took it has it on stable storage.  Without a
    connection the proxy has no budget: every MAIL asks.

    The server remembers the sessions each SMTPS process opened over its
    connection: when the connection ends (SMTPS crashed or restarts),
    QMGR closes them, so that they do not count against
    C{smtps_max_open_connections} for ever.  It also remembers the
    envelopes committed with C{contentPending} whose content commit has
    not come: when the connection ends, each goes on if its whole content
    is in CDB (SMTPS may have answered 250) and is forgotten if not,
    instead of waiting for a restart of QMGR.

DIAGNOSTICS
    A call that fails because QMGR is unreachable is logged with
    C{sev=WARN} and the call's name.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.internet.protocol import Factory, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from smx._twistedcompat import succeeded
from smx.interfaces import IQueueManager, QueueManagerUnavailable
from smx.log import Logger
from smx.split import commands as c
from smx.split.dispatch import sendNow
from smx.split.peer import GONE, PeerConnection, PeerUnavailable, QuietAMP
from smx.values import Envelope, Reply, checked

#: SMTPS's answer to a new session while QMGR cannot be reached
SESSION_UNAVAILABLE = Reply(421, "4.3.2", "Service not available, try again later")
#: SMTPS's answer to MAIL while QMGR cannot be reached
TRANSACTION_UNAVAILABLE = Reply(451, "4.3.0", "Temporary failure, try again later")


def _plain(value: Any) -> Any:
    """Status and queue listings as plain data (keys as strings)."""
    return json.loads(json.dumps(value, default=str))


class QueueManagerServer(QuietAMP):
    """
    One SMTPS process's connection to QMGR: answers the
    L{IQueueManager} commands with C{qmgr}.

    @ivar sessions: session id -> client address of the sessions opened
        over this connection and not yet closed.
    @ivar pending: transaction id -> size of the envelopes committed with
        C{contentPending} over this connection whose C{contentCommitted}
        has not come yet.
    """

    def __init__(self, qmgr: IQueueManager, contentStore: Any = None) -> None:
        """
        @param contentStore: the L{IContentStore} QMGR reads (default: its
            C{contentStore}), to decide about the pending contents of an
            SMTPS process that went away.
        """
        QuietAMP.__init__(self)
        self.qmgr = qmgr
        if contentStore is None:
            contentStore = getattr(qmgr, "contentStore", None)
        self.contentStore = contentStore
        self.logger = getattr(qmgr, "logger", None) or Logger("qmgr")
        self.sessions = {}  # type: Dict[str, str]
        self.pending = {}  # type: Dict[str, int]
        self.budget = None  # type: Optional[int]

    def connectionMade(self) -> None:
        QuietAMP.connectionMade(self)
        factory = getattr(self, "factory", None)
        if isinstance(factory, QueueManagerServerFactory):
            factory.connected(self)

    def pushBudget(self, budget: int) -> None:
        """
        Tell SMTPS its budget (L{c.Acceptance}) if it changed much since
        the last: from or to 0, or by more than an eighth.
        """
        last = self.budget
        if last is not None and (last == 0) == (budget == 0):
            if abs(budget - last) * 8 <= last:
                return
        self.budget = budget
        if self.transport is not None:
            self.callRemote(c.Acceptance, budget=budget)

    def _refresh(self) -> None:
        factory = getattr(self, "factory", None)
        if isinstance(factory, QueueManagerServerFactory):
            factory.refresh()

    @c.SessionOpen.responder
    def sessionOpen(self, sessionId: str, clientAddress: str) -> Any:
        # SMTPS's budget is fresh before its first MAIL
        self._refresh()

        def opened(reply: Any) -> Dict[str, Any]:
            if reply is None:
                self.sessions[sessionId] = clientAddress
                return {"reply": None}
            return {"reply": checked(Reply, reply)}

        return _then(self.qmgr.sessionOpen, (sessionId, clientAddress), opened)

    @c.SessionClose.responder
    def sessionClose(self, sessionId: str, clientAddress: str) -> Any:
        self.sessions.pop(sessionId, None)
        self.qmgr.sessionClose(sessionId, clientAddress)
        return {}

    @c.CheckAcceptance.responder
    def checkAcceptance(self, size: int, sessionId: Optional[str] = None) -> Any:
        answer = _then(self.qmgr.checkAcceptance, (size, sessionId), _replyBox)
        self._refresh()
        return answer

    @c.CommitTransaction.responder
    def commitTransaction(self, envelope: Any) -> Any:
        # the one check of the envelope between SMTPS and IBDB
        data = checked(Envelope, envelope)
        self._refresh()
        # QueueManager's commit of a checked envelope, else the interface's
        commit = getattr(self.qmgr, "commitChecked", None)
        d = defer.maybeDeferred(commit or self.qmgr.commitTransaction, data)

        def committed(_: Any) -> Dict[str, Any]:
            if data.get("contentPending"):
                self.pending[data["id"]] = int(data.get("size") or 0)
            return {}

        return d.addCallback(committed)

    @c.ContentCommitted.responder
    def contentCommitted(self, transactionId: str, stored: bool) -> Any:
        # one-way: a failure is logged here, the connection goes on
        self.pending.pop(transactionId, None)
        try:
            d = self.qmgr.contentCommitted(transactionId, stored)
        except Exception:
            d = defer.fail()
        if isinstance(d, defer.Deferred):
            d.addErrback(self._contentFailed, transactionId, stored)
        return {}

    def _contentFailed(self, reason: Failure, transactionId: str, stored: bool) -> None:
        self.logger.error(
            "QueueManagerServer.contentCommitted",
            ss_ta=transactionId,
            stored=int(stored),
            error="%s: %s" % (type(reason.value).__name__, reason.value),
        )

    @c.Status.responder
    def status(self) -> Any:
        d = defer.maybeDeferred(self.qmgr.status)
        return d.addCallback(lambda s: {"status": _plain(s)})

    @c.ListQueue.responder
    def listQueue(self) -> Any:
        d = defer.maybeDeferred(self.qmgr.listQueue)
        return d.addCallback(lambda entries: {"entries": _plain(entries)})

    @c.Control.responder
    def control(
        self, command: str, recipient: Any, transactionId: Optional[str] = None
    ) -> Any:
        d = defer.maybeDeferred(
            self.qmgr.control, command, transactionId=transactionId, recipient=recipient
        )
        return d.addCallback(lambda result: {"result": _plain(result)})

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # type: ignore[assignment]
        factory = getattr(self, "factory", None)
        if isinstance(factory, QueueManagerServerFactory):
            factory.disconnected(self)
        sessions, self.sessions = self.sessions, {}
        for sessionId, clientAddress in sessions.items():
            self.qmgr.sessionClose(sessionId, clientAddress)
        pending, self.pending = self.pending, {}
        for transactionId, size in pending.items():
            self._settle(transactionId, size)
        QuietAMP.connectionLost(self, reason)

    def _settle(self, transactionId: str, size: int) -> None:
        """
        The SMTPS process went away between the commit of an envelope
        and that of its content: as recovery does after a crash
        (L{smx.queue.recovery}), the transaction goes on if its whole
        content is in CDB (SMTPS may have answered 250), else it is
        forgotten (it was not answered with 250).
        """
        try:
            stored = int(self.contentStore.size(transactionId)) == size
        except (AttributeError, KeyError, OSError, TypeError, ValueError):
            stored = False
        d = defer.maybeDeferred(self.qmgr.contentCommitted, transactionId, stored)
        d.addErrback(lambda f: None)


def _replyBox(reply: Any) -> Dict[str, Any]:
    return {"reply": None if reply is None else checked(Reply, reply)}


def _then(call: Any, args: Any, then: Any) -> Any:
    """
    C{then} of the result of C{call(*args)}: at once when the result is
    there (a value or a L{Deferred} that has fired with one), so that the
    answer goes without a chain of L{Deferred}s; else chained.
    """
    try:
        result = call(*args)
    except Exception:
        return Failure()
    if isinstance(result, defer.Deferred):
        if result.called and not result.paused:
            value = result.result
            if not isinstance(value, Failure):
                return then(value)
        return result.addCallback(then)
    return then(result)


class QueueManagerServerFactory(Factory):
    """
    QMGR's C{SMTPS_socket}: one L{QueueManagerServer} per SMTPS process,
    and the budgets pushed to them (see the module docstring).

    @ivar servers: the connected L{QueueManagerServer}s.
    """

    noisy = False
    #: seconds between two measurements of the state (the disk)
    interval = 0.1
    #: SMTPS processes together may admit this part of the free bytes
    #: above C{min_disk_space} without asking
    share = 4

    def __init__(self, qmgr: IQueueManager, contentStore: Any, clock: Any) -> None:
        self.qmgr = qmgr
        self.contentStore = contentStore
        self.clock = clock
        self.servers = []  # type: List[QueueManagerServer]
        self._measured = None  # type: Optional[float]
        self._state = getattr(qmgr, "acceptanceState", None)

    def buildProtocol(self, addr: Any) -> QueueManagerServer:
        proto = QueueManagerServer(self.qmgr, self.contentStore)
        proto.factory = self
        return proto

    def connected(self, server: QueueManagerServer) -> None:
        self.servers.append(server)
        self.refresh(force=True)

    def disconnected(self, server: QueueManagerServer) -> None:
        if server in self.servers:
            self.servers.remove(server)

    def refresh(self, force: bool = False) -> None:
        """
        Measure QMGR's state (at most every L{interval} seconds unless
        C{force}) and push each SMTPS process its budget if it changed.
        """
        if self._state is None or not self.servers:
            return
        now = self.clock.seconds()
        if not force and self._measured is not None:
            if 0 <= now - self._measured < self.interval:
                return
        self._measured = now
        try:
            reply, room = self._state()
        except Exception:
            self.servers[0].logger.failure(
                "QueueManagerServerFactory.refresh", Failure()
            )
            reply, room = None, 0
        budget = 0 if reply is not None else room // (self.share * len(self.servers))
        for server in list(self.servers):
            server.pushBudget(budget)


def queueManagerFactory(
    qmgr: IQueueManager, contentStore: Any = None, clock: Any = None
) -> Any:
    """
    The factory of QMGR's C{SMTPS_socket} (see L{QueueManagerServer}).

    @param clock: the reactor (default: C{qmgr}'s, else the global one).
    """
    if clock is None:
        clock = getattr(qmgr, "reactor", None)
    if clock is None:
        from twisted.internet import reactor as clock
    return QueueManagerServerFactory(qmgr, contentStore, clock)


@implementer(IQueueManager)
class QueueManagerProxy(service.MultiService):
    """
    QMGR in another process, as SMTPS sees it (see the module docstring).

    @ivar peer: the L{PeerConnection} to C{SMTPS_socket}.
    """

    name = "qmgr proxy"  # type: ignore[assignment]

    def __init__(
        self,
        reactor: Any,
        path: str,
        waitForServer: float,
        logger: Optional[Logger] = None,
    ) -> None:
        service.MultiService.__init__(self)
        self.logger = logger or Logger("smtps")
        self.peer = PeerConnection(
            reactor,
            path,
            lambda: _QueueManagerClient(self),
            waitForServer,
            "qmgr",
            self.logger,
        )
        self.peer.setServiceParent(self)
        self.budget = 0
        self._budgetFrom = None  # type: Any
        self._reserved = {}  # type: Dict[str, int]
        self._spent = 0

    def _pushed(self, proto: Any, budget: int) -> None:
        """QMGR sent its state (L{c.Acceptance}) over C{proto}."""
        self.budget = max(0, budget)
        self._budgetFrom = proto

    def _lostState(self, proto: Any) -> None:
        """The connection QMGR sent its state over ended."""
        if self._budgetFrom is proto:
            self.budget = 0
            self._budgetFrom = None
            self._reserved.clear()
            self._spent = 0

    def _release(self, sessionId: Optional[str]) -> None:
        if self._reserved and sessionId is not None:
            self._spent -= self._reserved.pop(sessionId, 0)

    def _unavailable(self, reason: Failure, call: str, answer: Any) -> Any:
        self.logger.warn(
            "QueueManagerProxy." + call, peer="qmgr", error=str(reason.value)
        )
        return answer

    def sessionOpen(self, sessionId, clientAddress):
        d = self.peer.callRemote(
            c.SessionOpen,
            idempotent=True,
            sessionId=sessionId,
            clientAddress=clientAddress,
        )
        d.addCallback(lambda r: _replyOut(r["reply"]))
        d.addErrback(self._unavailable, "sessionOpen", SESSION_UNAVAILABLE.toData())
        return d

    def sessionClose(self, sessionId, clientAddress):
        self._release(sessionId)
        if self.peer.protocol is None:
            return None  # a new QMGR does not know the session
        d = self.peer.callRemote(
            c.SessionClose, sessionId=sessionId, clientAddress=clientAddress
        )
        d.addErrback(lambda f: None)
        # on the wire before SMTPS's last reply to the client, whose next
        # session (perhaps through another SMTPS) must not find it open
        sendNow(self.peer.protocol)
        return None

    def checkAcceptance(self, size, sessionId=None):
        self._release(sessionId)
        size = max(0, int(size or 0))
        if (
            self.budget
            and sessionId is not None
            and self._spent + size <= self.budget
            and self._budgetFrom is self.peer.protocol
        ):
            # within what QMGR lets this process admit: no round trip
            if size:
                self._reserved[sessionId] = size
                self._spent += size
            return succeeded(None)
        d = self.peer.callRemote(
            c.CheckAcceptance, idempotent=True, size=size, sessionId=sessionId
        )
        d.addCallback(lambda r: _replyOut(r["reply"]))
        d.addErrback(
            self._unavailable, "checkAcceptance", TRANSACTION_UNAVAILABLE.toData()
        )
        return d

    def commitTransaction(self, envelope):
        # SMTPS made the envelope; QMGR's server checks it (once)
        try:
            self._release(envelope.get("session"))
        except AttributeError:
            return defer.fail(ValueError("bad envelope: not a mapping"))
        d = self.peer.callRemote(c.CommitTransaction, envelope=envelope)
        return d.addCallbacks(_none, _gone)

    def contentCommitted(self, transactionId, stored):
        # one-way: QMGR logs an unknown transaction; without a connection
        # the QMGR that had the envelope settled it when SMTPS went away
        # (its server's connectionLost), a new one by its recovery
        if self.peer.protocol is None or self.peer.protocol.transport is None:
            self.logger.warn(
                "QueueManagerProxy.contentCommitted",
                peer="qmgr",
                ss_ta=transactionId,
                error="no connection",
            )
            return succeeded(None)
        return self.peer.callRemote(
            c.ContentCommitted, transactionId=transactionId, stored=bool(stored)
        )

    def status(self):
        return self.peer.callRemote(c.Status, idempotent=True).addCallback(
            lambda r: r["status"]
        )

    def listQueue(self):
        return self.peer.callRemote(c.ListQueue, idempotent=True).addCallback(
            lambda r: r["entries"]
        )

    def control(self, command, transactionId=None, recipient=None):
        d = self.peer.callRemote(
            c.Control,
            command=command,
            transactionId=transactionId,
            recipient=recipient,
        )
        return d.addCallback(lambda r: r["result"])


def _replyOut(data: Any) -> Any:
    return None if data is None else checked(Reply, data)


def _none(_: Any) -> None:
    return None


def _gone(reason: Failure) -> Failure:
    """
    No answer from QMGR (none reached, or the connection ended first):
    L{QueueManagerUnavailable}; other failures as they are.
    """
    if reason.check(PeerUnavailable, *GONE):
        return Failure(QueueManagerUnavailable("qmgr: %s" % (reason.value,)))
    return reason


class _QueueManagerClient(QuietAMP):
    """
    SMTPS's connection to QMGR: takes QMGR's state (L{c.Acceptance}) for
    the proxy.
    """

    def __init__(self, proxy: QueueManagerProxy) -> None:
        QuietAMP.__init__(self)
        self.proxy = proxy

    @c.Acceptance.responder
    def acceptance(self, budget: int) -> Any:
        self.proxy._pushed(self, budget)
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # type: ignore[assignment]
        self.proxy._lostState(self)
        QuietAMP.connectionLost(self, reason)
