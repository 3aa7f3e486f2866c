# -*- test-case-name: smx.maps.test.test_integration_resolver -*-
"""
DNS based blacklists (seed §5.8.2 item 1).

The client address A.B.C.D is looked up as an A record of
C{D.C.B.A.domain} (an IPv6 address by its reversed nibbles) in every
configured list at once (at most 8).  Then, in the configured order, each
result is looked up in the access map: C{tag:W.X.Y.Z} for every address
found, C{tag:temp} for a temporary DNS failure, C{tag:perm} for another
failure; a name that does not exist (or has no A record) means "not
listed" and nothing is looked up.  The first access entry found is the
result.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from smx.fastdefer import inlineCallbacks, settled
from smx.maps.access import AccessMap, decision
from smx.maps.errors import DNSPermanentError, DNSTemporaryError

if TYPE_CHECKING:  # pragma: no cover
    from smx.maps.dns import DNSResolver

MAX_DNSBL = 8


def dnsblName(address: str, domain: str) -> str:
    """
    The name to look up for C{address} in the list C{domain}.

    @raise ValueError: if C{address} is not an IP address.
    """
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    rev = ip.reverse_pointer.rsplit(".", 2)[0]
    return "%s.%s" % (rev, domain.strip(".").lower())


class DNSBLChecker:
    """
    Checks a client against the configured lists.

    @ivar lists: C{(domain, tag)} pairs in the configured order.
    """

    def __init__(
        self,
        dns: Optional[DNSResolver],
        access: AccessMap,
        lists: List[Tuple[str, str]],
    ) -> None:
        self.dns = dns
        self.access = access
        self.lists = list(lists)[:MAX_DNSBL]

    @inlineCallbacks
    def check(self, address: str):
        """
        @return: a L{Deferred} firing with the I{decision} of the first
            access entry found (with C{"dnsbl"} naming the list), or action
            C{"none"}.
        """
        if not self.lists or self.dns is None:
            return decision()
        try:
            names = [dnsblName(address, domain) for domain, _ in self.lists]
        except ValueError:
            return decision()
        results = yield settled([self.dns.lookupA(n) for n in names])
        for (domain, tag), (ok, value) in zip(self.lists, results):
            if ok:
                keys = list(value)
            elif value.check(DNSPermanentError):
                keys = []
            elif value.check(DNSTemporaryError):
                keys = ["temp"]
            else:
                keys = ["perm"]
            if not keys:
                continue
            found = yield self.access.checkKeys(tag, keys)
            if found["action"] != "none":
                found["dnsbl"] = domain
                return found
        return decision()
