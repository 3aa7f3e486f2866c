# -*- test-case-name: smx.test.test_tap -*-
"""
Assemble the components of smx from a configuration (embedded mode).

Each configured component becomes one child service of the root, added in
the order they must start (and stop in reverse): SMAR, the LMTP delivery
servers (one per C{lmtpd} section), SMTPC (one delivery agent per
C{smtpc} section), QMGR (which recovers the queue before anything can
arrive), the SMTPS listeners, and last the pickup service, which
submits the messages C{smx sendmail} left in the maildrop directory to
those listeners.  The components refer to each
other only through the Interfaces of L{smx.interfaces}.
"""

from __future__ import annotations

from typing import Any, Dict

from twisted.application import service

from smx.maps.errors import MapError


class ComponentError(Exception):
    """
    A component cannot be built from the configuration; the message is one
    line for the user.
    """


class _ResolverService(service.Service):
    """
    SMAR's life cycle as a service: its maps and sockets are closed on stop.
    """

    name = "smar"  # type: ignore[assignment]

    def __init__(self, resolver: Any) -> None:
        self.resolver = resolver

    def stopService(self) -> None:
        service.Service.stopService(self)
        close = getattr(self.resolver, "close", None)
        if close is not None:
            close()


def assemble(cfg: Any, reactor: Any, parent: service.MultiService) -> Dict[str, Any]:
    """
    Build every component of C{cfg} and add its services to C{parent}.

    @return: the components by name: C{"resolver"}, C{"contentStore"},
        C{"deliveryAgent"} (a L{smx.mail.smtpc.DeliveryAgent}, or a
        L{smx.mail.smtpc.DeliveryAgentPool} for several C{smtpc}
        sections), C{"qmgr"}, C{"smtps"} (a list of listeners),
        C{"lmtpd"} (the first LMTP server, or C{None}) and C{"lmtpds"}
        (all of them, one per C{lmtpd} section) and C{"pickup"}.
    @raise ComponentError: a map, a TLS file or another setting named in
        the configuration cannot be used.
    """
    from smx.config.componentoptions import selectedSMTPS
    from smx.mail.lmtpd import lmtpdServices
    from smx.mail.smtpc import deliveryAgentFromConfiguration
    from smx.mail.listener import reloadCertificates
    from smx.mail.smtps import SMTPSConfigurationError, smtpsServices
    from smx.mail.milterinternal import internalMilters
    from smx.maps.resolver import AddressResolver
    from smx.queue.qmgr import QueueManager, contentStoreFromConfiguration

    components = {}  # type: Dict[str, Any]
    try:
        resolver = AddressResolver.fromConfiguration(cfg, reactor)
    except MapError as e:
        raise ComponentError("smar: %s" % (e,))
    components["resolver"] = resolver
    _ResolverService(resolver).setServiceParent(parent)

    # one LMTP server per lmtpd section, named or not
    servers = lmtpdServices(cfg, reactor)
    for server in servers:
        server.setServiceParent(parent)
    components["lmtpd"] = servers[0] if servers else None
    components["lmtpds"] = servers

    # fsyncs of CDB files and IBDB run in the reactor's thread pool, so the
    # reactor goes on reading SMTP while the disk syncs (group commit)
    getThreadPool = getattr(reactor, "getThreadPool", None)
    threadPool = getThreadPool() if getThreadPool is not None else None
    try:
        contentStore = contentStoreFromConfiguration(cfg, threadPool=threadPool)
    except OSError as e:
        raise ComponentError(
            "CDB_base_directory: cannot use %s: %s" % (e.filename, e.strerror)
        )
    # SMTPS writes contents unsynced; QMGR syncs them with the envelopes
    contentStore.syncedByQueueManager = True
    components["contentStore"] = contentStore
    # stops after the services that remove content: its last removals
    from smx.queue.cdb import ContentStoreService

    ContentStoreService(contentStore).setServiceParent(parent)

    try:
        # one delivery agent per smtpc section, named or not (seed §5.10)
        agent = deliveryAgentFromConfiguration(cfg, contentStore, reactor)
    except ValueError as e:
        raise ComponentError("smtpc: %s" % (e,))
    agent.setServiceParent(parent)
    components["deliveryAgent"] = agent

    qmgr = QueueManager.fromConfiguration(
        cfg, contentStore, resolver, agent, reactor, threadPool=threadPool
    )
    qmgr.setServiceParent(parent)
    components["qmgr"] = qmgr
    # smx qmgrctl reload: SMTPC's tls_policy_map too (as SIGUSR1, smx.tap)
    qmgr.reloadHooks.append(lambda: agent.reload())
    # qmgr's milters: its bounces and notices (doc/milter.md)
    qmgr.bouncer.milters = internalMilters(cfg, reactor, qmgr.logger)

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
    # the pmilter hosts start before and stop after their listeners
    hosts = []  # type: list
    for listener in listeners:
        host = getattr(listener.factory, "pmilterHost", None)
        if host is not None and host not in hosts:
            hosts.append(host)
            section = listener.factory.settings.name
            host.setName("pmilter %s" % (section,) if section else "pmilter")
            host.setServiceParent(parent)
    components["pmilters"] = hosts

    def reloadPmilters() -> None:
        # smx qmgrctl reload: the pmilters' reload (pmfi_signal), as SIGUSR1
        for host in hosts:
            host.reload()

    qmgr.reloadHooks.append(reloadPmilters)
    for listener in listeners:
        listener.setServiceParent(parent)
    components["smtps"] = listeners
    # smx qmgrctl reload: the certificates too (as SIGUSR1, smx.tap)
    qmgr.reloadHooks.append(
        lambda: {"certificate_errors": reloadCertificates(listeners)}
    )

    from smx.queue.pickup import pickupService

    components["pickup"] = pickupService(cfg, reactor)
    components["pickup"].setServiceParent(parent)

    from smx.metrics import metricsService

    metrics = metricsService(cfg, reactor, components)
    if metrics is not None:
        metrics.setServiceParent(parent)
    components["metrics"] = metrics

    # TLS reporting (RFC 8460) counts SMTPC's policy records; after the
    # metrics, whose observer it keeps behind its own
    from smx.tlspolicy.tlsrpt import reportService

    components["tlsrpt"] = reportService(cfg, reactor)
    if components["tlsrpt"] is not None:
        components["tlsrpt"].setServiceParent(parent)
    return components
