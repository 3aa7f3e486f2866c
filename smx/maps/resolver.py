# -*- test-case-name: smx.maps.test.test_access,smx.maps.test.test_cache,smx.maps.test.test_integration_resolver -*-
"""
NAME
    smx.maps.resolver - SMAR, the address resolver of smx

SYNOPSIS
    resolver = AddressResolver.fromConfiguration(cfg, reactor)
    resolver.checkClient("192.0.2.1")          -> Deferred(decision)
    resolver.checkRecipient("u@dom", client)   -> Deferred(decision)
    resolver.resolveRecipient("u@dom")         -> Deferred([recipient...])

DESCRIPTION
    Implements L{smx.interfaces.IAddressResolver}: the access checks SMTPS
    asks for (seed §5.8.3, §5.11.2), alias expansion (§5.8.2 item 8,
    §6.3.2) and routing by mailertable and DNS (§5.8.3) for QMGR.

    checkClient: C{cltaddr:} (IP order); the client's name by PTR then
    A/AAAA lookups that must agree (C{cltresolve:} C{ok}, C{no},
    C{tempptr}, C{tempa}); C{cltresolve:}; C{cltname:} (domain order);
    the DNSBLs unless C{cltaddr:} said C{ok} or C{relay}.  A C{quick:}
    C{cltaddr:} entry, or a rejecting one, ends the checks.  The result
    has C{"clientName"}, C{"resolve"} and C{"relayClient"} (C{cltaddr:}
    allows relaying).

    checkSender: C{from:} (address order; the null sender is C{from:<>}).

    checkRecipient: C{to:} (address order).  C{"local"} is true for a
    domain whose mailertable entry is C{lmtp:}.  C{"relayAllowed"} is true
    for a local domain (unless the client dict has C{"flags"} containing
    C{lmtp_does_not_imply_relaying}), a C{to:} entry C{relay}, a
    C{cltaddr:} entry C{relay} for C{client["address"]}, or
    C{client["relay"]} (authenticated or certificate-verified clients).
    C{cltaddr:} C{quick:relay} overrides every other access check (§6.5).
    A rejecting C{to:} entry is returned as is (SMTPS applies
    C{delay_checks} and C{quick:} across stages).  A local recipient that
    is neither an alias nor in C{local_user_map} gets action C{"error"}
    with 550 5.1.1; a temporary failure is C{"tempfail"} (451).

    resolveRecipient: aliases, then a route list per final recipient
    (L{smx.maps.routing}).

CONFIGURATION PARAMETERS
    smar { DNS_flags; DNS_timeout; cache_ttl; nameserver; dnsbl { domain; tag; };
           local_user_map; address_delimiter; aliases { name; flags; };
           mailertable { name; }; access { name; }; }
    map NAME { type; file; mapname; path; address; port; maps; }
    hostname (global), smtpc remote_port, qmgr aliases (§5.7).

    The C{name} of aliases and access may be a declared map's name or a
    hash file; an aliases or access file that was not configured
    explicitly and does not exist is not used.  The mailertable must
    exist.

SECURITY
    SMAR runs without privileges; it reads maps and talks DNS.  Keys are
    lower-cased (§9.3), so case tricks cannot evade entries.

DIAGNOSTICS
    Map and DNS failures are logged (C{sev=ERR} for broken maps) and give
    temporary results, never "user unknown".  A bad mailertable raises
    L{MapError} (file:line) from L{AddressResolver.fromConfiguration};
    on L{AddressResolver.reload} the old table stays in force.
"""

from __future__ import annotations

import collections
import functools

import os
import random
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer
from zope.interface import implementer

from smx.fastdefer import inlineCallbacks
from smx.interfaces import IAddressResolver, IMap
from smx.log import Logger
from smx.maps.access import AccessMap, decision, encodeDN, reply, tempfail
from smx.maps.aliases import AliasExpander
from smx.maps.dnsbl import DNSBLChecker
from smx.maps.errors import DNSPermanentError, DNSTemporaryError, MapError
from smx.maps.mailertable import Mailertable
from smx.maps.routing import Router
from smx.maps.settings import ResolverSettings
from smx.values import ClientData, DecisionData, ResolvedData

if TYPE_CHECKING:  # pragma: no cover
    from smx.config.model import Configuration, Section
    from smx.maps.dns import DNSResolver

REJECTING = frozenset(["error", "reject", "discard", "tempfail"])

#: decisions and resolutions kept at most (the oldest go first)
CACHE_SIZE = 10000


@implementer(IAddressResolver)
class AddressResolver:
    """
    SMAR.

    @ivar mailertable: the L{Mailertable}.
    @ivar access: the L{AccessMap}.
    @ivar aliases: the L{AliasExpander}.
    @ivar router: the L{Router}.
    @ivar dns: the L{smx.maps.dns.DNSResolver} or C{None}.
    @ivar maps: every L{IMap} this resolver owns (reopened by L{reload}).
    """

    def __init__(
        self,
        reactor: Any,
        settings: ResolverSettings,
        mailertable: Mailertable,
        access: Optional[IMap] = None,
        aliases: Optional[IMap] = None,
        localUserMap: Optional[IMap] = None,
        dns: Optional[DNSResolver] = None,
        maps: Sequence[IMap] = (),
        log: Optional[Logger] = None,
        rng: Any = random,
        cacheSize: int = CACHE_SIZE,
    ) -> None:
        """
        @param settings: the L{ResolverSettings} (every option SMAR uses).
        @param mailertable: the L{Mailertable}.
        @param access: the access map (an L{smx.interfaces.IMap}), or
            C{None}.
        @param aliases: the aliases map, or C{None}.
        @param localUserMap: the map of C{local_user_map}, or C{None}.
        @param dns: the L{smx.maps.dns.DNSResolver}, or C{None}: no DNS.
        @param maps: the declared maps (reopened by L{reload}).
        @param rng: orders MX hosts of equal preference.
        @param cacheSize: decisions and resolutions kept at most.
        """
        self.settings = settings
        self.reactor = reactor
        self.cache = DecisionCache(reactor, settings.cacheTTL, cacheSize)
        self.log = log if log is not None else Logger("smar")
        self.mailertable = mailertable
        self.access = AccessMap(access, settings.delimiter, self.log)
        self.dns = dns
        self.router = Router(
            mailertable, dns, self.access, settings.remotePort, rng, self.log
        )
        self.aliases = AliasExpander(
            aliases,
            localUserMap,
            mailertable.isLocal,
            settings.aliasFlags,
            settings.hostname,
            settings.delimiter,
            self.log,
        )
        self.dnsbl = DNSBLChecker(dns, self.access, list(settings.dnsbl))
        owned = list(maps)
        for m in (access, aliases, localUserMap):
            if m is not None and m not in owned:
                owned.append(m)
        self.maps = owned

    # -- construction from smx.conf ---------------------------------------

    @classmethod
    def fromConfiguration(
        cls, cfg: Configuration, reactor: Any, log: Optional[Logger] = None
    ) -> "AddressResolver":
        """
        Build SMAR from a loaded configuration (L{smx.config}).

        @raise MapError: if the mailertable is missing or bad, or a map
            declaration cannot be used.
        """
        from smx.maps.declarations import buildMaps
        from smx.maps.dns import DNSResolver

        smar = cfg.section("smar")
        if log is None:
            try:
                from smx.log import loggerFromConfiguration

                log = loggerFromConfiguration("smar", smar)
            except Exception:
                log = Logger("smar")
        settings = ResolverSettings.fromConfiguration(cfg)
        maps = buildMaps(cfg.sections("map"), reactor, log)
        access = _namedMap(smar.section("access"), maps, "access", log)
        aliases = _namedMap(smar.section("aliases"), maps, "aliases", log)
        local = None
        if smar["local_user_map"]:
            local = maps.get(smar["local_user_map"].lower())
            if local is None:
                raise MapError(
                    "local_user_map: undeclared map %r" % (smar["local_user_map"],)
                )
        mailertable = Mailertable.fromFile(smar.section("mailertable")["name"])
        dns = DNSResolver(
            reactor,
            settings.nameservers,
            settings.dnsTimeout,
            settings.dnsUseTCP,
            log,
        )
        return cls(
            reactor,
            settings,
            mailertable,
            access=access,
            aliases=aliases,
            localUserMap=local,
            dns=dns,
            maps=list(maps.values()),
            log=log,
        )

    # -- client ------------------------------------------------------------

    @inlineCallbacks
    def resolveClientName(self, address: str):
        """
        The client's verified host name (seed §5.8.3): PTR names whose A or
        AAAA records include C{address}.

        @return: a L{Deferred} firing with C{(name or None, resolve)},
            C{resolve} one of C{ok}, C{no}, C{tempptr}, C{tempa}.
        """
        if self.dns is None:
            return None, "no"
        try:
            names = yield self.dns.lookupPTR(address)
        except DNSTemporaryError:
            return None, "tempptr"
        except DNSPermanentError:
            return None, "no"
        temp = False
        want = _canonicalIP(address)
        for name in names[:8]:
            try:
                addrs = yield self.dns.lookupAddresses(name)
            except DNSTemporaryError:
                temp = True
                continue
            except DNSPermanentError:
                continue
            if want in {_canonicalIP(a) for a in addrs}:
                return name, "ok"
        return None, ("tempa" if temp else "no")

    def _cached(self, key: Any, ask: Any, *args: Any) -> defer.Deferred:
        """
        The answer kept under C{key}, else C{ask(*args)}; an answer given
        at once is kept unless L{_reusable} says no.  Callers get copies.
        """
        hit = self.cache.get(key)
        if hit is not None:
            return defer.succeed(_copy(hit))
        routings = self.router.dnsRoutings
        d = ask(*args)
        if d.called and self.router.dnsRoutings == routings:
            d.addCallback(self._keep, key)
        return d

    def _keep(self, answer: Any, key: Any) -> Any:
        if _reusable(answer):
            self.cache.put(key, _copy(answer))
        return answer

    def keptFor(self, call: str, *args: Any) -> float:
        """
        How many more seconds the answer of C{call(*args)} (C{call} one
        of C{checkClient}, C{checkSender}, C{checkRecipient},
        C{resolveRecipient}) stays in the cache: 0 if it is not kept.
        Split mode's proxies keep an answer no longer than this
        (L{smx.split.resolver}).
        """
        return self.cache.left(cacheKey(call, *args))

    def checkClient(self, clientAddress: str) -> defer.Deferred[DecisionData]:
        return self._cached(("client", clientAddress), self._checkClient, clientAddress)

    @inlineCallbacks
    def _checkClient(self, clientAddress: str):
        c = yield self.access.check("cltaddr", clientAddress)
        name, resolve = yield self.resolveClientName(clientAddress)
        extra = {
            "clientName": name,
            "resolve": resolve,
            "relayClient": c["action"] == "relay",
        }
        if c["quick"] or c["action"] in REJECTING:
            return _with(c, extra)
        r = yield self.access.checkKeys("cltresolve", [resolve])
        if r["quick"] or r["action"] in REJECTING:
            return _with(r, extra)
        n = decision()
        if name:
            n = yield self.access.check("cltname", name)
            if n["quick"] or n["action"] in REJECTING:
                return _with(n, extra)
        if c["action"] not in ("ok", "relay"):
            b = yield self.dnsbl.check(clientAddress)
            if b["action"] not in ("none", "cont"):
                return _with(b, extra)
        for d in (c, r, n):
            if d["action"] not in ("none", "cont"):
                return _with(d, extra)
        return _with(decision(), extra)

    # -- sender and recipients -----------------------------------------------

    def checkSender(
        self, sender: str, client: Optional[ClientData]
    ) -> defer.Deferred[DecisionData]:
        return self._cached(("from", sender), self.access.check, "from", sender)

    def checkRecipient(
        self, recipient: str, client: Optional[ClientData]
    ) -> defer.Deferred[DecisionData]:
        key = cacheKey("checkRecipient", recipient, client)
        return self._cached(key, self._checkRecipient, recipient, client)

    @inlineCallbacks
    def _checkRecipient(self, recipient: str, client: Optional[ClientData]):
        client = client or {}
        domain = recipient.rpartition("@")[2].strip().lower().rstrip(".")
        local = bool(domain) and self.mailertable.isLocal(domain)
        flags = {f.lower() for f in client.get("flags") or ()}
        t = yield self.access.check("to", recipient)
        relay = bool(client.get("relay")) or t["action"] == "relay"
        if local and "lmtp_does_not_imply_relaying" not in flags:
            relay = True
        c = decision()
        if client.get("address"):
            c = yield self.access.check("cltaddr", client["address"])
            if c["action"] == "relay":
                relay = True
        extra = {"local": local, "relayAllowed": relay}
        if c["action"] == "relay" and c["quick"]:
            result = _with(decision("relay", True), extra)
            result["key"] = c.get("key")
        elif t["action"] in REJECTING:
            return _with(t, extra)
        else:
            result = _with(t, extra)
        if local:
            err = yield self.aliases.validate(recipient)
            if err is not None:
                action = "tempfail" if err["code"] < 500 else "error"
                return _with(decision(action, False, err), extra)
        return result

    @inlineCallbacks
    def lookupAccess(self, tag: str, key: str):
        tag = tag.lower().rstrip(":")
        d = yield self.access.check(tag, key)
        if d["action"] == "none" and tag in ("certissuer", "certsubject"):
            encoded = encodeDN(key)
            if encoded != key:
                d = yield self.access.check(tag, encoded)
        return d

    def resolveRecipient(self, address: str) -> defer.Deferred[List[ResolvedData]]:
        return self._cached(("resolve", address), self._resolveRecipient, address)

    @inlineCallbacks
    def _resolveRecipient(self, address: str):
        expanded = yield self.aliases.expand(address)
        results = []
        for e in expanded:
            if e["error"] is not None:
                routes, error = [], e["error"]
            else:
                routes, error = yield self.router.route(e["address"])
            results.append(
                {
                    "address": e["address"],
                    "sender": e["sender"],
                    "routes": routes,
                    "error": error,
                }
            )
        return results

    def reload(self) -> None:
        for m in self.maps:
            try:
                m.reopen()
            except Exception as e:
                self.log.error(
                    "AddressResolver.reload", map=getattr(m, "name", "?"), error=str(e)
                )
        try:
            self.mailertable.reopen()
        except MapError as e:
            self.log.error(
                "AddressResolver.reload", error=str(e), action="keeping old mailertable"
            )
        if self.dns is not None:
            self.dns.clearCache()
        self.cache.clear()
        self.log.info(reload="maps")

    def close(self) -> None:
        """
        Close every map and DNS connection.
        """
        for m in self.maps:
            m.close()
        if self.dns is not None:
            self.dns.close()


class DecisionCache:
    """
    The answers of SMAR kept for a few seconds: the same client, sender
    and recipients come again and again (a client sends many messages;
    QMGR resolves each recipient SMTPS checked a moment before), and
    answering from memory saves the map lookups and their L{Deferred}s,
    which are a good part of the cost of a message.

    What is kept: client decisions whose client name DNS answered for
    sure (C{ok} or C{no}; the DNSBL answers with them), sender and
    recipient decisions, and resolutions made from
    the maps alone (no MX or address lookup: those keep DNS's own
    lifetimes and the shuffle of equal MX preferences), each only if it
    was not a temporary failure and was answered at once (no wait on a
    socket map or DNS).  L{AddressResolver.reload} empties the cache, so
    a reloaded map counts at once; other map changes count within
    C{ttl} seconds.  A C{ttl} of 0 keeps nothing.
    """

    def __init__(self, clock: Any, ttl: float, size: int) -> None:
        self._now = clock.seconds if clock is not None else time.monotonic
        self.ttl = ttl
        self.size = size
        self._entries = (
            collections.OrderedDict()
        )  # type: collections.OrderedDict[Any, Tuple[float, Any]]

    def get(self, key: Any) -> Any:
        """@return: the value kept under C{key}, or C{None}."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._now():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: Any, value: Any) -> None:
        if self.ttl <= 0:
            return
        self._entries.pop(key, None)
        self._entries[key] = (self._now() + self.ttl, value)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def left(self, key: Any) -> float:
        """@return: the seconds C{key} stays kept, 0 if it is not kept."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return max(0.0, entry[0] - self._now())

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def cacheKey(call: str, *args: Any) -> Any:
    """
    The key under which L{DecisionCache} keeps the answer of the
    resolver's C{call(*args)}.
    """
    if call == "checkClient":
        return ("client", args[0])
    if call == "checkSender":
        return ("from", args[0])
    if call == "resolveRecipient":
        return ("resolve", args[0])
    if call == "checkRecipient":
        c = args[1] or {}
        return (
            "rcpt",
            args[0],
            c.get("address"),
            bool(c.get("relay")),
            tuple(sorted(f.lower() for f in c.get("flags") or ())),
        )
    raise ValueError("no cache key for %r" % (call,))


def _reusable(answer: Any) -> bool:
    """
    May SMAR keep C{answer} (a decision, or the list of a resolution)?
    Not a temporary failure, nor a client name DNS could not settle.
    """
    if isinstance(answer, list):
        return all(
            r.get("error") is None or int(r["error"].get("code") or 451) >= 500
            for r in answer
        )
    if answer.get("action") == "tempfail":
        return False
    return answer.get("resolve", "ok") in ("ok", "no")


def _copy(answer: Any) -> Any:
    """A copy the caller may change without changing the cache."""
    if isinstance(answer, list):
        return [
            dict(r, routes=[dict(route) for route in r.get("routes") or []])
            for r in answer
        ]
    return dict(answer)


def _with(d: DecisionData, extra: Dict[str, Any]) -> DecisionData:
    out = dict(d)
    out.update(extra)
    return out


@functools.lru_cache(maxsize=4096)
def _canonicalIP(text: str) -> str:
    import ipaddress

    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def _namedMap(
    section: Section, maps: Dict[str, IMap], what: str, log: Logger
) -> Optional[IMap]:
    """
    The map named by C{section["name"]}: a declared map of that name, else
    the hash file; C{None} if the file is the default and does not exist.
    """
    from smx.maps.hashmap import HashMap

    path = section["name"]
    if not path:
        return None
    declared = maps.get(os.path.basename(path).lower()) or maps.get(path.lower())
    if declared is not None:
        return declared
    if not os.path.exists(path) and not section.isSet("name"):
        log.info(map=what, file=path, status="absent", used="no")
        return None
    return HashMap(what, path, log)
