# -*- test-case-name: smx.mcp.test.test_sockets -*-
"""
NAME
    smx.mcp.sockets - the sockets the MCP binds and passes on

SYNOPSIS
    sock = bindService(service)                 # port or socket { name }
    server = PassingServer(service, sock)       # mcp_type = pass
    server.start(reactor)
    fd = receiveListeningSocket("smtps/smtpsfd")  # in the SMTPS process

DESCRIPTION
    The MCP runs as root and binds the sockets of its services before it
    starts any of them (seed §5.2): a TCP C{port} on C{address}, or the
    Unix socket of C{socket { name umask user group }}.

    For C{mcp_type = pass} it listens on C{pass_fd_socket} (a Unix
    socket of mode 0600, owned by the service's user, so only that user
    can connect) and sends the listening socket to every process that
    connects, with SCM_RIGHTS (C{sendmsg(2)}), together with one byte
    C{b"F"}.  Each SMTPS process calls L{receiveListeningSocket} once at
    start and then accepts connections on the descriptor itself
    (C{reactor.adoptStreamPort}); the kernel spreads the connections
    over the processes.

SECURITY
    The listening socket is passed only over C{pass_fd_socket}, whose
    directory the MCP checked (L{smx.mcp.settings.checkSocketDirectory}).

DIAGNOSTICS
    A port in use or a socket that cannot be made is a L{ListenError}
    naming the section and option.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from typing import Any, Optional

from twisted.internet import protocol

from smx.mcp.settings import ServiceSettings

#: the byte sent with the descriptor
PASSED = b"F"
#: the backlog of the sockets the MCP listens on for its services
BACKLOG = 1024


class ListenError(Exception):
    """
    A socket of a service cannot be bound; the message is one line that
    names the section and option.
    """


def _removeStaleSocket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def bindService(service: ServiceSettings) -> socket.socket:
    """
    Bind and listen on the socket of C{service}: its C{port} on
    C{address}, or its C{socket { name }} with C{umask}, C{user} and
    C{group}.

    @raise ListenError: if it cannot.
    """
    if service.port is not None:
        family = socket.AF_INET6 if ":" in service.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((service.address, service.port))
            sock.listen(BACKLOG)
        except OSError as e:
            sock.close()
            raise ListenError(
                "option 'port' in section '%s' (%s): cannot listen on %s:%d: %s"
                % (
                    service.name,
                    service.where,
                    service.address,
                    service.port,
                    e.strerror or e,
                )
            )
        return sock
    assert service.socketName is not None
    path = service.socketName
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(service.socketUmask) if service.socketUmask is not None else None
    try:
        _removeStaleSocket(path)
        sock.bind(path)
        if service.socketUid is not None or service.socketGid is not None:
            os.chown(
                path,
                -1 if service.socketUid is None else service.socketUid,
                -1 if service.socketGid is None else service.socketGid,
            )
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise ListenError(
            "option 'socket' in section '%s' (%s): cannot listen on %s: %s"
            % (service.name, service.where, path, e.strerror or e)
        )
    finally:
        if old is not None:
            os.umask(old)
    return sock


class _Sender(protocol.Protocol):
    """
    Send the listening socket to the process that connected, then hang up.
    """

    def connectionMade(self) -> None:
        self.transport.sendFileDescriptor(self.factory.fileno)  # type: ignore
        self.transport.write(PASSED)  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]
        self.factory.passed += 1


class PassingServer(protocol.ServerFactory):
    """
    The C{pass_fd_socket} of one service (C{mcp_type = pass}).

    @ivar fileno: the descriptor passed.
    @ivar passed: how many times it was.
    """

    protocol = _Sender

    def __init__(self, service: ServiceSettings, listening: socket.socket) -> None:
        self.service = service
        self.listening = listening
        self.fileno = listening.fileno()
        self.passed = 0
        self.port: Any = None

    def start(self, reactor: Any) -> None:
        """
        Listen on C{pass_fd_socket}: mode 0600, owned by the service's
        user and group.

        @raise ListenError: if it cannot.
        """
        path = self.service.passFdSocket
        assert path is not None
        try:
            _removeStaleSocket(path)
            self.port = reactor.listenUNIX(path, self, mode=0o600)
            if self.service.uid is not None or self.service.gid is not None:
                os.chown(
                    path,
                    -1 if self.service.uid is None else self.service.uid,
                    -1 if self.service.gid is None else self.service.gid,
                )
        except Exception as e:
            raise ListenError(
                "option 'pass_fd_socket' in section '%s' (%s): cannot listen on "
                "%s: %s" % (self.service.name, self.service.where, path, e)
            )

    def stop(self) -> Any:
        """
        Stop listening and remove the socket.
        """
        if self.port is None:
            return None
        port, self.port = self.port, None
        return port.stopListening()


def receiveListeningSocket(path: str, timeout: float = 10.0) -> int:
    """
    Get the listening socket the MCP passes over C{path} (in an SMTPS
    process, before the reactor runs).

    @param timeout: how long to retry while the socket is not there yet.
    @return: the descriptor, non-blocking.
    @raise OSError: if no descriptor arrives.
    """
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        except BaseException:
            sock.close()
            raise
    try:
        sock.settimeout(max(1.0, deadline - time.monotonic()))
        data, fds, flags, address = socket.recv_fds(sock, 16, 4)
    finally:
        sock.close()
    if not fds:
        raise OSError(errno.EPROTO, "no socket passed", path)
    for extra in fds[1:]:
        os.close(extra)
    os.set_blocking(fds[0], False)
    return fds[0]


def socketFamily(fd: int) -> int:
    """
    The address family (C{AF_INET}, C{AF_INET6}, C{AF_UNIX}) of the
    socket C{fd}, as C{reactor.adoptStreamPort} needs it.
    """
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return int(sock.family)
    finally:
        sock.close()


def describeAddress(service: ServiceSettings) -> Optional[str]:
    """
    Where C{service} listens, for display: C{"127.0.0.1:25"}, a socket
    path, or C{None}.
    """
    if service.port is not None:
        return "%s:%d" % (service.address, service.port)
    return service.socketName
