# -*- test-case-name: smx.config.test.test_reconcile -*-
"""
Settings that depend on each other, checked in one place after every value
has been read: a contradiction is a L{ConfigError} at the option that
causes it, a doubtful combination a warning in
L{Configuration.warnings}.

Errors:
    - C{port} together with a C{socket} subsection that sets anything
      (§5.2);
    - C{mcp_type = pass} without C{pass_fd_socket} (§5.2);
    - C{use_id_in_logfile_name} without C{pass_id} (§5.2);
    - C{min_processes} larger than C{max_processes};
    - a non-empty C{daemon_address} together with C{pass_fd_socket} in
      smtps (§5.9);
    - two smtps sections with the same address and port;
    - C{cert_file} without C{key_file} or the reverse;
    - C{ok_disk_space} not larger than C{min_disk_space} (§5.7);
    - C{retry_min_delay} larger than C{retry_max_delay};
    - C{smtpc_initial_connections} larger than C{smtpc_max_connections};
    - smtpc sections with different C{remote_port} (§5.10);
    - map declarations: options of another map type, a hash map without
      C{file}, a socket map without C{path} or without C{address} and
      C{port}, a sequence without C{maps}, a sequence naming an undeclared
      map or itself (also indirectly), C{local_user_map} naming an
      undeclared map (§5.8.1, §5.8.2);
    - an smtps option of Postfix policy servers (C{policies},
      C{mail_policies}, ...) naming a policy that no C{policy NAME}
      section declares (doc/policy.md);
    - a C{milters} list (smtps, qmgr) naming a milter that no C{milter
      NAME} section declares (doc/milter.md).

Warnings:
    - two smtps sections with the same explicit C{id} (§5.9.1);
    - C{SMAR_timeout} not larger than C{DNS_timeout} (§5.7);
    - C{AQ_max_entries} not larger than C{max_recipients_per_transaction};
    - C{min_disk_space} not larger than C{max_message_size} (unless that
      is 0, no limit);
    - C{dnsbl} or the tls flag C{check_access_map_for_relaying} without
      any smtps section with the flag C{access} (§5.8.2, §5.9);
    - the tls flag C{allow_relaying_if_verified} without CA certificates;
    - an C{auth} section that can never be used: AUTH is configured
      (C{password_file}, or a C{type} other than C{file}) but offered
      only after STARTTLS and the section's C{tls} has no C{cert_file},
      so it is never offered; or C{trusted_mechs} names none of the
      mechanisms offered, so a successful AUTH never allows relaying
      (§5.9 item 19);
    - an option, a flag or a section that the file sets but that has no
      effect (see C{smx.config.effect}): one marked "no effect" in the tables
      above, or one unused with the other settings: the MCP options in
      embedded mode (no section sets C{path}) or in a section without
      C{path} in split mode; C{address} or C{port} in an smtps
      section with C{daemon_address}, which is what smx listens on (§5.9
      item 2); C{address} in an lmtpd section without C{port}; C{log}
      C{facility} with C{file}, C{options} or C{ident} without
      C{facility} (C{options} with C{file}); smtps C{tls} options without
      C{cert_file}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from smx.config.effect import checkEffect
from smx.config.filteroptions import checkFilters, checkMilters
from smx.config.values import formatSize, formatTime

if TYPE_CHECKING:  # pragma: no cover
    from smx.config.model import Configuration, Section

#: options of each map type (seed §5.8.1)
MAP_TYPE_OPTIONS = {
    "hash": ("file",),
    "sequence": ("maps",),
    "socket": ("mapname", "path", "address", "port"),
    "passwd": (),
}


def _shown(section: "Section", name: str, render: Any) -> str:
    value = render(section[name])
    return value if section.isSet(name) else "%s, the default" % (value,)


def _later(a: "Section", aName: str, b: "Section", bName: str) -> Tuple["Section", str]:
    """
    @return: of two options, the one set later in the file (the one an
        error about both is reported at), preferring one that is set.
    """
    pa, pb = a.positionOf(aName), b.positionOf(bName)
    if pa is None:
        return b, bName
    if pb is None or pa > pb:
        return a, aName
    return b, bName


def _serviceSections(configuration: "Configuration") -> List["Section"]:
    return [
        s for s in configuration.sections() if s.spec.option("mcp_type") is not None
    ]


def _checkService(section: "Section") -> None:
    sockets = section.sections("socket") if section.spec.subsection("socket") else []
    if section.isSet("port") and sockets and sockets[0].setOptions():
        raise section.error(
            "at most one of 'port' and 'socket' may be given in %s"
            % (section.describe(),),
            "port",
        )
    if section["mcp_type"] == "pass" and not section.isSet("pass_fd_socket"):
        raise section.error(
            "mcp_type = pass requires 'pass_fd_socket' in %s" % (section.describe(),),
            "mcp_type",
        )
    if section["use_id_in_logfile_name"] and not section.isSet("pass_id"):
        raise section.error(
            "use_id_in_logfile_name requires 'pass_id' in %s" % (section.describe(),),
            "use_id_in_logfile_name",
        )
    if section["min_processes"] > section["max_processes"]:
        s, name = _later(section, "min_processes", section, "max_processes")
        raise s.error(
            "min_processes (%s) must not be larger than max_processes (%s) in %s"
            % (
                _shown(section, "min_processes", str),
                _shown(section, "max_processes", str),
                section.describe(),
            ),
            name,
        )


def _checkTLS(tls: "Section") -> None:
    if tls.isSet("cert_file") != tls.isSet("key_file"):
        missing = "key_file" if tls.isSet("cert_file") else "cert_file"
        present = "cert_file" if missing == "key_file" else "key_file"
        raise tls.error(
            "'%s' requires '%s' in %s" % (present, missing, tls.describe()), present
        )


def _authEnabledBy(auth: "Section") -> Optional[str]:
    """
    @return: the option that makes smx offer AUTH (C{password_file}, or a
        back end other than the password file), or C{None} if AUTH is
        not configured in smx.conf.
    """
    if auth.isSet("password_file"):
        return "password_file"
    if auth.spec.option("type") is not None and auth.isSet("type"):
        if auth["type"] != "file":
            return "type"
    return None


def _checkAuthBackEnd(auth: "Section") -> None:
    """
    Refuse option combinations that the AUTH back end of C{auth} cannot
    use (the same rules L{smx.mail.auth.authenticatorFromSection} applies
    when smx starts, so that C{smx config} reports them too).
    """
    if auth.spec.option("type") is None:
        return
    kind = auth["type"] or "file"
    if kind == "file":
        for name in ("path", "address", "realm"):
            if auth.spec.option(name) is not None and auth.isSet(name):
                raise auth.error(
                    "%s is used with type = dovecot or saslauthd, not with "
                    "type = file in %s" % (name, auth.describe()),
                    name,
                )
        return
    if auth.isSet("password_file"):
        raise auth.error(
            "password_file is used only with type = file (%s has type = %s)"
            % (auth.describe(), kind),
            "password_file",
        )
    if kind == "saslauthd":
        if auth.isSet("address"):
            raise auth.error(
                "saslauthd listens on a Unix domain socket only: write path, "
                "not address, in %s" % (auth.describe(),),
                "address",
            )
        if "noplaintext" in (auth["flags"] or ()):
            raise auth.error(
                "saslauthd checks plaintext passwords only (PLAIN, LOGIN), "
                "which flags = { noplaintext } forbids in %s" % (auth.describe(),),
                "flags",
            )
        return
    if auth.isSet("path") and auth.isSet("address"):
        raise auth.error(
            "write either path or address, not both, in %s" % (auth.describe(),),
            "address",
        )
    if auth.isSet("realm"):
        raise auth.error(
            "realm is sent to saslauthd only (Dovecot has auth_default_realm), "
            "in %s" % (auth.describe(),),
            "realm",
        )


def _checkAuth(configuration: "Configuration", smtps: "Section") -> None:
    """
    Refuse AUTH back-end options that do not go together; warn about AUTH
    set-ups that do nothing: AUTH never offered, or never allowing
    relaying.
    """
    auth = smtps.section("auth")
    _checkAuthBackEnd(auth)
    enabledBy = _authEnabledBy(auth)
    if enabledBy is None:
        return
    flags = auth["flags"]
    tls = smtps.section("tls")
    if "allow_plaintext_without_tls" not in flags and not tls.isSet("cert_file"):
        configuration.warn(
            "AUTH is never offered: it needs STARTTLS, but %s has no cert_file "
            "(set tls { cert_file; key_file; } or the auth flag "
            "allow_plaintext_without_tls)" % (tls.describe(),),
            auth.positionOf(enabledBy),
        )
    trusted = auth["trusted_mechs"]
    if trusted is None:
        return
    names = [m.upper() for m in trusted]
    if not names:
        configuration.warn(
            "a successful AUTH never allows relaying: trusted_mechs is empty "
            "(leave it out to let every mechanism allow relaying)",
            auth.positionOf("trusted_mechs"),
        )
        return
    if enabledBy == "password_file":
        from smx.mail.auth import offeredMechanisms

        offered = offeredMechanisms(flags)
        if not set(names) & set(offered):
            configuration.warn(
                "a successful AUTH never allows relaying: trusted_mechs (%s) "
                "names none of the mechanisms offered (%s)"
                % (", ".join(names), ", ".join(offered)),
                auth.positionOf("trusted_mechs"),
            )


def _checkSMTPS(configuration: "Configuration", servers: List["Section"]) -> None:
    ids: Dict[int, "Section"] = {}
    endpoints: Dict[Tuple[str, int], "Section"] = {}
    for smtps in servers:
        if smtps["daemon_address"] and smtps.isSet("pass_fd_socket"):
            s, name = _later(smtps, "daemon_address", smtps, "pass_fd_socket")
            raise s.error(
                "only one of 'daemon_address' and 'pass_fd_socket' may be given "
                "in %s" % (smtps.describe(),),
                name,
            )
        if smtps.isSet("id"):
            other = ids.get(smtps["id"])
            if other is not None:
                configuration.warn(
                    "id %d is also used by %s; the ids of SMTP servers should "
                    "differ (§5.9.1)" % (smtps["id"], other.describe()),
                    smtps.positionOf("id"),
                )
            ids[smtps["id"]] = smtps
        if smtps.isSet("port"):
            key = (smtps["address"], smtps["port"])
            other = endpoints.get(key)
            if other is not None:
                raise smtps.error(
                    "port %d on %s is already used by %s"
                    % (key[1], key[0], other.describe()),
                    "port",
                )
            endpoints[key] = smtps
        tls = smtps.section("tls")
        _checkTLS(tls)
        _checkAuth(configuration, smtps)
        flags = tls["flags"]
        if (
            "allow_relaying_if_verified" in flags
            and not tls.isSet("CAcert_file")
            and not tls.isSet("CAcert_path")
        ):
            configuration.warn(
                "the tls flag allow_relaying_if_verified has no effect without "
                "CAcert_file or CAcert_path in %s" % (tls.describe(),),
                tls.positionOf("flags"),
            )
        if "check_access_map_for_relaying" in flags and "access" not in smtps["flags"]:
            configuration.warn(
                "the tls flag check_access_map_for_relaying needs the access map: "
                "add 'access' to the flags of %s" % (smtps.describe(),),
                tls.positionOf("flags"),
            )


def _checkQMGR(configuration: "Configuration") -> None:
    qmgr = configuration.section("qmgr")
    if qmgr["ok_disk_space"] <= qmgr["min_disk_space"]:
        s, name = _later(qmgr, "ok_disk_space", qmgr, "min_disk_space")
        raise s.error(
            "ok_disk_space (%s) must be larger than min_disk_space (%s)"
            % (
                _shown(qmgr, "ok_disk_space", formatSize),
                _shown(qmgr, "min_disk_space", formatSize),
            ),
            name,
        )
    if qmgr["retry_min_delay"] > qmgr["retry_max_delay"]:
        s, name = _later(qmgr, "retry_min_delay", qmgr, "retry_max_delay")
        raise s.error(
            "retry_min_delay (%s) must not be larger than retry_max_delay (%s)"
            % (
                _shown(qmgr, "retry_min_delay", formatTime),
                _shown(qmgr, "retry_max_delay", formatTime),
            ),
            name,
        )
    if qmgr["smtpc_initial_connections"] > qmgr["smtpc_max_connections"]:
        s, name = _later(
            qmgr, "smtpc_initial_connections", qmgr, "smtpc_max_connections"
        )
        raise s.error(
            "smtpc_initial_connections (%s) must not be larger than "
            "smtpc_max_connections (%s)"
            % (
                _shown(qmgr, "smtpc_initial_connections", str),
                _shown(qmgr, "smtpc_max_connections", str),
            ),
            name,
        )
    smar = configuration.section("smar")
    if qmgr["SMAR_timeout"] <= smar["DNS_timeout"]:
        s, name = _later(qmgr, "SMAR_timeout", smar, "DNS_timeout")
        configuration.warn(
            "SMAR_timeout (%s) should be larger than the DNS_timeout of smar (%s)"
            % (
                _shown(qmgr, "SMAR_timeout", formatTime),
                _shown(smar, "DNS_timeout", formatTime),
            ),
            s.positionOf(name),
        )
    for smtps in _withDefault(configuration, "smtps"):
        if qmgr["AQ_max_entries"] <= smtps["max_recipients_per_transaction"]:
            s, name = _later(
                qmgr, "AQ_max_entries", smtps, "max_recipients_per_transaction"
            )
            configuration.warn(
                "AQ_max_entries (%s) should be larger than the "
                "max_recipients_per_transaction of %s (%s)"
                % (
                    _shown(qmgr, "AQ_max_entries", str),
                    smtps.describe(),
                    _shown(smtps, "max_recipients_per_transaction", str),
                ),
                s.positionOf(name),
            )
        size = smtps["max_message_size"]
        if size and qmgr["min_disk_space"] <= size:
            s, name = _later(qmgr, "min_disk_space", smtps, "max_message_size")
            configuration.warn(
                "min_disk_space (%s) should be much larger than the "
                "max_message_size of %s (%s)"
                % (
                    _shown(qmgr, "min_disk_space", formatSize),
                    smtps.describe(),
                    _shown(smtps, "max_message_size", formatSize),
                ),
                s.positionOf(name),
            )


def _withDefault(configuration: "Configuration", keyword: str) -> List["Section"]:
    return configuration.sections(keyword) or [configuration.section(keyword)]


def _checkSMTPC(configuration: "Configuration") -> None:
    clients = configuration.sections("smtpc")
    for smtpc in clients:
        _checkTLS(smtpc.section("tls"))
        first = clients[0]
        if smtpc["remote_port"] != first["remote_port"]:
            raise smtpc.error(
                "remote_port (%d) differs from the remote_port of %s (%d); every "
                "smtpc section must use the same"
                % (smtpc["remote_port"], first.describe(), first["remote_port"]),
                "remote_port" if smtpc.isSet("remote_port") else None,
            )


def _checkMaps(configuration: "Configuration") -> None:
    maps = configuration.sections("map")
    byName = {m.name.lower(): m for m in maps if m.name is not None}
    for m in maps:
        kind = m["type"]
        for other, names in MAP_TYPE_OPTIONS.items():
            if other == kind:
                continue
            for name in names:
                if m.isSet(name) and name not in MAP_TYPE_OPTIONS[kind]:
                    raise m.error(
                        "option '%s' is only valid for maps of type %s, not %s"
                        % (name, other, kind),
                        name,
                    )
        if kind == "hash" and not m.isSet("file"):
            raise m.error("map '%s' of type hash requires option 'file'" % (m.name,))
        if kind == "socket":
            inet = m.isSet("address") or m.isSet("port")
            if m.isSet("path") and inet:
                raise m.error(
                    "map '%s' of type socket needs either 'path' or 'address' "
                    "and 'port', not both" % (m.name,),
                    "path",
                )
            if not m.isSet("path") and not (m.isSet("address") and m.isSet("port")):
                raise m.error(
                    "map '%s' of type socket requires 'path' or both 'address' "
                    "and 'port'" % (m.name,)
                )
        if kind == "sequence":
            if not m["maps"]:
                raise m.error(
                    "map '%s' of type sequence requires a non-empty 'maps' list"
                    % (m.name,),
                    "maps" if m.isSet("maps") else None,
                )
            for name in m["maps"]:
                if name.lower() not in byName:
                    raise m.error(
                        "map '%s' refers to undeclared map '%s'" % (m.name, name),
                        "maps",
                    )
    _checkCycles(maps, byName)
    smar = configuration.section("smar")
    name = smar["local_user_map"]
    if name is not None and name.lower() not in byName:
        raise smar.error(
            "local_user_map refers to undeclared map '%s' (declare it with "
            "'map %s { type = ...; }')" % (name, name),
            "local_user_map",
        )


def _checkCycles(maps: List["Section"], byName: Dict[str, "Section"]) -> None:
    """
    Refuse a sequence that contains itself, directly or through other
    sequences (a depth-first search without recursion, linear in the
    number of references).
    """
    done: set = set()
    for root in maps:
        if root.name is None or root.name.lower() in done:
            continue
        path: List[str] = []
        onPath: set = set()
        stack: List[Tuple[str, int]] = [(root.name.lower(), 0)]
        while stack:
            key, index = stack.pop()
            m = byName[key]
            members = m["maps"] if m["type"] == "sequence" else []
            if index == 0:
                path.append(key)
                onPath.add(key)
            if index >= len(members):
                path.pop()
                onPath.discard(key)
                done.add(key)
                continue
            stack.append((key, index + 1))
            member = members[index].lower()
            if member in onPath:
                cycle = path[path.index(member) :] + [member]
                first = byName[cycle[0]]
                raise first.error(
                    "map '%s' contains itself (%s)"
                    % (first.name, " -> ".join(byName[n].name or n for n in cycle)),
                    "maps",
                )
            if member not in done:
                stack.append((member, 0))


def _checkDNSBL(configuration: "Configuration", servers: List["Section"]) -> None:
    lists = configuration.section("smar").sections("dnsbl")
    if lists and not any("access" in s["flags"] for s in servers):
        configuration.warn(
            "dnsbl needs the access map, but no smtps section has "
            "flags = {access} (§5.8.2)",
            lists[0].position,
        )


def reconcile(configuration: "Configuration") -> None:
    """
    Check the settings that depend on each other.

    @raise ConfigError: for a contradiction.
    """
    for section in _serviceSections(configuration):
        _checkService(section)
    servers = _withDefault(configuration, "smtps")
    _checkSMTPS(configuration, servers)
    _checkQMGR(configuration)
    _checkSMTPC(configuration)
    _checkMaps(configuration)
    _checkDNSBL(configuration, servers)
    checkMilters(configuration)
    checkFilters(configuration, servers)
    checkEffect(configuration)
