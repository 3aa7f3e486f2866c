# -*- test-case-name: smx.mail.test.test_smtpc -*-
"""
The open connection cache of SMTPC (OCC, seed §5.7): idle delivery
sessions kept by destination for the next transaction to go there.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from smx.mail.clientprotocol import ClientProtocol


class ConnectionCache:
    """
    The open connection cache (OCC, seed §5.7): idle sessions by
    destination, at most C{maxEntries}, each closed after C{timeout}
    seconds of idleness.
    """

    def __init__(self, reactor: Any, maxEntries: int, timeout: float):
        """
        @param maxEntries: the most idle sessions kept (C{OCC_max_entries}).
        @param timeout: seconds an idle session is kept.
        """
        self.reactor = reactor
        self.maxEntries = maxEntries
        self.timeout = timeout
        self._entries = []  # type: List[Tuple[Any, ClientProtocol, Any]]

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, key: Any) -> Optional[ClientProtocol]:
        """
        @return: an idle session to C{key} (removed from the cache) or
            C{None}.
        """
        for i, (k, proto, call) in enumerate(self._entries):
            if k == key and not proto.lost:
                del self._entries[i]
                if call.active():
                    call.cancel()
                proto.onLost = None
                return proto
        return None

    def put(self, key: Any, proto: ClientProtocol) -> None:
        """
        Keep C{proto} for later use; the oldest entry is closed if the
        cache is full.
        """
        if self.maxEntries <= 0 or proto.lost:
            proto.quit()
            return
        while len(self._entries) >= self.maxEntries:
            _, old, call = self._entries.pop(0)
            if call.active():
                call.cancel()
            old.onLost = None
            old.quit()
        call = self.reactor.callLater(self.timeout, self._expire, proto)
        proto.onLost = self._lost
        self._entries.append((key, proto, call))

    def _expire(self, proto: ClientProtocol) -> None:
        self._remove(proto)
        proto.onLost = None
        proto.quit()

    def _lost(self, proto: ClientProtocol) -> None:
        self._remove(proto)

    def _remove(self, proto: ClientProtocol) -> None:
        for i, (_, p, call) in enumerate(self._entries):
            if p is proto:
                del self._entries[i]
                if call.active():
                    call.cancel()
                return

    def closeAll(self) -> None:
        """Close every cached session."""
        entries, self._entries = self._entries, []
        for _, proto, call in entries:
            if call.active():
                call.cancel()
            proto.onLost = None
            proto.quit()
