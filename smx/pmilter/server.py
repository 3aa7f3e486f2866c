# -*- test-case-name: smx.pmilter.test.test_remote,smx.pmilter.test.test_integration_pmilterserver -*-
"""
NAME
    smx.pmilter.server - pmilters served over a Unix socket (App. B.2)

SYNOPSIS
    factory = PolicyMilterServerFactory([greylist], reactor, timeout=10,
                                        log=log, options={"greylist": {...}})
    port = listenPolicyMilter(reactor, "/var/spool/smx/pmilter.sock",
                              factory, backlog=50)

DESCRIPTION
    The server side of the protocol of L{smx.pmilter.protocol}: every
    connection is one SMTP server (App. B.1 C{pmss_ctx}), for which a
    L{smx.pmilter.host.PolicyMilterHost} negotiates with the pmilters when
    the SMTP server sends C{Negotiate}.  The commands of each session are
    the calls of that host's sessions, which answer with decisions.  A
    connection that ends closes its sessions (C{abort}, C{close} to the
    pmilters).

    The host applies the server's timeout to every call of a pmilter
    (App. B.2 C{sm_pmfi_settimeout}) and the failure policy the SMTP
    server sent; a failure is logged here, with the pmilter's name.

CONFIGURATION PARAMETERS
    See C{smx pmilter-server} (L{smx.scripts.pmilterserver}).

SECURITY
    The socket is created mode 0660 (whoever can connect can ask the
    pmilters anything); its directory should be that of the SMTP server's
    user.  A file that is not a socket is never removed.

DIAGNOSTICS
    L{SocketInUse} (an C{OSError}): another server answers on the socket,
    or the path names something else than a socket.
"""

from __future__ import annotations

import errno
import os
import socket as _socket
import stat
from typing import Any, Dict, Mapping, Optional, Sequence

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import Factory, connectionDone
from twisted.python.failure import Failure

from smx.interfaces import IPolicyMilter, IPolicyMilterSession
from smx.log import Logger
from smx.pmilter.api import CAPABILITIES, STAGES
from smx.pmilter.decision import FAILURE_POLICIES, TEMPFAIL
from smx.pmilter.host import PolicyMilterHost, pmilterName, reloadPolicyMilters
from smx.pmilter.protocol import (
    PROTOCOL_VERSION,
    Abort,
    Body,
    Close,
    Connect,
    Data,
    Eom,
    Helo,
    Mail,
    Negotiate,
    NotNegotiated,
    Rcpt,
    Reload,
    Unknown,
    UnknownSession,
    VersionMismatch,
    decisionFields,
)
from smx.queue.control import QuietAMP
from smx.unixsocket import socketName


class SocketInUse(OSError):
    """
    The socket path is taken: a server answers on it, or it is not a
    socket.
    """


def makeAddress(family: str, host: Optional[str], port: Optional[int]) -> Any:
    """
    The client address of a session from its fields (the inverse of
    L{addressFields}).
    """
    if family == "INET" and host is not None:
        return IPv4Address("TCP", host, port or 0)
    if family == "INET6" and host is not None:
        return IPv6Address("TCP", host, port or 0)
    if family == "UNIX":
        return UNIXAddress(host)
    return None


def addressFields(address: Any) -> Dict[str, Any]:
    """
    The fields of L{Connect} for a client address.
    """
    if isinstance(address, IPv4Address):
        return {"family": "INET", "host": address.host, "port": address.port}
    if isinstance(address, IPv6Address):
        return {"family": "INET6", "host": address.host, "port": address.port}
    if isinstance(address, UNIXAddress):
        name = address.name
        text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        return {"family": "UNIX", "host": text}
    return {"family": "NONE"}


class PolicyMilterServerProtocol(QuietAMP):
    """
    One SMTP server connected to the pmilter server.
    """

    def __init__(self, factory: "PolicyMilterServerFactory") -> None:
        QuietAMP.__init__(self)
        self.factory = factory
        self.host = None  # type: Optional[PolicyMilterHost]
        self.sessions = {}  # type: Dict[int, IPolicyMilterSession]

    def _debug(self, command: str, session: Optional[int] = None) -> None:
        self.factory.log.debug(level=12, pmilter_cmd=command, session=session)

    @Negotiate.responder
    def negotiate(self, version, hostname, stages, capabilities, onFailure):
        self._debug("negotiate")
        if version != PROTOCOL_VERSION:
            raise VersionMismatch(
                "protocol version %d, this server speaks %d"
                % (version, PROTOCOL_VERSION)
            )
        if self.host is not None and self.sessions:
            raise NotNegotiated("negotiated again with sessions open")
        f = self.factory
        self.host = PolicyMilterHost(
            f.pmilters,
            f.reactor,
            f.timeout,
            onFailure if onFailure in FAILURE_POLICIES else TEMPFAIL,
            hostname,
            f.log,
            f.options,
            [s for s in stages if s in STAGES],
            [c for c in capabilities if c in CAPABILITIES],
        )
        host = self.host
        return host.negotiate().addCallback(
            lambda _: {
                "version": PROTOCOL_VERSION,
                "pmilters": [pmilterName(p) for p in f.pmilters],
                "wants": sorted(host.wanted()),
            }
        )

    def _session(self, session: int) -> IPolicyMilterSession:
        try:
            return self.sessions[session]
        except KeyError:
            raise UnknownSession("no session %d" % (session,))

    @Connect.responder
    def connect(self, session, sessionId, family, hostname=None, host=None, port=None):
        self._debug("connect", session)
        if self.host is None:
            raise NotNegotiated("Connect before Negotiate")
        if session in self.sessions:
            raise UnknownSession("session %d is open already" % (session,))
        pmhost = self.host
        s = pmhost.openSession(sessionId)
        self.sessions[session] = s
        d = s.connect(hostname, makeAddress(family, host, port))
        return d.addCallback(
            lambda decision: dict(
                decisionFields(decision), wants=sorted(pmhost.wanted())
            )
        )

    @Helo.responder
    def helo(self, session, helohost):
        self._debug("helo", session)
        return self._session(session).helo(helohost).addCallback(decisionFields)

    @Mail.responder
    def mail(self, session, address, args, transactionId=None):
        self._debug("mail", session)
        d = self._session(session).mail(address, args, transactionId)
        return d.addCallback(decisionFields)

    @Rcpt.responder
    def rcpt(self, session, address, args, status):
        self._debug("rcpt", session)
        d = self._session(session).rcpt(address, args, status)
        return d.addCallback(decisionFields)

    @Data.responder
    def data(self, session):
        self._debug("data", session)
        return self._session(session).data().addCallback(decisionFields)

    @Unknown.responder
    def unknown(self, session, command):
        self._debug("unknown", session)
        return self._session(session).unknown(command).addCallback(decisionFields)

    @Body.responder
    def body(self, session, chunk):
        self._debug("body", session)
        return self._session(session).body(chunk).addCallback(lambda _: {})

    @Eom.responder
    def eom(self, session, messageId=None):
        self._debug("eom", session)
        return self._session(session).eom(messageId).addCallback(decisionFields)

    @Abort.responder
    def abort(self, session):
        self._debug("abort", session)
        return self._session(session).abort().addCallback(lambda _: {})

    @Close.responder
    def close(self, session):
        self._debug("close", session)
        s = self._session(session)
        del self.sessions[session]
        return s.close().addCallback(lambda _: {})

    @Reload.responder
    def reload(self):
        self._debug("reload")
        self.factory.reload()
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        QuietAMP.connectionLost(self, reason)
        sessions, self.sessions = self.sessions, {}
        for s in sessions.values():
            s.close()
        self.factory.connections.discard(self)


class PolicyMilterServerFactory(Factory):
    """
    Serves pmilters to the SMTP servers that connect.

    @ivar pmilters: the pmilters, in the order they are asked.
    @ivar timeout: seconds each call of a pmilter may take.
    @ivar options: C{{pmilter name: settings}} (C{server.options}).
    """

    noisy = False

    def __init__(
        self,
        pmilters: Sequence[IPolicyMilter],
        reactor: Any,
        timeout: float,
        log: Logger,
        options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    ) -> None:
        self.pmilters = list(pmilters)
        self.reactor = reactor
        self.timeout = timeout
        self.log = log
        self.options = dict(options or {})
        self.connections = set()  # type: set

    def buildProtocol(self, addr: Any) -> PolicyMilterServerProtocol:
        p = PolicyMilterServerProtocol(self)
        self.connections.add(p)
        return p

    def reload(self) -> None:
        """
        Call C{reload()} of every pmilter that has one (SIGUSR1).
        """
        reloadPolicyMilters(self.pmilters, self.log)

    def closeAll(self) -> defer.Deferred:
        """
        Drop every connection (their sessions are closed).
        """
        for p in list(self.connections):
            if p.transport is not None:
                p.transport.loseConnection()
        return defer.succeed(None)


def _inUse(path: str) -> bool:
    """
    Does a server answer on the Unix socket C{path}?
    """
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(socketName(path))
    except OSError as e:
        return e.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        s.close()
    return True


def listenPolicyMilter(
    reactor: Any, path: str, factory: Factory, backlog: int = 50
) -> Any:
    """
    Listen on the Unix socket C{path} (App. B.2 C{sm_pmfi_setconn},
    C{sm_pmfi_setbacklog}); a stale socket file is replaced.

    @return: the listening port.
    @raise SocketInUse: another server answers there, or C{path} is not
        a socket.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUse(errno.EEXIST, "%s exists and is not a socket" % (path,))
        if _inUse(path):
            raise SocketInUse(
                errno.EADDRINUSE, "%s: another server listens on it" % (path,)
            )
        os.unlink(path)
    return reactor.listenUNIX(socketName(path), factory, backlog=backlog, mode=0o660)
