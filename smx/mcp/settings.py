# -*- test-case-name: smx.mcp.test.test_settings -*-
"""
NAME
    smx.mcp.settings - the services the MCP starts, read from smx.conf

SYNOPSIS
    from smx.mcp.settings import isSplitConfiguration, servicesFromConfiguration
    if isSplitConfiguration(cfg):
        services = servicesFromConfiguration(cfg)   # raises ConfigError

DESCRIPTION
    A configuration is in split mode (the seed's §5.3 form) when one of its
    top-level sections sets C{path}: that section is a service the MCP
    starts.  Every such section becomes one L{ServiceSettings}, with its
    user and group looked up, its program checked, its sockets resolved
    and what its user must reach checked (L{smx.mcp.access}), before
    anything starts: a problem is a L{ConfigError} that names the file,
    line, section and option.

CONFIGURATION PARAMETERS
    The options of seed §5.2 in every section that sets C{path}:
    mcp_type, port, address, socket { name umask user group },
    min_processes, max_processes, pass_fd_socket, user, group,
    restartdependencies, path, arguments, pass_id,
    use_id_in_logfile_name.

SECURITY
    The directory of a socket the MCP creates for a service
    (C{pass_fd_socket}, C{socket { name }}) must belong to root or to the
    service's user and must not be writable by others: whoever can write
    there can put a socket of their own in its place.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import stat
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from smx.config import ConfigError

#: exit status of a program called wrongly (sysexits.h); not restarted
EX_USAGE = 64
#: exit status of a program whose configuration is wrong; not restarted
EX_CONFIG = 78

#: start order of smx's components (the rest: 2, in file order): the
#: servers of the AMP sockets first, the SMTP servers last; the MCP
#: stops them in reverse order
START_RANK = {"smar": 0, "qmgr": 1, "lmtpd": 2, "smtpc": 3, "smtps": 4, "pickup": 5}


@dataclass(frozen=True)
class ServiceSettings:
    """
    One service the MCP starts (one section of seed §5.2).

    @ivar name: the section's name, or its keyword if it has none (seed
        §5.2, 14): the name of its log file and in C{restartdependencies}.
    @ivar keyword: the section keyword (C{"qmgr"}, C{"procmail"}, ...).
    @ivar mcpType: C{"nostartaccept"}, C{"accept"}, C{"pass"} or
        C{"wait"}.
    @ivar port: the TCP port the MCP binds for it, or C{None}.
    @ivar address: the address of C{port}.
    @ivar socketName: the Unix socket the MCP binds for it, or C{None}.
    @ivar socketUmask: the umask the socket is created with, or C{None}.
    @ivar socketUid: owner of the socket, or C{None} (the MCP's).
    @ivar socketGid: group of the socket, or C{None}.
    @ivar minProcesses: processes started (C{mcp_type} other than
        C{nostartaccept}).
    @ivar maxProcesses: the most processes at a time (C{nostartaccept}:
        connections served at a time).
    @ivar passFdSocket: the Unix socket over which the listening socket
        is passed (C{mcp_type = pass}), or C{None}.
    @ivar uid: the user the processes run as, or C{None} (the MCP's).
    @ivar gid: their group, or C{None}.
    @ivar user: the name of C{uid}, for display.
    @ivar restartDependencies: the names of the services restarted with
        this one.
    @ivar path: the program executed.
    @ivar argv: its arguments, the first one the program's name.
    @ivar passId: the option that passes the process number, or C{None}.
    @ivar useIdInLogfileName: add the process number to the log file name.
    @ivar rank: where it comes in the start order (L{START_RANK}).
    @ivar where: C{"file:line:column"} of the section, for messages.
    """

    name: str
    keyword: str
    mcpType: str
    port: Optional[int]
    address: str
    socketName: Optional[str]
    socketUmask: Optional[int]
    socketUid: Optional[int]
    socketGid: Optional[int]
    minProcesses: int
    maxProcesses: int
    passFdSocket: Optional[str]
    uid: Optional[int]
    gid: Optional[int]
    user: str
    restartDependencies: Tuple[str, ...]
    path: str
    argv: Tuple[str, ...]
    passId: Optional[str]
    useIdInLogfileName: bool
    rank: int
    where: str = ""

    def arguments(self, number: int) -> List[str]:
        """
        The argv of process C{number}: C{pass_id} and the number inserted
        as the first arguments (seed §5.2, 13).
        """
        argv = list(self.argv)
        if self.passId is not None:
            argv[1:1] = [self.passId, str(number)]
        return argv

    def logFileName(self, directory: str, number: int) -> str:
        """
        The log file of process C{number} in C{directory} (seed §5.2, 14):
        C{DIR/NAME.log}, or C{DIR/NAME<number>.log}.
        """
        suffix = str(number) if self.useIdInLogfileName else ""
        return os.path.join(directory, "%s%s.log" % (self.name, suffix))

    def listens(self) -> bool:
        """
        Whether the MCP binds a socket for this service.
        """
        return self.mcpType != "wait" and (
            self.port is not None or self.socketName is not None
        )


def isSplitConfiguration(configuration: Any) -> bool:
    """
    Is C{configuration} for split mode: does a top-level section set
    C{path} (the program the MCP starts)?
    """
    return any(_isService(s) for s in configuration.sections())


def _isService(section: Any) -> bool:
    return section.spec.option("path") is not None and section.isSet("path")


def serviceSections(configuration: Any) -> List[Any]:
    """
    The sections of the services the MCP starts, in file order.
    """
    return [s for s in configuration.sections() if _isService(s)]


def _lookupUser(section: Any, option: str, value: str) -> Tuple[int, int, str]:
    try:
        if value.isdigit():
            entry = pwd.getpwuid(int(value))
        else:
            entry = pwd.getpwnam(value)
    except KeyError:
        raise section.error(
            "option '%s' in %s: no user %r on this system"
            % (option, section.describe(), value),
            option,
        )
    return entry.pw_uid, entry.pw_gid, entry.pw_name


def _lookupGroup(section: Any, option: str, value: str) -> int:
    if value.isdigit() and value.isascii():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise section.error(
            "option '%s' in %s: no group %r on this system"
            % (option, section.describe(), value),
            option,
        )


def _checkProgram(section: Any, path: str) -> None:
    problem = None
    try:
        st = os.stat(path)
    except OSError as e:
        problem = e.strerror
    else:
        if not stat.S_ISREG(st.st_mode):
            problem = "not a file"
        elif not os.access(path, os.X_OK):
            problem = "not executable"
    if problem is not None:
        raise section.error(
            "option 'path' in %s: cannot run %s: %s"
            % (section.describe(), path, problem),
            "path",
        )


def checkSocketDirectory(
    section: Any, option: str, path: str, uid: Optional[int]
) -> None:
    """
    The directory of a socket the MCP creates for a service must exist,
    belong to root or to the service's user (C{uid}), and not be writable
    by others (seed §4.1: "must belong to smxs").

    @raise ConfigError: naming C{option} of C{section}.
    """
    directory = os.path.dirname(path) or "."
    try:
        st = os.stat(directory)
    except OSError as e:
        raise section.error(
            "option '%s' in %s: directory %s: %s"
            % (option, section.describe(), directory, e.strerror),
            option,
        )
    owners = {0, os.geteuid()} if uid is None else {0, uid}
    if st.st_uid not in owners:
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = str(st.st_uid)
        raise section.error(
            "option '%s' in %s: directory %s belongs to %s, not to %s"
            % (
                option,
                section.describe(),
                directory,
                owner,
                " or ".join(sorted(_userName(u) for u in owners)),
            ),
            option,
        )
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise section.error(
            "option '%s' in %s: directory %s is writable by everybody"
            % (option, section.describe(), directory),
            option,
        )


def _userName(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def serviceFromSection(section: Any, mcpUid: Optional[int] = None) -> ServiceSettings:
    """
    The L{ServiceSettings} of one section that sets C{path}.

    @param mcpUid: the MCP's user (default: the effective user): unless
        it is root, it cannot start a service as another user.
    @raise ConfigError: for the first problem, naming the option.
    """
    if mcpUid is None:
        mcpUid = os.geteuid()
    name = section.name or section.keyword
    mcpType = section["mcp_type"]
    if not section.isSet("mcp_type"):
        raise section.error(
            "%s sets 'path' but not 'mcp_type' (seed §5.2: nostartaccept, "
            "accept, pass or wait)" % (section.describe(),),
            "path",
        )
    path = section["path"]
    _checkProgram(section, path)
    text = section["arguments"]
    if not text:
        raise section.error(
            "%s sets 'path' but not 'arguments' (argv, starting with the "
            "program's name)" % (section.describe(),),
            "path",
        )
    try:
        argv = tuple(shlex.split(text))
    except ValueError as e:
        raise section.error(
            "option 'arguments' in %s: %s" % (section.describe(), e), "arguments"
        )
    if not argv:
        raise section.error(
            "option 'arguments' in %s is empty" % (section.describe(),), "arguments"
        )
    uid = gid = None
    user = _userName(mcpUid)
    if section["user"] is not None:
        uid, gid, user = _lookupUser(section, "user", section["user"])
    if section["group"] is not None:
        gid = _lookupGroup(section, "group", section["group"])
    if uid is not None and uid != mcpUid and mcpUid != 0:
        raise section.error(
            "option 'user' in %s: the MCP runs as %s, not as root, and cannot "
            "start a program as %s" % (section.describe(), _userName(mcpUid), user),
            "user",
        )
    port = section["port"] if section.spec.option("port") is not None else None
    socketName = socketUmask = socketUid = socketGid = None
    if section.spec.subsection("socket") is not None:
        sockets = section.sections("socket")
        if sockets and sockets[0].isSet("name"):
            s = sockets[0]
            socketName = s["name"]
            socketUmask = s["umask"]
            if s["user"] is not None:
                socketUid, socketGid, _ = _lookupUser(s, "user", s["user"])
            if s["group"] is not None:
                socketGid = _lookupGroup(s, "group", s["group"])
            checkSocketDirectory(s, "name", socketName, uid)
    if mcpType != "wait" and port is None and socketName is None:
        raise section.error(
            "mcp_type = %s requires 'port' or 'socket { name }' in %s"
            % (mcpType, section.describe()),
            "mcp_type",
        )
    passFdSocket = section["pass_fd_socket"] if mcpType == "pass" else None
    if passFdSocket is not None:
        checkSocketDirectory(section, "pass_fd_socket", passFdSocket, uid)
    return ServiceSettings(
        name=name,
        keyword=section.keyword,
        mcpType=mcpType,
        port=port,
        address=section["address"] if port is not None else "0.0.0.0",
        socketName=socketName,
        socketUmask=socketUmask,
        socketUid=socketUid,
        socketGid=socketGid,
        minProcesses=section["min_processes"],
        maxProcesses=section["max_processes"],
        passFdSocket=passFdSocket,
        uid=uid,
        gid=gid,
        user=user,
        restartDependencies=tuple(section["restartdependencies"] or ()),
        path=path,
        argv=argv,
        passId=section["pass_id"],
        useIdInLogfileName=bool(section["use_id_in_logfile_name"]),
        rank=START_RANK.get(section.keyword.lower(), 2),
        where=section.where(),
    )


def servicesFromConfiguration(
    configuration: Any, mcpUid: Optional[int] = None
) -> List[ServiceSettings]:
    """
    Every service of a split configuration, in start order (L{START_RANK},
    then file order), checked as a whole: names unique, restart
    dependencies known.

    @raise ConfigError: for the first problem, naming the section and
        option.
    """
    sections = serviceSections(configuration)
    services: List[ServiceSettings] = []
    seen: Dict[str, Any] = {}
    for section in sections:
        service = serviceFromSection(section, mcpUid)
        key = service.name.lower()
        if key in seen:
            raise section.error(
                "%s: a second service named %r (the first is at %s); give the "
                "sections different names"
                % (section.describe(), service.name, seen[key].where()),
            )
        seen[key] = section
        services.append(service)
    names = {s.name.lower() for s in services} | {s.keyword.lower() for s in services}
    for section, service in zip(sections, services):
        for dependency in service.restartDependencies:
            if dependency.lower() not in names:
                raise section.error(
                    "option 'restartdependencies' in %s: no service %r is "
                    "started by the MCP (known: %s)"
                    % (
                        section.describe(),
                        dependency,
                        ", ".join(sorted(s.name for s in services)),
                    ),
                    "restartdependencies",
                )
    from smx.mcp.access import checkServiceAccess

    for section, service in zip(sections, services):
        checkServiceAccess(section, service, configuration.queueDirectory)
    order = sorted(range(len(services)), key=lambda i: (services[i].rank, i))
    return [services[i] for i in order]


def dependents(services: List[ServiceSettings], name: str) -> List[ServiceSettings]:
    """
    The services restarted with C{name} (its C{restartdependencies}; a
    keyword names every section of that keyword), without C{name} itself.
    """
    byName = {s.name.lower(): s for s in services}
    service = byName[name.lower()]
    wanted = {d.lower() for d in service.restartDependencies}
    return [
        s
        for s in services
        if s is not service
        and (s.name.lower() in wanted or s.keyword.lower() in wanted)
    ]
