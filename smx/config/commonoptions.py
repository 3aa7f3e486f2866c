# -*- test-case-name: smx.config.test.test_options -*-
"""
The parts of the option table (L{smx.config.options}) that several
sections share: the MCP options of seed §5.2, the logging options of §5.5,
the C{tls} subsection of §5.9 and §5.10, and the value types built for
them.
"""

from __future__ import annotations

import socket as _socket
from typing import Any, List, Optional

from smx.config.schema import (
    Member,
    Option,
    section,
)
from smx.config.values import (
    CONFIG_RELATIVE,
    QUEUE_RELATIVE,
    Boolean,
    Enum,
    Flags,
    Integer,
    IPAddress,
    ListOf,
    Name,
    Path,
    Port,
    String,
    ValueProblem,
    ValueType,
    _checkHost,
)

Q = QUEUE_RELATIVE
C = CONFIG_RELATIVE

#: the most DNS blacklists (seed §5.8.2: SM_MAX_DNSBL)
MAX_DNSBL = 8
#: the most nameservers (seed §5.8.2: SM_DNS_MAX_TSKS)
MAX_NAMESERVERS = 4
#: the most daemon addresses (seed §5.9: SS_MAX_BIND_ADDRS)
MAX_DAEMON_ADDRESSES = 16

#: why the options of seed §5.2 have no effect in embedded mode
#: (L{smx.config.effect}; split mode is L{smx.mcp})
MCP_ONLY = (
    "used by the MCP in split mode, and no section of this configuration "
    "sets 'path' (doc/split.md)"
)
#: why C{user} and C{group} have no effect in embedded mode
MCP_USER = MCP_ONLY + "; twistd --uid and --gid set embedded smx's user"
#: why the options of seed §5.2 of a section without C{path} have no
#: effect in split mode
NOT_STARTED = "the MCP starts only the sections that set 'path'"
#: the sections that listen on C{port} and C{address} in embedded mode too
EMBEDDED_LISTENERS = ("smtps", "lmtpd")
#: why the openlog(3) options other than C{pid} have no effect
SYSLOG_SELF = (
    "smx writes to the syslog socket itself, without openlog(3): only pid is used"
)

#: syslog(3) facilities (seed §5.5)
FACILITIES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
)


def _hostName(text: str) -> None:
    try:
        _checkHost(text, True)
    except ValueProblem:
        raise ValueProblem("%r is not a host name" % (text,))


def HostName() -> String:
    """
    A (fully qualified) host or domain name.
    """
    return String(_hostName, "host name", empty=False)


def _mechanism(text: str) -> None:
    if not text or not all(c.isalnum() or c in "-_" for c in text):
        raise ValueProblem("%r is not a SASL mechanism name" % (text,))


def _fqdn() -> str:
    name = _socket.gethostname()
    if "." not in name:
        name = _socket.getfqdn(name)
    return name


def opt(
    name: str,
    valueType: ValueType,
    default: Optional[str],
    ref: str,
    doc: str,
    **kw: Any,
) -> Option:
    """
    Declare one option (a short spelling of L{Option}).
    """
    return Option(name, valueType, default, ref, doc, **kw)


SOCKET = section(
    "socket",
    "§5.2",
    "the Unix domain socket on which the service listens",
    [
        opt(
            "name",
            Path(Q),
            None,
            "§5.2",
            "path of the Unix domain socket",
        ),
        opt(
            "umask",
            Integer(0, 0o777, base=8),
            None,
            "§5.2",
            "umask used when creating the socket",
        ),
        opt("user", String(empty=False), None, "§5.2", "owner of the socket"),
        opt("group", String(empty=False), None, "§5.2", "group of the socket"),
    ],
)


def mcpMembers(
    socket: bool = True, required: bool = False, listens: bool = False
) -> List[Member]:
    """
    The options of seed §5.2, valid in every section of a service that
    MCP starts (L{smx.mcp.settings}).  In embedded mode they have no
    effect (L{smx.config.effect}), except C{port} and C{address} where
    C{listens}.

    @param socket: whether to include the C{socket} subsection (smx's
        C{lmtpd} has a C{socket} option instead).
    @param required: whether C{mcp_type}, C{path} and C{arguments} are
        required (they are for services that are not part of smx).
    @param listens: whether the component listens on C{port} and
        C{address} in embedded mode (smtps, lmtpd).
    """
    m = "mcp"
    members: List[Member] = [
        opt(
            "mcp_type",
            Enum(("nostartaccept", "accept", "pass", "wait")),
            None,
            "§5.2",
            "how MCP starts the service: nostartaccept (a process per "
            "connection), accept (MCP binds, the process accepts), pass (MCP "
            "binds and passes the socket over pass_fd_socket), wait (no socket)",
            group=m,
            required=required,
        ),
        opt(
            "type",
            Enum(("nostartaccept", "accept", "pass", "wait")),
            None,
            "§5.9.1",
            "the spelling of mcp_type used in the seed's §5.9.1 example",
            group=m,
            aliasOf=("mcp_type",),
        ),
        opt(
            "port",
            Port(),
            None,
            "§5.2",
            "TCP port on which the service listens",
            group=m,
        ),
        opt(
            "address",
            IPAddress(),
            "0.0.0.0",
            "§5.2",
            "IP address on which the service listens (INADDR_ANY)",
            group=m,
        ),
        opt(
            "min_processes",
            Integer(0, 1000),
            "1",
            "§5.2",
            "minimum number of processes to start",
            group=m,
        ),
        opt(
            "max_processes",
            Integer(1, 1000),
            "1",
            "§5.2",
            "maximum number of processes to start",
            group=m,
        ),
        opt(
            "pass_fd_socket",
            Path(Q),
            None,
            "§5.2",
            "Unix domain socket over which MCP passes the listening socket "
            "(required for mcp_type = pass)",
            group=m,
        ),
        opt(
            "user",
            String(empty=False),
            None,
            "§5.2",
            "user (name or number) the service runs as",
            group=m,
        ),
        opt(
            "group",
            String(empty=False),
            None,
            "§5.2",
            "group (name or number) the service runs as",
            group=m,
        ),
        opt(
            "restartdependencies",
            ListOf(Name(), typeName="list of names"),
            "{}",
            "§5.2",
            "services restarted together with this one",
            group=m,
        ),
        opt(
            "path",
            Path(Q),
            None,
            "§5.2",
            "program to execute",
            group=m,
            required=required,
        ),
        opt(
            "arguments",
            String(empty=False),
            None,
            "§5.2",
            "argv of the program, starting with its name",
            group=m,
            required=required,
        ),
        opt(
            "pass_id",
            String(empty=False),
            None,
            "§5.2",
            "option (e.g. -i) that passes a unique numeric id to each process",
            group=m,
        ),
        opt(
            "use_id_in_logfile_name",
            Boolean(),
            "no",
            "§5.2",
            "add the pass_id number to the log file name (needs pass_id)",
            group=m,
        ),
    ]
    if socket:
        members.insert(4, SOCKET)
    return members


def logMembers() -> List[Member]:
    """
    The options of seed §5.5, valid in every component section.
    """
    return [
        section(
            "log",
            "§5.5",
            "where the component logs: syslog(3) when facility is set, a "
            "file when file is set, else Twisted's log (standard output)",
            [
                opt(
                    "facility",
                    Enum(FACILITIES),
                    None,
                    "§5.5",
                    "syslog(3) facility; setting it logs to syslog",
                ),
                opt(
                    "ident",
                    String(empty=False),
                    None,
                    "§5.5",
                    "openlog(3) identification",
                    defaultDoc="the component's name",
                ),
                opt(
                    "options",
                    Flags(("pid", "cons", "ndelay", "odelay", "nowait", "perror")),
                    "{}",
                    "§5.5",
                    "openlog(3) options without LOG_; pid adds the process "
                    "id to syslog records",
                    inertFlags=tuple(
                        (f, SYSLOG_SELF)
                        for f in ("cons", "ndelay", "odelay", "nowait", "perror")
                    ),
                ),
                opt(
                    "file",
                    Path(Q),
                    None,
                    "smx",
                    "log file (smx); reopened on SIGUSR2 (§6.8.1)",
                ),
            ],
        ),
        opt(
            "log_level",
            Integer(0, 100),
            "9",
            "§5.5",
            "amount of logging; 9 for normal operation, 12 to 14 for testing",
            group="log",
        ),
    ]


def tlsMembers(server: bool) -> List[Member]:
    """
    The C{tls} subsection of SMTPS (seed §5.9, 18) and SMTPC (§5.10, 10).
    """
    ref = "§5.9" if server else "§5.10"
    members: List[Member] = [
        opt("cert_file", Path(C), None, ref, "certificate in PEM format"),
        opt("key_file", Path(C), None, ref, "private key of cert_file, PEM format"),
        opt("CAcert_file", Path(C), None, ref, "CA certificates in PEM format"),
        opt(
            "CAcert_path",
            Path(C),
            None,
            ref,
            "directory of (hashed links to) CA certificates in PEM format",
        ),
    ]
    if server:
        members.append(
            opt(
                "flags",
                Flags(("allow_relaying_if_verified", "check_access_map_for_relaying")),
                "{}",
                ref,
                "relaying for clients with a verified certificate: always, or "
                "as the certissuer:/certsubject: access map entries say",
            )
        )
    return members


#: the MCP options of a component that listens on no port in embedded mode
MCP = mcpMembers()
#: the MCP options of smtps, which listens on C{port} and C{address}
#: without C{daemon_address}
MCP_LISTENER = mcpMembers(listens=True)
LOG = logMembers()
