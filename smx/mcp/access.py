# -*- test-case-name: smx.mcp.test.test_access -*-
"""
NAME
    smx.mcp.access - can a service's user reach what it needs?

SYNOPSIS
    from smx.mcp.access import checkServiceAccess
    checkServiceAccess(section, service, queueDirectory)   # raises ConfigError

DESCRIPTION
    The MCP runs as root and starts each service as its C{user} (seed
    §5.2) in the main queue directory.  A program that user cannot run,
    a queue directory it cannot enter or a configuration file (C{-f} in
    C{arguments}) it cannot read would make the process fail at once,
    and the MCP restart it again and again; a temporary queue made with
    C{mktemp -d} (root, 0700) is the common case.  So before anything
    starts the MCP checks, with the user's uid, groups and the modes of
    each directory on the way (as the kernel will), that the user can

      - run C{path} (and the interpreter of its C{#!} line),
      - enter the queue directory (smx's QMGR: also write to it, its
        C{qmgr.pid}),
      - read the file given with C{-f} (or C{--config}) in C{arguments},

    and otherwise refuses with one line naming the section, the option,
    the file and its owner and mode.  A file or directory with an access
    control list is not judged (its mode bits do not tell).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from typing import Any, List, Optional, Set

#: the bit of each kind of access, for the owner; >> 3 group, >> 6 other
_BITS = {"r": stat.S_IRUSR, "w": stat.S_IWUSR, "x": stat.S_IXUSR}
#: what each kind of access is called in a message
_VERBS = {"r": "read", "w": "write to", "x": "run"}


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return "%s:%s %04o" % (user, group, stat.S_IMODE(st.st_mode))


def _hasACL(path: str) -> bool:
    try:
        names = os.listxattr(path)
    except OSError:
        return False
    return "system.posix_acl_access" in names


def _allowed(st: os.stat_result, uid: int, groups: Set[int], want: str) -> bool:
    bit = _BITS[want]
    if st.st_uid == uid:
        return bool(st.st_mode & bit)
    if st.st_gid in groups:
        return bool(st.st_mode & (bit >> 3))
    return bool(st.st_mode & (bit >> 6))


def _ancestors(path: str) -> List[str]:
    """
    The directories a lookup of the absolute C{path} searches.
    """
    out = []
    directory = os.path.dirname(path)
    while True:
        out.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return list(reversed(out))


def accessProblem(path: str, uid: int, gid: int, want: str) -> Optional[str]:
    """
    Why user C{uid} (primary group C{gid}, and the supplementary groups
    of its name) cannot C{want} (C{"r"}, C{"w"}, C{"x"}: for a directory
    C{"x"} is entering it) C{path}, or C{None} if it can (or if the modes
    cannot tell: root, an access control list, a file that is not there,
    which other checks report).
    """
    if uid == 0:
        return None
    try:
        name = pwd.getpwuid(uid).pw_name
        groups = set(os.getgrouplist(name, gid))
    except KeyError:
        groups = {gid}
    path = os.path.abspath(path)
    for candidate in dict.fromkeys([path, os.path.realpath(path)]):
        for directory in _ancestors(candidate):
            try:
                st = os.stat(directory)
            except OSError:
                return None
            if not _allowed(st, uid, groups, "x") and not _hasACL(directory):
                return "directory %s is %s" % (directory, _owner(st))
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not _allowed(st, uid, groups, want) and not _hasACL(path):
        return "it is %s" % (_owner(st),)
    return None


def _interpreter(path: str) -> Optional[str]:
    """
    The interpreter of the C{#!} line of C{path}, if it has one.
    """
    try:
        with open(path, "rb") as f:
            first = f.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].split()
    return os.fsdecode(words[0]) if words else None


def configurationFile(argv: List[str]) -> Optional[str]:
    """
    The file given with C{-f FILE}, C{-fFILE}, C{--config FILE} or
    C{--config=FILE} in C{argv} (the program's name first), if any.
    """
    for i, word in enumerate(argv[1:], 1):
        if word in ("-f", "--config") and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("--config="):
            return word[len("--config=") :]
        if word.startswith("-f") and len(word) > 2 and not word.startswith("--"):
            return word[2:]
    return None


def runsQueueManager(service: Any) -> bool:
    """
    Whether C{service} runs smx's QMGR (C{smx-qmgr}, or C{twistd smx
    --component qmgr}), which keeps C{qmgr.pid} in the queue directory.
    """
    argv = list(service.argv)
    if os.path.basename(service.path) == "smx-qmgr":
        return True
    for i, word in enumerate(argv):
        if word == "--component=qmgr" or (
            word == "--component" and argv[i + 1 : i + 2] == ["qmgr"]
        ):
            return True
    return False


def checkServiceAccess(section: Any, service: Any, queueDirectory: str) -> None:
    """
    Refuse a service whose user cannot run its program, enter (QMGR:
    write) the queue directory or read its configuration file; see the
    module docstring.

    @param section: the service's configuration section (for messages).
    @param service: its L{smx.mcp.settings.ServiceSettings}.
    @raise ConfigError: naming the section and the option.
    """
    uid, gid = service.uid, service.gid
    if uid is None or uid == 0:
        return
    if gid is None:
        gid = pwd.getpwuid(uid).pw_gid
    who = "user %s" % (service.user,)
    programs = [service.path]
    interpreter = _interpreter(service.path)
    if interpreter is not None:
        programs.append(interpreter)
    for program in programs:
        problem = accessProblem(program, uid, gid, "x")
        if problem is not None:
            raise section.error(
                "option 'path' in %s: %s cannot run %s: %s"
                % (section.describe(), who, program, problem),
                "path",
            )
    wants = ["x", "w"] if runsQueueManager(service) else ["x"]
    for want in wants:
        problem = accessProblem(queueDirectory, uid, gid, want)
        if problem is not None:
            raise section.error(
                "option 'user' in %s: %s cannot %s the queue directory %s, "
                "where the MCP starts it: %s (smx setup makes it smxq:smxq 0755)"
                % (
                    section.describe(),
                    who,
                    "enter" if want == "x" else "write to",
                    queueDirectory,
                    problem,
                ),
                "user",
            )
    config = configurationFile(list(service.argv))
    if config is not None:
        path = os.path.join(queueDirectory, config)
        problem = accessProblem(path, uid, gid, "r")
        if problem is not None:
            raise section.error(
                "option 'arguments' in %s: %s cannot read %s: %s"
                % (section.describe(), who, path, problem),
                "arguments",
            )
