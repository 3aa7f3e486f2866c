# -*- test-case-name: smx.mail.test.test_smtpc -*-
"""
NAME
    smx.mail.smtpc - SMTPC, the delivery agent over ESMTP and LMTP

SYNOPSIS
    agent = deliveryAgentFromConfiguration(cfg, contentStore, reactor)
    agent.setServiceParent(parent)
    agent.deliver(transaction) -> Deferred([result, ...])

DESCRIPTION
    SMTPC delivers one delivery transaction (seed §5.10, §10): the content
    of the SMTPS transaction C{ss_ta} to recipients that share a
    destination.  It tries the routes SMAR found in order (MX preference)
    and moves to the next one when a connection cannot be made, times out,
    is greeted with 4xx/5xx (421 too), fails EHLO or the TLS handshake, or
    when recipients got a temporary answer; it stops at the first
    definitive answer per recipient.  2xx is C{"ok"}, 4xx C{"temp"} (QMGR
    retries), 5xx C{"perm"} (QMGR bounces).  A connection lost, a timeout
    or garbage from the server never marks a recipient delivered that the
    server did not accept.

    C{esmtp} routes connect to the route's address and port (default
    C{remote_port}).  C{lmtp} routes speak LMTP (RFC 2033): over the Unix
    socket C{LMTP_socket} for a local domain (mailertable C{lmtp:}
    without hosts, seed §6.3.1), over TCP to the route's address and port
    for C{lmtp:} with hosts (C{2724^lmtp:[192.0.2.1]}; without a port in
    the entry, port 24: RFC 2033 forbids port 25, so C{remote_port} is
    not used for LMTP).  STARTTLS is used whenever it
    is offered (seed App. D); the client certificate is presented, the
    server's certificate is not required to verify (opportunistic TLS,
    the default level C{may}), but a failed handshake never falls back
    to clear text: it is a temporary failure for that route.

    TLS policy per destination (doc/tls.md, L{smx.tlspolicy}): the
    recipients of one delivery transaction are grouped by the TLS
    policies of their next-hop domains (C{tls_policy_map}, else
    C{tls_security_level}; MTA-STS; DANE for each MX host; REQUIRETLS of
    the transaction), each group delivered under its own; a session is
    used, and cached, only under the policy it was checked against
    (C{TLS-Required: No}: without MTA-STS and DANE, RFC 8689).  A
    route whose policy is not met is skipped with C{451 4.7.4} or C{451
    4.7.5} (C{550 5.7.10} with REQUIRETLS) and a C{tls_policy_failed}
    record, and nothing is sent on it.

    8-bit content (RFC 6152): a body declared C{BODY=8BITMIME} goes with
    that parameter to a server that offers 8BITMIME; otherwise the content
    is read once: one with octets above 127 gets C{BODY=8BITMIME} where
    offered (declared or not), and is never sent raw to a server without
    8BITMIME: it is converted to quoted-printable (L{smx.mail.downgrade},
    RFC 6152 section 3, as Postfix does); content that cannot be
    converted (8-bit headers, multipart/signed, binary) fails with C{554
    5.6.3} and the reason (RFC 3463) unless a later route offers
    8BITMIME; QMGR then returns a DSN.

    Recipients refused with "too many recipients" (C{452 4.5.3}, or
    C{552 5.5.3}) go at once in a new transaction, on the same session
    if it can carry one (RFC 5321 4.5.3.1.10), until a transaction gets
    that reply for its first recipient: those are temporary failures
    that QMGR retries after C{retry_min_delay}.

    With C{reuse_connection}, a session that finished a transaction is
    kept in the open connection cache (at most C{OCC_max_entries}
    sessions, each for at most C{cacheTimeout} seconds) and carries the
    next transaction to the same destination.

    The protocol itself is the sans-I/O L{smx.mail.client.ClientMachine};
    its Twisted adapter is L{smx.mail.clientprotocol}, the connection cache
    L{smx.mail.connectioncache}, the TLS client side
    L{smx.mail.clienttls}, and the routing loop of one delivery
    transaction (routes in order, the "too many recipients" rounds, the
    transaction records) L{smx.mail.routeloop}; this module holds the
    delivery agent, which makes and caches the sessions that loop uses,
    and builds SMTPC from the configuration.

CONFIGURATION PARAMETERS
    smtpc [NAME] { io_timeout; LMTP_socket; remote_port; log_level;
            log { ... }; tls { cert_file; key_file; CAcert_file;
            CAcert_path }; tls_security_level; tls_policy_map;
            tls_min_protocol; tls_ciphers; mta_sts ... }
    smar { nameserver }: the resolver of TLSA records (DANE)
    qmgr { flags = reuse_connection; OCC_max_entries }
    hostname (global): the name used in EHLO/LHLO.

    C{io_timeout} bounds the connection attempt and every wait for a
    reply.  Every C{smtpc} section, named or not, is one delivery agent
    with its own options (seed §5.10 allows several SMTP clients and has
    the scheduler use them alike; they must share C{remote_port}, which
    SMAR puts in the routes).  In embedded mode they run in one process
    as a L{DeliveryAgentPool}: a delivery transaction goes to the agent
    with the fewest in progress, the first section on a tie.
    C{processes}, C{wait_for_server} and the options of seed §5.2 are for
    MCP; C{debug_level}, C{min_wait_threads} and C{max_wait_threads} are
    accepted for compatibility and have no effect.

SECURITY
    Content from the content store is sent as it is, dot-stuffed; replies
    are bounded in length and only logged in encoded form.  Nothing read
    from a server is trusted before a TLS handshake ends (pipelined
    replies before it end the session).

DIAGNOSTICS
    App. C.2 records::

      da_sess=C..., status=connected, port=25, addr=192.0.2.1
      da_sess=C..., where=connection, starttls=successful
      da_sess=C..., da_ta=C..., ss_ta=S..., mail=<a@b>, stat=0, reply=250 ...
      da_sess=C..., da_ta=C..., ss_ta=S..., rcpt=<c@d>, stat=0, reply=250 ...
      da_sess=C..., da_ta=C..., ss_ta=S..., where=final_dot, size=1177, stat=0
      da_sess=C..., da_ta=C..., ss_ta=S..., where=rcpt,
          too_many_recipients=50, status=new transaction

    A failure has C{stat=} the reply code (or 451 for a local timeout or a
    lost connection) and C{reply=} the reason.  TLS policy records
    (C{func=tls_policy_failed}, C{func=tls_policy_ok}) are described in
    L{smx.tlspolicy.policy} and doc/tls.md.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple, Union

from twisted.application import service
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from smx import net
from smx.ids import ClientIdGenerator
from smx.interfaces import IContentStore, IDeliveryAgent
from smx.log import Logger, loggerFromConfiguration
from smx.mail.client import ClientMachine
from smx.mail.clientprotocol import (
    CHUNK_SIZE,
    ClientProtocol,
    SessionError,
    _ConnectFactory,
)
from smx.mail.clienttls import ClientTLSCreator
from smx.mail.connectioncache import ConnectionCache
from smx.mail.deliverysettings import DeliverySettings
from smx.mail.routeloop import RouteLoop
from smx.tlspolicy.destination import (
    PolicyMapError,
    PolicyRefused,
    TLSPolicies,
    groupByDestination,
)
from smx.tlspolicy.policy import REQUIRETLS, TLS_REQUIRED_NO
from smx.tlspolicy.policymap import PolicyMap
from smx.unixsocket import socketName
from smx.values import DeliveryData, RecipientData, ResultData, RouteData

if TYPE_CHECKING:  # pragma: no cover
    from smx.config.model import Configuration, Section
    from smx.tlspolicy.destination import Destination

__all__ = [
    "CHUNK_SIZE",
    "ClientProtocol",
    "ClientTLSCreator",
    "ConnectionCache",
    "DeliveryAgent",
    "DeliveryAgentPool",
    "RouteLoop",
    "SessionError",
    "deliveryAgentFromConfiguration",
    "smtpcSections",
]


@implementer(IDeliveryAgent)
class DeliveryAgent(service.Service):
    """
    SMTPC: delivers delivery transactions over ESMTP and LMTP.

    @ivar cache: the L{ConnectionCache}.
    """

    name = "smtpc"  # type: ignore[assignment]

    def __init__(
        self,
        contentStore: IContentStore,
        settings: DeliverySettings,
        reactor: Any = None,
        logger: Optional[Logger] = None,
        ids: Optional[ClientIdGenerator] = None,
        cacheTimeout: float = 60.0,
        policies: Optional[TLSPolicies] = None,
    ) -> None:
        """
        @param contentStore: an L{smx.interfaces.IContentStore}.
        @param policies: the TLS policies (default: those of C{settings}
            without MTA-STS and without DANE lookups).
        @param settings: the L{DeliverySettings} of its C{smtpc} section.
        @param reactor: provides C{IReactorTCP}, C{IReactorUNIX},
            C{IReactorTime}.
        @param ids: the id generator (shared by the agents of a pool).
        @param cacheTimeout: seconds a session is kept in the connection
            cache.
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.settings = settings
        self.contentStore = contentStore
        self.reactor = reactor
        self.heloName = settings.heloName
        self.ioTimeout = settings.ioTimeout
        self.remotePort = settings.remotePort
        self.lmtpSocket = settings.lmtpSocket
        self.tlsCreator = settings.tlsCreator
        self.reuseConnection = settings.reuseConnection
        self.cache = ConnectionCache(reactor, settings.cacheSize, cacheTimeout)
        self.log = logger or Logger("smtpc")
        self.ids = ids or ClientIdGenerator()
        self.name = settings.name
        if policies is None:
            policies = policiesFromSettings(settings, self.log)
        self.policies = policies
        #: delivery transactions in progress
        self.busy = 0
        self._sessionCount = 0

    @classmethod
    def fromConfiguration(
        cls,
        cfg: Configuration,
        contentStore: IContentStore,
        reactor: Any = None,
        section: Optional[Section] = None,
        ids: Optional[ClientIdGenerator] = None,
    ) -> "DeliveryAgent":
        """
        Build SMTPC from one C{smtpc} section of a configuration
        (L{DeliverySettings.fromSection}).

        @param section: the C{smtpc} section, named or not (default: the
            first one in the file, or the defaults if there is none).
        @param ids: the id generator (shared by the agents of a pool).
        @raise ValueError: if the TLS files cannot be loaded.
        """
        if section is None:
            section = smtpcSections(cfg)[0]
        settings = DeliverySettings.fromSection(section)
        log = loggerFromConfiguration("smtpc", section)
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        dns = _resolver(cfg, reactor, log)
        policies = policiesFromSettings(
            settings,
            log,
            dns=dns,
            sources=_policySources(cfg, section, reactor, dns, log),
        )
        return cls(
            contentStore,
            settings,
            reactor,
            logger=log,
            ids=ids,
            policies=policies,
        )

    def stopService(self) -> None:
        service.Service.stopService(self)
        self.cache.closeAll()

    def reload(self) -> None:
        """
        SIGUSR1 (seed §6.7): open the TLS policy map again; cached
        sessions keep the policy they were checked against until they
        close.
        """
        self.policies.reopen()

    # delivery -------------------------------------------------------------

    def deliver(self, transaction: DeliveryData) -> defer.Deferred[List[ResultData]]:
        return defer.Deferred.fromCoroutine(self._deliver(transaction))

    async def _deliver(self, transaction: DeliveryData) -> List[ResultData]:
        self.busy += 1
        try:
            daTa = transaction.get("id") or self.ids.next()
            if self.policies.trivial and not transaction.get(REQUIRETLS):
                loop = RouteLoop(
                    transaction, self, self.contentStore, self.log, daTa, self.reactor
                )
                return await loop.run()
            return await self._deliverByPolicy(transaction, daTa)
        finally:
            self.busy -= 1

    async def _deliverByPolicy(
        self, transaction: DeliveryData, daTa: str
    ) -> List[ResultData]:
        """
        Deliver with TLS policies: the recipients grouped by the policies
        of their next-hop domains, each group delivered under its own
        (L{smx.tlspolicy.destination}).  A recipient whose policy cannot
        be known now (a policy map that cannot be read) waits.
        """
        recipients = transaction["recipients"]
        mxHosts = []  # type: List[str]
        for route in transaction.get("routes") or []:
            host = (route.get("host") or "").lower()
            if route.get("mailer") == "esmtp" and host and host not in mxHosts:
                mxHosts.append(host)
        requireTLS = bool(transaction.get(REQUIRETLS))
        # TLS-Required: No (RFC 8689 section 4.1)
        ignoreRecipient = bool(transaction.get(TLS_REQUIRED_NO)) and not requireTLS
        byDomain = {}  # type: Dict[str, Any]
        results = [None] * len(recipients)  # type: List[Optional[ResultData]]
        dests = []
        members = []
        for i, rcpt in enumerate(recipients):
            domain = rcpt["address"].rpartition("@")[2].lower().rstrip(".")
            if domain not in byDomain:
                try:
                    byDomain[domain] = await self.policies.destination(
                        domain, mxHosts, requireTLS, ignoreRecipient
                    )
                except PolicyMapError as e:
                    self.log.error("tlsPolicy", da_ta=daTa, domain=domain, error=str(e))
                    byDomain[domain] = e
            dest = byDomain[domain]
            if isinstance(dest, PolicyMapError):
                results[i] = _policyUnknown(rcpt, dest)
            else:
                dests.append(dest)
                members.append(i)
        for dest, group in groupByDestination(dests):
            indexes = [members[j] for j in group]
            sub = dict(transaction, recipients=[recipients[i] for i in indexes])
            loop = RouteLoop(
                sub,
                self,
                self.contentStore,
                self.log,
                daTa,
                self.reactor,
                destination=dest,
            )
            for i, result in zip(indexes, await loop.run()):
                results[i] = result
        return [r for r in results if r is not None]

    # sessions (the SessionSource of RouteLoop) ------------------------------

    def _key(self, route: RouteData) -> Tuple[str, str, int]:
        """
        Where C{route} goes: C{(mailer, address, port)}, the cache key of
        its sessions.  An C{lmtp} route without a host is local delivery
        over the Unix socket C{LMTP_socket} (port 0); one with a host (a
        mailertable entry C{2724^lmtp:[192.0.2.1]}) speaks LMTP over TCP
        to its address and port.
        """
        if route.get("mailer") == "lmtp":
            if not route.get("address") and not route.get("host"):
                return ("lmtp", self.lmtpSocket, 0)
            return ("lmtp", route.get("address") or "", self._port(route))
        return ("esmtp", route.get("address") or "", self._port(route))

    def _port(self, route: RouteData) -> int:
        return int(route.get("port") or self.remotePort)

    async def findSession(
        self,
        route: RouteData,
        cached: bool = True,
        destination: Optional[Destination] = None,
    ) -> Tuple[ClientProtocol, Any, bool]:
        """
        A session for C{route}: a cached one (C{cached} and
        C{reuse_connection}) or a new connection, under the TLS policy
        of C{destination} (a L{smx.tlspolicy.destination.Destination}) if
        given: the cache key includes the session's policy.

        A cached session carries the next transaction without RSET: the
        end of the previous one (the reply to the final dot) already
        reset the server (RFC 5321 4.1.1.4), and a session the server
        closed meanwhile shows at MAIL, where the L{RouteLoop} starts
        again on a new connection.

        @return: the session, the cache key, and whether it was cached.
        @raise SessionError: if no session could be had (C{where="starttls"}
            for a route its TLS policy refuses).
        """
        key = self._key(route)  # type: Tuple[Any, ...]
        policy = None
        if destination is not None and key[0] == "esmtp":
            try:
                policy = await self.policies.sessionPolicy(
                    destination, route.get("host") or "", route.get("address") or ""
                )
            except PolicyRefused as e:
                self.policies.logRefusal(e)
                code, reply = e.session.reply(e.failure)
                raise SessionError("starttls", code, reply)
            except Exception:
                # a bug: the policy is unknown, so the route is not used
                self.log.failure("findSession", Failure(), route=key[1])
                raise SessionError("starttls", 451, "451 4.3.0 TLS policy unknown")
            key = key + (policy,)
        if self.reuseConnection and cached:
            proto = self.cache.take(key)
            if proto is not None:
                return proto, key, True
        proto = await self._connect(route, key, policy)
        return proto, key, False

    def _connect(
        self, route: RouteData, key: Any, policy: Any = None
    ) -> defer.Deferred:
        lmtp = key[0] == "lmtp"
        unix = lmtp and key[2] == 0
        self._sessionCount += 1
        sessionId = self.ids.next(self._sessionCount)
        if not unix and not key[1]:
            return defer.fail(
                SessionError("connect", 0, "451 4.4.3 route has no address")
            )
        canTLS = self.tlsCreator is not None and (policy is None or policy.wantsTLS)
        machine = ClientMachine(
            self.heloName,
            lmtp=lmtp,
            canTLS=canTLS,
            requireTLS=policy is not None and policy.requiresTLS,
        )
        tls = None
        if canTLS:
            forSession = getattr(self.tlsCreator, "forSession", None)
            if forSession is None:
                tls = self.tlsCreator
            else:
                tls = forSession(route.get("host") or None)

        def build() -> ClientProtocol:
            self.log.info(
                da_sess=sessionId,
                status="connected",
                port=key[2],
                addr=key[1],
            )
            return ClientProtocol(
                machine,
                self.reactor,
                self.ioTimeout,
                tls,
                self.log,
                sessionId,
                policy,
            )

        factory = _ConnectFactory(build)
        if unix:
            try:
                name = socketName(key[1])
            except OSError as e:
                return defer.fail(SessionError("connect", 0, "451 4.4.0 %s" % (e,)))
            self.reactor.connectUNIX(name, factory, timeout=self.ioTimeout)
        else:
            net.connectTCP(
                self.reactor, key[1], key[2], factory, timeout=self.ioTimeout
            )
        d = factory.deferred

        def failed(f: Failure) -> Failure:
            e = f.value
            if isinstance(e, SessionError):
                self.log.info(
                    da_sess=sessionId,
                    where=e.where,
                    port=key[2],
                    addr=key[1],
                    stat=e.code or 451,
                    reply=e.reply,
                )
            return f

        d.addErrback(failed)
        return d

    def doneSession(self, key: Any, proto: ClientProtocol, reusable: bool) -> None:
        """
        The transactions on C{proto} are over: keep it in the cache (with
        C{reuse_connection}, if C{reusable} and still connected) or close
        it.
        """
        if self.reuseConnection and reusable and not proto.lost:
            self.cache.put(key, proto)
        else:
            proto.quit()


def policiesFromSettings(
    settings: DeliverySettings,
    log: Logger,
    dns: Any = None,
    sources: Any = (),
) -> TLSPolicies:
    """
    The TLS policies of an C{smtpc} section: C{tls_security_level},
    C{tls_policy_map}, the policy sources (MTA-STS) and the resolver of
    the TLSA records (DANE).
    """
    policyMap = None
    if settings.tlsPolicyMap:
        policyMap = PolicyMap(settings.tlsPolicyMap, log)
    return TLSPolicies(settings.tlsSecurityLevel, policyMap, sources, dns, log)


def _resolver(cfg: Any, reactor: Any, log: Logger) -> Any:
    """SMTPC's resolver of TLSA records: SMAR's name servers (made at the
    first lookup: most configurations never need it)."""
    return _LazyResolver(cfg, reactor, log)


class _LazyResolver:
    """
    An L{smx.maps.dns.DNSResolver} made when first used (its lookups
    are those of the resolver).
    """

    def __init__(self, cfg: Any, reactor: Any, log: Logger) -> None:
        from smx.maps.settings import ResolverSettings

        self._settings = ResolverSettings.fromConfiguration(cfg)
        self._reactor = reactor
        self._log = log
        self._resolver = None  # type: Any

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._resolver is None:
            from smx.maps.dns import DNSResolver

            s = self._settings
            self._resolver = DNSResolver(
                self._reactor, s.nameservers, s.dnsTimeout, s.dnsUseTCP, self._log
            )
        return getattr(self._resolver, name)


def _policySources(cfg: Any, section: Any, reactor: Any, dns: Any, log: Logger):
    """
    The L{smx.tlspolicy.policy.ITLSPolicySource}s of an C{smtpc} section:
    MTA-STS (L{smx.tlspolicy.mtasts}) when enabled, with SMTPC's resolver
    (see L{smx.tlspolicy.policy}, "Sources").
    """
    try:
        from smx.tlspolicy import mtasts
    except ImportError:
        return []
    build = getattr(mtasts, "mtastsSourceFromConfiguration", None)
    try:
        if build is not None and "dns" in inspect.signature(build).parameters:
            source = build(cfg, reactor, section, log, dns=dns)
        else:
            settings = mtasts.MTASTSSettings.fromSection(section)
            source = mtasts.mtastsSource(settings, reactor, dns, log)
    except KeyError:
        # a table without the MTA-STS options (their module is newer)
        return []
    return [] if source is None else [source]


def _policyUnknown(rcpt: RecipientData, e: Exception) -> ResultData:
    """The result of a recipient whose TLS policy cannot be known now."""
    return {
        "index": rcpt["index"],
        "address": rcpt["address"],
        "status": "temp",
        "code": 451,
        "reply": "451 4.3.0 TLS policy unknown: %s" % (e,),
        "remoteMTA": None,
        "where": "connect",
    }


def smtpcSections(cfg: Configuration) -> List[Section]:
    """
    @return: the C{smtpc} sections of C{cfg} in file order, named or not;
        the defaults of one if there is none.
    """
    return list(cfg.sections("smtpc")) or [cfg.section("smtpc")]


def deliveryAgentFromConfiguration(
    cfg: Configuration, contentStore: IContentStore, reactor: Any = None
) -> Union[DeliveryAgent, DeliveryAgentPool]:
    """
    SMTPC as embedded mode runs it: one L{DeliveryAgent} per C{smtpc}
    section (seed §5.10: several SMTP clients may be specified, and the
    scheduler treats them all alike).  With one section, that agent; with
    several, a L{DeliveryAgentPool} of them.

    @raise ValueError: if the TLS files of a section cannot be loaded.
    """
    ids = ClientIdGenerator()
    agents = [
        DeliveryAgent.fromConfiguration(cfg, contentStore, reactor, s, ids)
        for s in smtpcSections(cfg)
    ]
    if len(agents) == 1:
        return agents[0]
    return DeliveryAgentPool(agents)


@implementer(IDeliveryAgent)
class DeliveryAgentPool(service.MultiService):
    """
    Several SMTPC instances, one per C{smtpc} section, in one process: the
    embedded form of the seed's several SMTP client processes that QMGR
    uses alike (seed §5.10).  Each agent keeps its own section's settings
    (C{io_timeout}, C{LMTP_socket}, C{tls}, C{log}) and connection cache;
    each delivery transaction goes to the agent with the fewest in
    progress, the first in the file on a tie (so that one delivery at a
    time always uses the first section, and its cached sessions).

    @ivar agents: the L{DeliveryAgent}s, in file order.
    """

    name = "smtpc"  # type: ignore[assignment]

    def __init__(self, agents: List[DeliveryAgent]) -> None:
        service.MultiService.__init__(self)
        if not agents:
            raise ValueError("a pool of delivery agents needs one")
        self.agents = list(agents)
        seen = set()  # type: Set[str]
        for i, agent in enumerate(self.agents):
            name = agent.name or "smtpc"
            if name in seen:
                name = "%s #%d" % (name, i + 1)
            seen.add(name)
            agent.name = name
            agent.setServiceParent(self)

    def deliver(self, transaction: DeliveryData) -> defer.Deferred[List[ResultData]]:
        agent = min(self.agents, key=lambda a: a.busy)
        return agent.deliver(transaction)

    def reload(self) -> None:
        """SIGUSR1: every agent's L{DeliveryAgent.reload}."""
        for agent in self.agents:
            agent.reload()
