# -*- test-case-name: smx.maps.test.test_settings -*-
"""
NAME
    smx.maps.settings - the settings of SMAR

SYNOPSIS
    settings = ResolverSettings.fromConfiguration(cfg)
    resolver = AddressResolver(reactor, settings, mailertable, ...)

DESCRIPTION
    L{ResolverSettings} holds the option values SMAR uses (seed §5.8.2):
    those of the C{smar} section, the global C{hostname}, QMGR's
    C{aliases} and SMTPC's C{remote_port}, as the option table gives them.
    It has no defaults of its own (L{smx.config.settings}).  The maps
    themselves (mailertable, access, aliases, C{local_user_map}, the map
    declarations) are built by L{smx.maps.resolver.AddressResolver}
    C{.fromConfiguration}.

CONFIGURATION PARAMETERS
    See L{ResolverSettings.OPTIONS} and L{ResolverSettings.DERIVED}.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, FrozenSet, Mapping, Tuple

from smx.config.settings import optionValues

#: what C{qmgr { aliases }} adds to the flags of the aliases map
_ALIASES_MODE = {"localdomains": "local_domains", "all": "all_domains"}


@dataclasses.dataclass(frozen=True, slots=True)
class ResolverSettings:
    """
    The options of SMAR.

    @ivar hostname: the local host name (aliases of C{user@hostname}).
    @ivar delimiter: the delimiter of address extensions
        (C{address_delimiter}).
    @ivar aliasFlags: the flags of the aliases map, with QMGR's
        C{aliases} mode if set (C{local_domains}, C{all_domains}).
    @ivar dnsbl: C{(domain, tag)} of every C{dnsbl} section, in order.
    @ivar remotePort: the port of routes without their own: the
        C{remote_port} of the first C{smtpc} section (all must agree).
    @ivar cacheTTL: seconds a decision is reused (C{cache_ttl}).
    @ivar nameservers: the C{nameserver} list (none: resolv.conf).
    @ivar dnsTimeout: seconds a DNS lookup may take (C{DNS_timeout}).
    @ivar dnsUseTCP: DNS over TCP only (C{DNS_flags = use_tcp}).
    """

    hostname: str
    delimiter: str
    aliasFlags: FrozenSet[str]
    dnsbl: Tuple[Tuple[str, str], ...]
    remotePort: int
    cacheTTL: float
    nameservers: Tuple[str, ...]
    dnsTimeout: float
    dnsUseTCP: bool

    #: field -> option (in the smar section, or from the top with "/")
    OPTIONS: ClassVar[Mapping[str, str]] = {
        "hostname": "/hostname",
        "delimiter": "address_delimiter",
        "cacheTTL": "cache_ttl",
        "dnsTimeout": "DNS_timeout",
    }
    #: field -> the options it is computed from
    DERIVED: ClassVar[Mapping[str, Tuple[str, ...]]] = {
        "aliasFlags": ("aliases.flags", "/qmgr.aliases"),
        "dnsbl": ("dnsbl.domain", "dnsbl.tag"),
        "remotePort": ("/smtpc.remote_port",),
        "nameservers": ("nameserver",),
        "dnsUseTCP": ("DNS_flags",),
    }

    @classmethod
    def fromConfiguration(cls, cfg: Any) -> "ResolverSettings":
        """
        @param cfg: an L{smx.config.Configuration}.
        """
        smar = cfg.section("smar")
        flags = set(smar.section("aliases")["flags"])
        qmgr = cfg.section("qmgr")
        if qmgr.isSet("aliases"):
            flags.add(_ALIASES_MODE.get(qmgr["aliases"], qmgr["aliases"]))
        # the first smtpc section, named or not: all of them must use the
        # same remote_port (seed §5.10, smx.config.reconcile)
        clients = cfg.sections("smtpc") or [cfg.section("smtpc")]
        return cls(
            aliasFlags=frozenset(flags),
            dnsbl=tuple((s["domain"], s["tag"]) for s in smar.sections("dnsbl")),
            remotePort=clients[0]["remote_port"],
            nameservers=tuple(smar["nameserver"]),
            dnsUseTCP="use_tcp" in {f.lower() for f in smar["DNS_flags"]},
            **optionValues(cls, smar),
        )
