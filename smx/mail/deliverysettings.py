# -*- test-case-name: smx.mail.test.test_smtpc -*-
"""
NAME
    smx.mail.deliverysettings - the settings of one SMTPC delivery agent

SYNOPSIS
    settings = DeliverySettings.fromSection(cfg.section("smtpc"))
    agent = DeliveryAgent(contentStore, settings, reactor)

DESCRIPTION
    L{DeliverySettings} holds the options of one C{smtpc} section (seed
    §5.10) as the option table gives them, with QMGR's C{reuse_connection}
    flag and C{OCC_max_entries} and the global C{hostname}, and the TLS
    client side made of its C{tls} subsection.  It has no defaults of its
    own (L{smx.config.settings}).

CONFIGURATION PARAMETERS
    smtpc: io_timeout, LMTP_socket, remote_port, tls { cert_file,
    key_file, CAcert_file, CAcert_path }, tls_security_level,
    tls_policy_map, tls_min_protocol, tls_ciphers (doc/tls.md); qmgr:
    flags (reuse_connection), OCC_max_entries; global: hostname.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping, Optional, Tuple

from smx.config.settings import optionValues


@dataclasses.dataclass(frozen=True, slots=True)
class DeliverySettings:
    """
    The options of one C{smtpc} section.

    @ivar heloName: the name in EHLO and LHLO (C{hostname}).
    @ivar ioTimeout: seconds for the connection and every reply.
    @ivar remotePort: the port of C{esmtp} routes without their own.
    @ivar lmtpSocket: the Unix socket of C{lmtp} routes without hosts.
    @ivar tlsCreator: the TLS client side (a
        L{smx.mail.clienttls.ClientTLSCreator}), or C{None}: STARTTLS is
        never used (tests).
    @ivar reuseConnection: keep sessions in the connection cache.
    @ivar cacheSize: the most sessions in the connection cache.
    @ivar name: the title of the section (C{smtpc}, C{smtpc NAME}).
    @ivar tlsSecurityLevel: the TLS policy of destinations without a
        policy map entry (C{tls_security_level}).
    @ivar tlsPolicyMap: the TLS policy map file, or C{None}.
    """

    heloName: str
    ioTimeout: float
    remotePort: int
    lmtpSocket: str
    tlsCreator: Any
    reuseConnection: bool
    cacheSize: int
    name: str
    tlsSecurityLevel: str
    tlsPolicyMap: Optional[str]

    #: field -> option (in the smtpc section, or from the top with "/")
    OPTIONS: ClassVar[Mapping[str, str]] = {
        "heloName": "/hostname",
        "ioTimeout": "io_timeout",
        "remotePort": "remote_port",
        "lmtpSocket": "LMTP_socket",
        "cacheSize": "/qmgr.OCC_max_entries",
        "tlsSecurityLevel": "tls_security_level",
        "tlsPolicyMap": "tls_policy_map",
    }
    #: field -> the options it is computed from
    DERIVED: ClassVar[Mapping[str, Tuple[str, ...]]] = {
        "tlsCreator": (
            "tls.cert_file",
            "tls.key_file",
            "tls.CAcert_file",
            "tls.CAcert_path",
            "tls_min_protocol",
            "tls_ciphers",
        ),
        "reuseConnection": ("/qmgr.flags",),
        "name": (),
    }

    @classmethod
    def fromSection(cls, section: Any) -> "DeliverySettings":
        """
        @param section: an L{smx.config} C{smtpc} section, named or not.
        @raise ValueError: if the TLS files cannot be loaded.
        """
        from smx.mail.clienttls import ClientTLSCreator

        tls = section.section("tls")
        title = section.title()
        creator = ClientTLSCreator(
            tls["cert_file"],
            tls["key_file"],
            tls["CAcert_file"],
            tls["CAcert_path"],
            where=title + " tls",
            minProtocol=section["tls_min_protocol"],
            ciphers=section["tls_ciphers"],
        )
        flags = section.configuration.section("qmgr")["flags"]
        return cls(
            tlsCreator=creator,
            reuseConnection="reuse_connection" in flags,
            name=title,
            **optionValues(cls, section),
        )
