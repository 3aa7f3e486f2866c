# -*- test-case-name: smx.queue.test.test_integration_control -*-
"""
NAME
    smx.queue.control - the QMGR control socket (AMP over a Unix socket)

SYNOPSIS
    port = listenControl(reactor, "/var/spool/smx/qmgrctl.sock", qmgr)
    d = callControl(reactor, path, "status")          # -> dict
    d = callControl(reactor, path, "list")            # -> list
    d = callControl(reactor, path, "hold", "S...", None)

DESCRIPTION
    The commands of C{smx qmgrctl} and C{smx mailq} (seed §6.6.2, §6.6.3):
    C{Status}, C{ListQueue} (paged, so that no AMP value exceeds its 64 KB
    limit) and C{Control} (flush, hold, release, delete, reload).  Results
    travel as JSON text.

CONFIGURATION PARAMETERS
    control_socket (qmgr)

SECURITY
    The socket is created mode 0660; whoever can connect can change the
    queue, so its directory must be protected (seed §4.1).

DIAGNOSTICS
    An unknown transaction or recipient is a C{KeyError} error; a bad
    command a C{ValueError} error; both reach the client as one line.
"""

from __future__ import annotations

import json
import os
from typing import Any, List

from twisted.internet import defer, endpoints
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure

from smx.interfaces import IQueueManager
from smx.unixsocket import socketName

#: at most this many characters of JSON in one AMP value (limit 65535)
PAGE_BYTES = 60000


class Status(amp.Command):
    arguments = []  # type: ignore[misc]
    response = [(b"json", amp.Unicode())]


class ListQueue(amp.Command):
    arguments = [(b"start", amp.Integer())]
    response = [(b"json", amp.Unicode()), (b"next", amp.Integer())]


class UnknownTransaction(Exception):
    pass


class BadCommand(Exception):
    pass


class Control(amp.Command):
    arguments = [
        (b"command", amp.Unicode()),
        (b"transaction", amp.Unicode(optional=True)),
        (b"recipient", amp.Unicode(optional=True)),
    ]
    response = [(b"json", amp.Unicode())]
    errors = {UnknownTransaction: b"UNKNOWN", BadCommand: b"BAD"}


#: the name C{status} gives the local destination (LMTP over the Unix
#: socket C{LMTP_socket}), which the scheduler keys by the empty string
LOCAL_DESTINATION = "local (LMTP_socket)"


class QuietAMP(amp.AMP):
    """
    AMP without the two lines per connection ("connection established",
    "connection lost") that C{amp.AMP} logs: every C{smx qmgrctl} and
    C{smx mailq} call would leave them in smx's log.
    """

    def makeConnection(self, transport: Any) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None


class ControlServer(QuietAMP):
    """
    The server side: answers with the queue manager's methods.
    """

    def __init__(self, qmgr: IQueueManager) -> None:
        amp.AMP.__init__(self)
        self.qmgr = qmgr

    @Status.responder
    def status(self):
        return self.qmgr.status().addCallback(
            lambda s: {"json": json.dumps(presentStatus(s))}
        )

    @ListQueue.responder
    def listQueue(self, start):
        def page(entries):
            parts = []  # type: List[str]
            size = 2
            i = start
            while i < len(entries):
                text = json.dumps(entries[i])
                if parts and size + len(text) + 2 > PAGE_BYTES:
                    break
                parts.append(text)
                size += len(text) + 2
                i += 1
            nxt = i if i < len(entries) else -1
            return {"json": "[" + ", ".join(parts) + "]", "next": nxt}

        return self.qmgr.listQueue().addCallback(page)

    @Control.responder
    def control(self, command, transaction=None, recipient=None):
        d = self.qmgr.control(command, transaction, recipient)

        def _eb(failure):
            if failure.check(KeyError):
                raise UnknownTransaction(str(failure.value.args[0]))
            if failure.check(ValueError):
                raise BadCommand(str(failure.value))
            return failure

        return d.addCallbacks(lambda r: {"json": json.dumps(r)}, _eb)


def presentStatus(status: dict) -> dict:
    """
    The status of QMGR as the control socket presents it: the local
    destination named L{LOCAL_DESTINATION} instead of the empty string.
    """
    destinations = status.get("destinations")
    if isinstance(destinations, dict) and "" in destinations:
        status = dict(status)
        destinations = dict(destinations)
        destinations[LOCAL_DESTINATION] = destinations.pop("")
        status["destinations"] = destinations
    return status


def listenControl(reactor: Any, path: str, qmgr: IQueueManager) -> Any:
    """
    Listen on the Unix socket C{path} (a stale socket file is replaced).

    @return: the listening port.
    """
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    factory = Factory.forProtocol(lambda: ControlServer(qmgr))
    factory.noisy = False
    return reactor.listenUNIX(socketName(path), factory, mode=0o660)


@defer.inlineCallbacks
def callControl(
    reactor: Any,
    path: str,
    command: str,
    transaction: Any = None,
    recipient: Any = None,
):
    """
    Connect to the control socket and run one command: C{"status"},
    C{"list"} or a L{Control} command.

    @return: a L{Deferred} firing with the decoded result.
    """
    endpoint = endpoints.UNIXClientEndpoint(reactor, socketName(path), timeout=10)
    proto = yield endpoints.connectProtocol(endpoint, QuietAMP())
    try:
        if command == "status":
            r = yield proto.callRemote(Status)
            result = json.loads(r["json"])
        elif command == "list":
            result = []
            start = 0
            while start >= 0:
                r = yield proto.callRemote(ListQueue, start=start)
                result.extend(json.loads(r["json"]))
                start = r["next"]
        else:
            kwargs = {"command": command}
            if transaction is not None:
                kwargs["transaction"] = str(transaction)
            if recipient is not None:
                kwargs["recipient"] = str(recipient)
            r = yield proto.callRemote(Control, **kwargs)
            result = json.loads(r["json"])
    finally:
        proto.transport.loseConnection()
    return result
