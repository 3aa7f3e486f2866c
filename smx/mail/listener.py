# -*- test-case-name: smx.mail.test.test_smtps_config -*-
"""
NAME
    smx.mail.listener - SMTPS listeners and their settings

SYNOPSIS
    services = smtpsServices(cfg, queueManager, contentStore, resolver)
    for s in services: s.setServiceParent(parent)
    failed = reloadCertificates(services)

DESCRIPTION
    Builds the L{ServerSettings} of every C{smtps} section (seed §5.9,
    §5.9.1) and one L{SMTPSListener} per C{daemon_address}; the listeners
    of one section share one L{smx.mail.smtps.SMTPServerFactory}.  The
    options are described in L{smx.mail.smtps}.  L{reloadCertificates}
    reads the certificate files of every section again (SIGUSR1,
    C{smx qmgrctl reload}; doc/tls.md).

DIAGNOSTICS
    L{SMTPSConfigurationError} names the section, option and file of a
    certificate or password file that cannot be used.  A reload logs
    C{section=NAME, stat=certificates reloaded, certificates=N}, or
    C{sev=ERR, func=reloadCertificates, section=NAME, reason=...} for a
    section that keeps its old certificates.
"""

from __future__ import annotations

import dataclasses
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from twisted.application import service
from twisted.python import failure

from smx import net
from smx.config.settings import optionValues
from smx.ids import ServerIdGenerator
from smx.log import Logger
from smx.mail.drain import stopListening
from smx.mail.policyhooks import policyServers, policyStages
from smx.mail.smtps import SMTPServerFactory

if TYPE_CHECKING:  # pragma: no cover
    from smx.config.model import Configuration, Section
    from smx.interfaces import (
        IAddressResolver,
        IContentStore,
        IMilterClient,
        IPolicyClient,
        IPolicyMilterHost,
        IQueueManager,
        ISASLAuthenticator,
    )
    from smx.mail.tls import ServerContextFactory


@dataclasses.dataclass(frozen=True, slots=True)
class ServerSettings:
    """
    The options of one C{smtps} section (seed §5.9), as the option table
    gives them (sizes in bytes, times in seconds; limits of 0 mean
    unlimited), and what is made of them (the TLS context, the AUTH back
    end).  No defaults of its own: see L{fromSection}, and
    L{smx.mail.testing.defaultServerSettings} for tests.

    @ivar maxSessions: C{processes} times C{max_threads} (0: unlimited).
    @ivar tlsContextFactory: the server's TLS context (C{tls}), or
        C{None}: no STARTTLS.
    @ivar authenticator: the L{smx.interfaces.ISASLAuthenticator}
        (C{auth}), or C{None}: no AUTH.
    @ivar trustedMechanisms: the mechanisms whose authentication allows
        relaying; C{None}: every mechanism offered.
    @ivar processId: the C{id} of the section, in session ids (App. C.1).
    @ivar name: the name of the section (C{""} for an unnamed one).
    @ivar relayClients: clients that may relay (C{relay_clients},
        C{smtps -C}).
    @ivar policies: the Postfix policy servers asked, by protocol state
        (C{"RCPT"}: C{policies}; doc/policy.md): names of C{policy}
        sections.
    """

    hostname: str
    maxMessageSize: int
    maxRecipientsPerTransaction: int
    maxRecipientsPerSession: int
    maxTransactions: int
    maxBadCommands: int
    maxHops: int
    ioTimeout: float
    maxMessageTime: float
    maxSessionTime: float
    maxSessions: int
    eightBitMime: bool
    softbounce: bool
    access: bool
    delayChecks: bool
    lmtpImpliesRelaying: bool
    tlsContextFactory: Optional[ServerContextFactory]
    allowRelayingIfVerified: bool
    checkAccessMapForRelaying: bool
    authenticator: Optional[ISASLAuthenticator]
    trustedMechanisms: Optional[Tuple[str, ...]]
    authRequiresTLS: bool
    processId: int
    name: str
    relayClients: Tuple[str, ...]
    policies: Mapping[str, Tuple[str, ...]]

    #: field -> option (in the smtps section, or from the top with "/")
    OPTIONS: ClassVar[Mapping[str, str]] = {
        "hostname": "/hostname",
        "maxMessageSize": "max_message_size",
        "maxRecipientsPerTransaction": "max_recipients_per_transaction",
        "maxRecipientsPerSession": "max_recipients_per_session",
        "maxTransactions": "max_transactions",
        "maxBadCommands": "max_bad_commands_per_session",
        "maxHops": "max_hops",
        "ioTimeout": "io_timeout",
        "maxMessageTime": "max_message_time",
        "maxSessionTime": "max_session_time",
    }
    #: field -> the options it is computed from
    DERIVED: ClassVar[Mapping[str, Tuple[str, ...]]] = {
        "maxSessions": ("processes", "max_threads"),
        "eightBitMime": ("flags",),
        "softbounce": ("flags",),
        "access": ("flags",),
        "delayChecks": ("flags",),
        "lmtpImpliesRelaying": ("flags",),
        "tlsContextFactory": (
            "tls.cert_file",
            "tls.key_file",
            "tls.CAcert_file",
            "tls.CAcert_path",
            "tls.min_protocol",
            "tls.certificate.cert_file",
            "tls.certificate.key_file",
            "tls.certificate.server_names",
        ),
        "allowRelayingIfVerified": ("tls.flags",),
        "checkAccessMapForRelaying": ("tls.flags",),
        "authenticator": ("auth.type",),
        "trustedMechanisms": ("auth.trusted_mechs",),
        "authRequiresTLS": ("auth.flags",),
        "processId": ("id",),
        "name": (),
        "relayClients": ("relay_clients",),
        "policies": (
            "connect_policies",
            "helo_policies",
            "mail_policies",
            "policies",
            "data_policies",
            "end_of_data_policies",
        ),
    }

    @property
    def authMechanisms(self) -> Tuple[str, ...]:
        """The mechanisms to offer now (they may change with the back end)."""
        if self.authenticator is None:
            return ()
        return tuple(self.authenticator.mechanisms())

    @classmethod
    def fromSection(cls, section: Section, reactor: Any = None) -> "ServerSettings":
        """
        Build the settings of one C{smtps} section (seed §5.9).

        @param section: an L{smx.config} C{smtps} section.
        @param reactor: the reactor of the AUTH back end (default: the
            global one).
        @raise SMTPSConfigurationError: for unusable TLS or password files
            or C{auth} settings.
        """
        from smx.mail.auth import (
            AuthConfigurationError,
            CheckerAuthenticator,
            authenticatorFromSection,
        )
        from smx.mail.tls import (
            ServerCertificate,
            ServerContextFactory,
            TLSConfigurationError,
        )

        values = optionValues(cls, section)
        flags = section["flags"]
        where = section.describe()
        tls = section.section("tls")
        tlsFlags = tls["flags"]
        tlsFactory = None
        certFile = tls["cert_file"]
        if certFile:
            try:
                tlsFactory = ServerContextFactory(
                    certFile,
                    tls["key_file"] or certFile,
                    tls["CAcert_file"],
                    tls["CAcert_path"],
                    certificates=[
                        ServerCertificate(
                            c["cert_file"], c["key_file"], tuple(c["server_names"])
                        )
                        for c in tls.sections("certificate")
                    ],
                    minimumVersion=tls["min_protocol"],
                )
            except TLSConfigurationError as e:
                raise SMTPSConfigurationError("%s, tls: %s" % (where, e))
        auth = section.section("auth")
        try:
            authenticator = authenticatorFromSection(auth, values["hostname"], reactor)
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
        trusted = auth["trusted_mechs"]
        threads = section["max_threads"]
        return cls(
            maxSessions=section["processes"] * threads if threads else 0,
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
            trustedMechanisms=mechanisms if trusted is None else tuple(trusted),
            authRequiresTLS="allow_plaintext_without_tls" not in auth["flags"],
            processId=section["id"] & 0xFF,
            name=section.name or "",
            relayClients=tuple(section["relay_clients"]),
            policies=policyStages(section),
            **values,
        )


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
        """
        Close the socket, say 421 to the sessions; fire once those whose
        final dot was received have their reply (L{smx.mail.drain}).
        """
        service.Service.stopService(self)
        port, self.port = self.port, None
        return stopListening(self.factory, port)


def reloadCertificates(listeners: Sequence[Any], log: Optional[Logger] = None) -> int:
    """
    Read the certificate and key files of every SMTPS section again
    (SIGUSR1, C{smx qmgrctl reload}): new sessions get the new ones,
    sessions in progress keep theirs.  A section whose files cannot be
    used keeps its certificates, with a C{sev=ERR} record that says why.

    @param listeners: the L{SMTPSListener}s (several may share a factory).
    @return: the number of sections whose certificates failed to load.
    """
    from smx.mail.tls import TLSConfigurationError

    failed = 0
    seen = set()  # type: set
    for listener in listeners:
        factory = listener.factory
        tls = factory.settings.tlsContextFactory
        if tls is None or id(tls) in seen:
            continue
        seen.add(id(tls))
        logger = log if log is not None else factory.log
        section = factory.settings.name or "smtps"
        try:
            tls.reload()
        except TLSConfigurationError as e:
            failed += 1
            logger.error(
                func="reloadCertificates",
                section=section,
                stat="certificates not reloaded; the old ones stay in use",
                reason=str(e),
            )
        except Exception:
            # a broken invariant: logged with its traceback, the old
            # certificates stay and the other sections are reloaded
            failed += 1
            logger.failure("reloadCertificates", failure.Failure(), section=section)
        else:
            logger.notice(
                section=section,
                stat="certificates reloaded",
                certificates=1 + len(tls.certificates),
            )
    return failed


class SMTPSConfigurationError(Exception):
    """
    The smtps configuration cannot be used (a certificate or password file
    that cannot be read); the message names the section, option and file.
    """


def settingsFromSection(section: Section, reactor: Any = None) -> ServerSettings:
    """
    The L{ServerSettings} of one C{smtps} section: see
    L{ServerSettings.fromSection}.
    """
    return ServerSettings.fromSection(section, reactor)


def listenAddresses(section: Section) -> List[Tuple[str, int]]:
    """
    The C{(host, port)}s of C{daemon_address} (seed §5.9 item 2), or the
    MCP C{address}/C{port} of the section, or C{0.0.0.0:25}.
    """
    from smx.config.values import splitAddress

    addresses = section["daemon_address"]
    if addresses:
        return [splitAddress(text, 8000) for text in addresses]
    port = section["port"]
    # no daemon_address and no MCP port: SMTP's port (seed §5.9 item 2)
    return [(section["address"], port if port else 25)]


def _pmilterHost(
    section: Section, factory: SMTPServerFactory, hostname: str
) -> Optional[IPolicyMilterHost]:
    """
    The policy milter host of a section (doc/pmilter.md), or C{None}.

    @raise SMTPSConfigurationError: a plugin that is not installed.
    """
    from smx.config import ConfigError
    from smx.pmilter.plugins import hostFromConfiguration

    try:
        return hostFromConfiguration(section, factory.reactor, factory.log, hostname)
    except ConfigError as e:
        raise SMTPSConfigurationError(str(e))


def _milters(
    cfg: Configuration, section: Section, factory: SMTPServerFactory, size: int
) -> Sequence[IMilterClient]:
    """The sendmail milters of a section, in order (doc/milter.md)."""
    from smx.mail.milterhooks import milterClients

    return milterClients(cfg, section["milters"], factory.reactor, factory.log, size)


def smtpsServices(
    cfg: Configuration,
    queueManager: IQueueManager,
    contentStore: IContentStore,
    resolver: IAddressResolver,
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
    @raise SMTPSConfigurationError: see L{ServerSettings.fromSection}.
    """
    from smx.log import loggerFromConfiguration

    sections = list(cfg.sections("smtps")) or [cfg.section("smtps")]
    services = []  # type: List[service.Service]
    # sections with the same id share one counter: ids name CDB files
    generators = {}  # type: Dict[int, ServerIdGenerator]
    # one client (one connection) per policy server, whatever asks it
    clients = {}  # type: Dict[str, IPolicyClient]
    for section in sections:
        name = getattr(section, "name", None) or ""
        if names is not None and name not in names:
            continue
        settings = ServerSettings.fromSection(section, reactor)
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
        factory.pmilterHost = _pmilterHost(section, factory, settings.hostname)
        factory.milters = _milters(cfg, section, factory, settings.maxMessageSize)
        factory.policyServers = policyServers(cfg, settings, clients, factory)
        for host, port in listenAddresses(section):
            services.append(SMTPSListener(factory, host, port))
    return services
