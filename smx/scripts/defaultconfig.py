# -*- test-case-name: smx.test.test_tap -*-
"""
NAME
    smx default-config - write the embedded default configuration

SYNOPSIS
    smx default-config [--directory DIR] [--force]

DESCRIPTION
    Writes C{smx.conf}, the mailertable C{mt} and the aliases (C{aliases}
    and its Berkeley DB map C{aliases.db}) of the embedded default
    configuration into DIR (default: the current directory), which becomes
    the main queue directory.  Existing files are kept unless C{--force} is
    given, so local edits survive C{make run}.
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from typing import List

FILES = ["smx.conf", "mt", "aliases"]


def defaultText(name: str) -> str:
    """
    @return: the text of the embedded default file C{name}.
    """
    return resources.files("smx").joinpath("default", name).read_text("utf-8")


def writeDefaultConfiguration(directory: str, force: bool = False) -> str:
    """
    Write the default files into C{directory} (created if missing).

    @return: the path of C{smx.conf}.
    """
    os.makedirs(directory, exist_ok=True)
    for name in FILES:
        path = os.path.join(directory, name)
        if force or not os.path.exists(path):
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(defaultText(name))
            os.replace(tmp, path)
    aliases = os.path.join(directory, "aliases")
    aliasesDB = os.path.join(directory, "aliases.db")
    if force or not os.path.exists(aliasesDB) or _newer(aliases, aliasesDB):
        from smx.maps.createmap import createMapFromFile

        createMapFromFile(aliases, aliasesDB)
    return os.path.join(directory, "smx.conf")


def _newer(a: str, b: str) -> bool:
    return os.stat(a).st_mtime > os.stat(b).st_mtime


def run(argv: List[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="smx default-config",
        description="write the embedded default configuration",
    )
    parser.add_argument("--directory", "-d", default=".")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    try:
        path = writeDefaultConfiguration(os.path.abspath(args.directory), args.force)
    except Exception as e:
        sys.stderr.write("smx default-config: %s\n" % (e,))
        return 1
    sys.stdout.write("%s\n" % (path,))
    return 0
