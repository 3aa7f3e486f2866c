# -*- test-case-name: smx.maps.test.test_maps -*-
"""
Maps of type C{passwd} (seed §5.8.1): the system password database
(C{getpwnam(3)}, so NSS sources count too).  The value of a user is its
login name; useful as C{local_user_map}.
"""

from __future__ import annotations

import pwd
from typing import Callable

from twisted.internet import defer
from zope.interface import implementer

from smx.interfaces import IMap


@implementer(IMap)
class PasswdMap:
    """
    Local users by name.
    """

    def __init__(self, name: str = "passwd", getpwnam: Callable = pwd.getpwnam) -> None:
        self.name = name
        self._getpwnam = getpwnam

    def lookup(self, key: str) -> defer.Deferred:
        if not key or "\0" in key or "/" in key:
            return defer.succeed(None)
        try:
            entry = self._getpwnam(key)
        except KeyError:
            return defer.succeed(None)
        return defer.succeed(entry.pw_name)

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass
