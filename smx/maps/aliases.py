# -*- test-case-name: smx.maps.test.test_aliases -*-
"""
Alias expansion and local-user validation (seed §5.8.2 item 8, §5.8.3,
§6.3.2, §5.11.3).

Modes (the C{aliases { flags }} option; several may be given):

  - C{localpart} (the default): keys are local parts, looked up only for
    addresses in local domains, with the local-part order of §5.11.1;
  - C{local_domains}: keys are full addresses (C{user@domain}, C{@domain},
    C{.domain} patterns), looked up only for local addresses;
  - C{all_domains}: keys are full addresses, looked up for any address.

Full-address keys are tried before local-part keys.  A right-hand side is
a list of addresses separated by white space (angle brackets optional);
C{local:} marks a valid local user (delivered as is).  An address without
C{@} gets the C{hostname} appended, or with C{preserve_domain} the domain
of the original address.  With C{replace_macros} the macros C{{user}},
C{{detail}}, C{{domain}}, C{{tag}} (the same as C{detail}),
C{{delimiter}}, C{{subdomain}} and C{{extension}} (delimiter and detail,
if there is a detail) are replaced, written C{{x}} or C{${x}}.

If the alias C{owner-NAME} exists for the alias C{NAME} that matched,
C{owner-NAME@domain} (the original domain) becomes the envelope sender of
the expansion.  Aliases nest up to 5 levels; an alias whose only target
is the address itself is delivered as is; a loop or deeper nesting is a
configuration error answered with a temporary failure (451 4.3.5), as is
a failed map lookup (451 4.3.0), so no mail is bounced because of it.

An address in a local domain that is neither an alias nor found in the
C{local_user_map} (local-part order of §5.11.1, then the bare user) is
unknown: 550 5.1.1.  With neither map configured every local address is
accepted.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Tuple, cast

from twisted.internet import defer

from smx.fastdefer import inlineCallbacks
from smx.interfaces import IMap
from smx.log import Logger
from smx.maps import lookup
from smx.maps.access import reply
from smx.maps.errors import MapTemporaryError
from smx.values import ReplyData

MAX_DEPTH = 5

_MACRO = re.compile(r"\$?\{(user|detail|domain|tag|delimiter|subdomain|extension)\}")


def replaceMacros(text: str, key: lookup.AddressKey, delimiter: str) -> str:
    """
    Replace the macros of seed §5.11.3 in C{text} for the match C{key}.
    """
    detail = key.detail if key.detail is not None else ""
    values = {
        "user": key.user,
        "detail": detail,
        "tag": detail,
        "domain": key.domain,
        "delimiter": delimiter,
        "subdomain": key.subdomain,
        "extension": (delimiter + detail) if key.detail is not None else "",
    }
    return _MACRO.sub(lambda m: values[m.group(1)], text)


def parseTargets(value: str) -> List[str]:
    """
    Split an alias right-hand side into addresses (angle brackets and
    trailing commas removed).
    """
    targets = []
    for word in value.replace(",", " ").split():
        if word.startswith("<") and word.endswith(">"):
            word = word[1:-1]
        if word:
            targets.append(word)
    return targets


def expansion(address: str, sender: Optional[str] = None, error=None, local=False):
    """
    One final recipient of an expansion.
    """
    return {"address": address, "sender": sender, "error": error, "local": local}


def unknownUser(address: str) -> ReplyData:
    """
    The reply for an unknown local user.
    """
    return reply(550, "5.1.1", "<%s>... User unknown" % (address,))


class AliasExpander:
    """
    Expands aliases and validates local users.

    @ivar aliases: the aliases L{IMap} or C{None}.
    @ivar localUsers: the C{local_user_map} or C{None}.
    @ivar isLocal: C{domain -> bool}: is this a local domain?
    """

    def __init__(
        self,
        aliases: Optional[IMap],
        localUsers: Optional[IMap],
        isLocal: Callable[[str], bool],
        flags: Any,
        hostname: str,
        delimiter: str,
        log: Optional[Logger] = None,
    ) -> None:
        """
        @param aliases: the aliases L{IMap}, or C{None}.
        @param localUsers: the C{local_user_map}, or C{None}.
        @param isLocal: C{domain -> bool}: is this a local domain?
        @param flags: the flags of the aliases map (and QMGR's C{aliases}).
        @param hostname: the local host name.
        @param delimiter: the C{address_delimiter}.
        """
        self.aliases = aliases
        self.localUsers = localUsers
        self.isLocal = isLocal
        flags = {f.lower() for f in flags}
        self.localpart = "localpart" in flags or not (
            flags & {"local_domains", "all_domains"}
        )
        self.localDomains = "local_domains" in flags
        self.allDomains = "all_domains" in flags
        self.replaceMacros = "replace_macros" in flags
        self.preserveDomain = "preserve_domain" in flags
        self.hostname = hostname
        self.delimiter = delimiter
        self.log = log if log is not None else Logger("smar")

    def aliasKeys(self, address: str, local: bool) -> List[lookup.AddressKey]:
        """
        The alias keys tried for C{address} under the configured modes.
        """
        domains = self.allDomains or (self.localDomains and local)
        localPart = self.localpart and local
        if not (domains or localPart):
            return []
        return lookup.addressLookupKeys(address, self.delimiter, localPart, domains)

    @inlineCallbacks
    def _first(self, map: Any, keys: List[Any]):
        for k in keys:
            value = yield map.lookup(getattr(k, "key", k))
            if value is not None:
                return k, value
        return None

    @inlineCallbacks
    def findAlias(self, address: str, local: bool):
        """
        @return: a L{Deferred} firing with C{(AddressKey, value)} or
            C{None}; it fails with L{MapTemporaryError}.
        """
        if self.aliases is None:
            return None
        keys = self.aliasKeys(address, local)
        found = yield self._first(self.aliases, keys)
        return found

    @inlineCallbacks
    def isLocalUser(self, address: str):
        """
        Is the local C{address} in the C{local_user_map}?

        @return: a L{Deferred} firing with C{True}, C{False}, or C{None}
            when there is no such map.
        """
        if self.localUsers is None:
            return None
        user, detail, _ = lookup.splitAddress(address.lower(), self.delimiter)
        keys = lookup.addressKeys(address, self.delimiter, True, False)
        if detail is not None:
            keys.append(user)
        found = yield self._first(self.localUsers, keys)
        return found is not None

    def _domain(self, address: str) -> str:
        return lookup.splitAddress(address, self.delimiter)[2].lower()

    @inlineCallbacks
    def validate(self, address: str):
        """
        Check a recipient at RCPT time.

        @return: a L{Deferred} firing with C{None} (valid or not local) or
            a I{reply}: 550 5.1.1 for an unknown local user, 451 for a
            temporary failure.
        """
        domain = self._domain(address)
        local = bool(domain) and self.isLocal(domain)
        try:
            found = yield self.findAlias(address, local)
            if found is not None or not local:
                return None
            known = yield self.isLocalUser(address)
        except MapTemporaryError as e:
            self.log.info(rcpt=address, error=str(e))
            return reply(451, "4.3.0", "Temporary failure looking up <%s>" % (address,))
        if known is False or (known is None and self.aliases is not None):
            return unknownUser(address)
        return None

    def expand(self, address: str) -> defer.Deferred:
        """
        Expand C{address} into final recipients.

        @return: a L{Deferred} firing with a list of
            C{{"address", "sender", "error", "local"}} dicts.
        """
        out = []  # type: List[Dict[str, Any]]
        d = self._expand(address, None, [], out)
        d.addCallback(lambda _: _dedupe(out))
        return d

    @inlineCallbacks
    def _expand(self, address: str, sender, chain: List[str], out: List) -> Any:
        lower = address.lower()
        domain = self._domain(address)
        local = bool(domain) and self.isLocal(domain)
        if lower in chain or len(chain) > MAX_DEPTH:
            why = "loop" if lower in chain else "nesting deeper than %d" % (MAX_DEPTH,)
            self.log.error(
                "AliasExpander.expand",
                rcpt=address,
                chain=" ".join(chain),
                error="alias " + why,
            )
            out.append(
                expansion(
                    address,
                    sender,
                    reply(451, "4.3.5", "Alias %s for <%s>" % (why, address)),
                )
            )
            return
        try:
            found = yield self.findAlias(address, local)
            if found is None:
                if local:
                    known = yield self.isLocalUser(address)
                    if known is False or (known is None and self.aliases is not None):
                        out.append(
                            expansion(address, sender, unknownUser(address), True)
                        )
                        return
                out.append(expansion(address, sender, None, local))
                return
            key, value = found
            owner = yield self._owner(key, address)
        except MapTemporaryError as e:
            self.log.info(rcpt=address, error=str(e))
            out.append(
                expansion(
                    address,
                    sender,
                    reply(
                        451, "4.3.0", "Temporary failure looking up <%s>" % (address,)
                    ),
                )
            )
            return
        if owner is not None:
            sender = owner
        value = value.strip()
        if value.lower() == "local:":
            out.append(expansion(address, sender, None, True))
            return
        if self.replaceMacros:
            value = replaceMacros(value, key, self.delimiter)
        targets = parseTargets(value)
        if not targets:
            out.append(
                expansion(
                    address,
                    sender,
                    reply(451, "4.3.5", "Empty alias for <%s>" % (address,)),
                )
            )
            return
        for target in targets:
            if "@" not in target:
                target += "@" + (
                    domain if self.preserveDomain and domain else self.hostname
                )
            if target.lower() == lower:
                out.append(expansion(address, sender, None, local))
                continue
            yield self._expand(target, sender, chain + [lower], out)

    @inlineCallbacks
    def _owner(self, key: lookup.AddressKey, address: str):
        """
        The C{owner-} sender for the alias matched by C{key}, or C{None}.
        """
        name = key.key
        if "*" in name or name.startswith("@") or name.startswith("owner-"):
            return None
        # not None: only a key found in the aliases map comes here
        found = yield cast(IMap, self.aliases).lookup("owner-" + name)
        if found is None:
            return None
        local = name.partition("@")[0]
        return "owner-%s@%s" % (local, key.domain or self.hostname)


def _dedupe(out: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    seen = set()
    result = []
    for e in out:
        k = e["address"].lower()
        if k in seen:
            continue
        seen.add(k)
        result.append(e)
    return result
