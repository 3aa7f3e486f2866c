# -*- test-case-name: smx.maps.test.test_createmap -*-
"""
NAME
    smx createmap - build a Berkeley DB hash map from text

SYNOPSIS
    smx createmap [-a] [-N] [-t hash] -F map.db [< map]
    smx createmap [-a] [-N] [-t hash] -F map.db -i map

DESCRIPTION
    Reads map entries (C{key value} or C{key: value}, one per line, C{#}
    comments, continuation lines starting with white space) from standard
    input or the file given with C{-i} and writes them to the hash map
    C{-F}, atomically (temporary file and rename), so that a running smx
    can reopen it with SIGUSR1 (seed §6.7).  Keys are lower-cased (seed
    §9.3); no trailing NUL is stored unless C{-N} is given.

    -F FILE   the map to write (required)
    -t TYPE   the map type; only C{hash} is supported
    -a        aliases format: split every line at its first colon
    -N        store keys and values with a trailing NUL (makemap -N)
    -i FILE   read FILE instead of standard input
    -h        show this help

DIAGNOSTICS
    A malformed entry is reported as C{file:line: ...} on standard error
    and the map is not changed; the exit status is 65 (EX_DATAERR).
    Usage errors exit with 64 (EX_USAGE), I/O errors with 74 (EX_IOERR).
    Duplicate keys are warned about; the first entry is kept.
"""

from __future__ import annotations

import getopt
import sys
from typing import List, Optional

from smx.maps.createmap import CreateMapError, parseMapText, writeHashMap

USAGE = "usage: smx createmap [-a] [-N] [-t hash] [-i input] -F map.db [< map]\n"


def run(argv: List[str], stdin=None, stdout=None, stderr=None) -> int:
    """
    Run C{smx createmap}.

    @param argv: the arguments after the command name.
    @return: the exit status.
    """
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    try:
        opts, args = getopt.getopt(argv, "F:t:i:aNh", ["help"])
    except getopt.GetoptError as e:
        stderr.write("smx createmap: %s\n%s" % (e, USAGE))
        return 64
    target = None  # type: Optional[str]
    source = None  # type: Optional[str]
    aliases = nul = False
    for opt, value in opts:
        if opt in ("-h", "--help"):
            stdout.write(USAGE + (__doc__ or ""))
            return 0
        if opt == "-F":
            target = value
        elif opt == "-t":
            if value.lower() != "hash":
                stderr.write("smx createmap: unsupported map type %r\n" % (value,))
                return 64
        elif opt == "-i":
            source = value
        elif opt == "-a":
            aliases = True
        elif opt == "-N":
            nul = True
    if args:
        stderr.write("smx createmap: unexpected argument %r\n%s" % (args[0], USAGE))
        return 64
    if not target:
        stderr.write("smx createmap: -F map.db is required\n" + USAGE)
        return 64
    try:
        if source is not None:
            try:
                with open(source, encoding="utf-8", errors="surrogateescape") as f:
                    lines = f.readlines()
            except OSError as e:
                stderr.write("smx createmap: %s: %s\n" % (source, e.strerror))
                return 66
            name = source
        else:
            lines = stdin.readlines()
            name = "<stdin>"
        entries, warnings = parseMapText(lines, name, aliases)
    except CreateMapError as e:
        stderr.write("smx createmap: %s\n" % (e,))
        return 65
    for w in warnings:
        stderr.write("smx createmap: warning: %s\n" % (w,))
    try:
        writeHashMap(target, entries, nul)
    except CreateMapError as e:
        stderr.write("smx createmap: %s\n" % (e,))
        return 74
    return 0
