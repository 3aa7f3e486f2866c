# -*- test-case-name: smx.queue.test.test_pickup -*-
"""
NAME
    smx.queue.pickupsettings - where local submissions go

SYNOPSIS
    settings = PickupSettings.fromConfiguration(cfg)
    settings.submissionAddress      # ("127.0.0.1", 2525)
    settings.directory              # the maildrop directory

DESCRIPTION
    The settings shared by C{smx sendmail} and the pickup service
    (L{smx.queue.pickup}), from the C{pickup} section of the
    configuration and the first C{smtps} section.  This module imports
    neither Twisted nor SMTPS, so that C{smx sendmail} starts quickly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, List, Mapping, Optional, Tuple

#: room for the envelope line on top of the largest message
ENVELOPE_ROOM = 1024 * 1024


def listenAddresses(section: Any) -> List[Tuple[str, int]]:
    """
    The C{(host, port)}s an smtps section listens on: its
    C{daemon_address}, else its MCP C{address} and C{port}, else
    C{0.0.0.0:25} (the same as L{smx.mail.listener.listenAddresses},
    which a test compares with this one).
    """
    from smx.config.values import splitAddress

    addresses = section["daemon_address"]
    if addresses:
        return [splitAddress(text, 8000) for text in addresses]
    port = section["port"]
    # no daemon_address and no MCP port: SMTP's port (seed §5.9 item 2)
    return [(section["address"], port if port else 25)]


def submissionAddress(cfg: Any) -> Tuple[str, int]:
    """
    The SMTPS address local submissions go to: C{submission_address} of
    the pickup section, else the first address of the first smtps section,
    with C{0.0.0.0} (or no host) as C{127.0.0.1} and C{::} as C{::1}.
    """
    from smx.config.values import splitAddress

    text = cfg.section("pickup")["submission_address"]
    if text:
        host, port = splitAddress(text, 25)
    else:
        sections = list(cfg.sections("smtps")) or [cfg.section("smtps")]
        host, port = listenAddresses(sections[0])[0]
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, port


@dataclass(frozen=True, slots=True)
class PickupSettings:
    """
    The settings of pickup (and of C{smx sendmail}'s submission).  Like
    every settings object (L{smx.config.settings}), its fields have no
    defaults: the option table has them.

    @ivar directory: the maildrop directory.
    @ivar submissionAddress: C{(host, port)} of SMTPS.
    @ivar maildropGroup: the maildrop group, or C{None}.
    @ivar interval: seconds between two looks into the directory.
    @ivar hostname: the EHLO name and the reporting MTA of bounces.
    @ivar maxSize: the largest maildrop file read, in bytes: the first
        smtps section's C{max_message_size} (1 GB for none) and room for
        the envelope.
    """

    directory: str
    submissionAddress: Tuple[str, int]
    maildropGroup: Optional[str]
    interval: float
    hostname: str
    maxSize: int

    OPTIONS: ClassVar[Mapping[str, str]] = {
        "directory": "maildrop_directory",
        "maildropGroup": "maildrop_group",
        "interval": "interval",
        "hostname": "/hostname",
    }
    DERIVED: ClassVar[Mapping[str, Tuple[str, ...]]] = {
        "submissionAddress": (
            "submission_address",
            "/smtps.daemon_address",
            "/smtps.address",
            "/smtps.port",
        ),
        "maxSize": ("/smtps.max_message_size",),
    }

    @classmethod
    def fromConfiguration(cls, cfg: Any) -> "PickupSettings":
        """
        @param cfg: an L{smx.config.Configuration}.
        """
        from smx.config.settings import optionValues

        sections = list(cfg.sections("smtps")) or [cfg.section("smtps")]
        maxMessage = int(sections[0]["max_message_size"])
        return cls(
            submissionAddress=submissionAddress(cfg),
            maxSize=(maxMessage or 1 << 30) + ENVELOPE_ROOM,
            **optionValues(cls, cfg.section("pickup")),
        )


__all__ = ["PickupSettings", "submissionAddress", "listenAddresses"]
