# -*- test-case-name: smx.maps.test.test_maps -*-
"""
Build the maps declared with C{map NAME { type; ... }} (seed §5.8.1).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional

from smx.interfaces import IMap
from smx.log import Logger
from smx.maps.errors import MapError
from smx.maps.hashmap import HashMap
from smx.maps.passwdmap import PasswdMap
from smx.maps.sequencemap import SequenceMap
from smx.maps.socketmap import SocketMap


def buildMaps(
    sections: Iterable[Any],
    reactor: Any,
    log: Optional[Logger] = None,
    timeout: float = 10.0,
) -> Dict[str, IMap]:
    """
    Build every declared map.

    @param sections: the C{map} sections (with C{.name} and typed options).
    @return: lower-case name -> L{IMap}.
    @raise MapError: for a declaration that cannot be used.
    """
    log = log if log is not None else Logger("smar")
    sections = list(sections)
    maps = {}  # type: Dict[str, IMap]
    sequences = {}  # type: Dict[str, SequenceMap]
    pending = []
    for s in sections:
        name = s.name
        kind = (s["type"] or "").lower()
        if kind == "hash":
            maps[name.lower()] = HashMap(name, s["file"], log)
        elif kind == "passwd":
            maps[name.lower()] = PasswdMap(name)
        elif kind == "socket":
            try:
                maps[name.lower()] = SocketMap(
                    name,
                    reactor,
                    s["mapname"] or name,
                    path=s["path"],
                    address=s["address"],
                    port=s["port"],
                    timeout=timeout,
                    log=log,
                )
            except ValueError as e:
                raise MapError(str(e))
        elif kind == "sequence":
            pending.append(s)
        else:
            raise MapError("map %s: unknown type %r" % (name, kind))
    for s in pending:
        sequences[s.name.lower()] = SequenceMap(s.name, [])
        maps[s.name.lower()] = sequences[s.name.lower()]
    for s in pending:
        members = []
        for member in s["maps"] or ():
            m = maps.get(member.lower())
            if m is None:
                raise MapError("map %s: undeclared map %r" % (s.name, member))
            members.append(m)
        sequences[s.name.lower()].maps = members
    return maps
