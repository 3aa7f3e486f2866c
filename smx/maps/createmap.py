# -*- test-case-name: smx.maps.test.test_createmap -*-
"""
Build a Berkeley DB hash map from text (seed §6.3.2, §6.7), the library
behind C{smx createmap}.

Input format: one entry per line, C{key value} (makemap format: the key is
the first whitespace-separated word, the value the rest of the line) or
C{key: value} (aliases format: a first word ending in a colon).  Empty
lines and lines starting with C{#} are ignored; a line starting with white
space continues the value of the previous entry (as in aliases files).
With C{aliases=True} every line is split at its first colon instead.

Keys are lower-cased (seed §9.3: lookups lower-case their keys, so an
upper-case key could never match); values are stored as written.  Keys and
values are stored B{without} a trailing NUL byte unless C{nul=True} (like
C{makemap -N}); smx's readers accept both.  When a key occurs twice the
first entry is kept and a warning names both lines (like C{makemap}).

The database is written to a temporary file in the target's directory,
flushed to disk and renamed over the target, so a process that reopens the
map (SIGUSR1) sees either the old or the new map, never a partial one.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Tuple

from smx.bdb import db as _db


class CreateMapError(Exception):
    """
    A malformed entry or an I/O error; the text names the file and line.
    """


def parseMapText(
    lines: Iterable[str], filename: str = "<stdin>", aliases: bool = False
) -> Tuple[List[Tuple[str, str]], List[str]]:
    """
    Parse map source text.

    @param lines: the lines of the source.
    @param filename: the name used in messages.
    @param aliases: split every entry at its first colon.
    @return: C{(entries, warnings)}: C{entries} a list of C{(key, value)}
        in file order without duplicates, keys lower-cased.
    @raise CreateMapError: for a malformed entry, naming C{filename:line}.
    """
    entries = []  # type: List[Tuple[str, str]]
    seen = {}  # type: Dict[str, int]
    warnings = []  # type: List[str]
    current = None  # type: Optional[List]
    pending = []  # type: List[List]

    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[:1] in (" ", "\t"):
            if current is None:
                raise CreateMapError(
                    "%s:%d: continuation line without an entry" % (filename, number)
                )
            current[2] = (current[2] + " " + stripped).strip()
            continue
        if aliases:
            key, sep, value = line.partition(":")
            if not sep:
                raise CreateMapError(
                    "%s:%d: malformed entry (no ':' after the key): %r"
                    % (filename, number, line)
                )
        else:
            parts = line.split(None, 1)
            key = parts[0]
            value = parts[1] if len(parts) > 1 else ""
            if key.endswith(":") and len(key) > 1:
                key = key[:-1]
        key = key.strip()
        if not key or any(c.isspace() for c in key):
            raise CreateMapError(
                "%s:%d: malformed entry (bad key): %r" % (filename, number, line)
            )
        current = [number, key.lower(), value.strip()]
        pending.append(current)

    for number, key, value in pending:
        if not value:
            raise CreateMapError(
                "%s:%d: malformed entry (key %r has no value)" % (filename, number, key)
            )
        if key in seen:
            warnings.append(
                "%s:%d: duplicate key %r (first at line %d), ignored"
                % (filename, number, key, seen[key])
            )
            continue
        seen[key] = number
        entries.append((key, value))
    return entries, warnings


def writeHashMap(
    path: str, entries: Iterable[Tuple[str, str]], nul: bool = False, mode: int = 0o644
) -> None:
    """
    Write a Berkeley DB hash file atomically.

    @param path: the target file name (including its extension).
    @param entries: C{(key, value)} pairs, stored as UTF-8.
    @param nul: append a NUL byte to keys and values.
    @raise CreateMapError: if the file cannot be written.
    """
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    tmp = os.path.join(directory, ".%s.tmp%d" % (base, os.getpid()))
    suffix = b"\0" if nul else b""
    handle = _db.DB()
    try:
        if os.path.exists(tmp):
            os.unlink(tmp)
        handle.open(tmp, None, _db.DB_HASH, _db.DB_CREATE | _db.DB_EXCL, mode)
        for key, value in entries:
            handle.put(key.encode("utf-8") + suffix, value.encode("utf-8") + suffix)
        handle.sync()
        handle.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except (OSError, _db.DBError) as e:
        try:
            handle.close()
        except _db.DBError:
            pass
        if os.path.exists(tmp):
            os.unlink(tmp)
        reason = e.args[-1] if e.args else str(e)
        raise CreateMapError("%s: cannot write map: %s" % (path, reason))


def createMap(
    path: str,
    lines: Iterable[str],
    filename: str = "<stdin>",
    aliases: bool = False,
    nul: bool = False,
) -> List[str]:
    """
    Parse C{lines} and write them as the hash map C{path}.

    @return: the warnings (duplicate keys).
    @raise CreateMapError: for a malformed entry or an I/O error.
    """
    entries, warnings = parseMapText(lines, filename, aliases)
    writeHashMap(path, entries, nul)
    return warnings


def createMapFromFile(
    source: str, path: str, aliases: bool = False, nul: bool = False
) -> List[str]:
    """
    Build the hash map C{path} from the text file C{source}.

    @return: the warnings (duplicate keys).
    @raise CreateMapError: for a malformed entry (naming C{source:line}) or
        an I/O error.
    """
    try:
        with open(source, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.readlines()
    except OSError as e:
        raise CreateMapError("%s: cannot read: %s" % (source, e.strerror))
    return createMap(path, lines, source, aliases, nul)
