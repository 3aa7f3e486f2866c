# -*- test-case-name: smx.mcp.test.test_control -*-
"""
NAME
    smx.mcp.control - the control socket of the MCP

SYNOPSIS
    ControlService(supervisor, "/var/spool/smx/mcp.ctl").setServiceParent(mcp)
    reply = ask("/var/spool/smx/mcp.ctl", "status")    # in smx mcpctl

DESCRIPTION
    The MCP listens on C{MCP_control_socket} (global section, default
    C{mcp.ctl} in the main queue directory), a Unix socket of mode 0600
    owned by the MCP's user (root).  A client sends one line, a command
    and its arguments separated by blanks, and reads one line of JSON
    back; then the MCP closes the connection:

        status          {"processes": [{"name", "id", "user", "pid",
                        "state", "restarts", "type", "last_status"}, ...]}
        restart NAME    {"ok": "restarted NAME"}  (with its restartdependencies)
        stop NAME       {"ok": "stopped NAME"}

    A bad command or an unknown service is C{{"error": "..."}}.

SECURITY
    Only root (the MCP's user) can connect: the commands start and stop
    the programs of every other user.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from typing import Any, Dict

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.protocols.basic import LineOnlyReceiver

#: the longest command line read
MAX_LINE = 1024


class _ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def lineReceived(self, line: bytes) -> None:
        d = defer.maybeDeferred(
            self.factory.answer, line.decode("utf-8", "replace")  # type: ignore
        )
        d.addCallback(self._cbReply)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._cbReply({"error": "command too long"})

    def _cbReply(self, reply: Dict[str, Any]) -> None:
        self.sendLine(json.dumps(reply, sort_keys=True).encode("utf-8"))
        self.transport.loseConnection()  # type: ignore[union-attr]


class ControlService(service.Service, protocol.ServerFactory):
    """
    The control socket of a L{smx.mcp.supervisor.ProcessSupervisor}.
    """

    name = "mcp control"  # type: ignore[assignment]
    protocol = _ControlProtocol

    def __init__(self, supervisor: Any, path: str, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.supervisor = supervisor
        self.path = path
        self.reactor = reactor
        self.port: Any = None

    def startService(self) -> None:
        service.Service.startService(self)
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.port = self.reactor.listenUNIX(self.path, self, mode=0o600)

    def stopService(self) -> Any:
        service.Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None

    def answer(self, line: str) -> Any:
        """
        Carry out one command line.

        @return: the reply (a C{dict}), or a L{Deferred} of it.
        """
        words = line.split()
        command = words[0].lower() if words else "status"
        if command == "status" and len(words) <= 1:
            d = self.supervisor.processes()
            return d.addCallback(lambda found: {"processes": found})
        if command in ("restart", "stop") and len(words) == 2:
            name = words[1]
            d = getattr(self.supervisor, command)(name)
            done = "restarted" if command == "restart" else "stopped"
            d.addCallback(lambda _: {"ok": "%s %s" % (done, name)})
            d.addErrback(
                lambda f: (f.trap(KeyError) and {"error": "no service %r" % (name,)})
            )
            return d
        return {
            "error": "unknown command %r (status, restart NAME, stop NAME)" % (line,)
        }


def ask(path: str, command: str, timeout: float = 60.0) -> Dict[str, Any]:
    """
    Send C{command} to the MCP's control socket at C{path}.

    @return: its reply.
    @raise OSError: if the MCP cannot be reached.
    @raise ValueError: if the reply is not JSON.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(command.encode("utf-8") + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        sock.close()
    return json.loads(b"".join(chunks).decode("utf-8"))
