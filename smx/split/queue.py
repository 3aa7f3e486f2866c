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
    with the in-process queue manager.  Every envelope and reply is
    checked and converted with L{smx.values} on both sides.

    When QMGR cannot be reached within C{waitForServer} (it is being
    restarted), the proxy refuses instead of accepting: C{sessionOpen}
    answers 421 4.3.2 and C{checkAcceptance} 451 4.3.0 (SMTPS sends them
    to the client), C{commitTransaction} fails (SMTPS answers 451 to the
    final dot, and removes the content): a message is answered with 250
    only once the QMGR that took it has it on stable storage.

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
from typing import Any, Dict, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.internet.protocol import Factory, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from smx.interfaces import IQueueManager
from smx.log import Logger
from smx.split import commands as c
from smx.split.peer import PeerConnection, QuietAMP
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
        self.sessions = {}  # type: Dict[str, str]
        self.pending = {}  # type: Dict[str, int]

    @c.SessionOpen.responder
    def sessionOpen(self, sessionId: str, clientAddress: str) -> Any:
        d = defer.maybeDeferred(self.qmgr.sessionOpen, sessionId, clientAddress)

        def opened(reply: Any) -> Dict[str, Any]:
            if reply is None:
                self.sessions[sessionId] = clientAddress
                return {"reply": None}
            return {"reply": checked(Reply, reply)}

        return d.addCallback(opened)

    @c.SessionClose.responder
    def sessionClose(self, sessionId: str, clientAddress: str) -> Any:
        self.sessions.pop(sessionId, None)
        self.qmgr.sessionClose(sessionId, clientAddress)
        return {}

    @c.CheckAcceptance.responder
    def checkAcceptance(self, size: int, sessionId: Optional[str] = None) -> Any:
        d = defer.maybeDeferred(self.qmgr.checkAcceptance, size, sessionId)
        return d.addCallback(lambda reply: {"reply": _replyData(reply)})

    @c.CommitTransaction.responder
    def commitTransaction(self, envelope: Any) -> Any:
        data = checked(Envelope, envelope)
        d = defer.maybeDeferred(self.qmgr.commitTransaction, data)

        def committed(_: Any) -> Dict[str, Any]:
            if data.get("contentPending"):
                self.pending[data["id"]] = int(data.get("size") or 0)
            return {}

        return d.addCallback(committed)

    @c.ContentCommitted.responder
    def contentCommitted(self, transactionId: str, stored: bool) -> Any:
        self.pending.pop(transactionId, None)
        d = defer.maybeDeferred(self.qmgr.contentCommitted, transactionId, stored)
        return d.addCallback(lambda _: {})

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


def _replyData(reply: Any) -> Any:
    return None if reply is None else checked(Reply, reply)


def queueManagerFactory(qmgr: IQueueManager, contentStore: Any = None) -> Any:
    """
    The factory of QMGR's C{SMTPS_socket} (see L{QueueManagerServer}).
    """
    factory = Factory.forProtocol(  # type: ignore[arg-type]
        lambda: QueueManagerServer(qmgr, contentStore)
    )
    factory.noisy = False
    return factory


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
            reactor, path, QuietAMP, waitForServer, "qmgr", self.logger
        )
        self.peer.setServiceParent(self)

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
        if self.peer.protocol is None:
            return None  # a new QMGR does not know the session
        d = self.peer.callRemote(
            c.SessionClose, sessionId=sessionId, clientAddress=clientAddress
        )
        d.addErrback(lambda f: None)
        return None

    def checkAcceptance(self, size, sessionId=None):
        d = self.peer.callRemote(
            c.CheckAcceptance, idempotent=True, size=size, sessionId=sessionId
        )
        d.addCallback(lambda r: _replyOut(r["reply"]))
        d.addErrback(
            self._unavailable, "checkAcceptance", TRANSACTION_UNAVAILABLE.toData()
        )
        return d

    def commitTransaction(self, envelope):
        try:
            data = checked(Envelope, envelope)
        except ValueError as e:
            return defer.fail(e)
        return self.peer.callRemote(c.CommitTransaction, envelope=data).addCallback(
            lambda _: None
        )

    def contentCommitted(self, transactionId, stored):
        d = self.peer.callRemote(
            c.ContentCommitted, transactionId=transactionId, stored=bool(stored)
        )
        return d.addCallback(lambda _: None)

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
