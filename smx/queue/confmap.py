# -*- test-case-name: smx.queue.test.test_limits -*-
"""
NAME
    smx.queue.confmap - the QMGR configuration map (conf.db)

SYNOPSIS
    conf = ConfigurationMap("/etc/smx/conf.db", report)
    conf.open()
    conf.lookup("oci", "10.1.2.3")    # -> int or None
    conf.reopen()                     # SIGUSR1, qmgrctl -r

DESCRIPTION
    A Berkeley DB hash map (made by C{smx createmap} or sendmail's
    C{makemap hash}) with the keys of seed §5.7.1: C{oci:} (initial
    outgoing connections), C{ocm:} (maximum outgoing connections),
    C{octo:} (timeout of an open connection cache entry), C{icr:}
    (incoming connection rate per 60 s), C{ios:} (open incoming
    sessions).  Each tag is followed by an IP address or net: an address
    C{A.B.C.D} is looked up as C{tag:A.B.C.D}, C{tag:A.B.C}, C{tag:A.B},
    C{tag:A} and then the bare C{tag:}.  The limits apply to single
    addresses; they are not aggregated over a net.

    The map is small, so it is read into memory when opened; lookups do
    not touch the file.

CONFIGURATION PARAMETERS
    conf (qmgr, default conf.db, relative to the configuration directory)

SECURITY
    The map is opened read-only.  Values that are not non-negative
    integers are ignored (and reported).

DIAGNOSTICS
    A missing map is not an error (the built-in defaults apply).  An
    unreadable or damaged map, or a bad value, is reported once per open
    with the file name; the previous contents stay in force.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional

from smx.bdb import db

TAGS = ("oci", "ocm", "octo", "icr", "ios")


def lookupKeys(tag: str, address: Optional[str]) -> List[str]:
    """
    @return: the keys to try for C{tag} and C{address}, most specific
        first (seed §5.7.1).
    """
    keys = []
    if address:
        address = address.lower()
        if ":" in address:
            keys.append("%s:%s" % (tag, address))
        else:
            parts = address.split(".")
            for n in range(len(parts), 0, -1):
                keys.append("%s:%s" % (tag, ".".join(parts[:n])))
    keys.append("%s:" % (tag,))
    return keys


class ConfigurationMap:
    """
    The conf map.

    @ivar entries: key -> value, as read at the last (re)open.
    """

    def __init__(
        self, path: Optional[str], report: Optional[Callable[[str], None]] = None
    ) -> None:
        self.path = path
        self.entries = {}  # type: Dict[str, int]
        self._report = report or (lambda text: None)

    def open(self) -> None:
        """
        Read the map.  Problems are reported; the old entries stay.
        """
        if not self.path or not os.path.exists(self.path):
            self.entries = {}
            return
        entries = {}  # type: Dict[str, int]
        d = db.DB()
        try:
            d.open(self.path, dbtype=db.DB_UNKNOWN, flags=db.DB_RDONLY)
            try:
                cursor = d.cursor()
                rec = cursor.first()
                while rec is not None:
                    self._add(entries, rec[0], rec[1])
                    rec = cursor.next()
                cursor.close()
            finally:
                d.close()
        except db.DBError as e:
            args = list(getattr(e, "args", ()))
            text = str(args[1]) if len(args) >= 2 else str(e)
            self._report("conf map %s: cannot read: %s" % (self.path, text))
            return
        self.entries = entries

    def _add(self, entries: Dict[str, int], key: bytes, value: bytes) -> None:
        k = key.rstrip(b"\0").decode("utf-8", "replace").strip().lower()
        v = value.rstrip(b"\0").decode("utf-8", "replace").strip()
        tag = k.partition(":")[0]
        if tag not in TAGS or ":" not in k:
            return
        try:
            n = int(v)
            if n < 0:
                raise ValueError(v)
        except ValueError:
            self._report(
                "conf map %s: key %s: value %r is not a non-negative number, "
                "ignored" % (self.path, k, v)
            )
            return
        entries[k] = n

    reopen = open

    def lookup(self, tag: str, address: Optional[str] = None) -> Optional[int]:
        """
        @return: the value for C{tag} and C{address} (most specific entry),
            or C{None}.
        """
        if not self.entries:
            return None
        for key in lookupKeys(tag, address):
            value = self.entries.get(key)
            if value is not None:
                return value
        return None
