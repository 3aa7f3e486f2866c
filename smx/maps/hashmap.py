# -*- test-case-name: smx.maps.test.test_createmap,smx.maps.test.test_access -*-
"""
Maps of type C{hash} (seed §5.8.1): a Berkeley DB hash file, as made by
C{smx createmap} or sendmail's C{makemap hash}.

Keys are looked up as given (callers lower-case them, seed §9.3); a key is
tried as is and, if absent, with a trailing NUL byte (C{makemap -N}), so
maps made either way work.  A trailing NUL on a value is removed.

Answers are kept in a bounded cache until the map is reopened (the
open database handle keeps reading the file it opened anyway, so a new
file is seen only after a reload, seed §6.7).

A file that is missing, corrupt or not a hash database does not stop smx:
the error is logged (once per open attempt) and every lookup fails
temporarily (L{MapTemporaryError}) until L{HashMap.reopen} succeeds.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from twisted.internet import defer
from zope.interface import implementer

from smx.bdb import db as _db
from smx.interfaces import IMap
from smx.log import Logger
from smx.maps.errors import MapTemporaryError


def openHashFile(path: str) -> Any:
    """
    Open a Berkeley DB hash file read-only.

    @raise MapTemporaryError: naming the file and the reason.
    """
    handle = _db.DB()
    try:
        handle.open(path, None, _db.DB_HASH, _db.DB_RDONLY)
    except _db.DBError as e:
        try:
            handle.close()
        except _db.DBError:
            pass
        reason = e.args[1] if len(e.args) > 1 else str(e)
        raise MapTemporaryError("%s: cannot open hash map: %s" % (path, reason))
    return handle


#: answers kept per map before the cache starts again
CACHE_ENTRIES = 4096


@implementer(IMap)
class HashMap:
    """
    A Berkeley DB hash map.

    @ivar name: the map's name.
    @ivar path: the file name, including its extension.
    @ivar error: why the map is unusable, or C{None}.
    """

    def __init__(self, name: str, path: str, log: Optional[Logger] = None) -> None:
        self.name = name
        self.path = path
        self.log = log if log is not None else Logger("smar")
        self._db = None  # type: Any
        self.error = None  # type: Optional[str]
        self._cache = {}  # type: Dict[str, Optional[str]]
        self._open()

    def _open(self) -> None:
        try:
            self._db = openHashFile(self.path)
            self.error = None
        except MapTemporaryError as e:
            self._db = None
            self.error = str(e)
            self.log.error("HashMap.open", map=self.name, file=self.path, error=str(e))

    def get(self, key: str) -> Optional[str]:
        """
        Look C{key} up synchronously.

        @raise MapTemporaryError: if the map is not usable.
        """
        try:
            return self._cache[key]
        except KeyError:
            pass
        if self._db is None:
            raise MapTemporaryError(self.error or "%s: map closed" % (self.path,))
        raw = key.encode("utf-8")
        try:
            value = self._db.get(raw)
            if value is None:
                value = self._db.get(raw + b"\0")
        except _db.DBError as e:
            self.log.error("HashMap.get", map=self.name, file=self.path, error=str(e))
            raise MapTemporaryError("%s: lookup failed: %s" % (self.path, e))
        answer = None  # type: Optional[str]
        if value is not None:
            if value.endswith(b"\0"):
                value = value[:-1]
            answer = value.decode("utf-8", "replace")
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()
        self._cache[key] = answer
        return answer

    def lookup(self, key: str) -> defer.Deferred:
        try:
            return defer.succeed(self.get(key))
        except MapTemporaryError as e:
            return defer.fail(e)

    def reopen(self) -> None:
        self.close()
        self._open()

    def close(self) -> None:
        self._cache.clear()
        if self._db is not None:
            try:
                self._db.close()
            except _db.DBError:
                pass
            self._db = None
        self.error = "%s: map closed" % (self.path,)
