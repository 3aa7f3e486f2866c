# -*- test-case-name: smx.split.test.test_service -*-
"""
NAME
    smx.split.service - one component of smx as a process of its own

SYNOPSIS
    service = makeComponentService(configuration, "qmgr")
    service = makeComponentService(configuration, "smtps", instanceId=1,
                                   listeningFd=fd)

DESCRIPTION
    Builds the service tree of ONE component for split mode (seed §1.4,
    §5.2): the component's in-process object, the AMP servers that expose
    it on its sockets and the AMP proxies of the components it calls
    (L{smx.split.queue}, L{smx.split.resolver}, L{smx.split.delivery}).
    The proxies provide the same Interfaces as the in-process objects, so
    the components are built exactly as in embedded mode
    (L{smx.components}).

        - C{smar}: the address resolver, listening on C{SMAR_socket}.
        - C{qmgr}: the queue manager with CDB, IBDB and DEFEDB; calls SMAR
          through C{SMAR_socket} (waiting at most QMGR's
          C{wait_for_server} for it) and the SMTPC processes that connect
          to C{SMTPC_socket} (waiting at most C{wait_for_client} for
          one); listens on C{SMTPS_socket} for the SMTPS processes once
          its queue is recovered.  The pickup of C{smx sendmail}'s
          maildrop runs here too.
        - C{smtpc}: the delivery agent(s) of the C{smtpc} sections;
          connects to C{SMTPC_socket} (retrying while QMGR restarts) and
          delivers what QMGR hands it.
        - C{smtps}: the SMTP server(s) of the C{smtps} sections (those
          C{-N} selects); calls QMGR through C{SMTPS_socket} and SMAR
          through C{SMAR_socket}, each waited for at most QMGR's
          C{wait_for_client} and C{wait_for_server}.  With C{listeningFd}
          (the socket the MCP bound and passed, C{mcp_type = pass}) it
          serves that socket (C{reactor.adoptStreamPort}) instead of
          binding its own addresses.  With C{instanceId} the 8-bit process
          id in its session and transaction ids (App. C.1) is the
          section's C{id} plus the instance id, so that several SMTPS
          processes never make the same transaction id (the name of its
          CDB file).

CONFIGURATION PARAMETERS
    global: SMAR_socket, SMTPC_socket, SMTPS_socket (seed §5.4).
    qmgr: wait_for_server, wait_for_client.  smtpc: wait_for_server.

SECURITY
    The sockets are created mode 0660 in their directories; who may
    connect is decided by the owner and group of those directories (seed
    §4.1, made by C{smx setup}).

DIAGNOSTICS
    L{smx.components.ComponentError} (one line for the user) when the
    component cannot be built: an unknown component name, a map or
    certificate that cannot be used.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Dict, List, Optional

from twisted.application import service
from twisted.internet import tcp

from smx import net
from smx.turn import runBeforePoll
from smx.components import ComponentError, _ResolverService
from smx.log import Logger, loggerFromConfiguration
from smx.split.peer import listenSocket

#: the components makeComponentService builds
COMPONENTS = ("qmgr", "smtps", "smtpc", "smar")


class SocketServer(service.Service):
    """
    Listens on a Unix socket of split mode with a factory while running.
    """

    def __init__(self, reactor: Any, path: str, factory: Any, name: str) -> None:
        self.reactor = reactor
        self.path = path
        self.factory = factory
        self.setName(name)
        self.port = None  # type: Any

    def startService(self) -> None:
        service.Service.startService(self)
        self.port = listenSocket(self.reactor, self.path, self.factory)

    def stopService(self) -> Any:
        service.Service.stopService(self)
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


def _threadPool(reactor: Any) -> Any:
    getThreadPool = getattr(reactor, "getThreadPool", None)
    return getThreadPool() if getThreadPool is not None else None


def makeComponentService(
    configuration: Any,
    component: str,
    instanceId: Optional[int] = None,
    listeningFd: Optional[int] = None,
    reactor: Any = None,
    installSignals: bool = True,
) -> service.IService:
    """
    Build the service of one component for split mode (see the module
    docstring).

    @param configuration: an L{smx.config} configuration (reconciled).
    @param component: C{"qmgr"}, C{"smtps"}, C{"smtpc"} or C{"smar"}.
    @param instanceId: the process's id from the MCP's C{pass_id}, or
        C{None}.
    @param listeningFd: for C{smtps}, a listening TCP socket to serve.
    @param reactor: the reactor (default: the global one).
    @param installSignals: handle SIGTERM, SIGUSR1, SIGUSR2 (as C{twistd
        smx} does).
    @return: an L{smx.tap.SmxService} with C{components} set.
    @raise ComponentError: the component cannot be built.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    if component not in COMPONENTS:
        raise ComponentError(
            "unknown component %r (one of %s)" % (component, ", ".join(COMPONENTS))
        )
    if listeningFd is not None and component != "smtps":
        raise ComponentError("only smtps takes a listening socket, not %s" % component)
    from smx.tap import SmxService

    # no log context per I/O event (smx._twistedcompat): a dozen events
    # per message in each component; the work of the end of each turn
    # (log writes, IBDB's commit) without a timer (smx.turn)
    runBeforePoll(reactor)
    root = SmxService(configuration, installSignals=installSignals)
    root.setName(component if instanceId is None else "%s%d" % (component, instanceId))
    build = {
        "qmgr": _qmgr,
        "smtps": _smtps,
        "smtpc": _smtpc,
        "smar": _smar,
    }[component]
    root.components = build(configuration, reactor, root, instanceId, listeningFd)
    # its metrics on the socket the MCP names (smx.metricsgather)
    from smx.metricsgather import processMetricsService

    metrics = processMetricsService(reactor, component, root.components)
    if metrics is not None:
        metrics.setServiceParent(root)
    return root


def _sockets(cfg: Any) -> Dict[str, str]:
    g = cfg.globals
    return {name: g[name] for name in ("SMAR_socket", "SMTPC_socket", "SMTPS_socket")}


def _smar(
    cfg: Any, reactor: Any, root: Any, instanceId: Any, fd: Any
) -> Dict[str, Any]:
    from smx.maps.errors import MapError
    from smx.maps.resolver import AddressResolver
    from smx.split.resolver import resolverFactory

    try:
        resolver = AddressResolver.fromConfiguration(cfg, reactor)
    except MapError as e:
        raise ComponentError("smar: %s" % (e,))
    _ResolverService(resolver).setServiceParent(root)
    SocketServer(
        reactor,
        _sockets(cfg)["SMAR_socket"],
        resolverFactory(resolver),
        "smar socket",
    ).setServiceParent(root)
    return {"resolver": resolver}


def _qmgr(
    cfg: Any, reactor: Any, root: Any, instanceId: Any, fd: Any
) -> Dict[str, Any]:
    from smx.queue.active import AGENT_UNAVAILABLE, RESOLVER_FAILED
    from smx.queue.qmgr import QueueManager, contentStoreFromConfiguration
    from smx.split.delivery import RemoteDeliveryAgents
    from smx.split.queue import queueManagerFactory
    from smx.split.resolver import AddressResolverProxy

    section = cfg.section("qmgr")
    logger = loggerFromConfiguration("qmgr", section)
    sockets = _sockets(cfg)
    threadPool = _threadPool(reactor)
    try:
        contentStore = contentStoreFromConfiguration(cfg, threadPool=threadPool)
    except OSError as e:
        raise ComponentError(
            "CDB_base_directory: cannot use %s: %s" % (e.filename, e.strerror)
        )
    # stops after QMGR: the removals of the messages it finished last
    from smx.queue.cdb import ContentStoreService

    ContentStoreService(contentStore).setServiceParent(root)
    resolver = AddressResolverProxy(
        reactor, sockets["SMAR_socket"], section["wait_for_server"], logger
    )
    resolver.setServiceParent(root)
    agents = RemoteDeliveryAgents(
        reactor, sockets["SMTPC_socket"], section["wait_for_client"], logger
    )
    agents.setServiceParent(root)
    qmgr = QueueManager.fromConfiguration(
        cfg, contentStore, resolver, agents, reactor, logger, threadPool=threadPool
    )
    agents.onConnected = lambda: qmgr.retryReply(AGENT_UNAVAILABLE)
    # SMAR back: the recipients it did not resolve when it went away
    resolver.peer.onConnected = lambda: qmgr.retryReply(RESOLVER_FAILED)
    from smx.mail.milterinternal import internalMilters

    # qmgr's milters: its bounces and notices (doc/milter.md)
    qmgr.bouncer.milters = internalMilters(cfg, reactor, logger)
    qmgr.setServiceParent(root)
    # SMTPS may call only once the queue is recovered (QMGR started)
    SocketServer(
        reactor, sockets["SMTPS_socket"], queueManagerFactory(qmgr), "smtps socket"
    ).setServiceParent(root)
    from smx.queue.pickup import pickupService

    pickup = pickupService(cfg, reactor)
    pickup.setServiceParent(root)
    return {
        "qmgr": qmgr,
        "contentStore": contentStore,
        "deliveryAgent": agents,
        "pickup": pickup,
    }


def _smtpc(
    cfg: Any, reactor: Any, root: Any, instanceId: Any, fd: Any
) -> Dict[str, Any]:
    from smx.mail.smtpc import deliveryAgentFromConfiguration, smtpcSections
    from smx.queue.qmgr import contentStoreFromConfiguration
    from smx.split.delivery import deliveryAgentClient

    section = smtpcSections(cfg)[0]
    try:
        contentStore = contentStoreFromConfiguration(cfg, create=False)
    except OSError as e:
        raise ComponentError(
            "CDB_base_directory: cannot use %s: %s" % (e.filename, e.strerror)
        )
    try:
        agent = deliveryAgentFromConfiguration(cfg, contentStore, reactor)
    except ValueError as e:
        raise ComponentError("smtpc: %s" % (e,))
    agent.setServiceParent(root)
    smtpcSocket = _sockets(cfg)["SMTPC_socket"]
    # the late results of this process outlive it next to the socket
    # (qmsmtpc/, which SMTPC's group may write, seed §4.1)
    stateFile = os.path.join(
        os.path.dirname(smtpcSocket),
        "smtpc%s.late" % ("" if instanceId is None else instanceId,),
    )
    client = deliveryAgentClient(
        reactor,
        smtpcSocket,
        agent,
        section["wait_for_server"],
        loggerFromConfiguration("smtpc", section),
        stateFile=stateFile,
    )
    client.setServiceParent(root)
    # TLS reporting (RFC 8460) counts this process's policy records
    from smx.tlspolicy.tlsrpt import reportService

    report = reportService(cfg, reactor)
    if report is not None:
        report.setServiceParent(root)
    return {"deliveryAgent": agent, "contentStore": contentStore}


def _smtps(
    cfg: Any, reactor: Any, root: Any, instanceId: Any, fd: Any
) -> Dict[str, Any]:
    from smx.config.componentoptions import selectedSMTPS
    from smx.ids import ServerIdGenerator
    from smx.mail.listener import SMTPSConfigurationError, smtpsServices
    from smx.queue.qmgr import contentStoreFromConfiguration
    from smx.split.queue import QueueManagerProxy
    from smx.split.resolver import AddressResolverProxy

    qsection = cfg.section("qmgr")
    sockets = _sockets(cfg)
    logger = Logger("smtps")
    try:
        contentStore = contentStoreFromConfiguration(
            cfg, threadPool=_threadPool(reactor)
        )
    except OSError as e:
        raise ComponentError(
            "CDB_base_directory: cannot use %s: %s" % (e.filename, e.strerror)
        )
    # contents are written unsynced; QMGR syncs them with the envelopes
    contentStore.syncedByQueueManager = True
    # stops after the listeners: the removals of their aborted commits
    from smx.queue.cdb import ContentStoreService

    ContentStoreService(contentStore).setServiceParent(root)
    qmgr = QueueManagerProxy(
        reactor, sockets["SMTPS_socket"], qsection["wait_for_client"], logger
    )
    qmgr.setServiceParent(root)
    resolver = AddressResolverProxy(
        reactor, sockets["SMAR_socket"], qsection["wait_for_server"], logger
    )
    resolver.setServiceParent(root)
    try:
        listeners = smtpsServices(
            cfg,
            qmgr,
            contentStore,
            resolver,
            reactor=reactor,
            names=selectedSMTPS(cfg),
        )
    except SMTPSConfigurationError as e:
        raise ComponentError(str(e))
    if instanceId is not None:
        generators = {}  # type: Dict[int, ServerIdGenerator]
        for listener in listeners:
            f = listener.factory  # type: ignore[attr-defined]
            processId = (f.settings.processId + instanceId) & 0xFF
            if processId not in generators:
                generators[processId] = ServerIdGenerator(
                    processId, clock=reactor.seconds
                )
            f.ids = generators[processId]
    if fd is not None and listeners:
        listeners = [AdoptedListener(listeners[0].factory, fd)]  # type: ignore[attr-defined]
    hosts = []  # type: List[Any]
    for listener in listeners:
        f = listener.factory  # type: ignore[attr-defined]
        host = getattr(f, "pmilterHost", None)
        if host is not None and host not in hosts:
            hosts.append(host)
            section = f.settings.name
            host.setName("pmilter %s" % (section,) if section else "pmilter")
            host.setServiceParent(root)
    for listener in listeners:
        listener.setServiceParent(root)
    return {
        "qmgrProxy": qmgr,
        "resolverProxy": resolver,
        "contentStore": contentStore,
        "smtps": listeners,
        "pmilters": hosts,
    }


class AdoptedListener(service.Service):
    """
    SMTPS serving a listening TCP socket it was given (by the MCP, over
    C{pass_fd_socket}) instead of one it binds.

    @ivar port: the adopted L{IListeningPort} while running.
    """

    def __init__(self, factory: Any, fd: int) -> None:
        self.factory = factory
        self.fd = fd
        self.port = None  # type: Any
        self.setName("smtps fd %d" % (fd,))

    def startService(self) -> None:
        service.Service.startService(self)
        if self.port is None:
            # the reactor never blocks in accept(2): a socket passed over
            # pass_fd_socket may well be in blocking mode
            os.set_blocking(self.fd, False)
            sock = socket.socket(fileno=self.fd)
            try:
                family = sock.family
            finally:
                sock.detach()
            self.port = self.factory.reactor.adoptStreamPort(
                self.fd, family, self.factory
            )
            if isinstance(self.port, tcp.Port):
                # its connections send at once, as those of embedded
                # smx's listenTCP (smx.net): no round through epoll for
                # each reply
                self.port.transport = net.Server

    def stopService(self) -> Any:
        """
        Close the socket, say 421 to the sessions; fire once those whose
        final dot was received have their reply from QMGR
        (L{smx.mail.drain}).
        """
        service.Service.stopService(self)
        port, self.port = self.port, None
        # a commit waiting for a QMGR that is gone (killed: the MCP stops
        # this process as its restart dependency) fails at once with 451
        # instead of holding the stop for wait_for_server
        peer = getattr(getattr(self.factory, "queueManager", None), "peer", None)
        if peer is not None:
            peer.stopWaiting()
        from smx.mail.drain import stopListening

        return stopListening(self.factory, port)
