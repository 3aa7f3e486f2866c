# -*- test-case-name: smx.mail.test.test_smtps_config -*-
"""
NAME
    smx.mail.listener - SMTPS listeners and their settings

SYNOPSIS
    services = smtpsServices(cfg, queueManager, contentStore, resolver)
    for s in services: s.setServiceParent(parent)

DESCRIPTION
    Builds the L{ServerSettings} of every C{smtps} section (seed §5.9,
    §5.9.1) and one L{SMTPSListener} per C{daemon_address}; the listeners
    of one section share one L{smx.mail.smtps.SMTPServerFactory}.  The
    options are described in L{smx.mail.smtps}.

DIAGNOSTICS
    L{SMTPSConfigurationError} names the section, option and file of a
    certificate or password file that cannot be used.
"""

from __future__ import annotations

import socket
from typing import Any, Dict, List, Optional, Tuple

from twisted.application import service

from smx import net
from smx.ids import ServerIdGenerator
from smx.log import Logger
from smx.mail.smtps import SMTPServerFactory


class ServerSettings:
    """
    The options of one SMTPS listener, with the seed's defaults.  Sizes
    in bytes, times in seconds; limits of 0 mean unlimited.
    """

    def __init__(
        self,
        hostname: Optional[str] = None,
        maxMessageSize: int = 8 * 1024 * 1024,
        maxRecipientsPerTransaction: int = 0,
        maxRecipientsPerSession: int = 0,
        maxTransactions: int = 0,
        maxBadCommands: int = 3,
        maxHops: int = 21,
        ioTimeout: float = 300.0,
        maxMessageTime: float = 3600.0,
        maxSessionTime: float = 3600.0,
        maxSessions: int = 0,
        eightBitMime: bool = False,
        softbounce: bool = False,
        access: bool = False,
        delayChecks: bool = False,
        lmtpImpliesRelaying: bool = True,
        tlsContextFactory: Any = None,
        allowRelayingIfVerified: bool = False,
        checkAccessMapForRelaying: bool = False,
        authChecker: Any = None,
        authMechanisms: Tuple[str, ...] = (),
        trustedMechanisms: Optional[Tuple[str, ...]] = (),
        authRequiresTLS: bool = True,
        processId: int = 0,
        name: str = "",
        authenticator: Any = None,
        relayClients: Tuple[str, ...] = (),
    ) -> None:
        self.hostname = hostname or socket.getfqdn()
        self.maxMessageSize = maxMessageSize
        self.maxRecipientsPerTransaction = maxRecipientsPerTransaction
        self.maxRecipientsPerSession = maxRecipientsPerSession
        self.maxTransactions = maxTransactions
        self.maxBadCommands = maxBadCommands
        self.maxHops = maxHops
        self.ioTimeout = ioTimeout
        self.maxMessageTime = maxMessageTime
        self.maxSessionTime = maxSessionTime
        self.maxSessions = maxSessions
        self.eightBitMime = eightBitMime
        self.softbounce = softbounce
        self.access = access
        self.delayChecks = delayChecks
        self.lmtpImpliesRelaying = lmtpImpliesRelaying
        self.tlsContextFactory = tlsContextFactory
        self.allowRelayingIfVerified = allowRelayingIfVerified
        self.checkAccessMapForRelaying = checkAccessMapForRelaying
        if authenticator is None and authChecker is not None:
            from smx.mail.auth import CheckerAuthenticator

            authenticator = CheckerAuthenticator(
                authChecker, authMechanisms, self.hostname
            )
        #: the L{smx.interfaces.ISASLAuthenticator}, or C{None}: no AUTH
        self.authenticator = authenticator
        #: C{None}: every mechanism offered is trusted
        self.trustedMechanisms = (
            None if trustedMechanisms is None else tuple(trustedMechanisms)
        )
        self.authRequiresTLS = authRequiresTLS
        self.processId = processId
        self.name = name
        #: clients that may relay (relay_clients, smtps -C)
        self.relayClients = tuple(relayClients)

    @property
    def authMechanisms(self) -> Tuple[str, ...]:
        """The mechanisms to offer now (they may change with the back end)."""
        if self.authenticator is None:
            return ()
        return tuple(self.authenticator.mechanisms())


#: listen(2) backlog of every SMTPS socket
LISTEN_BACKLOG = 1024


class SMTPSListener(service.Service):
    """
    One listening socket of SMTPS (one C{daemon_address}); it binds in
    C{privilegedStartService} so that port 25 works before privileges are
    dropped, and says 421 to open sessions when stopped.

    @ivar port: the L{IListeningPort} while running.
    """

    def __init__(self, factory: SMTPServerFactory, host: str, port: int) -> None:
        self.factory = factory
        self.host = host
        self.portNumber = port
        self.port = None  # type: Any
        self.setName("smtps %s:%d" % (host, port))

    def privilegedStartService(self) -> None:
        service.Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        service.Service.startService(self)
        self._listen()

    def _listen(self) -> None:
        if self.port is None:
            # a burst of clients must not time out in the kernel's queue
            # (Twisted's default backlog is 50)
            self.port = net.listenTCP(
                self.factory.reactor,
                self.portNumber,
                self.factory,
                backlog=LISTEN_BACKLOG,
                interface=self.host,
            )

    def stopService(self):
        service.Service.stopService(self)
        self.factory.shutdown()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


class SMTPSConfigurationError(Exception):
    """
    The smtps configuration cannot be used (a certificate or password file
    that cannot be read); the message names the section, option and file.
    """


def _opt(section: Any, name: str, default: Any = None) -> Any:
    try:
        value = section[name]
    except KeyError:
        return default
    return default if value is None else value


def settingsFromSection(
    section: Any,
    globals_: Any = None,
    hostname: Optional[str] = None,
    reactor: Any = None,
) -> ServerSettings:
    """
    Build the L{ServerSettings} of one C{smtps} section (seed §5.9).

    @param section: an L{smx.config} section.
    @param globals_: the global section (for C{hostname}).
    @param reactor: the reactor of the AUTH back end (default: the global
        one).
    @raise SMTPSConfigurationError: for unusable TLS or password files or
        C{auth} settings.
    """
    from smx.mail.auth import (
        AuthConfigurationError,
        CheckerAuthenticator,
        authenticatorFromSection,
    )
    from smx.mail.tls import ServerContextFactory, TLSConfigurationError

    flags = frozenset(_opt(section, "flags", frozenset()))
    where = getattr(section, "describe", lambda: "section 'smtps'")()
    if hostname is None and globals_ is not None:
        hostname = _opt(globals_, "hostname")
    tls = section.section("tls")
    tlsFlags = frozenset(_opt(tls, "flags", frozenset()))
    tlsFactory = None
    certFile = _opt(tls, "cert_file")
    if certFile:
        try:
            tlsFactory = ServerContextFactory(
                certFile,
                _opt(tls, "key_file") or certFile,
                _opt(tls, "CAcert_file"),
                _opt(tls, "CAcert_path"),
            )
        except TLSConfigurationError as e:
            raise SMTPSConfigurationError("%s, tls: %s" % (where, e))
    auth = section.section("auth")
    authFlags = frozenset(_opt(auth, "flags", frozenset()))
    try:
        authenticator = authenticatorFromSection(
            auth, hostname or socket.getfqdn(), reactor
        )
    except AuthConfigurationError as e:
        raise SMTPSConfigurationError(
            "%s%s, auth: %s"
            % (e.location + ": " if e.location else "", where, e.message)
        )
    # the mechanisms, when they are known before the server is asked
    mechanisms = ()  # type: Optional[Tuple[str, ...]]
    if isinstance(authenticator, CheckerAuthenticator):
        mechanisms = authenticator.mechanisms()
    elif authenticator is not None:
        mechanisms = None
    processes = int(_opt(section, "processes", 1))
    threads = int(_opt(section, "max_threads", 0))
    return ServerSettings(
        hostname=hostname,
        maxMessageSize=int(_opt(section, "max_message_size", 8 * 1024 * 1024)),
        maxRecipientsPerTransaction=int(
            _opt(section, "max_recipients_per_transaction", 0)
        ),
        maxRecipientsPerSession=int(_opt(section, "max_recipients_per_session", 0)),
        maxTransactions=int(_opt(section, "max_transactions", 0)),
        maxBadCommands=int(_opt(section, "max_bad_commands_per_session", 3)),
        maxHops=int(_opt(section, "max_hops", 21)),
        ioTimeout=float(_opt(section, "io_timeout", 300.0)),
        maxMessageTime=float(_opt(section, "max_message_time", 3600.0)),
        maxSessionTime=float(_opt(section, "max_session_time", 3600.0)),
        maxSessions=processes * threads if threads else 0,
        eightBitMime="8bitmime" in flags,
        softbounce="softbounce" in flags,
        access="access" in flags,
        delayChecks="delay_checks" in flags,
        lmtpImpliesRelaying=not (
            "lmtp_does_not_imply_relaying" in flags
            or "lmtpl_does_not_imply_relaying" in flags
        ),
        tlsContextFactory=tlsFactory,
        allowRelayingIfVerified="allow_relaying_if_verified" in tlsFlags,
        checkAccessMapForRelaying="check_access_map_for_relaying" in tlsFlags,
        authenticator=authenticator,
        # trusted_mechs not set: AUTH with any offered mechanism relays
        trustedMechanisms=(
            mechanisms
            if _opt(auth, "trusted_mechs") is None
            else tuple(_opt(auth, "trusted_mechs"))
        ),
        authRequiresTLS="allow_plaintext_without_tls" not in authFlags,
        processId=int(_opt(section, "id", 0)) & 0xFF,
        name=getattr(section, "name", None) or "",
        relayClients=tuple(_opt(section, "relay_clients", ()) or ()),
    )


def listenAddresses(section: Any) -> List[Tuple[str, int]]:
    """
    The C{(host, port)}s of C{daemon_address} (seed §5.9 item 2), or the
    MCP C{address}/C{port} of the section, or C{0.0.0.0:25}.
    """
    from smx.config.values import splitAddress

    addresses = _opt(section, "daemon_address", []) or []
    if addresses:
        return [splitAddress(text, 8000) for text in addresses]
    port = _opt(section, "port")
    return [(_opt(section, "address", "0.0.0.0"), int(port) if port else 25)]


def smtpsServices(
    cfg: Any,
    queueManager: Any,
    contentStore: Any,
    resolver: Any,
    reactor: Any = None,
    log: Optional[Logger] = None,
    names: Optional[List[str]] = None,
) -> List[service.Service]:
    """
    The listeners of every C{smtps} section (seed §5.9, §5.9.1).

    @param cfg: an L{smx.config} configuration.
    @param names: only the sections with these names (C{smtps -N MSA}).
    @param log: the logger (default: from each section's C{log}).
    @return: one L{SMTPSListener} per address of every section; the
        listeners of one section share one factory.
    @raise SMTPSConfigurationError: see L{settingsFromSection}.
    """
    from smx.log import loggerFromConfiguration

    sections = list(cfg.sections("smtps")) or [cfg.section("smtps")]
    services = []  # type: List[service.Service]
    # sections with the same id share one counter: ids name CDB files
    generators = {}  # type: Dict[int, ServerIdGenerator]
    for section in sections:
        name = getattr(section, "name", None) or ""
        if names is not None and name not in names:
            continue
        settings = settingsFromSection(section, cfg.globals, reactor=reactor)
        factory = SMTPServerFactory(
            settings,
            queueManager,
            contentStore,
            resolver,
            reactor=reactor,
            log=log if log is not None else loggerFromConfiguration("smtps", section),
            ids=generators.get(settings.processId),
        )
        generators[settings.processId] = factory.ids
        for host, port in listenAddresses(section):
            services.append(SMTPSListener(factory, host, port))
    return services
