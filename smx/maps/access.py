# -*- test-case-name: smx.maps.test.test_access -*-
"""
The access map (seed §5.8.3): its right-hand sides, its tags and the lookup
order used for each tag.

Right-hand sides (case of the keywords does not matter), optionally
preceded by C{quick:}::

    ok | relay | reject | discard | cont | error:XYZ A.B.C text

C{reject} is C{error:550 5.7.0 Rejected}.  An C{error:} whose code is not
4xx/5xx, or a right-hand side smx does not know, is a mistake of the map's
owner: it is logged and treated as a temporary failure (451 4.3.0) so
that no mail is lost or wrongly accepted because of it.

Tags and their keys (seed §5.11.1): C{from:} and C{to:} use the address
order with the local-part-only keys (the null sender is C{from:<>});
C{cltaddr:} and C{mxbadip:} the IP order; C{cltname:} the domain order;
C{cltresolve:} (C{ok}, C{no}, C{tempptr}, C{tempa}), C{certissuer:},
C{certsubject:} and DNSBL tags are exact keys.  A DN is encoded by
L{encodeDN} (seed §5.9 item 18e) before it is looked up.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, cast

from twisted.internet import defer
from twisted.python.failure import Failure

from smx.interfaces import IMap
from smx.log import Logger
from smx.maps import lookup
from smx.maps.errors import MapTemporaryError
from smx.maps.hashmap import HashMap
from smx.values import DecisionData, ReplyData

ACTIONS = frozenset(["ok", "relay", "reject", "discard", "cont"])

_DSN = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


def reply(code: int, dsn: str, text: str) -> ReplyData:
    """
    A I{reply} value.
    """
    return {"code": code, "dsn": dsn, "text": text}


def decision(
    action: str = "none",
    quick: bool = False,
    reply: Optional[ReplyData] = None,
    **extra: Any,
) -> DecisionData:
    """
    A I{decision} value (see L{smx.interfaces}).
    """
    d = {"action": action, "quick": quick, "reply": reply}  # type: DecisionData
    d.update(extra)
    return d


def tempfail(
    text: str = "Temporary lookup failure", dsn: str = "4.3.0"
) -> DecisionData:
    """
    The decision for a temporary map or DNS failure (451).
    """
    return decision("tempfail", reply=reply(451, dsn, text))


def parseAccessValue(rhs: str) -> DecisionData:
    """
    Turn an access-map right-hand side into a I{decision}.

    @raise ValueError: for a right-hand side that smx does not know, with
        the reason.
    """
    text = rhs.strip()
    quick = False
    if text[:6].lower() == "quick:":
        quick, text = True, text[6:].strip()
    word = text.lower()
    if word in ACTIONS:
        if word == "reject":
            return decision("reject", quick, reply(550, "5.7.0", "Rejected"))
        return decision(word, quick)
    if word.startswith("error:"):
        return decision("error", quick, parseErrorText(text[6:]))
    raise ValueError("unknown access map value %r" % (rhs,))


def parseErrorText(text: str) -> ReplyData:
    """
    Parse C{XYZ A.B.C text} (the enhanced status code is optional).

    @raise ValueError: if XYZ is not a 4xx or 5xx code.
    """
    parts = text.strip().split(None, 2)
    if not parts or not re.match(r"^[45]\d\d$", parts[0]):
        raise ValueError("bad error reply %r (need a 4xx or 5xx code)" % (text,))
    code = int(parts[0])
    rest = parts[1:]
    if rest and _DSN.match(rest[0]) and rest[0][0] == parts[0][0]:
        dsn = rest[0]
        words = rest[1:]
    else:
        dsn = "%s.0.0" % (parts[0][0],)
        words = rest
    return reply(
        code, dsn, " ".join(words) or ("Rejected" if code >= 500 else "Try again later")
    )


_DN_SPECIAL = frozenset('<>()"+ ')


def encodeDN(dn: str) -> str:
    """
    Encode a certificate DN for an access-map key (seed §5.9 item 18e):
    every non-printable character and C{< > ( ) " +} and space become
    C{+XX} (hexadecimal, upper case).
    """
    out = []  # type: List[str]
    for ch in dn:
        if ch in _DN_SPECIAL or not ch.isprintable() or not ch.isascii():
            out.extend("+%02X" % (b,) for b in ch.encode("utf-8"))
        else:
            out.append(ch)
    return "".join(out)


class AccessMap:
    """
    Tagged lookups in the access map.

    @ivar map: the L{IMap} or C{None} when no access map is used.
    @ivar delimiter: the C{address_delimiter}.
    """

    def __init__(
        self, map: Optional[IMap], delimiter: str, log: Optional[Logger] = None
    ):
        """
        @param map: the access L{IMap}, or C{None}: no access map.
        @param delimiter: the C{address_delimiter}.
        """
        self.map = map
        self.delimiter = delimiter
        self.log = log if log is not None else Logger("smar")

    def keysFor(self, tag: str, key: str) -> List[str]:
        """
        The keys tried for C{tag}, in order (without the tag).
        """
        tag = tag.lower()
        key = key.strip().lower()
        if tag in ("from", "to"):
            if key in ("", "<>"):
                return ["<>"]
            return lookup.addressKeys(key, self.delimiter)
        if tag in ("cltaddr", "mxbadip"):
            return lookup.ipKeys(key)
        if tag == "cltname":
            return lookup.domainKeys(key)
        return [key]

    def check(self, tag: str, key: str) -> defer.Deferred:
        """
        Look C{key} up under C{tag} with the tag's lookup order.

        @return: a L{Deferred} firing with a I{decision}; C{"key"} names the
            entry that matched.  A temporary map failure gives C{"tempfail"}.
        """
        return self.checkKeys(tag, self.keysFor(tag, key))

    def checkKeys(self, tag: str, keys: List[str]) -> defer.Deferred:
        """
        Look up C{tag:key} for every key in turn; the first entry wins.
        """
        if self.map is None or not keys:
            return defer.succeed(decision())
        tag = tag.lower()
        result = defer.Deferred()  # type: defer.Deferred
        self._next(tag, list(keys), 0, result)
        return result

    def _next(self, tag: str, keys: List[str], i: int, result: defer.Deferred) -> None:
        if isinstance(self.map, HashMap):
            # a hash map answers at once: no Deferred per key
            for key in keys[i:]:
                full = tag + ":" + key
                try:
                    value = self.map.get(full)
                except Exception as e:
                    self._found(Failure(MapTemporaryError(str(e))), full, result)
                    return
                if value is not None:
                    self._found(value, full, result)
                    return
            result.callback(decision())
            return
        while i < len(keys):
            full = tag + ":" + keys[i]
            try:
                # not None: checkKeys does not come here without a map
                d = cast(IMap, self.map).lookup(full)
            except Exception as e:  # a broken map must not break SMAR
                d = defer.fail(MapTemporaryError(str(e)))
            if d.called:
                # Fast path for hash maps: no recursion through callbacks.
                box = []  # type: List[Any]
                d.addBoth(box.append)
                value = box[0]
                if value is None:
                    i += 1
                    continue
                self._found(value, full, result)
                return
            d.addBoth(self._cbNext, tag, keys, i, full, result)
            return
        result.callback(decision())

    def _cbNext(self, value, tag, keys, i, full, result) -> None:
        if value is None:
            self._next(tag, keys, i + 1, result)
        else:
            self._found(value, full, result)

    def _found(self, value: Any, key: str, result: defer.Deferred) -> None:
        if isinstance(value, str):
            try:
                d = parseAccessValue(value)
            except ValueError as e:
                self.log.error("AccessMap.check", key=key, value=value, error=str(e))
                d = tempfail("Access map entry is malformed")
            d["key"] = key
            result.callback(d)
            return
        reason = getattr(value, "value", value)
        self.log.error("AccessMap.check", key=key, error=str(reason))
        d = tempfail()
        d["key"] = key
        result.callback(d)
