# -*- test-case-name: smx.split.test.test_cache -*-
"""
NAME
    smx.split.cache - SMAR's answers kept in the processes that ask
    (SMTPS and QMGR), for no longer than SMAR keeps them

SYNOPSIS
    keep = keptFor(resolver, "checkRecipient", recipient, client)  # SMAR
    cache = AnswerCache(reactor)                           # SMTPS, QMGR
    cache.put(key, answer, keep)
    cache.get(key)             # a copy of the answer, or None

DESCRIPTION
    SMAR keeps its answers for C{cache_ttl} seconds
    (L{smx.maps.resolver.DecisionCache}): the same client, sender and
    recipients come again and again, and QMGR resolves each recipient
    SMTPS checked a moment before.  In split mode each of those answers
    still costs a round trip over C{SMAR_socket}, which costs more than
    the answer.  So SMAR says, with each answer of C{checkClient},
    C{checkSender}, C{checkRecipient} and C{resolveRecipient}, for how
    many more seconds it keeps that answer (L{keptFor}: 0 for an answer
    it does not keep: a temporary failure, a client name DNS could not
    settle, a route found through DNS, ...), and the proxy
    (L{smx.split.resolver.AddressResolverProxy}) keeps it that long and
    no longer.  The answers are the same as without this cache; a map
    change counts within C{cache_ttl}, as in embedded mode.  A reload
    (SIGUSR1, which the MCP passes to every process) empties the caches.
"""

from __future__ import annotations

import collections
import marshal
from typing import Any, Optional, Tuple

#: answers kept at most by one process
SIZE = 10000


def keptFor(resolver: Any, call: str, *args: Any) -> float:
    """
    How many more seconds C{resolver} keeps its answer of C{call(*args)}
    (L{smx.maps.resolver.AddressResolver.keptFor}); 0 for a resolver
    without a cache.
    """
    kept = getattr(resolver, "keptFor", None)
    if kept is None:
        return 0.0
    try:
        return float(kept(call, *args))
    except (KeyError, TypeError, ValueError):
        return 0.0


def copyPlain(value: Any) -> Any:
    """A copy of plain data (dicts and lists copied all the way down)."""
    if isinstance(value, dict):
        return {k: copyPlain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copyPlain(v) for v in value]
    return value


def _frozen(answer: Any) -> Tuple[bool, Any]:
    """
    C{answer} as kept: its C{marshal} bytes, from which L{_thawed} makes
    each copy in one C call (a deep copy in Python costs a call per dict
    and list, several per look-up); a copy of data C{marshal} cannot
    take.
    """
    try:
        return True, marshal.dumps(answer)
    except ValueError:
        return False, copyPlain(answer)


def _thawed(kept: Tuple[bool, Any]) -> Any:
    """A copy of an answer kept by L{_frozen}."""
    packed, value = kept
    return marshal.loads(value) if packed else copyPlain(value)


class AnswerCache:
    """
    Answers kept each for the seconds SMAR gave with it (see the module
    docstring); callers get copies.
    """

    def __init__(self, clock: Any, size: int = SIZE) -> None:
        self._now = clock.seconds
        self.size = size
        self._entries = (
            collections.OrderedDict()
        )  # type: collections.OrderedDict[Any, Tuple[float, Tuple[bool, Any]]]

    def get(self, key: Any) -> Optional[Any]:
        """@return: a copy of the answer kept under C{key}, or C{None}."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._now():
            del self._entries[key]
            return None
        return _thawed(entry[1])

    def put(self, key: Any, answer: Any, keep: Optional[float]) -> None:
        """Keep a copy of C{answer} for C{keep} seconds (none if 0 or None)."""
        if not keep or keep <= 0:
            return
        self._entries.pop(key, None)
        self._entries[key] = (self._now() + keep, _frozen(answer))
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
