# -*- test-case-name: smx.maps.test.test_routing,smx.maps.test.test_integration_resolver,smx.mail.test.test_smtpc -*-
"""
NAME
    smx.maps.routing - the routes of a recipient

SYNOPSIS
    router = Router(mailertable, dns, access, port)
    routes, error = yield router.route("user@example.com")
    router.isLocal("example.com")

DESCRIPTION
    Routing of one recipient (seed §5.8.3 mailertable, RFC 5321 §5.1):
    the ordered list of I{route}s (see L{smx.interfaces}) SMTPC tries.

      1. The mailertable entry of the recipient's domain (lookup order of
         §5.11.1 with C{.}).  C{lmtp:} without hosts is local delivery:
         one route C{{"mailer": "lmtp", "host": "", "address": "",
         "port": 0}}.
      2. Each host of the entry in order: an address literal is used as
         is; a host name is looked up as MX (hosts by preference, equal
         preferences shuffled) and each MX host, or the name itself when
         it has no MX records (RFC 5321 §5.1), as A and AAAA.  Without an
         entry, the recipient's domain is looked up the same way.
      3. Every address found in DNS is checked against the C{mxbadip:}
         entries of the access map; a rejecting entry makes the recipient
         fail with that entry's reply.  Literals from the mailertable are
         trusted and not checked.

    C{lmtp:} routes with hosts and no port go to port 24 (RFC 2033
    forbids 25); other routes without a port to C{remote_port}.

CONFIGURATION PARAMETERS
    smar { mailertable; access }, smtpc { remote_port }

SECURITY
    Addresses from DNS are checked against the C{mxbadip:} entries: a
    DNS name pointing at an address listed there is not connected to.

DIAGNOSTICS
    A name that does not exist is a permanent failure (550 5.1.2); a null
    MX (RFC 7505) gives 556 5.1.10; a temporary DNS failure for which no
    other host gave an address is 451 4.4.3.  A C{mxbadip:} rejection is
    logged (C{mx=}, C{addr=}, C{mxbadip=}).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from twisted.internet import defer

from smx.fastdefer import inlineCallbacks
from smx.log import Logger
from smx.maps.access import AccessMap, reply
from smx.maps.errors import DNSPermanentError, DNSTemporaryError, MapError
from smx.maps.mailertable import Mailertable
from smx.values import ReplyData, RouteData

if TYPE_CHECKING:  # pragma: no cover
    from smx.maps.dns import DNSResolver

#: The port of C{lmtp:} routes with hosts but no port of their own: LMTP
#: must not use port 25 (RFC 2033 §5); 24 is IANA's "any private mail
#: system", where LMTP servers such as Dovecot's usually listen.
LMTP_PORT = 24


def localRoute() -> RouteData:
    """
    The route of local delivery over the LMTP socket.
    """
    return {"mailer": "lmtp", "host": "", "address": "", "port": 0, "preference": 0}


def shuffleEqual(mx: List[Tuple[int, str]], rng: Any = random) -> List[Tuple[int, str]]:
    """
    Sort MX records by preference and shuffle those of equal preference.
    """
    groups = {}  # type: Dict[int, List[Tuple[int, str]]]
    for rec in mx:
        groups.setdefault(rec[0], []).append(rec)
    out = []
    for pref in sorted(groups):
        group = groups[pref]
        rng.shuffle(group)
        out.extend(group)
    return out


class RoutingError(Exception):
    """
    A recipient cannot be routed; C{reply} says why (4xx or 5xx).
    """

    def __init__(self, reply: ReplyData, fatal: bool = False) -> None:
        Exception.__init__(self, reply["text"])
        self.reply = reply
        self.fatal = fatal


class Router:
    """
    Routes recipients.

    @ivar mailertable: the L{Mailertable}.
    @ivar dns: a L{smx.maps.dns.DNSResolver} (or C{None}: only literals).
    @ivar access: an L{AccessMap} for C{mxbadip:}.
    @ivar port: the default remote port (C{remote_port}).
    """

    def __init__(
        self,
        mailertable: Mailertable,
        dns: Optional[DNSResolver],
        access: AccessMap,
        port: int,
        rng: Any = random,
        log: Optional[Logger] = None,
    ) -> None:
        """
        @param dns: a L{smx.maps.dns.DNSResolver}, or C{None}: only
            literals.
        @param access: the L{AccessMap} (C{mxbadip:}).
        @param port: the port of routes without their own.
        """
        self.mailertable = mailertable
        self.dns = dns
        self.access = access
        self.port = port
        self.rng = rng
        self.log = log if log is not None else Logger("smar")
        #: routings that asked DNS (MX, then addresses) so far; a result
        #: that did is not reused (L{smx.maps.resolver.DecisionCache})
        self.dnsRoutings = 0

    def isLocal(self, domain: str) -> bool:
        """
        Is C{domain} local (C{lmtp:} in the mailertable)?
        """
        return self.mailertable.isLocal(domain)

    @inlineCallbacks
    def route(self, address: str):
        """
        @return: a L{Deferred} firing with C{(routes, error)}: a list of
            routes and C{None}, or C{[]} and a I{reply}.
        """
        domain = address.rpartition("@")[2].strip().lower().rstrip(".")
        if domain.startswith("[") and domain.endswith("]"):
            from smx.maps.mailertable import parseHost

            try:
                host = parseHost(domain)
            except ValueError:
                return [], reply(553, "5.1.2", "Bad address literal %s" % (domain,))
            return [self._route("esmtp", host.name, host.name, self.port, 0)], None
        if not domain:
            return [], reply(553, "5.1.2", "No domain in <%s>" % (address,))
        found = self.mailertable.find(domain)
        try:
            if found is None:
                routes = yield self._resolveHost(domain, "esmtp", self.port, 0)
            else:
                routes = yield self._resolveEntry(domain, found[1])
        except RoutingError as e:
            return [], e.reply
        return routes, None

    @inlineCallbacks
    def _resolveEntry(self, domain: str, entry):
        if entry.local:
            return [localRoute()]
        port = entry.port or (LMTP_PORT if entry.mailer == "lmtp" else self.port)
        if not entry.hosts:
            viaMX = yield self._resolveHost(domain, entry.mailer, port, 0)
            return viaMX
        routes = []  # type: List[RouteData]
        temp = None  # type: Optional[RoutingError]
        for i, host in enumerate(entry.hosts):
            if host.literal:
                routes.append(self._route(entry.mailer, host.name, host.name, port, i))
                continue
            try:
                more = yield self._resolveHost(host.name, entry.mailer, port, i)
            except RoutingError as e:
                if e.fatal:
                    raise
                temp = temp or e
                continue
            routes.extend(more)
        if not routes and temp is not None:
            raise temp
        return _dedupe(routes)

    @inlineCallbacks
    def _resolveHost(self, name: str, mailer: str, port: int, base: int):
        self.dnsRoutings += 1
        if self.dns is None:
            raise RoutingError(reply(451, "4.4.3", "No DNS resolver for %s" % (name,)))
        try:
            mx = yield self.dns.lookupMX(name)
        except DNSPermanentError:
            raise RoutingError(
                reply(550, "5.1.2", "Host or domain name not found: %s" % (name,))
            )
        except DNSTemporaryError as e:
            raise RoutingError(reply(451, "4.4.3", "Temporary DNS failure: %s" % (e,)))
        if len(mx) == 1 and mx[0][1] in ("", "."):
            raise RoutingError(
                reply(
                    556, "5.1.10", "Domain %s does not accept mail (null MX)" % (name,)
                )
            )
        if not mx:
            hosts = [(base, name)]
        else:
            hosts = [
                (base + p, h)
                for p, h in shuffleEqual(mx, self.rng)
                if h not in ("", ".")
            ]
        routes = []  # type: List[RouteData]
        temp = False
        for pref, host in hosts:
            try:
                addrs = yield self.dns.lookupAddresses(host)
            except DNSTemporaryError:
                temp = True
                continue
            except DNSPermanentError:
                continue
            for addr in addrs:
                bad = yield self.access.check("mxbadip", addr)
                if bad["action"] in ("error", "reject"):
                    self.log.info(mx=host, addr=addr, mxbadip=bad.get("key"))
                    raise RoutingError(bad["reply"], fatal=True)
                if bad["action"] == "tempfail":
                    raise RoutingError(bad["reply"], fatal=True)
                routes.append(self._route(mailer, host, addr, port, pref))
        if not routes:
            if temp:
                raise RoutingError(
                    reply(451, "4.4.3", "Temporary DNS failure for %s" % (name,))
                )
            raise RoutingError(reply(550, "5.1.2", "No address for host %s" % (name,)))
        return routes

    @staticmethod
    def _route(mailer: str, host: str, address: str, port: int, pref: int) -> RouteData:
        return {
            "mailer": mailer,
            "host": host,
            "address": address,
            "port": port,
            "preference": pref,
        }


def _dedupe(routes: List[RouteData]) -> List[RouteData]:
    seen = set()
    out = []
    for r in routes:
        k = (r["mailer"], r["address"], r["port"])
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out
