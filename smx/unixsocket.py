# -*- test-case-name: smx.test.test_unixsocket -*-
"""
NAME
    smx.unixsocket - Unix domain socket names of any length

SYNOPSIS
    reactor.listenUNIX(socketName(path), factory)
    reactor.connectUNIX(socketName(path), factory)

DESCRIPTION
    A Unix domain socket is named by at most 107 bytes (C{sun_path} is 108
    bytes on Linux).  A queue directory deep in a file system (a test's
    temporary directory, a long C{/srv/...} path) easily makes
    C{lmtpsock} or C{qmgr.ctl} longer than that, and bind(2) or connect(2)
    then fail.

    L{socketName} returns a name that fits and designates the same file:
    the path itself when it is short enough, otherwise
    C{/proc/self/fd/N/NAME}, where N is a descriptor this module keeps open
    on the socket's directory.  The kernel resolves that name like the long
    one, for bind, connect, chmod and unlink alike.

DIAGNOSTICS
    L{SocketNameError} (an C{OSError}) when no short name can be made: the
    directory does not exist, C{/proc} is not mounted, or the file name
    alone is too long.
"""

from __future__ import annotations

import os
from typing import Dict, Tuple

#: the longest name of a Unix domain socket (sun_path is 108 bytes on Linux)
MAX_SOCKET_NAME = 107

#: directory -> (descriptor, (st_dev, st_ino)) kept open for short names
_directories = {}  # type: Dict[str, Tuple[int, Tuple[int, int]]]


class SocketNameError(OSError):
    """
    A Unix socket path is too long and no short name for it can be made.
    """


def socketName(path: str) -> str:
    """
    A name of at most L{MAX_SOCKET_NAME} bytes for the Unix socket C{path}.

    @raise SocketNameError: C{path} is too long and its directory cannot
        be reached through C{/proc/self/fd}.
    """
    if len(os.fsencode(path)) <= MAX_SOCKET_NAME:
        return path
    directory, name = os.path.split(os.path.abspath(path))
    try:
        fd = _directoryDescriptor(directory)
    except OSError as e:
        raise SocketNameError(
            "%s: socket name longer than %d bytes and its directory cannot "
            "be opened (%s)" % (path, MAX_SOCKET_NAME, e.strerror or e)
        )
    short = "/proc/self/fd/%d/%s" % (fd, name)
    if len(os.fsencode(short)) > MAX_SOCKET_NAME or not os.path.isdir(
        "/proc/self/fd/%d" % (fd,)
    ):
        raise SocketNameError(
            "%s: socket name longer than %d bytes" % (path, MAX_SOCKET_NAME)
        )
    return short


def _directoryDescriptor(directory: str) -> int:
    """
    A descriptor open on C{directory}, opened again when the directory was
    replaced since.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    st = os.fstat(fd)
    identity = (st.st_dev, st.st_ino)
    known = _directories.get(directory)
    if known is not None and known[1] == identity:
        os.close(fd)
        return known[0]
    # an old descriptor stays open: a port bound through it unlinks its
    # socket through it when it closes
    _directories[directory] = (fd, identity)
    return fd
