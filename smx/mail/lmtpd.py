# -*- test-case-name: smx.mail.test.test_lmtpd -*-
"""
NAME
    smx.mail.lmtpd - a small LMTP server delivering into Maildirs

SYNOPSIS
    settings = LMTPServerSettings.fromSection(cfg.section("lmtpd"))
    LMTPDeliveryService(settings, reactor).setServiceParent(parent)
    smx lmtpd --socket PATH --maildir BASE

DESCRIPTION
    The local delivery agent of the embedded default configuration: an
    LMTP server (RFC 2033) on a Unix socket that stores every message for
    C{user@any.domain} in C{BASE/user/Maildir/new}.  The user name is the
    local part lower-cased with a detail (C{+ext}) removed; the Maildir is
    created on first delivery.  The message gets C{Return-Path:} and
    C{Delivered-To:} headers; line ends are stored as LF.  Every file is
    written under C{tmp/}, fsync'ed, renamed into C{new/} and the directory
    fsync'ed before the recipient's 250 reply: one reply per recipient
    after the final dot.

    The protocol is SMTPS's sans-I/O core in its LMTP mode
    (L{smx.mail.server.ServerConnection} with C{lmtp=True}: LHLO, HELO
    and EHLO refused with 500, the same syntax and sequence rules);
    L{LMTPServerProtocol} is the thin Twisted adapter that answers its
    events with Maildir deliveries (L{MaildirStore}).

CONFIGURATION PARAMETERS
    In embedded mode every C{lmtpd} section (named or not) is one server
    (L{lmtpdServices}): C{socket} (the Unix socket, SMTPC's
    C{LMTP_socket}), C{maildir_base}, C{max_message_size}, C{log { ... }}
    and C{log_level}, the global C{hostname}, and C{port} with C{address}
    (seed §5.2): with a C{port} it listens for LMTP on that TCP address
    too (L{LMTPServerSettings}).  The other
    options of seed §5.2 (C{mcp_type}, C{user}, C{processes}, ...) are
    for MCP.  C{smx lmtpd --socket --maildir} runs one server without a
    configuration.

SECURITY
    Local parts that could leave the base directory (C{/}, C{..}, a
    leading dot, NUL or other control characters) are refused with 550.
    The input rules are those of SMTPS: command lines end in CRLF, hold
    no NUL or bare CR and are at most 512 bytes with the CRLF (500
    5.5.2); only <CRLF>.<CRLF> ends a message, and content with a bare CR
    or LF (554 5.6.11), a NUL (554 5.6.0), a line over 1000 octets (500
    5.5.2) or more than C{max_message_size} bytes (552 5.3.4) is refused
    for every recipient and not stored.  The socket is created mode 0666 by default
    (it is meant for the MTA on the same host; put it in a directory with
    restricted permissions to limit who may deliver).
    A TCP listener (C{port}) takes mail for every local mailbox from
    whoever can connect: give it a loopback C{address} (the default,
    seed §5.2, is every address).

DIAGNOSTICS
    One record per delivery: C{rcpt=<...>, file=..., stat=0}; C{size=N,
    stat=CODE, reply=...} for refused content and C{input=..., stat=CODE,
    reply=...} for a refused command line; C{sev=ERR} records for files
    that cannot be written (the recipient gets 451 4.3.0 and the sender
    retries) and for unexpected failures (451 4.3.0 for every recipient
    still due a reply).
"""

from __future__ import annotations

import dataclasses
import os
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Dict,
    List,
    Mapping,
    Optional,
    Tuple,
)

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.python import failure
from twisted.mail.maildir import initializeMaildir

from smx._twistedcompat import MaildirNameGenerator
from smx.config.settings import optionValues
from smx.log import Logger
from smx.mail.server import ServerConnection
from smx.mail.serverevents import (
    CLOSE,
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    DataChunk,
    DataCommand,
    EndOfData,
    Event,
    Helo,
    MailFrom,
    Quit,
    RcptTo,
    Rset,
    StartTLS,
)
from smx.unixsocket import socketName

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.interfaces import IListeningPort

    from smx.config.model import Configuration, Section


@dataclasses.dataclass(frozen=True, slots=True)
class LMTPServerSettings:
    """
    The options of one C{lmtpd} section, as the option table gives them
    (no defaults of its own).

    @ivar socketPath: the Unix socket (C{socket}).
    @ivar maildirBase: the directory of the users' Maildirs.
    @ivar maxMessageSize: the largest message accepted, in bytes (0: no
        limit).
    @ivar tcpPort: listen for LMTP on this TCP port too (C{0} picks a
        free one), or C{None}.
    @ivar tcpAddress: the address of C{tcpPort}.
    @ivar name: the title of the section (C{lmtpd}, C{lmtpd NAME}).
    """

    socketPath: str
    maildirBase: str
    hostname: str
    maxMessageSize: int
    tcpPort: Optional[int]
    tcpAddress: str
    name: str

    #: field -> option (in the lmtpd section, or from the top with "/")
    OPTIONS: ClassVar[Mapping[str, str]] = {
        "socketPath": "socket",
        "maildirBase": "maildir_base",
        "hostname": "/hostname",
        "maxMessageSize": "max_message_size",
        "tcpPort": "port",
        "tcpAddress": "address",
    }
    #: field -> the options it is computed from
    DERIVED: ClassVar[Mapping[str, Tuple[str, ...]]] = {"name": ()}

    @classmethod
    def fromSection(cls, section: Section) -> "LMTPServerSettings":
        """
        @param section: an L{smx.config} C{lmtpd} section.
        """
        return cls(name=section.title(), **optionValues(cls, section))


class UnsafeLocalPart(ValueError):
    """A local part that cannot name a mailbox safely."""


def mailboxName(address: str, delimiter: str = "+") -> str:
    """
    The Maildir user for an address: the local part, lower-cased, without
    its detail.

    @raise UnsafeLocalPart: if the name could escape the base directory or
        is empty.
    """
    local = address.rsplit("@", 1)[0] if "@" in address else address
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        local = local[1:-1]
    if delimiter and delimiter in local:
        local = local.split(delimiter, 1)[0]
    local = local.lower()
    if (
        not local
        or "/" in local
        or "\\" in local
        or local.startswith(".")
        or ".." in local
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in local)
    ):
        raise UnsafeLocalPart(local)
    return local


class MaildirStore:
    """
    Writes messages into C{BASE/<user>/Maildir}.
    """

    def __init__(self, base: str, clock: Any = None) -> None:
        from twisted.internet import reactor

        self.base = os.path.abspath(base)
        self._names = MaildirNameGenerator(clock or reactor)

    def maildir(self, user: str) -> str:
        return os.path.join(self.base, user, "Maildir")

    def deliver(self, user: str, headers: bytes, body: bytes) -> str:
        """
        Store one message durably.

        @return: the path of the file in C{new/}.
        @raise OSError: if it cannot be written.
        """
        home = os.path.join(self.base, user)
        if not os.path.isdir(home):
            os.makedirs(home, 0o700, exist_ok=True)
        maildir = os.path.join(home, "Maildir")
        initializeMaildir(maildir)
        name = self._names.generate().decode("ascii")
        tmp = os.path.join(maildir, "tmp", name)
        new = os.path.join(maildir, "new", name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(headers)
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, new)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        dirfd = os.open(os.path.join(maildir, "new"), os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
        return new


class LMTPServerProtocol(protocol.Protocol):
    """
    One LMTP session: the Twisted side of a L{ServerConnection} in LMTP
    mode.  Every event is answered at once (delivery is synchronous), and
    the replies to one received chunk are written together.
    """

    transport: Any

    def __init__(
        self,
        store: MaildirStore,
        hostname: str,
        logger: Logger,
        maxMessageSize: int,
    ) -> None:
        self.store = store
        self.log = logger
        # the MTA in front applies the limits of a session; lmtpd only
        # bounds what it stores
        self.connection = ServerConnection(
            hostname,
            maxMessageSize=maxMessageSize,
            maxRecipientsPerTransaction=0,
            maxRecipientsPerSession=0,
            maxTransactions=0,
            maxBadCommands=0,
            eightBitMime=True,
            authRequiresTLS=True,
            softbounce=False,
            greeting="LMTP smx lmtpd ready",
            lmtp=True,
        )
        self._reset()

    def _reset(self) -> None:
        self._sender = ""
        self._body = []  # type: List[bytes]

    def connectionMade(self) -> None:
        self.connection.greet()
        self._flush()

    def dataReceived(self, data: bytes) -> None:
        conn = self.connection
        conn.receiveData(data)
        while True:
            event = conn.nextEvent()
            if event is NEED_DATA or event is PAUSED:
                break
            if event is CLOSE:
                self._flush()
                self.transport.loseConnection()
                return
            try:
                self._handlers[type(event)](self, event)
            except Exception:
                self.log.failure("LMTPServerProtocol", failure.Failure())
                if conn.awaitingReply:
                    conn.reject(451, "4.3.0", "Temporary failure, try again later")
        self._flush()

    def _flush(self) -> None:
        for code, dsn, text, line in self.connection.problems:
            self.log.info(input=line, stat=code, reply="%d %s %s" % (code, dsn, text))
        del self.connection.problems[:]
        out = self.connection.dataToSend()
        if out:
            self.transport.write(out)

    def do_Helo(self, event: Helo) -> None:
        self._reset()
        self.connection.accept()

    def do_MailFrom(self, event: MailFrom) -> None:
        self._reset()
        self._sender = event.sender
        self.connection.accept("sender ok")

    def do_RcptTo(self, event: RcptTo) -> None:
        try:
            mailboxName(event.recipient)
        except UnsafeLocalPart:
            self.connection.reject(550, "5.1.3", "bad mailbox name")
            return
        self.connection.accept("recipient ok")

    def do_DataCommand(self, event: DataCommand) -> None:
        self._body = []
        self.connection.accept("send the message, end with <CRLF>.<CRLF>")

    def do_DataChunk(self, event: DataChunk) -> None:
        self._body.append(event.data)

    def do_EndOfData(self, event: EndOfData) -> None:
        sender, content = self._sender, b"".join(self._body)
        self._reset()
        conn = self.connection
        refusal = (552, "5.3.4", "message too big") if event.tooBig else event.refusal()
        if refusal is not None:
            self.log.info(size=event.size, stat=refusal[0], reply="%d %s %s" % refusal)
            conn.reject(*refusal)
            return
        # the content is dot-unstuffed, with CRLF line ends only: store LF
        body = content.replace(b"\r\n", b"\n")
        for address in conn.unansweredRecipients:
            headers = b"Return-Path: <%s>\nDelivered-To: %s\n" % (
                sender.encode("utf-8"),
                address.encode("utf-8"),
            )
            try:
                path = self.store.deliver(mailboxName(address), headers, body)
            except OSError as e:
                self.log.error(
                    "deliver", rcpt="<%s>" % (address,), error=e.strerror or str(e)
                )
                conn.rejectRecipient(
                    451, "4.3.0", "<%s> cannot store the message" % (address,)
                )
                continue
            self.log.info(rcpt="<%s>" % (address,), file=path, stat=0)
            conn.acceptRecipient("<%s> delivered" % (address,))

    def do_Rset(self, event: Rset) -> None:
        self._reset()
        self.connection.accept("ok")

    def do_Quit(self, event: Quit) -> None:
        self.connection.accept("bye")

    def _notOffered(self, event: Event) -> None:  # pragma: no cover
        # neither STARTTLS nor AUTH is offered: the machine answers 502
        self.connection.reject(502, "5.5.1", "Command not available")

    _handlers = {
        Helo: do_Helo,
        MailFrom: do_MailFrom,
        RcptTo: do_RcptTo,
        DataCommand: do_DataCommand,
        DataChunk: do_DataChunk,
        EndOfData: do_EndOfData,
        Rset: do_Rset,
        Quit: do_Quit,
        StartTLS: _notOffered,
        Auth: _notOffered,
        AuthResponse: _notOffered,
    }  # type: Dict[type, Callable[[LMTPServerProtocol, Any], None]]


class LMTPFactory(protocol.Factory):
    """
    Builds L{LMTPServerProtocol}s delivering into one L{MaildirStore}.
    """

    def __init__(
        self,
        settings: LMTPServerSettings,
        logger: Optional[Logger] = None,
        clock: Any = None,
    ) -> None:
        """
        @param settings: the L{LMTPServerSettings} (C{maildirBase},
            C{hostname}, C{maxMessageSize}).
        """
        self.settings = settings
        self.store = MaildirStore(settings.maildirBase, clock)
        self.hostname = settings.hostname
        self.log = logger or Logger("lmtpd")
        self.maxMessageSize = settings.maxMessageSize

    def buildProtocol(self, addr: Any) -> LMTPServerProtocol:
        p = LMTPServerProtocol(self.store, self.hostname, self.log, self.maxMessageSize)
        p.factory = self
        return p


class LMTPDeliveryService(service.Service):
    """
    The LMTP server as a service: listens on C{socketPath} while running.
    """

    name = "lmtpd"  # type: ignore[assignment]

    def __init__(
        self,
        settings: LMTPServerSettings,
        reactor: Any = None,
        logger: Optional[Logger] = None,
        mode: int = 0o666,
    ) -> None:
        """
        @param settings: the L{LMTPServerSettings}.
        @param mode: the permissions of the Unix socket.
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        settings = dataclasses.replace(
            settings,
            socketPath=os.path.abspath(settings.socketPath),
            maildirBase=os.path.abspath(settings.maildirBase),
        )
        self.settings = settings
        self.socketPath = settings.socketPath
        self.maildirBase = settings.maildirBase
        self.reactor = reactor
        self.mode = mode
        self.factory = LMTPFactory(settings, logger, reactor)
        self.tcpPort = settings.tcpPort
        self.tcpAddress = settings.tcpAddress
        self.name = settings.name
        self._port = None  # type: Optional[IListeningPort]
        #: the TCP listening port while running (if C{tcpPort} is set)
        self.tcp = None  # type: Optional[IListeningPort]

    def startService(self) -> None:
        service.Service.startService(self)
        os.makedirs(self.maildirBase, exist_ok=True)
        _removeStaleSocket(self.socketPath)
        self._port = self.reactor.listenUNIX(
            socketName(self.socketPath), self.factory, mode=self.mode
        )
        if self.tcpPort is not None:
            from smx import net

            try:
                self.tcp = net.listenTCP(
                    self.reactor, self.tcpPort, self.factory, interface=self.tcpAddress
                )
            except Exception:
                port, self._port = self._port, None
                port.stopListening()
                raise

    def stopService(self) -> Any:
        service.Service.stopService(self)
        stopping = []
        for port in (self._port, self.tcp):
            if port is not None:
                stopping.append(port.stopListening())
        self._port = self.tcp = None
        if stopping:
            return defer.gatherResults([d for d in stopping if d is not None])
        return None


def lmtpdServices(cfg: Configuration, reactor: Any = None) -> List[LMTPDeliveryService]:
    """
    One L{LMTPDeliveryService} per C{lmtpd} section of C{cfg} (named or
    not), with its L{LMTPServerSettings} and its C{log} and
    C{log_level}.
    Service names are C{lmtpd} and C{lmtpd NAME}.
    """
    from smx.log import loggerFromConfiguration

    return [
        LMTPDeliveryService(
            LMTPServerSettings.fromSection(section),
            reactor=reactor,
            logger=loggerFromConfiguration("lmtpd", section),
        )
        for section in cfg.sections("lmtpd")
    ]


def _removeStaleSocket(path: str) -> None:
    """
    Remove a socket left by a crashed server; refuse to touch anything that
    is not a socket or that still has a listener.
    """
    import socket
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError("%s exists and is not a socket" % (path,))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(socketName(path))
    except OSError:
        os.unlink(path)
    else:
        raise OSError("%s: another server is listening there" % (path,))
    finally:
        probe.close()
