# -*- test-case-name: smx.maps.test.test_maps -*-
"""
Maps of type C{sequence} (seed §5.8.1): the first map of the list that has
the key answers.  If no map has the key and one of them failed
temporarily, the lookup fails temporarily (it might have had the key).
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet import defer
from zope.interface import implementer

from smx.fastdefer import inlineCallbacks
from smx.interfaces import IMap
from smx.maps.errors import MapTemporaryError


@implementer(IMap)
class SequenceMap:
    """
    A sequence of maps.

    @ivar maps: the L{IMap}s in lookup order.
    """

    def __init__(self, name: str, maps: List[IMap]) -> None:
        self.name = name
        self.maps = list(maps)

    @inlineCallbacks
    def lookup(self, key: str):
        failed = None
        for m in self.maps:
            try:
                value = yield m.lookup(key)
            except MapTemporaryError as e:
                failed = failed or e
                continue
            if value is not None:
                return value
        if failed is not None:
            raise MapTemporaryError("%s: %s" % (self.name, failed))
        return None

    def reopen(self) -> None:
        """
        The members are reopened by their owner (each map once).
        """

    def close(self) -> None:
        """
        The members are closed by their owner.
        """
