# -*- test-case-name: smx.mail.test.test_lmtpd -*-
"""
NAME
    smx.mail.lmtpd - a small LMTP server delivering into Maildirs

SYNOPSIS
    LMTPDeliveryService(socketPath, maildirBase).setServiceParent(parent)
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

CONFIGURATION PARAMETERS
    In embedded mode every C{lmtpd} section (named or not) is one server
    (L{lmtpdServices}): C{socket} (the Unix socket, SMTPC's
    C{LMTP_socket}), C{maildir_base}, C{log { ... }} and C{log_level}, the
    global C{hostname}, and C{port} with C{address} (seed §5.2): with a
    C{port} it listens for LMTP on that TCP address too.  The other
    options of seed §5.2 (C{mcp_type}, C{user}, C{processes}, ...) are
    for MCP.  C{smx lmtpd --socket --maildir} runs one server without a
    configuration.

SECURITY
    Local parts that could leave the base directory (C{/}, C{..}, a
    leading dot, NUL or other control characters) are refused with 550.
    Command lines are limited to 4096 bytes and messages to
    C{maxMessageSize} bytes.  The socket is created mode 0666 by default
    (it is meant for the MTA on the same host; put it in a directory with
    restricted permissions to limit who may deliver).
    A TCP listener (C{port}) takes mail for every local mailbox from
    whoever can connect: give it a loopback C{address} (the default,
    seed §5.2, is every address).

DIAGNOSTICS
    One record per delivery: C{lmtp_sess=, rcpt=<...>, file=..., stat=0}
    and C{sev=ERR} records for files that cannot be written (the recipient
    gets 451 4.3.0 and the sender retries).
"""

from __future__ import annotations

import os
import socket
from typing import Any, List, Optional, Tuple

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.mail.maildir import initializeMaildir
from twisted.protocols.basic import LineReceiver

from smx._twistedcompat import MaildirNameGenerator
from smx.log import Logger
from smx.unixsocket import socketName

#: the largest message accepted (bytes)
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024

_END = b"\r\n.\r\n"


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


class LMTPServerProtocol(LineReceiver):
    """
    One LMTP session.
    """

    transport: Any

    delimiter = b"\r\n"
    MAX_LENGTH = 4096

    def __init__(
        self,
        store: MaildirStore,
        hostname: str,
        logger: Logger,
        maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.store = store
        self.hostname = hostname
        self.log = logger
        self.maxMessageSize = maxMessageSize
        self._greeted = False
        self._reset()

    def _reset(self) -> None:
        self._sender = None  # type: Optional[str]
        self._rcpts = []  # type: List[Tuple[str, str]]
        self._data = bytearray()
        self._tooBig = False

    def reply(self, text: str) -> None:
        self.transport.write(text.encode("utf-8") + b"\r\n")

    def connectionMade(self) -> None:
        self.reply("220 %s LMTP smx lmtpd ready" % (self.hostname,))

    def lineLengthExceeded(self, line: bytes) -> None:
        self.reply("500 5.5.2 line too long")
        self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        verb, _, arg = line.partition(b" ")
        name = verb.upper().decode("ascii", "replace")
        handler = getattr(self, "do_" + name, None) if name.isalpha() else None
        if handler is None:
            self.reply("500 5.5.1 command unrecognized")
            return
        handler(arg.decode("utf-8", "replace").strip())

    def do_LHLO(self, arg: str) -> None:
        if not arg:
            self.reply("501 5.5.4 LHLO needs a domain")
            return
        self._greeted = True
        self._reset()
        self.reply(
            "250-%s\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n"
            "250-8BITMIME\r\n250 SIZE %d" % (self.hostname, self.maxMessageSize)
        )

    def do_HELO(self, arg: str) -> None:
        self.reply("500 5.5.1 this is LMTP: use LHLO")

    do_EHLO = do_HELO

    def do_MAIL(self, arg: str) -> None:
        if not self._greeted:
            self.reply("503 5.5.1 LHLO first")
            return
        if self._sender is not None:
            self.reply("503 5.5.1 nested MAIL command")
            return
        path = _path(arg, "FROM:")
        if path is None:
            self.reply("501 5.5.4 syntax: MAIL FROM:<address>")
            return
        for param in arg.split(">", 1)[1].split():
            key, _, value = param.partition("=")
            if key.upper() == "SIZE" and value.isdigit():
                if int(value) > self.maxMessageSize:
                    self.reply("552 5.3.4 message too big")
                    return
        self._sender = path
        self.reply("250 2.1.0 sender ok")

    def do_RCPT(self, arg: str) -> None:
        if self._sender is None:
            self.reply("503 5.5.1 MAIL first")
            return
        path = _path(arg, "TO:")
        if not path:
            self.reply("501 5.5.4 syntax: RCPT TO:<address>")
            return
        try:
            user = mailboxName(path)
        except UnsafeLocalPart:
            self.reply("550 5.1.3 bad mailbox name")
            return
        self._rcpts.append((path, user))
        self.reply("250 2.1.5 recipient ok")

    def do_DATA(self, arg: str) -> None:
        if self._sender is None:
            self.reply("503 5.5.1 MAIL first")
            return
        if not self._rcpts:
            self.reply("503 5.5.1 no valid recipients")
            return
        self.reply("354 send the message, end with <CRLF>.<CRLF>")
        self._data = bytearray(b"\r\n")
        self.setRawMode()

    def rawDataReceived(self, data: bytes) -> None:
        start = max(len(self._data) - 4, 0)
        self._data += data
        end = self._data.find(_END, start)
        if end < 0:
            if len(self._data) > self.maxMessageSize + 2:
                self._tooBig = True
                # keep only the tail needed to find the end marker
                del self._data[2:-4]
            return
        rest = bytes(self._data[end + len(_END) :])
        body = bytes(self._data[2 : end + 2])
        self._finish(body)
        self.setLineMode(rest)

    def _finish(self, body: bytes) -> None:
        rcpts, sender, tooBig = self._rcpts, self._sender or "", self._tooBig
        self._reset()
        if tooBig:
            for _ in rcpts:
                self.reply("552 5.3.4 message too big")
            return
        # undo dot-stuffing and store LF line ends
        if body.startswith(b".."):
            body = body[1:]
        body = body.replace(b"\r\n..", b"\r\n.").replace(b"\r\n", b"\n")
        for address, user in rcpts:
            headers = b"Return-Path: <%s>\nDelivered-To: %s\n" % (
                sender.encode("utf-8"),
                address.encode("utf-8"),
            )
            try:
                path = self.store.deliver(user, headers, body)
            except OSError as e:
                self.log.error(
                    "deliver", rcpt="<%s>" % (address,), error=e.strerror or str(e)
                )
                self.reply("451 4.3.0 <%s> cannot store the message" % (address,))
                continue
            self.log.info(rcpt="<%s>" % (address,), file=path, stat=0)
            self.reply("250 2.0.0 <%s> delivered" % (address,))

    def do_RSET(self, arg: str) -> None:
        self._reset()
        self.reply("250 2.0.0 ok")

    def do_NOOP(self, arg: str) -> None:
        self.reply("250 2.0.0 ok")

    def do_VRFY(self, arg: str) -> None:
        self.reply("252 2.5.2 cannot verify, but will try")

    def do_QUIT(self, arg: str) -> None:
        self.reply("221 2.0.0 bye")
        self.transport.loseConnection()


def _path(arg: str, prefix: str) -> Optional[str]:
    if not arg.upper().startswith(prefix):
        return None
    rest = arg[len(prefix) :].strip()
    if not rest.startswith("<") or ">" not in rest:
        return None
    return rest[1 : rest.index(">")]


class LMTPFactory(protocol.Factory):
    """
    Builds L{LMTPServerProtocol}s delivering into one L{MaildirStore}.
    """

    def __init__(
        self,
        maildirBase: str,
        hostname: Optional[str] = None,
        logger: Optional[Logger] = None,
        clock: Any = None,
        maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.store = MaildirStore(maildirBase, clock)
        self.hostname = hostname or socket.getfqdn()
        self.log = logger or Logger("lmtpd")
        self.maxMessageSize = maxMessageSize

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
        socketPath: str,
        maildirBase: str,
        reactor: Any = None,
        hostname: Optional[str] = None,
        logger: Optional[Logger] = None,
        mode: int = 0o666,
        tcpPort: Optional[int] = None,
        tcpAddress: str = "0.0.0.0",
    ) -> None:
        """
        @param tcpPort: listen for LMTP on this TCP port (of
            C{tcpAddress}) too; C{0} picks a free one.
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.socketPath = os.path.abspath(socketPath)
        self.maildirBase = os.path.abspath(maildirBase)
        self.reactor = reactor
        self.mode = mode
        self.factory = LMTPFactory(self.maildirBase, hostname, logger, reactor)
        self.tcpPort = tcpPort
        self.tcpAddress = tcpAddress
        self._port = None  # type: Optional[Any]
        #: the TCP listening port while running (if C{tcpPort} is set)
        self.tcp = None  # type: Optional[Any]

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


def lmtpdServices(cfg: Any, reactor: Any = None) -> List[LMTPDeliveryService]:
    """
    One L{LMTPDeliveryService} per C{lmtpd} section of C{cfg} (named or
    not), each with its section's C{socket}, C{maildir_base}, C{log},
    C{log_level}, C{port} and C{address}, and the global C{hostname}.
    Service names are C{lmtpd} and C{lmtpd NAME}.
    """
    from smx.log import loggerFromConfiguration

    services = []  # type: List[LMTPDeliveryService]
    for section in cfg.sections("lmtpd"):
        port = section["port"]
        svc = LMTPDeliveryService(
            section["socket"],
            section["maildir_base"],
            reactor=reactor,
            hostname=cfg.globals["hostname"],
            logger=loggerFromConfiguration("lmtpd", section),
            tcpPort=None if port is None else int(port),
            tcpAddress=section["address"] or "0.0.0.0",
        )
        svc.name = section.title()
        services.append(svc)
    return services


def _removeStaleSocket(path: str) -> None:
    """
    Remove a socket left by a crashed server; refuse to touch anything that
    is not a socket or that still has a listener.
    """
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
