# -*- test-case-name: smx.config.test.test_options -*-
"""
The one table of every smx.conf option (seed §5.2-§5.10): its name, type,
default (with unit), bounds, the seed section that describes it, and the
section it belongs to.

Defaults the seed gives are used as given; where the seed gives none,
the value chosen for smx is documented here and in
C{doc/configuration.md} (generated from this table by
C{smx config --reference}).

C{ROOT} is the top level of the file.  Its subsections are the components
(C{qmgr}, C{smar}, C{smtps}, C{smtpc}), smx's own C{lmtpd}, and C{map}
declarations (also accepted inside C{smar}).  Any other top-level section
that sets C{mcp_type} is a service started by MCP (seed §5.3: "Other
sections may define services that are started by MCP, e.g., a local
mailer"); L{serviceSpec} describes it.
"""

from __future__ import annotations

from smx.config.commonoptions import (
    LOG,
    MAX_DAEMON_ADDRESSES,
    MAX_DNSBL,
    MAX_NAMESERVERS,
    MCP,
    MCP_LISTENER,
    HostName,
    _fqdn,
    _mechanism,
    mcpMembers,
    opt,
    tlsMembers,
)
from smx.config.componentoptions import checkDebugOption
from smx.config.filteroptions import MILTER, QMGR_MILTERS, SMTPS_MILTERS
from smx.config.filteroptions import POLICY, SMTPS_POLICY_OPTIONS
from smx.config.tlsoptions import SMTPC_TLS_OPTIONS
from smx.config.schema import OPTIONAL_NAME, REQUIRED_NAME, SectionSpec, section
from smx.config.tlsserveroptions import serverTLSMembers
from smx.config.values import (
    CONFIG_RELATIVE,
    QUEUE_RELATIVE,
    Address,
    Boolean,
    Character,
    Enum,
    Flags,
    Integer,
    IPAddress,
    ListOf,
    Name,
    Path,
    Port,
    Size,
    String,
    Time,
    ValueProblem,
    splitAddress,
)

Q = QUEUE_RELATIVE
C = CONFIG_RELATIVE

#: why thread pool options have no effect
NO_THREADS = "smx serves sessions in an event loop, not in threads"


def _authAddress(text: str) -> None:
    try:
        host, port = splitAddress(text, 0)
    except ValueError as e:
        raise ValueProblem(str(e))
    if port == 0 or text.startswith(":"):
        raise ValueProblem("%r needs a host and a port, e.g. 127.0.0.1:12345" % (text,))


def _authService(text: str) -> None:
    if any(c in text for c in "\t\n\r\0\001") or not text.isprintable():
        raise ValueProblem("%r contains control characters" % (text,))


QMGR = section(
    "qmgr",
    "§5.7",
    "the queue manager",
    MCP
    + LOG
    + [
        opt(
            "AQ_max_entries",
            Integer(1, 10**7, unit="entries"),
            "8192",
            "§5.7",
            "maximum number of entries in the active queue; must be larger "
            "than the recipients of one transaction",
        ),
        opt(
            "SMAR_timeout",
            Time(minimum=1),
            "1m",
            "§5.7",
            "how long to wait for a result from SMAR (longer than DNS_timeout)",
        ),
        opt(
            "debug_level",
            Integer(0, 100),
            "0",
            "§5.7",
            "debug level of every QMGR debug category not in debug_categories",
        ),
        opt(
            "debug_categories",
            ListOf(String(checkDebugOption), typeName="list of debug options"),
            "{}",
            "smx",
            "debug levels of QMGR debug categories, as qmgr -x: "
            "category[-category][.level] (App. E; 1 smtps, 2 ibdb, 3 sched, "
            "4 smar, 5 smtpc, 6 defedb, 7 dsn, 8 conn); DEBUG records go to the "
            "qmgr log whatever its log_level",
        ),
        opt(
            "control_socket",
            Path(Q),
            "qmgrctl.sock",
            "§5.7",
            "Unix domain socket for qmgrctl (§6.6.3)",
        ),
        QMGR_MILTERS,
        section(
            "DEFEDB",
            "§5.7",
            "the deferred envelope database (Berkeley DB environment)",
            [
                opt(
                    "base_directory",
                    Path(Q),
                    "defedb",
                    "§5.7",
                    "home directory of DEFEDB",
                ),
                opt(
                    "log_directory",
                    Path(Q),
                    "defedb",
                    "§5.7",
                    "log directory of DEFEDB (put it on another disk for speed)",
                ),
                opt(
                    "page_size",
                    Size(minimum=512, maximum=65536),
                    "4KB",
                    "§5.7",
                    "Berkeley DB page size",
                ),
                opt(
                    "cache_size",
                    Size(minimum=20 * 1024),
                    "1MB",
                    "§5.7",
                    "Berkeley DB cache size",
                ),
                opt(
                    "KBytes_written_for_checkpointing",
                    Size("KB"),
                    "1MB",
                    "§5.7",
                    "checkpoint after this much log data (0: never by size)",
                ),
                opt(
                    "delay_between_2_checkpoints",
                    Time(),
                    "1m",
                    "§5.7",
                    "minimum delay between two checkpoints (0: DEFEDB is "
                    "checkpointed only when QMGR stops)",
                ),
            ],
        ),
        opt(
            "delivery_timeout",
            Time(minimum=1),
            "1h",
            "§5.7",
            "timeout for one delivery attempt",
        ),
        opt(
            "DSN_max_delay",
            Time(),
            "5m",
            "§5.7",
            "maximum time for scheduling a DSN",
        ),
        opt(
            "aliases",
            Enum(
                ("localpart", "localdomains", "all"),
                {"local_domains": "localdomains", "all_domains": "all"},
            ),
            "localpart",
            "§5.7",
            "what the aliases map applies to: the local part of local "
            "addresses, full local addresses, or all addresses",
        ),
        opt(
            "flags",
            Flags(("reuse_connection", "header_only_in_bounce", "DSN_in_MIME_Format")),
            "{}",
            "§5.7",
            "reuse open SMTP connections; only headers in bounces; MIME DSNs",
            inertFlags=(
                (
                    "dsn_in_mime_format",
                    "DSNs are always MIME (RFC 3464 multipart/report)",
                ),
            ),
        ),
        section(
            "IBDB",
            "§5.7",
            "the incoming backup database (envelope log)",
            [
                opt(
                    "max_commit_delay",
                    Time("us", maximum=10),
                    "10ms",
                    "§5.7",
                    "maximum time between commits (a bare number is in µs)",
                ),
                opt(
                    "size",
                    Size(minimum=64 * 1024),
                    "64MB",
                    "§5.7",
                    "maximum size of one IBDB file",
                ),
                opt(
                    "max_open_TAs",
                    Integer(1, 10**6, unit="entries"),
                    "100",
                    "§5.7",
                    "open transactions that force a commit",
                ),
                opt(
                    "content_sync",
                    Enum(("filesystem", "file")),
                    "filesystem",
                    "smx",
                    "how a commit makes the contents SMTPS wrote durable: "
                    "one syncfs(2) of each file system holding CDB for all "
                    "of them (and IBDB on the same one), or an fsync of each "
                    "content file (for a queue on a file system that other "
                    "programs write much to)",
                ),
            ],
        ),
        section(
            "IQDB",
            "§5.7",
            "the incoming queue (in memory)",
            [
                opt(
                    "max_cache_entries",
                    Integer(1, 10**8, unit="entries"),
                    "65536",
                    "§5.7",
                    "maximum number of entries in IQDB",
                ),
                opt(
                    "hash_table_entries",
                    Integer(1, 10**8, unit="entries"),
                    "16384",
                    "§5.7",
                    "size of the IQDB hash table",
                    inert="IQDB is a Python dict, which sizes itself",
                ),
            ],
        ),
        opt(
            "max_errors_per_bounce",
            Integer(1, 10**6, unit="entries"),
            "100",
            "§5.7",
            "maximum number of failed recipients in one bounce",
        ),
        opt(
            "min_disk_space",
            Size("KB"),
            "100MB",
            "§5.7",
            "free disk space below which no mail is accepted",
        ),
        opt(
            "OCC_max_entries",
            Integer(1, 10**7, unit="entries"),
            "1024",
            "§5.7",
            "size of the open connection cache",
        ),
        opt(
            "ok_disk_space",
            Size("KB"),
            "200MB",
            "§5.7",
            "free disk space at which normal operation resumes (> min_disk_space)",
        ),
        opt(
            "queuereturn_timeout",
            Time(minimum=1),
            "5d",
            "§5.7",
            "maximum time in the queue before a bounce",
        ),
        opt(
            "queuedelay_timeout",
            Time(minimum=1),
            "4h",
            "§5.7",
            "time in the queue before a delay DSN (larger than "
            "queuereturn_timeout: none)",
        ),
        opt(
            "retry_max_delay",
            Time(minimum=1),
            "1h",
            "§5.7",
            "maximum time between delivery attempts",
        ),
        opt(
            "retry_min_delay",
            Time(minimum=1),
            "5m",
            "§5.7",
            "minimum time between delivery attempts; also how long a next "
            "hop none of whose addresses took the connection is suspended "
            "(its mail deferred without an attempt, as Postfix's dead "
            "destinations)",
        ),
        opt(
            "smtpc_initial_connections",
            Integer(1, 10**5, unit="entries"),
            "10",
            "§5.7.1",
            "initial number of connections to one host (-c)",
        ),
        opt(
            "smtpc_max_connections",
            Integer(1, 10**5, unit="entries"),
            "100",
            "§5.7.1",
            "maximum number of connections to one host (-C)",
        ),
        opt(
            "smtps_max_connection_rate",
            Integer(1, 10**6, unit="connections/60s"),
            "100",
            "§5.7.1",
            "maximum connection rate from one host (-O R=)",
        ),
        opt(
            "smtps_max_open_connections",
            Integer(1, 10**5, unit="entries"),
            "100",
            "§5.7.1",
            "maximum open connections from one host (-O 0=)",
        ),
        opt(
            "tests",
            Integer(0),
            "0",
            "§5.7",
            "testing only; 0 in operation",
            inert="a test hook of sendmail X's QMGR; smx's has none",
        ),
        opt(
            "wait_for_client",
            Time(),
            "10s",
            "§5.7",
            "how long to wait for a client (SMTPS, SMTPC) to become available",
        ),
        opt(
            "wait_for_server",
            Time(),
            "10s",
            "§5.7",
            "how long to wait for a server (SMAR) to become available; also "
            "how long a delivery waits for a slow-start slot of its "
            "destination before it is deferred (and tried again when the "
            "destination has room)",
        ),
        opt(
            "conf",
            Path(C),
            "conf.db",
            "§5.7.1",
            "the configuration map (oci:, ocm:, octo:, icr:, ios:)",
        ),
    ],
)

MAP = section(
    "map",
    "§5.8.1",
    "a map declaration, referred to by its name (also valid at the top level)",
    [
        opt(
            "type",
            Enum(("hash", "sequence", "socket", "passwd")),
            None,
            "§5.8.1",
            "hash (Berkeley DB), sequence (of maps), socket (socket map "
            "protocol) or passwd (local users)",
            required=True,
        ),
        opt("file", Path(C), None, "§5.8.1", "the db file (type hash only)"),
        opt(
            "mapname",
            String(empty=False),
            None,
            "§5.8.1",
            "name of the map in the socket map protocol (socket)",
            defaultDoc="the map's name",
        ),
        opt("path", Path(Q), None, "§5.8.1", "Unix domain socket (socket)"),
        opt(
            "address", IPAddress(), None, "§5.8.1", "address of an inet socket (socket)"
        ),
        opt("port", Port(), None, "§5.8.1", "port of an inet socket (socket)"),
        opt(
            "maps",
            ListOf(Name(), typeName="list of names"),
            None,
            "§5.8.1",
            "the maps of a sequence, in lookup order (sequence only)",
        ),
    ],
    naming=REQUIRED_NAME,
    multiple=True,
)

SMAR = section(
    "smar",
    "§5.8",
    "the address resolver",
    MCP
    + LOG
    + [
        section(
            "dnsbl",
            "§5.8.2",
            "a DNS blacklist (up to %d, looked up in the access map in order)"
            % (MAX_DNSBL,),
            [
                opt(
                    "domain",
                    HostName(),
                    None,
                    "§5.8.2",
                    "domain of the DNS lookups, e.g. dnsbl.tld",
                    required=True,
                ),
                opt(
                    "tag",
                    Name(),
                    None,
                    "§5.8.2",
                    "tag of the access map lookups (tag:W.X.Y.Z, tag:temp, tag:perm)",
                    required=True,
                ),
            ],
            multiple=True,
            maxCount=MAX_DNSBL,
        ),
        opt(
            "DNS_flags",
            Flags(("use_TCP", "use_connect")),
            "{}",
            "§5.8.2",
            "use TCP for DNS; connect(2) the UDP socket",
            inertFlags=(
                ("use_connect", "twisted.names manages its UDP sockets itself"),
            ),
        ),
        opt("DNS_timeout", Time(minimum=1), "10s", "§5.8.2", "timeout of DNS requests"),
        opt(
            "cache_ttl",
            Time(),
            "5s",
            "smx",
            "how long a client, sender or recipient decision, and a resolution "
            "made without DNS, is reused (0: never; a map reload empties the "
            "cache)",
        ),
        opt(
            "nameserver",
            ListOf(
                Address(53, False, "address"),
                MAX_NAMESERVERS,
                typeName="list of addresses",
            ),
            "{}",
            "§5.8.2",
            "nameservers as addr, addr:port or [IPv6]:port (none: " "/etc/resolv.conf)",
        ),
        opt(
            "local_user_map",
            Name(),
            None,
            "§5.8.2",
            "a declared map of valid local addresses",
        ),
        opt(
            "address_delimiter",
            Character(),
            "+",
            "§5.8.2",
            "delimiter of address extensions (user+detail)",
        ),
        section(
            "aliases",
            "§5.8.2",
            "the aliases map",
            [
                opt("name", Path(C), "aliases.db", "§5.8.2", "the aliases map"),
                opt(
                    "flags",
                    Flags(
                        (
                            "localpart",
                            "local_domains",
                            "all_domains",
                            "replace_macros",
                            "preserve_domain",
                        )
                    ),
                    "{localpart}",
                    "§5.8.2",
                    "which keys the map has and how results are rewritten",
                ),
            ],
        ),
        section(
            "mailertable",
            "§5.8.2",
            "the mailertable",
            [opt("name", Path(C), "mt", "§5.8.2", "the mailertable map")],
        ),
        section(
            "access",
            "§5.8.2",
            "the access map",
            [opt("name", Path(C), "access.db", "§5.8.2", "the access map")],
        ),
        MAP,
    ],
    naming=OPTIONAL_NAME,
)

SMTPS = section(
    "smtps",
    "§5.9",
    "an SMTP server; several with different names may be given (§5.9.1)",
    MCP_LISTENER
    + LOG
    + [
        opt(
            "CDB_gid",
            Integer(0, 2**31 - 1),
            None,
            "§5.9",
            "numeric group id of CDB files (the group of smxq)",
            inert="in split mode the CDB directories smx setup makes are "
            "set-group-id to qmgr's group instead (doc/setup.md); embedded smx "
            "writes CDB as one user",
        ),
        opt(
            "daemon_address",
            ListOf(
                Address(8000, True, "address"),
                MAX_DAEMON_ADDRESSES,
                typeName="list of addresses",
            ),
            "{}",
            "§5.9",
            "addresses to listen on: host:port, :port, host (port 8000), "
            "[IPv6]:port",
        ),
        opt(
            "flags",
            Flags(
                (
                    "8bitmime",
                    "background",
                    "delay_checks",
                    "lmtp_does_not_imply_relaying",
                    "serialize_accept",
                    "softbounce",
                    "access",
                ),
                {"lmtpl_does_not_imply_relaying": "lmtp_does_not_imply_relaying"},
            ),
            "{}",
            "§5.9",
            "offer 8BITMIME; fork at start; delay checks to RCPT; LMTP domains "
            "are not local for relaying; serialize accept(2); 5xy becomes "
            "4xy; use the access map",
            inertFlags=(
                (
                    "background",
                    "twistd decides: without -n it runs in the background",
                ),
                (
                    "serialize_accept",
                    "one process accepts on each listening socket: there is "
                    "nothing to serialize",
                ),
            ),
        ),
        opt(
            "id",
            Integer(0, 255),
            "0",
            "§5.9",
            "unique identifier of the server: the 8-bit process id in its "
            "session and transaction ids (App. C.1)",
        ),
        opt(
            "relay_clients",
            ListOf(IPAddress(), typeName="list of IP addresses"),
            "{}",
            "smx",
            "clients (IP addresses) that may relay, as smtps -C (§3.2.1)",
        ),
        opt(
            "io_timeout",
            Time(minimum=1),
            "5m",
            "§5.9",
            "timeout of SMTP operations: the time a client has to send a "
            "complete command or data line (or 2 KB of a longer one), and to "
            "finish the TLS handshake after STARTTLS; part of a line does "
            "not extend it (a deadline per line, as Postfix's "
            "smtpd_per_record_deadline); then 421 4.4.2, and a session "
            "whose handshake did not finish is dropped",
        ),
        opt(
            "max_message_time",
            Time(),
            "1h",
            "smx",
            "the time a client has from the 354 reply to the final dot; then "
            "421 4.4.2 and the message is not accepted (0: no limit)",
        ),
        opt(
            "max_session_time",
            Time(),
            "1h",
            "smx",
            "the time a session may last; then it ends with 421 4.4.2 when "
            "smx next waits for a command (a message being received may "
            "finish first; 0: no limit)",
        ),
        opt(
            "max_threads",
            Integer(1, 10**6),
            "256",
            "§5.9",
            "maximum concurrent sessions per process: smx runs a session per "
            "connection, not a thread; a listener takes processes x max_threads "
            "sessions; beyond, it closes the session that has kept it "
            "waiting longest (at least 1s) or answers 421 4.3.2; an address "
            "with slow sessions gets at most 1/8 of them (see "
            "doc/architecture.md, Session limits)",
        ),
        opt(
            "max_wait_threads",
            Integer(0, 10**6),
            "8",
            "§5.9",
            "accepted for compatibility; sessions need no waiting threads",
            inert=NO_THREADS,
        ),
        opt(
            "min_wait_threads",
            Integer(0, 10**6),
            "2",
            "§5.9",
            "accepted for compatibility; sessions need no waiting threads",
            inert=NO_THREADS,
        ),
        opt(
            "max_bad_commands_per_session",
            Integer(0, 10**6),
            "3",
            "§5.9",
            "bad commands before the session ends with 421",
        ),
        opt(
            "max_recipients",
            Integer(0, 10**7),
            None,
            "§5.9",
            "deprecated spelling of max_recipients_per_session",
            aliasOf=("max_recipients_per_session",),
            deprecated=True,
        ),
        opt(
            "max_recipients_per_session",
            Integer(0, 10**7),
            "0",
            "§5.9",
            "maximum recipients per session (0: no limit)",
        ),
        opt(
            "max_recipients_per_transaction",
            Integer(1, 10**7),
            "1000",
            "§5.9",
            "maximum recipients per transaction",
        ),
        opt(
            "max_hops",
            Integer(1, 1000),
            "21",
            "§5.9",
            "maximum number of Received: headers",
        ),
        opt(
            "max_message_size",
            Size("KB", minimum=1024, zero=True),
            "8MB",
            "§5.9",
            "maximum message size (a bare number is in KB); 0: no limit (as "
            "Postfix's message_size_limit = 0; EHLO then offers SIZE without "
            "a number), QMGR's disk space checks still apply",
        ),
        opt(
            "processes",
            Integer(1, 1000),
            "1",
            "§5.9",
            "number of processes (split mode); embedded, it multiplies max_threads",
        ),
        opt(
            "max_transactions",
            Integer(0, 10**7),
            "0",
            "§5.9",
            "maximum transactions per session (0: no limit)",
        ),
        SMTPS_MILTERS,
        *SMTPS_POLICY_OPTIONS,
        section("tls", "§5.9", "STARTTLS", tlsMembers(True) + serverTLSMembers()),
        section(
            "auth",
            "§5.9",
            "SMTP AUTH",
            [
                opt(
                    "flags",
                    Flags(
                        (
                            "noplaintext",
                            "noactive",
                            "nodictionary",
                            "forward_secrecy",
                            "noanonymous",
                            "pass_credentials",
                            "mutual_auth",
                            "allow_plaintext_without_tls",
                        )
                    ),
                    "{}",
                    "§5.9",
                    "SASL security flags; allow_plaintext_without_tls (smx) "
                    "offers PLAIN and LOGIN before STARTTLS",
                    inertFlags=(
                        (
                            "pass_credentials",
                            "smx offers no mechanism that passes credentials "
                            "on and filters none by it",
                        ),
                    ),
                ),
                opt(
                    "type",
                    Enum(("file", "dovecot", "saslauthd")),
                    "file",
                    "smx",
                    "the AUTH back end (smx): file (password_file), dovecot "
                    "(Dovecot's authentication server, as Postfix's "
                    "smtpd_sasl_type = dovecot) or saslauthd (Cyrus "
                    "saslauthd; PLAIN and LOGIN only)",
                ),
                opt(
                    "password_file",
                    Path(C),
                    None,
                    "smx",
                    "user:password lines of the users who may authenticate "
                    "(smx, type file); with type file AUTH is offered only "
                    "when it is set",
                ),
                opt(
                    "path",
                    Path(C),
                    None,
                    "smx",
                    "Unix domain socket of the back end (smx, type dovecot or "
                    "saslauthd)",
                    defaultDoc="/run/dovecot/auth-client (dovecot), "
                    "/run/saslauthd/mux (saslauthd)",
                ),
                opt(
                    "address",
                    String(_authAddress, "address", empty=False),
                    None,
                    "smx",
                    "host:port of Dovecot's authentication server instead of "
                    "path (smx, type dovecot; an inet_listener of its auth "
                    "service)",
                ),
                opt(
                    "service",
                    String(_authService, "name", empty=False),
                    "smtp",
                    "smx",
                    "service name sent to the back end (smx, type dovecot or "
                    "saslauthd; saslauthd -a pam uses it as the PAM service)",
                ),
                opt(
                    "realm",
                    String(_authService, "name"),
                    None,
                    "smx",
                    "realm sent to saslauthd (smx, type saslauthd)",
                ),
                opt(
                    "timeout",
                    Time(minimum=1),
                    "30s",
                    "smx",
                    "longest wait for the back end's connection and each "
                    "answer (smx, type dovecot or saslauthd); then 454 4.7.0",
                ),
                opt(
                    "trusted_mechs",
                    ListOf(String(_mechanism, empty=False), typeName="list of names"),
                    None,
                    "§5.9",
                    "mechanisms whose successful use allows relaying; when it "
                    "is not set, a successful AUTH with any offered mechanism "
                    "allows relaying (as Postfix's permit_sasl_authenticated); "
                    "{} lets no mechanism allow relaying",
                    defaultDoc="every offered mechanism",
                ),
            ],
        ),
        opt(
            "trusted_auth_mechs",
            ListOf(String(_mechanism, empty=False), typeName="list of names"),
            None,
            "§5.9.1",
            "the §5.9.1 spelling of auth { trusted_mechs }",
            aliasOf=("auth", "trusted_mechs"),
        ),
        opt(
            "auth_flags",
            Flags(
                (
                    "noplaintext",
                    "noactive",
                    "nodictionary",
                    "forward_secrecy",
                    "noanonymous",
                    "pass_credentials",
                    "mutual_auth",
                    "allow_plaintext_without_tls",
                )
            ),
            None,
            "§5.9.1",
            "the §5.9.1 spelling of auth { flags }",
            aliasOf=("auth", "flags"),
        ),
        section(
            "pmilter",
            "§5.9",
            "the policy milter (§8)",
            [
                opt(
                    "socket",
                    Path(Q),
                    None,
                    "§5.9",
                    "Unix domain socket of the policy milter",
                ),
                opt(
                    "timeout",
                    Time(minimum=1),
                    "1m",
                    "§5.9",
                    "maximum wait for a reply of the policy milter",
                ),
                opt(
                    "plugins",
                    ListOf(Name(), typeName="list of names"),
                    "{}",
                    "smx",
                    "pmilters that run inside SMTPS, in the order they are "
                    "asked: Twisted plugins providing IPolicyMilter "
                    "(doc/pmilter.md); asked before the one behind socket",
                ),
                opt(
                    "on_failure",
                    Enum(("tempfail", "accept")),
                    "tempfail",
                    "smx",
                    "what a command gets when a pmilter is down, slow, fails "
                    "or answers nonsense: tempfail (451 4.3.0) or accept (as "
                    "if it had no objection)",
                ),
                section(
                    "greylist",
                    "smx",
                    "settings of the greylist pmilter (doc/pmilter.md)",
                    [
                        opt(
                            "database",
                            Path(Q),
                            "greylist.db",
                            "smx",
                            "Berkeley DB file of the triplets and the whitelist",
                        ),
                        opt(
                            "delay",
                            Time(),
                            "5m",
                            "smx",
                            "how long the first attempt of a new triplet (client "
                            "network, sender, recipient) is refused with 451 4.7.1",
                        ),
                        opt(
                            "retry_window",
                            Time(minimum=1),
                            "2d",
                            "smx",
                            "how long a refused triplet waits for its retry",
                        ),
                        opt(
                            "lifetime",
                            Time(minimum=1),
                            "35d",
                            "smx",
                            "how long a triplet that passed is kept since it was "
                            "last seen",
                        ),
                        opt(
                            "ipv4_prefix",
                            Integer(8, 32),
                            "24",
                            "smx",
                            "the client network of an IPv4 client (its /24)",
                        ),
                        opt(
                            "ipv6_prefix",
                            Integer(16, 128),
                            "64",
                            "smx",
                            "the client network of an IPv6 client (its /64)",
                        ),
                        opt(
                            "loopback",
                            Boolean(),
                            "no",
                            "smx",
                            "greylist clients on loopback addresses too (behind "
                            "a proxy on the same host every client is one); by "
                            "default they are never greylisted",
                        ),
                    ],
                ),
                section(
                    "rules",
                    "smx",
                    "settings of the rules pmilter (doc/pmilter.md)",
                    [
                        opt(
                            "file",
                            Path(C),
                            "pmilter.rules",
                            "smx",
                            "the rules file, read again on SIGUSR1",
                        ),
                    ],
                ),
            ],
        ),
    ],
    naming=OPTIONAL_NAME,
    multiple=True,
)

SMTPC = section(
    "smtpc",
    "§5.10",
    "an SMTP and LMTP client",
    MCP
    + LOG
    + [
        opt(
            "debug_level",
            Integer(0, 100),
            "0",
            "§5.10",
            "debug level",
            inert="smx's SMTPC writes no debug records; qmgr's "
            "debug_categories 5 (smtpc) shows deliveries as QMGR sees them",
        ),
        opt("io_timeout", Time(minimum=1), "5m", "§5.10", "timeout of SMTP operations"),
        opt(
            "LMTP_socket",
            Path(Q),
            "lmtpsock",
            "§5.10",
            "Unix domain socket for LMTP delivery (mailertable lmtp:)",
        ),
        opt(
            "max_wait_threads",
            Integer(0, 10**6),
            "8",
            "§5.10",
            "accepted for compatibility; smx has no thread pool",
            inert=NO_THREADS,
        ),
        opt(
            "min_wait_threads",
            Integer(0, 10**6),
            "2",
            "§5.10",
            "accepted for compatibility; smx has no thread pool",
            inert=NO_THREADS,
        ),
        opt(
            "remote_port",
            Port(),
            "25",
            "§5.10",
            "port of SMTP connections (the same in every smtpc section)",
        ),
        opt(
            "processes",
            Integer(1, 1000),
            "1",
            "§5.10",
            "number of processes",
            inert="embedded smx delivers from one process; in split mode the "
            "MCP starts as many SMTPC processes as the min_processes of smtpc",
        ),
        opt(
            "wait_for_server",
            Time(),
            "10s",
            "§5.10",
            "how long to wait for QMGR to become available",
        ),
        section("tls", "§5.10", "STARTTLS", tlsMembers(False)),
        *SMTPC_TLS_OPTIONS,
    ],
    naming=OPTIONAL_NAME,
    multiple=True,
)

LMTPD = section(
    "lmtpd",
    "smx",
    "smx's LMTP server that delivers into Maildirs (smx lmtpd); its "
    "socket is an option, not the MCP subsection",
    mcpMembers(socket=False, listens=True)
    + LOG
    + [
        opt(
            "socket",
            Path(Q),
            "lmtpsock",
            "smx",
            "Unix domain socket the LMTP server listens on (smtpc's LMTP_socket)",
        ),
        opt(
            "maildir_base",
            Path(Q),
            "maildir",
            "smx",
            "directory that holds one Maildir per local user",
        ),
        opt(
            "max_message_size",
            Size("KB", minimum=1024, zero=True),
            "64MB",
            "smx",
            "largest message stored (a bare number is in KB; 0: no limit); "
            "a larger one is refused with 552 5.3.4 for every recipient",
        ),
    ],
    naming=OPTIONAL_NAME,
    multiple=True,
)

PICKUP = section(
    "pickup",
    "smx",
    "local submission: where smx sendmail and the pickup service submit, "
    "and the maildrop directory smx sendmail writes to when smx does not "
    "answer, which pickup empties (doc/sendmail.md)",
    MCP
    + LOG
    + [
        opt(
            "submission_address",
            Address(25, True, "address"),
            None,
            "smx",
            "SMTPS address (host:port) that smx sendmail and pickup submit to",
            defaultDoc="the first daemon_address of the first smtps section, "
            "0.0.0.0 as 127.0.0.1 and :: as ::1",
        ),
        opt(
            "maildrop_directory",
            Path(Q),
            "maildrop",
            "smx",
            "directory of messages smx sendmail could not submit",
        ),
        opt(
            "maildrop_group",
            String(empty=False),
            None,
            "smx",
            "group whose members may write into the maildrop directory "
            "(like Postfix's postdrop); pickup makes the directory mode 3730 "
            "with this group (none: mode 0700, only smx's user)",
        ),
        opt(
            "interval",
            Time(minimum=0.01),
            "5s",
            "smx",
            "how often pickup looks into the maildrop directory",
        ),
    ],
)

METRICS = section(
    "metrics",
    "smx",
    "Prometheus metrics over HTTP (doc/metrics.md); in split mode the MCP "
    "serves those of every process",
    [
        opt(
            "address",
            Address(9125, False, "address"),
            None,
            "smx",
            "address (host:port; :port is 127.0.0.1:port) of the HTTP "
            "listener that serves the metrics at /metrics (none: no "
            "listener); use a loopback address, the endpoint has no "
            "authentication",
        ),
    ],
)

ROOT = section(
    "",
    "§5.4",
    "options of the global section",
    [
        opt(
            "hostname",
            HostName(),
            None,
            "§5.4",
            "host name used by the components",
            dynamicDefault=_fqdn,
            defaultDoc="the host's fully qualified name",
        ),
        opt(
            "MCP_control_socket",
            Path(Q),
            "mcp.ctl",
            "smx",
            "control socket of the MCP in split mode (smx mcpctl, doc/split.md)",
        ),
        opt(
            "CDB_base_directory",
            Path(Q, empty=True),
            '""',
            "§5.4",
            "base directory of CDB (empty: the queue directory)",
        ),
        opt(
            "SMAR_socket",
            Path(Q),
            "qmsmar/smarsock",
            "§5.4",
            "socket of the address resolver",
        ),
        opt(
            "SMTPC_socket",
            Path(Q),
            "qmsmtpc/smtpcsock",
            "§5.4",
            "socket between SMTPC and QMGR",
        ),
        opt(
            "SMTPS_socket",
            Path(Q),
            "qmsmtps/smtpssock",
            "§5.4",
            "socket between SMTPS and QMGR",
        ),
        QMGR,
        SMAR,
        SMTPS,
        SMTPC,
        LMTPD,
        PICKUP,
        METRICS,
        MAP,
        MILTER,
        POLICY,
    ],
)

#: the components of smx, by keyword
COMPONENTS = {s.keyword: s for s in (QMGR, SMAR, SMTPS, SMTPC, LMTPD)}


def serviceSpec(keyword: str) -> SectionSpec:
    """
    The kind of a top-level section that is not an smx component but a
    service started by MCP (seed §5.3), e.g. a local mailer: only the
    options of seed §5.2, with C{mcp_type}, C{path} and C{arguments}
    required.

    @param keyword: the section keyword as written.
    """
    return section(
        keyword,
        "§5.2",
        "a service started by MCP",
        mcpMembers(required=True),
        naming=OPTIONAL_NAME,
        multiple=True,
    )
