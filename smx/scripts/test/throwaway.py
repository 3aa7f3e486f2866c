# -*- test-case-name: smx.scripts.test.test_setup -*-
"""
Throwaway users and groups for the tests of C{smx setup} and the maildrop
group (root only): unique names (C{smxts<pid><n>...}), deleted by a
cleanup of the test case.
"""

from __future__ import annotations

import grp
import itertools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict

_counter = itertools.count()


def needRoot() -> None:
    """
    @raise SkipTest: unless the tests run as root (with useradd).
    """
    from twisted.trial.unittest import SkipTest

    if os.geteuid() != 0:
        raise SkipTest("needs root: creates users, groups and owners")
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        raise SkipTest("needs useradd and runuser")


def prefix() -> str:
    """
    A new name prefix, unique among concurrent test processes.
    """
    return "smxts%d%d" % (os.getpid() % 100000, next(_counter))


def accountEnvironment(base: str) -> Dict[str, str]:
    """
    The environment variables of C{smx setup} naming throwaway accounts
    C{BASEs}, C{BASEq}, ... and the maildrop group C{BASEd}.
    """
    return {
        "SMXS": base + "s",
        "SMXQ": base + "q",
        "SMXC": base + "c",
        "SMXM": base + "m",
        "SMX": base + "x",
        "SMXDROP": base + "d",
    }


def removeAccounts(names: Any) -> None:
    """
    Delete the users, then the groups, of these names that exist.
    """
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        subprocess.run(["userdel", name], capture_output=True)
    for name in names:
        try:
            grp.getgrnam(name)
        except KeyError:
            continue
        subprocess.run(["groupdel", name], capture_output=True)


def addUser(testCase: Any, name: str) -> int:
    """
    Create a plain system user (and its group) C{name}, deleted in a
    cleanup.

    @return: its uid.
    """
    testCase.addCleanup(removeAccounts, [name])
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", name],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(name).pw_uid


def addGroup(testCase: Any, name: str) -> int:
    """
    Create a system group C{name}, deleted in a cleanup.

    @return: its gid.
    """
    testCase.addCleanup(removeAccounts, [name])
    subprocess.run(["groupadd", "--system", name], check=True, capture_output=True)
    return grp.getgrnam(name).gr_gid


def canRunPython(user: str) -> bool:
    """
    Can C{user} run this interpreter and import smx (not when it lives
    under C{/root}, as pyenv's does)?
    """
    result = subprocess.run(
        ["runuser", "-u", user, "--", sys.executable, "-c", "import smx, twisted"],
        capture_output=True,
        cwd="/",
    )
    return result.returncode == 0


def buildPostdrop(testCase: Any, group: str) -> str:
    """
    Build C{contrib/smx-postdrop.c} into a directory every user may
    search, set-group-id C{group}.

    @return: its path.
    """
    from twisted.trial.unittest import SkipTest

    from smx.scripts.setup import postdropSource

    source = postdropSource()
    if source is None or shutil.which("cc") is None:
        raise SkipTest("needs cc and contrib/smx-postdrop.c")
    directory = tempfile.mkdtemp(prefix="smx-postdrop-")
    os.chmod(directory, 0o755)
    testCase.addCleanup(shutil.rmtree, directory, True)
    path = os.path.join(directory, "smx-postdrop")
    subprocess.run(["cc", "-O2", "-o", path, source], check=True, capture_output=True)
    os.chown(path, 0, grp.getgrnam(group).gr_gid)
    os.chmod(path, 0o2755)
    return path
