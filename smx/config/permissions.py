# -*- test-case-name: smx.config.test.test_permissions -*-
"""
NAME
    smx.config.permissions - refuse files that others can change (seed §9.2)

SYNOPSIS
    problems = unsafeFiles(cfg, component="smar")   # [ConfigError, ...]
    refuseUnsafeFiles(cfg, component="smar")        # exits 78 if any

DESCRIPTION
    A component relies on the files its configuration names: the
    configuration file itself, the maps (mailertable, aliases, access,
    the QMGR C{conf} map, C{map NAME { file = ...; }}), the TLS
    certificates and keys, the rules file of the rules pmilter, the
    password file of AUTH.  Whoever can write one of them controls the
    mail system (an alias to a program, a relay rule, a certificate).
    Seed §9.2 says sendmail X made no checks beyond the operating
    system's; smx checks at start, as Postfix's C{postfix check} does,
    and refuses to run when:

      - a file (or the directory it is in) is writable by everyone,
        unless the directory has the sticky bit (C{/tmp});
      - a file or its directory is writable by a group other than
        root's, the component's own or one of smx's groups;
      - a file or its directory belongs to a user other than root, the
        user the component runs as, or one of smx's users (who could
        change its mode);
      - a private key (C{key_file}) is readable by everyone (App. D:
        0600, or 0640 for a key shared by server and client).

    smx's users and groups are those of seed §4 and C{smx setup}:
    C{smxs}, C{smxq}, C{smxc}, C{smxm} and C{smx}, or the names given
    by the environment variables C{SMXS}, C{SMXQ}, C{SMXC}, C{SMXM},
    C{SMX}, and those the configuration runs its components as (C{user},
    C{group}); names that do not exist are ignored.

    Each component checks only the files it reads (C{component}: C{qmgr},
    C{smar}, C{smtps}, C{smtpc}, C{lmtpd}, C{pickup}, C{metrics}; the
    configuration file is read by all of them); embedded mode
    (C{component=None}) checks all.  A file that does not exist is not
    this module's business (the component that opens it says so), nor
    is a socket or a device (C{/dev/null}).

DIAGNOSTICS
    One line per problem, at the option that names the file:
    C{smx.conf:7:5: mt: map file /etc/smx/mt is writable by everyone
    (mode 0666); make it 0644}.  L{refuseUnsafeFiles} writes them on
    standard error and exits with C{EX_CONFIG} (78), never a traceback.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import sys
from dataclasses import dataclass
from typing import Iterator, List, Mapping, Optional, Set, TextIO, Tuple

from smx.config.errors import ConfigError

#: the exit status of a component that refuses its files (sysexits.h)
EX_CONFIG = 78

#: the environment variables naming smx's users and groups (seed §4)
#: with their defaults
SMX_ACCOUNTS = (
    ("SMXS", "smxs"),
    ("SMXQ", "smxq"),
    ("SMXC", "smxc"),
    ("SMXM", "smxm"),
    ("SMX", "smx"),
)

#: the options whose file must not be readable by everyone
SECRETS = frozenset(["key_file"])

#: top-level section keyword -> component that reads its files
_OWNER = {"map": "smar"}


@dataclass(frozen=True)
class Trust:
    """
    Who may own and write the files: users and groups.

    @ivar uids: user ids that may own a file (and write it).
    @ivar gids: group ids that may have write permission.
    @ivar names: uid -> name, for messages.
    """

    uids: frozenset
    gids: frozenset

    @classmethod
    def forProcess(cls, environ: Optional[Mapping[str, str]] = None) -> "Trust":
        """
        Root, the running process's effective user and group, and smx's
        users and groups (seed §4; C{SMXS}... in C{environ}) that exist.
        """
        environ = os.environ if environ is None else environ
        uids = {0, os.geteuid()}
        gids = {0, os.getegid()}
        for variable, default in SMX_ACCOUNTS:
            name = environ.get(variable) or default
            try:
                uids.add(pwd.getpwnam(name).pw_uid)
            except KeyError:
                pass
            try:
                gids.add(grp.getgrnam(name).gr_gid)
            except KeyError:
                pass
        return cls(frozenset(uids), frozenset(gids))

    @classmethod
    def forConfiguration(
        cls, cfg: object, environ: Optional[Mapping[str, str]] = None
    ) -> "Trust":
        """
        L{forProcess}, and the users and groups the configuration runs
        its components as (the C{user} and C{group} options of its
        sections, seed §5.2): they are smx's own, whatever their names.
        """
        trust = cls.forProcess(environ)
        uids, gids = set(trust.uids), set(trust.gids)
        for section in getattr(cfg, "sections")():
            spec = getattr(section, "spec")
            for option, table in (("user", uids), ("group", gids)):
                if spec.option(option) is None:
                    continue
                try:
                    name = section[option]
                except (KeyError, ConfigError):
                    continue
                if not name:
                    continue
                try:
                    if option == "user":
                        entry = pwd.getpwnam(name)
                        uids.add(entry.pw_uid)
                        gids.add(entry.pw_gid)
                    else:
                        gids.add(grp.getgrnam(name).gr_gid)
                except KeyError:
                    continue
        return cls(frozenset(uids), frozenset(gids))


def _userName(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "uid %d" % (uid,)


def _groupName(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return "gid %d" % (gid,)


def modeProblems(
    path: str, st: os.stat_result, trust: Trust, secret: bool = False
) -> List[str]:
    """
    What is wrong with the owner and mode of one file or directory.

    @param st: its C{os.stat} result.
    @param secret: whether it is a private key (not readable by everyone).
    @return: one phrase per problem (C{"is writable by everyone (mode
        0666)"}), empty if there is none.
    """
    mode = stat.S_IMODE(st.st_mode)
    sticky = stat.S_ISDIR(st.st_mode) and bool(mode & stat.S_ISVTX)
    problems = []
    if st.st_uid not in trust.uids:
        problems.append(
            "belongs to %s, who can change it (it must belong to root or "
            "smx's user)" % (_userName(st.st_uid),)
        )
    if mode & stat.S_IWOTH and not sticky:
        problems.append("is writable by everyone (mode %04o)" % (mode,))
    elif mode & stat.S_IWGRP and st.st_gid not in trust.gids and not sticky:
        problems.append(
            "is writable by group %s (mode %04o)" % (_groupName(st.st_gid), mode)
        )
    if secret and mode & stat.S_IROTH:
        problems.append(
            "is a private key readable by everyone (mode %04o); make it 0600 "
            "(0640 for a key shared by server and client, App. D)" % (mode,)
        )
    return problems


def checkFile(path: str, trust: Trust, secret: bool = False) -> List[str]:
    """
    Check a file and the directory it is in (after following symbolic
    links).

    @return: one line per problem, starting with the path; empty for a
        file that does not exist or is not a regular file or directory
        (a socket, C{/dev/null}).
    """
    try:
        st = os.stat(path)
    except OSError:
        return []
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return []  # a socket, /dev/null: nothing to change in them
    lines = ["%s %s" % (path, p) for p in modeProblems(path, st, trust, secret)]
    directory = os.path.dirname(os.path.realpath(path))
    try:
        dst = os.stat(directory)
    except OSError:  # pragma: no cover - it holds the file
        return lines
    for p in modeProblems(directory, dst, trust):
        lines.append("%s: its directory %s %s" % (path, directory, p))
    return lines


def _isConfigPath(option: object) -> bool:
    from smx.config.values import CONFIG_RELATIVE, Path

    kind = getattr(option, "type", None)
    return (
        isinstance(kind, Path)
        and kind.base == CONFIG_RELATIVE
        and getattr(option, "aliasOf", None) is None
        and getattr(option, "group", None) != "mcp"
    )


def _walk(section: object) -> Iterator[object]:
    """
    Every section below C{section} (itself included), with the unnamed
    sections of their defaults where the file has none.
    """
    from smx.config.schema import REQUIRED_NAME

    yield section
    spec = getattr(section, "spec")
    for sub in spec.subsections:
        try:
            children = section.sections(sub.keyword)  # type: ignore[attr-defined]
            if not children and sub.naming != REQUIRED_NAME:
                children = [section.section(sub.keyword)]  # type: ignore
        except (KeyError, ConfigError):
            continue
        for child in children:
            yield from _walk(child)


def namedFiles(cfg: object) -> Iterator[Tuple[str, object, str, str]]:
    """
    The files a configuration names through its options.

    @return: C{(component, section, option name, path)}, the component
        being the top-level section's keyword (C{"smar"} for a C{map}).
    """
    globals_ = getattr(cfg, "globals")
    for section in _walk(globals_):
        top = section
        while getattr(top, "parent") is not None and top.parent.keyword:  # type: ignore
            top = top.parent  # type: ignore[attr-defined]
        keyword = getattr(top, "keyword").lower()
        component = _OWNER.get(keyword, keyword)
        for option in getattr(section, "spec").options:
            if not _isConfigPath(option):
                continue
            try:
                path = section[option.name]  # type: ignore[index]
            except (KeyError, ConfigError):
                continue
            if path:
                yield component, section, option.name, path


def unsafeFiles(
    cfg: object,
    component: Optional[str] = None,
    trust: Optional[Trust] = None,
) -> List[ConfigError]:
    """
    Check the owner and mode of every file C{component} relies on.

    @param cfg: an L{smx.config.Configuration}.
    @param component: C{"qmgr"}, C{"smar"}, C{"smtps"}, C{"smtpc"}, ...,
        or C{None} for all (embedded mode).
    @param trust: who may own and write the files (default:
        L{Trust.forConfiguration}).
    @return: one L{ConfigError} per problem, at the option that names the
        file (the configuration file's own problems first).
    """
    trust = trust if trust is not None else Trust.forConfiguration(cfg)
    problems = []  # type: List[ConfigError]
    path = getattr(cfg, "path", None)
    seen = set()  # type: Set[Tuple[str, bool]]
    if path:
        seen.add((path, False))
        for line in checkFile(path, trust):
            problems.append(
                ConfigError("configuration file " + line, getattr(cfg, "filename"))
            )
    for owner, section, name, file in namedFiles(cfg):
        if component is not None and owner != component.lower():
            continue
        secret = name.lower() in SECRETS
        if (file, secret) in seen:
            continue
        seen.add((file, secret))
        # "mailertable: /etc/smx/mt is ...", "key_file /etc/smx/k.pem is ..."
        label = name
        if name.lower() in ("name", "file"):
            label = getattr(section, "title")() + ":"
        for line in checkFile(file, trust, secret):
            problems.append(section.error("%s %s" % (label, line), name))  # type: ignore
    return problems


def refuseUnsafeFiles(
    cfg: object,
    component: Optional[str] = None,
    program: str = "smx",
    stderr: Optional[TextIO] = None,
    trust: Optional[Trust] = None,
) -> None:
    """
    The check components make at start: if a file C{component} relies on
    can be changed by others (L{unsafeFiles}), write one line per problem
    on C{stderr} and exit with C{EX_CONFIG} (78).

    @param program: the name at the start of each line.
    @raise SystemExit: with status 78 if a file is refused.
    """
    problems = unsafeFiles(cfg, component, trust)
    if not problems:
        return
    out = stderr if stderr is not None else sys.stderr
    for problem in problems:
        out.write("%s: refusing to start: %s\n" % (program, problem))
    out.flush()
    raise SystemExit(EX_CONFIG)


__all__ = [
    "EX_CONFIG",
    "Trust",
    "modeProblems",
    "checkFile",
    "namedFiles",
    "unsafeFiles",
    "refuseUnsafeFiles",
]
