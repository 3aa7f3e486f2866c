# -*- test-case-name: smx.scripts.test.test_programs -*-
"""
NAME
    smx runas - run a program as another user (seed §6.6.1, misc/runas)

SYNOPSIS
    smx runas [-g GROUP] USER COMMAND [ARGUMENTS...]

DESCRIPTION
    Sets the group (C{-g GROUP}, else USER's primary group), the
    supplementary groups of USER (initgroups(3)) and the user, in that
    order, then executes COMMAND (searched in C{PATH}) in place of
    itself.  Used as root to start a program of smx by hand, which
    refuses to run as root:

        smx runas smxq smx mailq
        smx runas smxs smx-smtps -f /etc/smx/smx.conf

    USER and GROUP are names or numbers.

DIAGNOSTICS
    An unknown user or group, a program that cannot be executed, or a
    user change that is not allowed (not root): one line on standard
    error, exit status 64 (EX_USAGE), 67 (EX_NOUSER), 77 (EX_NOPERM) or
    127 (command not found).
"""

from __future__ import annotations

import grp
import os
import pwd
import sys
from typing import List

EX_USAGE = 64
EX_NOUSER = 67
EX_NOPERM = 77

USAGE = "usage: smx runas [-g GROUP] USER COMMAND [ARGUMENTS...]\n"


def _fail(message: str, status: int) -> int:
    sys.stderr.write("smx runas: %s\n" % (message,))
    return status


def run(argv: List[str]) -> int:
    group = None
    args = list(argv)
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    if args and args[0] == "-g":
        if len(args) < 2:
            sys.stderr.write(USAGE)
            return EX_USAGE
        group, args = args[1], args[2:]
    if len(args) < 2 or args[0].startswith("-"):
        sys.stderr.write(USAGE)
        return EX_USAGE
    user, command = args[0], args[1:]
    try:
        entry = (
            pwd.getpwuid(int(user))
            if user.isdigit() and user.isascii()
            else pwd.getpwnam(user)
        )
    except KeyError:
        return _fail("no user %r on this system" % (user,), EX_NOUSER)
    gid = entry.pw_gid
    if group is not None:
        try:
            gid = (
                int(group)
                if group.isdigit() and group.isascii()
                else grp.getgrnam(group).gr_gid
            )
        except KeyError:
            return _fail("no group %r on this system" % (group,), EX_NOUSER)
    try:
        os.setgid(gid)
        os.initgroups(entry.pw_name, gid)
        os.setuid(entry.pw_uid)
    except PermissionError:
        return _fail(
            "cannot become %s: only root can change the user" % (entry.pw_name,),
            EX_NOPERM,
        )
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        return _fail("%s: command not found" % (command[0],), 127)
    except OSError as e:
        return _fail("cannot execute %s: %s" % (command[0], e.strerror), 126)
    return 0  # not reached
